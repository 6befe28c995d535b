"""`python -m bench.run`: start everything, run the scenarios side by side, write BENCHMARKS.md.

Options: --only SCENARIO[,..] (names or numbers 1-12), --quick (small sizes, a smoke run),
--out FILE (default BENCHMARKS.md), --workers N and --concurrency K (worker processes and their
threads in scenarios other than 3), --keep (keep the temporary directory with every log).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path
from types import FrameType

from bench.analysis import analyse, observations
from bench.capacity import kept_section, splice
from bench.context import MAIN, OTHER, OTHER_TENANT_ID, Context, Sizes
from bench.report import render
from bench.results import ScenarioResult
from bench.scenarios import SCENARIOS
from bench.stack import Sim


def _parse(argv: list[str] | None) -> argparse.Namespace:
    names = [key for key, _, _ in SCENARIOS]
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help=f"comma-separated scenarios: {', '.join(names)} (or 1-{len(names)})")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every scenario")
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="where to write the report")
    p.add_argument("--workers", type=int, default=2, help="worker processes (scenario 3 runs 1 and 2 anyway)")
    p.add_argument("--concurrency", type=int, default=8, help="chunk threads per worker process")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) at the end")
    args = p.parse_args(argv)
    chosen: list[str] = []
    for item in (x.strip() for x in args.only.split(",") if x.strip()):
        key = names[int(item) - 1] if item.isdigit() and 1 <= int(item) <= len(names) else item
        if key not in names:
            p.error(f"unknown scenario {item!r}; choose from {', '.join(names)} or 1-{len(names)}")
        chosen.append(key)
    args.scenarios = [key for key in names if key in chosen] if chosen else names
    return args


def _command(argv: list[str]) -> str:
    """The command as typed, with any absolute path shortened to its file name."""
    shown = [Path(a).name if os.path.isabs(a) else a for a in argv]
    return " ".join(["python -m bench.run", *shown])


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code (0 even when a target is missed; 1 if a scenario broke)."""
    raw = sys.argv[1:] if argv is None else argv
    args = _parse(raw)
    sizes = Sizes.quick() if args.quick else Sizes.full()
    # Ctrl-C and SIGTERM both end in the `finally` below, which stops every process started here
    # (SIGINT too when a parent shell started us with it ignored).
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started, t0 = datetime.now().astimezone(), time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="bulklicense-bench-"))
    sims = [Sim(root, MAIN, users=sizes.sim_users, seed=1),
            Sim(root, OTHER, users=sizes.other_users, seed=2, tenant_id=OTHER_TENANT_ID)]
    results: dict[str, ScenarioResult] = {}
    broken = False
    try:
        print(f"starting graphsim ×2 ({sizes.sim_users:,} and {sizes.other_users:,} users) …", flush=True)
        for sim in sims:
            sim.start()
        ctx = Context(root=root, sizes=sizes, workers=args.workers, concurrency=args.concurrency,
                      main=sims[0], other=sims[1], results=results)
        ctx.prepare()
        for key, title, run in SCENARIOS:
            if key not in args.scenarios:
                continue
            result = results[key] = ScenarioResult(key=key, title=title)
            print(f"\n== {title}", flush=True)
            s0 = time.monotonic()
            try:
                run(ctx, result)
            except Exception as exc:  # one broken scenario must not lose the others' figures
                broken = True
                result.error = f"{type(exc).__name__}: {str(exc)[:400]}"
                traceback.print_exc()
            result.duration_s = time.monotonic() - s0
            for m in result.metrics:
                mark = "" if m.met is None else ("  [met]" if m.met else "  [NOT MET]")
                print(f"   {m.name}: {m.value}{mark}", flush=True)
            if result.error:
                print(f"   ERROR {result.error}", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process; no report written", file=sys.stderr)
        return 130
    finally:
        for sim in reversed(sims):
            sim.stop()
        if args.keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    settings = [
        f"product: {args.workers} worker processes × {args.concurrency} threads (`python -m cli.main worker "
        f"--concurrency {args.concurrency}`) except in scenario 3; one API process; product settings at their "
        "defaults (chunk size 100, chunk window 4, $batch of 20) with BULKLICENSE_LOG_LEVEL=WARNING",
        f"sizes: {'--quick (smoke run, not the issue sizes)' if args.quick else 'as issues 4, 5 and 9 ask'}",
    ]
    text = render(results, command=_command(raw), started=started, elapsed_s=time.monotonic() - t0,
                  settings=settings, analysis=analyse(results), observations=observations(results))
    kept = kept_section(args.out)  # `python -m bench.capacity` writes that section; keep it
    args.out.write_text(splice(text, kept) if kept else text, encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
