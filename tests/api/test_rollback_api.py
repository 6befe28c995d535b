"""POST /v1/jobs/{id}/rollback: the rollback job it creates, its refusals (409), dry runs, seats and the audit trail."""

from __future__ import annotations

import json
from typing import Any

import redis
from fastapi.testclient import TestClient

from jobs.models import UserStatus
from jobs.seats import SeatLedger
from tests.api.helpers import (
    ALL_KEY,
    ALL_NAME,
    E1,
    E3,
    E5,
    EMS,
    JOB_CSV,
    OTHER_KEY,
    OUTCOMES,
    SIM_KEY,
    SIM_NAME,
    SWAY,
    Sent,
    auth,
    finish,
    finished_job,
    store_of,
    submit_csv,
)


def rollback(client: TestClient, job_id: str, key: str = ALL_KEY, **params: str) -> Any:
    return client.post(f"/v1/jobs/{job_id}/rollback", params=params, headers=auth(key))


def audit_events(client: TestClient, **params: str) -> list[dict[str, Any]]:
    response = client.get("/v1/audit", params=params, headers=auth())
    return [json.loads(line) for line in response.text.splitlines()]


def test_a_rollback_is_a_new_job_undoing_the_changed_users(client: TestClient, redis_client: redis.Redis,
                                                           sent: Sent) -> None:
    job_id = finished_job(client, redis_client)
    response = rollback(client, job_id, key=SIM_KEY)
    assert response.status_code == 202, response.text
    accepted = response.json()
    back_id = accepted["id"]
    assert (accepted["total"], accepted["dry_run"], response.headers["location"]) == (3, False, f"/v1/jobs/{back_id}")
    back = client.get(f"/v1/jobs/{back_id}", headers=auth()).json()
    assert (back["kind"], back["rollback_of"], back["dry_run"], back["status"]) == ("rollback", job_id, False, "queued")
    original = client.get(f"/v1/jobs/{job_id}", headers=auth()).json()
    assert (original["kind"], original["rolled_back_by"]) == ("job", back_id)
    assert any(job == back_id for job, _, _ in sent)  # dispatched

    # Removals first, then the swap back, then the re-add; the unchanged user is not touched.
    ops = list(store_of(redis_client).iter_operations(back_id))
    assert [(op.user, op.row) for op in ops] == [
        ("ada@contoso.example", 2), ("grace@contoso.example", 3), ("linus@contoso.example", 4)]
    assert [(op.remove, [(a.sku_id, a.disabled_plans) for a in op.add]) for op in ops] == [
        ((E3,), []), ((E5,), [(E1, ())]), ((), [(EMS, ())])]
    assert [op.expect.licenses if op.expect else None for op in ops] == [((E3, (SWAY,)),), ((E5, ()),), ()]
    # Seats for the re-adds are reserved as for any real job.
    assert SeatLedger(redis_client, retention_s=3600).held(back_id) == {E1: 1, EMS: 1}

    results = client.get(f"/v1/jobs/{back_id}/results", headers=auth()).json()["value"]
    assert [(r["user"], r["status"], r["add"], r["remove"]) for r in results] == [
        ("ada@contoso.example", "pending", "", "ENTERPRISEPACK"),
        ("grace@contoso.example", "pending", "STANDARDPACK", "SPE_E5"),
        ("linus@contoso.example", "pending", "EMS", "")]


def test_rolling_back_twice_is_refused_naming_the_rollback(client: TestClient, redis_client: redis.Redis) -> None:
    job_id = finished_job(client, redis_client)
    first = rollback(client, job_id).json()["id"]
    again = rollback(client, job_id)
    assert again.status_code == 409
    assert again.json()["detail"] == f"job {job_id} was already rolled back by job {first}"
    assert rollback(client, job_id, dry_run="true").status_code == 409


