"""Effective dates over the API: held rows in the due set, the scheduled status, seats by date, cancel."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from fastapi.testclient import TestClient

from config import Settings
from jobs.models import UserStatus
from jobs.store import JobStore
from tests.api.helpers import ALL_KEY, ALL_NAME, CORPUS, E3, Sent, auth, finish, submit_csv

ZONE = "Pacific/Auckland"


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    """The sim tenant in a zone far from UTC: a date is a day there."""
    path = tmp_path / "tenants.toml"
    path.write_text(f'[tenants.sim]\ntenant_id = "t-sim"\nclient_id = "c-sim"\nclient_secret = "s3cret-sim"\n'
                    f'timezone = "{ZONE}"\n')
    return Settings(redis_url=redis_url, tenants_file=path, api_keys=f"{ALL_NAME}={ALL_KEY}:*",  # type: ignore[arg-type]
                    max_rows=1000, chunk_size=10)


@pytest.fixture
def subscribed_skus() -> list[dict[str, Any]]:
    """The corpus tenant's SKUs, ENTERPRISEPACK with 2 seats free."""
    skus = list(json.loads((CORPUS / "subscribed_skus.json").read_text())["value"])
    for sku in skus:
        spare = 2 if sku["skuId"] == E3 else 1000
        sku["prepaidUnits"] = {**sku["prepaidUnits"], "enabled": sku["consumedUnits"] + spare}
    return skus


def day(days_ahead: int) -> str:
    """A date `days_ahead` days after today in the tenant's zone."""
    return (datetime.now(ZoneInfo(ZONE)) + timedelta(days=days_ahead)).date().isoformat()


def start_of(date_text: str) -> float:
    return datetime.fromisoformat(date_text).replace(tzinfo=ZoneInfo(ZONE)).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def audit(client: TestClient) -> list[dict[str, Any]]:
    return [json.loads(line) for line in client.get("/v1/audit", headers=auth()).text.splitlines()]


