"""The operator's view on real processes: signed notifications, metrics that move, JSON log lines.

One deployment (Redis, graphsim, the API, a worker) with BULKLICENSE_LOG_FORMAT=json, a worker
metrics port, a webhook secret, and the local receivers' origins allowed. The receiver is a local
HTTPS server (its certificate from a local CA given as BULKLICENSE_WEBHOOK_CA_FILE); the worker
starts its notifications worker beside itself, as `bulklicense worker` does when a secret is set.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.localstack import free_port
from jobs.models import TERMINAL_JOB_STATUSES
from tests.e2e.stack import Stack
from tests.e2e.tls import WebhookReceiver, pki, verify, verify_legacy
from tests.helpers import samples

# Each test runs in 2 to 6 s; the first also starts the module's stack. Inner deadlines fail first.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WEBHOOK_SECRET = "whsec-0f4e9a7c2b6d8e1f3a5c"
CALLBACK_TOKEN = "cb-token-58af19d3"  # in the callback's query string: the receiver's, never logged
POWER_BI_PRO = "f8a1db68-be16-40ed-86d5-cb42ce701560"
VISIO = "c5928f49-12ba-48f7-ada3-0d743a3601d5"
MAX_ATTEMPTS = 3
DEAD_PORT = free_port()  # nothing listens: every attempt is refused


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookReceiver]:
    files = pki(tmp_path_factory.mktemp("receiver-pki"))
    server = WebhookReceiver(files, script={f"/flaky?token={CALLBACK_TOKEN}": [500]}).start()
    server.ca_file = files.ca_cert  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver) -> Iterator[Stack]:
    env = {
        "BULKLICENSE_LOG_FORMAT": "json",
        "BULKLICENSE_METRICS_PORT": str(free_port()),
        "BULKLICENSE_METRICS_PORT_RANGE": "8",
        "BULKLICENSE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BULKLICENSE_WEBHOOK_ALLOWED_ORIGINS": f"{receiver.url('')},https://127.0.0.1:{DEAD_PORT}",
        "BULKLICENSE_WEBHOOK_CA_FILE": str(receiver.ca_file),  # type: ignore[attr-defined]
        "BULKLICENSE_WEBHOOK_BACKOFF_BASE_S": "0.3",
        "BULKLICENSE_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "BULKLICENSE_WEBHOOK_TIMEOUT_S": "5",
        "BULKLICENSE_CHUNK_SIZE": "5",
        "BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.05",
        "BULKLICENSE_SEAT_RECHECK_INTERVAL_S": "1",
        "BULKLICENSE_REAPER_INTERVAL_S": "0.5",
        "BULKLICENSE_SKU_CACHE_TTL_S": "0",
    }
    s = Stack(tmp_path_factory.mktemp("operations"), sim_args=["--users", "300", "--seed", "8", "--latency-ms", "60"],
              env=env)
    try:
        yield s.start(workers=1)
    finally:
        s.stop()


def free_for(stack: Stack, sku: str, count: int) -> list[str]:
    """Users with a usage location who do not hold `sku` yet."""
    with stack.control() as control:
        users = control.get("/users").json()["value"]
    return [u["userPrincipalName"] for u in users
            if u.get("usageLocation") and not any(a["skuId"] == sku for a in u["assignedLicenses"])][:count]


def submit(stack: Stack, users: list[str], sku: str, **params: str) -> str:
    body = "user,add\n" + "".join(f"{u},{sku}\n" for u in users)
    with stack.api() as api:
        response = api.post("/v1/jobs", params={"tenant": "sim", **params}, content=body.encode(),
                            headers={"Content-Type": "text/csv"})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def log_entries(stack: Stack, name: str) -> list[dict[str, Any]]:
    """Every line of a process's log, parsed: each must be one JSON object."""
    entries = []
    for number, line in enumerate((Path(stack.workdir) / name).read_text().splitlines(), start=1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"{name} line {number} is not JSON: {line[:200]!r}") from None
        assert isinstance(entry, dict) and {"time", "level", "logger", "message"} <= set(entry), (name, number, line)
        entries.append(entry)
    return entries


