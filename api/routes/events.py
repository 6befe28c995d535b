"""A job's progress as Server-Sent Events: one `progress` event per change, a final `end`, keep-alives."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.context import ApiContext
from api.deps import Authenticated, Context, ScopedJob, VisibleJob
from api.lanes import KeyGate
from api.plan_view import job_json
from api.schemas import error_responses
from jobs.counters import JOB_COUNTERS
from jobs.models import TERMINAL_JOB_STATUSES, JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

# Each status's place in a job's life (a dry run ends `planned`, a terminal status; running it
# starts a new job); a status not listed counts as running.
STAGES = {JobStatus.QUEUED.value: 0, JobStatus.PLANNING.value: 1, JobStatus.RUNNING.value: 2,
          JobStatus.PAUSED.value: 3, JobStatus.SCHEDULED.value: 4}
TERMINAL_STAGE = 5
STAGE_SLOTS = 8  # > every stage, so one more counted result outranks any status change
TERMINAL = frozenset(status.value for status in TERMINAL_JOB_STATUSES)
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True)
class Pacing:
    """How a stream polls the job and keeps the connection alive."""

    poll_s: float = 0.25  # one O(1) progress read per poll, so at most 4 events a second
    keepalive_s: float = 15.0  # a comment line after this long without an event, for proxies
    # Then the stream ends and the client reconnects with Last-Event-ID: a server shutting down waits
    # for open responses, so no stream may hold it up for longer than this.
    max_stream_s: float = 30.0
    retry_ms: int = 2000  # the reconnect delay suggested to clients


def pacing() -> Pacing:
    """The streams' pacing (tests override this dependency)."""
    return Pacing()


def sequence(job: Mapping[str, Any]) -> int:
    """The event id of a job state: grows with every counted result and every step of its life.

    Derived from the state alone, so any API process gives the same id to the same state and a
    reconnect with `Last-Event-ID` skips what the client has seen.
    """
    counted = sum(int(job.get(name) or 0) for name in JOB_COUNTERS)  # none of them ever goes down
    status = str(job.get("status"))
    stage = TERMINAL_STAGE if status in TERMINAL else STAGES.get(status, STAGES[JobStatus.RUNNING.value])
    return counted * STAGE_SLOTS + stage


def last_seen(header: str | None) -> int:
    """The `Last-Event-ID` a client resumes from; -1 (nothing seen) when absent or not ours."""
    value = (header or "").strip()
    # ASCII digits only: "²" and other Unicode digits pass isdigit() but not int().
    return int(value) if value.isascii() and value.isdigit() else -1


def frame(event: str, event_id: int, job: Mapping[str, Any]) -> bytes:
    """One SSE event: id, type and the job JSON on one data line."""
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(job, separators=(',', ':'))}\n\n".encode()


async def job_events(request: Request, read: Callable[[], Awaitable[dict[str, Any] | None]], seen: int,
                     pace: Pacing, gate: KeyGate | None = None, key: str = "") -> AsyncIterator[bytes]:
    """Progress events while the job changes, `end` once it is terminal; stops when the client leaves.

    With a gate, the stream counts as one of the key's open streams while it runs.
    """
    with gate.hold(key) if gate is not None else contextlib.nullcontext():
        async for event in _events(request, read, seen, pace):
            yield event


async def _events(request: Request, read: Callable[[], Awaitable[dict[str, Any] | None]], seen: int,
                  pace: Pacing) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    started = quiet_since = loop.time()
    yield f"retry: {pace.retry_ms}\n\n".encode()
    while not await request.is_disconnected():
        try:
            job = await read()
        except redis.RedisError:
            return  # the client reconnects and resumes from its last event
        if job is None:
            return  # the job expired meanwhile: a reconnect gets the 404
        now = loop.time()
        seq = sequence(job)
        if seq > seen:
            yield frame("progress", seq, job)
            seen, quiet_since = seq, now
        if job.get("status") in TERMINAL:
            yield frame("end", seen, job)
            return
        if now - quiet_since >= pace.keepalive_s:
            yield b": keep-alive\n\n"
            quiet_since = now
        if now - started >= pace.max_stream_s:
            return
        await asyncio.sleep(pace.poll_s)


def progress_reader(context: ApiContext, job: VisibleJob) -> Callable[[], Awaitable[dict[str, Any] | None]]:
    """Reads the job as GET /v1/jobs/{id} answers it, off the event loop."""

    def read() -> dict[str, Any] | None:
        progress = context.store.progress(job.id, ceiling_rate_per_s=context.ceiling_for(job.tenant))
        return None if progress is None else job_json(progress, context)

    return lambda: run_in_threadpool(read)


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`progress` events (the job JSON) on change, then `end`"},
                       **error_responses(401, 404, 429)})
async def events(
    request: Request, job: ScopedJob, context: Context, who: Authenticated, pace: Annotated[Pacing, Depends(pacing)],
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> StreamingResponse:
    """The job's progress as Server-Sent Events; `Last-Event-ID` resumes without repeating a seen state.

    `429` when the API key has `BULKLICENSE_API_EVENT_STREAMS_PER_KEY` streams open already.
    """
    gate = context.lanes.streams_per_key
    with gate.hold(who.name):  # refused now (429) rather than once the response has started
        pass
    stream = job_events(request, progress_reader(context, job), last_seen(last_event_id), pace, gate, who.name)
    return StreamingResponse(stream, media_type="text/event-stream", headers=STREAM_HEADERS)
