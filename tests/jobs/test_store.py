"""JobStore against a real Redis: atomic accounting, chunk lifecycle, leases, progress."""

from __future__ import annotations

import json

import redis

from jobs.models import JobStatus, License, Operation, UserResult, UserStatus
from jobs.record import JobSpec
from jobs.scheduler import dispatch, reap
from jobs.store import JobStore, WriteGate, claim_value


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def ops(n: int) -> list[Operation]:
    return [Operation(row=i + 2, user=f"u{i}@contoso.example", add=(License("sku-a"),)) for i in range(n)]


def committed(store: JobStore, n: int = 10, chunk: int = 4, job: str = "j1") -> str:
    store.stage(job, "sim", ops(n), chunk)
    store.commit(job, JobSpec(source="csv"))
    return job


def result(row: int, status: UserStatus = UserStatus.SUCCEEDED) -> UserResult:
    return UserResult(row=row, user=f"u{row}", status=status, attempts=1, updated_at=1.0)


def test_stage_commit_and_load_chunks(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client, retention_s=3600)
    job = committed(store, n=10, chunk=4)
    assert [len(store.load_chunk(job, n)) for n in range(3)] == [4, 4, 2]
    assert store.load_chunk(job, 1)[0] == ops(10)[4]
    progress = store.progress(job)
    assert progress is not None
    assert (progress.total, progress.pending, progress.chunks, progress.status) == (10, 10, 3, JobStatus.QUEUED)
    assert 0 < redis_client.ttl(f"bl:job:{job}:ops:0") <= 3600


def test_staged_job_is_invisible_and_discard_removes_everything(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client, retention_s=3600)
    store.stage("j2", "sim", ops(9), 4)
    assert store.job_tenant("j2") is None
    assert store.progress("j2") is None
    store.discard("j2")
    assert redis_client.keys("bl:job:j2*") == []


def test_a_chunk_is_read_in_one_step_with_what_is_known_of_its_rows(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client, retention_s=3600)
    job = committed(store, n=2500, chunk=2500)  # more rows than one HMGET of the script takes
    store.record_results(job, [result(2), result(2501)])
    store.save_plans(job, [(3, {"usageLocation": "US", "assignedLicenses": []}, ["changes"]), (4, None, ["fail:x"])])
    assert store.begin_writes(job, "b1", 1e12, [3, 2500]) is WriteGate.FIRST
    store.save_budget(job, 0, 12.5)
    view = store.chunk_view(job, 0, count_run=True, take_budget=True)
    assert view.record is not None and (view.record.id, view.record.total, view.record.chunks) == (job, 2500, 1)
    assert view.ops == tuple(ops(2500))
    assert view.done_rows == {2, 2501}
    assert len(view.pending) == 2498 and view.pending[0].row == 3
    assert view.befores == {3: {"usageLocation": "US", "assignedLicenses": []}, 4: None}
    assert view.attempts == {3: 1, 2500: 1}
    assert (view.runs, view.budget_used_s) == (1, 12.5)
    again = store.chunk_view(job, 0, count_run=True, take_budget=True)
    assert (again.runs, again.budget_used_s) == (2, None)  # counted again; the budget was taken
    assert store.chunk_view(job, 0).runs == 0  # a plain read counts nothing
    assert store.chunk_view(job, 7).ops == ()  # no such chunk


def test_a_result_is_recorded_once_and_counters_agree(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client, retention_s=3600)
    job = committed(store, n=3)
    assert store.record_results(job, [result(2), result(3, UserStatus.FAILED)]) == 2
    # The same rows again (a redelivered chunk) change nothing, even with another status.
    assert store.record_results(job, [result(2, UserStatus.FAILED), result(3)]) == 0
    assert store.record_results(job, [result(4, UserStatus.CANCELLED)]) == 1
    progress = store.progress(job)
    assert progress is not None
    assert (progress.succeeded, progress.failed, progress.cancelled, progress.pending) == (1, 1, 1, 0)
    assert progress.status is JobStatus.COMPLETED_WITH_ERRORS
    assert progress.finished_at is not None
    stored = json.loads(redis_client.hget(f"bl:job:{job}:res", "2"))
    assert stored["status"] == "succeeded"


