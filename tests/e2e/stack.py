"""A whole deployment in child processes: Redis, graphsim, the API and N Celery workers."""

from __future__ import annotations

import csv
import io
import os
import random
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from cli.localstack import EmbeddedRedis, Services, free_port, start_simulator, wait_http
from jobs.models import TERMINAL_JOB_STATUSES

API_KEY = "test-key-all-tenants"
SIM_KEY = "test-key-sim-only"
OTHER_KEY = "test-key-other-only"


def sim_profile(name: str, sim: dict[str, Any], *, client_id: str | None = None, secret: str | None = None,
                credential: str | None = None) -> str:
    """A `[tenants.<name>]` profile on the simulated tenant: its own app by default, or the one given.

    `credential` is a TOML line in place of the client secret (a certificate, for instance).
    """
    line = credential or f'client_secret = "{secret or sim["client_secret"]}"'
    return (
        f"[tenants.{name}]\n"
        f'tenant_id = "{sim["tenant_id"]}"\n'
        f'client_id = "{client_id or sim["client_id"]}"\n'
        f"{line}\n"
        f'authority_host = "{sim["authority_host"]}"\n'
        f'graph_url = "{sim["graph_url"]}"\n'
        f'ca_bundle = "{sim["ca_path"]}"\n'
    )