def job(client: TestClient, job_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/jobs/{job_id}", headers=auth()).json())


def test_a_row_dated_ahead_waits_in_the_due_set_for_the_start_of_its_day(client: TestClient, sent: Sent) -> None:
    ahead = day(3)
    body = submit_csv(client, "user,add,start_date\n"
                              "ada@contoso.example,ENTERPRISEPACK,\n"
                              f"bob@contoso.example,ENTERPRISEPACK,{ahead}\n")
    assert [(n, countdown > 0) for _, n, countdown in sent] == [(0, False), (1, True)]
    countdown = sent[1][2]
    assert abs(time.time() + countdown - start_of(ahead)) < 5  # due at midnight in the tenant's zone
    shown = job(client, body["id"])
    assert body["status"] == shown["status"] == "queued" and shown["scheduled"] == 1
    assert shown["schedule"] == [{"at": None, "rows": 1, "chunks": [0]},
                                 {"at": datetime.fromtimestamp(start_of(ahead), UTC).isoformat(
                                     timespec="milliseconds").replace("+00:00", "Z"), "rows": 1, "chunks": [1]}]


def test_a_job_of_future_rows_only_is_scheduled_and_cancelling_them_writes_nothing(
        client: TestClient, sent: Sent, redis_client: redis.Redis) -> None:
    body = submit_csv(client, "user,remove,end_date\n"
                              f"ada@contoso.example,ENTERPRISEPACK,{day(2)}\n"
                              f"bob@contoso.example,ENTERPRISEPACK,{day(4)}\n")
    assert all(countdown > 0 for _, _, countdown in sent)  # nothing runs now
    assert body["status"] == job(client, body["id"])["status"] == "scheduled"  # the 202 says what GET says
    waiting = client.get(f"/v1/jobs/{body['id']}/results?status=scheduled", headers=auth()).json()["value"]
    assert [(r["row"], r["status"], r["scheduled_for"] is not None) for r in waiting] == [
        (2, "scheduled", True), (3, "scheduled", True)]
    answer = client.post(f"/v1/jobs/{body['id']}/cancel?scheduled_only=true", headers=auth()).json()
    assert answer["scheduled_cancelled"] == 2
    shown = job(client, body["id"])
    assert (shown["status"], shown["cancelled"], shown["pending"]) == ("completed_with_errors", 2, 0)
    rows = client.get(f"/v1/jobs/{body['id']}/results", headers=auth()).json()["value"]
    assert {r["status"] for r in rows} == {"cancelled"} and all(r["scheduled_for"] for r in rows)
    # Their chunks are sent at once, for a worker to find every row ended and complete the job.
    assert sorted((n, countdown) for _, n, countdown in sent if countdown == 0.0) == [(0, 0.0), (1, 0.0)]
    store = JobStore(redis_client, retention_s=3600)
    assert store.claim_chunk(body["id"], 0, "w1").value == "ok"
    assert store.chunk_view(body["id"], 0).pending == []
    # Edit = cancel + resubmit: the cancelled rows' CSV keeps their dates, and resubmitted it is scheduled again.
    export = client.get(f"/v1/jobs/{body['id']}/results?status=cancelled&format=csv", headers=auth()).text
    assert f",{day(2)}" in export and export.splitlines()[0].split(",")[:2] == ["row", "user"]
    again = submit_csv(client, export)
    assert again["status"] == job(client, again["id"])["status"] == "scheduled"
    # A job without rows waiting for their day has nothing to cancel that way.
    now_only = submit_csv(client, "user,add\nzed@contoso.example,EMS\n")
    assert client.post(f"/v1/jobs/{now_only['id']}/cancel?scheduled_only=true", headers=auth()).status_code == 409


def test_a_cancel_before_the_day_cancels_the_job_at_once(client: TestClient) -> None:
    body = submit_csv(client, f"user,add,effective_date\nada@contoso.example,ENTERPRISEPACK,{day(2)}\n")
    client.post(f"/v1/jobs/{body['id']}/cancel", headers=auth())
    assert job(client, body["id"])["status"] == "cancelled"


def test_bad_dates_are_refused_with_row_column_and_value(client: TestClient, sent: Sent) -> None:
    response = client.post("/v1/jobs?tenant=sim", headers={**auth(), "Content-Type": "text/csv"},
                           content=(f"user,add,effective_date\nada@contoso.example,ENTERPRISEPACK,{day(1)}\n"
                                    "bob@contoso.example,ENTERPRISEPACK,31/12/2026\n"
                                    f"cy@contoso.example,ENTERPRISEPACK,{day(400)}\n").encode())
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [(e["row"], e["column"], e["value"]) for e in errors] == [(3, "effective_date", "31/12/2026")]
    # The date too far ahead is found once the file is otherwise valid.
    response = client.post("/v1/jobs?tenant=sim", headers={**auth(), "Content-Type": "text/csv"},
                           content=f"user,add,effective_date\ncy@contoso.example,ENTERPRISEPACK,{day(400)}\n".encode())
    assert response.status_code == 422
    assert [(e["row"], e["column"]) for e in response.json()["errors"]] == [(2, "effective_date")]
    assert sent == []


def test_the_plan_shows_a_seat_shortage_on_a_future_day(client: TestClient) -> None:
    # 2 seats free: 1 today, 1 leaver frees one at the end of day 1, 3 joiners on day 3: short by 1 then.
    csv = ("user,add,remove,effective_date,end_date\n"
           "ada@contoso.example,ENTERPRISEPACK,,,\n"
           f"old@contoso.example,,ENTERPRISEPACK,,{day(1)}\n"
           + "".join(f"n{i}@contoso.example,ENTERPRISEPACK,,{day(3)},\n" for i in range(3)))
    response = client.post("/v1/jobs?tenant=sim&dry_run=true", headers={**auth(), "Content-Type": "text/csv"},
                           content=csv.encode())
    assert response.status_code == 202, response.text
    seats = job(client, response.json()["id"])["seats_by_day"]
    assert [(s["at"] is None, s["adds"], s["releases"], s["free"], s["shortfall"]) for s in seats] == [
        (True, 1, 0, 2, 0), (False, 0, 1, 1, 0), (False, 3, 0, 2, 1)]
    # The real job is refused: on its busiest day it needs 3 seats beyond the leaver's, 2 are free.
    response = client.post("/v1/jobs?tenant=sim", headers={**auth(), "Content-Type": "text/csv"},
                           content=csv.encode())
    assert response.status_code == 409 and "short by 1" in response.text


def test_the_run_of_a_dry_run_holds_its_dated_rows_for_their_day(
        client: TestClient, sent: Sent, redis_client: redis.Redis) -> None:
    ahead = day(2)
    response = client.post("/v1/jobs?tenant=sim&dry_run=true", headers={**auth(), "Content-Type": "text/csv"},
                           content=("user,add,effective_date\nada@contoso.example,ENTERPRISEPACK,\n"
                                    f"bob@contoso.example,ENTERPRISEPACK,{ahead}\n").encode())
    dry = response.json()
    assert sorted((n, countdown) for _, n, countdown in sent) == [(0, 0.0), (1, 0.0)]  # a dry run plans all now
    finish(redis_client, dry["id"], {"ada@contoso.example": (UserStatus.WOULD_CHANGE, None, None),
                                     "bob@contoso.example": (UserStatus.WOULD_CHANGE, None, None)})
    assert job(client, dry["id"])["status"] == "planned"
    sent.clear()
    run = client.post(f"/v1/jobs/{dry['id']}/run", headers=auth()).json()
    assert [(n, countdown > 0) for _, n, countdown in sent] == [(0, False), (1, True)]
    assert abs(time.time() + sent[1][2] - start_of(ahead)) < 5
    assert job(client, run["id"])["scheduled"] == 1


def test_the_202_of_a_dry_run_and_of_its_run_says_what_get_says(client: TestClient, redis_client: redis.Redis) -> None:
    # A dry run plans every row now (queued); its run holds them all for their day (scheduled).
    csv = f"user,add,effective_date\nada@contoso.example,ENTERPRISEPACK,{day(2)}\n".encode()
    dry = client.post("/v1/jobs?tenant=sim&dry_run=true", headers={**auth(), "Content-Type": "text/csv"},
                      content=csv).json()
    assert dry["status"] == job(client, dry["id"])["status"] == "queued"
    finish(redis_client, dry["id"], {"ada@contoso.example": (UserStatus.WOULD_CHANGE, None, None)})
    run = client.post(f"/v1/jobs/{dry['id']}/run", headers=auth()).json()
    assert run["status"] == job(client, run["id"])["status"] == "scheduled"
    # The audit trail says which rows the run holds for which day; the dry run held none.
    submitted = {e["job"]: e["details"] for e in audit(client) if e["action"] == "submitted"}
    assert "scheduled_rows" not in submitted[dry["id"]]
    assert (submitted[run["id"]]["scheduled_rows"], submitted[run["id"]]["scheduled_days"]) == (
        1, [{"at": iso(start_of(day(2))), "rows": 1}])


def test_the_submitted_audit_event_says_how_many_rows_wait_for_which_day(client: TestClient) -> None:
    body = submit_csv(client, "user,add,effective_date\n"
                              "ada@contoso.example,EMS,\n"
                              f"bob@contoso.example,EMS,{day(3)}\n"
                              f"cy@contoso.example,EMS,{day(2)}\n"
                              f"di@contoso.example,EMS,{day(3)}\n")
    [event] = [e for e in audit(client) if e["job"] == body["id"]]
    assert (event["action"], event["details"]["rows"], event["details"]["scheduled_rows"]) == ("submitted", 4, 3)
    assert event["details"]["scheduled_days"] == [{"at": iso(start_of(day(2))), "rows": 1},
                                                  {"at": iso(start_of(day(3))), "rows": 2}]


@pytest.mark.parametrize("last_day", ["9999-12-31", "9999-12-31T12:00:00"])
def test_a_never_ending_last_day_is_refused_with_row_column_and_value(client: TestClient, sent: Sent,
                                                                      last_day: str) -> None:
    # HR exports write 9999-12-31 for "no end": the day after it is not a date at all.
    response = client.post("/v1/jobs?tenant=sim", headers={**auth(), "Content-Type": "text/csv"},
                           content=f"user,remove,end_date\nada@contoso.example,ENTERPRISEPACK,{last_day}\n".encode())
    assert response.status_code == 422
    assert [(e["row"], e["column"], e["value"]) for e in response.json()["errors"]] == [(2, "end_date", last_day)]
    assert sent == []


def test_a_dry_runs_seats_by_day_and_its_run_go_by_its_plan(client: TestClient, redis_client: redis.Redis) -> None:
    # 2 seats free. 3 joiners on day 2; a leaver's license comes from a group (freeing nothing) the day
    # before, another leaver frees a direct one after: on day 2 the tenant is short by 1.
    csv = ("user,add,remove,effective_date,end_date\n"
           f"grp@contoso.example,,ENTERPRISEPACK,,{day(0)}\n"
           + "".join(f"n{i}@contoso.example,ENTERPRISEPACK,,{day(2)},\n" for i in range(3))
           + f"old@contoso.example,,ENTERPRISEPACK,,{day(3)}\n")
    dry = submit_csv(client, csv, tenant="sim&dry_run=true")
    store = JobStore(redis_client, retention_s=3600)
    plans: list[tuple[int, Any, list[str]]] = []
    for op in store.iter_operations(dry["id"]):  # as a worker plans them (jobs.counters' key map)
        if op.user.startswith("grp"):
            keys = ["fail:inherited_from_group"]
        else:
            seat = "need" if op.add else "release"
            keys = ["changes", f"{seat}:{E3}", f"day_{seat}:{op.due_at!r}:{E3}"]
        plans.append((op.row, None, keys))
    store.save_plans(dry["id"], plans)
    finish(redis_client, dry["id"], {op.user: (UserStatus.WOULD_CHANGE, None, None)
                                     for op in store.iter_operations(dry["id"])})
    seats = job(client, dry["id"])["seats_by_day"]
    assert [(s["adds"], s["releases"], s["free"], s["shortfall"]) for s in seats] == [(3, 0, 2, 1), (0, 1, -1, 0)]
    response = client.post(f"/v1/jobs/{dry['id']}/run", headers=auth())
    assert response.status_code == 409 and "short by 1" in response.text
