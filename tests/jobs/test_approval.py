"""A job that needs approval, run by a worker against a real Redis: it plans, never writes, keeps its seats and
is told as awaiting approval; the decision on it is taken once."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis

from jobs.chunks import execute_chunk
from jobs.events import JobEvent, Listeners
from jobs.models import JobStatus, UserResult, UserStatus
from jobs.record import Approval, ApprovalDecision, JobSpec, SeatBasis
from jobs.seats import SeatLedger
from jobs.store import JobStore
from tests.fakes import FakeClock, Tenant
from tests.jobs.helpers import E3, EMS, Ctx, make_deps, op, results, user


class Heard:
    """A job listener recording the events it hears."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []

    def job_event(self, job_id: str, tenant: str, event: JobEvent, details: Mapping[str, Any]) -> None:
        self.events.append(event)

    def users_finished(self, job_id: str, tenant: str, results: Sequence[UserResult]) -> None:
        pass


def waiting_job(store: JobStore, seats: SeatLedger, *, needs_approval: bool = True) -> str:
    """Three users (one already holds E3), committed as the submitter leaves a job of an approval tenant."""
    ops = [op(2, "ada@x", add=(E3,)), op(3, "bob@x", add=(E3,)), op(4, "cy@x", remove=(EMS,))]
    store.stage("wait", "sim", ops, 2)
    assert seats.reserve("sim", "wait", {E3: 2}, {E3: 10}) == {}
    store.commit("wait", JobSpec(source="csv", owner="hr-portal", seat_basis=SeatBasis.INPUT,
                                 needs_approval=needs_approval))
    assert store.next_chunk("wait") == 0
    return "wait"


def run_all_chunks(store: JobStore, seats: SeatLedger, tenant: Tenant, clock: FakeClock, heard: Heard) -> None:
    deps, _ = make_deps(store, tenant, clock)
    deps = replace(deps, seats=seats, events=Listeners([heard]))
    ctx = Ctx(store, lambda _: deps, events=Listeners([heard]))
    for n in (0, 1):
        store.next_chunk("wait")
        assert execute_chunk(ctx, "wait", n, clock=clock) == "done"


def test_a_job_needing_approval_plans_writes_nothing_and_keeps_its_seats(
        store: JobStore, redis_client: redis.Redis, clock: FakeClock) -> None:
    seats = SeatLedger(redis_client, retention_s=3600)
    job_id = waiting_job(store, seats)
    tenant = Tenant({"ada@x": user(), "bob@x": user(E3), "cy@x": user(EMS)})
    heard = Heard()

    run_all_chunks(store, seats, tenant, clock, heard)

    assert tenant.writes == []  # read, planned, nothing sent
    assert {u: r.status for u, r in results(store, job_id).items()} == {
        "ada@x": UserStatus.WOULD_CHANGE, "bob@x": UserStatus.UNCHANGED, "cy@x": UserStatus.WOULD_CHANGE}
    progress = store.progress(job_id)
    assert progress is not None
    assert (progress.status, progress.awaiting_approval) == (JobStatus.PLANNED, True)
    assert progress.to_json()["approval"] == {"required": True, "submitted_by": "hr-portal", "decision": None,
                                              "by": None, "at": None, "reason": None}
    # The user found holding E3 gave its seat back; the one the plan needs stays reserved for the run.
    assert seats.held_by_others("sim") == {E3: 1}
    assert heard.events[-1] is JobEvent.AWAITING_APPROVAL
    assert JobEvent.FINISHED not in heard.events


def test_a_job_without_approval_ends_as_usual_and_releases_its_seats(
        store: JobStore, redis_client: redis.Redis, clock: FakeClock) -> None:
    seats = SeatLedger(redis_client, retention_s=3600)
    waiting_job(store, seats, needs_approval=False)
    tenant = Tenant({"ada@x": user(), "bob@x": user(E3), "cy@x": user(EMS)})
    heard = Heard()

    run_all_chunks(store, seats, tenant, clock, heard)

    assert len(tenant.writes) == 2
    assert seats.held_by_others("sim") == {}
    assert heard.events[-1] is JobEvent.FINISHED


def test_the_decision_on_a_job_is_taken_once_whoever_races(store: JobStore, redis_client: redis.Redis) -> None:
    seats = SeatLedger(redis_client, retention_s=3600)
    job_id = waiting_job(store, seats)
    deciders = [Approval(ApprovalDecision.APPROVED if i % 2 else ApprovalDecision.REJECTED, f"key{i}", 1.0)
                for i in range(8)]
    answers: list[Approval | None] = [None] * len(deciders)
    start = threading.Barrier(len(deciders))

    def decide(i: int) -> None:
        start.wait()
        answers[i] = store.decide(job_id, deciders[i])

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(len(deciders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [d for d, answer in zip(deciders, answers, strict=True) if answer is None]
    assert len(winners) == 1
    assert all(answer == winners[0] for answer in answers if answer is not None)
    record = store.job(job_id)
    assert record is not None and record.approval == winners[0]
    # Taken back (its run could not be created), the job may be decided on again.
    store.undecide(job_id, winners[0])
    assert store.decide(job_id, deciders[0]) is None
