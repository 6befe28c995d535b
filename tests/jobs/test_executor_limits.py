"""Two bounds on a chunk's run, against a fake Graph (MockTransport) and the real Redis store.

- A write round a Redis replica did not confirm (the store's gate says UNREPLICATED) is not sent
  and costs the users nothing; it goes again a moment later.
- A chunk that has run `max_run_s` hands itself back between two rounds, so that no broker message
  is held longer than that and one round (RabbitMQ's consumer_timeout).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import redis

from graphclient.client import GraphClient
from graphclient.retry import RetryPolicy
from jobs.executor import UNREPLICATED_RETRY_S, ChunkDeps, HandBack, run_users
from jobs.models import LicenseAdd, Operation, UserStatus
from jobs.store import JobStore, WriteGate
from tests.fakes import FakeClock, RecordingSleep, RecordingThrottle

EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"


class Directory:
    """A Graph of users without licenses: GET a user, POST assignLicense, in `$batch`; each call takes `call_s`."""

    def __init__(self, upns: Sequence[str], clock: FakeClock, call_s: float = 0.0) -> None:
        self.licenses: dict[str, list[str]] = {u: [] for u in upns}
        self.writes: list[str] = []
        self.clock = clock
        self.call_s = call_s

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.clock.advance(self.call_s)
        items = json.loads(request.content)["requests"] if request.url.path.endswith("/$batch") else [
            {"id": "1", "method": request.method, "url": request.url.path.split("/v1.0", 1)[1],
             "body": json.loads(request.content) if request.content else None}]
        responses = [self.item(item) for item in items]
        if not request.url.path.endswith("/$batch"):
            return httpx.Response(responses[0]["status"], json=responses[0]["body"])
        return httpx.Response(200, json={"responses": responses})

    def item(self, item: dict[str, Any]) -> dict[str, Any]:
        user = unquote(item["url"].split("/users/", 1)[1].split("/")[0].split("?")[0])
        if item["method"] == "POST":
            self.writes.append(user)
            self.licenses[user] = [a["skuId"] for a in item["body"]["addLicenses"]]
        state = {"userPrincipalName": user, "usageLocation": "US",
                 "assignedLicenses": [{"skuId": s, "disabledPlans": []} for s in self.licenses[user]]}
        return {"id": item["id"], "status": 200, "headers": {}, "body": state}


class HeldBackStore(JobStore):
    """The real store, whose write gate answers UNREPLICATED the first `held` times (a replica lagging)."""

    def __init__(self, client: redis.Redis, clock: FakeClock, held: int) -> None:
        super().__init__(client, retention_s=3600, clock=clock)
        self.held = held

    def begin_writes(self, job_id: str, batch_id: str, deadline: float, rows: Sequence[int]) -> WriteGate:
        if self.held > 0:
            self.held -= 1
            return WriteGate.UNREPLICATED
        return super().begin_writes(job_id, batch_id, deadline, rows)


def deps_for(store: JobStore, graph: Directory, clock: FakeClock, **changes: Any) -> tuple[ChunkDeps, RecordingSleep]:
    sleep = RecordingSleep(clock)
    client = GraphClient(httpx.Client(transport=httpx.MockTransport(graph)), base_url="https://graph.test",
                         throttle=RecordingThrottle(), timeout_s=5)
    policy = RetryPolicy(max_attempts=4, max_total_s=3600, backoff_base_s=1, backoff_max_s=8, max_inline_wait_s=30)
    deps = ChunkDeps(store=store, graph=client, policy=policy, batch_size=5, request_deadline_s=60, clock=clock,
                     sleep=sleep, rng=random.Random(1), read_parallelism=1, **changes)
    return deps, sleep


def job(store: JobStore, upns: Sequence[str]) -> str:
    ops = [Operation(row=i + 2, user=u, add=(LicenseAdd(EMS, ()),)) for i, u in enumerate(upns)]
    store.stage("job", "sim", ops, 100)
    store.commit("job", source="csv")
    return "job"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_round_no_replica_confirmed_is_not_sent_and_costs_nothing(redis_client: redis.Redis,
                                                                     clock: FakeClock) -> None:
    upns = [f"u{i}@x" for i in range(3)]
    store = HeldBackStore(redis_client, clock, held=2)
    graph = Directory(upns, clock)
    deps, sleep = deps_for(store, graph, clock)
    job_id = job(store, upns)
    assert run_users(deps, job_id, 0, budget_started_at=clock()) == 3
    results = {op.user: res for op, res in store.iter_results(job_id) if res is not None}
    assert {u: (r.status, r.attempts) for u, r in results.items()} == dict.fromkeys(upns, (UserStatus.SUCCEEDED, 2))
    assert graph.writes == upns  # one write each, sent once the gate opened
    assert sleep.intervals == [UNREPLICATED_RETRY_S] * 2  # held back twice, a second each, inline
    assert store.held == 0


def test_a_chunk_that_ran_long_enough_hands_itself_back_between_rounds(redis_client: redis.Redis,
                                                                       clock: FakeClock) -> None:
    upns = [f"u{i}@x" for i in range(20)]
    store = JobStore(redis_client, retention_s=3600, clock=clock)
    graph = Directory(upns, clock, call_s=40.0)  # each round takes 40 s
    deps, _ = deps_for(store, graph, clock, max_run_s=100.0)
    job_id = job(store, upns)
    with pytest.raises(HandBack) as raised:
        run_users(deps, job_id, 0, budget_started_at=clock())
    assert raised.value.countdown_s == 0.0  # back in the queue at once, behind the others
    done = sum(1 for _, res in store.iter_results(job_id) if res is not None)
    assert 0 < done < len(upns)
    assert len(graph.writes) == done  # it stopped between rounds: nothing sent and left unrecorded
    # The next run takes the rest (every user once).
    deps, _ = deps_for(store, graph, clock, max_run_s=1000.0)
    run_users(deps, job_id, 0, budget_started_at=clock())
    assert sorted(graph.writes) == sorted(upns)
