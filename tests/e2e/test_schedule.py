"""Licenses on the right day, end to end on real processes: a row dated ahead waits, a worker restart loses nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.e2e.stack import POWER_BI_PRO, Stack, free_users

AHEAD_S = 30.0  # the dated row's instant, after submission
ON_TIME_S = 5.0  # it must be written within this after its instant

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("schedule")
    env = {"BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.05", "BULKLICENSE_REAPER_INTERVAL_S": "0.5"}
    s = Stack(workdir, sim_args=["--users", "20", "--seed", "5", "--latency-ms", "5"], env=env)
    try:
        yield s.start(workers=1)
    finally:
        s.stop()


def writes_of(stack: Stack, user_id: str) -> list[dict[str, Any]]:
    with stack.control() as control:
        value: list[dict[str, Any]] = control.get("/writes", params={"user": user_id}).json()["value"]
    return value


def test_a_row_dated_ahead_is_written_on_time_and_a_worker_restart_loses_nothing(stack: Stack) -> None:
    today, dated = free_users(stack, 2)
    due = time.time() + AHEAD_S
    when = datetime.fromtimestamp(int(due) + 1, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # to the second, after `due`
    due = float(int(due) + 1)
    accepted = stack.submit_csv([
        {"user": today["userPrincipalName"], "add": POWER_BI_PRO, "effective_date": ""},
        {"user": dated["userPrincipalName"], "add": POWER_BI_PRO, "effective_date": when},
    ])
    # The row due now runs as any job's; then the job waits for the dated one.
    job = stack.wait_status(accepted["id"], "scheduled", timeout_s=20)
    assert (job["succeeded"], job["scheduled"]) == (1, 1)
    # The worker dies and another starts well before the instant: the due set (Redis) holds the row.
    stack.kill_worker(stack.workers[0])
    stack.start_worker()
    assert time.time() < due - 5, "the restart took too long for the test to mean anything"
    assert writes_of(stack, dated["id"]) == []

    job = stack.wait_job(accepted["id"], timeout_s=AHEAD_S + 30)
    assert (job["status"], job["succeeded"]) == ("completed", 2)
    writes = [w for w in writes_of(stack, dated["id"]) if w["method"] == "POST"]
    assert len(writes) == 1
    print(f"the dated row was written {writes[0]['ts'] - due:.2f} s after its instant")  # the README's figure
    assert due <= writes[0]["ts"] <= due + ON_TIME_S, (writes[0]["ts"] - due)
    row = next(r for r in stack.results(accepted["id"]) if r["user"] == dated["userPrincipalName"])
    assert (row["status"], row["late_s"]) == ("succeeded", None)
    assert row["scheduled_for"] == datetime.fromtimestamp(due, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
    with stack.control() as control:
        user = next(u for u in control.get("/users").json()["value"] if u["id"] == dated["id"])
    assert POWER_BI_PRO in {a["skuId"] for a in user["assignedLicenses"]}
