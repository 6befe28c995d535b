"""`python -m bench.capacity`: what a job costs Redis, the API and a worker, and what one host carries.

Real jobs of each size (10,000 and 100,000 users by default) run through the product (API, Celery
workers, Redis) against graphsim, unthrottled and without latency. After each: the Redis memory
the job's keys take (`MEMORY USAGE`, by key family) and the server's `used_memory` delta; the time
to download its results CSV, its failed rows and its results JSON, and to plan its rollback (a
dry run: every changed user's way back, staged as a job), each several times (min/median/max); the
API's and workers' peak RSS and CPU time. From these and Graph's published limits, a table of how
many tenants and jobs one Redis and one worker host carry. The section replaces the capacity
section of BENCHMARKS.md (`--out`), which `python -m bench.run` keeps when it rewrites the rest.

Options: --sizes N[,N..], --quick (1,000 and 5,000 users), --repeats K, --workers N, --concurrency K,
--out FILE.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.context import MAIN
from bench.report import cpu_model
from bench.results import fmt_s
from bench.stack import Product, Sampler, Sim, limit_fields, write_tenants_file
from bench.workload import cancel_job, csv_bytes, job_wall_s, one_write_rows, submit, wait_job

BEGIN, END = "<!-- capacity: begin -->", "<!-- capacity: end -->"
# Graph's published limits (throttling-limits, identity and access): writes per app and tenant, per app
# across all tenants, and per tenant across all apps.
GRAPH_TENANT_APP_WRITES = (3_000, 150.0)
GRAPH_APP_WRITES = (35_000, 300.0)
GRAPH_TENANT_WRITES = (18_000, 300.0)
GRAPH_LATENCY_S = 0.6  # the latency the derived figures assume (600 ± 300 ms)
BATCH_ITEMS = 20
CHUNK_WINDOW = 4  # chunks a running job keeps in flight (BULKLICENSE_CHUNK_WINDOW's default)
RETENTION_DAYS = 30.0  # BULKLICENSE_RETENTION_DAYS's default
REDIS_MAXMEMORY_GB = 4.0  # the Redis size the derived figures take


@dataclass
class SizeRun:
    """What one job size measured."""

    users: int
    wall_s: float = 0.0
    memory: dict[str, int] = field(default_factory=dict)  # key family -> bytes (MEMORY USAGE)
    used_memory_delta: int = 0
    downloads: dict[str, list[float]] = field(default_factory=dict)  # what -> seconds per repeat
    download_bytes: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds over the job
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    api_download_peak_mb: float = 0.0
    failed: int = 0

    @property
    def job_bytes(self) -> int:
        """Every key of the job, summed."""
        return sum(self.memory.values())


def family(key: str, job_id: str) -> str:
    """Which part of a job a Redis key holds."""
    rest = key[len(f"bl:job:{job_id}"):].lstrip(":")
    if not rest:
        return "job record"
    name = rest.split(":", 1)[0]
    return {"ops": "operations (the input, by chunk)", "res": "results (with before/after states)",
            "before": "plan: before states", "plan": "plan: counters", "att": "write attempts sent, by row"}.get(
                name, "other (chunk states, per-second counts, …)")


def job_memory(client: redis.Redis, job_id: str) -> dict[str, int]:
    """Bytes per key family of a job (`MEMORY USAGE key SAMPLES 0`: every element counted)."""
    out: Counter[str] = Counter()
    for raw in client.scan_iter(match=f"bl:job:{job_id}*", count=1000):
        key = raw.decode()
        out[family(key, job_id)] += int(client.memory_usage(key, samples=0) or 0)
    return dict(out)


def used_memory(client: redis.Redis) -> int:
    """The server's `used_memory`."""
    return int(client.info("memory")["used_memory"])


def timed_get(api: httpx.Client, path: str, params: dict[str, str]) -> tuple[float, int]:
    """Seconds to the last byte of a streamed GET, and its size."""
    t0 = time.perf_counter()
    size = 0
    with api.stream("GET", path, params=params) as response:
        response.raise_for_status()
        for piece in response.iter_bytes():
            size += len(piece)
    return time.perf_counter() - t0, size


