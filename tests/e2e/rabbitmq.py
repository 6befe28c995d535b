"""A RabbitMQ node of the tests' own: Debian's `rabbitmq-server`, never the machine's running broker.

The node has a private name, free AMQP, distribution and epmd ports (its own epmd), and its data,
logs and Erlang cookie in a temporary directory. It is started once per test session by a fixture
and shared: every test that needs it takes a virtual host of its own (made at boot from a
definitions file), so no two tests see each other's queues.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from cli.localstack import free_port

# Where Debian's package puts the server script that runs as the calling user (the one on PATH,
# /usr/sbin/rabbitmq-server, switches to the system's rabbitmq user and its files).
SERVER_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL_SCRIPT = SERVER_SCRIPT.with_name("rabbitmqctl")
INSTALL_HINT = "RabbitMQ is not installed: apt-get install rabbitmq-server (CI installs it)"
USER = "bulklicense"
VHOSTS = 24


def rabbitmq_missing() -> str | None:
    """Why a private node cannot run here (the hint to install it), or None."""
    if not SERVER_SCRIPT.is_file() or shutil.which("erl") is None:
        return INSTALL_HINT
    return None


def _password_hash(password: str) -> str:
    """RabbitMQ's stored form of a password (rabbit_password_hashing_sha256: salt + SHA-256)."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


class PrivateRabbitMQ:
    """One rabbitmq-server node on 127.0.0.1, with `VHOSTS` virtual hosts handed out one per test."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"bltest-{secrets.token_hex(4)}@localhost"
        self.password = secrets.token_hex(12)
        self._next_vhost = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._env: dict[str, str] = {}

    def url(self, vhost: str) -> str:
        """The amqp:// URL of one virtual host."""
        return f"amqp://{USER}:{self.password}@127.0.0.1:{self.port}/{vhost}"

    def fresh_vhost_url(self) -> str:
        """The URL of a virtual host no test has used yet."""
        assert self._next_vhost < VHOSTS, f"more than {VHOSTS} tests asked for a RabbitMQ virtual host"
        self._next_vhost += 1
        return self.url(f"t{self._next_vhost}")

    def _write_config(self) -> dict[str, str]:
        """The node's files, and the environment that points the server script at them."""
        d = self.workdir
        d.mkdir(parents=True, exist_ok=True)
        vhosts = [f"t{i}" for i in range(1, VHOSTS + 1)]
        definitions = {
            "users": [{"name": USER, "password_hash": _password_hash(self.password),
                       "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"]}],
            "vhosts": [{"name": v} for v in vhosts],
            "permissions": [{"user": USER, "vhost": v, "configure": ".*", "write": ".*", "read": ".*"}
                            for v in vhosts],
        }
        (d / "definitions.json").write_text(json.dumps(definitions))
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            f"load_definitions = {d / 'definitions.json'}\n"
            "collect_statistics_interval = 500\n"  # list_queues counts at most 0.5 s old
            "log.console = false\n"
            f"log.file = {d / 'rabbit.log'}\n"
        )
        (d / "enabled_plugins").write_text("[].\n")
        (d / "env.conf").write_text("")  # instead of the system's /etc/rabbitmq/rabbitmq-env.conf
        return {
            **os.environ,
            "HOME": str(d),  # the Erlang cookie goes here
            "RABBITMQ_CONF_ENV_FILE": str(d / "env.conf"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbit.pid"),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def start(self, timeout_s: float = 90.0) -> PrivateRabbitMQ:
        """Start the node and wait until it accepts AMQP logins on its virtual hosts."""
        env = self._env = self._write_config()
        log = (self.workdir / "server.out").open("wb")
        self._proc = subprocess.Popen([str(SERVER_SCRIPT)], stdout=log, stderr=subprocess.STDOUT, env=env,
                                      cwd=self.workdir, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while not self._accepts_logins():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                detail = (self.workdir / "server.out").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"rabbitmq-server did not start on port {self.port}: {detail}")
            time.sleep(0.2)
        return self

    def queues(self, vhost_url: str) -> dict[str, dict[str, Any]]:
        """`rabbitmqctl list_queues` of one virtual host: name -> type, arguments, ready and unacked counts."""
        vhost = vhost_url.rsplit("/", 1)[1]
        out = subprocess.run(
            [str(CTL_SCRIPT), "-n", self.node, "-q", "list_queues", "-p", vhost, "--formatter", "json",
             "name", "type", "arguments", "messages_ready", "messages_unacknowledged"],
            capture_output=True, text=True, env=self._env, timeout=60, check=True).stdout
        return {q["name"]: q for q in json.loads(out)}

    def _accepts_logins(self) -> bool:
        """Whether the node is up with its definitions loaded (a login to the last virtual host works)."""
        from kombu import Connection  # kombu is the product's own AMQP client

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                pass
            with Connection(self.url(f"t{VHOSTS}"), connect_timeout=2) as connection:
                connection.ensure_connection(max_retries=0)
            return True
        except Exception:
            return False

    def stop(self) -> None:
        """Stop the node (SIGTERM, then SIGKILL) and the epmd it started."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # The node started an epmd of its own on its private port: stop that one only.
        epmd = shutil.which("epmd") or next(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"), None)
        if epmd is not None:
            subprocess.run([str(epmd), "-port", str(self.epmd_port), "-kill"], capture_output=True, check=False,
                           timeout=10, env={**os.environ, "ERL_EPMD_PORT": str(self.epmd_port)})
