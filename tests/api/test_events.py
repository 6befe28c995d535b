"""GET /v1/jobs/{id}/events: progress as Server-Sent Events, resumable, scoped like the job itself."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.routes.events import Pacing, job_events, last_seen, pacing, sequence
from jobs.models import UserResult, UserStatus
from jobs.store import JobStore
from tests.api.helpers import ALL_KEY, OTHER_KEY, SIM_KEY, auth

THREE_USERS = "user,add\nada@contoso.example,EMS\ngrace@contoso.example,EMS\nlinus@contoso.example,EMS\n"
FAST = Pacing(poll_s=0.01, keepalive_s=0.05, max_stream_s=60.0, retry_ms=500)

Event = dict[str, Any]


@pytest.fixture
def fast(client: TestClient) -> TestClient:
    """The client, with streams that poll every 10 ms and send keep-alives after 50 ms of quiet."""
    client.app.dependency_overrides[pacing] = lambda: FAST  # type: ignore[attr-defined]
    return client


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, retention_s=3600)


def submit(client: TestClient, key: str = ALL_KEY) -> str:
    response = client.post("/v1/jobs?tenant=sim", content=THREE_USERS.encode(),
                           headers={**auth(key), "Content-Type": "text/csv"})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def result(row: int, status: UserStatus = UserStatus.SUCCEEDED) -> UserResult:
    return UserResult(row=row, user=f"user{row}@contoso.example", status=status,
                      reason="user_not_found" if status is UserStatus.FAILED else None, attempts=1, updated_at=1.0)


def frames(lines: Iterator[str]) -> Iterator[Event]:
    """The stream's frames as dicts: events with `id`, `event`, `data` (parsed), or `{"comment": ...}`."""
    fields: dict[str, Any] = {}
    for line in lines:
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line:
            name, _, value = line.partition(": ")
            fields[name] = value
        elif fields:
            if "data" in fields:
                fields["data"] = json.loads(fields["data"])
            yield fields
            fields = {}


def next_event(stream: Iterator[Event]) -> Event:
    """The next `progress` or `end` event, skipping keep-alives."""
    return next(f for f in stream if "event" in f)


def test_stream_sends_each_change_once_with_increasing_ids_then_end(fast: TestClient, store: JobStore) -> None:
    job_id = submit(fast)
    seen: list[Event] = []
    steps = [
        lambda: store.record(job_id, [result(2)]),
        lambda: store.bump(job_id, throttled=1),  # a 429 is a change too, without a result
        lambda: store.record(job_id, [result(3, UserStatus.FAILED)]),
        lambda: store.record(job_id, [result(4)]),
    ]
    with fast.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth()) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert "default-src 'self'" in response.headers["content-security-policy"]
        stream = frames(response.iter_lines())
        for step in [*steps, None]:
            seen.append(next_event(stream))
            if step is not None:
                # Polled again and again without a change: a keep-alive comes, not the same state twice.
                assert next(stream) == {"comment": "keep-alive"}
                step()
        final = next_event(stream)
        assert list(stream) == []  # closed after `end`

    assert [e["event"] for e in seen] == ["progress"] * 5
    assert [(e["data"]["status"], e["data"]["succeeded"], e["data"]["failed"], e["data"]["throttled"])
            for e in seen] == [("queued", 0, 0, 0), ("planning", 1, 0, 0), ("planning", 1, 0, 1),
                               ("planning", 1, 1, 1), ("completed_with_errors", 2, 1, 1)]
    ids = [int(e["id"]) for e in seen]
    assert ids == sorted(set(ids))  # strictly increasing
    assert final["event"] == "end" and final["data"]["status"] == "completed_with_errors"
    assert int(final["id"]) == ids[-1]
    assert seen[-1]["data"] == fast.get(f"/v1/jobs/{job_id}", headers=auth()).json() | {
        "rate_per_s": seen[-1]["data"]["rate_per_s"]}  # the same JSON as GET /v1/jobs/{id}


