"""One chunk task, start to finish: claim and read it, run its users, hand it back, park or complete it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from config.logs import bind_log_fields, log_context
from graphclient.errors import GraphError, ThrottleWaitTooLong
from jobs.catalogs import CatalogUnavailable
from jobs.counters import USER_COUNTERS
from jobs.events import JobEvent, Listeners
from jobs.executor import ChunkDeps, ClaimLost, HandBack, Parked, run_users
from jobs.lifecycle import ChunkOutcome, ClaimResult
from jobs.models import Reason, UserResult, UserStatus
from jobs.prefetch import prefetch_users
from jobs.record import Prefetch, ScanOutcome
from jobs.scan_jobs import cancel_check, run_scan
from jobs.scheduler import Send, dispatch
from jobs.skus import SkuCatalog
from jobs.store import ChunkView, JobStore, claim_value
from jobs.tenant_scan import TenantReader

log = logging.getLogger(__name__)
_running_lock = threading.Lock()


class ChunkContext(Protocol):
    """What a worker process provides to run chunks."""

    store: JobStore
    worker_id: str
    running: set[str]
    lease_ttl_s: float  # how long a heartbeat keeps the worker's claims alive
    max_countdown_s: float
    max_chunk_runs: int
    chunk_window: int
    send: Send
    events: Listeners  # told when a job ends, also when its chunks could not run (tenant not configured)

    def deps_for(self, tenant: str) -> ChunkDeps:
        """Graph client, throttle and policy for one tenant profile (KeyError if unknown)."""
        ...


def execute_chunk(
    ctx: ChunkContext,
    job_id: str,
    n: int,
    budget_started_at: float | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> ChunkOutcome:
    """Run chunk n of a job once; returns what the run came to (done, handed back, parked, skipped ...)."""
    with log_context(job=job_id, chunk=n):  # every line logged while the chunk runs names it
        return _execute(ctx, job_id, n, budget_started_at, clock)


def _execute(ctx: ChunkContext, job_id: str, n: int, budget_started_at: float | None,
             clock: Callable[[], float]) -> ChunkOutcome:
    """`execute_chunk`, inside the chunk's log context."""
    key = f"{job_id}:{n}"
    with _running_lock:
        # After a broker reconnect, kombu redelivers the messages of chunks still running here.
        if key in ctx.running:
            log.info("chunk %s of job %s skipped: already running in this worker", n, job_id)
            return ChunkOutcome.SKIPPED_RUNNING
        ctx.running.add(key)  # listed in our heartbeat before the claim, so the reaper sees it as ours
        running = sorted(ctx.running)
    try:
        claimed_at = clock()
        claim = ctx.store.claim_chunk(job_id, n, ctx.worker_id, alive_for_s=ctx.lease_ttl_s, running=running,
                                      at_s=claimed_at)
        if claim is not ClaimResult.OK:
            log.info("chunk %s of job %s skipped: %s", n, job_id, claim.value)
            return ChunkOutcome.skipped(claim)
        view = ctx.store.chunk_view(job_id, n, count_run=True, take_budget=budget_started_at is None)
        held = claim_value(ctx.worker_id, claimed_at)
        return _run_claimed(ctx, view, _budget_start(view, budget_started_at, clock), clock, held)
    finally:
        with _running_lock:
            ctx.running.discard(key)


def _budget_start(view: ChunkView, given: float | None, clock: Callable[[], float]) -> float:
    """When the chunk's retry budget started: as handed over, or moved past the pause it was parked for.

    A parked chunk kept the budget it had used; the time the job stood paused is not charged to it.
    """
    if given is not None:
        return given
    return clock() - (view.budget_used_s or 0.0)


