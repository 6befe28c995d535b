"""What the run itself shows about the limits: CPU per process, throttling, idle versus busy figures."""

from __future__ import annotations

import inspect

from bench.baselines import MAX_ATTEMPTS
from bench.results import ScenarioResult
from config import Settings
from graphclient.throttle import DECREASE, HOLD_S, NUDGE, RedisThrottle, burst_headroom

BURST_S = 3.0  # 429s this soon after the first write belong to the initial burst


def throttle_safety() -> float:
    """The share of the profile's rate the product's throttle aims at (RedisThrottle's default)."""
    default = inspect.signature(RedisThrottle.__init__).parameters["safety"].default
    return float(default) if isinstance(default, int | float) else 1.0


def _default(name: str) -> int:
    """A product setting's default (chunk size, chunk window, $batch size)."""
    return int(Settings.model_fields[name].default)


def product_burst(capacity: float, rate_per_s: float) -> float:
    """Writes the product's throttle lets out at once from full: its local bucket, which RedisThrottle
    documents as capacity × safety, or less where that would leave fewer than `burst_headroom` writes free
    in Graph's bucket (never less than half of it)."""
    headroom = burst_headroom(_default("batch_size"), rate_per_s)
    return max(capacity * 0.5, min(capacity * throttle_safety(), capacity - headroom))


def perfect_ratio(writes: float, capacity: float, rate_per_s: float) -> float:
    """wall / minimum of a run that keeps the product's throttle exactly at its aim from the first write."""
    s = throttle_safety()
    return (writes - product_burst(capacity, rate_per_s)) / (s * (writes - capacity))


def read_bound_users_per_s(round_trip_s: float) -> float:
    """Users a read-only job can read per second: it keeps `chunk_window` chunks in flight, each sending
    one $batch of `batch_size` reads at a time."""
    return _default("chunk_window") * _default("batch_size") / round_trip_s


def _cpu_line(phase: str, procs: dict[str, dict[str, float]]) -> str:
    busy = sum(p["cores"] for p in procs.values())
    ranked = sorted(procs.items(), key=lambda kv: kv[1]["cores"], reverse=True)
    top = ", ".join(f"{name} {p['cores']:.2f}" for name, p in ranked if p["cores"] >= 0.05)
    return f"{phase}: {busy:.2f} cores busy on average ({top or 'all idle'})"


def analyse(results: dict[str, ScenarioResult]) -> list[str]:
    """Bullet points for the report, one block per scenario with a missed target."""
    out: list[str] = []
    for result in results.values():
        missed = [m for m in result.metrics if m.met is False]
        if not missed and not result.error:
            continue
        what = "; ".join(f"{m.name} = {m.value} (target {m.target})" for m in missed) or "the scenario did not run"
        out += [f"**{result.title}** — missed: {what}", ""]
        out += [f"- {_cpu_line(phase, procs)}" for phase, procs in result.processes.items()]
        out += [f"- {line}" for line in _observations_for(result)]
        out.append("")
    return out


def observations(results: dict[str, ScenarioResult]) -> list[str]:
    """What the figures say, scenario by scenario (met or not)."""
    out: list[str] = []
    for result in results.values():
        if result.error:
            continue
        lines = _observations_for(result)
        if lines:
            out.append(f"- **{result.title}**: " + " ".join(lines))
    return out


