"""A parked chunk keeps the retry budget it used: the time its job stood paused is not charged to it."""

from __future__ import annotations

import json
import random

import httpx
import redis

from graphclient.client import GraphClient
from graphclient.retry import RetryPolicy
from jobs.chunks import execute_chunk
from jobs.executor import ChunkDeps
from jobs.models import Reason
from jobs.store import JobStore
from tests.fakes import FakeClock, RecordingSleep, RecordingThrottle
from tests.jobs.helpers import UNLICENSED, Ctx, dispatched_job, results

DENIED = {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges."}}
UNAVAILABLE = {"error": {"code": "serviceNotAvailable", "message": "try later"}}


class Graph:
    """Reads answer an unlicensed user; writes, single or in a `$batch`, get `write_reply` (status, body)."""

    def __init__(self) -> None:
        self.write_reply: tuple[int, dict[str, object]] = (200, {})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=UNLICENSED)
        if not request.url.path.endswith("/$batch"):
            status, body = self.write_reply
            return httpx.Response(status, json=body)
        out = []
        for item in json.loads(request.content)["requests"]:
            status, body = (200, UNLICENSED) if item["method"] == "GET" else self.write_reply
            out.append({"id": item["id"], "status": status, "body": body})
        return httpx.Response(200, json={"responses": out})


def test_a_parked_chunk_keeps_the_budget_it_used_and_the_pause_is_not_charged(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    store = JobStore(redis_client, retention_s=3600, clock=clock)
    job_id = dispatched_job(store)
    graph = Graph()
    graph.write_reply = (403, DENIED)
    http = httpx.Client(transport=httpx.MockTransport(graph))
    sleep = RecordingSleep(clock)
    deps = ChunkDeps(store=store, graph=GraphClient(http, base_url="https://graph.test", throttle=RecordingThrottle(),
                                                    timeout_s=5),
                     policy=RetryPolicy(max_attempts=100, max_total_s=60, backoff_base_s=1, backoff_max_s=8,
                                        max_inline_wait_s=30),
                     batch_size=20, request_deadline_s=60, clock=clock, sleep=sleep, rng=random.Random(1))
    ctx = Ctx(store, lambda tenant: deps)

    # 40 s of its retry budget used by earlier runs, then the app is denied: the job pauses.
    assert execute_chunk(ctx, job_id, 0, clock() - 40, clock=clock) == "parked"
    assert store.job_fields(job_id, "paused_reason") == {"paused_reason": "forbidden"}
    clock.advance(10_000)  # paused for hours
    assert store.resume(job_id) == [0]
    graph.write_reply = (503, UNAVAILABLE)  # after the resume, every write fails with 503
    assert execute_chunk(ctx, job_id, 0, clock=clock) == "done"  # sent by the resume, without a budget

    got = results(store, job_id)
    assert {r.reason for r in got.values()} == {Reason.RETRIES_EXHAUSTED}
    # They retried for the 20 s left of the 60 s budget: not 0 (the pause charged), nor 60 (a fresh budget).
    assert 20 <= sum(sleep.intervals) < 28, sleep.intervals
    assert store.take_budget(job_id, 0) is None  # taken by the run after the resume
