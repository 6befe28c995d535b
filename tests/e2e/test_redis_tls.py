"""Redis as production runs it: `rediss://` with a password for the job store, the broker and the throttle.

The API and a worker get only a `rediss://:<password>@…` URL and the CA (`BULKLICENSE_REDIS_CA_FILE`);
the server accepts TLS connections only (a TLS-built redis-server, or the embedded one behind a TLS
proxy where none is installed). A job runs end to end, then every log, at DEBUG, is searched for the
password in every encoding it could take.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.e2e.leaks import needles_for
from tests.e2e.stack import Stack
from tests.e2e.tls import TlsProxy, TlsRedis, pki

# The run takes 5-10 s, most of it starting the processes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PASSWORD = "tls@Redis-pw-7f3c9e1a5b"  # '@' travels URL-encoded in the URL
POWER_BI_PRO = "f8a1db68-be16-40ed-86d5-cb42ce701560"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("rediss")
    files = pki(workdir / "pki")
    env = {"BULKLICENSE_REDIS_CA_FILE": str(files.ca_cert), "BULKLICENSE_LOG_LEVEL": "DEBUG",
           "BULKLICENSE_CHUNK_SIZE": "5", "BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.05"}
    s = Stack(workdir, sim_args=["--users", "60", "--seed", "4", "--latency-ms", "5"], env=env)
    s.redis = TlsRedis(workdir / "redis", files, PASSWORD)  # type: ignore[assignment]
    try:
        yield s.start(workers=1)
    finally:
        s.stop()


def tls_redis(stack: Stack) -> TlsRedis:
    assert isinstance(stack.redis, TlsRedis)
    return stack.redis


def test_a_job_runs_over_rediss_and_the_password_is_in_no_log(stack: Stack) -> None:
    started = time.monotonic()
    server = tls_redis(stack)
    assert stack.env["BULKLICENSE_REDIS_URL"].startswith("rediss://:tls%40Redis-pw")
    with stack.control() as control:
        users = [u["userPrincipalName"] for u in control.get("/users").json()["value"]
                 if u.get("usageLocation") and not any(a["skuId"] == POWER_BI_PRO for a in u["assignedLicenses"])]
    rows = [{"user": u, "add": "POWER_BI_PRO"} for u in users[:12]]
    job = stack.wait_job(stack.submit_csv(rows)["id"], timeout_s=60)
    assert (job["status"], job["succeeded"]) == ("completed", 12), job

    # It all went through the TLS server: the job, the queue and the throttle state are there.
    client = server.client()
    try:
        assert client.hget(f"bl:job:{job['id']}", "succeeded") == b"12"
        assert client.exists("bl:throttle:sim") and client.exists("_kombu.binding.bulklicense")
    finally:
        client.close()
    if server.proxy is not None:
        assert server.proxy.connections >= 3  # the API, the worker's store and its broker connections

    logs = {path.name: path.read_bytes() for path in Path(stack.workdir).glob("*.log")
            if path.name.startswith(("api", "worker"))}
    assert any(b"DEBUG" in text for text in logs.values())
    # Without broker_use_ssl kombu would warn and connect with CERT_NONE: the broker is verified too.
    assert not any(b"no ssl options" in text for text in logs.values())
    leaks = [f"{needle!r} in {name}" for needle in needles_for(PASSWORD) for name, text in logs.items()
             if needle in text]
    assert not leaks, leaks
    print(f"\n[rediss] {server.mode}: a 12-user job over rediss:// with a password, no leak in "
          f"{sum(len(t) for t in logs.values()) / 1e3:.0f} kB of DEBUG logs; {time.monotonic() - started:.1f}s")


def test_the_server_refuses_plain_connections_and_connections_without_the_password(stack: Stack) -> None:
    server = tls_redis(stack)
    anonymous = redis.Redis.from_url(f"rediss://127.0.0.1:{server.port}/0", ssl_ca_certs=str(server.files.ca_cert),
                                     socket_timeout=5)
    try:
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
    finally:
        anonymous.close()
    # Plain RESP on the port: the server wants a TLS handshake and drops the connection.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as plain:
        plain.sendall(f"AUTH {PASSWORD}\r\nPING\r\n".encode())
        reply = b""
        with contextlib.suppress(OSError):
            while chunk := plain.recv(4096):
                reply += chunk
    assert b"PONG" not in reply and b"+OK" not in reply


def test_the_proxy_fallback_relays_tls_to_the_embedded_server(tmp_path: Path) -> None:
    """Where redis-server has TLS, the stack above used it; this keeps the fallback path tested too."""
    files = pki(tmp_path / "pki")
    server = TlsRedis(tmp_path / "redis", files, PASSWORD)
    server.binary = None
    server.start()
    try:
        assert isinstance(server.proxy, TlsProxy)
        client = server.client()
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
    finally:
        server.stop()