def test_a_running_job_a_dry_run_and_a_job_that_changed_nothing_are_refused(
        client: TestClient, redis_client: redis.Redis) -> None:
    running = submit_csv(client, JOB_CSV)["id"]
    response = rollback(client, running)
    assert response.status_code == 409
    assert "is queued" in response.json()["detail"] and "cancel it first" in response.json()["detail"]

    planned = client.post("/v1/jobs?tenant=sim&dry_run=true", content=JOB_CSV.encode(),
                          headers={**auth(), "Content-Type": "text/csv"}).json()["id"]
    finish(redis_client, planned, {u: (UserStatus.WOULD_CHANGE, b, None) for u, (_, b, _) in OUTCOMES.items()})
    assert client.get(f"/v1/jobs/{planned}", headers=auth()).json()["status"] == "planned"
    response = rollback(client, planned)
    assert (response.status_code, response.json()["detail"]) == (
        409, f"job {planned} is a dry run: it changed nothing, so there is nothing to roll back")

    idle = submit_csv(client, JOB_CSV)["id"]
    finish(redis_client, idle, {u: (UserStatus.UNCHANGED, b, None) for u, (_, b, _) in OUTCOMES.items()})
    response = rollback(client, idle)
    assert (response.status_code, response.json()["detail"]) == (
        409, f"job {idle} changed no user: there is nothing to roll back")

    jobs = {j["id"] for j in client.get("/v1/jobs", headers=auth()).json()["value"]}
    assert jobs == {running, planned, idle}  # the refusals created nothing
    assert client.get(f"/v1/jobs/{idle}", headers=auth()).json().get("rolled_back_by") is None
    assert [e["action"] for e in audit_events(client)].count("rollback_requested") == 0


def test_another_tenants_key_does_not_see_the_job(client: TestClient, redis_client: redis.Redis) -> None:
    job_id = finished_job(client, redis_client)
    assert rollback(client, job_id, key=OTHER_KEY).status_code == 404
    assert client.get(f"/v1/jobs/{job_id}", headers=auth()).json().get("rolled_back_by") is None


def test_a_cancelled_job_is_rolled_back_for_the_users_it_changed(client: TestClient, redis_client: redis.Redis) -> None:
    job_id = str(submit_csv(client, JOB_CSV)["id"])
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth()).status_code == 202
    outcomes = dict(OUTCOMES)
    outcomes["grace@contoso.example"] = (UserStatus.CANCELLED, None, None)
    outcomes["linus@contoso.example"] = (UserStatus.CANCELLED, None, None)
    finish(redis_client, job_id, outcomes)
    assert client.get(f"/v1/jobs/{job_id}", headers=auth()).json()["status"] == "cancelled"
    response = rollback(client, job_id)
    assert response.status_code == 202, response.text
    assert [op.user for op in store_of(redis_client).iter_operations(response.json()["id"])] == [
        "ada@contoso.example"]


def test_a_dry_run_of_the_rollback_reserves_nothing_and_its_run_is_the_rollback(
        client: TestClient, redis_client: redis.Redis) -> None:
    job_id = finished_job(client, redis_client)
    response = rollback(client, job_id, dry_run="true")
    assert response.status_code == 202, response.text
    preview = response.json()
    assert preview["dry_run"] is True
    record = client.get(f"/v1/jobs/{preview['id']}", headers=auth()).json()
    assert (record["kind"], record["rollback_of"], record["dry_run"]) == ("rollback", job_id, True)
    assert client.get(f"/v1/jobs/{job_id}", headers=auth()).json().get("rolled_back_by") is None
    assert SeatLedger(redis_client, retention_s=3600).held(preview["id"]) == {}

    # The preview planned; running it is the rollback, and the job counts as rolled back.
    finish(redis_client, preview["id"], {u: (UserStatus.WOULD_CHANGE, a, None)
                                         for u, (s, _, a) in OUTCOMES.items() if s is UserStatus.SUCCEEDED})
    run = client.post(f"/v1/jobs/{preview['id']}/run", headers=auth())
    assert run.status_code == 202, run.text
    ran = client.get(f"/v1/jobs/{run.json()['id']}", headers=auth()).json()
    assert (ran["kind"], ran["rollback_of"], ran["planned_from"], ran["dry_run"]) == (
        "rollback", job_id, preview["id"], False)
    assert client.get(f"/v1/jobs/{job_id}", headers=auth()).json()["rolled_back_by"] == ran["id"]
    assert rollback(client, job_id).status_code == 409
    requested = [e for e in audit_events(client, job=job_id) if e["action"] == "rollback_requested"]
    assert [(e["actor"], e["details"]) for e in requested] == [
        (ALL_NAME, {"rollback_job": preview["id"], "users": 3, "dry_run": True}),
        (ALL_NAME, {"rollback_job": ran["id"], "users": 3, "dry_run": False, "planned_from": preview["id"]})]


