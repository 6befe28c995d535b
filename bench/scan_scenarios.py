"""Issue 20's figure (reclamation): a reclamation dry run of a whole tenant, its scan reading sign-ins 120 users a
page under Graph's resource-unit quota."""

from __future__ import annotations

import time
from typing import Any

import httpx
import psutil

from bench.context import CEILING, JITTER_MS, LATENCY_MS, Context, min_time_s
from bench.results import ScenarioResult, fmt_rate, fmt_s
from bench.stack import Sampler, Sim, limit_fields
from bench.workload import epoch, wait_job

RECLAIM = "scan"  # the tenant (and graphsim) of the reclamation
INACTIVE_DAYS = 90


def scenario_reclaim(ctx: Context, result: ScenarioResult) -> None:
    """11. A reclamation dry run of a tenant as large as scenario 10's: scan time, pages, resource units."""
    n = ctx.sizes.dry_run
    sim = Sim(ctx.root, RECLAIM, users=n, seed=5)
    try:
        sim.start()
        _reclaim_on(ctx, result, sim)
    finally:
        sim.stop()


def _reclaim_on(ctx: Context, result: ScenarioResult, sim: Sim) -> None:
    n, quota = sim.users, sim.read_quota()
    cap, period = CEILING
    sim.reset(write_limit=f"{cap}/{period:g}", latency_ms=LATENCY_MS, latency_jitter_ms=JITTER_MS,
              read_limit=f"{quota[0]}/{quota[1]:g}")
    result.setup += [
        f"a graphsim of its own with {n:,} users (the fixture's sign-ins, created dates and disabled accounts), "
        f"and a reclamation dry run (`POST /v1/reclaim?inactive_days={INACTIVE_DAYS}&dry_run=true`) of every SKU",
        f"graphsim: latency {LATENCY_MS:g} ± {JITTER_MS:g} ms, read limit {quota[0]:,} RU per {quota[1]:g} s "
        "(Graph's quota for a tenant of over 500 users; a page of 120 users with signInActivity costs 1 RU)",
    ]
    profiles = {RECLAIM: sim.profile(**limit_fields(cap, period, read=quota))}
    with ctx.product(result.key, profiles) as product, product.api() as api:
        with Sampler(ctx.pids(product, sim=sim)) as sampler:
            sent = time.time()
            job = _reclaim(api, timeout_s=min_time_s(n, *quota) + 600)
        stats = sim.stats()
        writes = sim.writes()
    result.processes["reclamation dry run"] = sampler.cpu_summary()
    summary: dict[str, Any] = job["scan"]["summary"]
    wall = (epoch(job["finished_at"]) or sent) - sent
    released = sum(int(line["released"]) for line in job["plan"]["seats"] or [])
    result.add("status", str(job["status"]), "planned", job["status"] == "planned")
    result.add("wall time (request → planned: scan and plan)", fmt_s(wall))
    result.add("licensed users scanned/s", fmt_rate(summary["licensed_users"] / wall))
    result.add("licensed users read · found (by reason) · left alone (by reason)",
               f"{summary['licensed_users']:,} · {summary['users']:,} {summary['found']} · {summary['excluded']}")
    result.add("pages read by the scan (GET /users, 120 a page with signInActivity)", f"{summary['pages_read']:,}")
    result.add("seats the plan releases (all SKUs)", f"{released:,}")
    result.add("user reads besides the scan (GET /users/{id}, $batch items)",
               f"{int(stats.get('reads_by_endpoint', {}).get('users.get', 0)):,}", "0")
    result.add("resource units used (graphsim)", f"{int(stats['resource_units_used']):,} RU")
    result.add("write requests", f"{len(writes):,}", "0", not writes)
    for name in sorted(k for k in sampler.stats if k.startswith("worker")):
        result.add(f"peak RSS {name}", f"{sampler.peak_mb(name):.0f} MB")
    result.add("peak RSS graphsim", f"{sampler.peak_mb('graphsim'):.0f} MB")
    result.values.update(wall_s=wall, users=n, pages=summary["pages_read"], found=summary["users"],
                         graphsim_rss_mb=psutil.Process(sim.pid).memory_info().rss / 1e6)


def _reclaim(api: httpx.Client, *, timeout_s: float) -> dict[str, Any]:
    """Ask for the reclamation dry run and wait until it is planned."""
    response = api.post("/v1/reclaim", params={"tenant": RECLAIM, "inactive_days": INACTIVE_DAYS,
                                               "dry_run": "true"})
    if response.status_code != 202:
        raise RuntimeError(f"reclamation refused: HTTP {response.status_code} {response.text[:500]}")
    return wait_job(api, response.json()["id"], timeout_s=timeout_s)