def rollback_plan_s(api: httpx.Client, job_id: str) -> float:
    """Seconds to plan the job's rollback (a dry run: the 202 comes once it is staged); the dry run is cancelled."""
    t0 = time.perf_counter()
    response = api.post(f"/v1/jobs/{job_id}/rollback", params={"dry_run": "true"})
    seconds = time.perf_counter() - t0
    if response.status_code != 202:
        raise RuntimeError(f"rollback refused: HTTP {response.status_code} {response.text[:300]}")
    cancel_job(api, response.json()["id"])
    return seconds


def measure(api: httpx.Client, product: Product, rows: list[Any], repeats: int) -> SizeRun:
    """Run one job of `rows`, then measure its memory and downloads."""
    client = redis.Redis.from_url(product.redis.url)
    run = SizeRun(users=len(rows))
    try:
        before = used_memory(client)
        with Sampler(dict(product.pids) | _redis_pid(product)) as sampler:
            accepted = submit(api, MAIN, csv_bytes(rows))
            job = wait_job(api, accepted.id, timeout_s=1800, poll_s=0.5)
        run.wall_s = job_wall_s(job, accepted)
        run.failed = int(job["failed"])
        run.cpu_s = {name: st.cpu_s for name, st in sampler.stats.items()}
        run.peak_rss_mb = {name: sampler.peak_mb(name) for name in sampler.stats}
        run.memory = job_memory(client, accepted.id)
        run.used_memory_delta = used_memory(client) - before
        downloads: dict[str, Callable[[], tuple[float, int]]] = {
            "results CSV": lambda: timed_get(api, f"/v1/jobs/{accepted.id}/results", {"format": "csv"}),
            "failed rows CSV": lambda: timed_get(api, f"/v1/jobs/{accepted.id}/results",
                                                 {"format": "csv", "status": "failed"}),
            "results JSON": lambda: timed_get(api, f"/v1/jobs/{accepted.id}/results", {}),
            "rollback plan (dry run staged)": lambda: (rollback_plan_s(api, accepted.id), 0),
        }
        with Sampler({"api": product.pids["api"]}) as api_sampler:
            for what, fetch in downloads.items():
                for _ in range(repeats):
                    seconds, size = fetch()
                    run.downloads.setdefault(what, []).append(seconds)
                    run.download_bytes[what] = size
        run.api_download_peak_mb = api_sampler.peak_mb("api")
    finally:
        client.close()
    return run


def _redis_pid(product: Product) -> dict[str, int]:
    pid = product.redis_pid()
    return {"redis": pid} if pid is not None else {}


def spread(values: list[float]) -> str:
    """min / median / max of several runs."""
    return " / ".join(fmt_s(v) for v in (min(values), statistics.median(values), max(values)))


def derived(big: SizeRun) -> list[tuple[str, str, str]]:
    """What one Redis and one worker host carry at Graph's limits, from the largest job's figures."""
    cap, period = GRAPH_TENANT_APP_WRITES
    tenant_rate = cap / period
    app_rate = GRAPH_APP_WRITES[0] / GRAPH_APP_WRITES[1]
    n = big.users
    worker_cpu = sum(v for k, v in big.cpu_s.items() if k.startswith("worker")) / n
    redis_cpu = big.cpu_s.get("redis", 0.0) / n
    per_user = big.job_bytes / n
    round_rate = BATCH_ITEMS / GRAPH_LATENCY_S
    users_per_gb = 1e9 / per_user
    day_at_rate = tenant_rate * 86_400
    kept = REDIS_MAXMEMORY_GB * users_per_gb
    return [
        ("users/s one tenant can be given by one app (Graph: 3,000 writes / 150 s per app and tenant; "
         "one assignLicense per user)", f"{tenant_rate:g}", "Graph's limit"),
        ("tenants writing at full rate at once through one app registration (Graph: 35,000 writes / 5 min per app)",
         f"{app_rate / tenant_rate:.1f}", "Graph's limit; beyond it, more app registrations"),
        ("worker CPU per user (read + plan + write + result)", f"{worker_cpu * 1000:.2f} ms", "measured"),
        ("tenants at full rate one worker core carries (CPU)", f"{1 / (tenant_rate * worker_cpu):.0f}", "derived"),
        (f"users/s one chunk slot moves at {GRAPH_LATENCY_S * 1000:.0f} ms latency ({BATCH_ITEMS} writes a $batch "
         "round, one round at a time)", f"{round_rate:.0f}",
         "derived: over 20/s, so one slot keeps a tenant at its limit"),
        (f"jobs running with their full window ({CHUNK_WINDOW} chunks) per 16 chunk threads "
         "(BULKLICENSE_WORKER_CONCURRENCY's default)", f"{16 // CHUNK_WINDOW}",
         "derived; more jobs queue their chunks, and more threads cost little (they wait on Graph)"),
        ("Redis CPU per user", f"{redis_cpu * 1000:.3f} ms", "measured"),
        ("tenants at full rate one Redis core carries (CPU)", f"{1 / (tenant_rate * redis_cpu):.0f}", "derived"),
        ("Redis memory a finished user keeps (every key of the job, until retention)", f"{per_user:,.0f} bytes",
         "measured"),
        ("users kept per GB of Redis", f"{users_per_gb / 1e6:.2f} M", "derived"),
        (f"a tenant at full rate all day ({day_at_rate / 1e6:.2f} M users) kept {RETENTION_DAYS:g} days",
         f"{day_at_rate * RETENTION_DAYS * per_user / 1e9:.0f} GB", "derived: the worst case; size by users per month"),
        (f"users a {REDIS_MAXMEMORY_GB:g} GB Redis keeps over the {RETENTION_DAYS:g}-day retention",
         f"{kept / 1e6:.1f} M ({kept / RETENTION_DAYS / 1e3:,.0f} k a day)", "derived"),
    ]


