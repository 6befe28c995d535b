"""Takes the pending users of one chunk to a terminal state: read, plan, then PATCH/assignLicense.

Layers, outside in: the Celery task (worker.celery_app) unpacks ids; `jobs.chunks.execute_chunk`
claims the chunk, hands it back, parks it or completes it; `run_users` (here) loads its pending
users and drives the round loop, each `_send_round` sending one `$batch` of their next steps.

Per user the steps are:

    READ    GET the user (`$select` of licenses and usage location). The first read makes the
            plan (jobs.plan): unchanged (no write), a predicted failure (no write) or a change;
            its `before` state is kept once in the store. A later read (after an ambiguous
            failure or a crash) compares with the planned `after` state, so a write is never
            blindly repeated.
    PATCH   set usageLocation (only when the plan changes it).
    ASSIGN  one assignLicense call with both addLicenses and removeLicenses (a swap is one call).

A rollback's operation (`location_last`) sends ASSIGN before PATCH: the licenses that needed the
location the job set are gone before the old one is put back.

A dry run stops after the plan. Items of many users go out together in `$batch` requests of up
to 20; throttled and transient items are retried individually under the one retry policy; every
user ends in exactly one terminal state, recorded atomically in the store. A tenant out of seats
pauses the job (`Parked`) instead of failing its remaining users one by one.

Faults of the whole tenant pause the job too, and cost the users nothing (the attempt is not
counted): Graph unreachable (the tenant's circuit breaker is open), the credentials refused
(`GraphAuthError`), or the app denied a step (403) when nothing shows the denial is the user's own:
a 403 is the app's when no call of that step succeeded in its round and either two users or more
were denied in the round or no call of that step has ever been allowed in this job.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NoReturn

from graphclient.breaker import ALWAYS_CLOSED, Breaker, BreakerState
from graphclient.client import BatchRequest, GraphClient
from graphclient.errors import (
    GraphAuthError,
    GraphError,
    GraphPermanentError,
    GraphThrottled,
    GraphTransientError,
    GraphUnavailable,
    ThrottleWaitTooLong,
)
from graphclient.retry import RetryPolicy, is_retryable
from jobs.catalogs import CatalogUnavailable
from jobs.events import NO_LISTENERS, JobEvent, Listeners
from jobs.models import Operation, PauseReason, Reason, UserResult, UserStatus, iso_time
from jobs.plan import Outcome, UserPlan, UserState, plan_user
from jobs.reasons import reason_for
from jobs.seats import SeatLedger
from jobs.skus import SkuCatalog
from jobs.store import JobStore, WriteGate

log = logging.getLogger(__name__)

USER_SELECT = ("id", "userPrincipalName", "usageLocation", "assignedLicenses")
# A write round a Redis replica did not confirm in time goes again after this.
UNREPLICATED_RETRY_S = 1.0

# Results that carry the operation's note: the user was (or would be) taken as far as it goes.
_NOTED = frozenset({UserStatus.SUCCEEDED, UserStatus.UNCHANGED, UserStatus.WOULD_CHANGE})

# What one item came back with: its body on success, else the error.
_Outcome = tuple[dict[str, Any] | None, GraphError | None]


class Step(Enum):
    """What a user needs next."""

    READ = "read"
    PATCH = "patch"
    ASSIGN = "assign"


class HandBack(Exception):
    """The chunk must wait longer than a worker slot should; requeue it after `countdown_s`."""

    def __init__(self, countdown_s: float) -> None:
        super().__init__(f"hand back for {countdown_s:.1f}s")
        self.countdown_s = countdown_s


class Parked(Exception):
    """The job is paused: the chunk stops here and waits, parked, until the job resumes."""


@dataclass
class _Work:
    """Mutable progress of one user within this run."""

    op: Operation
    step: Step = Step.READ
    plan: UserPlan | None = None
    attempts: int = 0
    failures: int = 0
    not_before: float = 0.0
    # (first "not found", latest, how many) while the user waits for the directory to replicate it.
    waited: tuple[float, float, int] | None = None
    # (whether the tenant was read page by page, the user's state then or None if absent): a
    # first read answered from it goes to no one.
    known: tuple[bool, dict[str, Any] | None] = (False, None)


@dataclass(frozen=True)
class ChunkDeps:
    """What running a chunk needs; built once per worker process and per tenant."""

    store: JobStore
    graph: GraphClient
    policy: RetryPolicy
    batch_size: int
    request_deadline_s: float
    catalog: Callable[[], SkuCatalog] = lambda: SkuCatalog(())
    seats: SeatLedger | None = None
    events: Listeners = NO_LISTENERS
    # A job paused for want of seats is first probed this long after the pause.
    seat_recheck_s: float = 60.0
    # How long a user Graph says does not exist is asked again (replication lag); 0 ends it at once.
    not_found_grace_s: float = 0.0
    # `$batch` requests of reads a chunk may have in flight at once (writes go one at a time).
    read_parallelism: int = 1
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    # The tenant's circuit breaker (the one `graph` reports to), asked whether Graph is unreachable.
    breaker: Breaker = ALWAYS_CLOSED
    # A run this long hands the chunk back between two rounds (None: never), so that no broker
    # message is held for longer than this and one round.
    max_run_s: float | None = None


@dataclass(frozen=True)
class _JobView:
    """What the round loop needs to know of the job it works for."""

    job_id: str
    tenant: str
    dry_run: bool
    # "input": the job reserved a seat per added license of every row, so a user found not to
    # need one gives it back at once; "plan": it reserved exactly what a dry run counted.
    seat_basis: str
    total: int


def run_users(deps: ChunkDeps, job_id: str, n: int, *, budget_started_at: float) -> int:
    """Take chunk n's pending users to a terminal state; returns how many results were recorded.

    Raises HandBack when every remaining user must wait longer than the policy's inline wait,
    and Parked when the job is (or becomes) paused.
    """
    store = deps.store
    ops = store.load_chunk(job_id, n)
    done = store.terminal_rows(job_id, [op.row for op in ops])
    pending_ops = [op for op in ops if op.row not in done]
    if not pending_ops:
        return 0
    if store.is_cancelled(job_id):
        return store.record(job_id, [_cancelled(op, 0, deps.clock()) for op in pending_ops])
    fields = store.job_fields(job_id, "tenant", "dry_run", "seat_basis", "total", "paused_reason", "prefetched")
    if "paused_reason" in fields:  # a paused job sends nothing, reads included, until it is resumed
        raise Parked(fields["paused_reason"])
    job = _JobView(job_id, fields.get("tenant", ""), fields.get("dry_run") == "1", fields.get("seat_basis", "input"),
                   int(fields.get("total", 0)))
    catalog = _catalog(deps, job_id, job.tenant)
    befores = store.befores(job_id, [op.row for op in pending_ops])
    prior = store.attempts(job_id, [op.row for op in pending_ops])
    known = store.prefetched(job_id, [op.user for op in pending_ops]) if "prefetched" in fields else {}
    work = []
    for op in pending_ops:
        w = _Work(op=op, attempts=prior.get(op.row, 0), known=(op.user in known, known.get(op.user)))
        if op.row in befores:  # planned in an earlier run: the read now checks against the plan
            raw = befores[op.row]
            w.plan = plan_user(op, UserState.from_json(raw) if raw is not None else None, catalog)
        work.append(w)
    return _RoundLoop(deps, job, catalog, budget_started_at).drain(work)


def _catalog(deps: ChunkDeps, job_id: str, tenant: str) -> SkuCatalog:
    """The tenant's SKU catalog; when it cannot be read for a reason of the whole tenant, the job pauses."""
    try:
        return deps.catalog()
    except CatalogUnavailable as exc:
        fault = None
        if exc.error is not None:
            fault = _tenant_fault(exc.error, deps.breaker.state)
            if fault is None and exc.error.status == 403:  # reading the tenant's SKUs is the app's permission
                fault = (PauseReason.FORBIDDEN, exc.error.message)
        if fault is None:
            raise
        _pause(deps, job_id, tenant, *fault)


