"""The job record and the chunk lifecycle's stored forms: typed values that round-trip through Redis's strings."""

from __future__ import annotations

import pytest

from jobs.counters import PlanCounters, plan_keys
from jobs.lifecycle import ChunkOutcome, ClaimResult, LiveChunk, Phase, running_prefix
from jobs.models import PauseReason, SeatPolicy, UserStatus
from jobs.plan import PlanOutcome, UserPlan
from jobs.record import (
    Approval,
    ApprovalDecision,
    JobKind,
    JobRecord,
    JobSpec,
    JobState,
    Pause,
    Prefetch,
    SeatBasis,
    committed,
)


def test_a_job_record_round_trips_through_its_hash() -> None:
    spec = JobSpec(source="rollback", owner="hr", warnings=("column 'x' ignored",), dry_run=True,
                   seat_policy=SeatPolicy.WAIT, seat_basis=SeatBasis.PLAN, kind=JobKind.ROLLBACK,
                   prefetch=Prefetch.DONE, callback_url="https://hooks.example.com/h", rollback_of="j0",
                   planned_from="j-1")
    record = JobRecord(id="j1", tenant="sim", state=JobState.QUEUED, created_at=1.5, spec=spec, total=10, chunks=2,
                       chunks_done=1, next_chunk=2, counts={UserStatus.SUCCEEDED: 3, UserStatus.FAILED: 1},
                       throttled=4, retries=5, cancel_requested_at=9.0,
                       pause=Pause(PauseReason.NO_FREE_SEAT, "no seats", 7.0, 67.0), resumed_at=None,
                       started_at=2.0, first_write_at=3.0, finished_at=None, prefetched=True, run_as="j2",
                       rolled_back_by="j3", allowed=frozenset({"read", "assign"}))
    raw = record.to_hash()
    assert (raw["dry_run"], raw["prefetched"], raw["allowed:assign"], raw["paused_reason"]) == (
        "1", "1", "1", "no_free_seat")
    again = JobRecord.from_hash(raw)
    assert again == JobRecord(**{**record.__dict__, "counts": {s: record.count(s) for s in UserStatus}})
    assert (again.done, again.pending, again.cancel_requested) == (4, 6, True)
    assert again.links == (("planned_from", "j-1"), ("run_as", "j2"), ("rollback_of", "j0"), ("rolled_back_by", "j3"))


def test_a_job_waiting_for_approval_and_its_decision_round_trip() -> None:
    decision = Approval(ApprovalDecision.REJECTED, "ops", 12.5, "not before the audit")
    record = JobRecord(id="j1", tenant="sim", state=JobState.QUEUED, created_at=1.5,
                       spec=JobSpec(source="csv", owner="hr", needs_approval=True), approval=decision)
    raw = record.to_hash()
    assert raw["needs_approval"] == "1"
    again = JobRecord.from_hash(raw)
    assert (again.spec.needs_approval, again.spec.plans_only, again.approval) == (True, True, decision)
    plain = JobRecord.from_hash(JobRecord(id="j2", tenant="sim", state=JobState.QUEUED, created_at=1.0).to_hash())
    assert (plain.spec.needs_approval, plain.spec.plans_only, plain.approval) == (False, False, None)
    assert "needs_approval" not in JobSpec().to_hash()  # the hashes of other jobs stay as they were


def test_a_record_read_as_stored_by_older_writers_gets_the_defaults() -> None:
    record = JobRecord.from_hash({"id": "j1", "tenant": "sim", "total": "3", "succeeded": "1"})
    assert (record.state, record.spec.kind, record.spec.seat_basis, record.spec.dry_run) == (
        JobState.QUEUED, JobKind.JOB, SeatBasis.INPUT, False)
    assert (record.pending, record.pause, record.links) == (2, None, ())
    assert committed({"id": "j1"}) and not committed({"state": "staging"}) and not committed({})


def test_plan_counters_are_counted_from_plans_and_read_back() -> None:
    change = UserPlan(PlanOutcome.CHANGE, None, seats_needed=("e3",), seats_released=("ems",), warnings=("w",))
    assert plan_keys(change) == ["changes", "need:e3", "release:ems", "warn:may_conflict"]
    assert plan_keys(UserPlan(PlanOutcome.UNCHANGED, None)) == ["unchanged"]
    counters = PlanCounters.from_hash({"planned": 4, "changes": 2, "need:e3": 5, "release:e3": 2, "fail:drifted": 1})
    assert counters.seat_demand() == {"e3": 3}
    assert PlanCounters.from_hash(counters.to_hash()) == counters


@pytest.mark.parametrize("state", [LiveChunk(Phase.QUEUED, 12.5), LiveChunk(Phase.PARKED, 3.0),
                                   LiveChunk(Phase.RUNNING, 7.25, "host-1-abc")])
def test_live_chunk_states_round_trip(state: LiveChunk) -> None:
    assert LiveChunk.parse(state.encode()) == state


def test_the_stored_live_states_are_what_the_lua_scripts_compare() -> None:
    assert LiveChunk(Phase.RUNNING, 7.25, "w1").encode() == "r:w1:7.25"
    assert LiveChunk(Phase.RUNNING, 7.25, "w1").encode().startswith(running_prefix("w1"))
    assert LiveChunk(Phase.QUEUED, 12.5).encode() == "q:12.5"
    assert ChunkOutcome.skipped(ClaimResult.BUSY) == "skipped:busy"
