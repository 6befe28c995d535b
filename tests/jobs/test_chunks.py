"""execute_chunk against a real Redis: completion with the next chunk sent, hand-back, unknown tenant, restart cap."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import pytest

from graphclient.client import GraphClient
from graphclient.retry import RetryPolicy
from jobs.chunks import execute_chunk
from jobs.events import JobEvent, Listeners
from jobs.executor import ChunkDeps
from jobs.lifecycle import ClaimResult
from jobs.models import Reason, UserResult, UserStatus
from jobs.scheduler import reap
from jobs.store import JobStore
from tests.fakes import FakeClock, RecordingSleep, RecordingThrottle
from tests.jobs.helpers import UNLICENSED, Ctx, dispatched_job, results


def graph_answering(reply: Callable[[dict[str, object]], dict[str, object]]) -> GraphClient:
    """A GraphClient whose `$batch` items are answered by `reply(item)`."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":  # a single read: a user with a usage location and no license
            return httpx.Response(200, json={"usageLocation": "US", "assignedLicenses": []})
        items = json.loads(request.content)["requests"]
        return httpx.Response(200, json={"responses": [{"id": item["id"], **reply(item)} for item in items]})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return GraphClient(http, base_url="https://graph.test", throttle=RecordingThrottle(), timeout_s=5)


def deps(store: JobStore, graph: GraphClient, clock: FakeClock) -> ChunkDeps:
    policy = RetryPolicy(max_attempts=4, max_total_s=3600, backoff_base_s=1, backoff_max_s=8, max_inline_wait_s=30)
    return ChunkDeps(store=store, graph=graph, policy=policy, batch_size=20, request_deadline_s=60, clock=clock,
                     sleep=RecordingSleep(clock), rng=random.Random(1))


def test_a_finished_chunk_is_completed_and_the_next_one_sent(store: JobStore, clock: FakeClock) -> None:
    job_id = dispatched_job(store)
    graph = graph_answering(lambda item: {"status": 200, "body": UNLICENSED if item["method"] == "GET" else {}})
    ctx = Ctx(store, lambda tenant: deps(store, graph, clock))
    assert execute_chunk(ctx, job_id, 0, clock=clock) == "done"
    assert {u: r.status for u, r in results(store, job_id).items()} == dict.fromkeys(
        ["u0@x", "u1@x"], UserStatus.SUCCEEDED)
    assert ctx.sent == [(job_id, 1, 0.0, None)]  # the job's next chunk, with a fresh budget
    assert ctx.asked_for == ["sim"]
    assert execute_chunk(ctx, job_id, 0, clock=clock) == "skipped:done"  # a redelivery does nothing
    assert ctx.running == set()


def test_a_worker_without_a_heartbeat_keeps_the_chunk_it_claims(store: JobStore, clock: FakeClock) -> None:
    """After a failover the new primary may hold no heartbeat of a worker: its new claim is not an orphan."""
    job_id = dispatched_job(store)
    seen: list[tuple[int, ClaimResult]] = []  # while chunk 0 runs: chunks a reaper requeued, a second claim

    def reply(item: dict[str, object]) -> dict[str, object]:
        if not seen:
            requeued = reap(store, lambda *a: None, requeue_after_s=45)
            seen.append((requeued, store.claim_chunk(job_id, 0, "w2")))
        return {"status": 200, "body": UNLICENSED if item["method"] == "GET" else {}}

    ctx = Ctx(store, lambda tenant: deps(store, graph_answering(reply), clock))
    assert not store.redis.exists(f"bl:worker:{ctx.worker_id}")  # no heartbeat yet on this primary
    assert execute_chunk(ctx, job_id, 0, clock=clock) == "done"
    assert seen == [(0, ClaimResult.BUSY)]  # one runner only: no requeue, no second claim


@pytest.mark.parametrize("other_run", [True, False])
def test_a_run_whose_claim_was_lost_writes_nothing(store: JobStore, clock: FakeClock, other_run: bool) -> None:
    """The claim is lost with a failed-over primary while the users are read: no write goes out from this run."""
    job_id = dispatched_job(store)
    methods: list[object] = []

    def reply(item: dict[str, object]) -> dict[str, object]:
        if not methods:
            store.redis.hdel(f"bl:job:{job_id}:live", "0")
            if other_run:  # the chunk's message came again and another worker runs it
                assert store.claim_chunk(job_id, 0, "w2", alive_for_s=20) is ClaimResult.OK
        methods.append(item["method"])
        return {"status": 200, "body": UNLICENSED if item["method"] == "GET" else {}}

    ctx = Ctx(store, lambda tenant: deps(store, graph_answering(reply), clock))
    outcome = execute_chunk(ctx, job_id, 0, clock=clock)
    assert set(methods) == {"GET"}  # read, never written
    assert store.attempts(job_id, [2, 3]) == {}
    if other_run:
        assert (outcome, ctx.sent) == ("skipped:busy", [])
    else:  # nobody holds it: sent again, to be read afresh
        assert (outcome, ctx.sent) == ("handed_back", [(job_id, 0, 0.0, ctx.sent[0][3])])