class Stack:
    """Real processes wired together as a user would deploy them."""

    def __init__(self, workdir: Path, *, sim_args: list[str], env: dict[str, str] | None = None,
                 redis_appendonly: bool = False, extra_profiles: Any = None, broker_url: str | None = None) -> None:
        self.workdir = workdir
        self.services = Services(workdir)
        self.redis = EmbeddedRedis(data_dir=workdir / "redis", appendonly=redis_appendonly)
        (workdir / "redis").mkdir(exist_ok=True)
        self.sim_args = sim_args
        self.extra_env = env or {}
        self.workers: list[subprocess.Popen[bytes]] = []
        self.sim: dict[str, Any] = {}
        self.api_url = ""
        self.env: dict[str, str] = {}
        self._worker_count = 0
        self.extra_profiles = extra_profiles
        # None: the broker is the stack's Redis; else a broker of its own (a RabbitMQ virtual host).
        self.broker_url = broker_url

    def start(self, workers: int = 1) -> Stack:
        """Start everything and wait until the API answers."""
        self.redis.start()
        base_env = dict(os.environ)
        self.sim = start_simulator(self.services, base_env, self.sim_args)
        tenants = self.workdir / "all-tenants.toml"
        text = Path(self.sim["profile_path"]).read_text()
        if self.extra_profiles is not None:
            text += "\n" + self.extra_profiles(self.sim)
        tenants.write_text(text)
        api_port = free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.env = {
            **base_env,
            "BULKLICENSE_REDIS_URL": self.redis.url,
            "BULKLICENSE_TENANTS_FILE": str(tenants),
            "BULKLICENSE_API_KEYS": f"{API_KEY}:*,{SIM_KEY}:sim,{OTHER_KEY}:other",
            "BULKLICENSE_LOG_LEVEL": "INFO",
            # Users that never exist end at once unless a test is about replication lag (it sets a grace).
            "BULKLICENSE_NOT_FOUND_GRACE_S": "0",
            **({"BULKLICENSE_BROKER_URL": self.broker_url} if self.broker_url else {}),
            **self.extra_env,
        }
        self.services.start("api", [sys.executable, "-m", "cli.main", "api", "--port", str(api_port)], self.env)
        for _ in range(workers):
            self.start_worker()
        wait_http(f"{self.api_url}/healthz", timeout_s=60)
        return self

    def start_worker(self, concurrency: int = 8) -> subprocess.Popen[bytes]:
        """Start one more Celery worker process."""
        self._worker_count += 1
        proc = self.services.start(
            f"worker{self._worker_count}",
            [sys.executable, "-m", "cli.main", "worker", "--concurrency", str(concurrency),
             "-n", f"w{self._worker_count}@%h"],
            self.env,
        )
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker process (and wait for it)."""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        """Stop everything."""
        self.services.stop()
        self.redis.stop()

    # --- clients ------------------------------------------------------------------------------
    def api(self, key: str = API_KEY) -> httpx.Client:
        """A client for our API."""
        return httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def tls(self) -> ssl.SSLContext:
        """TLS that trusts graphsim's CA only."""
        return ssl.create_default_context(cafile=self.sim["ca_path"])

    def control(self) -> httpx.Client:
        """A client for graphsim's control surface."""
        return httpx.Client(base_url=self.sim["control_url"], verify=self.tls(), timeout=60)

    def wait_job(self, job_id: str, *, timeout_s: float = 60, key: str = API_KEY,
                 on_poll: Any = None) -> dict[str, Any]:
        """Poll the job until it reaches a terminal status."""
        deadline = time.monotonic() + timeout_s
        with self.api(key) as api:
            while True:
                job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
                if on_poll is not None:
                    on_poll(job)
                if job["status"] in TERMINAL_JOB_STATUSES:
                    return job
                if time.monotonic() > deadline:
                    logs = "\n".join((self.workdir / f"worker{i + 1}.log").read_text(errors="replace")[-3000:]
                                     for i in range(self._worker_count))
                    raise AssertionError(f"job {job_id} not finished after {timeout_s}s: {job}\n{logs}")
                time.sleep(0.2)

    def wait_until(self, job_id: str, condition: Any, *, timeout_s: float = 60) -> dict[str, Any]:
        """Poll the job until `condition(job)` holds."""
        deadline = time.monotonic() + timeout_s
        with self.api() as api:
            while True:
                job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
                if condition(job):
                    return job
                if time.monotonic() > deadline:
                    raise AssertionError(f"job {job_id}: condition not met after {timeout_s}s: {job}")
                time.sleep(0.2)

    def wait_status(self, job_id: str, status: str, *, timeout_s: float = 60) -> dict[str, Any]:
        """Poll the job until it reports `status` (e.g. paused)."""
        return self.wait_until(job_id, lambda job: job["status"] == status, timeout_s=timeout_s)

    # --- helpers for the damage tests ---------------------------------------------------------
    def redis_client(self) -> redis.Redis:
        """A client to the stack's Redis (job store and broker), for inspecting state."""
        return redis.Redis.from_url(self.redis.url, socket_timeout=5)

    def restart_redis(self, *, kill: bool = False, down_s: float = 0.0) -> None:
        """Stop Redis (SIGTERM, or SIGKILL with `kill`) and start it again on the same port and data."""
        self.redis.stop(kill=kill)
        time.sleep(down_s)
        self.redis.start(timeout_s=30)

    def worker_logs(self) -> str:
        """The logs of every worker started so far, concatenated."""
        return "\n".join((self.workdir / f"worker{i + 1}.log").read_text(errors="replace")
                         for i in range(self._worker_count))

    def submit_csv(self, rows: list[dict[str, str]], *, tenant: str = "sim") -> dict[str, Any]:
        """Submit rows as a CSV job; returns the 202 body."""
        body = io.StringIO()
        writer = csv.DictWriter(body, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        with self.api() as api:
            response = api.post("/v1/jobs", params={"tenant": tenant}, content=body.getvalue().encode(),
                                headers={"Content-Type": "text/csv"})
        assert response.status_code == 202, response.text
        accepted: dict[str, Any] = response.json()
        return accepted

    def job_or_none(self, job_id: str, key: str = API_KEY) -> dict[str, Any] | None:
        """The job's progress, or None while the API cannot answer (e.g. Redis is restarting)."""
        try:
            with self.api(key) as api:
                response = api.get(f"/v1/jobs/{job_id}")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        job: dict[str, Any] = response.json()
        return job

    def results(self, job_id: str, key: str = API_KEY) -> list[dict[str, Any]]:
        """Every per-user result row of a job (JSON)."""
        with self.api(key) as api:
            response = api.get(f"/v1/jobs/{job_id}/results")
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["value"]
        return rows


# --- helpers of the tests ------------------------------------------------------------------------------
POWER_BI_PRO = "f8a1db68-be16-40ed-86d5-cb42ce701560"


def free_users(stack: Stack, count: int) -> list[dict[str, Any]]:
    """Users with a usage location and without POWER_BI_PRO (one assignLicense each succeeds)."""
    with stack.control() as control:
        users = control.get("/users").json()["value"]
    chosen = [u for u in users if u.get("usageLocation")
              and not any(a["skuId"] == POWER_BI_PRO for a in u["assignedLicenses"])][:count]
    assert len(chosen) == count
    return chosen


def wait_for(predicate: Any, timeout_s: float, what: str, stack: Stack) -> None:
    """Poll `predicate` until it holds; fail after `timeout_s` with the workers' latest log lines."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{stack.worker_logs()[-3000:]}")
        time.sleep(0.05)


# --- license plans for the damage tests ------------------------------------------------------------
UserState = tuple[str | None, dict[str, frozenset[str]]]


def user_state(user: dict[str, Any]) -> UserState:
    """A graphsim user's usage location and licenses (skuId -> disabled plans)."""
    return user.get("usageLocation"), {a["skuId"]: frozenset(a["disabledPlans"]) for a in user["assignedLicenses"]}


def plan_license_changes(users: list[dict[str, Any]], skus: list[dict[str, Any]], count: int,
                         rng: random.Random) -> tuple[list[dict[str, str]], dict[str, UserState]]:
    """`count` CSV rows that a blind resend would break, and each user's expected state afterwards.

    Every licensed user gets a removal (alone or as a swap with an add): Graph refuses a removal
    sent twice ("User does not have a corresponding license"). Users without a usage location get
    one set before an add (PATCH, then assignLicense); the rest get adds, some with a disabled plan.
    """
    by_part = {s["skuPartNumber"]: s for s in skus}
    part_of = {s["skuId"]: s["skuPartNumber"] for s in skus}
    sway = next(p["servicePlanId"] for p in by_part["ENTERPRISEPACK"]["servicePlans"]
                if p["servicePlanName"] == "SWAY")
    licensed = [u for u in users if u["assignedLicenses"] and u.get("usageLocation")]
    no_location = [u for u in users if not u["assignedLicenses"] and not u.get("usageLocation")]
    free = [u for u in users if not u["assignedLicenses"] and u.get("usageLocation")]
    chosen = licensed[: count * 45 // 100] + no_location[: count * 15 // 100]
    chosen += free[: count - len(chosen)]
    assert len(chosen) == count, f"the simulated tenant has too few users for {count} rows"
    rng.shuffle(chosen)
    rows: list[dict[str, str]] = []
    expected: dict[str, UserState] = {}
    for user in chosen:
        location, licenses = user_state(user)
        row = {"user": user["userPrincipalName"], "add": "", "remove": "", "disabled_plans": "",
               "usage_location": ""}
        if licenses:
            held = sorted(licenses)
            removed = rng.choice(held)
            row["remove"] = part_of[removed]
            del licenses[removed]
            add = next((p for p in ("POWER_BI_PRO", "EMS", "FLOW_FREE") if by_part[p]["skuId"] not in held), None)
            if add and rng.random() < 0.5:
                row["add"] = add
                licenses[by_part[add]["skuId"]] = frozenset()
        elif not location:
            location = row["usage_location"] = rng.choice(["US", "GB", "DE"])
            row["add"] = "POWER_BI_PRO"
            licenses[by_part["POWER_BI_PRO"]["skuId"]] = frozenset()
        else:
            add = rng.choice(["EMS", "FLOW_FREE", "ENTERPRISEPACK", "POWER_BI_PRO"])
            row["add"] = add
            licenses[by_part[add]["skuId"]] = frozenset()
            if add == "ENTERPRISEPACK" and rng.random() < 0.5:
                row["disabled_plans"] = "SWAY"
                licenses[by_part[add]["skuId"]] = frozenset({sway})
            if rng.random() < 0.1:
                location = row["usage_location"] = "NL" if location != "NL" else "BE"
        rows.append(row)
        expected[row["user"]] = (location, licenses)
    return rows, expected


def check_graph_state(stack: Stack, before: list[dict[str, Any]], expected: dict[str, UserState],
                      results: list[dict[str, Any]]) -> dict[str, int]:
    """Assert graphsim's final state against the job's results; returns write counts seen by graphsim.

    Every succeeded user is exactly as planned, every other user untouched, no skuId twice on a
    user, seats add up, and graphsim applied exactly one assignLicense (and at most one PATCH) per
    changed user: nothing was written twice.
    """
    with stack.control() as control:
        final = control.get("/users").json()["value"]
        skus = control.get("/skus").json()["value"]
        writes = control.get("/writes").json()["value"]
    outcome = {r["user"]: r["status"] for r in results}
    old = {u["userPrincipalName"]: u for u in before}
    holders: dict[str, int] = {}
    for user in final:
        upn = user["userPrincipalName"]
        sku_ids = [a["skuId"] for a in user["assignedLicenses"]]
        assert len(sku_ids) == len(set(sku_ids)), f"{upn} holds a license twice: {sku_ids}"
        for sku_id in sku_ids:
            holders[sku_id] = holders.get(sku_id, 0) + 1
        want = expected[upn] if outcome.get(upn) == "succeeded" else user_state(old[upn])
        assert user_state(user) == want, f"{upn} ({outcome.get(upn, 'not in the job')}): {user} != {want}"
    for sku in skus:
        assert sku["consumedUnits"] == holders.get(sku["skuId"], 0), sku["skuPartNumber"]
    applied: dict[tuple[str, str], int] = {}
    for entry in writes:
        # A plain call dropped after Graph applied it is logged as "reset" with the fault's name.
        if (isinstance(entry["status"], int) and 200 <= entry["status"] < 300) \
                or entry.get("fault") == "fault_reset_after_apply":
            kind = "assign" if entry["path"].split("?")[0].endswith("/assignLicense") else "patch"
            applied[(entry["user_id"], kind)] = applied.get((entry["user_id"], kind), 0) + 1
    wrong: list[str] = []
    for upn, user in old.items():
        assign = applied.get((user["id"], "assign"), 0)
        patch = applied.get((user["id"], "patch"), 0)
        if outcome.get(upn) == "succeeded":
            want_patch = int(expected[upn][0] != user.get("usageLocation"))
            if (assign, patch) != (1, want_patch):
                wrong.append(f"{upn}: {assign} assignLicense and {patch} PATCH applied (want 1 and {want_patch})")
        elif assign or patch:
            wrong.append(f"{upn} ({outcome.get(upn, 'not in the job')}) was written")
    assert not wrong, f"{len(wrong)} users written other than once by graphsim's log: {wrong[:5]}"
    return {"writes_logged": len(writes), "writes_applied": sum(applied.values())}
