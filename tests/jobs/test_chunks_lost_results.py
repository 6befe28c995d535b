"""A chunk whose recorded results Redis lost while it ran (a failover) is not marked done: it runs again.

Redis replicates asynchronously: a chunk run that spans a failover may have recorded some users on
the old primary only, then go on against the new one. Marking it done there would leave those
users pending for ever. The completion checks every user of the chunk has a result; if one has
none, the chunk is released and sent again, and its next run reads those users and records them.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from jobs.chunks import execute_chunk
from jobs.lifecycle import ChunkOutcome
from jobs.models import UserStatus
from jobs.store import JobStore
from tests.fakes import FakeClock, Tenant
from tests.jobs.helpers import EMS, Ctx, job, make_deps, op, results, user


class FailingOverStore(JobStore):
    """The real store; the first completion finds one result gone, as a failover would leave it."""

    def __init__(self, client: redis.Redis, clock: FakeClock) -> None:
        super().__init__(client, retention_s=3600, clock=clock)
        self.failed_over = False

    def complete_chunk(self, job_id: str, n: int,
                       rows: Sequence[int] = ()) -> tuple[bool, int, int, int | None] | None:
        if not self.failed_over:
            self.failed_over = True
            self.redis.hdel(f"bl:job:{job_id}:res", "3")  # recorded on the old primary only
            self.redis.hincrby(f"bl:job:{job_id}", "succeeded", -1)
        return super().complete_chunk(job_id, n, rows)


def test_a_chunk_missing_a_result_runs_again_and_the_user_is_read_back_not_written_twice(
        redis_client: redis.Redis, clock: FakeClock) -> None:
    store = FailingOverStore(redis_client, clock)
    tenant = Tenant({"a@x": user(), "b@x": user()})
    deps, _ = make_deps(store, tenant, clock)
    job_id = job(store, [op(2, "a@x", add=(EMS,)), op(3, "b@x", add=(EMS,))])
    assert store.next_chunk(job_id) == 0
    ctx = Ctx(store, lambda tenant_name: deps)
    assert execute_chunk(ctx, job_id, 0, clock=clock) is ChunkOutcome.INCOMPLETE
    assert ctx.sent == [(job_id, 0, 0.0, None)]  # sent again at once
    assert redis_client.hget(f"bl:job:{job_id}:live", "0").startswith(b"q:")  # queued, not done
    assert not redis_client.getbit(f"bl:job:{job_id}:done", 0)

    assert execute_chunk(ctx, job_id, 0, clock=clock) is ChunkOutcome.DONE
    got = results(store, job_id)
    assert {u: r.status for u, r in got.items()} == {"a@x": UserStatus.SUCCEEDED, "b@x": UserStatus.SUCCEEDED}
    assert got["b@x"].detail == "already in the requested state"  # read back, not written again
    assert tenant.writes == [("POST", "a@x"), ("POST", "b@x")]
    progress = store.progress(job_id)
    assert progress is not None and (progress.succeeded, progress.pending) == (2, 0)