def test_last_event_id_resumes_without_repeating_what_was_seen(fast: TestClient, store: JobStore) -> None:
    job_id = submit(fast)
    store.record(job_id, [result(2)])
    with fast.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth()) as response:
        first = next_event(frames(response.iter_lines()))
    assert first["data"]["succeeded"] == 1

    resumed = {**auth(), "Last-Event-ID": first["id"]}
    with fast.stream("GET", f"/v1/jobs/{job_id}/events", headers=resumed) as response:
        stream = frames(response.iter_lines())
        # Polled and found nothing new: keep-alives only, the seen state is not sent again.
        assert next(stream) == {"retry": "500"}
        assert next(stream) == {"comment": "keep-alive"}
        store.record(job_id, [result(3)])
        again = next_event(stream)
    assert again["event"] == "progress" and again["data"]["succeeded"] == 2
    assert int(again["id"]) > int(first["id"])

    store.record(job_id, [result(4)])
    with fast.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth()) as response:
        fresh = [f for f in frames(response.iter_lines()) if "event" in f]
    assert [f["event"] for f in fresh] == ["progress", "end"]
    with fast.stream("GET", f"/v1/jobs/{job_id}/events",
                     headers={**auth(), "Last-Event-ID": fresh[0]["id"]}) as response:
        ended = [f for f in frames(response.iter_lines()) if "event" in f]
    assert [f["event"] for f in ended] == ["end"]  # nothing left to send but the end


def test_a_stream_of_an_unfinished_job_closes_after_its_time_to_be_resumed(client: TestClient) -> None:
    client.app.dependency_overrides[pacing] = lambda: Pacing(poll_s=0.01, keepalive_s=60.0,  # type: ignore[attr-defined]
                                                             max_stream_s=0.1)
    job_id = submit(client)
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth()) as response:
        got = list(frames(response.iter_lines()))
    assert [f.get("event") for f in got] == [None, "progress"]  # `retry:`, the state, then closed: no `end`


def test_events_are_scoped_like_the_job(fast: TestClient) -> None:
    job_id = submit(fast, key=SIM_KEY)
    assert fast.get(f"/v1/jobs/{job_id}/events", headers=auth(OTHER_KEY)).status_code == 404
    assert fast.get(f"/v1/jobs/{job_id}/events").status_code == 401
    assert fast.get(f"/v1/jobs/{job_id}/events", headers=auth("wrong-key-123")).status_code == 401
    assert fast.get(f"/v1/jobs/{0:032x}/events", headers=auth(SIM_KEY)).status_code == 404


class LeavingClient:
    """A request whose client disconnects after `polls` checks."""

    def __init__(self, polls: int) -> None:
        self.polls = polls

    async def is_disconnected(self) -> bool:
        self.polls -= 1
        return self.polls < 0


def test_a_stream_stops_when_its_client_leaves() -> None:
    reads: list[int] = []

    async def read() -> dict[str, Any]:
        reads.append(1)
        return {"status": "running", "succeeded": len(reads), "total": 10}

    async def collect() -> list[bytes]:
        return [chunk async for chunk in job_events(LeavingClient(3), read, -1, FAST)]  # type: ignore[arg-type]

    chunks = asyncio.run(collect())
    assert len(reads) == 3  # no read after the client left
    assert [c.split(b"\n")[1] for c in chunks[1:]] == [b"event: progress"] * 3


def test_a_stream_ends_when_the_job_expires() -> None:
    async def read() -> None:
        return None

    async def collect() -> list[bytes]:
        return [chunk async for chunk in job_events(LeavingClient(100), read, -1, FAST)]  # type: ignore[arg-type]

    assert asyncio.run(collect()) == [b"retry: 500\n\n"]


def test_sequence_grows_with_results_and_with_each_step_of_a_job() -> None:
    def job(status: str, **counts: int) -> dict[str, Any]:
        return {"status": status, **counts}

    life = [job("queued"), job("planning"), job("planning", unchanged=3),
            job("running", unchanged=3), job("running", unchanged=3, throttled=1),
            job("paused", unchanged=3, throttled=1), job("running", unchanged=3, throttled=1, succeeded=1),
            job("running", unchanged=3, throttled=1, succeeded=1, retries=1),
            job("completed_with_errors", unchanged=3, throttled=1, succeeded=1, retries=1, failed=1)]
    ids = [sequence(j) for j in life]
    assert ids == sorted(set(ids))


def test_last_event_id_that_is_not_ours_means_nothing_seen() -> None:
    assert [last_seen(v) for v in (None, "", "abc", "-3", "1.5", " 42 ")] == [-1, -1, -1, -1, -1, 42]