def test_a_preview_is_not_run_once_the_job_was_rolled_back(client: TestClient, redis_client: redis.Redis) -> None:
    job_id = finished_job(client, redis_client)
    preview = rollback(client, job_id, dry_run="true").json()["id"]
    finish(redis_client, preview, {u: (UserStatus.WOULD_CHANGE, a, None)
                                   for u, (s, _, a) in OUTCOMES.items() if s is UserStatus.SUCCEEDED})
    real = rollback(client, job_id).json()["id"]
    response = client.post(f"/v1/jobs/{preview}/run", headers=auth())
    assert (response.status_code, response.json()["detail"]) == (
        409, f"job {job_id} was already rolled back by job {real}")


def test_seats_short_for_the_re_adds_refuse_unless_told_to_wait(
        client: TestClient, redis_client: redis.Redis, subscribed_skus: list[dict[str, Any]]) -> None:
    job_id = finished_job(client, redis_client)
    ems = next(s for s in subscribed_skus if s["skuId"] == EMS)
    ems["prepaidUnits"] = {**ems["prepaidUnits"], "enabled": ems["consumedUnits"]}  # the job's freed seat is gone
    refused = rollback(client, job_id)
    assert refused.status_code == 409, refused.text
    lines = {line["sku"]: line for line in refused.json()["seats"]}
    assert lines["EMS"] == {"sku_id": EMS, "sku": "EMS", "needed": 1, "released": 0, "free": 0, "shortfall": 1}
    assert lines["STANDARDPACK"]["shortfall"] == 0
    # Nothing was left behind: the job may still be rolled back.
    assert client.get(f"/v1/jobs/{job_id}", headers=auth()).json().get("rolled_back_by") is None
    waiting = rollback(client, job_id, on_seat_shortage="wait")
    assert waiting.status_code == 202, waiting.text
    assert any("EMS" in w for w in waiting.json()["warnings"])


def test_rollbacks_and_resumes_are_audited_with_the_key_name(client: TestClient, redis_client: redis.Redis) -> None:
    job_id = finished_job(client, redis_client)
    preview = rollback(client, job_id, key=SIM_KEY, dry_run="true").json()["id"]
    back = rollback(client, job_id).json()["id"]
    store = store_of(redis_client)
    assert store.pause(back, "auth_failed", "AADSTS7000215: Invalid client secret provided.")
    assert client.post(f"/v1/jobs/{back}/resume", headers=auth(SIM_KEY)).status_code == 202

    events = [e for e in audit_events(client) if e["action"] in ("rollback_requested", "resumed")]
    assert [(e["action"], e["actor"], e["job"], e["details"]) for e in events] == [
        ("rollback_requested", SIM_NAME, job_id, {"rollback_job": preview, "users": 3, "dry_run": True}),
        ("rollback_requested", ALL_NAME, job_id, {"rollback_job": back, "users": 3, "dry_run": False}),
        ("resumed", SIM_NAME, back, {"reason": "auth_failed", "by": "request"}),
    ]
    raw = "".join(json.dumps(e) for e in audit_events(client))
    assert ALL_KEY not in raw and SIM_KEY not in raw


def test_running_a_dry_run_is_audited_as_a_submission(client: TestClient, redis_client: redis.Redis) -> None:
    planned = client.post("/v1/jobs?tenant=sim&dry_run=true", content=JOB_CSV.encode(),
                          headers={**auth(SIM_KEY), "Content-Type": "text/csv"}).json()["id"]
    finish(redis_client, planned, {u: (UserStatus.WOULD_CHANGE, b, None) for u, (_, b, _) in OUTCOMES.items()})
    ran = client.post(f"/v1/jobs/{planned}/run", headers=auth()).json()["id"]
    (event,) = audit_events(client, job=ran)
    assert (event["action"], event["actor"], event["details"]) == (
        "submitted", ALL_NAME, {"planned_from": planned, "rows": 4, "dry_run": False, "on_seat_shortage": "fail"})
