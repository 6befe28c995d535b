"""Approvals over HTTP: a job of a tenant that requires approval plans and waits; only another writing key may
approve it (its run starts with its seats) or reject it (it ends cancelled); refusals are audited apart."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from config import Settings
from config.settings import parse_webhook_origins
from jobs.events import JobEvent
from jobs.models import License, Operation, UserResult, UserStatus
from jobs.notify import Delivery
from jobs.outbox import Outbox
from jobs.record import JobSpec
from jobs.seats import SeatLedger
from jobs.store import new_job_id
from tests.api.helpers import (
    ALL_KEY,
    ALL_NAME,
    E1,
    E3,
    E5,
    EMS,
    JOB_CSV,
    OTHER_KEY,
    OTHER_NAME,
    OUTCOMES,
    SIM_KEY,
    SIM_NAME,
    SWAY,
    Sent,
    auth,
    finish,
    store_of,
    submit_csv,
)

READ_KEY = "key-sim-read-only-01"
OPS_KEY = "key-sim-ops-writer-01"
THREE_ROWS = "\n".join(JOB_CSV.splitlines()[:4]) + "\n"


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    """`sim` requires approval of every job, `big` of jobs of 4 rows or more, `other` of none."""
    path = tmp_path / "tenants.toml"
    credentials = 'client_id = "c"\nclient_secret = "s3cret-value"\n'
    path.write_text(f'[tenants.sim]\ntenant_id = "t-sim"\n{credentials}require_approval = true\n'
                    f'[tenants.big]\ntenant_id = "t-big"\n{credentials}require_approval = true\napproval_min_rows = 4\n'
                    f'[tenants.other]\ntenant_id = "t-other"\n{credentials}')
    return Settings(
        redis_url=redis_url, tenants_file=path, chunk_size=10, max_rows=1000,
        api_keys=(f"{ALL_NAME}={ALL_KEY}:*,{SIM_NAME}={SIM_KEY}:sim|big,ops={OPS_KEY}:sim,"  # type: ignore[arg-type]
                  f"auditor={READ_KEY}:sim:read,{OTHER_KEY}:other"),
    )


def planned(redis_client: redis.Redis, job_id: str) -> None:
    """Record every user's plan and result as a worker leaves a job that needs approval (its seats kept)."""
    store = store_of(redis_client)
    rows = {op.user: op.row for op in store.iter_operations(job_id)}
    store.save_plans(job_id, [(rows["ada@contoso.example"], None, ["changes", f"need:{E3}"]),
                              (rows["grace@contoso.example"], None, ["changes", f"need:{E5}"])])
    store.record_results(job_id, [
        UserResult(row=rows[u], user=u, status=UserStatus.UNCHANGED if s is UserStatus.UNCHANGED
                   else UserStatus.WOULD_CHANGE, before=b, attempts=1, updated_at=1.0)
        for u, (s, b, _) in OUTCOMES.items()])


def waiting_job(client: TestClient, redis_client: redis.Redis, key: str = SIM_KEY) -> str:
    accepted = submit_csv(client, JOB_CSV, key=key)
    assert accepted["needs_approval"] is True
    planned(redis_client, accepted["id"])
    return str(accepted["id"])


def finished_plain_job(redis_client: redis.Redis) -> str:
    """JOB_CSV's job as a worker leaves it, committed before the tenant required approval."""
    store = store_of(redis_client)
    ops = [Operation(row=2, user="ada@contoso.example", add=(License(E3, (SWAY,)),)),
           Operation(row=3, user="grace@contoso.example", add=(License(E5),), remove=(E1,)),
           Operation(row=4, user="linus@contoso.example", remove=(EMS,)),
           Operation(row=5, user="ken@contoso.example", add=(License(EMS),))]
    job_id = new_job_id()
    store.stage(job_id, "sim", ops, 10)
    store.commit(job_id, JobSpec(source="csv", owner=ALL_NAME))
    finish(redis_client, job_id, OUTCOMES)
    return job_id


