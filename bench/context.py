"""What every scenario shares: sizes, the run's graphsims and inputs, and the figures read off graphsim."""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results import ScenarioResult
from bench.stack import Product, Sim, write_tenants_file
from bench.workload import Row, check_seats, one_write_rows

MAIN, OTHER = "sim", "other"
OTHER_TENANT_ID = "7c1f0a3e-2b4d-4c6e-9f8a-0d1e2f3a4b5c"
LATENCY_MS, JITTER_MS = 100.0, 50.0
CEILING = (500, 5.0)  # graphsim's write bucket in scenarios 1, 2, 4, 8 and 9: 500 writes, refilled at 100/s
HIDDEN_REAL = (250, 5.0)  # scenario 5: what graphsim really allows (the profile still says CEILING)
GRAPH_REAL = (3_000, 150.0)  # scenario 12: Graph's write limit per app+tenant (a bucket of 150 s of refill)
GRAPH_LATENCY_MS, GRAPH_JITTER_MS = 600.0, 300.0


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is (full run or --quick)."""

    sim_users: int
    other_users: int
    ceiling: int
    ceiling_runs: int
    sequential: int
    baseline: int  # users of scenario 2's comparison (naive client and product)
    baseline_runs: int  # runs of each side in scenario 2
    pipeline: int
    fair_big: int
    fair_small: int
    fair_other: int
    fair_small_after_s: float
    progress: int
    progress_samples: int
    csv_rows: int
    half: int
    rerun: int
    dry_run: int  # users in the dry run, and in the graphsim it runs on
    real_limits: int  # users of scenario 12 (the product)
    real_naive: int  # users the naive client runs in scenario 12 (projected to real_limits)

    @classmethod
    def full(cls) -> Sizes:
        """The sizes issues 4, 5 and 9 ask for."""
        return cls(sim_users=120_000, other_users=5_000, ceiling=10_000, ceiling_runs=2, sequential=300,
                   baseline=3_000, baseline_runs=3, pipeline=20_000, fair_big=20_000, fair_small=10, fair_other=3_000,
                   fair_small_after_s=5.0, progress=100_000, progress_samples=600, csv_rows=1_000_000,
                   half=10_000, rerun=10_000, dry_run=100_000, real_limits=4_000, real_naive=1_000)

    @classmethod
    def quick(cls) -> Sizes:
        """A smoke run: every code path, small sizes."""
        return cls(sim_users=25_000, other_users=2_000, ceiling=1_500, ceiling_runs=1, sequential=100,
                   baseline=1_000, baseline_runs=2, pipeline=4_000, fair_big=5_000, fair_small=10, fair_other=800,
                   fair_small_after_s=5.0, progress=20_000, progress_samples=200, csv_rows=100_000,
                   half=1_500, rerun=1_500, dry_run=10_000, real_limits=3_400, real_naive=200)


@dataclass
class Context:
    """State shared by the scenarios of one run."""

    root: Path
    sizes: Sizes
    workers: int
    concurrency: int
    main: Sim
    other: Sim
    rows_main: list[Row] = field(default_factory=list)
    rows_other: list[Row] = field(default_factory=list)
    sku_ids: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, str] = field(default_factory=dict)  # main graphsim: UPN (lower case) -> object id
    results: dict[str, ScenarioResult] = field(default_factory=dict)
    log: Callable[[str], None] = print

    def prepare(self) -> None:
        """Pick the users whose rows cost exactly one write, and check the seats are there."""
        skus = self.main.skus()
        self.sku_ids = {s["skuPartNumber"]: s["skuId"] for s in skus}
        users = self.main.all_users()
        self.user_ids = {u["userPrincipalName"].lower(): u["id"] for u in users}
        self.rows_main = one_write_rows(users, skus)
        self.rows_other = one_write_rows(self.other.all_users(), self.other.skus())
        s = self.sizes
        need_main = max(s.ceiling, s.baseline, s.real_limits, s.pipeline, s.fair_big + s.fair_small, s.progress,
                        s.half, s.rerun)
        if len(self.rows_main) < need_main or len(self.rows_other) < s.fair_other:
            raise RuntimeError(f"graphsim has {len(self.rows_main)}/{len(self.rows_other)} one-write users; "
                               f"need {need_main}/{s.fair_other}")
        check_seats(self.rows_main[:need_main], skus)
        check_seats(self.rows_other[: s.fair_other], self.other.skus())

    @contextlib.contextmanager
    def product(self, name: str, profiles: dict[str, dict[str, Any]], *, workers: int | None = None,
                env: dict[str, str] | None = None) -> Iterator[Product]:
        """A fresh Redis + API + workers on a tenants file with `profiles`; always stopped."""
        workdir = self.root / name
        workdir.mkdir(parents=True, exist_ok=True)
        tenants = write_tenants_file(workdir / "tenants.toml", profiles)
        product = Product(workdir, tenants, workers=workers or self.workers, concurrency=self.concurrency, env=env)
        try:
            product.start()
            yield product
        finally:
            product.stop()

    def pids(self, product: Product, *, other: bool = False, sim: Sim | None = None) -> dict[str, int]:
        """Processes to sample: the product's, Redis and graphsim (`sim`, by default the main one)."""
        pids = dict(product.pids)
        redis_pid = product.redis_pid()
        if redis_pid is not None:
            pids["redis"] = redis_pid
        pids["graphsim"] = (sim or self.main).pid
        if other:
            pids["graphsim-other"] = self.other.pid
        pids["bench client"] = os.getpid()
        return pids


def write_refusals(stats: dict[str, Any]) -> tuple[int, int, float]:
    """Write requests graphsim saw, how many it refused with 429, and their share (reads left out)."""
    accepted = int(stats["writes_accepted"])
    throttled = int(stats["throttled_responses"]) - int(stats.get("reads_throttled", 0))
    requests = accepted + throttled
    return requests, throttled, (throttled / requests if requests else 0.0)


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """graphsim's counters over a window (it has no counter reset that keeps the users' state)."""
    keys = ("writes_accepted", "reads_accepted", "reads_throttled", "throttled_responses",
            "resource_units_used", "resource_units_refused", "requests")
    return {key: int(after.get(key, 0)) - int(before.get(key, 0)) for key in keys}


def steady_rate(per_second: list[int], skip_s: int = 10) -> float | None:
    """Mean accepted writes/s after the initial burst: from `skip_s` seconds after the first accepted
    write to the last full second (graphsim counts seconds from its reset, before the job started)."""
    first = next((i for i, n in enumerate(per_second) if n), None)
    if first is None:
        return None
    window = per_second[first + skip_s: -1]
    return statistics.fmean(window) if len(window) >= 3 else None


def throttled_times(writes: list[dict[str, Any]]) -> list[float]:
    """Seconds after the first write at which graphsim answered 429, sorted."""
    if not writes:
        return []
    first = min(float(w["ts"]) for w in writes)
    return sorted(float(w["ts"]) - first for w in writes if w.get("status") == 429)


def min_time_s(writes: int, capacity: int, period_s: float) -> float:
    """The fastest a full bucket of `capacity` refilled at capacity/period allows `writes` writes."""
    return max(0.0, writes - capacity) / (capacity / period_s)


def bought_text(bought: dict[str, int]) -> str:
    """Seats bought per SKU, in words."""
    return ", ".join(f"{part} +{n:,}" for part, n in bought.items()) or "none needed"