def _run_claimed(ctx: ChunkContext, view: ChunkView, budget_started_at: float,
                 clock: Callable[[], float], claim: str) -> ChunkOutcome:
    """Run a chunk we hold the claim on, then hand it back or complete it and send the job's next."""
    store, job_id, n = ctx.store, view.job_id, view.n
    early_s = _early_by_s(view, clock())
    if early_s > 0:  # sent before its rows' day (a reaper's resend, a duplicate): back to the due set
        store.release_chunk(job_id, n, ctx.worker_id, due_in_s=early_s)
        ctx.send(job_id, n, early_s)
        log.info("chunk %s of job %s is due in %.1fs: put back until then", n, job_id, early_s)
        return ChunkOutcome.HANDED_BACK
    deps = _deps_or_fail(ctx, view, clock)
    if deps is not None:
        view = _read_tenant_first(ctx, deps, view)
        view = _scan_first(ctx, deps, view)
        try:
            run_users(deps, job_id, n, budget_started_at=budget_started_at, view=view, claim=claim)
        except ClaimLost:
            return _claim_lost(ctx, view, budget_started_at)
        except HandBack as hb:
            countdown_s = min(hb.countdown_s, ctx.max_countdown_s)
            store.release_chunk(job_id, n, ctx.worker_id, due_in_s=countdown_s)
            ctx.send(job_id, n, countdown_s, budget_started_at)
            log.info("chunk %s of job %s handed back for %.1fs", n, job_id, countdown_s)
            return ChunkOutcome.HANDED_BACK
        except Parked:
            store.save_budget(job_id, n, clock() - budget_started_at)  # kept before a resume can requeue it
            if store.park_chunk(job_id, n, ctx.worker_id):
                log.info("chunk %s of job %s parked: the job is paused", n, job_id)
                return ChunkOutcome.PARKED
            store.take_budget(job_id, n)
            ctx.send(job_id, n, 0.0, budget_started_at)  # resumed meanwhile: run again at once
            return ChunkOutcome.RESUMED
    return _complete(ctx, deps, view)


def _claim_lost(ctx: ChunkContext, view: ChunkView, budget_started_at: float) -> ChunkOutcome:
    """The run's claim is gone: leave the chunk to the run holding it, or (none does) send it again afresh."""
    store, job_id, n = ctx.store, view.job_id, view.n
    with _running_lock:
        running = sorted(ctx.running)
    again = store.claim_chunk(job_id, n, ctx.worker_id, alive_for_s=ctx.lease_ttl_s, running=running)
    if again is not ClaimResult.OK:
        log.warning("chunk %s of job %s stopped: another run holds it (%s)", n, job_id, again.value)
        return ChunkOutcome.skipped(again)
    store.release_chunk(job_id, n, ctx.worker_id)  # a new run reads its users again before any write
    ctx.send(job_id, n, 0.0, budget_started_at)
    log.warning("chunk %s of job %s sent again: its claim was lost", n, job_id)
    return ChunkOutcome.HANDED_BACK


def _send_next_of_day(ctx: ChunkContext, view: ChunkView) -> None:
    """A chunk of rows dated ahead is completing: send its day's next chunk, if one is still unsent.

    The next chunk is marked queued when it is claimed here, so the reaper sends it should this
    worker die before sending it.
    """
    record, n = view.record, view.n
    if record is None or record.held_from is None or n < record.held_from:
        return
    for day in record.spec.schedule:
        if day.first_chunk <= n < day.first_chunk + day.chunks:
            nxt = ctx.store.next_of_day(view.job_id, day.first_chunk, day.first_chunk + day.chunks, ctx.chunk_window)
            if nxt is not None:
                ctx.send(view.job_id, nxt, 0.0)
            return


def _early_by_s(view: ChunkView, now: float) -> float:
    """How long before its rows' instant a real job's chunk of rows dated ahead was sent (0: not early).

    A row is never written before its day, whoever sent its chunk; a dry run (or a job awaiting approval)
    plans every row now.
    """
    if view.record is None or view.record.spec.plans_only or view.record.cancel_requested:
        return 0.0
    due = max((op.due_at for op in view.pending if op.due_at is not None), default=None)
    return 0.0 if due is None or due <= now else due - now


def _complete(ctx: ChunkContext, deps: ChunkDeps | None, view: ChunkView) -> ChunkOutcome:
    """Mark the chunk done and send the job's next (or finish the job); sent again if a user has no result."""
    store, job_id, n = ctx.store, view.job_id, view.n
    _send_next_of_day(ctx, view)  # before the completion: a worker dying in between leaves it queued, not lost
    completion = store.complete_chunk(job_id, n, [op.row for op in view.ops])
    if completion is None:  # results this run recorded are gone (a Redis failover): run it again
        store.release_chunk(job_id, n, ctx.worker_id)
        ctx.send(job_id, n, 0.0)
        log.warning("chunk %s of job %s: users without a result after its run (Redis lost them); running it again",
                    n, job_id)
        return ChunkOutcome.INCOMPLETE
    first, done, chunks, nxt = completion
    if first and nxt is not None:
        ctx.send(job_id, nxt, 0.0)
    if first and done >= chunks:
        _finished(ctx, deps, job_id)
        log.info("job %s finished (%d chunks)", job_id, chunks)
    return ChunkOutcome.DONE


