"""The jobs' own steps in the audit trail: recorded as `system`, small, with counts and reasons."""

from __future__ import annotations

import dataclasses

import redis

from jobs.audit import SYSTEM_ACTOR, AuditLog
from jobs.audit_listener import MAX_MESSAGE_CHARS, AuditListener
from jobs.events import JobEvent, Listeners
from jobs.executor import run_users
from jobs.models import UserResult, UserStatus
from jobs.store import JobStore
from tests.fakes import FakeClock, Tenant
from tests.jobs.helpers import E3, job, make_deps, op, user


def trail(client: redis.Redis, clock: FakeClock) -> AuditLog:
    return AuditLog(client, max_events=1000, retention_s=3600, clock=clock)


def test_a_job_run_records_its_plan_and_first_write(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    store = JobStore(redis_client, retention_s=3600, clock=clock)
    audit = trail(redis_client, clock)
    tenant = Tenant({"a@x": user(), "b@x": user(E3), "c@x": user()})
    job_id = job(store, [op(2, "a@x", add=(E3,)), op(3, "b@x", add=(E3,)), op(4, "c@x", remove=(E3,))])
    deps, _ = make_deps(store, tenant, clock)
    deps = dataclasses.replace(deps, events=Listeners([AuditListener(audit)]))
    run_users(deps, job_id, 0, budget_started_at=clock())

    events = [e.to_json() for e in audit.events(["sim"])]
    assert [(e["action"], e["actor"], e["job"], e["tenant"]) for e in events] == [
        ("plan_finished", SYSTEM_ACTOR, job_id, "sim"), ("started", SYSTEM_ACTOR, job_id, "sim")]
    assert events[0]["details"] == {"planned": 3, "changes": 1, "unchanged": 1,
                                    "predicted_failures": {"license_not_assigned": 1}, "warnings": {},
                                    "needed": {E3.lower(): 1}, "released": {}}
    assert events[1]["details"] == {}


def test_pauses_resumes_and_the_end_keep_reasons_and_counts(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    audit = trail(redis_client, clock)
    listener = AuditListener(audit)
    listener.job_event("j1", "sim", JobEvent.PAUSED, {"reason": "no_free_seat", "message": "x" * 5000})
    listener.job_event("j1", "sim", JobEvent.RESUMED, {"reason": "no_free_seat", "by": "probe"})
    counts = {"status": "completed_with_errors", "total": 3, "succeeded": 2, "failed": 1, "cancelled": 0}
    listener.job_event("j1", "sim", JobEvent.FINISHED, {**counts, "ignored": {"nested": ["not kept"]}})
    listener.users_finished("j1", "sim", [UserResult(row=2, user="a@x", status=UserStatus.SUCCEEDED)])

    events = [e.to_json() for e in audit.events(["sim"], job="j1")]
    assert [e["action"] for e in events] == ["paused", "resumed", "finished"]  # users are not events
    assert events[0]["details"] == {"reason": "no_free_seat", "message": "x" * MAX_MESSAGE_CHARS}
    assert events[1]["details"] == {"reason": "no_free_seat", "by": "probe"}
    assert events[2]["details"] == counts


def test_a_plan_of_very_many_skus_still_records_its_counts(redis_client: redis.Redis) -> None:
    audit = trail(redis_client, FakeClock())
    counters = {"planned": 500, "changes": 500, **{f"need:{n:08d}-0000-0000-0000-000000000000": 1 for n in range(200)}}
    AuditListener(audit).job_event("j1", "sim", JobEvent.PLAN_FINISHED, counters)
    (event,) = audit.events(["sim"])
    assert event.action == "plan_finished"
    assert (event.details["planned"], event.details["changes"]) == (500, 500)
    assert "needed" not in event.details