def _tenant_fault(error: GraphError, breaker_state: Callable[[], BreakerState]) -> tuple[PauseReason, str] | None:
    """The pause a failure calls for when it is the whole tenant's, not one user's (403s aside)."""
    if isinstance(error, GraphUnavailable):
        return PauseReason.GRAPH_UNAVAILABLE, error.message
    if isinstance(error, GraphAuthError):
        return PauseReason.AUTH_FAILED, error.message
    if _no_answer(error):
        state = breaker_state()  # asked only after a transport failure or a 5xx
        if state.open:
            return PauseReason.GRAPH_UNAVAILABLE, state.message
    return None


def _no_answer(error: GraphError) -> bool:
    """Whether Graph gave no usable answer (transport failure, timeout, 5xx): what the breaker counts."""
    return isinstance(error, GraphTransientError) and (error.status is None or error.status >= 500)


def _pause(deps: ChunkDeps, job_id: str, tenant: str, reason: PauseReason, message: str) -> NoReturn:
    """Pause the job and stop this chunk (Parked).

    Automatic resumes get their first probe time: seats after the recheck interval, Graph when its
    breaker probes next. A refused credential or a denied app waits for someone to resume it.
    """
    next_probe_at: float | None = None
    if reason is PauseReason.NO_FREE_SEAT:
        next_probe_at = deps.clock() + deps.seat_recheck_s
    elif reason is PauseReason.GRAPH_UNAVAILABLE:
        next_probe_at = deps.breaker.state().next_probe_at or deps.clock()
    if deps.store.pause(job_id, reason, message, next_probe_at=next_probe_at):
        deps.events.job_event(job_id, tenant, JobEvent.PAUSED, {"reason": reason.value, "message": message})
    raise Parked(reason.value)


