"""One large body or one misbehaving client, against the API as a real process: its memory, its spool
directory and its health checks measured while it happens (the security review's demonstrations, scaled
to run in seconds).

Each test prints its figures (`-s` shows them): API RSS before and at its peak, spool bytes, /healthz
latency.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.stack import API_KEY, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MB = 1024 * 1024
UPLOAD_LIMIT = 8 * MB
BODY_TIMEOUT_S = 3.0
BOUNDARY = "b0undary"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("abuse")
    spool = workdir / "spool"
    spool.mkdir()
    env = {"BULKLICENSE_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT), "BULKLICENSE_API_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
           "TMPDIR": str(spool)}
    s = Stack(workdir, sim_args=["--users", "20", "--seed", "7"], env=env)
    try:
        yield s.start(workers=0)
    finally:
        s.stop()


class Watch:
    """Samples the API process's RSS (and a directory's size) every 20 ms while a block runs."""

    def __init__(self, stack: Stack, directory: Path | None = None) -> None:
        self._proc = psutil.Process(dict(stack.services.procs)["api"].pid)
        self._directory = directory
        self.before = self.peak = self._proc.memory_info().rss
        self.spool_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._proc.memory_info().rss)
            if self._directory is not None:
                self.spool_peak = max(self.spool_peak, self._spooled())

    def _spooled(self) -> int:
        """Bytes in the files the process has open in the directory (spool files are unlinked at once)."""
        total = 0
        fds = Path(f"/proc/{self._proc.pid}/fd")
        for fd in list(fds.iterdir()) if fds.is_dir() else []:
            try:
                if os.readlink(fd).startswith(str(self._directory)):
                    total += fd.stat().st_size
            except OSError:
                continue  # closed meanwhile
        return total

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(0.1)
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.before


def headers(**extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}", **extra}


def test_a_json_body_of_empty_objects_costs_about_its_size(stack: Stack) -> None:
    """The review's M1 body, 12 MB: `{"tenant":…,"operations":[{},{},…]}`, refused for its count."""
    n = 4_000_000
    body = b'{"tenant":"sim","operations":[' + b"{}," * (n - 1) + b"{}]}"
    with Watch(stack) as watch, stack.api() as api:
        response = api.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"}, timeout=120)
    print(f"\nJSON {len(body) / MB:.1f} MB of {{}}: API RSS {watch.before / MB:.0f} MB -> peak {watch.peak / MB:.0f} MB"
          f" (+{watch.growth / MB:.0f} MB)")
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(f"operations has {n:,} items")
    assert watch.growth < 6 * len(body)


def multipart(name: str, filename: str | None, size: int) -> AsyncIterator[bytes]:
    """A chunked multipart body (no Content-Length) with one part of `size` bytes."""
    async def body() -> AsyncIterator[bytes]:
        file = f'; filename="{filename}"' if filename else ""
        yield (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"{file}\r\n'
               "Content-Type: text/csv\r\n\r\nuser,usage_location\r\n").encode()
        blob = b"#" * (1 << 20)
        for _ in range(size // len(blob)):
            yield blob
        yield f"\r\n--{BOUNDARY}--\r\n".encode()
    return body()


async def post_chunked(url: str, content: AsyncIterator[bytes]) -> tuple[int, str]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        try:
            response = await client.post("/v1/jobs?tenant=sim", content=content, headers=headers(
                **{"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}))
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            return 0, "connection closed while sending"  # refused and closed mid-body
        return response.status_code, response.text


def test_a_chunked_multipart_upload_stops_at_the_limit(stack: Stack) -> None:
    """The review's M2 body: a file part five times the limit, then a form field of 40 MB, sent chunked."""
    spool = stack.workdir / "spool"
    with Watch(stack, spool) as watch:
        status, text = asyncio.run(post_chunked(stack.api_url, multipart("file", "a.csv", 5 * UPLOAD_LIMIT)))
    print(f"\nchunked file part of {5 * UPLOAD_LIMIT / MB:.0f} MB (limit {UPLOAD_LIMIT / MB:.0f} MB): {status},"
          f" spool peak {watch.spool_peak / MB:.1f} MB, API RSS +{watch.growth / MB:.0f} MB")
    assert status in (413, 0), text
    assert watch.spool_peak <= UPLOAD_LIMIT
    assert watch.growth < 2 * UPLOAD_LIMIT
    with Watch(stack, spool) as watch:
        status, text = asyncio.run(post_chunked(stack.api_url, multipart("callback_url", None, 5 * UPLOAD_LIMIT)))
    print(f"chunked form field of {5 * UPLOAD_LIMIT / MB:.0f} MB: {status}, API RSS +{watch.growth / MB:.0f} MB")
    assert status in (413, 0), text
    assert watch.growth < UPLOAD_LIMIT


async def _abuse_and_probe(url: str, probes: int) -> tuple[list[float], int, tuple[float, int]]:
    """A slow body holding an Idempotency-Key, 80 clients retrying it, and /healthz probed meanwhile.

    Returns the probes' latencies, how many retries were answered, and when and how the slow body was answered
    (0: the connection was closed while it was still sending).
    """
    key = headers(**{"Idempotency-Key": "starve-1", "Content-Type": "text/csv"})
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def slow() -> AsyncIterator[bytes]:
            yield b"user,usage_location\n"
            for _ in range(60):
                await asyncio.sleep(1)
                yield b" "

        async def retrier(stop: asyncio.Event) -> int:
            sent = 0
            while not stop.is_set():
                await client.post("/v1/jobs?tenant=sim", headers=key, content=b"x")
                sent += 1
            return sent

        async def hold() -> tuple[float, int]:
            started = time.monotonic()
            try:
                status = (await client.post("/v1/jobs?tenant=sim", headers=key, content=slow())).status_code
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                status = 0  # answered and closed while it was still sending
            return time.monotonic() - started, status

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0.5)
        stop = asyncio.Event()
        retriers = [asyncio.create_task(retrier(stop)) for _ in range(80)]
        latencies = []
        async with httpx.AsyncClient(base_url=url, timeout=30) as probe:
            for _ in range(probes):
                started = time.monotonic()
                response = await probe.get("/healthz")
                latencies.append(time.monotonic() - started)
                assert response.status_code == 200
                await asyncio.sleep(0.5)
        stop.set()
        sent = sum(await asyncio.gather(*retriers))
        return latencies, sent, await holder


def test_healthz_stays_fast_while_one_key_holds_an_idempotency_key_with_a_slow_body(stack: Stack) -> None:
    latencies, sent, (held_s, status) = asyncio.run(_abuse_and_probe(stack.api_url, probes=10))
    ordered = sorted(latencies)
    print(f"\n/healthz under abuse ({sent} retries by 80 clients): median {ordered[len(ordered) // 2] * 1000:.0f} ms,"
          f" max {ordered[-1] * 1000:.0f} ms; the slow body was answered ({status}) after {held_s:.1f} s")
    assert ordered[-1] < 2.0
    assert status in (408, 0)
    assert held_s < BODY_TIMEOUT_S + 5


def test_everything_is_answered_afterwards(stack: Stack) -> None:
    """The API is still whole: a normal submission goes through."""
    with stack.api() as api:
        response = api.post("/v1/jobs?tenant=sim&dry_run=true", content=b"user,usage_location\nu1@x.example,GB\n",
                            headers={"Content-Type": "text/csv"})
    assert response.status_code == 202, response.text
