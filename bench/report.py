"""BENCHMARKS.md: the command, the machine, a table per scenario and the targets met or not."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.results import Metric, ScenarioResult

RSS_FLAT_FACTOR = 1.2  # "worker RSS flat in job size": peak at 100,000 users ≤ 1.2 × peak at 20,000

# How the scenarios whose method is not plain from their setup take their figures.
METHODS: dict[str, str] = {
    "half": (
        "Method: the benchmark client first assigns the SKU to every other user of the file straight through Graph "
        "(graphsim unthrottled; not measured), then sets graphsim's limits, which refills its buckets, and submits "
        "the whole file as a real job. graphsim's counters are read just before the submission and after the job, "
        "and its write log from the submission on lists every write request with its user: the writes must equal "
        "the plan's changes and none may go to a user who already held the SKU. The minimum is what graphsim's "
        "write bucket allows for the changes alone, (changes − bucket) / refill rate, with the reads free: a ratio "
        "near 1 means the reads overlapped the writes instead of adding to them."
    ),
    "rerun": (
        "Method: the file runs once as a real job (every user changes), then the identical bytes are submitted "
        "again on the same API and workers once the first run has finished. The rerun's writes are counted in "
        "graphsim's write log from its submission on (refused ones included) and in its accepted-writes counter; "
        "its wall time, from the 202 to its last result, is compared with the first run's."
    ),
    "dryrun": (
        "Method: a graphsim of this size starts for this scenario alone (its start time and memory are reported) "
        "and a file naming every one of its users is submitted with `?dry_run=true`. The wall time runs from the "
        "202 to the job's `planned`; resource units are graphsim's own count of what it served "
        "(`resource_units_used`) and refused; the floor is what its quota allows for them, (RU − bucket) / refill "
        "rate. The write log must stay empty."
    ),
}


def cpu_model() -> str:
    """The CPU model name, from /proc/cpuinfo where there is one."""
    with_info = Path("/proc/cpuinfo")
    if with_info.exists():
        for line in with_info.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _mark(met: bool | None) -> str:
    return "" if met is None else ("**met**" if met else "**not met**")


def _table(metrics: list[Metric]) -> list[str]:
    lines = ["| figure | value | how | target | |", "|---|---|---|---|---|"]
    lines += [f"| {m.name} | {m.value} | {m.measured} | {m.target} | {_mark(m.met)} |" for m in metrics]
    return lines


def _process_table(processes: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    lines = ["| phase | process | CPU s | cores busy (avg) | peak RSS |", "|---|---|---|---|---|"]
    for phase, procs in processes.items():
        for name, p in procs.items():
            lines.append(f"| {phase} | {name} | {p['cpu_s']:.1f} | {p['cores']:.2f} | {p['peak_rss_mb']:.0f} MB |")
    return lines


def worker_rss_flat(results: dict[str, ScenarioResult]) -> tuple[str, bool | None]:
    """Compare the workers' peak RSS on scenario 3's job (2 workers) with scenario 6's, five times larger."""
    pipe, prog = results.get("pipeline"), results.get("progress")
    if not pipe or not prog or pipe.error or prog.error:
        return "not measured in this run", None
    small = [v for k, v in pipe.values.items() if k.startswith("worker_rss_mb:2:")]
    big = [v for k, v in prog.values.items() if k.startswith("worker_rss_mb:")]
    if not small or not big:
        return "not measured in this run", None
    ok = max(big) <= RSS_FLAT_FACTOR * max(small)
    return (f"workers' peak RSS {max(small):.0f} MB on the {pipe.values.get('users', 0):,.0f}-user job "
            f"(scenario 3, 2 workers), {max(big):.0f} MB on the {prog.values.get('users', 0):,.0f}-user job "
            "(scenario 6)"), ok


def summary_rows(results: dict[str, ScenarioResult]) -> list[tuple[str, str, bool | None]]:
    """(target, figure, met) for every target of the issues, in order."""
    rows: list[tuple[str, str, bool | None]] = []
    for result in results.values():
        if result.error:
            rows.append((result.title, f"failed to run: {result.error}", False))
            continue
        rows += [(f"{result.title}: {m.name} {m.target}", m.value, m.met) for m in result.metrics if m.met is not None]
    flat, ok = worker_rss_flat(results)
    target = f"Worker RSS flat in job size (peak on the larger job ≤ {RSS_FLAT_FACTOR:g} × on the smaller)"
    rows.append((target, flat, ok))
    return rows


def render(results: dict[str, ScenarioResult], *, command: str, started: datetime, elapsed_s: float,
           settings: list[str], analysis: list[str], observations: list[str]) -> str:
    """The whole BENCHMARKS.md."""
    out = [
        "# Benchmarks",
        "",
        "Throughput of bulk-license against graphsim (the local Microsoft Graph simulator), issue 4's scenarios,",
        "the input-scale figure of issue 5, issue 9's plan-before-write figures and issue 21's baselines and Graph's",
        "real limits, from one run of the benchmark command; then the capacity model (`python -m bench.capacity`).",
        "Regenerate both with `make bench`.",
        "",
        f"- command: `{command}`",
        f"- date: {started.astimezone(UTC).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"the whole run took {elapsed_s / 60:.1f} min",
        f"- machine: {os.cpu_count()} cores (`os.cpu_count()`), {cpu_model()}, "
        f"{platform.system()} {platform.release().split('-')[0]}",
        f"- Python {sys.version.split()[0]}",
        *(f"- {line}" for line in settings),
        "",
        "Everything (Redis, graphsim, the API, the workers and the benchmark client) runs on this one machine, "
        "on 127.0.0.1: they share its cores.",
        "",
        "## Targets",
        "",
        "| target | figure | |",
        "|---|---|---|",
    ]
    out += [f"| {target} | {figure} | {_mark(met)} |" for target, figure, met in summary_rows(results)]
    out.append("")
    if analysis:
        out += ["## What limits the missed targets", "", *analysis, ""]
    if observations:
        out += ["## Observations", "", *observations, ""]
    for result in results.values():
        out += [f"## {result.title}", ""]
        out += [f"- {line}" for line in result.setup]
        out.append(f"- scenario time: {result.duration_s:.0f} s")
        out.append("")
        if result.key in METHODS:
            out += [METHODS[result.key], ""]
        if result.error:
            out += [f"**The scenario failed:** {result.error}", ""]
        if result.metrics:
            out += [*_table(result.metrics), ""]
        out += [*(f"{note}" for note in result.notes)]
        if result.notes:
            out.append("")
        if result.processes:
            out += ["<details><summary>CPU and memory per process</summary>", "",
                    *_process_table(result.processes), "", "</details>", ""]
    return "\n".join(out).rstrip() + "\n"