class _RoundLoop:
    """Sends rounds of the ready users' next steps, waiting out backoffs, until none is pending."""

    def __init__(self, deps: ChunkDeps, job: _JobView, catalog: SkuCatalog, budget_started_at: float) -> None:
        self.deps = deps
        self.job = job
        self.job_id = job.job_id
        self.catalog = catalog
        self.budget_started_at = budget_started_at
        self.recorded = 0
        self.pause: tuple[PauseReason, str] | None = None
        # Steps whose 403s in the current round are the app's, with the pause message (`_judge_round`).
        self.denied_steps: dict[Step, str] = {}
        # Steps Graph let the job's app do, as far as this run knows (kept in the store once each).
        self.allowed_steps: set[Step] = set()
        # The breaker's state, read at most once per round (at the first transport failure or 5xx).
        self.round_breaker: BreakerState | None = None
        # Write attempts (row -> count) the store counted that were not the users': refused or never
        # sent for a fault of the whole tenant, or lost to transport failures. Given back when the job
        # pauses (the latter only when it pauses because Graph is unreachable).
        self.uncharged_writes: Counter[int] = Counter()
        self.outage_writes: Counter[int] = Counter()
        self._pool: ThreadPoolExecutor | None = None
        self.started_at = deps.clock()
        self.unreplicated = 0  # write rounds held back because a Redis replica did not confirm
        # Seats per SKU the round's users gave back (taken, or not needed), released together.
        self.freed_seats: Counter[str] = Counter()  # for overlapping reads, made on first use

    def drain(self, work: list[_Work]) -> int:
        """Run rounds until every user of `work` is terminal; returns how many results were recorded."""
        try:
            return self._drain(work)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def _drain(self, work: list[_Work]) -> int:
        deps = self.deps
        pending = work
        rounds = 0
        while pending:
            now = deps.clock()
            if rounds and deps.max_run_s is not None and now - self.started_at >= deps.max_run_s:
                raise HandBack(0.0)  # long enough on this message: the rest goes back to the queue
            rounds += 1
            ready = [w for w in pending if w.not_before <= now]
            if not ready:
                wait_s = min(w.not_before for w in pending) - now
                # Users waiting for the directory to replicate them never hold a worker slot.
                if not deps.policy.waits_inline(wait_s) or all(w.waited is not None for w in pending):
                    raise HandBack(wait_s)
                deps.sleep(wait_s)
                continue
            reads = [w for w in ready if w.step is Step.READ]
            if deps.read_parallelism > 1 and len(reads) > deps.batch_size:
                finished: set[int] | None = self._send_reads(reads[: deps.batch_size * deps.read_parallelism])
            else:
                finished = self._send_round(ready[: deps.batch_size])
            if finished is None:  # cancelled before the writes went out
                now = deps.clock()
                self._record([_cancelled(w.op, w.attempts, now) for w in pending])
                return self.recorded
            pending = [w for w in pending if id(w) not in finished]
            if self.pause is not None:
                self._pause_job(*self.pause)
        return self.recorded

    def _pause_job(self, reason: PauseReason, message: str) -> NoReturn:
        self._give_back_attempts(reason)
        _pause(self.deps, self.job_id, self.job.tenant, reason, message)

    def _give_back_attempts(self, reason: str | None) -> None:
        """The job pauses (for `reason`; None: as the store says): uncount write attempts that were not the users'.

        Users already terminal keep their results; their counts no longer matter.
        """
        if reason is None:
            reason = self.deps.store.job_fields(self.job_id, "paused_reason").get("paused_reason")
        counts = self.uncharged_writes.copy()
        if reason == PauseReason.GRAPH_UNAVAILABLE:
            counts.update(self.outage_writes)
        self.deps.store.uncount_attempts(self.job_id, counts)
        self.uncharged_writes.clear()
        self.outage_writes.clear()

    def _send_reads(self, works: list[_Work]) -> set[int]:
        """Send several `$batch` requests of reads at once (reads change nothing, so they may overlap).

        A job's reads then keep pace with its writes: a chunk's first reads take one round trip
        instead of one per 20 users.
        """
        size = self.deps.batch_size
        groups = [works[i:i + size] for i in range(0, len(works), size)]
        prepared = [([self._request(str(i + 1), w) for i, w in enumerate(g)], g) for g in groups]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.deps.read_parallelism,
                                            thread_name_prefix="bulklicense-reads")
        futures = [self._pool.submit(self._post, requests, group) for requests, group in prepared]
        finished: set[int] = set()
        wait_s: float | None = None
        for (requests, group), future in zip(prepared, futures, strict=True):
            try:
                outcomes = future.result()
            except ThrottleWaitTooLong as exc:
                wait_s = max(wait_s or 0.0, exc.wait_s)
                continue
            finished |= self._apply_outcomes({r.id: w for r, w in zip(requests, group, strict=True)}, outcomes)
        if wait_s is not None:
            raise HandBack(wait_s)
        return finished

    def _send_round(self, round_work: list[_Work]) -> set[int] | None:
        """Send one batch; returns ids of works that reached a terminal state (None if cancelled)."""
        deps, store = self.deps, self.deps.store
        requests = [self._request(str(i + 1), w) for i, w in enumerate(round_work)]
        by_id = {r.id: w for r, w in zip(requests, round_work, strict=True)}
        write_rows = [w.op.row for w in round_work if w.step is not Step.READ]
        batch_id = uuid.uuid4().hex
        if write_rows:
            gate = store.begin_writes(self.job_id, batch_id, deps.clock() + deps.request_deadline_s, write_rows)
            if gate is WriteGate.CANCELLED:
                return None
            if gate is WriteGate.PAUSED:
                self._give_back_attempts(None)
                raise Parked("paused")
            if gate is WriteGate.UNREPLICATED:
                return self._hold_back(round_work)
            if gate is WriteGate.FIRST:
                deps.events.job_event(self.job_id, self.job.tenant, JobEvent.STARTED, {})
        try:
            try:
                outcomes = self._post(requests, round_work)
            except ThrottleWaitTooLong as exc:
                raise HandBack(exc.wait_s) from None
        finally:
            if write_rows:
                store.end_writes(self.job_id, batch_id)
        return self._apply_outcomes(by_id, outcomes)

    def _hold_back(self, round_work: list[_Work]) -> set[int]:
        """No Redis replica confirmed the job's state: nothing is sent or charged; the round goes again shortly."""
        log.log(logging.DEBUG if self.unreplicated else logging.WARNING,
                "job %s: a Redis replica did not confirm the job's state; writes wait", self.job_id)
        self.unreplicated += 1
        retry_at = self.deps.clock() + UNREPLICATED_RETRY_S
        for w in round_work:
            w.not_before = retry_at
        return set()

    @staticmethod
    def _request(rid: str, w: _Work) -> BatchRequest:
        op = w.op
        if w.step is Step.READ:
            return BatchRequest.get_user(rid, op.user, USER_SELECT)
        if w.step is Step.PATCH:
            return BatchRequest.update_user(rid, op.user, {"usageLocation": op.usage_location})
        return BatchRequest.assign_license(rid, op.user, *_assignment(w))

    def _post(self, requests: list[BatchRequest], works: list[_Work]) -> dict[str, _Outcome]:
        """Send the items, as one `$batch` or (for a single item, where batching buys nothing) one plain call.

        A first read the tenant's page-by-page listing answers is not sent at all.
        """
        answered = {r.id: _known(w) for r, w in zip(requests, works, strict=True)
                    if w.step is Step.READ and w.plan is None and w.known[0]}
        if answered:
            rest = [(r, w) for r, w in zip(requests, works, strict=True) if r.id not in answered]
            return {**answered, **(self._post([r for r, _ in rest], [w for _, w in rest]) if rest else {})}
        graph = self.deps.graph
        if len(requests) == 1:
            return {requests[0].id: self._call_one(works[0])}
        try:
            results = graph.batch(requests)
        except GraphError as exc:  # the whole batch failed: every item shares the outcome
            return {r.id: (None, exc) for r in requests}
        out: dict[str, _Outcome] = {}
        for r in requests:
            item = results.get(r.id)
            if item is None:
                out[r.id] = (None, GraphError("no response for batch item", ambiguous=True))
            else:
                body = item.body if isinstance(item.body, dict) else None
                out[r.id] = (body, item.error)
        return out

    def _call_one(self, w: _Work) -> _Outcome:
        """The step of one user as a plain Graph call."""
        graph, op = self.deps.graph, w.op
        try:
            if w.step is Step.READ:
                return graph.get_user(op.user, USER_SELECT), None
            if w.step is Step.PATCH:
                graph.update_user(op.user, {"usageLocation": op.usage_location})
                return {}, None
            return graph.assign_license(op.user, *_assignment(w)), None
        except GraphError as exc:
            return None, exc

    def _apply_outcomes(self, by_id: dict[str, _Work], outcomes: dict[str, _Outcome]) -> set[int]:
        """Count each item's attempt and move its user on, retry it or end it; returns ids of ended works."""
        now = self.deps.clock()
        terminal: list[UserResult] = []
        finished: set[int] = set()
        new_plans: list[_Work] = []
        throttled = retries = 0
        self._judge_round(by_id, outcomes)
        for rid, w in by_id.items():
            body, error = outcomes[rid]
            w.attempts += 1
            result: UserResult | None = None
            if error is not None and self._waits_for_replication(w, error, now):
                pass  # asked again later, within the grace: the directory may not have it yet
            elif w.step is Step.READ and w.plan is None and (error is None or _not_found(error)):
                w.plan = plan_user(w.op, UserState.from_graph(body or {}) if error is None else None, self.catalog)
                new_plans.append(w)
                result = self._after_plan(w, now, read_error=error)
                if result is not None and error is not None and w.waited is not None:
                    result = self._with_wait(result, w)
            elif error is None:
                result = self._advance(w, body or {}, now)
            else:
                if isinstance(error, GraphThrottled):
                    throttled += 1
                result = self._failed_attempt(w, error, now)
                if result is None and self.pause is None:
                    retries += 1
                elif result is not None and w.waited is not None:
                    result = self._with_wait(result, w)
            if result is not None:
                terminal.append(result)
                finished.add(id(w))
            elif error is None and w.waited is not None:
                self._appeared(w)
        self._save_plans(new_plans)
        self.deps.store.bump(self.job_id, throttled=throttled, retries=retries)
        self._record(terminal)
        if self.freed_seats and self.deps.seats is not None:  # one step for the whole round's users
            self.deps.seats.release_many(self.job_id, self.freed_seats)
            self.freed_seats.clear()
        return finished

    def _save_plans(self, works: Sequence[_Work]) -> None:
        """Keep the new plans' before states and counters (once per user, whatever the restarts)."""
        entries = []
        for w in works:
            plan = w.plan
            assert plan is not None
            before = plan.before.to_json() if plan.before is not None else None
            entries.append((w.op.row, before, _plan_counters(plan)))
            if not self.job.dry_run:
                self._release_unneeded(w.op, plan)
        new_rows, planned = self.deps.store.save_plans(self.job_id, entries)
        if new_rows and planned >= self.job.total > planned - len(new_rows):  # this round planned the last user
            summary = self.deps.store.plan_counters(self.job_id)
            self.deps.events.job_event(self.job_id, self.job.tenant, JobEvent.PLAN_FINISHED, summary)

    def _after_plan(self, w: _Work, now: float, read_error: GraphError | None = None) -> UserResult | None:
        """The first read made the plan: end the user (dry run, unchanged, predicted failure) or write.

        `read_error` is Graph's answer when the read itself said the user does not exist.
        """
        plan = w.plan
        assert plan is not None
        if self.job.dry_run:
            return self._planned_result(w, plan, now)
        if plan.outcome is Outcome.UNCHANGED:
            return self._result(w, UserStatus.UNCHANGED, now, detail="already in the requested state")
        if plan.outcome is Outcome.FAIL:
            self._release(w)
            return self._result(w, UserStatus.FAILED, now, reason=plan.reason, message=plan.message,
                                error=read_error, detail="known from the user's state; nothing was sent")
        w.step = Step.PATCH if plan.set_location and not (plan.assign and w.op.location_last) else Step.ASSIGN
        return None

    def _planned_result(self, w: _Work, plan: UserPlan, now: float) -> UserResult:
        """A dry run's result: what would happen, and why."""
        if plan.outcome is Outcome.UNCHANGED:
            return self._result(w, UserStatus.UNCHANGED, now, detail="already in the requested state")
        if plan.outcome is Outcome.FAIL:
            note = "new accounts may take a while to appear" if plan.reason == Reason.USER_NOT_FOUND else None
            return self._result(w, UserStatus.WOULD_FAIL, now, reason=plan.reason, message=plan.message,
                                detail=note)
        return self._result(w, UserStatus.WOULD_CHANGE, now)

    def _advance(self, w: _Work, body: dict[str, Any], now: float) -> UserResult | None:
        """A step succeeded: move the user on, or return its terminal result."""
        plan = w.plan
        assert plan is not None
        if self.job.dry_run or plan.outcome is not Outcome.CHANGE or plan.after is None:
            return self._after_plan(w, now)  # planned before a restart; ends without a write
        if w.step is Step.READ:  # a check after an ambiguous write or a crash
            state = UserState.from_graph(body)
            if state.same_as(plan.after):
                return self._succeeded(w, now, detail="already in the requested state")
            location_left = plan.set_location and state.usage_location != plan.after.usage_location
            licenses_left = state.held() != plan.after.held()
            if licenses_left and (w.op.location_last or not location_left):
                w.step = Step.ASSIGN
            elif location_left:
                w.step = Step.PATCH
            else:
                return self._succeeded(w, now)
            return None
        if w.step is Step.PATCH and plan.assign and not w.op.location_last:
            w.step = Step.ASSIGN
            return None
        if w.step is Step.ASSIGN and plan.set_location and w.op.location_last:
            w.step = Step.PATCH
            return None
        return self._succeeded(w, now)

    def _judge_round(self, by_id: dict[str, _Work], outcomes: dict[str, _Outcome]) -> None:
        """Before a round's outcomes are applied: note the steps Graph allowed, and judge its 403s.

        A step's 403s are the app's (the job pauses as forbidden) when no call of that step got past
        Graph's authorization in the round and either two users or more were denied or no call of
        it was ever allowed in this job. Otherwise they are the users' own (an administrative unit
        with restricted management, a protected account) and those users fail as forbidden.
        """
        self.round_breaker = None
        denied: dict[Step, list[GraphError]] = {}
        allowed: set[Step] = set()
        for rid, w in by_id.items():
            error = outcomes[rid][1]
            if error is None or (isinstance(error, GraphPermanentError) and not isinstance(error, GraphAuthError)
                                 and error.status != 403):
                allowed.add(w.step)  # authorized, even if Graph then refused the change itself
            elif error.status == 403:
                denied.setdefault(w.step, []).append(error)
        for step in sorted(allowed - self.allowed_steps, key=lambda s: s.value):
            self.deps.store.note_allowed(self.job_id, step.value)
            self.allowed_steps.add(step)
        self.denied_steps = {
            step: f"the app may not {_STEP_ACTIONS[step]} ({len(errors)} user(s) refused): {errors[0].message}"
            for step, errors in denied.items()
            if step not in allowed and (len(errors) >= 2 or not self._ever_allowed(step))
        }

    def _ever_allowed(self, step: Step) -> bool:
        """Whether a call of `step` got past Graph's authorization in this job (any run, any worker)."""
        if step not in self.allowed_steps and self.deps.store.job_fields(self.job_id, f"allowed:{step.value}"):
            self.allowed_steps.add(step)
        return step in self.allowed_steps

    def _failed_attempt(self, w: _Work, error: GraphError, now: float) -> UserResult | None:
        """A step failed: schedule a retry, pause the job, or return the terminal failure."""
        deps = self.deps
        reason = reason_for(error)
        if w.step is Step.ASSIGN and reason is Reason.NO_FREE_SEAT:
            # Another tool took the seats: the user waits with the job instead of failing.
            self.pause = (PauseReason.NO_FREE_SEAT, error.message or "no free seat")
            return None
        fault = self._tenant_fault(w, error)
        if fault is not None:
            # Not the user's doing: the attempt is not counted, and the job pauses after this round.
            w.attempts -= 1
            if w.step is not Step.READ:
                self.uncharged_writes[w.op.row] += 1
            self.pause = self.pause or fault
            return None
        if isinstance(error, GraphPermanentError):
            return self._failed(w, now, error)
        if _no_answer(error) and w.step is not Step.READ:
            self.outage_writes[w.op.row] += 1
        w.failures += 1
        elapsed_s = now - self.budget_started_at
        # The wait itself is not charged to the budget here: a retry planned inside it still goes
        # out (perhaps after a hand-back), and the budget is checked again if it fails.
        if not (is_retryable(error) and deps.policy.may_retry(w.failures, elapsed_s)):
            return self._failed(w, now, error, reason=Reason.RETRIES_EXHAUSTED)
        if error.ambiguous and w.step is not Step.READ:
            w.step = Step.READ  # the write may have been applied: read before deciding to resend
        w.not_before = now + deps.policy.backoff_s(w.failures, error, deps.rng)
        return None

    def _waits_for_replication(self, w: _Work, error: GraphError, now: float) -> bool:
        """Whether to ask again later for a user Graph does not know yet, or that still lacks the location
        this job set (Graph's directory is eventually consistent); False once the grace is over.

        The wait is scheduled like a backoff (2, 4, 8, 16, 30, 30 ... s, the last one at the end of the
        grace): other users go on meanwhile, and a chunk left with only waiting users is handed back
        to the broker, so the wait never holds a worker slot.
        """
        grace_s = self.deps.not_found_grace_s
        if grace_s <= 0 or self.job.dry_run:
            return False
        not_found = _not_found(error)
        location_lag = (w.step is Step.ASSIGN and w.plan is not None and w.plan.set_location
                        and reason_for(error) in (Reason.USAGE_LOCATION_MISSING, Reason.INVALID_USAGE_LOCATION))
        if not (not_found or location_lag):
            return False
        first, count = self.deps.store.note_not_found(self.job_id, w.op.row, now)
        w.waited = (first, now, count)
        if now - first >= grace_s:
            self.deps.store.not_found_over(self.job_id, w.op.row)
            return False
        w.not_before = now + min(2.0 ** min(count, 5), 30.0, first + grace_s - now)
        return True

    def _appeared(self, w: _Work) -> None:
        """A user that was waiting for replication answered: it no longer waits."""
        self.deps.store.not_found_over(self.job_id, w.op.row)
        w.waited = None

    @staticmethod
    def _with_wait(result: UserResult, w: _Work) -> UserResult:
        """A user given up after the grace: say how long it was waited for."""
        assert w.waited is not None
        first, last, count = w.waited
        note = (f"given up after {last - first:.0f} s of waiting for the directory to catch up "
                f"({count} answers, the first at {iso_time(first)}, the last at {iso_time(last)})")
        return dataclasses.replace(result, detail=note)

    def _tenant_fault(self, w: _Work, error: GraphError) -> tuple[PauseReason, str] | None:
        """The pause this failure calls for when it is the whole tenant's, not the user's."""
        if error.status == 403 and w.step in self.denied_steps:
            return PauseReason.FORBIDDEN, self.denied_steps[w.step]
        return _tenant_fault(error, self._breaker_state)

    def _breaker_state(self) -> BreakerState:
        if self.round_breaker is None:
            self.round_breaker = self.deps.breaker.state()
        return self.round_breaker

    # --- results ----------------------------------------------------------------------------
    def _result(self, w: _Work, status: UserStatus, now: float, *, reason: str | None = None,
                message: str | None = None, detail: str | None = None, error: GraphError | None = None,
                after: bool = False) -> UserResult:
        """One user's terminal result, with the plan's before (and, once changed, after) state."""
        plan = w.plan
        changed = plan is not None and plan.outcome is Outcome.CHANGE
        if w.op.note and status in _NOTED:  # what the operation cannot do (a rollback's), told with its outcome
            detail = f"{detail}; {w.op.note}" if detail else w.op.note
        return UserResult(
            row=w.op.row, user=w.op.user, status=status, reason=reason,
            graph_code=error.code if error else None,
            graph_message=error.message if error else message,
            http_status=error.status if error else None,
            attempts=w.attempts, updated_at=now, detail=detail,
            before=plan.before.to_json() if plan is not None and plan.before is not None else None,
            after=plan.after.to_json() if after and plan is not None and plan.after is not None else None,
            action=plan.action(self.catalog) if changed and plan is not None else None,
            warnings=plan.warnings if plan is not None else (),
        )

    def _succeeded(self, w: _Work, now: float, detail: str | None = None) -> UserResult:
        self._release(w)
        return self._result(w, UserStatus.SUCCEEDED, now, detail=detail, after=True)

    def _failed(self, w: _Work, now: float, error: GraphError, reason: Reason | None = None) -> UserResult:
        self._release(w)
        return self._result(w, UserStatus.FAILED, now, reason=reason or reason_for(error), error=error)

    # --- seats ------------------------------------------------------------------------------
    def _release_unneeded(self, op: Operation, plan: UserPlan) -> None:
        """Give back at once the seats reserved for this user that its plan does not need."""
        seats = self.deps.seats
        if seats is None or self.job.seat_basis != "input":
            return
        needed = set(plan.seats_needed) if plan.outcome is Outcome.CHANGE else set()
        for add in op.add:
            if add.sku_id.lower() not in needed:
                self.freed_seats[add.sku_id.lower()] += 1

    def _release(self, w: _Work) -> None:
        """The user's planned seats are taken (now in consumedUnits) or will not be: drop them."""
        seats, plan = self.deps.seats, w.plan
        if seats is None or self.job.dry_run or plan is None or plan.outcome is not Outcome.CHANGE:
            return
        self.freed_seats.update(plan.seats_needed)

    def _record(self, results: Sequence[UserResult]) -> None:
        if results:
            self.recorded += self.deps.store.record(self.job_id, results)
            self.deps.events.users_finished(self.job_id, self.job.tenant, results)


