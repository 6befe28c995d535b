"""`python -m bench.first_write`: how soon a chunk's first write goes out after the chunk starts.

One chunk of 100 users (each lacking a license, so each is read, then written) runs through the
executor (`jobs.executor.run_users`) on a real Redis, against an in-process Graph that answers every
request after 100 ± 50 ms (uniform; `--latency-ms`, `--jitter-ms`). Nothing else shares the
measurement, so the figure holds on a busy machine where the end-to-end scenarios are noisy.
Options: --trials N (20), --read-parallelism K (the product's default, 5).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import redis

from cli.localstack import EmbeddedRedis
from config import Settings
from graphclient.client import GraphClient
from graphclient.retry import RetryPolicy
from graphclient.throttle import ThrottleSnapshot
from jobs.executor import ChunkDeps, run_users
from jobs.models import License, Operation
from jobs.record import JobSpec
from jobs.store import JobStore

SKU = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
USERS = 100  # one chunk at the product's default chunk size


class OpenThrottle:
    """Grants every write at once: the measurement is the executor's, not the budget's."""

    def acquire(self, writes: int) -> None:
        """Nothing to wait for."""

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Nothing to learn."""

    def snapshot(self) -> ThrottleSnapshot:
        """Always open."""
        return ThrottleSnapshot(None, None, None, 0.0, 0)


class SlowGraph:
    """`$batch` answers after a random latency; notes when the first write arrived."""

    def __init__(self, latency_s: float, jitter_s: float, rng: random.Random) -> None:
        self.latency_s, self.jitter_s, self.rng = latency_s, jitter_s, rng
        self.first_write_at: float | None = None
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["requests"]
        with self.lock:
            if self.first_write_at is None and any(item["method"] != "GET" for item in items):
                self.first_write_at = time.perf_counter()
            delay = self.latency_s + self.rng.uniform(-self.jitter_s, self.jitter_s)
        time.sleep(max(0.0, delay))
        responses = []
        for item in items:
            upn = item["url"].split("/users/", 1)[1].split("?")[0].split("/")[0]
            held = [{"skuId": SKU, "disabledPlans": []}] if item["method"] != "GET" else []
            responses.append({"id": item["id"], "status": 200, "headers": {},
                              "body": {"id": upn, "userPrincipalName": upn, "usageLocation": "US",
                                       "assignedLicenses": held}})
        return httpx.Response(200, json={"responses": responses})


def one_chunk(client: redis.Redis, trial: int, graph: SlowGraph, parallelism: int) -> tuple[float, float]:
    """Seconds from the chunk's start to its first write, and to its end."""
    store = JobStore(client, retention_s=3600)
    job_id = f"first-write-{trial}"
    ops = [Operation(row=i + 2, user=f"u{i:03d}@contoso.example", add=(License(SKU),)) for i in range(USERS)]
    store.stage(job_id, "bench", ops, USERS)
    store.commit(job_id, JobSpec(source="csv"))
    http = httpx.Client(transport=httpx.MockTransport(graph))
    deps = ChunkDeps(store=store, graph=GraphClient(http, base_url="https://graph.test", throttle=OpenThrottle(),
                                                    timeout_s=30),
                     policy=RetryPolicy(max_attempts=4, max_total_s=600, backoff_base_s=1, backoff_max_s=8),
                     batch_size=20, request_deadline_s=60, read_parallelism=parallelism)
    start = time.perf_counter()
    run_users(deps, job_id, 0, budget_started_at=time.time())
    end = time.perf_counter()
    http.close()
    if graph.first_write_at is None:
        raise RuntimeError("the chunk wrote nothing")
    return graph.first_write_at - start, end - start


def main(argv: list[str] | None = None) -> int:
    """Run the trials and print min / median / max."""
    p = argparse.ArgumentParser(prog="python -m bench.first_write", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--latency-ms", type=float, default=100.0)
    p.add_argument("--jitter-ms", type=float, default=50.0)
    p.add_argument("--read-parallelism", type=int, default=int(Settings.model_fields["read_parallelism"].default))
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bulklicense-first-write-"))
    server = EmbeddedRedis(data_dir=root)
    server.start()
    rng = random.Random(7)
    firsts, totals = [], []
    try:
        client = redis.Redis.from_url(server.url)
        for trial in range(args.trials):
            graph = SlowGraph(args.latency_ms / 1000, args.jitter_ms / 1000, rng)
            first, total = one_chunk(client, trial, graph, args.read_parallelism)
            firsts.append(first)
            totals.append(total)
        client.close()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    def spread(values: list[float]) -> str:
        return " / ".join(f"{v * 1000:.0f}" for v in (min(values), statistics.median(values), max(values)))

    print(f"{args.trials} chunks of {USERS} users, latency {args.latency_ms:g} ± {args.jitter_ms:g} ms, "
          f"{args.read_parallelism} read batches at once")
    print(f"first write after the chunk's start, min / median / max: {spread(firsts)} ms")
    print(f"the chunk's whole run, min / median / max: {spread(totals)} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
