"""The job and result store in Redis: staging, chunks, atomic result accounting, leases, progress.

Keys (all under `bl:`; every job key expires after the retention period):

    bl:job:{id}            hash   job record and counters (total, succeeded, failed, cancelled, ...)
    bl:job:{id}:ops:{n}    string chunk n's operations, JSON list
    bl:job:{id}:res        hash   row -> terminal result JSON (written once: HSETNX)
    bl:job:{id}:att        hash   row -> write attempts sent so far (marks ambiguous users after a crash)
    bl:job:{id}:done       bitmap chunk n finished
    bl:job:{id}:live       hash   chunk n -> "q:<due ts>" (queued) or "r:<worker id>:<claim ts>" (running)
    bl:job:{id}:inflight   zset   write batches in flight -> deadline (cancel waits for them)
    bl:job:{id}:runs       hash   chunk n -> how many times it was started
    bl:job:{id}:sec:{t}    int    results recorded in second t (current rate)
    bl:jobs                zset   job id -> created_at (recent jobs)
    bl:active              set    jobs with unfinished chunks (the reaper's work list)
    bl:worker:{id}         string a live worker's heartbeat: {"ts", "running": ["job:n", ...]}, expires
                                  after the lease TTL
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from jobs.models import JobStatus, Operation, UserResult, iso_time

STAGING_TTL_S = 3600
RATE_WINDOW_S = 10

# Record terminal results: each row at most once; counters move only for first writes.
_RECORD = """
local job, res = KEYS[1], KEYS[2]
local now, ttl, sec_key = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
-- A chunk still running when its job expired must not bring the job back without an expiry.
if redis.call('EXISTS', job) == 0 then return 0 end
local added = 0
for i = 4, #ARGV, 3 do
  if redis.call('HSETNX', res, ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('HINCRBY', job, ARGV[i + 1], 1)
    added = added + 1
  end
end
redis.call('EXPIRE', res, ttl)
if added > 0 then
  redis.call('INCRBY', sec_key, added)
  redis.call('EXPIRE', sec_key, 120)
  if redis.call('HEXISTS', job, 'started_at') == 0 then
    redis.call('HSET', job, 'started_at', ARGV[1])
  end
end
local c = redis.call('HMGET', job, 'total', 'succeeded', 'failed', 'cancelled')
local total = tonumber(c[1]) or 0
local terminal = (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0) + (tonumber(c[4]) or 0)
if total > 0 and terminal >= total and redis.call('HEXISTS', job, 'finished_at') == 0 then
  redis.call('HSET', job, 'finished_at', ARGV[1])
end
return added
"""

# Claim chunk n for a worker: skip if finished, or running on a live worker other than us.
_CLAIM = """
local job, done, live = KEYS[1], KEYS[2], KEYS[3]
local n, wid, prefix, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', job) == 0 then return 'gone' end
if redis.call('GETBIT', done, tonumber(n)) == 1 then return 'done' end
local cur = redis.call('HGET', live, n)
if cur then
  local owner = string.match(cur, '^r:([^:]*):')
  if owner and owner ~= wid and redis.call('EXISTS', prefix .. owner) == 1 then return 'busy' end
end
redis.call('HSET', live, n, 'r:' .. wid .. ':' .. now)
if redis.call('HEXISTS', job, 'started_at') == 0 then
  redis.call('HSET', job, 'started_at', now)
end
return 'ok'
"""

# Finish chunk n once and, on the first completion, reserve the job's next chunk in the same step
# (marked queued, so the reaper resends it if the caller dies before sending it).
# Returns {first_time, chunks_done, chunks, next chunk or -1}.
_COMPLETE = """
local job, done, live, active = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local n, job_id = tonumber(ARGV[1]), ARGV[2]
if redis.call('EXISTS', job) == 0 then
  redis.call('SREM', active, job_id)
  return {0, 0, 0, -1}
end
redis.call('HDEL', live, ARGV[1])
if redis.call('SETBIT', done, n, 1) == 1 then
  return {0, tonumber(redis.call('HGET', job, 'chunks_done') or 0), tonumber(redis.call('HGET', job, 'chunks')), -1}
end
redis.call('EXPIRE', done, tonumber(ARGV[3]))
local d = redis.call('HINCRBY', job, 'chunks_done', 1)
local chunks = tonumber(redis.call('HGET', job, 'chunks'))
if d >= chunks then
  redis.call('SREM', active, job_id)
  if redis.call('HEXISTS', job, 'finished_at') == 0 then redis.call('HSET', job, 'finished_at', ARGV[4]) end
end
local nxt = tonumber(redis.call('HGET', job, 'next_chunk') or 0)
if nxt < chunks then
  redis.call('HSET', job, 'next_chunk', nxt + 1)
  redis.call('HSET', live, tostring(nxt), 'q:' .. ARGV[4])
else
  nxt = -1
end
return {1, d, chunks, nxt}
"""

# Hand out the next undispatched chunk index, marking it queued; -1 when none are left.
_NEXT_CHUNK = """
local job, live = KEYS[1], KEYS[2]
local chunks = tonumber(redis.call('HGET', job, 'chunks') or 0)
local nxt = tonumber(redis.call('HGET', job, 'next_chunk') or 0)
if nxt >= chunks then return -1 end
redis.call('HSET', job, 'next_chunk', nxt + 1)
redis.call('HSET', live, tostring(nxt), 'q:' .. ARGV[1])
redis.call('EXPIRE', live, tonumber(ARGV[2]))
return nxt
"""

# Compare-and-set a chunk's live state (the reaper's reclaim and the hand-back).
_CAS_LIVE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""

# Add to the throttled/retries counters of a job that still exists.
_BUMP = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'throttled', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'retries', ARGV[2])
return 1
"""

# Compare-and-set on a prefix of the current value (our own running claim).
_RELEASE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""

# Register a write batch unless the job is cancelled (cancel waits for registered batches), and
# count one more write attempt per row before the request goes out.
_BEGIN_WRITES = """
if redis.call('HEXISTS', KEYS[1], 'cancel_requested') == 1 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
for i = 4, #ARGV do redis.call('HINCRBY', KEYS[3], ARGV[i], 1) end
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
return 1
"""


def new_job_id() -> str:
    """A fresh, unguessable job id."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class JobProgress:
    """A job's counters as read in O(1) for the progress endpoint."""

    id: str
    tenant: str
    status: JobStatus
    total: int
    succeeded: int
    failed: int
    cancelled: int
    pending: int
    throttled: int
    retries: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    rate_per_s: float
    eta_s: float | None
    chunks: int
    chunks_done: int
    source: str
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The API's job shape."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "status": self.status.value,
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "pending": self.pending,
            "throttled": self.throttled,
            "retries": self.retries,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "rate_per_s": round(self.rate_per_s, 2),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 2),
            "source": self.source,
            "warnings": list(self.warnings),
        }