def _observations_for(result: ScenarioResult) -> list[str]:
    v = result.values
    key = result.key
    lines: list[str] = []
    if key in ("ceiling", "headroom") and "ratio" in v:
        s = throttle_safety()
        n, limit = v["users"], v["limit_per_s"]
        capacity = v["capacity"]
        burst = product_burst(capacity, v["profile_per_s"])
        if key == "ceiling" and s < 1.0:
            floor = perfect_ratio(n, capacity, v["profile_per_s"])
            lines.append(f"The product's throttle aims at {s:.0%} of the profile's rate (RedisThrottle's safety "
                         f"margin against arrival jitter at Graph) and lets out {burst:.0f} writes at once, so even "
                         f"a perfect run takes {floor:.3f} × the minimum; the measured ratio is {v['ratio']:.3f}.")
        if key == "ceiling" and v.get("n_429") and v.get("last_429_s", 99.0) < BURST_S:
            batch = _default("batch_size")
            lines.append(
                f"All {v['n_429']:.0f} 429s came {v['first_429_s']:.1f}–{v['last_429_s']:.1f} s after the first "
                f"write, in the initial burst: the product's bucket starts full at {burst:.0f} tokens against "
                f"graphsim's {capacity:.0f}, a margin of {capacity - burst:.0f} writes for one $batch ({batch}) "
                f"plus the bunching of arrivals that graphsim's ±{v['jitter_ms']:.0f} ms latency causes (up to "
                f"{limit * 2 * v['jitter_ms'] / 1000:.0f} writes at {limit:g}/s). One such 429 cuts the product's "
                f"rate by {1 - DECREASE:.0%} and recovery is held for {HOLD_S:g} s after every response reporting "
                "≥ 80 % of Graph's limit used, which after a burst lasts until graphsim's bucket has refilled."
                + (f" The rate fell to {v['rate_low']:.1f}/s and was back at {v['rate_max']:.1f}/s only "
                   f"{v['rate_back_t']:.0f} s after the 202." if v.get("rate_back_t", 0) > 0
                   else f" The rate fell to {v['rate_low']:.1f}/s and was not back by the end of the job."
                   if v.get("rate_back_t") == -1.0 else ""))
        lowered = v.get("rate_low", 0.0) < v.get("rate_max", 0.0) * 0.99
        if key == "ceiling" and lowered and not v.get("n_429"):
            lines.append(
                f"Without any 429 the product lowered its rate to {v['rate_low']:.1f}/s {v['rate_low_t']:.1f} s "
                f"after the 202: its burst of {burst:.0f} tokens leaves graphsim's bucket of "
                f"{capacity:.0f} all but empty, so graphsim reports x-ms-throttle-limit-percentage 1.00, which "
                f"lowers the rate by {1 - NUDGE:.0%} (at most once a second) and holds recovery for {HOLD_S:g} s "
                "after every response reporting ≥ 80 %, until graphsim's bucket has refilled"
                + (f"; it was back at {v['rate_max']:.1f}/s {v['rate_back_t']:.0f} s after the 202."
                   if v.get("rate_back_t", -1.0) > 0 else "; it was not back by the end of the job."))
        if key == "ceiling" and "first_write_s" in v:
            lines.append(f"Every user is read before its write; the first write came {v['first_write_s']:.2f} s "
                         "after the 202 (the first chunks' reads), and from then on reads and writes overlap.")
        if key == "headroom" and v.get("n_429"):
            lines.append(f"The product found the real limit through {v['n_429']:.0f} 429s, the last "
                         f"{v['last_429_s']:.1f} s after the first write"
                         + (f"; its rate averaged {v['rate_half_mean']:.1f}/s over the second half of the run."
                            if "rate_half_mean" in v else "."))
        if "steady_per_s" in v:
            lines.append(f"After the initial burst graphsim accepted {v['steady_per_s']:.1f} writes/s against its "
                         f"limit of {limit:g}/s" + (f" (the profile said {v['profile_per_s']:g}/s)."
                                                     if v["profile_per_s"] != limit else "."))
    if key == "baselines" and "ratio_median" in v:
        lines.append(_baselines_line(v))
    if key == "graph" and "naive_s" in v:
        lines.append(f"At Graph's own limit and latency the product took {v['wall_s']:.1f} s for {v['users']:,.0f} "
                     f"users ({v['ratio']:.3f} × the minimum) with {v['ours_429']:,.0f} 429s; the naive client, "
                     f"bound by latency at {v['naive_rate']:.1f} requests/s, would take {v['naive_s']:.1f} s "
                     f"({v['naive_s'] / v['wall_s']:.2f} ×)"
                     + (": here the edge is speed alone, from $batch; neither side was refused."
                        if v["ours_429"] == 0 and v["naive_429"] == 0 else "."))
    lines += _plan_observations(key, v)
    if key == "pipeline":
        for phase, procs in result.processes.items():
            lines.append(_cpu_line(phase, procs) + ".")
    if key == "progress" and "idle_p99_s" in v:
        text = (f"With the workers idle the same reads take p50 {v['idle_p50_s'] * 1000:.1f} ms / p99 "
                f"{v['idle_p99_s'] * 1000:.1f} ms (same job, same size), against p50 {v['p50_s'] * 1000:.1f} ms "
                f"/ p99 {v['p99_s'] * 1000:.1f} ms while it runs")
        if v["idle_p99_s"] * 2 < v["p99_s"]:
            text += (": the tail comes from sharing the machine's cores with the workers, Redis and graphsim, "
                     "not from the size of the job")
        lines.append(text + ".")
    if key == "input" and "submit_s" in v:
        procs = result.processes.get("submission", {})
        api = procs.get("api", {}).get("cores")
        if api is not None:
            lines.append(f"The API process kept {api:.2f} of a core busy during the upload (parsing and "
                         "validating rows in one thread, staging them in Redis).")
    return lines


