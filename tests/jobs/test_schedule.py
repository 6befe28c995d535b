"""Rows on their day: due times in a tenant's zone, ordering and chunking by day, held chunks, seats by date."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from jobs.chunks import execute_chunk
from jobs.executor import run_users
from jobs.lifecycle import ChunkOutcome, LiveChunk, Phase
from jobs.models import JobStatus, License, Operation
from jobs.progress import job_status
from jobs.record import JobSpec
from jobs.schedule import (
    MAX_AUDITED_INSTANTS,
    MAX_INSTANTS,
    Day,
    Holder,
    due_at,
    held_summary,
    late_by_s,
    peak_demand,
    seats_by_day,
)
from jobs.seats import SeatLedger
from jobs.skus import SkuCatalog
from jobs.store import JobStore
from tests.fakes import FakeClock, Tenant
from tests.jobs.helpers import Ctx, job, make_deps, op, results, user

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def joiner(row: int, when: str | None, sku: str = E3) -> Operation:
    return Operation(row=row, user=f"u{row}@contoso.example", add=(License(sku),), effective=when)


def leaver(row: int, when: str, sku: str = E3) -> Operation:
    return Operation(row=row, user=f"u{row}@contoso.example", remove=(sku,), effective=when, last_day=True)


def test_a_date_is_the_start_of_the_day_in_the_tenant_zone_and_a_last_day_its_end() -> None:
    assert due_at(joiner(2, "2026-03-02"), PARIS) == ts("2026-03-02T00:00:00+01:00")
    assert due_at(joiner(2, "2026-03-02"), ZoneInfo("UTC")) == ts("2026-03-02T00:00:00+00:00")
    assert due_at(leaver(2, "2026-03-02"), PARIS) == ts("2026-03-03T00:00:00+01:00")
    # Summer time: the same wall clock is another instant.
    assert due_at(joiner(2, "2026-07-01"), PARIS) == ts("2026-07-01T00:00:00+02:00")
    # A date-time with an offset is that instant whatever the zone; without one, it is read in the zone.
    assert due_at(joiner(2, "2026-03-02T09:30:00Z"), PARIS) == ts("2026-03-02T09:30:00+00:00")
    assert due_at(joiner(2, "2026-03-02T09:30"), PARIS) == ts("2026-03-02T09:30:00+01:00")
    assert due_at(leaver(2, "2026-03-02T17:00:00+00:00"), PARIS) == ts("2026-03-02T17:00:00+00:00")
    assert due_at(joiner(2, None), PARIS) is None


def test_rows_due_now_come_first_as_they_are_and_held_rows_follow_by_instant() -> None:
    holder = Holder(ZoneInfo("UTC"), NOW, horizon_s=30 * 86400)
    ops = [joiner(2, "2026-03-05"), joiner(3, None), joiner(4, "2026-03-03"), joiner(5, "2026-02-01"),
           leaver(6, "2026-03-02"), joiner(7, "2026-03-05")]
    ordered = list(holder.order(ops))
    assert [op.row for op in ordered] == [3, 5, 4, 6, 2, 7]
    assert [op.due_at for op in ordered] == [None, None, ts("2026-03-03T00:00+00:00"), ts("2026-03-03T00:00+00:00"),
                                             ts("2026-03-05T00:00+00:00"), ts("2026-03-05T00:00+00:00")]
    assert holder.held() and holder.errors == []


def test_a_date_beyond_the_time_a_job_is_kept_is_refused_with_its_row_column_and_value() -> None:
    holder = Holder(ZoneInfo("UTC"), NOW, horizon_s=10 * 86400)
    list(holder.order([joiner(2, "2026-03-05"), leaver(3, "2026-04-01")]))
    assert [(e.row, e.column, e.value) for e in holder.errors] == [(3, "end_date", "2026-04-01")]
    assert "more than 10 days ahead" in holder.errors[0].message


def test_staging_cuts_a_chunk_where_the_due_time_changes(store: JobStore, clock: FakeClock) -> None:
    clock.t = NOW
    holder = Holder(ZoneInfo("UTC"), NOW, horizon_s=30 * 86400)
    ops = [joiner(r, None) for r in range(2, 5)] + [joiner(r, "2026-03-03") for r in range(5, 10)] + \
        [leaver(10, "2026-03-04")]
    cuts: list[tuple[float | None, int, int]] = []
    assert store.stage("j", "sim", holder.order(ops), chunk_size=2, cuts=cuts) == 9
    day3, day5 = ts("2026-03-03T00:00+00:00"), ts("2026-03-05T00:00+00:00")
    assert cuts == [(None, 0, 2), (day3, 2, 3), (day5, 5, 1)]
    days = holder.days(cuts)
    assert [(d.rows, dict(d.adds), dict(d.releases)) for d in days] == [
        (3, {E3: 3}, {}), (5, {E3: 5}, {}), (1, {}, {E3: 1})]
    assert [op.row for op in store.load_chunk("j", 4)] == [9]  # the day's last rows, alone in their chunk


def test_held_chunks_are_not_dispatched_and_wait_queued_until_their_instant(store: JobStore, clock: FakeClock) -> None:
    clock.t = NOW
    holder = Holder(ZoneInfo("UTC"), NOW, horizon_s=30 * 86400)
    cuts: list[tuple[float | None, int, int]] = []
    store.stage("j", "sim", holder.order([joiner(2, None), joiner(3, "2026-03-03")]), chunk_size=10, cuts=cuts)
    store.commit("j", JobSpec(schedule=holder.days(cuts)))
    record = store.job("j")
    assert record is not None and record.held_from == 1
    assert store.next_chunk("j") == 0
    assert store.next_chunk("j") is None  # chunk 1 waits in the due set, not in the window
    due = ts("2026-03-03T00:00+00:00")
    assert LiveChunk.parse(store.redis.hget("bl:job:j:live", "1").decode()) == LiveChunk(Phase.QUEUED, due)
    # The reaper leaves it alone before its time (and sends it, late, if the due set lost it).
    assert [o.n for o in store.orphaned_chunks("j", requeue_after_s=60)] == []
    clock.t = due + 120
    assert sorted(o.n for o in store.orphaned_chunks("j", requeue_after_s=60)) == [0, 1]
    # Completing the job's last chunk due now sends no held chunk.
    assert store.complete_chunk("j", 0) == (True, 1, 2, None)
    # The job and its chunks are kept the retention period after its last day.
    assert store.redis.ttl("bl:job:j") > due - NOW


def test_a_dated_job_holds_its_seats_as_long_as_it_is_kept_and_an_undated_one_the_retention(
        store: JobStore, clock: FakeClock) -> None:
    clock.t = NOW
    seats = SeatLedger(store.redis, retention_s=store.retention_s)
    holder = Holder(ZoneInfo("UTC"), NOW, horizon_s=30 * 86400)
    cuts: list[tuple[float | None, int, int]] = []
    store.stage("j", "sim", holder.order([joiner(2, None), joiner(3, "2026-03-20")]), chunk_size=10, cuts=cuts)
    assert seats.reserve("sim", "j", {E3: 2}, {E3: 2}) == {}
    store.commit("j", JobSpec(schedule=holder.days(cuts)))
    due = ts("2026-03-20T00:00+00:00")
    # Reserved on submission, its seats are still held on the row's day and until the job is gone.
    assert store.redis.ttl("bl:job:j:seats") > due - NOW
    assert abs(store.redis.ttl("bl:job:j:seats") - store.redis.ttl("bl:job:j")) <= 1
    store.stage("u", "sim", holder.order([joiner(4, None)]), chunk_size=10)
    assert seats.reserve("sim", "u", {E3: 1}, {E3: 3}) == {}
    store.commit("u", JobSpec())
    assert 0 < store.redis.ttl("bl:job:u:seats") <= store.retention_s


def test_a_job_whose_pending_rows_all_wait_for_their_day_is_scheduled(store: JobStore, clock: FakeClock) -> None:
    clock.t = NOW
    holder = Holder(ZoneInfo("UTC"), NOW, horizon_s=30 * 86400)
    cuts: list[tuple[float | None, int, int]] = []
    store.stage("j", "sim", holder.order([joiner(2, "2026-03-03")]), chunk_size=10, cuts=cuts)
    store.commit("j", JobSpec(schedule=holder.days(cuts)))
    record = store.job("j")
    assert record is not None
    assert job_status(record, NOW) is JobStatus.SCHEDULED
    assert job_status(record, ts("2026-03-03T00:00:01+00:00")) is JobStatus.QUEUED  # due: waits for a worker
    progress = store.progress("j")
    assert progress is not None
    assert progress.to_json()["schedule"] == [{"at": "2026-03-03T00:00:00.000Z", "rows": 1, "chunks": [0]}]
    # A dry run holds nothing: it plans every row now and shows them per day.
    store.stage("d", "sim", Holder(ZoneInfo("UTC"), NOW, 30 * 86400).order([joiner(2, "2026-03-03")]), 10)
    store.commit("d", JobSpec(dry_run=True, schedule=holder.days(cuts)))
    dry = store.job("d")
    assert dry is not None and dry.held_from is None and store.next_chunk("d") == 0


def test_a_held_row_reports_how_late_it_ran() -> None:
    op = Operation(row=2, user="u@contoso.example", due_at=NOW)
    assert late_by_s(op, NOW + 30) is None
    assert late_by_s(op, NOW + 600) == 600.0
    assert late_by_s(Operation(row=2, user="u@contoso.example"), NOW + 600) is None


@pytest.fixture
def catalog() -> SkuCatalog:
    return SkuCatalog.from_graph([{"skuId": E3, "skuPartNumber": "ENTERPRISEPACK", "capabilityStatus": "Enabled",
                                   "prepaidUnits": {"enabled": 10}, "consumedUnits": 8, "servicePlans": []}])


def test_the_seat_table_by_date_counts_earlier_days_leavers_and_other_jobs(catalog: SkuCatalog) -> None:
    d1, d2, d3 = ts("2026-03-02T00:00+00:00"), ts("2026-03-03T00:00+00:00"), ts("2026-03-04T00:00+00:00")
    days = [Day(None, 0, 1, 1, {E3: 1}), Day(d1, 1, 1, 2, {}, {E3: 2}), Day(d2, 2, 1, 4, {E3: 4}),
            Day(d3, 3, 1, 3, {E3: 3})]
    lines = seats_by_day(days, catalog, {E3: 1})  # 2 free, 1 held by another job
    assert [(line.due_at, line.adds, line.releases, line.free, line.shortfall) for line in lines] == [
        (None, 1, 0, 1, 0), (d1, 0, 2, 0, 0), (d2, 4, 0, 2, 2), (d3, 3, 0, -2, 3)]
    assert peak_demand(days) == {E3: 6}  # 1 + 4 + 3 added, 2 freed before the last two days


def test_a_held_row_run_after_its_time_passed_says_how_late_it_ran(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user(), "b@x": user()})
    ops = [replace(op(2, "a@x", add=(E3,)), due_at=clock() - 600), replace(op(3, "b@x", add=(E3,)), due_at=clock() - 5)]
    job_id = job(store, ops)
    deps, _ = make_deps(store, tenant, clock)
    for n in (0, 1):  # one chunk per due time
        run_users(deps, job_id, n, budget_started_at=clock())
    late, on_time = results(store, job_id)["a@x"], results(store, job_id)["b@x"]
    assert (late.status.value, late.late_s, late.scheduled_for) == ("succeeded", 600.0, clock() - 600)
    assert late.detail is not None and "ran 600 s late" in late.detail
    assert (on_time.late_s, on_time.detail, on_time.scheduled_for) == (None, None, clock() - 5)


def test_a_chunk_sent_before_its_rows_day_writes_nothing_and_goes_back_to_wait(store: JobStore,
                                                                              clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user()})
    job_id = job(store, [replace(op(2, "a@x", add=(E3,)), due_at=clock() + 3600)])
    deps, _ = make_deps(store, tenant, clock)
    ctx = Ctx(store, lambda _: deps)
    # The reaper (or a duplicate) sends it an hour early: it is put back, due at its instant.
    assert execute_chunk(ctx, job_id, 0, clock=clock) is ChunkOutcome.HANDED_BACK
    assert tenant.writes == []
    assert ctx.sent == [(job_id, 0, 3600.0, None)]
    assert LiveChunk.parse(store.redis.hget(f"bl:job:{job_id}:live", "0").decode()) == LiveChunk(
        Phase.QUEUED, clock() + 3600)
    clock.advance(3600)
    assert execute_chunk(ctx, job_id, 0, clock=clock) is ChunkOutcome.DONE
    assert tenant.writes == [("POST", "a@x")]


def test_a_job_holds_rows_for_at_most_so_many_instants() -> None:
    holder = Holder(ZoneInfo("UTC"), NOW, horizon_s=30 * 86400)
    ops = [joiner(r, datetime.fromtimestamp(NOW + 60 * r, UTC).isoformat()) for r in range(2, MAX_INSTANTS + 4)]
    list(holder.order([*ops, joiner(999, ops[0].effective)]))  # an instant already held is fine
    assert (holder.error_count, [e.row for e in holder.errors]) == (2, [MAX_INSTANTS + 2, MAX_INSTANTS + 3])
    assert "more than 400 different instants" in holder.errors[0].message


def test_a_day_of_many_chunks_goes_to_the_broker_a_window_at_a_time(store: JobStore, clock: FakeClock) -> None:
    clock.t = NOW
    holder = Holder(ZoneInfo("UTC"), NOW, horizon_s=30 * 86400)
    cuts: list[tuple[float | None, int, int]] = []
    ops = [joiner(r, "2026-03-03") for r in range(2, 12)]  # 10 rows: 5 chunks of 2
    store.stage("j", "sim", holder.order(ops), chunk_size=2, cuts=cuts)
    store.commit("j", JobSpec(schedule=holder.days(cuts)), held_window=2)
    live = {k.decode() for k in store.redis.hkeys("bl:job:j:live")}
    assert live == {"0", "1"}  # the window waits in the due set; the rest has no live state to reap yet
    tenant = Tenant({f"u{r}@contoso.example": user() for r in range(2, 12)})
    deps, _ = make_deps(store, tenant, clock)
    ctx = Ctx(store, lambda _: deps, chunk_window=2)
    clock.t = ts("2026-03-03T00:00:01+00:00")
    # Each chunk of the day that completes sends the day's next one, until none is left.
    assert execute_chunk(ctx, "j", 0, clock=clock) is ChunkOutcome.DONE
    assert execute_chunk(ctx, "j", 1, clock=clock) is ChunkOutcome.DONE
    assert [(n, countdown) for _, n, countdown, _ in ctx.sent] == [(2, 0.0), (3, 0.0)]
    for n in (2, 3, 4):
        assert execute_chunk(ctx, "j", n, clock=clock) is ChunkOutcome.DONE
    assert [n for _, n, _, _ in ctx.sent] == [2, 3, 4]
    progress = store.progress("j")
    assert len(tenant.writes) == 10 and progress is not None and progress.status.value == "completed"


def test_the_audit_summary_of_held_rows_lists_the_first_instants_and_counts_the_rest() -> None:
    days = [Day(None, 0, 1, 5)] + [Day(86400.0 * (i + 1), i + 1, 1, 2) for i in range(MAX_AUDITED_INSTANTS + 3)]
    summary = held_summary(days)
    assert summary["scheduled_rows"] == 2 * (MAX_AUDITED_INSTANTS + 3)
    assert summary["scheduled_days"][:1] == [{"at": "1970-01-02T00:00:00.000Z", "rows": 2}]
    assert (len(summary["scheduled_days"]), summary["scheduled_days_left_out"]) == (MAX_AUDITED_INSTANTS, 3)
    assert held_summary([Day(None, 0, 1, 5)]) == {}


def test_a_dated_plan_counts_seats_by_day_as_planned_a_group_held_removal_freeing_none(store: JobStore,
                                                                                      clock: FakeClock) -> None:
    clock.t = NOW
    group = "0a0a0a0a-1111-4111-8111-000000000001"
    via_group = {**user(E3), "licenseAssignmentStates": [
        {"skuId": E3, "assignedByGroup": group, "disabledPlans": [], "state": "Active", "error": "None"}]}
    holder = Holder(ZoneInfo("UTC"), NOW, horizon_s=30 * 86400)
    cuts: list[tuple[float | None, int, int]] = []
    # The leaver's license comes from a group: removing it frees no seat for the joiner two days later.
    store.stage("j", "sim", holder.order([leaver(2, "2026-03-02"), joiner(3, "2026-03-04")]), chunk_size=2,
                cuts=cuts)
    days = holder.days(cuts)
    store.commit("j", JobSpec(dry_run=True, schedule=days))
    deps, _ = make_deps(store, Tenant({"u2@contoso.example": via_group, "u3@contoso.example": user()}), clock)
    ctx = Ctx(store, lambda _: deps)
    for n in range(len(days)):
        assert execute_chunk(ctx, "j", n, clock=clock) is ChunkOutcome.DONE
    assert peak_demand(days) == {}  # as the input reads: the leaver frees the joiner's seat
    planned = store.plan_counters("j").planned_days(days)
    assert [(d.due_at, d.adds, d.releases) for d in planned] == [(days[0].due_at, {}, {}),
                                                                 (days[1].due_at, {E3: 1}, {})]
    assert peak_demand(planned) == {E3: 1}
