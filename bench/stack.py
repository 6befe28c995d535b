"""The processes of one benchmark run, all on 127.0.0.1.

- one graphsim per tenant, started once for the whole run and reset before every scenario;
- per scenario a fresh Redis, the API and N Celery workers on a tenants file written for it;
- a sampler of peak RSS and CPU time per process (children included).
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import sys
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from cli.localstack import EmbeddedRedis, Services, free_port, start_simulator, wait_http
from graphsim.config import tenant_read_limit
from jobs.models import TERMINAL_JOB_STATUSES

API_KEY = "bench-key-" + "0" * 12
TERMINAL = TERMINAL_JOB_STATUSES  # job statuses as the API reports them (plain strings compare equal)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string; JSON escaping is a valid subset here


class Sim:
    """One graphsim process (one tenant) with its control client."""

    def __init__(self, root: Path, name: str, *, users: int, seed: int, tenant_id: str | None = None) -> None:
        self.name = name
        self.workdir = root / f"graphsim-{name}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.services = Services(self.workdir)
        self.users = users
        self.seed = seed
        self.tenant_id = tenant_id
        self.info: dict[str, Any] = {}
        self._control: httpx.Client | None = None

    def start(self) -> Sim:
        """Start graphsim (unlimited until a scenario configures it) and wait for its ready line."""
        args = ["--users", str(self.users), "--seed", str(self.seed), "--profile-name", self.name,
                "--write-limit", "none", "--tenant-write-limit", "none", "--read-limit", "none"]
        if self.tenant_id:
            args += ["--tenant-id", self.tenant_id]
        self.info = start_simulator(self.services, dict(os.environ), args)
        ca = ssl.create_default_context(cafile=self.info["ca_path"])
        self._control = httpx.Client(base_url=self.info["control_url"], verify=ca,
                                     timeout=300, trust_env=False)
        return self

    @property
    def pid(self) -> int:
        """The graphsim process id."""
        return self.services.procs[0][1].pid

    @property
    def control(self) -> httpx.Client:
        """A client for the `/_sim/` control surface."""
        if self._control is None:
            raise RuntimeError(f"graphsim {self.name} is not started")
        return self._control

    def reset(self, *, write_limit: str, tenant_write_limit: str = "none", latency_ms: float = 0.0,
              latency_jitter_ms: float = 0.0, read_limit: str = "none", charge_refused: bool = True) -> None:
        """Back to the fixture (users, seats, full buckets, zeroed counters) with these knobs."""
        self.control.post("/reset").raise_for_status()
        self.configure(write_limit=write_limit, tenant_write_limit=tenant_write_limit, latency_ms=latency_ms,
                       latency_jitter_ms=latency_jitter_ms, read_limit=read_limit, charge_refused=charge_refused)

    def configure(self, **knobs: Any) -> None:
        """Change run-time knobs without a reset (`POST /_sim/config`); a changed limit starts full."""
        self.control.post("/config", json=knobs).raise_for_status()

    def read_quota(self) -> tuple[int, float]:
        """Graph's resource-unit quota per app+tenant for this tenant's size (graphsim's `auto`)."""
        limit = tenant_read_limit(self.users)
        return limit.capacity, float(limit.period_s)

    def stats(self) -> dict[str, Any]:
        """`GET /_sim/stats`."""
        data: dict[str, Any] = self.control.get("/stats").json()
        return data

    def writes(self, since: float | None = None) -> list[dict[str, Any]]:
        """Every write that reached graphsim since the reset (or since epoch second `since`), with its
        status and time (`GET /_sim/writes`); refused ones included."""
        params = {} if since is None else {"since": repr(since)}
        writes: list[dict[str, Any]] = self.control.get("/writes", params=params).json()["value"]
        return writes

    def all_users(self) -> list[dict[str, Any]]:
        """Every user of the fixture (as `GET /_sim/users` gives them)."""
        users: list[dict[str, Any]] = self.control.get("/users").json()["value"]
        return users

    def skus(self) -> list[dict[str, Any]]:
        """The subscribed SKUs with `freeUnits`."""
        skus: list[dict[str, Any]] = self.control.get("/skus").json()["value"]
        return skus

    def profile(self, **overrides: Any) -> dict[str, Any]:
        """The tenant profile graphsim wrote (`--profile-out`), with `overrides` applied."""
        data = tomllib.loads(Path(self.info["profile_path"]).read_text(encoding="utf-8"))
        table: dict[str, Any] = dict(data["tenants"][self.name])
        table.update(overrides)
        return table

    def ensure_free_seats(self, demand: Mapping[str, int]) -> dict[str, int]:
        """Buy seats (`PATCH /_sim/skus/{part}`) where fewer than `demand` (part number -> seats) are free;
        returns what was bought. A real job reserves a seat per added license of every row when it is
        accepted, and is refused (409) when they are short."""
        bought: dict[str, int] = {}
        for sku in self.skus():
            part = sku["skuPartNumber"]
            short = demand.get(part, 0) - int(sku["freeUnits"])
            if short > 0:
                enabled = int(sku["prepaidUnits"]["enabled"]) + short
                self.control.patch(f"/skus/{part}", json={"enabled": enabled}).raise_for_status()
                bought[part] = short
        return bought

    def stop(self) -> None:
        """Stop graphsim."""
        if self._control is not None:
            self._control.close()
            self._control = None
        self.services.stop()


def write_tenants_file(path: Path, profiles: dict[str, dict[str, Any]]) -> Path:
    """One TOML tenants file from several profiles (`name -> table`)."""
    lines: list[str] = []
    for name, table in profiles.items():
        lines.append(f"[tenants.{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def limit_fields(capacity: int | None, period_s: float, read: tuple[int, float] | None = None) -> dict[str, Any]:
    """The profile's write budget (`None` = no client-side limit) and its read budget in resource units
    (`read`: capacity and period; `None` = none, so graphsim's own profile cannot cap reads unasked)."""
    fields: dict[str, Any] = {"write_capacity": "none" if capacity is None else capacity,
                              "write_period_s": float(period_s)}
    if read is None:
        fields["read_capacity_ru"] = "none"
    else:
        fields.update(read_capacity_ru=read[0], read_period_s=float(read[1]))
    return fields


class Product:
    """Redis, the API and N Celery workers for one scenario."""

    def __init__(self, root: Path, tenants_file: Path, *, workers: int, concurrency: int,
                 env: dict[str, str] | None = None) -> None:
        self.workdir = root
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "redis").mkdir(exist_ok=True)
        self.services = Services(self.workdir)
        self.redis = EmbeddedRedis(data_dir=self.workdir / "redis")
        self.tenants_file = tenants_file
        self.worker_count = workers
        self.concurrency = concurrency
        self.extra_env = env or {}
        self.api_url = ""
        self.pids: dict[str, int] = {}
        self._redis_started = False

    def start(self) -> Product:
        """Start Redis, the API and the workers; return once the API answers and every worker is ready."""
        self.redis.start()
        self._redis_started = True
        env = {
            **os.environ,
            "BULKLICENSE_REDIS_URL": self.redis.url,
            "BULKLICENSE_TENANTS_FILE": str(self.tenants_file),
            "BULKLICENSE_API_KEYS": f"{API_KEY}:*",
            "BULKLICENSE_LOG_LEVEL": "WARNING",
            # One key submits every scenario's jobs (a million rows among them): no quota stands in the way.
            **{f"BULKLICENSE_QUOTA_{name}": "0" for name in ("TENANT_ACTIVE_JOBS", "TENANT_ROWS", "KEY_ACTIVE_JOBS",
                                                            "KEY_ROWS")},
            **self.extra_env,
        }
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        cli = [sys.executable, "-m", "cli.main"]
        api = self.services.start("api", [*cli, "api", "--host", "127.0.0.1", "--port", str(port)], env)
        self.pids["api"] = api.pid
        for i in range(1, self.worker_count + 1):
            proc = self.services.start(f"worker{i}", [*cli, "worker", "--concurrency", str(self.concurrency),
                                                      "-n", f"bench{i}@%h"], env)
            self.pids[f"worker{i}"] = proc.pid
        wait_http(f"{self.api_url}/healthz", timeout_s=60)
        self._wait_workers(timeout_s=60)
        return self

    def _wait_workers(self, timeout_s: float) -> None:
        """Workers write a heartbeat key once Celery reports them ready."""
        client = redis.Redis.from_url(self.redis.url)
        try:
            deadline = time.monotonic() + timeout_s
            while len(list(client.scan_iter("bl:worker:*"))) < self.worker_count:
                for name, pid in self.pids.items():
                    if name.startswith("worker") and not psutil.pid_exists(pid):
                        raise RuntimeError(f"{name} exited: " + self.log_tail(name))
                if time.monotonic() > deadline:
                    raise RuntimeError("workers not ready within 60 s: " + self.log_tail("worker1"))
                time.sleep(0.1)
        finally:
            client.close()

    def log_tail(self, name: str, chars: int = 2000) -> str:
        """The end of a process log."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def redis_pid(self) -> int | None:
        """The redis-server process id."""
        proc = getattr(self.redis, "_proc", None)
        return proc.pid if proc is not None else None

    def api(self, timeout_s: float = 600.0) -> httpx.Client:
        """A client for our API."""
        return httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {API_KEY}"},
                            timeout=timeout_s, trust_env=False)

    def stop(self) -> None:
        """Stop the workers and the API, then Redis."""
        try:
            self.services.stop()
        finally:
            if self._redis_started:
                self.redis.stop()
                self._redis_started = False


@dataclass
class ProcStats:
    """Peak RSS and CPU time of one process (with its children) over a sampling window."""

    peak_rss: int = 0
    cpu_start: float | None = None
    cpu_end: float | None = None

    @property
    def cpu_s(self) -> float:
        """CPU seconds used in the window."""
        if self.cpu_start is None or self.cpu_end is None:
            return 0.0
        return max(0.0, self.cpu_end - self.cpu_start)


# Processes sampled without their children: the benchmark client started all the others.
OWN_ONLY = frozenset({"bench client"})


def _tree(pid: int, children: bool = True) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)] if children else [proc]


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


@dataclass
class Sampler:
    """Samples RSS of named processes (children included) every `interval_s`; CPU time at start and stop."""

    pids: dict[str, int]
    interval_s: float = 0.2
    stats: dict[str, ProcStats] = field(default_factory=dict)
    started: float = 0.0
    elapsed_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self.started = time.monotonic()
        for name, pid in self.pids.items():
            st = self.stats[name] = ProcStats()
            with contextlib.suppress(psutil.Error):
                procs = _tree(pid, name not in OWN_ONLY)
                st.cpu_start = _cpu(procs)
                st.peak_rss = _rss(procs)
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        """Take one RSS sample of every process now."""
        for name, pid in self.pids.items():
            with contextlib.suppress(psutil.Error):
                st = self.stats[name]
                st.peak_rss = max(st.peak_rss, _rss(_tree(pid, name not in OWN_ONLY)))

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()
        self.elapsed_s = time.monotonic() - self.started
        for name, pid in self.pids.items():
            with contextlib.suppress(psutil.Error):
                self.stats[name].cpu_end = _cpu(_tree(pid, name not in OWN_ONLY))

    def cpu_share(self, name: str) -> float:
        """CPU time of a process over the window, as a share of one core (1.0 = one core busy)."""
        return self.stats[name].cpu_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def peak_mb(self, name: str) -> float:
        """Peak RSS in MB."""
        return self.stats[name].peak_rss / 1e6

    def cpu_summary(self) -> dict[str, dict[str, float]]:
        """Per process: CPU seconds, CPU share of one core, peak RSS MB."""
        return {name: {"cpu_s": st.cpu_s, "cores": self.cpu_share(name), "peak_rss_mb": st.peak_rss / 1e6}
                for name, st in self.stats.items()}


@dataclass
class ThrottleProbe:
    """Samples the product's adaptive write rate for a tenant from its throttle state in Redis.

    Reads the `rate` field of the throttle hash (worker/throttle.py); yields nothing if that changes.
    """

    redis_url: str
    tenant: str
    interval_s: float = 0.25
    samples: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ThrottleProbe:
        self._thread = threading.Thread(target=self._loop, name="bench-throttle-probe", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        try:
            while not self._stop.wait(self.interval_s):
                with contextlib.suppress(redis.RedisError, ValueError, TypeError):
                    raw = client.hget(f"bl:throttle:{self.tenant}", "rate")
                    if raw is not None:
                        self.samples.append((time.time(), float(raw)))
        finally:
            client.close()

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def course(self, start: float, max_rate: float) -> dict[str, float]:
        """Lowest rate and when, when it was back at the maximum (-1: never), mean over the second half."""
        points = [(t - start, r) for t, r in self.samples if t >= start]
        if not points:
            return {}
        low_t, low = min(points, key=lambda p: p[1])
        back = next((t for t, r in points if t > low_t and r >= max_rate * 0.99), -1.0)
        half = [r for t, r in points if t >= points[-1][0] / 2] or [points[-1][1]]
        return {"low": low, "low_t": low_t, "back_t": back if low < max_rate * 0.99 else 0.0,
                "half_mean": sum(half) / len(half), "max": max_rate, "last": points[-1][1]}

    def summary(self, start: float, max_rate: float) -> str | None:
        """The rate's course in words."""
        c = self.course(start, max_rate)
        if not c:
            return None
        if c["low"] >= max_rate * 0.99:
            text = f"stayed at {max_rate:.1f}/s (lowest {c['low']:.1f}/s)"
        else:
            text = f"from {max_rate:.1f}/s down to {c['low']:.1f}/s at {c['low_t']:.1f} s, " + (
                f"back to {max_rate:.1f}/s at {c['back_t']:.1f} s" if c["back_t"] >= 0
                else f"{c['last']:.1f}/s at the end")
        return text + f"; mean over the second half {c['half_mean']:.1f}/s"
