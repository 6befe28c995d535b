"""The job and result store in Redis: staging, chunks, atomic result accounting, leases, progress.

Keys (all under `bl:`; every job key expires after the retention period):

    bl:job:{id}            hash   the job record (jobs.record.JobRecord): its spec, counters (jobs.counters),
                                  pause fields, links, `allowed:<step>` once Graph let the app read/patch/assign
    bl:job:{id}:ops:{n}    string chunk n's operations, JSON list
    bl:job:{id}:res        hash   row -> terminal result JSON (written once: HSETNX)
    bl:job:{id}:att        hash   row -> write attempts sent so far (marks ambiguous users after a crash)
    bl:job:{id}:done       bitmap chunk n finished
    bl:job:{id}:live       hash   chunk n -> its live state (jobs.lifecycle.LiveChunk): "q:<due ts>" (queued),
                                  "r:<worker id>:<claim ts>" (running) or "p:<ts>" (parked while paused)
    bl:job:{id}:inflight   zset   write batches in flight -> deadline (cancel waits for them)
    bl:job:{id}:runs       hash   chunk n -> how many times it was started
    bl:job:{id}:budget     hash   chunk n -> retry budget (s) it had used when it was parked
    bl:job:{id}:before     hash   row -> the user's state when planned (kept once, whatever the restarts)
    bl:job:{id}:plan       hash   the plan counters (jobs.counters.PlanCounters): planned, changes, unchanged,
                                  fail:<reason>, warn:may_conflict, need:<skuId>, release:<skuId>
    bl:job:{id}:prefetched hash   lower-cased id or UPN -> user state JSON, for a dry run that paged the tenant
                                  (or a job built from a scan of it: jobs.scan_jobs)
    bl:job:{id}:notfound   hash   "<row>:first" / "<row>:count": a user's "does not exist (yet)" answers
    bl:job:{id}:waiting    set    rows waiting for the directory to replicate them
    bl:job:{id}:seats      hash   skuId -> seats the job still holds (jobs.seats)
    bl:job:{id}:days       hash   a held day's first chunk -> its next chunk to send (jobs.schedule)
    bl:seats:{tenant}      set    jobs holding seat reservations in the tenant (jobs.seats)
    bl:paused              set    paused jobs (the resumer's work list)
    bl:job:{id}:sec:{t}    int    results recorded in second t (current rate)
    bl:jobs                zset   job id -> created_at (recent jobs)
    bl:active              set    jobs with unfinished chunks (the reaper's work list)
    bl:worker:{id}         string a live worker's heartbeat: {"ts", "running": ["job:n", ...]}, expires
                                  after the lease TTL

Steps that read and write several keys at once run as Lua scripts (jobs/lua/*.lua), so each is atomic.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

import redis
from redis.client import Pipeline

from jobs.counters import USER_COUNTERS, PlanCounters
from jobs.lifecycle import ClaimResult, LiveChunk, Phase, running_prefix
from jobs.models import JobStatus, Operation, PauseReason, UserResult
from jobs.progress import RATE_WINDOW_S, JobProgress, job_progress, job_status
from jobs.record import Approval, JobRecord, JobSpec, JobState, Prefetch, committed, decode_hash
from jobs.scripts import lua_script

STAGING_TTL_S = 3600
# Users whose operations and results a reader of a whole job (results, failed rows, a rollback's
# plan) holds at once: one page, read in two round trips.
RESULT_PAGE_ROWS = 1_000
# How long the number of Redis replicas online is taken as known before it is asked again.
REPLICAS_RECHECK_S = 5.0


class WriteGate(Enum):
    """Whether a write batch may go out (FIRST: yes, and it is the job's first write)."""

    OPEN = "open"
    FIRST = "first"
    CANCELLED = "cancelled"
    PAUSED = "paused"
    # Not registered: a connected Redis replica did not confirm what the job recorded in time.
    UNREPLICATED = "unreplicated"
    # Not registered: the chunk is no longer claimed by the run (another run may hold it).
    NOT_CLAIMED = "not_claimed"


@dataclass(frozen=True)
class ChunkView:
    """What running chunk n needs from the store, read in one step (`JobStore.chunk_view`)."""

    job_id: str
    n: int
    record: JobRecord | None  # None: the job is gone (expired) or was never committed
    ops: tuple[Operation, ...]
    done_rows: frozenset[int]  # rows with a terminal result already
    befores: Mapping[int, dict[str, Any] | None]  # row -> state when planned, for rows planned before
    attempts: Mapping[int, int]  # row -> write attempts already sent (by any worker, before any crash)
    runs: int = 0  # starts of the chunk, this one included (when counted)
    budget_used_s: float | None = None  # retry budget used when it was parked (when taken)

    @property
    def pending(self) -> list[Operation]:
        """The operations whose user has no terminal result yet."""
        return [op for op in self.ops if op.row not in self.done_rows]


@dataclass(frozen=True)
class Orphan:
    """A chunk the reaper should requeue: its number and the live state it was seen in."""

    n: int
    seen: str  # the stored live state, compared before the requeue
    state: LiveChunk


class ReplicaLagging(Exception):
    """A write that must survive a failover was not confirmed by the Redis replicas in time."""


def _gate(verdict: int) -> WriteGate:
    """What begin_writes.lua answered."""
    return {2: WriteGate.FIRST, 1: WriteGate.OPEN, 0: WriteGate.CANCELLED,
            -2: WriteGate.NOT_CLAIMED}.get(verdict, WriteGate.PAUSED)


def claim_value(worker_id: str, at_s: float) -> str:
    """A chunk's live state while the claim `worker_id` made at `at_s` holds it (jobs/lua/claim_chunk.lua)."""
    return f"{running_prefix(worker_id)}{at_s!r}"


def new_job_id() -> str:
    """A fresh, unguessable job id."""
    return uuid.uuid4().hex


class JobStore:
    """Every Redis read and write of the job domain goes through here."""

    def __init__(self, client: redis.Redis, *, retention_s: int, clock: Callable[[], float] = time.time,
                 wait_replicas: int = 0, wait_timeout_s: float = 1.0) -> None:
        self.redis = client
        self.retention_s = retention_s
        self.clock = clock
        # Replicas a write batch waits for before it may go out (Redis WAIT); 0: none.
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = max(1, int(wait_timeout_s * 1000))
        self._replicas_seen: tuple[float, int] | None = None  # (monotonic time, replicas online then)
        self._record_results = lua_script(client, "record")
        self._claim = lua_script(client, "claim_chunk")
        self._chunk_view = lua_script(client, "chunk_view")
        self._complete = lua_script(client, "complete_chunk")
        self._next_chunk = lua_script(client, "next_chunk")
        self._next_of_day = lua_script(client, "next_of_day")
        self._cas_live = lua_script(client, "cas_live")
        self._release = lua_script(client, "release_chunk")
        self._bump = lua_script(client, "bump")
        self._begin_writes = lua_script(client, "begin_writes")
        self._save_plans = lua_script(client, "save_plans")
        self._park = lua_script(client, "park_chunk")
        self._pause = lua_script(client, "pause")
        self._resume = lua_script(client, "resume")
        self._finish_scan = lua_script(client, "finish_scan")

    # --- keys -------------------------------------------------------------------------------
    @staticmethod
    def _job_key(job_id: str) -> str:
        """The job's record hash."""
        return f"bl:job:{job_id}"

    @staticmethod
    def _subkey(job_id: str, suffix: str) -> str:
        """One of the job's other keys (`bl:job:{id}:res`, `...:ops:{n}`, ...)."""
        return f"bl:job:{job_id}:{suffix}"

    # --- submission ---------------------------------------------------------------------------
    def stage(self, job_id: str, tenant: str, operations: Iterable[Operation], chunk_size: int,
              cuts: list[tuple[float | None, int, int]] | None = None) -> int:
        """Write operations as chunks under a staging record; returns how many were written.

        Staged keys expire quickly unless `commit` is called, so a submission that is refused or
        whose API process dies leaves nothing behind. A chunk holds rows of one due time (an
        operation's `due_at`, jobs.schedule): `cuts` gets `(due_at, first chunk, chunks)` per due time.
        """
        self.redis.hset(
            self._job_key(job_id),
            mapping={"id": job_id, "tenant": tenant, "state": JobState.STAGING.value, "created_at": self.clock()},
        )
        self.redis.expire(self._job_key(job_id), STAGING_TTL_S)
        total = 0
        chunk: list[str] = []
        n = 0
        pipe = self.redis.pipeline(transaction=False)
        groups: list[tuple[float | None, int, int]] = []
        for op in operations:
            if chunk and op.due_at != groups[-1][0]:  # a new due time starts a new chunk
                pipe.set(self._subkey(job_id, f"ops:{n}"), "[" + ",".join(chunk) + "]", ex=STAGING_TTL_S)
                n += 1
                chunk = []
            if not groups or op.due_at != groups[-1][0]:
                groups.append((op.due_at, n, 0))
            chunk.append(op.dumps())
            total += 1
            if len(chunk) >= chunk_size:
                pipe.set(self._subkey(job_id, f"ops:{n}"), "[" + ",".join(chunk) + "]", ex=STAGING_TTL_S)
                n += 1
                chunk = []
                if n % 50 == 0:
                    pipe.execute()
        if chunk:
            pipe.set(self._subkey(job_id, f"ops:{n}"), "[" + ",".join(chunk) + "]", ex=STAGING_TTL_S)
            n += 1
        if cuts is not None and groups:
            ends = [g[1] for g in groups[1:]] + [n]
            cuts.extend((due, first, end - first) for (due, first, _), end in zip(groups, ends, strict=True))
        pipe.hset(self._job_key(job_id), mapping={"staged_chunks": n, "staged_total": total})
        pipe.execute()
        return total

    def stage_scan(self, job_id: str, tenant: str) -> None:
        """Stage a job built from a scan of the tenant: one empty chunk, the scan's, until the scan adds the rest."""
        self.stage(job_id, tenant, (), 1)
        self.redis.hset(self._job_key(job_id), "staged_chunks", 1)

    def save_scanned(self, job_id: str, operations: Iterable[Operation], chunk_size: int) -> tuple[int, int]:
        """Write a scan's operations as the job's chunks after the scan's own (chunk 0); returns (total, chunks).

        Not yet counted in the job: `finish_scan` does that, so a scan run again overwrites them.
        """
        total, n, chunk = 0, 1, []
        pipe = self.redis.pipeline(transaction=False)
        for op in operations:
            chunk.append(op.dumps())
            total += 1
            if len(chunk) >= chunk_size:
                pipe.set(self._subkey(job_id, f"ops:{n}"), "[" + ",".join(chunk) + "]", ex=self.retention_s)
                n, chunk = n + 1, []
                if n % 50 == 0:
                    pipe.execute()
        if chunk:
            pipe.set(self._subkey(job_id, f"ops:{n}"), "[" + ",".join(chunk) + "]", ex=self.retention_s)
            n += 1
        pipe.execute()
        return total, n

    def finish_scan(self, job_id: str, total: int, chunks: int, outcome: str, warnings: Sequence[str],
                    summary: Mapping[str, Any]) -> bool:
        """Count the scan's operations in the job and note its outcome, once; False if a run of the scan did already."""
        return int(self._finish_scan(keys=[self._job_key(job_id)], args=[
            total, chunks, outcome, json.dumps(list(warnings)), json.dumps(dict(summary), separators=(",", ":"))])) == 1

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked to cancel the job."""
        return bool(self.redis.hexists(self._job_key(job_id), "cancel_requested"))

    def discard(self, job_id: str) -> None:
        """Delete a staged (refused) submission."""
        chunks = int(self.redis.hget(self._job_key(job_id), "staged_chunks") or 0)
        keys = [self._job_key(job_id)] + [self._subkey(job_id, f"ops:{n}") for n in range(chunks)]
        # A refused stream may have been cut before staged_chunks was written: scan for strays.
        keys += [k.decode() for k in self.redis.scan_iter(match=self._subkey(job_id, "ops:*"), count=1000)]
        for i in range(0, len(keys), 500):
            self.redis.delete(*keys[i : i + 500])

    def commit(self, job_id: str, spec: JobSpec = JobSpec(), *, held_window: int = 0) -> tuple[int, int]:
        """Turn a staged submission into a queued job with this spec; returns (total, chunks).

        A real job's chunks held for a later instant (`spec.schedule`) are not dispatched with the
        others: each day's first `held_window` chunks (all when 0) are marked queued, due then, and
        the rest are sent as those complete (`next_of_day`). The job, its results and its seat
        reservation are kept the retention period after its last day.
        """
        key = self._job_key(job_id)
        raw = cast(list[bytes | None], self.redis.hmget(key, "tenant", "staged_chunks", "staged_total", "created_at"))
        tenant = (raw[0] or b"").decode()
        chunks, total = int(raw[1] or 0), int(raw[2] or 0)
        created_at = float(raw[3] or self.clock())
        held = [] if spec.plans_only else [d for d in spec.schedule if d.due_at is not None]
        record = JobRecord(id=job_id, tenant=tenant, state=JobState.QUEUED, created_at=created_at, spec=spec,
                           total=total, chunks=chunks, held_from=min((d.first_chunk for d in held), default=None))
        keep_s = self.retention_s + int(max((d.due_at or 0.0 for d in held), default=self.clock()) - self.clock())
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=record.to_hash())  # type: ignore[arg-type]
        pipe.hdel(key, "staged_chunks", "staged_total")
        pipe.expire(key, keep_s)
        for n in range(chunks):
            pipe.expire(self._subkey(job_id, f"ops:{n}"), keep_s)
        for day in held:
            for n in range(day.first_chunk, day.first_chunk + (min(day.chunks, held_window) or day.chunks)):
                pipe.hset(self._subkey(job_id, "live"), str(n), LiveChunk(Phase.QUEUED, day.due_at or 0.0).encode())
        if held:
            pipe.expire(self._subkey(job_id, "live"), keep_s)
            # Its seat reservation (jobs.seats) lives as long: a late day's rows must still hold their seats.
            pipe.expire(self._subkey(job_id, "seats"), keep_s)
        pipe.zadd("bl:jobs", {job_id: created_at})
        pipe.sadd("bl:active", job_id)
        pipe.execute()
        # The job is committed; give the replicas a moment to hold it before it is reported accepted.
        anchor = self.redis.pipeline(transaction=False)
        anchor.expire(key, keep_s)
        self._replicated(anchor)
        self._trim_job_index()
        return total, chunks

    def _trim_job_index(self) -> None:
        cutoff = self.clock() - self.retention_s
        self.redis.zremrangebyscore("bl:jobs", "-inf", cutoff)

    # --- dispatch and chunk lifecycle ---------------------------------------------------------
    def next_chunk(self, job_id: str) -> int | None:
        """Claim the next undispatched chunk of a job for enqueueing (None when all are out)."""
        n = int(self._next_chunk(keys=[self._job_key(job_id), self._subkey(job_id, "live")],
                                 args=[self.clock(), self.retention_s]))
        return None if n < 0 else n

    def next_of_day(self, job_id: str, first: int, end: int, window: int) -> int | None:
        """Claim the next unsent chunk of the held day whose chunks are `first` to `end` (excluded), whose
        first `window` went to the due set; None when all are out."""
        n = int(self._next_of_day(keys=[self._subkey(job_id, "days"), self._subkey(job_id, "live")],
                                  args=[first, end, first + window, self.clock(), self.retention_s]))
        return None if n < 0 else n

    def claim_chunk(self, job_id: str, n: int, worker_id: str, *, alive_for_s: float = 0.0,
                    running: Iterable[str] = (), at_s: float | None = None) -> ClaimResult:
        """Mark chunk n as running on this worker, unless it is done, busy elsewhere or its job is gone.

        With `alive_for_s`, a worker that has no heartbeat (expired, or lost with a failed-over
        primary) gets one, listing `running`, in the same step: a reaper would otherwise take the
        claim for an orphan and requeue the chunk to a second runner while this one runs. `at_s` is
        the claim's time (now if not given): the claim is then `claim_value(worker_id, at_s)`.
        """
        result = self._claim(
            keys=[self._job_key(job_id), self._subkey(job_id, "done"), self._subkey(job_id, "live")],
            args=[n, worker_id, "bl:worker:", repr(self.clock() if at_s is None else at_s), int(alive_for_s * 1000),
                  self._beat(running)],
        )
        return ClaimResult(result.decode() if isinstance(result, bytes) else str(result))

    def chunk_view(self, job_id: str, n: int, *, count_run: bool = False, take_budget: bool = False) -> ChunkView:
        """The job record, chunk n's operations and what is known of their rows, in one step.

        `count_run` counts one more start of the chunk (`runs`); `take_budget` takes (and forgets) the
        retry budget it had used when it was parked (`budget_used_s`).
        """
        keys = [self._job_key(job_id), *(self._subkey(job_id, k) for k in (f"ops:{n}", "res", "before", "att",
                                                                            "runs", "budget"))]
        raw_job, raw_ops, runs, budget, done, befores, attempts = self._chunk_view(
            keys=keys, args=[n, self.retention_s, int(count_run), int(take_budget)])
        fields = {raw_job[i].decode(): raw_job[i + 1].decode() for i in range(0, len(raw_job), 2)}
        ops = tuple(Operation.from_json(d) for d in json.loads(raw_ops)) if raw_ops else ()
        rows = [op.row for op in ops]
        record = JobRecord.from_hash(fields) if committed(fields) else None
        return ChunkView(
            job_id=job_id, n=n, record=record, ops=ops,
            done_rows=frozenset(r for r, flag in zip(rows, done, strict=False) if flag),
            befores={r: json.loads(v) for r, v in zip(rows, befores, strict=False) if v is not None},
            attempts={r: int(v) for r, v in zip(rows, attempts, strict=False) if v is not None},
            runs=int(runs), budget_used_s=None if budget is None else float(budget),
        )

    def release_chunk(self, job_id: str, n: int, worker_id: str, *, due_in_s: float = 0.0) -> bool:
        """Put a chunk we run back to queued, due in `due_in_s` (it is handed back to the broker)."""
        return bool(
            self._release(
                keys=[self._subkey(job_id, "live")],
                args=[n, running_prefix(worker_id), LiveChunk(Phase.QUEUED, self.clock() + due_in_s).encode()],
            )
        )

    def complete_chunk(self, job_id: str, n: int,
                       rows: Sequence[int] = ()) -> tuple[bool, int, int, int | None] | None:
        """Mark chunk n finished; returns (first completion, chunks done, chunks, next chunk to send).

        The next chunk is reserved in the same atomic step, so a worker that dies before sending it
        leaves it queued for the reaper instead of losing it. None, and nothing marked, when one of
        `rows` has no result (Redis lost it in a failover while the chunk ran): it must run again.
        """
        first, done, chunks, nxt = self._complete(
            keys=[self._job_key(job_id), self._subkey(job_id, "done"), self._subkey(job_id, "live"), "bl:active",
                  self._subkey(job_id, "res")],
            args=[n, job_id, self.retention_s, self.clock(), *rows],
        )
        if int(first) < 0:
            return None
        return bool(first), int(done), int(chunks), (None if int(nxt) < 0 else int(nxt))

    def load_chunk(self, job_id: str, n: int) -> list[Operation]:
        """The operations of chunk n."""
        raw = self.redis.get(self._subkey(job_id, f"ops:{n}"))
        if raw is None:
            return []
        return [Operation.from_json(d) for d in json.loads(raw)]

    def attempts(self, job_id: str, rows: Sequence[int]) -> dict[int, int]:
        """Write attempts already sent for these rows (by any worker, before any crash)."""
        if not rows:
            return {}
        values = cast(list[bytes | None], self.redis.hmget(self._subkey(job_id, "att"), [str(r) for r in rows]))
        return {row: int(v) for row, v in zip(rows, values, strict=True) if v is not None}

    def bump(self, job_id: str, *, throttled: int = 0, retries: int = 0) -> None:
        """Add to the job's throttled / retries counters (if the job still exists)."""
        if throttled or retries:
            self._bump(keys=[self._job_key(job_id)], args=[throttled, retries])

    def record_results(self, job_id: str, results: Sequence[UserResult]) -> int:
        """Write terminal results atomically, moving the job's counters; a row already terminal is left as it was."""
        if not results:
            return 0
        now = self.clock()
        args: list[Any] = [now, self.retention_s, self._subkey(job_id, f"sec:{int(now)}"), len(USER_COUNTERS),
                           *USER_COUNTERS]
        for res in results:
            args += [res.row, res.status.value, json.dumps(res.to_json(), separators=(",", ":"))]
        return int(self._record_results(keys=[self._job_key(job_id), self._subkey(job_id, "res")], args=args))

    # --- cancel -------------------------------------------------------------------------------
    def request_cancel(self, job_id: str) -> None:
        """Flag the job as cancelled; workers send no write registered after this.

        ReplicaLagging when the replicas to wait for did not confirm it: a failover could lose the
        flag, and writes would go on (asking again is harmless).
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.hsetnx(self._job_key(job_id), "cancel_requested", self.clock())
        if not self._replicated(pipe)[1]:
            raise ReplicaLagging(f"a Redis replica did not confirm the cancel of job {job_id}")

    def begin_writes(self, job_id: str, batch_id: str, deadline: float, rows: Sequence[int], *,
                     claim: tuple[int, str] | None = None) -> WriteGate:
        """Register a write batch for these rows, unless the job is cancelled or paused (nothing sent).

        `claim` is the run's chunk and its claim (`claim_value`): the batch is registered only while
        the chunk's live state is still that claim, so that two runs of one chunk (one whose claim
        was lost with a failed-over primary) never both write.

        With replicas to wait for, the batch is registered only once they hold everything recorded
        up to it (the rows' plans and `before` states, their attempts): a failover then cannot lose
        what a user's write relies on. A replica that does not confirm in time leaves the batch
        unregistered (UNREPLICATED); replicas that are not connected are not waited for.
        """
        keys = [self._job_key(job_id), self._subkey(job_id, "inflight"), self._subkey(job_id, "att"),
                self._subkey(job_id, "live")]
        n, held = claim if claim is not None else (-1, "")
        args: list[str | float | int] = [deadline, batch_id, self.retention_s, self.clock(), n, held, *rows]
        pipe = self.redis.pipeline(transaction=False)
        self._begin_writes(keys=keys, args=args, client=pipe)
        results, replicated = self._replicated(pipe)
        gate = _gate(int(results[0]))
        if replicated or gate not in (WriteGate.OPEN, WriteGate.FIRST):
            return gate
        undo = self.redis.pipeline(transaction=True)
        undo.zrem(keys[1], batch_id)
        for row in rows:
            undo.hincrby(keys[2], str(row), -1)
        if gate is WriteGate.FIRST:
            undo.hdel(keys[0], "first_write_at")
        undo.execute()
        return WriteGate.UNREPLICATED

    def _replicated(self, pipe: Pipeline) -> tuple[list[Any], bool]:
        """Run `pipe`, then wait until the replicas hold its writes; its results, and whether they did in time.

        WAIT runs on the pipeline's connection after its writes, so it covers them and every write
        made before them, by any client.
        """
        wanted = self._replicas_to_wait_for(max_age_s=REPLICAS_RECHECK_S)
        if wanted > 0:
            pipe.wait(wanted, self.wait_timeout_ms)
        results = pipe.execute()
        if wanted <= 0:
            return results, True
        return results[:-1], int(results[-1]) >= self._replicas_to_wait_for(max_age_s=0)

    def _replicas_to_wait_for(self, *, max_age_s: float) -> int:
        """`wait_replicas`, or fewer when fewer replicas are connected and in sync (as seen at most `max_age_s` ago).

        WAIT for a replica that is not there would take its whole timeout, for every write batch.
        """
        if self.wait_replicas <= 0:
            return 0
        now = time.monotonic()
        if self._replicas_seen is None or now - self._replicas_seen[0] > max_age_s:
            info: dict[str, Any] = self.redis.info("replication")
            online = sum(1 for key, value in info.items()
                         if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online")
            self._replicas_seen = (now, online)
        return min(self.wait_replicas, self._replicas_seen[1])

    def end_writes(self, job_id: str, batch_id: str) -> None:
        """The write batch has been answered (or abandoned)."""
        self.redis.zrem(self._subkey(job_id, "inflight"), batch_id)

    def writes_in_flight(self, job_id: str) -> int:
        """Write batches registered and not yet past their deadline."""
        return int(self.redis.zcount(self._subkey(job_id, "inflight"), self.clock(), "+inf"))

    # --- the plan ----------------------------------------------------------------------------
    def save_plans(
        self, job_id: str, plans: Sequence[tuple[int, dict[str, Any] | None, Sequence[str]]]
    ) -> tuple[set[int], int]:
        """Keep each row's `before` state and count its plan counters, once per row.

        Returns the rows whose plan was new, and how many users the job has planned so far.
        """
        if not plans:
            return set(), 0
        args: list[Any] = [self.retention_s]
        for row, before, counters in plans:
            args += [row, json.dumps(before, separators=(",", ":")), len(counters), *counters]
        raw = self._save_plans(keys=[self._subkey(job_id, "before"), self._subkey(job_id, "plan")], args=args)
        return {int(r) for r in raw[1:]}, int(raw[0])

    def plan_counters(self, job_id: str) -> PlanCounters:
        """What the job's plan found so far (see the key map)."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self._subkey(job_id, "plan")))
        return PlanCounters.from_hash({k.decode(): int(v) for k, v in raw.items()})

    def job(self, job_id: str) -> JobRecord | None:
        """The job's record; None for a job that does not exist or is still being staged."""
        fields = decode_hash(cast(dict[bytes, bytes], self.redis.hgetall(self._job_key(job_id))))
        return JobRecord.from_hash(fields) if committed(fields) else None

    def _field(self, job_id: str, name: str) -> str | None:
        value = cast(bytes | None, self.redis.hget(self._job_key(job_id), name))
        return None if value is None else value.decode()

    # --- pause and resume ---------------------------------------------------------------------
    def pause(self, job_id: str, reason: PauseReason, message: str, *, next_probe_at: float | None = None) -> bool:
        """Pause the job (writes stop at their next batch); True if this call paused it."""
        return bool(
            self._pause(
                keys=[self._job_key(job_id), "bl:paused"],
                args=[job_id, reason.value, message[:500], self.clock(),
                      "" if next_probe_at is None else next_probe_at],
            )
        )

    def park_chunk(self, job_id: str, n: int, worker_id: str) -> bool:
        """Park a chunk we run while its job is paused; False if the job was resumed meanwhile."""
        return bool(
            self._park(
                keys=[self._job_key(job_id), self._subkey(job_id, "live")],
                args=[n, running_prefix(worker_id), LiveChunk(Phase.PARKED, self.clock()).encode()],
            )
        )

    def resume(self, job_id: str) -> list[int] | None:
        """Clear the pause and requeue the parked chunks (returned, to be sent); None if not paused."""
        raw = self._resume(
            keys=[self._job_key(job_id), self._subkey(job_id, "live"), "bl:paused"], args=[job_id, self.clock()]
        )
        chunks = [int(n) for n in raw]
        return None if chunks == [-1] else chunks

    def paused_jobs(self) -> list[str]:
        """Jobs paused now."""
        return sorted(m.decode() for m in cast(set[bytes], self.redis.smembers("bl:paused")))

    # --- a tenant read page by page (large dry runs) -------------------------------------------------
    def keep_prefetched(self, job_id: str, states: Mapping[str, str]) -> int:
        """Keep users' states (JSON, by lower-cased id and UPN) read by paging the tenant."""
        if states:
            key = self._subkey(job_id, "prefetched")
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(key, mapping=dict(states))  # type: ignore[arg-type]
            pipe.expire(key, self.retention_s)
            pipe.execute()
        return len(states)

    def mark_prefetched(self, job_id: str) -> None:
        """The whole tenant has been read: a user not kept does not exist."""
        self.redis.hset(self._job_key(job_id), "prefetched", "1")

    def prefetch_done(self, job_id: str) -> None:
        """The first chunk of a job that pages the tenant has done so (or tried): the others may run."""
        self.redis.hset(self._job_key(job_id), "prefetch", Prefetch.DONE.value)

    def prefetched(self, job_id: str, users: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """The kept states of these users (None: not in the tenant when it was read)."""
        if not users:
            return {}
        values = cast(list[bytes | None], self.redis.hmget(self._subkey(job_id, "prefetched"),
                                                         [u.lower() for u in users]))
        return {u: (json.loads(v) if v is not None else None) for u, v in zip(users, values, strict=True)}

    # --- users not replicated yet ---------------------------------------------------------------
    def note_not_found(self, job_id: str, row: int, now: float) -> tuple[float, int]:
        """Count one more "does not exist (yet)" answer for a row; returns (first seen, how many so far).

        The row is also counted as waiting for replication until `not_found_over` is called.
        """
        key = self._subkey(job_id, "notfound")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(key, f"{row}:first", repr(now))
        pipe.hincrby(key, f"{row}:count", 1)
        pipe.hget(key, f"{row}:first")
        pipe.sadd(self._subkey(job_id, "waiting"), row)
        pipe.expire(key, self.retention_s)
        pipe.expire(self._subkey(job_id, "waiting"), self.retention_s)
        _, count, first, *_ = pipe.execute()
        return float(first), int(count)

    def not_found_over(self, job_id: str, row: int) -> None:
        """The row no longer waits for replication (it appeared, or its grace ended)."""
        self.redis.srem(self._subkey(job_id, "waiting"), row)

    def note_allowed(self, job_id: str, step: str) -> None:
        """Remember that Graph let the job's app do `step` (read, patch, assign) at least once."""
        self.redis.hsetnx(self._job_key(job_id), f"allowed:{step}", "1")

    def is_allowed(self, job_id: str, step: str) -> bool:
        """Whether Graph let the job's app do `step` at least once (any run, any worker)."""
        return bool(self.redis.hexists(self._job_key(job_id), f"allowed:{step}"))

    def uncount_attempts(self, job_id: str, counts: Mapping[int, int]) -> None:
        """Take back write attempts that were not the users' (never sent, or lost to a tenant-wide fault)."""
        if not counts:
            return
        pipe = self.redis.pipeline(transaction=True)
        for row, n in counts.items():
            pipe.hincrby(self._subkey(job_id, "att"), str(row), -n)
        pipe.execute()

    def save_budget(self, job_id: str, n: int, used_s: float) -> None:
        """Keep the retry budget chunk n has used, for its run after the pause it is being parked for."""
        key = self._subkey(job_id, "budget")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, str(n), repr(max(0.0, used_s)))
        pipe.expire(key, self.retention_s)
        pipe.execute()

    def take_budget(self, job_id: str, n: int) -> float | None:
        """The retry budget chunk n had used when it was parked (forgotten once taken); None if none was kept."""
        key = self._subkey(job_id, "budget")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(key, str(n))
        pipe.hdel(key, str(n))
        raw, _ = pipe.execute()
        return None if raw is None else float(raw)

    # --- workers and the reaper ---------------------------------------------------------------
    def heartbeat(self, worker_id: str, ttl_s: float, running: Iterable[str] = ()) -> None:
        """Mark a worker alive for `ttl_s` seconds, with the chunks ("job:n") it is running."""
        self.redis.set(f"bl:worker:{worker_id}", self._beat(running), px=int(ttl_s * 1000))

    def _beat(self, running: Iterable[str]) -> str:
        """A heartbeat's value: now, and the chunks the worker is running."""
        return json.dumps({"ts": self.clock(), "running": sorted(running)})

    def worker_gone(self, worker_id: str) -> None:
        """Remove a worker's heartbeat at clean shutdown."""
        self.redis.delete(f"bl:worker:{worker_id}")

    def active_jobs(self) -> list[str]:
        """Jobs with unfinished chunks."""
        return sorted(m.decode() for m in cast(set[bytes], self.redis.smembers("bl:active")))

    def orphaned_chunks(self, job_id: str, *, requeue_after_s: float) -> list[Orphan]:
        """Chunks whose runner died (or dropped them), or queued so long their message may be lost.

        A chunk marked running is orphaned when its worker's heartbeat has expired, or when the
        worker's latest heartbeat, taken after the claim, does not list it. A requeued duplicate
        is harmless: claims are exclusive and finished chunks are skipped.
        """
        live = cast(dict[bytes, bytes], self.redis.hgetall(self._subkey(job_id, "live")))
        if not live:
            if not self.redis.exists(self._job_key(job_id)):
                self.redis.srem("bl:active", job_id)
            return []
        now = self.clock()
        running: list[Orphan] = []
        orphans: list[Orphan] = []
        for n_raw, raw in live.items():
            seen = raw.decode()
            orphan = Orphan(int(n_raw), seen, LiveChunk.parse(seen))
            if orphan.state.phase is Phase.QUEUED and now - orphan.state.at > requeue_after_s:
                orphans.append(orphan)
            elif orphan.state.phase is Phase.RUNNING:
                running.append(orphan)
        owners = sorted({o.state.worker or "" for o in running})
        beats: dict[str, Any] = {}
        if owners:
            raw_beats = cast(list[bytes | None], self.redis.mget([f"bl:worker:{w}" for w in owners]))
            beats = {w: json.loads(b) for w, b in zip(owners, raw_beats, strict=True) if b is not None}
        for orphan in running:
            beat = beats.get(orphan.state.worker or "")
            if beat is None or float(beat["ts"]) > orphan.state.at + 1.0 and \
                    f"{job_id}:{orphan.n}" not in beat["running"]:
                orphans.append(orphan)
        return orphans

    def reclaim(self, job_id: str, n: int, seen: str) -> bool:
        """Requeue an orphaned chunk if nobody else did first (compare-and-set)."""
        return bool(
            self._cas_live(keys=[self._subkey(job_id, "live")],
                           args=[n, seen, LiveChunk(Phase.QUEUED, self.clock()).encode()])
        )

    # --- reads --------------------------------------------------------------------------------
    def progress(self, job_id: str, *, ceiling_rate_per_s: float | None = None) -> JobProgress | None:
        """The job's counters, status, rate and ETA; None if unknown (O(1) in job size)."""
        now = self.clock()
        second_keys = [self._subkey(job_id, f"sec:{int(now) - i}") for i in range(1, RATE_WINDOW_S + 1)]
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self._job_key(job_id))
        pipe.mget(second_keys)
        pipe.hgetall(self._subkey(job_id, "plan"))
        pipe.scard(self._subkey(job_id, "waiting"))
        raw, per_second, plan, waiting = pipe.execute()
        fields = decode_hash(raw)
        if not committed(fields):
            return None
        recent_results = sum(int(n) for n in per_second if n)
        return job_progress(JobRecord.from_hash(fields), recent_results=recent_results, now=now,
                            ceiling_rate_per_s=ceiling_rate_per_s,
                            plan=PlanCounters.from_hash({k.decode(): int(v) for k, v in plan.items()}),
                            waiting=int(waiting))

    def tenants_and_statuses(self, job_ids: Sequence[str]) -> list[tuple[str, JobStatus]]:
        """Each committed job's tenant and status, read in one round trip (jobs gone or staging left out)."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self._job_key(job_id))
        out = []
        for raw in cast(list[dict[bytes, bytes]], pipe.execute()):
            fields = decode_hash(raw)
            if committed(fields):
                record = JobRecord.from_hash(fields)
                out.append((record.tenant, job_status(record)))
        return out

    def job_tenant(self, job_id: str) -> str | None:
        """The tenant profile a committed job belongs to."""
        raw = cast(list[bytes | None], self.redis.hmget(self._job_key(job_id), "tenant", "state"))
        if raw[0] is None or raw[1] == JobState.STAGING.value.encode():
            return None
        return raw[0].decode()

    def recent_jobs(self, limit: int = 50) -> list[str]:
        """Most recent job ids first."""
        return [m.decode() for m in cast(list[bytes], self.redis.zrevrange("bl:jobs", 0, limit - 1))]

    def iter_operations(self, job_id: str) -> Iterator[Operation]:
        """Every operation of the job, in input order."""
        chunks = int(self.redis.hget(self._job_key(job_id), "chunks") or 0)
        for n in range(chunks):
            yield from self.load_chunk(job_id, n)

    def link(self, job_id: str, field: str, other_id: str) -> None:
        """Note a related job on the record (`run_as`, `rolled_back_by`: jobs.record.LINK_FIELDS)."""
        self.redis.hset(self._job_key(job_id), field, other_id)

    def link_once(self, job_id: str, field: str, other_id: str) -> str | None:
        """Note a related job unless one is noted already; returns that one (None: this call noted it)."""
        if self.redis.hsetnx(self._job_key(job_id), field, other_id):
            return None
        return self._field(job_id, field) or ""

    def unlink(self, job_id: str, field: str, other_id: str) -> None:
        """Take back a `link_once` of ours (the job it named was never created)."""
        if self._field(job_id, field) == other_id:
            self.redis.hdel(self._job_key(job_id), field)

    # --- approval -----------------------------------------------------------------------------
    def decide(self, job_id: str, approval: Approval) -> Approval | None:
        """Note the decision on a job waiting for approval unless one is noted already; returns that one.

        One field set with HSETNX: of requests racing to approve or reject a job, exactly one wins.
        """
        while True:
            if self.redis.hsetnx(self._job_key(job_id), "approval", approval.encode()):
                return None
            raw = self._field(job_id, "approval")
            if raw:  # else taken back in between (its run could not be created): try again
                return Approval.parse(raw)

    def undecide(self, job_id: str, approval: Approval) -> None:
        """Take back a `decide` of ours (the run it was to start could not be created)."""
        if self._field(job_id, "approval") == approval.encode():
            self.redis.hdel(self._job_key(job_id), "approval")

    def iter_results(self, job_id: str, *, page_rows: int = RESULT_PAGE_ROWS
                     ) -> Iterator[tuple[Operation, UserResult | None]]:
        """Every operation of the job with its result (None while pending), in input order.

        Read a page at a time: the operations of about `page_rows` users (whole chunks, at least
        one) in one round trip, then their results in another; no more than a page is held.
        """
        raw = cast(list[bytes | None], self.redis.hmget(self._job_key(job_id), "chunks", "total"))
        chunks, total = int(raw[0] or 0), int(raw[1] or 0)
        rows_per_chunk = max(1, -(-total // chunks)) if chunks else 1
        chunks_per_page = max(1, page_rows // rows_per_chunk)
        for first in range(0, chunks, chunks_per_page):
            yield from self._results_page(job_id, range(first, min(chunks, first + chunks_per_page)))

    def _results_page(self, job_id: str, numbers: range) -> list[tuple[Operation, UserResult | None]]:
        """The operations of chunks `numbers` with their results: two round trips."""
        pipe = self.redis.pipeline(transaction=False)
        for n in numbers:
            pipe.get(self._subkey(job_id, f"ops:{n}"))
        ops = [Operation.from_json(d) for raw in pipe.execute() if raw is not None for d in json.loads(raw)]
        if not ops:
            return []
        values = cast(list[bytes | None], self.redis.hmget(self._subkey(job_id, "res"), [str(op.row) for op in ops]))
        return [(op, UserResult.from_json(json.loads(value)) if value is not None else None)
                for op, value in zip(ops, values, strict=True)]