def _read_tenant_first(ctx: ChunkContext, deps: ChunkDeps, view: ChunkView) -> ChunkView:
    """For a large dry run, page the whole tenant once, then send the rest of the job's window.

    Only the job's first chunk is sent at submission for such a job, so nothing reads users one by
    one meanwhile. If the listing fails, the chunks read their users one by one instead. Returns the
    chunk's view as it is after the listing.
    """
    store, job_id, record = ctx.store, view.job_id, view.record
    if record is None or record.spec.prefetch is not Prefetch.ASKED or record.prefetched:
        return view
    try:
        prefetch_users(deps.graph, deps.policy, store, job_id, deps.sleep)
    except (GraphError, ThrottleWaitTooLong) as exc:
        log.warning("job %s: could not list the tenant's users (%s); reading them one by one", job_id, exc)
    store.prefetch_done(job_id)
    dispatch(store, ctx.send, job_id, max(0, ctx.chunk_window - 1))
    return store.chunk_view(job_id, view.n)


def _scan_first(ctx: ChunkContext, deps: ChunkDeps, view: ChunkView) -> ChunkView:
    """For a job built from a scan of the tenant, chunk 0 scans: the chunks it writes are then sent as any job's.

    Returns the chunk's view as it is after the scan (chunk 0 holds no users).
    """
    store, job_id, record = ctx.store, view.job_id, view.record
    if record is None or view.n != 0 or not record.scanning:
        return view
    try:
        catalog = deps.catalog()
    except CatalogUnavailable:  # names are for people: the scan works on ids
        catalog = SkuCatalog(())
    reader = TenantReader(deps.graph, deps.policy, deps.sleep, on_page=cancel_check(store, job_id))
    if run_scan(reader, store, record, catalog) is ScanOutcome.DONE:
        scanned = store.job(job_id)
        if deps.quotas is not None and scanned is not None:  # counted one row until the scan found them
            deps.quotas.recount(record.tenant, record.spec.owner, job_id, scanned.total)
        dispatch(store, ctx.send, job_id, max(0, ctx.chunk_window - 1))
    return store.chunk_view(job_id, view.n)


def _finished(ctx: ChunkContext, deps: ChunkDeps | None, job_id: str) -> None:
    """The job's last chunk is done: drop its seat reservations, tell the listeners with its counts.

    Without `deps` (the last chunk could not run: its tenant is not configured here, or it kept
    failing), the listeners are told all the same: the job ended, and its audit and callbacks say so.
    A job that waits for approval keeps its seats (its approval hands them to its run, a rejection
    releases them) and is told as AWAITING_APPROVAL.
    """
    store = ctx.store
    tenant = store.job_tenant(job_id) or ""
    record = store.job(job_id)
    waits = record is not None and record.spec.needs_approval and record.approval is None \
        and not record.cancel_requested
    if deps is not None and deps.seats is not None and not waits:
        deps.seats.release_all(tenant, job_id)
    progress = store.progress(job_id)
    if progress is not None:
        counts = {k: v for k, v in progress.to_json().items() if k in ("status", "total", *USER_COUNTERS)}
        event = JobEvent.AWAITING_APPROVAL if progress.awaiting_approval else JobEvent.FINISHED
        (deps.events if deps is not None else ctx.events).job_event(job_id, tenant, event, counts)


def _deps_or_fail(ctx: ChunkContext, view: ChunkView, clock: Callable[[], float]) -> ChunkDeps | None:
    """What running the chunk needs; None after failing its users when it must not run."""
    store, job_id, n = ctx.store, view.job_id, view.n
    if view.runs > ctx.max_chunk_runs:
        # A chunk that keeps dying (a crash it causes, or a bug) must not be requeued for ever.
        _fail_all(store, view, f"chunk {n} was started {view.runs - 1} times without finishing", clock(),
                  Reason.CHUNK_FAILED_REPEATEDLY)
        log.error("chunk %s of job %s failed after %d runs", n, job_id, view.runs - 1)
        return None
    tenant = view.record.tenant if view.record is not None else ""
    bind_log_fields(tenant=tenant)
    try:
        return ctx.deps_for(tenant)
    except KeyError:
        _fail_all(store, view, f"tenant profile '{tenant}' is not configured on this worker", clock(),
                  Reason.TENANT_NOT_CONFIGURED)
        return None


def _fail_all(store: JobStore, view: ChunkView, message: str, now: float, reason: Reason) -> None:
    """Record every still-pending user of the chunk as failed (users already terminal keep their result)."""
    store.record_results(
        view.job_id,
        [
            UserResult(row=op.row, user=op.user, status=UserStatus.FAILED, reason=reason,
                       graph_message=message, updated_at=now)
            for op in view.ops
        ],
    )