def job(client: TestClient, job_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/jobs/{job_id}", headers=auth()).json())


def decide(client: TestClient, job_id: str, verb: str, key: str, reason: str | None = None) -> httpx.Response:
    body = {"json": {"reason": reason}} if reason is not None else {}
    return client.post(f"/v1/jobs/{job_id}/{verb}", headers=auth(key), **body)  # type: ignore[arg-type]


def audit(client: TestClient, **params: str) -> list[dict[str, Any]]:
    response = client.get("/v1/audit", params=params, headers=auth())
    return [json.loads(line) for line in response.text.splitlines()]


def held(redis_client: redis.Redis, job_id: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in redis_client.hgetall(f"bl:job:{job_id}:seats").items()}


def test_a_job_of_an_approval_tenant_plans_then_waits_and_cannot_be_run(
        client: TestClient, redis_client: redis.Redis) -> None:
    accepted = submit_csv(client, JOB_CSV, key=SIM_KEY)
    job_id = accepted["id"]
    assert (accepted["needs_approval"], accepted["dry_run"]) == (True, False)
    planning = job(client, job_id)
    assert (planning["status"], planning["awaiting_approval"], planning["approval"]["submitted_by"]) == (
        "queued", False, SIM_NAME)
    assert held(redis_client, job_id) == {E3: 1, E5: 1, EMS: 1}  # reserved at submission, as for any job

    planned(redis_client, job_id)
    waiting = job(client, job_id)
    assert (waiting["status"], waiting["awaiting_approval"], waiting["dry_run"]) == ("planned", True, False)
    assert (waiting["would_change"], waiting["unchanged"], waiting["plan"]["changes"]) == (3, 1, 2)
    assert waiting["approval"] == {"required": True, "submitted_by": SIM_NAME, "decision": None, "by": None,
                                   "at": None, "reason": None}
    # Running it as a dry run would skip the approval.
    refused = client.post(f"/v1/jobs/{job_id}/run", headers=auth(ALL_KEY))
    assert refused.status_code == 409 and "approve" in refused.json()["detail"]
    # The event stream's last progress says so too.
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth()) as response:
        data = next(json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:"))
    assert (data["status"], data["awaiting_approval"]) == ("planned", True)


def test_another_key_approves_and_the_run_starts_with_the_jobs_seats(
        client: TestClient, redis_client: redis.Redis, sent: Sent) -> None:
    job_id = waiting_job(client, redis_client)
    seats_before = held(redis_client, job_id)

    response = decide(client, job_id, "approve", ALL_KEY)

    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    assert (response.headers["location"], response.json()["needs_approval"]) == (f"/v1/jobs/{run_id}", False)
    run = job(client, run_id)
    assert (run["status"], run["planned_from"], run["dry_run"], run["approval"]) == ("queued", job_id, False, None)
    assert any(sent_id == run_id for sent_id, _, _ in sent)  # dispatched: its workers read every user again
    assert (held(redis_client, run_id), held(redis_client, job_id)) == (seats_before, {})
    approved = job(client, job_id)
    assert (approved["status"], approved["awaiting_approval"], approved["run_as"]) == ("planned", False, run_id)
    assert (approved["approval"]["decision"], approved["approval"]["by"]) == ("approved", ALL_NAME)

    again = decide(client, job_id, "approve", OPS_KEY)
    assert again.status_code == 409 and f"already approved by {ALL_NAME}" in again.json()["detail"]
    assert decide(client, job_id, "reject", OPS_KEY).status_code == 409
    events = [(e["actor"], e["action"], e["job"], e["details"]) for e in audit(client, tenant="sim")]
    assert (ALL_NAME, "approved", job_id, {"run_job": run_id, "rows": 4}) in events
    assert (ALL_NAME, "submitted", run_id, {"planned_from": job_id, "rows": 4, "dry_run": False,
                                            "approved": True}) in events


def test_the_submitters_own_key_is_refused_and_the_refusals_never_evict_the_trail(
        client: TestClient, redis_client: redis.Redis) -> None:
    job_id = waiting_job(client, redis_client)
    trail = redis_client.xlen("bl:audit:sim")

    for _ in range(20):
        response = decide(client, job_id, "approve", SIM_KEY)
        assert response.status_code == 403
        assert f"API key '{SIM_NAME}' submitted job {job_id}: another API key must approve" in response.json()["detail"]
    assert decide(client, job_id, "reject", SIM_KEY).status_code == 403

    assert redis_client.xlen("bl:audit:sim") == trail  # kept apart, with the other refusals
    refusals = [e for e in audit(client, tenant="sim", job=job_id) if e["action"] == "approval_refused"]
    # One event per key and minute; the 20 others are counted, and the key's next event says how many.
    assert [(e["actor"], e["details"]["why"], e["details"]["suppressed"]) for e in refusals] == [
        (SIM_NAME, "self_approval", 0)]
    assert redis_client.get(f"bl:audit-refused-count:sim:{SIM_NAME}:approval_refused") == b"20"
    assert refusals[0]["details"]["request"] == f"POST /v1/jobs/{job_id}/approve"
    assert job(client, job_id)["awaiting_approval"] is True


def test_read_only_and_other_tenants_keys_are_refused_and_audited(
        client: TestClient, redis_client: redis.Redis) -> None:
    job_id = waiting_job(client, redis_client)

    read_only = decide(client, job_id, "approve", READ_KEY)
    assert read_only.status_code == 403 and "read-only" in read_only.json()["detail"]
    assert decide(client, job_id, "reject", OTHER_KEY).status_code == 404  # as for any job of another tenant

    refusals = {(e["actor"], e["details"]["why"]) for e in audit(client, tenant="sim", job=job_id)
                if e["action"] == "approval_refused"}
    assert refusals == {("auditor", "read_only"), (OTHER_NAME, "tenant")}
    assert job(client, job_id)["awaiting_approval"] is True


def test_deciding_on_a_job_that_does_not_wait_is_a_conflict(client: TestClient, redis_client: redis.Redis) -> None:
    still_planning = submit_csv(client, JOB_CSV, key=SIM_KEY)["id"]
    response = decide(client, still_planning, "approve", ALL_KEY)
    assert response.status_code == 409
    assert response.json()["detail"] == (f"job {still_planning} is queued: it can be decided on once every user is"
                                         " planned")

    plain = submit_csv(client, JOB_CSV, key=ALL_KEY, tenant="other")
    assert plain["needs_approval"] is False
    assert decide(client, plain["id"], "approve", OTHER_KEY).json()["detail"] == (
        f"job {plain['id']} does not wait for approval")

    dry = client.post("/v1/jobs?tenant=sim&dry_run=true", content=JOB_CSV.encode(),
                      headers={**auth(SIM_KEY), "Content-Type": "text/csv"}).json()
    assert (dry["dry_run"], dry["needs_approval"]) == (True, False)  # a dry run needs no approval
    assert decide(client, dry["id"], "approve", ALL_KEY).status_code == 409


def test_a_rejected_job_ends_cancelled_with_the_reason_and_its_seats_released(
        client: TestClient, redis_client: redis.Redis) -> None:
    job_id = waiting_job(client, redis_client)
    assert held(redis_client, job_id)

    response = decide(client, job_id, "reject", OPS_KEY, reason="  not before the quarter closes ")

    assert response.status_code == 200, response.text
    assert response.json() == {"id": job_id, "status": "cancelled", "decision": "rejected", "by": "ops",
                               "reason": "not before the quarter closes"}
    rejected = job(client, job_id)
    assert (rejected["status"], rejected["awaiting_approval"]) == ("cancelled", False)
    assert (rejected["approval"]["decision"], rejected["approval"]["reason"]) == (
        "rejected", "not before the quarter closes")
    assert held(redis_client, job_id) == {}
    assert SeatLedger(redis_client, retention_s=3600).held_by_others("sim") == {}
    assert decide(client, job_id, "approve", ALL_KEY).status_code == 409
    assert [(e["actor"], e["details"]) for e in audit(client, job=job_id) if e["action"] == "rejected"] == [
        ("ops", {"reason": "not before the quarter closes"})]
    too_long = decide(client, waiting_job(client, redis_client), "reject", OPS_KEY, reason="x" * 501)
    assert too_long.status_code == 422


def test_the_submitter_may_withdraw_a_waiting_job_by_cancelling_it(
        client: TestClient, redis_client: redis.Redis) -> None:
    job_id = waiting_job(client, redis_client)

    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(SIM_KEY))

    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    withdrawn = job(client, job_id)
    assert (withdrawn["status"], withdrawn["approval"]["decision"], withdrawn["approval"]["by"]) == (
        "cancelled", "withdrawn", SIM_NAME)
    assert held(redis_client, job_id) == {}
    assert decide(client, job_id, "approve", ALL_KEY).status_code == 409
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(SIM_KEY)).status_code == 409


