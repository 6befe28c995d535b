"""The reaper against a real Redis: a worker dying between finishing a chunk and dispatching the next."""

from __future__ import annotations

import redis

from config import Settings
from jobs.models import Operation, UserResult, UserStatus
from jobs.scheduler import dispatch, reap
from jobs.store import JobStore

REQUEUE_QUEUED_AFTER_S_DEFAULT = Settings.model_fields["requeue_queued_after_s"].default


def test_a_worker_killed_between_finishing_a_chunk_and_dispatching_the_next_does_not_stall_the_job(
        redis_client: redis.Redis) -> None:
    """The end-to-end kill -9 tests land at random points; this one lands at the narrowest, on purpose.

    `execute_chunk` marks chunk n done (`complete_chunk`) and only then asks for the job's next
    chunk (`dispatch` -> `next_chunk`). A worker that dies between the two leaves no trace of the
    next chunk anywhere: not in the broker, not in the live hash the reaper reads. Whatever the
    reaper does, some unfinished chunk must be back in flight once the dead worker's lease lapsed.
    """
    now = [1_000_000.0]
    store = JobStore(redis_client, retention_s=3600, clock=lambda: now[0])
    ops = [Operation(row=i + 2, user=f"user{i:03d}@contoso.example", remove=("efccb6f7-5641-4e0e-bd10-b4976e1bf68e",))
           for i in range(30)]
    store.stage("job1", "sim", ops, chunk_size=10)
    assert store.commit("job1", source="csv") == (30, 3)
    sent: list[int] = []
    assert dispatch(store, lambda _j, n, _c: sent.append(n), "job1", 1) == 1  # a window of one chunk
    assert store.claim_chunk("job1", 0, "dead-worker") == "ok"
    store.heartbeat("dead-worker", 20, ["job1:0"])
    store.record("job1", [UserResult(row=op.row, user=op.user, status=UserStatus.SUCCEEDED, attempts=1)
                          for op in store.load_chunk("job1", 0)])
    assert store.complete_chunk("job1", 0)[:3] == (True, 1, 3)
    # kill -9 here: `dispatch(...)` for the next chunk never runs. Then the lease lapses.
    redis_client.delete("bl:worker:dead-worker")
    now[0] += REQUEUE_QUEUED_AFTER_S_DEFAULT + 60
    requeued: list[int] = []
    for _ in range(3):  # a few reaper passes
        reap(store, lambda _j, n, _c: requeued.append(n), requeue_after_s=REQUEUE_QUEUED_AFTER_S_DEFAULT)
        now[0] += 10
    assert set(requeued) & {1, 2}, (
        "job stalled: chunk 0 done, chunks 1 and 2 never dispatched and invisible to the reaper "
        f"(live={redis_client.hgetall('bl:job:job1:live')}, pending={store.progress('job1').pending})")