def test_claims_are_exclusive_while_the_owner_lives(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    store = JobStore(redis_client, retention_s=3600, clock=clock)
    job = committed(store)
    store.heartbeat("w1", 20, [f"{job}:0"])
    assert store.claim_chunk(job, 0, "w1") == "ok"
    assert store.claim_chunk(job, 0, "w2") == "busy"
    redis_client.delete("bl:worker:w1")  # w1 died
    assert store.claim_chunk(job, 0, "w2") == "ok"
    first, done, chunks, nxt = store.complete_chunk(job, 0)
    assert (first, done, chunks, nxt) == (True, 1, 3, 0)  # nothing dispatched yet: chunk 0 is next
    assert store.complete_chunk(job, 0)[0] is False  # a second completion is not counted
    assert store.claim_chunk(job, 0, "w3") == "done"
    assert store.claim_chunk("nope", 0, "w3") == "gone"


def test_dispatch_hands_out_a_window_then_one_per_completion(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client, retention_s=3600)
    job = committed(store, n=10, chunk=2)  # 5 chunks
    sent: list[int] = []
    assert dispatch(store, lambda j, n, c: sent.append(n), job, 2) == 2
    assert sent == [0, 1]
    assert dispatch(store, lambda j, n, c: sent.append(n), job, 10) == 3
    assert dispatch(store, lambda j, n, c: sent.append(n), job, 1) == 0
    assert sent == [0, 1, 2, 3, 4]


def test_reaper_requeues_chunks_of_dead_workers_only(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    store = JobStore(redis_client, retention_s=3600, clock=clock)
    job = committed(store, n=12, chunk=4)  # chunks 0..2
    dispatch(store, lambda *a: None, job, 3)
    store.heartbeat("alive", 20, [f"{job}:0"])
    store.heartbeat("dead", 20, [f"{job}:1"])
    assert store.claim_chunk(job, 0, "alive") == "ok"
    assert store.claim_chunk(job, 1, "dead") == "ok"
    requeued: list[int] = []
    send = lambda j, n, c: requeued.append(n)  # noqa: E731
    assert reap(store, send, requeue_after_s=45) == 0
    redis_client.delete("bl:worker:dead")
    clock.t += 30
    store.heartbeat("alive", 20, [f"{job}:0"])
    # chunk 1's worker is gone; chunk 2 is queued but not yet overdue.
    assert reap(store, send, requeue_after_s=45) == 1
    assert requeued == [1]
    clock.t += 50
    store.heartbeat("alive", 20, [f"{job}:0"])
    assert reap(store, send, requeue_after_s=45) == 2  # chunks 1 and 2 overdue in the queue
    assert sorted(requeued[1:]) == [1, 2]


def test_reaper_requeues_a_chunk_its_live_worker_dropped(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    store = JobStore(redis_client, retention_s=3600, clock=clock)
    job = committed(store, n=4, chunk=4)
    dispatch(store, lambda *a: None, job, 1)
    store.heartbeat("w1", 20, [f"{job}:0"])
    assert store.claim_chunk(job, 0, "w1") == "ok"
    clock.t += 5
    store.heartbeat("w1", 20, [])  # the task crashed (e.g. Redis blipped) and is no longer running
    requeued: list[int] = []
    assert reap(store, lambda j, n, c: requeued.append(n), requeue_after_s=45) == 1
    assert requeued == [0]


def test_cancel_blocks_new_write_batches(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    store = JobStore(redis_client, retention_s=3600, clock=clock)
    job = committed(store)
    assert store.begin_writes(job, "b1", clock.t + 30, [2, 3]) is WriteGate.FIRST  # the job's first write
    assert store.writes_in_flight(job) == 1
    store.request_cancel(job)
    assert store.begin_writes(job, "b2", clock.t + 30, [4]) is WriteGate.CANCELLED
    store.end_writes(job, "b1")
    assert store.writes_in_flight(job) == 0
    assert store.attempts(job, [2, 3, 4]) == {2: 1, 3: 1}


def test_a_run_whose_claim_was_lost_registers_no_write(redis_client: redis.Redis) -> None:
    """Two runs of a chunk (one claimed on a primary since failed over): only the claim Redis holds writes."""
    clock = FakeClock()
    store = JobStore(redis_client, retention_s=3600, clock=clock)
    job = committed(store)
    dispatch(store, lambda *a: None, job, 1)
    assert store.claim_chunk(job, 0, "w1", at_s=clock.t) == "ok"
    first = claim_value("w1", clock.t)
    redis_client.hdel(f"bl:job:{job}:live", "0")  # the claim was lost with the old primary
    clock.t += 1
    assert store.claim_chunk(job, 0, "w2", at_s=clock.t) == "ok"  # a second run of the chunk
    second = claim_value("w2", clock.t)
    assert store.begin_writes(job, "b1", clock.t + 30, [2, 3], claim=(0, first)) is WriteGate.NOT_CLAIMED
    assert store.writes_in_flight(job) == 0 and store.attempts(job, [2, 3]) == {}  # nothing registered
    assert store.begin_writes(job, "b2", clock.t + 30, [2, 3], claim=(0, second)) is WriteGate.FIRST


def test_progress_rate_and_eta(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    store = JobStore(redis_client, retention_s=3600, clock=clock)
    job = committed(store, n=100, chunk=10)
    for second in range(10):
        clock.t += 1
        store.record_results(job, [result(2 + second * 5 + i) for i in range(5)])
    clock.t += 1
    progress = store.progress(job, ceiling_rate_per_s=20)
    assert progress is not None
    assert progress.rate_per_s == 5.0
    assert progress.eta_s == 50 / 5.0
    assert progress.status is JobStatus.PLANNING  # results, but no write registered yet


def test_job_keys_expire_after_retention(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client, retention_s=1234)
    job = committed(store, n=3)
    store.record_results(job, [result(2)])
    for key in redis_client.keys(f"bl:job:{job}*"):
        assert 0 < redis_client.ttl(key) <= 1234, key