def test_a_chunk_that_must_wait_long_is_handed_back_with_its_budget(store: JobStore, clock: FakeClock) -> None:
    job_id = dispatched_job(store)
    throttled = {"status": 429, "headers": {"Retry-After": "300"},
                 "body": {"error": {"code": "TooManyRequests", "message": "slow down"}}}
    ctx = Ctx(store, lambda tenant: deps(store, graph_answering(lambda item: throttled), clock))
    store.heartbeat(ctx.worker_id, 20, [f"{job_id}:0"])
    budget_started_at = clock() - 100  # a run before this one started the retry budget

    assert execute_chunk(ctx, job_id, 0, budget_started_at, clock=clock) == "handed_back"

    # Sent again after the longest countdown a message may wait, keeping the budget's start.
    assert ctx.sent == [(job_id, 0, 60.0, budget_started_at)]
    assert results(store, job_id) == {}  # both users still pending
    progress = store.progress(job_id)
    assert progress is not None
    assert (progress.chunks_done, progress.pending, progress.throttled) == (0, 4, 2)
    # Released, not completed: another worker may claim it although its last runner is alive.
    assert store.claim_chunk(job_id, 0, "w2") == "ok"
    assert ctx.running == set()


def test_an_unknown_tenant_fails_the_chunks_pending_users(store: JobStore, clock: FakeClock) -> None:
    job_id = dispatched_job(store, tenant="gone")

    def unknown(tenant: str) -> ChunkDeps:
        raise KeyError(tenant)

    ctx = Ctx(store, unknown)
    # One user already ended before (an earlier run): its result stays as it was.
    store.record_results(job_id, [UserResult(row=2, user="u0@x", status=UserStatus.SUCCEEDED, updated_at=clock())])

    assert execute_chunk(ctx, job_id, 0, clock=clock) == "done"

    got = results(store, job_id)
    assert got["u0@x"].status is UserStatus.SUCCEEDED
    assert (got["u1@x"].status, got["u1@x"].reason) == (UserStatus.FAILED, Reason.TENANT_NOT_CONFIGURED)
    assert got["u1@x"].graph_message == "tenant profile 'gone' is not configured on this worker"
    assert ctx.asked_for == ["gone"]
    assert ctx.sent == [(job_id, 1, 0.0, None)]  # the job goes on; its other chunks fail the same way
    stored = json.loads(store.redis.hget(f"bl:job:{job_id}:res", "3"))
    assert stored["reason"] == "tenant_not_configured"


class Heard:
    """A job listener recording the events it hears."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, JobEvent, dict[str, Any]]] = []

    def job_event(self, job_id: str, tenant: str, event: JobEvent, details: Mapping[str, Any]) -> None:
        self.events.append((job_id, tenant, event, dict(details)))

    def users_finished(self, job_id: str, tenant: str, results: Sequence[UserResult]) -> None:
        pass


def test_a_job_whose_tenant_is_not_configured_still_ends_with_its_event(store: JobStore, clock: FakeClock) -> None:
    # Its audit trail and its callbacks learn that it ended (failed), like any other job's.
    job_id = dispatched_job(store, users=2, chunk_size=2, tenant="gone")

    def unknown(tenant: str) -> ChunkDeps:
        raise KeyError(tenant)

    heard = Heard()
    ctx = Ctx(store, unknown, events=Listeners([heard]))
    assert execute_chunk(ctx, job_id, 0, clock=clock) == "done"
    ((heard_job, tenant, event, details),) = heard.events
    assert (heard_job, tenant, event) == (job_id, "gone", JobEvent.FINISHED)
    assert (details["status"], details["failed"], details["total"]) == ("completed_with_errors", 2, 2)


def test_a_chunk_that_keeps_dying_fails_its_users_instead_of_looping(store: JobStore, clock: FakeClock) -> None:
    job_id = dispatched_job(store)
    crashes = []

    def crash(tenant: str) -> ChunkDeps:
        crashes.append(tenant)
        raise RuntimeError("the worker dies while running this chunk")

    ctx = Ctx(store, crash)
    for _ in range(3):  # each run dies (the reaper would requeue it)
        with pytest.raises(RuntimeError):
            execute_chunk(ctx, job_id, 0, clock=clock)
    assert len(crashes) == 3
    assert execute_chunk(ctx, job_id, 0, clock=clock) == "done"  # the fourth start gives up on the chunk
    assert len(crashes) == 3
    got = results(store, job_id)
    assert {r.reason for r in got.values()} == {Reason.CHUNK_FAILED_REPEATEDLY}
    assert set(got) == {"u0@x", "u1@x"}
    assert ctx.sent == [(job_id, 1, 0.0, None)]  # the job goes on with its next chunk
    assert ctx.running == set()