def _iso(ts: float | None) -> str | None:
    return None if ts is None else iso_time(ts)


class JobStore:
    """Every Redis read and write of the job domain goes through here."""

    def __init__(self, client: redis.Redis, *, retention_s: int, clock: Any = time.time) -> None:
        self.r = client
        self.retention_s = retention_s
        self.clock = clock
        self._record = client.register_script(_RECORD)
        self._claim = client.register_script(_CLAIM)
        self._complete = client.register_script(_COMPLETE)
        self._next_chunk = client.register_script(_NEXT_CHUNK)
        self._cas_live = client.register_script(_CAS_LIVE)
        self._release = client.register_script(_RELEASE)
        self._bump = client.register_script(_BUMP)
        self._begin_writes = client.register_script(_BEGIN_WRITES)

    # --- keys -------------------------------------------------------------------------------
    @staticmethod
    def job_key(job_id: str) -> str:
        """The job's record hash."""
        return f"bl:job:{job_id}"

    def _k(self, job_id: str, suffix: str) -> str:
        return f"bl:job:{job_id}:{suffix}"

    # --- submission ---------------------------------------------------------------------------
    def stage(self, job_id: str, tenant: str, operations: Iterable[Operation], chunk_size: int) -> int:
        """Write operations as chunks under a staging record; returns how many were written.

        Staged keys expire quickly unless `commit` is called, so a submission that is refused or
        whose API process dies leaves nothing behind.
        """
        self.r.hset(
            self.job_key(job_id),
            mapping={"id": job_id, "tenant": tenant, "state": "staging", "created_at": self.clock()},
        )
        self.r.expire(self.job_key(job_id), STAGING_TTL_S)
        total = 0
        chunk: list[str] = []
        n = 0
        pipe = self.r.pipeline(transaction=False)
        for op in operations:
            chunk.append(op.dumps())
            total += 1
            if len(chunk) >= chunk_size:
                pipe.set(self._k(job_id, f"ops:{n}"), "[" + ",".join(chunk) + "]", ex=STAGING_TTL_S)
                n += 1
                chunk = []
                if n % 50 == 0:
                    pipe.execute()
        if chunk:
            pipe.set(self._k(job_id, f"ops:{n}"), "[" + ",".join(chunk) + "]", ex=STAGING_TTL_S)
            n += 1
        pipe.hset(self.job_key(job_id), mapping={"staged_chunks": n, "staged_total": total})
        pipe.execute()
        return total

    def discard(self, job_id: str) -> None:
        """Delete a staged (refused) submission."""
        chunks = int(self.r.hget(self.job_key(job_id), "staged_chunks") or 0)
        keys = [self.job_key(job_id)] + [self._k(job_id, f"ops:{n}") for n in range(chunks)]
        # A refused stream may have been cut before staged_chunks was written: scan for strays.
        keys += [k.decode() for k in self.r.scan_iter(match=self._k(job_id, "ops:*"), count=1000)]
        for i in range(0, len(keys), 500):
            self.r.delete(*keys[i : i + 500])

    def commit(
        self, job_id: str, *, source: str, warnings: Sequence[str] = (), owner: str = ""
    ) -> tuple[int, int]:
        """Turn a staged submission into a queued job; returns (total, chunks)."""
        key = self.job_key(job_id)
        raw = cast(list[bytes | None], self.r.hmget(key, "staged_chunks", "staged_total", "created_at"))
        chunks, total = int(raw[0] or 0), int(raw[1] or 0)
        created_at = float(raw[2] or self.clock())
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "state": "queued",
                "total": total,
                "chunks": chunks,
                "chunks_done": 0,
                "next_chunk": 0,
                "succeeded": 0,
                "failed": 0,
                "cancelled": 0,
                "throttled": 0,
                "retries": 0,
                "source": source,
                "owner": owner,
                "warnings": json.dumps(list(warnings)),
            },
        )
        pipe.hdel(key, "staged_chunks", "staged_total")
        pipe.expire(key, self.retention_s)
        for n in range(chunks):
            pipe.expire(self._k(job_id, f"ops:{n}"), self.retention_s)
        pipe.zadd("bl:jobs", {job_id: created_at})
        pipe.sadd("bl:active", job_id)
        pipe.execute()
        self._trim_job_index()
        return total, chunks

    def _trim_job_index(self) -> None:
        cutoff = self.clock() - self.retention_s
        self.r.zremrangebyscore("bl:jobs", "-inf", cutoff)

    # --- dispatch and chunk lifecycle ---------------------------------------------------------
    def next_chunk(self, job_id: str) -> int | None:
        """Claim the next undispatched chunk of a job for enqueueing (None when all are out)."""
        n = int(self._next_chunk(keys=[self.job_key(job_id), self._k(job_id, "live")],
                                 args=[self.clock(), self.retention_s]))
        return None if n < 0 else n

    def claim_chunk(self, job_id: str, n: int, worker_id: str) -> str:
        """Mark chunk n as running on this worker: 'ok', 'done', 'busy' or 'gone'."""
        result = self._claim(
            keys=[self.job_key(job_id), self._k(job_id, "done"), self._k(job_id, "live")],
            args=[n, worker_id, "bl:worker:", self.clock()],
        )
        return result.decode() if isinstance(result, bytes) else str(result)

    def count_run(self, job_id: str, n: int) -> int:
        """Count one more start of chunk n; returns how many starts it has had."""
        key = self._k(job_id, "runs")
        pipe = self.r.pipeline(transaction=False)
        pipe.hincrby(key, str(n), 1)
        pipe.expire(key, self.retention_s)
        runs, _ = pipe.execute()
        return int(runs)

    def release_chunk(self, job_id: str, n: int, worker_id: str, *, due_in_s: float = 0.0) -> bool:
        """Put a chunk we run back to queued, due in `due_in_s` (it is handed back to the broker)."""
        return bool(
            self._release(
                keys=[self._k(job_id, "live")],
                args=[n, f"r:{worker_id}:", f"q:{self.clock() + due_in_s}"],
            )
        )

    def complete_chunk(self, job_id: str, n: int) -> tuple[bool, int, int, int | None]:
        """Mark chunk n finished; returns (first completion, chunks done, chunks, next chunk to send).

        The next chunk is reserved in the same atomic step, so a worker that dies before sending it
        leaves it queued for the reaper instead of losing it.
        """
        first, done, chunks, nxt = self._complete(
            keys=[self.job_key(job_id), self._k(job_id, "done"), self._k(job_id, "live"), "bl:active"],
            args=[n, job_id, self.retention_s, self.clock()],
        )
        return bool(first), int(done), int(chunks), (None if int(nxt) < 0 else int(nxt))

    def load_chunk(self, job_id: str, n: int) -> list[Operation]:
        """The operations of chunk n."""
        raw = self.r.get(self._k(job_id, f"ops:{n}"))
        if raw is None:
            return []
        return [Operation.from_json(d) for d in json.loads(raw)]

    def terminal_rows(self, job_id: str, rows: Sequence[int]) -> set[int]:
        """Which of these rows already have a terminal result."""
        if not rows:
            return set()
        values = cast(list[bytes | None], self.r.hmget(self._k(job_id, "res"), [str(r) for r in rows]))
        return {row for row, v in zip(rows, values, strict=True) if v is not None}

    def attempts(self, job_id: str, rows: Sequence[int]) -> dict[int, int]:
        """Write attempts already sent for these rows (by any worker, before any crash)."""
        if not rows:
            return {}
        values = cast(list[bytes | None], self.r.hmget(self._k(job_id, "att"), [str(r) for r in rows]))
        return {row: int(v) for row, v in zip(rows, values, strict=True) if v is not None}

    def bump(self, job_id: str, *, throttled: int = 0, retries: int = 0) -> None:
        """Add to the job's throttled / retries counters (if the job still exists)."""
        if throttled or retries:
            self._bump(keys=[self.job_key(job_id)], args=[throttled, retries])

    def record(self, job_id: str, results: Sequence[UserResult]) -> int:
        """Record terminal results atomically; a row already terminal is left as it was."""
        if not results:
            return 0
        now = self.clock()
        args: list[Any] = [now, self.retention_s, self._k(job_id, f"sec:{int(now)}")]
        for res in results:
            args += [res.row, res.status.value, json.dumps(res.to_json(), separators=(",", ":"))]
        return int(self._record(keys=[self.job_key(job_id), self._k(job_id, "res")], args=args))

    # --- cancel -------------------------------------------------------------------------------
    def request_cancel(self, job_id: str) -> None:
        """Flag the job as cancelled; workers send no write registered after this."""
        self.r.hsetnx(self.job_key(job_id), "cancel_requested", self.clock())

    def is_cancelled(self, job_id: str) -> bool:
        """Whether cancel was requested."""
        return bool(self.r.hexists(self.job_key(job_id), "cancel_requested"))

    def begin_writes(self, job_id: str, batch_id: str, deadline: float, rows: Sequence[int]) -> bool:
        """Register a write batch for these rows; False (and nothing sent) if the job was cancelled."""
        return bool(
            self._begin_writes(
                keys=[self.job_key(job_id), self._k(job_id, "inflight"), self._k(job_id, "att")],
                args=[deadline, batch_id, self.retention_s, *rows],
            )
        )

    def end_writes(self, job_id: str, batch_id: str) -> None:
        """The write batch has been answered (or abandoned)."""
        self.r.zrem(self._k(job_id, "inflight"), batch_id)

    def writes_in_flight(self, job_id: str) -> int:
        """Write batches registered and not yet past their deadline."""
        return int(self.r.zcount(self._k(job_id, "inflight"), self.clock(), "+inf"))

    # --- workers and the reaper ---------------------------------------------------------------
    def heartbeat(self, worker_id: str, ttl_s: float, running: Iterable[str] = ()) -> None:
        """Mark a worker alive for `ttl_s` seconds, with the chunks ("job:n") it is running."""
        value = json.dumps({"ts": self.clock(), "running": sorted(running)})
        self.r.set(f"bl:worker:{worker_id}", value, px=int(ttl_s * 1000))

    def worker_gone(self, worker_id: str) -> None:
        """Remove a worker's heartbeat at clean shutdown."""
        self.r.delete(f"bl:worker:{worker_id}")

    def active_jobs(self) -> list[str]:
        """Jobs with unfinished chunks."""
        return sorted(m.decode() for m in cast(set[bytes], self.r.smembers("bl:active")))

    def orphaned_chunks(self, job_id: str, *, requeue_after_s: float) -> list[tuple[int, str]]:
        """Chunks whose runner died (or dropped them), or queued so long their message may be lost.

        A chunk marked running is orphaned when its worker's heartbeat has expired, or when the
        worker's latest heartbeat, taken after the claim, does not list it. A requeued duplicate
        is harmless: claims are exclusive and finished chunks are skipped.
        """
        live = cast(dict[bytes, bytes], self.r.hgetall(self._k(job_id, "live")))
        if not live:
            if not self.r.exists(self.job_key(job_id)):
                self.r.srem("bl:active", job_id)
            return []
        now = self.clock()
        claims: dict[int, tuple[str, str, float]] = {}
        orphans: list[tuple[int, str]] = []
        for n_raw, state in live.items():
            n, value = int(n_raw), state.decode()
            if value.startswith("q:"):
                if now - float(value[2:]) > requeue_after_s:
                    orphans.append((n, value))
            elif value.startswith("r:"):
                owner, _, claimed_at = value[2:].rpartition(":")
                claims[n] = (value, owner, float(claimed_at or 0))
        owners = sorted({owner for _, owner, _ in claims.values()})
        beats: dict[str, Any] = {}
        if owners:
            raw = cast(list[bytes | None], self.r.mget([f"bl:worker:{w}" for w in owners]))
            beats = {w: json.loads(b) for w, b in zip(owners, raw, strict=True) if b is not None}
        for n, (value, owner, claimed) in claims.items():
            beat = beats.get(owner)
            if beat is None or float(beat["ts"]) > claimed + 1.0 and f"{job_id}:{n}" not in beat["running"]:
                orphans.append((n, value))
        return orphans

    def reclaim(self, job_id: str, n: int, seen: str) -> bool:
        """Requeue an orphaned chunk if nobody else did first (compare-and-set)."""
        return bool(
            self._cas_live(keys=[self._k(job_id, "live")], args=[n, seen, f"q:{self.clock()}"])
        )

    # --- reads --------------------------------------------------------------------------------
    def exists(self, job_id: str) -> bool:
        """Whether a committed job exists."""
        state = self.r.hget(self.job_key(job_id), "state")
        return state is not None and state != b"staging"

    def progress(self, job_id: str, *, ceiling_rate_per_s: float | None = None) -> JobProgress | None:
        """The job's counters, status, rate and ETA; None if unknown (O(1) in job size)."""
        now = self.clock()
        sec_keys = [self._k(job_id, f"sec:{int(now) - i}") for i in range(1, RATE_WINDOW_S + 1)]
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(self.job_key(job_id))
        pipe.mget(sec_keys)
        raw, secs = pipe.execute()
        if not raw or raw.get(b"state") == b"staging":
            return None
        h = {k.decode(): v.decode() for k, v in raw.items()}

        def num(name: str) -> int:
            return int(h.get(name) or 0)

        def ts(name: str) -> float | None:
            return float(h[name]) if name in h else None

        total, ok, bad, cancelled = num("total"), num("succeeded"), num("failed"), num("cancelled")
        pending = max(0, total - ok - bad - cancelled)
        started, finished = ts("started_at"), ts("finished_at")
        recent = sum(int(s) for s in secs if s)
        rate = recent / RATE_WINDOW_S
        if pending and started is not None and rate == 0.0 and now - started < RATE_WINDOW_S:
            rate = (ok + bad + cancelled) / max(now - started, 1e-3)
        if pending == 0:
            rate = 0.0
        eta: float | None = None
        if pending:
            basis = rate or ceiling_rate_per_s
            if rate and ceiling_rate_per_s:
                basis = min(rate, ceiling_rate_per_s) if rate > ceiling_rate_per_s * 1.5 else rate
            if basis:
                eta = pending / basis
        status = _status(h, pending=pending, failed=bad, cancelled=cancelled, started=started)
        return JobProgress(
            id=job_id,
            tenant=h.get("tenant", ""),
            status=status,
            total=total,
            succeeded=ok,
            failed=bad,
            cancelled=cancelled,
            pending=pending,
            throttled=num("throttled"),
            retries=num("retries"),
            created_at=float(h.get("created_at") or 0),
            started_at=started,
            finished_at=finished if pending == 0 else None,
            rate_per_s=rate,
            eta_s=eta,
            chunks=num("chunks"),
            chunks_done=num("chunks_done"),
            source=h.get("source", ""),
            warnings=tuple(json.loads(h.get("warnings") or "[]")),
        )

    def job_tenant(self, job_id: str) -> str | None:
        """The tenant profile a committed job belongs to."""
        raw = cast(list[bytes | None], self.r.hmget(self.job_key(job_id), "tenant", "state"))
        if raw[0] is None or raw[1] == b"staging":
            return None
        return raw[0].decode()

    def recent_jobs(self, limit: int = 50) -> list[str]:
        """Most recent job ids first."""
        return [m.decode() for m in cast(list[bytes], self.r.zrevrange("bl:jobs", 0, limit - 1))]

    def iter_results(self, job_id: str) -> Iterator[tuple[Operation, UserResult | None]]:
        """Every operation of the job with its result (None while pending), in input order."""
        chunks = int(self.r.hget(self.job_key(job_id), "chunks") or 0)
        res_key = self._k(job_id, "res")
        for n in range(chunks):
            ops = self.load_chunk(job_id, n)
            if not ops:
                continue
            values = cast(list[bytes | None], self.r.hmget(res_key, [str(op.row) for op in ops]))
            for op, value in zip(ops, values, strict=True):
                yield op, (UserResult.from_json(json.loads(value)) if value is not None else None)


def _status(h: dict[str, str], *, pending: int, failed: int, cancelled: int, started: float | None) -> JobStatus:
    if h.get("state") == "failed":
        return JobStatus.FAILED
    if pending == 0:
        if "cancel_requested" in h and cancelled:
            return JobStatus.CANCELLED
        return JobStatus.COMPLETED_WITH_ERRORS if failed or cancelled else JobStatus.COMPLETED
    if started is None:
        return JobStatus.QUEUED
    return JobStatus.RUNNING