def _baselines_line(v: dict[str, float]) -> str:
    """Where the product's edge over the fastest naive client is speed and where it is safety."""
    threads = _thread_counts(v)
    speed = (f"Speed: the naive client's fastest thread count ({v['naive_best_threads']:.0f}) took a median "
             f"{v['naive_median_s']:.1f} s for {v['users']:,.0f} users against the product's "
             f"{v['ours_median_s']:.1f} s ({v['ratio_median']:.2f} × the product's time; {v['ratio_robust']:.2f} × "
             "comparing its best run with the product's worst).")
    safety = (f" Safety: over all its runs the product got {v['ours_429']:,.0f} 429s and gave up "
              f"{v['ours_failed']:,.0f} users; the naive client, over its {len(threads)} thread counts and reruns, "
              f"got {v['naive_429_total']:,.0f} 429s (each charged to the bucket) and gave up "
              f"{v['naive_failed_total']:,.0f} users after {MAX_ATTEMPTS} attempts.")
    slow = [t for t in threads if v.get(f"naive_throttled:{t}", 0) == 0 and int(t) != v["naive_best_threads"]]
    tail = (f" With {', '.join(slow)} threads it was never refused but slower: below the limit its speed is its "
            "thread count over the latency." if slow else "")
    return speed + safety + tail


def _thread_counts(v: dict[str, float]) -> list[str]:
    """The naive client's thread counts the scenario ran."""
    return sorted((k.split(":", 1)[1] for k in v if k.startswith("naive_wall_s:")), key=int)


def product_read_budget(quota_ru: float, quota_period_s: float, write_per_s: float) -> tuple[float, float]:
    """The product's read throttle for a tenant (rate RU/s, burst RU): Graph's quota less the profile's write
    rate (at least a tenth of the quota stays for reads, graphclient.tenant), aimed at the throttle's safety."""
    quota = quota_ru / quota_period_s
    rate = max(quota - write_per_s, quota * 0.1)
    s = throttle_safety()
    return rate * s, quota_ru * rate / quota * s


def _plan_observations(key: str, v: dict[str, float]) -> list[str]:
    """Issue 9's scenarios: what bounds them (the write throttle, the read budget, the read pipeline)."""
    lines: list[str] = []
    if key == "half" and "ratio" in v:
        floor = perfect_ratio(v["changes"], v["capacity"], v["limit_per_s"])
        text = (f"The product's throttle aims at {throttle_safety():.0%} of the write rate and lets out "
                f"{product_burst(v['capacity'], v['limit_per_s']):.0f} writes at once, so even a perfect run of "
                f"{v['changes']:,.0f} changes takes {floor:.3f} × the minimum; the measured ratio is {v['ratio']:.3f}.")
        if "first_write_s" in v:
            text += (f" The target leaves {0.05 * v['min_s']:.2f} s over the minimum: the throttle's aim and burst "
                     f"take {(floor - 1) * v['min_s']:.2f} s of it, the reads before the first write "
                     f"{v['first_write_s']:.2f} s; from the first write on, reads and writes overlap.")
        lines.append(text)
    if key in ("rerun", "dryrun") and "ru_used" in v:
        rate, burst = product_read_budget(v["quota_ru"], v["quota_period_s"], v["write_per_s"])
        budget_s = max(0.0, v["ru_used"] - burst) / rate
        measured = v["users"] / v["wall_s"]
        pipeline = read_bound_users_per_s(v["round_trip_s"])
        lines.append(
            f"It used {v['ru_used']:,.0f} RU for {v['users']:,.0f} users ({v['wall_s']:.1f} s). Graphsim's quota "
            f"({v['quota_ru']:,.0f} RU per {v['quota_period_s']:g} s) allows them in {v['ru_floor_s']:.1f} s at "
            f"best; the product reads with what its profile's write rate ({v['write_per_s']:g}/s) leaves of the "
            f"quota, aimed at {throttle_safety():.0%}: {rate:,.0f} RU/s after a burst of {burst:,.0f}, which alone "
            f"takes {budget_s:.1f} s for these RUs, writes or none. And a job keeps {_default('chunk_window')} chunks "
            f"in flight, each sending one $batch of {_default('batch_size')} at a time: at graphsim's "
            f"{v['round_trip_s'] * 1000:.0f} ms mean latency a read-only job is bound near {pipeline:,.0f} users/s "
            f"before any budget; it read {measured:,.0f} users/s.")
        if key == "rerun":
            lines.append(f"The target (≤ 5 % of the first run's {v['first_wall_s']:.1f} s) needs "
                         f"{v['users'] / (0.05 * v['first_wall_s']):,.0f} users/s.")
    return lines
