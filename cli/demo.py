"""`bulklicense demo`: every part started locally, one real onboarding batch, a live bar."""

from __future__ import annotations

import csv
import os
import random
import shutil
import ssl
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from cli.client import ApiClient, print_summary, watch
from cli.localstack import EmbeddedRedis, Services, free_port, start_simulator, wait_http
from config import get_settings
from jobs.models import JobStatus

DEMO_KEY = "demo-key-" + "0" * 8


def onboarding_rows(sim_users: list[dict[str, Any]], count: int, seed: int = 7) -> Iterator[dict[str, str]]:
    """A realistic HR onboarding batch for the simulated tenant, with a few rows that will fail."""
    rng = random.Random(seed)
    unlicensed = [u for u in sim_users if not u.get("assignedLicenses")]
    licensed = [u for u in sim_users if u.get("assignedLicenses")]
    pool = (unlicensed + licensed)[:count]
    for i, user in enumerate(pool):
        row = {"userPrincipalName": user["userPrincipalName"], "licenses": "", "removeLicenses": "",
               "disabledPlans": "", "usageLocation": "", "employeeId": f"E{10000 + i}"}
        if user.get("assignedLicenses"):
            row["licenses"] = "SPE_E3"
        else:
            row["licenses"] = rng.choice(["ENTERPRISEPACK", "ENTERPRISEPACK", "SPE_E3", "ENTERPRISEPACK;POWER_BI_PRO"])
        if row["licenses"].startswith("ENTERPRISEPACK") and rng.random() < 0.3:
            row["disabledPlans"] = "SWAY"
        if not user.get("usageLocation") or rng.random() < 0.1:
            row["usageLocation"] = rng.choice(["US", "GB", "DE", "FR", "NL"])
        yield row
    # Rows an HR export really contains: someone who left before their start date.
    yield {"userPrincipalName": "left.before.start@contoso.example", "licenses": "ENTERPRISEPACK",
           "removeLicenses": "", "disabledPlans": "", "usageLocation": "US", "employeeId": "E99999"}


@dataclass
class _Stack:
    """What the demo started: Redis (unless one is configured), graphsim, a worker and the API."""

    services: Services
    redis_server: EmbeddedRedis | None = None
    redis_url: str = ""
    sim: dict[str, Any] = field(default_factory=dict)
    api_url: str = ""

    def stop(self) -> None:
        self.services.stop()
        if self.redis_server is not None:
            self.redis_server.stop()


def run_demo(*, users: int, keep: bool, console: Console) -> int:
    """Start Redis (unless configured), graphsim, a worker and the API; run one batch; stop all."""
    workdir = Path(tempfile.mkdtemp(prefix="bulklicense-demo-"))
    stack = _Stack(Services(workdir))
    try:
        with console.status("starting Redis, graphsim, a worker and the API…"):
            _start(stack, workdir, users)
        console.print(f"[green]✓[/green] Redis {stack.redis_url} · graphsim {stack.sim['graph_url']} · "
                      f"API {stack.api_url} · 1 worker")
        batch, rows = _write_batch(stack, workdir, users)
        console.print(f"submitting [bold]{batch.name}[/bold]: {rows} users "
                      f"(graphsim allows 200 writes per 4 s, 80±40 ms per call)")
        client = ApiClient(stack.api_url, DEMO_KEY)
        accepted = client.request("POST", "/v1/jobs", params={"tenant": "sim"}, content=batch.read_bytes(),
                                  headers={"Content-Type": "text/csv"}).json()
        for warning in accepted.get("warnings", []):
            console.print(f"[yellow]warning:[/yellow] {warning}")
        job = watch(client, accepted["id"])
        print_summary(job)
        return _report(client, job, console)
    finally:
        stack.stop()
        if keep:
            console.print(f"demo files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _start(stack: _Stack, workdir: Path, users: int) -> None:
    """Start every part the demo needs, each on a free port, and wait for the API."""
    settings = get_settings()
    env = dict(os.environ)
    if "redis_url" in settings.model_fields_set:
        stack.redis_url = settings.redis_url
    else:
        (workdir / "redis").mkdir()
        stack.redis_server = EmbeddedRedis(data_dir=workdir / "redis").start()
        stack.redis_url = stack.redis_server.url
    stack.sim = start_simulator(stack.services, env, ["--users", str(users + 200), "--seed", "1",
                                                      "--write-limit", "200/4", "--latency-ms", "80",
                                                      "--latency-jitter-ms", "40"])
    api_port = free_port()
    env.update({
        "BULKLICENSE_REDIS_URL": stack.redis_url,
        "BULKLICENSE_TENANTS_FILE": stack.sim["profile_path"],
        "BULKLICENSE_API_KEYS": f"{DEMO_KEY}:*",
        "BULKLICENSE_LOG_LEVEL": "WARNING",
        # The batch has one person who left before starting: in a demo, give up on them after
        # 10 s instead of waiting the 3 minutes a real new hire may need to appear.
        "BULKLICENSE_NOT_FOUND_GRACE_S": "10",
    })
    cli = [sys.executable, "-m", "cli.main"]
    stack.services.start("worker", [*cli, "worker", "--concurrency", "8"], env)
    stack.services.start("api", [*cli, "api", "--host", "127.0.0.1", "--port", str(api_port)], env)
    stack.api_url = f"http://127.0.0.1:{api_port}"
    wait_http(f"{stack.api_url}/healthz")


def _write_batch(stack: _Stack, workdir: Path, users: int) -> tuple[Path, int]:
    """The onboarding CSV for graphsim's tenant; returns its path and how many rows it has."""
    ca = ssl.create_default_context(cafile=stack.sim["ca_path"])
    sim_users = httpx.get(f"{stack.sim['control_url']}/users", verify=ca, timeout=30).json()["value"]
    batch = workdir / "onboarding.csv"
    rows = list(onboarding_rows(sim_users, users))
    with batch.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return batch, len(rows)


def _report(client: ApiClient, job: dict[str, Any], console: Console) -> int:
    """Failures by reason and the results files; 0 when every user ended, else 1."""
    results_path = f"/v1/jobs/{job['id']}/results"
    failed = client.request("GET", results_path, params={"format": "json", "status": "failed"}).json()
    reasons = Counter(item["reason"] for item in failed["value"])
    if reasons:
        table = Table("reason", "users", title="failures (fix and resubmit the failed rows)")
        for reason, n in reasons.most_common():
            table.add_row(reason, str(n))
        console.print(table)
    results = Path.cwd() / "bulklicense-demo-results.csv"
    results.write_bytes(client.request("GET", results_path, params={"format": "csv"}).content)
    failed_csv = Path.cwd() / "bulklicense-demo-failed.csv"
    failed_csv.write_bytes(client.request("GET", results_path, params={"format": "csv", "status": "failed"}).content)
    console.print(f"results: [bold]{results}[/bold]")
    console.print(f"failed rows, ready to fix and resubmit: [bold]{failed_csv}[/bold]")
    finished = job["status"] in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS)
    ok = finished and job["succeeded"] + job["unchanged"] + job["failed"] == job["total"]
    return 0 if ok else 1
