"""`python -m bench.replica_wait`: what waiting for a Redis replica costs a write batch.

With Sentinel, every write batch is registered (`JobStore.begin_writes`: 20 rows' attempts and the
batch in flight, one Lua call) and then waits until a replica holds it (Redis WAIT), so that a
failover cannot lose the plans the writes rely on. This starts a primary and a replica on this
machine (the redis-server the project uses) and times the registration with and without the wait.
Options: --batches N (default 2000), --rows R per batch (default 20).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from cli.localstack import EmbeddedRedis, free_port, redis_server_binary
from jobs.store import JobStore


def _replica(primary_port: int, workdir: Path) -> subprocess.Popen[bytes]:
    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--dir", str(workdir), "--replicaof", "127.0.0.1", str(primary_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with redis.Redis(port=primary_port) as client:
        deadline = time.monotonic() + 10
        while client.info("replication").get("slave0", {}).get("state") != "online":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync")
            time.sleep(0.02)
    return proc


def _time_batches(store: JobStore, batches: int, rows: int) -> list[float]:
    """Microseconds per `begin_writes` call."""
    store.redis.hset("bl:job:bench", mapping={"id": "bench", "state": "queued"})
    timings = []
    for i in range(batches):
        started = time.perf_counter()
        store.begin_writes("bench", f"b{i}", time.time() + 60, list(range(rows)))
        timings.append((time.perf_counter() - started) * 1e6)
    store.redis.delete("bl:job:bench", "bl:job:bench:inflight", "bl:job:bench:att")
    return timings


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.replica_wait", description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=2000)
    p.add_argument("--rows", type=int, default=20)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bulklicense-wait-") as tmp, EmbeddedRedis() as primary:
        replica = _replica(primary.port, Path(tmp))
        try:
            client = redis.Redis(port=primary.port)
            for label, replicas in (("without WAIT", 0), ("with WAIT for 1 replica", 1)):
                timings = _time_batches(JobStore(client, retention_s=600, wait_replicas=replicas),
                                        args.batches, args.rows)
                timings.sort()
                median, p99 = timings[len(timings) // 2], timings[int(len(timings) * 0.99)]
                print(f"{label:>24}: mean {statistics.fmean(timings):6.0f} us, median {median:6.0f} us,"
                      f" p99 {p99:6.0f} us per batch of {args.rows} rows")
            client.close()
        finally:
            replica.terminate()
            replica.wait()


if __name__ == "__main__":
    main()
