"""Issue 9's figures (plan before write): a file half of whose users already hold what it asks, the rerun
of a finished file, and a dry run at tenant scale. Reads meet Graph's resource-unit quota here."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psutil

from bench.baselines import naive_parallel
from bench.context import (
    CEILING,
    JITTER_MS,
    LATENCY_MS,
    MAIN,
    Context,
    bought_text,
    min_time_s,
    stats_delta,
    write_refusals,
)
from bench.results import ScenarioResult, fmt_pct, fmt_rate, fmt_s
from bench.stack import Sampler, Sim, limit_fields
from bench.workload import GENERATED_SKU, Row, csv_bytes, job_wall_s, seat_demand, submit, wait_job
from config import load_tenants

DRY = "big"  # the tenant (and graphsim) of the dry run at scale
PREP_THREADS = 16


def _read_quota_text(quota: tuple[int, float]) -> str:
    return f"{quota[0]:,} RU per {quota[1]:g} s ({quota[0] / quota[1]:g} RU/s)"


def _conditions(quota: tuple[int, float]) -> dict[str, Any]:
    """Scenario 1's graphsim knobs, plus Graph's resource-unit quota for a tenant of this size."""
    cap, period = CEILING
    return {"write_limit": f"{cap}/{period:g}", "tenant_write_limit": "none", "latency_ms": LATENCY_MS,
            "latency_jitter_ms": JITTER_MS, "read_limit": f"{quota[0]}/{quota[1]:g}", "charge_refused": True}


def _setup_lines(quota: tuple[int, float]) -> list[str]:
    cap, period = CEILING
    return [
        f"graphsim: write limit {cap}/{period:g} s per app+tenant ({cap / period:g}/s), tenant limit none, "
        f"latency {LATENCY_MS:g} ± {JITTER_MS:g} ms, read limit {_read_quota_text(quota)}: Graph's quota for a "
        "tenant of over 500 users, which every request draws on (a user read with $select 1 RU, a write 1 RU)",
        f"product profile: write_capacity = {cap}, write_period_s = {period:g}, read_capacity_ru = {quota[0]}, "
        f"read_period_s = {quota[1]:g} (the product reads with what the writes leave of it)",
    ]


def _users_read(before: dict[str, Any], after: dict[str, Any]) -> int:
    """User reads (GET /users/{id}, $batch items included) graphsim served between two snapshots."""
    def users_get(stats: dict[str, Any]) -> int:
        return int(stats.get("reads_by_endpoint", {}).get("users.get", 0))

    return users_get(after) - users_get(before)


def _add_reads(result: ScenarioResult, delta: dict[str, int], users_read: int, prefix: str = "") -> None:
    result.add(f"{prefix}users read by graphsim (GET with $select, $batch items)", f"{users_read:,}")
    result.add(f"{prefix}resource units used / refused (graphsim)",
               f"{delta['resource_units_used']:,} / {delta['resource_units_refused']:,} RU")
    result.add(f"{prefix}reads refused with 429", f"{delta['reads_throttled']:,}")


def _first_write_s(writes: list[dict[str, Any]], accepted_at: float) -> float | None:
    """Seconds from the 202 to the first write graphsim logged (None: there was none)."""
    return min(float(w["ts"]) for w in writes) - accepted_at if writes else None


def _plan_text(job: dict[str, Any]) -> str:
    plan = job.get("plan") or {}
    failures = sum((plan.get("predicted_failures") or {}).values())
    warnings = sum((plan.get("warnings") or {}).values())
    return (f"{plan.get('changes', 0):,} changes, {plan.get('unchanged', 0):,} unchanged, {failures:,} predicted "
            f"failures, {warnings:,} warnings")


# --- 8: half already hold --------------------------------------------------------------------------


def scenario_half(ctx: Context, result: ScenarioResult) -> None:
    """8. A job where every other user already holds the SKU its row adds: writes only for the others."""
    n = ctx.sizes.half
    rows = ctx.rows_main[:n]
    held, changing = rows[0::2], rows[1::2]
    cap, period = CEILING
    quota = ctx.main.read_quota()
    minimum = min_time_s(len(changing), cap, period)
    # Preparation, not measured: the held half gets its SKU straight from the benchmark client on an
    # unthrottled graphsim; then the measured knobs are set, which gives fresh, full buckets.
    ctx.main.reset(write_limit="none")
    graph_profile = load_tenants(Path(ctx.main.info["profile_path"]))[MAIN]
    prep = naive_parallel(graph_profile, [(r.upn, ctx.sku_ids[r.part_number]) for r in held], PREP_THREADS)
    if prep.succeeded != len(held):
        raise RuntimeError(f"preparation assigned {prep.succeeded:,} of {len(held):,} licenses")
    ctx.main.configure(**_conditions(quota))
    bought = ctx.main.ensure_free_seats(seat_demand(rows))
    result.setup += [
        f"{n:,} users, one SKU added per row; every other row's user (the 1st, 3rd, …: {len(held):,}) already "
        f"holds that SKU, the other {len(changing):,} lack it (one assignLicense each, no usageLocation PATCH)",
        f"preparation, not measured: the {len(held):,} licenses assigned by the benchmark client on an "
        f"unthrottled graphsim ({fmt_s(prep.wall_s)}), then graphsim set as below (fresh, full buckets); "
        "graphsim's counters are read just before the submission and after the job",
        *_setup_lines(quota),
        f"seats bought for the reservation at submission (a seat per row that adds one): {bought_text(bought)}",
    ]
    profiles = {MAIN: ctx.main.profile(**limit_fields(cap, period, read=quota))}
    with ctx.product(result.key, profiles) as product, product.api() as api:
        with Sampler(ctx.pids(product)) as sampler:
            before = ctx.main.stats()
            accepted = submit(api, MAIN, csv_bytes(rows))
            job = wait_job(api, accepted.id, timeout_s=minimum * 4 + 120)
        after = ctx.main.stats()
        writes = ctx.main.writes(since=accepted.sent_at)
    result.processes["job"] = sampler.cpu_summary()
    delta = stats_delta(before, after)
    wall = job_wall_s(job, accepted)
    ratio = wall / minimum
    changes = int((job.get("plan") or {}).get("changes", -1))
    held_ids = {ctx.user_ids[r.upn.lower()] for r in held}
    to_held = sum(1 for w in writes if w.get("user_id") in held_ids)
    refused = sum(1 for w in writes if w.get("status") == 429)
    accepted_writes = delta["writes_accepted"]
    result.add("plan", _plan_text(job))
    result.add("writes accepted by graphsim", f"{accepted_writes:,}", f"= changes ({len(changing):,})",
               accepted_writes == changes == len(changing))
    result.add("write requests in graphsim's write log (refused ones included)",
               f"{len(writes):,} ({refused:,} refused with 429)")
    result.add("writes to users who already held the SKU", f"{to_held:,}", "0", to_held == 0)
    result.add("users unchanged", f"{job['unchanged']:,}", f"{len(held):,}", job["unchanged"] == len(held))
    result.add("users failed", f"{job['failed']:,}", "0", job["failed"] == 0)
    result.add("wall time (202 accepted → last result)", fmt_s(wall))
    result.add(f"write-ceiling minimum for the changes alone (({len(changing):,} − {cap}) / {cap / period:g}/s)",
               fmt_s(minimum), measured="derived")
    result.add("ratio wall / minimum", f"{ratio:.3f}", "≤ 1.05", ratio <= 1.05)
    first = _first_write_s(writes, accepted.accepted_at)
    if first is not None:
        result.add("first write, after the 202", fmt_s(first))
    _add_reads(result, delta, _users_read(before, after))
    _, throttled, share = write_refusals(delta)
    result.add("429s / write requests (graphsim)", f"{fmt_pct(share)} ({throttled:,})")
    result.add("users/s (all users)", fmt_rate(n / wall))
    result.add("submission (POST → 202)", fmt_s(accepted.submit_s))
    result.values.update(ratio=ratio, wall_s=wall, min_s=minimum, changes=len(changing), users=n,
                         capacity=cap, limit_per_s=cap / period, ru_used=delta["resource_units_used"],
                         **({"first_write_s": first} if first is not None else {}))


# --- 9: rerun of a finished file -------------------------------------------------------------------


def scenario_rerun(ctx: Context, result: ScenarioResult) -> None:
    """9. The same finished file again: nothing to write, so it should cost reads only."""
    n = ctx.sizes.rerun
    rows = ctx.rows_main[:n]
    body = csv_bytes(rows)
    cap, period = CEILING
    quota = ctx.main.read_quota()
    ctx.main.reset(**_conditions(quota))
    bought = ctx.main.ensure_free_seats(seat_demand(rows))
    result.setup += [
        f"{n:,} users, each lacking the SKU its row adds (as in scenario 1); the file runs once (the first run: "
        "every user changes), then the same bytes are submitted again once it has finished, on the same API and "
        "workers",
        *_setup_lines(quota),
    ]
    profiles = {MAIN: ctx.main.profile(**limit_fields(cap, period, read=quota))}
    with ctx.product(result.key, profiles) as product, product.api() as api:
        with Sampler(ctx.pids(product)) as first_sampler:
            first = submit(api, MAIN, body)
            first_job = wait_job(api, first.id, timeout_s=min_time_s(n, cap, period) * 4 + 120)
        first_stats = ctx.main.stats()
        # The reservation at submission counts every row's add again, though none will take a seat.
        bought2 = ctx.main.ensure_free_seats(seat_demand(rows))
        with Sampler(ctx.pids(product)) as sampler:
            before = ctx.main.stats()
            again = submit(api, MAIN, body)
            job = wait_job(api, again.id, timeout_s=600, poll_s=0.2)
        after = ctx.main.stats()
        writes = ctx.main.writes(since=again.sent_at)
    result.setup.append(f"seats bought for the reservations at submission: first run {bought_text(bought)}, "
                        f"rerun {bought_text(bought2)}")
    result.processes["first run"] = first_sampler.cpu_summary()
    result.processes["rerun"] = sampler.cpu_summary()
    first_wall, wall = job_wall_s(first_job, first), job_wall_s(job, again)
    share = wall / first_wall
    delta = stats_delta(before, after)
    result.add("first run: wall time (202 accepted → last result)", fmt_s(first_wall))
    result.add("first run: users succeeded · unchanged · failed",
               f"{first_job['succeeded']:,} · {first_job['unchanged']:,} · {first_job['failed']:,}")
    result.add("first run: writes accepted by graphsim", f"{first_stats['writes_accepted']:,}")
    result.add("rerun: wall time (202 accepted → last result)", fmt_s(wall))
    result.add("rerun: wall time / first run's", fmt_pct(share), "≤ 5 %", share <= 0.05)
    result.add("rerun: write requests (graphsim's write log, refused ones included)", f"{len(writes):,}", "0",
               not writes and delta["writes_accepted"] == 0)
    result.add("rerun: users unchanged", f"{job['unchanged']:,} of {job['total']:,}", "all",
               job["unchanged"] == job["total"] == n)
    result.add("rerun: status", str(job["status"]))
    _add_reads(result, delta, _users_read(before, after), "rerun: ")
    ru_floor = min_time_s(delta["resource_units_used"], *quota)
    result.add(f"rerun: fastest graphsim's read quota allows for these RUs ((RU − {quota[0]:,}) / "
               f"{quota[0] / quota[1]:g} RU/s)", fmt_s(ru_floor), measured="derived")
    result.add("rerun: users/s", fmt_rate(n / wall))
    result.add("rerun: submission (POST → 202)", fmt_s(again.submit_s))
    result.values.update(first_wall_s=first_wall, wall_s=wall, share=share, users=n,
                         ru_used=delta["resource_units_used"], ru_floor_s=ru_floor,
                         quota_ru=quota[0], quota_period_s=quota[1], write_per_s=cap / period,
                         round_trip_s=LATENCY_MS / 1000)


# --- 10: dry run at scale --------------------------------------------------------------------------


def scenario_dry_run(ctx: Context, result: ScenarioResult) -> None:
    """10. A dry run of every user of a tenant as large: how long planning takes and what it costs in RUs."""
    n = ctx.sizes.dry_run
    sim = Sim(ctx.root, DRY, users=n, seed=3)
    t0 = time.monotonic()
    try:
        sim.start()
        start_s = time.monotonic() - t0
        rss_mb = psutil.Process(sim.pid).memory_info().rss / 1e6
        result.add(f"graphsim with {n:,} users: start (until its ready line) · RSS after start",
                   f"{fmt_s(start_s)} · {rss_mb:.0f} MB")
        _dry_run_on(ctx, result, sim)
        result.values["start_s"] = start_s
    finally:
        sim.stop()


def _dry_run_on(ctx: Context, result: ScenarioResult, sim: Sim) -> None:
    n = sim.users
    cap, period = CEILING
    quota = sim.read_quota()
    users = sim.all_users()
    rows = [Row(u["userPrincipalName"], GENERATED_SKU) for u in users]
    sim.reset(**_conditions(quota))
    result.setup += [
        f"a graphsim of its own with {n:,} users (started for this scenario, stopped after it), and a dry run "
        f"(`POST /v1/jobs?dry_run=true`) of a file adding {GENERATED_SKU} to every one of them: some hold it "
        "already (unchanged), some have no usage location (predicted failures), the rest would change",
        *_setup_lines(quota),
    ]
    profiles = {DRY: sim.profile(**limit_fields(cap, period, read=quota))}
    with ctx.product(result.key, profiles) as product, product.api() as api:
        with Sampler(ctx.pids(product, sim=sim)) as sampler:
            accepted = submit(api, DRY, csv_bytes(rows), dry_run=True)
            job = wait_job(api, accepted.id, timeout_s=min_time_s(n, *quota) * 4 + 300)
        stats = sim.stats()
        writes = sim.writes()
    result.processes["dry run"] = sampler.cpu_summary()
    wall = job_wall_s(job, accepted)
    ru, refused = int(stats["resource_units_used"]), int(stats["resource_units_refused"])
    ru_floor = min_time_s(ru, *quota)
    result.add("status", str(job["status"]), "planned", job["status"] == "planned")
    result.add("wall time (202 accepted → planned)", fmt_s(wall))
    result.add("users planned/s", fmt_rate(n / wall))
    result.add("plan", _plan_text(job))
    result.add("write requests (graphsim's write log, refused ones included)", f"{len(writes):,}", "0",
               not writes and int(stats["writes_accepted"]) == 0)
    result.add("resource units used (graphsim)", f"{ru:,} RU ({ru / n:.2f} per user)")
    result.add("resource units refused (429)", f"{refused:,} RU ({int(stats['reads_throttled']):,} reads)")
    result.add("users read by graphsim (GET with $select, $batch items)",
               f"{int(stats.get('reads_by_endpoint', {}).get('users.get', 0)):,}")
    result.add(f"fastest graphsim's read quota allows for these RUs ((RU − {quota[0]:,}) / "
               f"{quota[0] / quota[1]:g} RU/s)", fmt_s(ru_floor), measured="derived")
    if ru_floor > 0:
        result.add("ratio wall / that minimum", f"{wall / ru_floor:.3f}", measured="derived")
    result.add("submission (POST → 202)", fmt_s(accepted.submit_s))
    result.add("peak RSS graphsim during the dry run", f"{sampler.peak_mb('graphsim'):.0f} MB")
    for name in sorted(k for k in sampler.stats if k.startswith("worker")):
        result.add(f"peak RSS {name}", f"{sampler.peak_mb(name):.0f} MB")
    result.values.update(wall_s=wall, users=n, ru_used=ru, ru_floor_s=ru_floor, quota_ru=quota[0],
                         quota_period_s=quota[1], write_per_s=cap / period, round_trip_s=LATENCY_MS / 1000)