def test_cancelling_only_the_dated_rows_of_a_waiting_job_leaves_it_waiting(
        client: TestClient, redis_client: redis.Redis) -> None:
    job_id = waiting_job(client, redis_client)
    seats = held(redis_client, job_id)

    response = client.post(f"/v1/jobs/{job_id}/cancel?scheduled_only=true", headers=auth(SIM_KEY))

    assert response.status_code == 409 and "waits for approval" in response.json()["detail"]
    assert job(client, job_id)["awaiting_approval"] is True and held(redis_client, job_id) == seats


def test_the_threshold_counts_the_jobs_rows(client: TestClient) -> None:
    assert submit_csv(client, THREE_ROWS, key=SIM_KEY, tenant="big")["needs_approval"] is False
    assert submit_csv(client, JOB_CSV, key=SIM_KEY, tenant="big")["needs_approval"] is True


def test_the_run_of_a_dry_run_and_a_rollback_wait_for_approval_too(
        client: TestClient, redis_client: redis.Redis) -> None:
    dry = client.post("/v1/jobs?tenant=sim&dry_run=true", content=JOB_CSV.encode(),
                      headers={**auth(SIM_KEY), "Content-Type": "text/csv"}).json()
    store_of(redis_client).record_results(dry["id"], [
        UserResult(row=op.row, user=op.user, status=UserStatus.WOULD_CHANGE, attempts=1, updated_at=1.0)
        for op in store_of(redis_client).iter_operations(dry["id"])])
    run = client.post(f"/v1/jobs/{dry['id']}/run", headers=auth(SIM_KEY))
    assert run.status_code == 202 and run.json()["needs_approval"] is True
    submitted = [e["details"] for e in audit(client, job=run.json()["id"]) if e["action"] == "submitted"]
    assert submitted[0]["needs_approval"] is True

    done = finished_plain_job(redis_client)
    back = client.post(f"/v1/jobs/{done}/rollback", headers=auth(SIM_KEY)).json()
    assert back["needs_approval"] is True
    assert "rolled_back_by" not in job(client, done)  # claimed only once approved
    planned_rollback = back["id"]
    store_of(redis_client).record_results(planned_rollback, [
        UserResult(row=op.row, user=op.user, status=UserStatus.WOULD_CHANGE, attempts=1, updated_at=1.0)
        for op in store_of(redis_client).iter_operations(planned_rollback)])
    second = client.post(f"/v1/jobs/{done}/rollback", headers=auth(SIM_KEY)).json()["id"]  # also waits
    for rollback in (planned_rollback, second):
        store_of(redis_client).record_results(rollback, [
            UserResult(row=op.row, user=op.user, status=UserStatus.WOULD_CHANGE, attempts=1, updated_at=1.0)
            for op in store_of(redis_client).iter_operations(rollback)])
    second_seats = held(redis_client, second)
    assert second_seats == {E1: 1, EMS: 1}  # the licenses the rollback gives back
    approved = decide(client, planned_rollback, "approve", OPS_KEY)
    assert approved.status_code == 202, approved.text
    rollback_id = approved.json()["id"]
    assert (job(client, rollback_id)["kind"], job(client, done)["rolled_back_by"]) == ("rollback", rollback_id)

    # The other one's run cannot be created (its job is rolled back already): it still waits, seats and all.
    late = decide(client, second, "approve", OPS_KEY)
    assert late.status_code == 409 and f"already rolled back by job {rollback_id}" in late.json()["detail"]
    assert (job(client, second)["awaiting_approval"], held(redis_client, second)) == (True, second_seats)