_STEP_ACTIONS = {Step.READ: "read users", Step.PATCH: "set usageLocation", Step.ASSIGN: "assign licenses"}


def _known(w: _Work) -> _Outcome:
    """A first read answered from the tenant's page-by-page listing: the user's state, or not found."""
    state = w.known[1]
    if state is not None:
        return state, None
    message = f"'{w.op.user}' was not among the tenant's users when they were listed"
    return None, GraphPermanentError(message, status=404, code="Request_ResourceNotFound")


def _not_found(error: GraphError) -> bool:
    return error.status == 404 or error.code == "Request_ResourceNotFound"


def _plan_counters(plan: UserPlan) -> list[str]:
    """The plan counters one user's plan moves (see jobs.store's key map)."""
    if plan.outcome is Outcome.UNCHANGED:
        return ["unchanged"]
    if plan.outcome is Outcome.FAIL:
        return [f"fail:{plan.reason}"]
    counters = ["changes", *(f"need:{sku}" for sku in plan.seats_needed),
                *(f"release:{sku}" for sku in plan.seats_released)]
    if plan.warnings:
        counters.append("warn:may_conflict")
    return counters


def _assignment(w: _Work) -> tuple[list[dict[str, Any]], list[str]]:
    """The assignLicense lists: what the user's plan adds and removes (mode=exact works them out from its state)."""
    adds, removes = (w.plan.add, w.plan.remove) if w.plan is not None else (w.op.add, w.op.remove)
    return [{"skuId": a.sku_id, "disabledPlans": list(a.disabled_plans)} for a in adds], list(removes)


def _cancelled(op: Operation, attempts: int, now: float) -> UserResult:
    return UserResult(row=op.row, user=op.user, status=UserStatus.CANCELLED, reason=Reason.CANCELLED,
                      attempts=attempts, updated_at=now)