def render(runs: list[SizeRun], *, command: str, started: datetime, elapsed_s: float, workers: int,
           concurrency: int, load: str) -> str:
    """The capacity section of BENCHMARKS.md."""
    out = [BEGIN, "## Capacity (issue 21)", "",
           f"- command: `{command}`; date: {started:%Y-%m-%d %H:%M %Z}; it took {elapsed_s / 60:.1f} min",
           f"- machine: {os.cpu_count()} cores, {cpu_model()}; load average at the start {load} (other work shared "
           "the machine: times are noisy, ratios less so)",
           f"- product: {workers} worker processes × {concurrency} threads, one API process, one Redis; graphsim "
           "unthrottled, no latency; every user gets one assignLicense after its read",
           "- memory: `MEMORY USAGE key SAMPLES 0` summed over the job's keys once it has finished (Celery's "
           "messages excluded), and the server's `used_memory` before the submission and after the job",
           "", "| figure | " + " | ".join(f"{r.users:,} users" for r in runs) + " |",
           "|---|" + "---|" * len(runs)]

    def row(name: str, cell: Callable[[SizeRun], str]) -> None:
        out.append(f"| {name} | " + " | ".join(cell(r) for r in runs) + " |")

    row("job wall time (202 → last result), users failed", lambda r: f"{fmt_s(r.wall_s)}, {r.failed}")
    for fam in sorted({f for r in runs for f in r.memory}):
        row(f"Redis per 1,000 users: {fam}", _memory_cell(fam))
    row("**Redis per 1,000 users: the whole job**", lambda r: f"**{r.job_bytes / r.users * 1000 / 1e3:,.1f} kB**")
    row("Redis `used_memory` delta per 1,000 users", lambda r: f"{r.used_memory_delta / r.users * 1000 / 1e3:,.1f} kB")
    for what in (runs[0].downloads if runs else {}):
        row(f"{what}: min / median / max", _download_cell(what, per_thousand=False))
        row(f"{what}: per 1,000 users (median)", _download_cell(what, per_thousand=True))
    row("results CSV size", lambda r: f"{r.download_bytes.get('results CSV', 0) / 1e6:.1f} MB")
    row("API peak RSS during the downloads", lambda r: f"{r.api_download_peak_mb:.0f} MB")
    row("API peak RSS during the job", lambda r: f"{r.peak_rss_mb.get('api', 0):.0f} MB")
    for name in sorted(k for k in (runs[0].peak_rss_mb if runs else {}) if k.startswith("worker")):
        row(f"{name} peak RSS during the job", _rss_cell(name))
    row("workers' CPU time over the job", lambda r: fmt_s(sum(v for k, v in r.cpu_s.items() if k.startswith("worker"))))
    row("Redis CPU time over the job", lambda r: fmt_s(r.cpu_s.get("redis", 0.0)))
    if runs:
        big = max(runs, key=lambda r: r.users)
        out += ["", f"### What one Redis and one worker host carry at Graph's limits (from the {big.users:,}-user "
                "job)", "",
                "Assumptions: Graph's published limits (3,000 writes per 150 s per app and tenant, 35,000 per 5 min "
                "per app, 18,000 per 5 min per tenant across apps); one assignLicense and one read per user; "
                f"{GRAPH_LATENCY_S * 1000:.0f} ± 300 ms a request; the product's defaults (chunks of 100, a window "
                f"of {CHUNK_WINDOW} chunks, $batch of {BATCH_ITEMS}, {RETENTION_DAYS:g} days' retention). CPU "
                "figures are from this machine at zero latency, where the pipeline runs flat out: per user, "
                "they do not depend on latency.", "",
                "| figure | value | how |", "|---|---|---|"]
        out += [f"| {name} | {value} | {how} |" for name, value, how in derived(big)]
    out.append(END)
    return "\n".join(out) + "\n"


