"""Command line: start graphsim, print one JSON line when ready, stop on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from graphsim.config import SimConfig, parse_read_limit, parse_write_limit


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a fault rate is a probability between 0 and 1")
    return value


def _limit(text: str) -> object:
    try:
        return parse_write_limit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _read_limit(text: str) -> object:
    try:
        return parse_read_limit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(prog: str = "graphsim") -> argparse.ArgumentParser:
    """The argument parser (shared with `bulklicense simulate`)."""
    p = argparse.ArgumentParser(prog=prog, description="A local Microsoft Graph + identity platform "
                                "for tests, benchmarks and demos.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--public-host", default=None,
                   help="name clients use to reach the simulator (URLs, profile and certificate)")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--users", type=int, default=1000, help="users to generate")
    p.add_argument("--seed", type=int, default=1, help="seed of the user generator and faults")
    p.add_argument("--tenant-id", default=None, help="override the fixture's tenant id")
    p.add_argument("--fixture", type=Path, default=None, help="JSON tenant fixture (apps, skus, users)")
    p.add_argument("--state-dir", type=Path, default=None, help="keep and reuse certificates here")
    p.add_argument("--ca-out", type=Path, default=None, help="write the CA certificate (PEM) here")
    p.add_argument("--write-limit", type=_limit, default="3000/150",
                   help="per app+tenant write bucket CAPACITY/SECONDS, or none")
    p.add_argument("--tenant-write-limit", type=_limit, default="18000/300",
                   help="per tenant write bucket CAPACITY/SECONDS, or none")
    p.add_argument("--read-limit", type=_read_limit, default="none",
                   help="per app+tenant resource-unit bucket CAPACITY/SECONDS, auto (by tenant size) or none")
    p.add_argument("--charge-refused", action=argparse.BooleanOptionalAction, default=True,
                   help="a request refused with 429 still spends the tokens of the bucket that refused it")
    p.add_argument("--replication-lag-s", type=float, default=0.0,
                   help="assignLicense sees a user's previous usageLocation this long after a PATCH")
    p.add_argument("--group-licensed-share", type=_probability, default=0.0, metavar="SHARE",
                   help="share of the generated users who are members of licensed groups (0: no groups)")
    p.add_argument("--group-license-delay-s", type=float, default=1.0,
                   help="seconds from a group license or membership change until its members are processed")
    p.add_argument("--premium", action=argparse.BooleanOptionalAction, default=True,
                   help="the tenant has Entra ID P1/P2 (without it signInActivity reads are refused)")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--latency-jitter-ms", type=float, default=0.0)
    p.add_argument("--token-lifetime-s", type=float, default=3600.0,
                   help="access token lifetime; 0 issues tokens already expired (Graph answers 401)")
    p.add_argument("--control", action="store_true", help="enable the /_sim/ control surface")
    p.add_argument("--profile-out", type=Path, default=None, help="write a tenant profile (TOML) here")
    p.add_argument("--profile-name", default="sim")
    for name in ("503", "504", "reset", "reset-after-apply", "slow", "malformed"):
        p.add_argument(f"--fault-{name}", type=_probability, default=0.0, metavar="RATE",
                       help=f"probability of the {name} fault per Graph request")
    p.add_argument("--slow-s", type=float, default=5.0, help="delay of the slow fault")
    p.add_argument("--fault-seed", type=int, default=None)
    p.add_argument("--log-level", default="warning")
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """A SimConfig from parsed arguments."""
    return SimConfig(
        host=args.host, port=args.port, public_host=args.public_host, users=args.users, seed=args.seed,
        tenant_id=args.tenant_id,
        fixture_path=args.fixture, state_dir=args.state_dir, ca_out=args.ca_out,
        profile_out=args.profile_out, profile_name=args.profile_name, control=args.control,
        token_lifetime_s=args.token_lifetime_s,
        write_limit=parse_write_limit(args.write_limit) if isinstance(args.write_limit, str) else args.write_limit,
        tenant_write_limit=parse_write_limit(args.tenant_write_limit)
        if isinstance(args.tenant_write_limit, str) else args.tenant_write_limit,
        read_limit=parse_read_limit(args.read_limit) if isinstance(args.read_limit, str) else args.read_limit,
        charge_refused=args.charge_refused, replication_lag_s=args.replication_lag_s,
        group_licensed_share=args.group_licensed_share, group_license_delay_s=args.group_license_delay_s,
        premium=args.premium,
        latency_ms=args.latency_ms, latency_jitter_ms=args.latency_jitter_ms,
        fault_503=args.fault_503, fault_504=args.fault_504, fault_reset=args.fault_reset,
        fault_reset_after_apply=args.fault_reset_after_apply, fault_slow=args.fault_slow,
        fault_malformed=args.fault_malformed, slow_s=args.slow_s, fault_seed=args.fault_seed,
        log_level=args.log_level,
    )


def main(argv: list[str] | None = None) -> None:
    """Run graphsim until SIGINT/SIGTERM; print one JSON line with its coordinates once ready."""
    from graphsim.server import SimServer  # the server stack is only needed once arguments parse

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        with SimServer(config) as sim:
            sys.stdout.write(json.dumps(sim.info) + "\n")
            sys.stdout.flush()
            while not stop.wait(0.2):
                if not sim.alive:
                    raise SystemExit("graphsim stopped unexpectedly")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