def wait_log(stack: Stack, pattern: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        for entry in log_entries(stack, "worker1.log"):
            if re.search(pattern, entry["message"]):
                return entry
        assert time.monotonic() < deadline, f"no worker log line matches {pattern!r}"
        time.sleep(0.1)


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# --- notifications -----------------------------------------------------------------------------------

def test_a_finished_job_is_posted_signed_and_retried_after_a_500_without_holding_anything_up(
    stack: Stack, receiver: WebhookReceiver
) -> None:
    users = free_for(stack, POWER_BI_PRO, 14)
    flaky_path = f"/flaky?token={CALLBACK_TOKEN}"
    flaky = submit(stack, users[:8], "POWER_BI_PRO", callback_url=receiver.url(flaky_path))
    dead = submit(stack, users[8:], "POWER_BI_PRO", callback_url=f"https://127.0.0.1:{DEAD_PORT}/hook")
    flaky_job, dead_job = stack.wait_job(flaky), stack.wait_job(dead)
    assert (flaky_job["status"], dead_job["status"]) == ("completed", "completed")

    first, second = receiver.wait_for(flaky_path, 2)
    assert (first.status, second.status) == (500, 200)
    # The job ended before anyone was told: the notification never held it up.
    assert first.at >= epoch(flaky_job["finished_at"])
    assert second.at - first.at >= 0.3 * 0.8  # the backoff (0.3 s, ±20 %) before the retry
    assert first.body == second.body and first.headers["x-bulklicense-delivery"] == second.headers[
        "x-bulklicense-delivery"]
    for post in (first, second):
        assert post.headers["content-type"] == "application/json"
        assert post.headers["x-bulklicense-event"] == "finished"
        assert verify(WEBHOOK_SECRET.encode(), post)
        assert verify_legacy(WEBHOOK_SECRET.encode(), post.body, post.headers["x-bulklicense-signature"])
    assert int(second.headers["x-bulklicense-timestamp"]) >= int(first.headers["x-bulklicense-timestamp"])
    assert not verify(WEBHOOK_SECRET.encode(), replace(first, body=first.body + b" "))
    assert not verify(b"another secret", first)
    assert not verify(WEBHOOK_SECRET.encode(), first, tenant="other")
    posted = json.loads(first.body)
    with stack.api() as api:
        current = api.get(f"/v1/jobs/{flaky}").json()
    stable = ("id", "tenant", "status", "total", "succeeded", "failed", "cancelled", "pending", "finished_at")
    assert {k: posted[k] for k in stable} == {k: current[k] for k in stable}
    assert (posted["status"], posted["succeeded"]) == ("completed", 8)

    # The unreachable receiver: tried MAX_ATTEMPTS times, then given up, with the job long done.
    gave_up = wait_log(stack, rf"notification of job {dead} \(finished\) to https://127\.0\.0\.1:{DEAD_PORT} "
                              rf"failed after {MAX_ATTEMPTS} attempt")
    assert gave_up["job"] == dead and gave_up["level"] == "WARNING"
    assert epoch(gave_up["time"]) > epoch(dead_job["finished_at"])


def test_a_pause_for_seats_and_the_end_are_both_posted(stack: Stack, receiver: WebhookReceiver) -> None:
    with stack.control() as control:
        users = control.get("/users").json()["value"]
        holders = sum(VISIO in {a["skuId"] for a in u["assignedLicenses"]} for u in users)
        assert control.patch(f"/skus/{VISIO}", json={"enabled": holders + 1}).status_code == 200
    job_id = submit(stack, free_for(stack, VISIO, 3), "VISIOCLIENT", on_seat_shortage="wait",
                    callback_url=receiver.url("/seats"))
    (paused,) = receiver.wait_for("/seats", 1)
    assert paused.headers["x-bulklicense-event"] == "paused"
    body = json.loads(paused.body)
    assert (body["id"], body["status"], body["paused_reason"]) == (job_id, "paused", "no_free_seat")
    assert verify(WEBHOOK_SECRET.encode(), paused)
    with stack.control() as control:
        assert control.patch(f"/skus/{VISIO}", json={"enabled": holders + 50}).status_code == 200
    assert stack.wait_job(job_id)["status"] == "completed"
    finished = receiver.wait_for("/seats", 2)[1]
    assert finished.headers["x-bulklicense-event"] == "finished"
    assert json.loads(finished.body)["succeeded"] == 3


# --- metrics -----------------------------------------------------------------------------------------

def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200, response.text
    return samples(response.text)


def total(got: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    return sum(v for (n, ls), v in got.items() if n == name and set(labels.items()) <= set(ls))


def test_metrics_move_while_a_job_runs(stack: Stack) -> None:
    port = int(wait_log(stack, r"worker metrics on http://127\.0\.0\.1:\d+/metrics")["message"].split(":")[-1]
               .split("/")[0])
    worker_url, api_url = f"http://127.0.0.1:{port}/metrics", f"{stack.api_url}/metrics"
    before, api_before = scrape(worker_url), scrape(api_url)
    users = free_for(stack, "efccb6f7-5641-4e0e-bd10-b4976e1bf68e", 150)  # EMS
    job_id = submit(stack, users, "EMS")
    seen: list[tuple[str, float, float]] = []  # (job status, users finished, chunks in flight)
    deadline = time.monotonic() + 60
    while True:
        got = scrape(worker_url)
        with stack.api() as api:
            status = api.get(f"/v1/jobs/{job_id}").json()["status"]
        seen.append((status, total(got, "bulklicense_users_finished_total", tenant="sim")
                     - total(before, "bulklicense_users_finished_total", tenant="sim"),
                     total(got, "bulklicense_chunks_in_flight")))
        if status in TERMINAL_JOB_STATUSES:
            break
        assert time.monotonic() < deadline, seen[-5:]
        time.sleep(0.05)
    after, api_after = scrape(worker_url), scrape(api_url)

    counts = [n for _, n, _ in seen]
    assert counts == sorted(counts), counts  # counters only go up
    assert any(0 < n < len(users) and status not in TERMINAL_JOB_STATUSES for status, n, _ in seen), seen
    assert any(in_flight > 0 for *_, in_flight in seen), seen
    assert total(after, "bulklicense_users_finished_total", tenant="sim", status="succeeded") \
        - total(before, "bulklicense_users_finished_total", tenant="sim", status="succeeded") == len(users)
    assert total(after, "bulklicense_graph_requests_total", tenant="sim", method="POST", status="200") \
        >= total(before, "bulklicense_graph_requests_total", tenant="sim", method="POST", status="200") + len(users)
    assert total(after, "bulklicense_graph_requests_total", tenant="sim", method="$batch") \
        > total(before, "bulklicense_graph_requests_total", tenant="sim", method="$batch")
    assert total(after, "bulklicense_job_events_total", tenant="sim", event="finished") \
        == total(before, "bulklicense_job_events_total", tenant="sim", event="finished") + 1
    assert total(after, "bulklicense_chunks_in_flight") == 0

    # The API's page is collected at most every BULKLICENSE_METRICS_CACHE_S (5 s): it shows the job within that.
    completed = total(api_before, "bulklicense_jobs", tenant="sim", status="completed") + 1
    fresh_by = time.monotonic() + 5 + 5
    while total(api_after, "bulklicense_jobs", tenant="sim", status="completed") != completed \
            and time.monotonic() < fresh_by:
        time.sleep(0.25)
        api_after = scrape(api_url)
    assert total(api_after, "bulklicense_jobs", tenant="sim", status="completed") == completed
    assert total(api_after, "bulklicense_redis_up") == 1
    assert ("bulklicense_queue_messages", (("queue", "bulklicense"),)) in api_after
    assert total(api_after, "bulklicense_throttle_rate_writes_per_second", tenant="sim") > 0
    moving = [n for status, n, _ in seen if status not in TERMINAL_JOB_STATUSES]
    print(f"\n[metrics] {len(seen)} scrapes, {len(moving)} while the job ran: users finished {moving}")


# --- logs --------------------------------------------------------------------------------------------

def test_every_log_line_is_one_json_object_with_the_job_context(stack: Stack) -> None:
    api_lines, worker_lines = log_entries(stack, "api.log"), log_entries(stack, "worker1.log")
    assert api_lines and worker_lines
    assert any(e["logger"].startswith("uvicorn") for e in api_lines)  # the server's own lines too
    in_chunks = [e for e in worker_lines if "chunk" in e]
    assert in_chunks and all(isinstance(e["chunk"], int) and len(e["job"]) == 32 and e["tenant"] == "sim"
                             for e in in_chunks if "tenant" in e)
    assert any(e.get("tenant") == "sim" for e in in_chunks)
    everything = "\n".join((Path(stack.workdir) / name).read_text() for name in ("api.log", "worker1.log"))
    assert WEBHOOK_SECRET not in everything and CALLBACK_TOKEN not in everything