def _memory_cell(fam: str) -> Callable[[SizeRun], str]:
    return lambda r: f"{r.memory.get(fam, 0) / r.users * 1000 / 1e3:,.1f} kB"


def _download_cell(what: str, *, per_thousand: bool) -> Callable[[SizeRun], str]:
    if per_thousand:
        return lambda r: fmt_s(statistics.median(r.downloads[what]) / r.users * 1000)
    return lambda r: spread(r.downloads[what])


def _rss_cell(name: str) -> Callable[[SizeRun], str]:
    return lambda r: f"{r.peak_rss_mb.get(name, 0):.0f} MB"


def splice(text: str, section: str) -> str:
    """`text` with its capacity section replaced by `section` (appended when it has none)."""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + section.rstrip("\n") + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + section


def kept_section(path: Path) -> str | None:
    """The capacity section of an existing report, for `bench.run` to keep."""
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return None
    return BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END + "\n"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000", help="job sizes in users, comma-separated")
    p.add_argument("--quick", action="store_true", help="1,000 and 5,000 users: a smoke run")
    p.add_argument("--repeats", type=int, default=3, help="times each download is timed")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = p.parse_args(argv)
    args.users = [1_000, 5_000] if args.quick else [int(x) for x in args.sizes.split(",") if x.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure, print and write the capacity section."""
    raw = sys.argv[1:] if argv is None else argv
    args = _parse(raw)
    started, t0 = datetime.now().astimezone(), time.monotonic()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    root = Path(tempfile.mkdtemp(prefix="bulklicense-capacity-"))
    sim = Sim(root, MAIN, users=int(max(args.users) * 1.25) + 1_000, seed=1)
    runs: list[SizeRun] = []
    try:
        print(f"starting graphsim ({sim.users:,} users) …", flush=True)
        sim.start()
        sim.reset(write_limit="none")
        rows = one_write_rows(sim.all_users(), sim.skus())
        if len(rows) < max(args.users):
            raise RuntimeError(f"graphsim has {len(rows):,} one-write users; need {max(args.users):,}")
        tenants = write_tenants_file(root / "tenants.toml", {MAIN: sim.profile(**limit_fields(None, 150.0))})
        for users in args.users:
            sim.reset(write_limit="none")  # every user lacks its SKU again
            product = Product(root / f"product-{users}", tenants, workers=args.workers, concurrency=args.concurrency)
            try:
                product.start()
                with product.api() as api:
                    print(f"== {users:,} users", flush=True)
                    runs.append(measure(api, product, rows[:users], args.repeats))
            finally:
                product.stop()
            r = runs[-1]
            print(f"   job {fmt_s(r.wall_s)}; Redis {r.job_bytes / users * 1000 / 1e3:,.1f} kB per 1,000 users; "
                  + "; ".join(f"{w} {spread(v)}" for w, v in r.downloads.items()), flush=True)
    finally:
        sim.stop()
        shutil.rmtree(root, ignore_errors=True)
    command = " ".join(["python -m bench.capacity", *raw])
    section = render(runs, command=command, started=started, elapsed_s=time.monotonic() - t0,
                     workers=args.workers, concurrency=args.concurrency, load=load)
    old = args.out.read_text(encoding="utf-8") if args.out.exists() else "# Benchmarks\n"
    args.out.write_text(splice(old, section), encoding="utf-8")
    print(section)
    print(f"wrote the capacity section of {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