def test_two_approvals_raced_start_one_run(api_url: str, redis_client: redis.Redis, client: TestClient) -> None:
    job_id = waiting_job(client, redis_client)
    answers: list[int] = []
    start = threading.Barrier(4)

    def approve(key: str) -> None:
        start.wait()
        answers.append(httpx.post(f"{api_url}/v1/jobs/{job_id}/approve", headers=auth(key), timeout=30).status_code)

    threads = [threading.Thread(target=approve, args=(key,)) for key in (ALL_KEY, OPS_KEY, ALL_KEY, OPS_KEY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answers) == [202, 409, 409, 409]
    assert len({e["details"]["run_job"] for e in audit(client, job=job_id) if e["action"] == "approved"}) == 1


@pytest.mark.parametrize("path", ["/v1/reclaim", "/v1/cleanup/redundant-direct"])
def test_a_scan_job_that_would_write_waits_for_approval_whatever_its_threshold(client: TestClient, path: str) -> None:
    # How many users a scan changes is known only once it has run: the threshold cannot let it through.
    params = {"tenant": "big", "dry_run": "false", **({"inactive_days": "90"} if "reclaim" in path else {})}
    response = client.post(path, params=params, headers=auth(SIM_KEY))
    assert response.status_code == 202, response.text
    assert (response.json()["needs_approval"], response.json()["dry_run"]) == (True, False)
    waiting = job(client, response.json()["id"])
    assert waiting["approval"]["submitted_by"] == SIM_NAME and waiting["kind"] in {"reclaim", "redundant_direct"}
    dry = client.post(path, params={**params, "dry_run": "true"}, headers=auth(SIM_KEY))
    assert dry.status_code == 202 and dry.json()["needs_approval"] is False


def test_a_job_awaiting_approval_plans_its_dated_rows_now_and_holds_none_for_their_day(
        client: TestClient, sent: Sent, redis_client: redis.Redis) -> None:
    # Held chunks would be sent by the reaper once due, approved or not: a waiting job plans every row now.
    ahead = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    accepted = submit_csv(client, f"user,add,start_date\nada@contoso.example,ENTERPRISEPACK,\n"
                                  f"grace@contoso.example,ENTERPRISEPACK,{ahead}\n", key=SIM_KEY)
    assert accepted["needs_approval"] is True
    assert all(countdown == 0 for _, _, countdown in sent) and {n for _, n, _ in sent} == {0, 1}
    assert redis_client.hget(f"bl:job:{accepted['id']}", "held_from") is None
    shown = job(client, accepted["id"])
    assert shown["status"] != "scheduled" and [d["rows"] for d in shown["schedule"]] == [1, 1]
    finish(redis_client, accepted["id"], {"ada@contoso.example": (UserStatus.WOULD_CHANGE, None, None),
                                          "grace@contoso.example": (UserStatus.WOULD_CHANGE, None, None)})
    run = decide(client, accepted["id"], "approve", ALL_KEY).json()
    assert redis_client.hget(f"bl:job:{run['id']}", "held_from") is not None  # its approved run holds the row
    [submitted] = [e for e in audit(client, job=run["id"]) if e["action"] == "submitted"]
    assert (submitted["details"]["approved"], submitted["details"]["scheduled_rows"]) == (True, 1)
    assert [d["rows"] for d in submitted["details"]["scheduled_days"]] == [1]


def test_each_decision_is_notified_to_the_jobs_callback(settings: Settings, redis_client: redis.Redis,
                                                       subscribed_skus: list[dict[str, Any]]) -> None:
    hooked = settings.model_copy(update={"webhook_secret": SecretStr("s3cret-webhook"),
                                         "webhook_allowed_origins": parse_webhook_origins("http://127.0.0.1:9000")})
    queued: list[Delivery] = []
    app = create_app(hooked, redis_client=redis_client, send=lambda job, n, countdown: None,
                     fetch_skus=lambda tenant: subscribed_skus, ceiling_for=lambda tenant: 20.0, notify=queued.append)
    with TestClient(app, raise_server_exceptions=False) as client:
        def waiting() -> str:
            accepted = client.post("/v1/jobs", params={"tenant": "sim", "callback_url": "http://127.0.0.1:9000/hook"},
                                   content=JOB_CSV.encode(), headers={**auth(SIM_KEY), "Content-Type": "text/csv"})
            planned(redis_client, accepted.json()["id"])
            return str(accepted.json()["id"])

        approved, rejected, withdrawn = waiting(), waiting(), waiting()
        assert decide(client, approved, "approve", ALL_KEY).status_code == 202
        assert decide(client, rejected, "reject", OPS_KEY, reason="not now").status_code == 200
        assert client.post(f"/v1/jobs/{withdrawn}/cancel", headers=auth(SIM_KEY)).status_code == 202
    # X-BulkLicense-Event is the delivery's event; each is kept in the outbox until delivered.
    assert [(d.job_id, d.event) for d in queued] == [
        (approved, JobEvent.APPROVED), (rejected, JobEvent.REJECTED), (withdrawn, JobEvent.FINISHED)]
    assert Outbox(redis_client, retention_s=3600).pending() == 3
