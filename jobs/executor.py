"""Takes the pending users of one chunk to a terminal state, round by round: the round driver.

`run_users` reads the chunk once (`JobStore.chunk_view`) and hands its pending users to a
`RoundDriver`, which sends rounds of their next steps (jobs.steps) until none is pending. A round
is one `$batch` of up to 20 items (reads, which change nothing, may go out as several batches at
once, and the users of each are planned, then written, as soon as its answers are in); its answers
are judged for faults of the whole tenant (jobs.faults), then applied user by user. After each
round the driver keeps the new plans, counts throttled answers and retries, writes the results of
the users that ended (atomically, once per user) and gives back the seats they no longer need.

When every remaining user must wait longer than the retry policy's inline wait, or the run has
held its broker message `max_run_s`, the chunk is handed back (`HandBack`); a fault of the whole
tenant or a seat shortage pauses the job (`Parked`); a cancel stops the users before the next write
goes out. A write round no Redis replica confirmed the job's state for (`WriteGate.UNREPLICATED`)
is held back: nothing is sent or charged, and its users go again after `UNREPLICATED_RETRY_S`.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import NoReturn

from graphclient.breaker import ALWAYS_CLOSED, Breaker, BreakerState
from graphclient.client import GraphClient
from graphclient.errors import GraphError, GraphThrottled, ThrottleWaitTooLong
from graphclient.retry import RetryPolicy
from jobs import faults, steps
from jobs.catalogs import CatalogUnavailable
from jobs.counters import day_keys, plan_keys
from jobs.events import NO_LISTENERS, JobEvent, Listeners
from jobs.faults import Fault, Judgement
from jobs.group_names import GroupNames, unnamed_groups, with_group_names
from jobs.models import PauseReason, UserResult
from jobs.plan import PlanOutcome, UserState, plan_user
from jobs.quotas import QuotaLedger
from jobs.record import JobRecord, SeatBasis
from jobs.seats import SeatLedger
from jobs.skus import SkuCatalog
from jobs.steps import Answer, Ending, Retry, Step, UserWork, Waited
from jobs.store import ChunkView, JobStore, WriteGate

log = logging.getLogger(__name__)

# A write round a Redis replica did not confirm in time goes again after this.
UNREPLICATED_RETRY_S = 1.0


class HandBack(Exception):
    """The chunk must wait longer than a worker slot should, or ran long enough; requeue it after `countdown_s`."""

    def __init__(self, countdown_s: float) -> None:
        super().__init__(f"hand back for {countdown_s:.1f}s")
        self.countdown_s = countdown_s


class Parked(Exception):
    """The job is paused: the chunk stops here and waits, parked, until the job resumes."""


class ClaimLost(Exception):
    """The chunk is no longer claimed by this run (lost with a failed-over primary, or requeued): it stops unwritten."""


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
    # Where results get the display names of the groups users inherit licenses from (None: ids only).
    group_names: GroupNames | None = None
    # Where a scan-built job's rows are counted once its scan found them (None: quotas not counted here).
    quotas: QuotaLedger | None = None


def run_users(deps: ChunkDeps, job_id: str, n: int, *, budget_started_at: float,
              view: ChunkView | None = None, claim: str | None = None) -> int:
    """Take chunk n's pending users to a terminal state; returns how many results were written.

    `view` is the chunk as the store holds it (read here when not given); `claim` the run's claim of
    it (`jobs.store.claim_value`), without which no write goes out. Raises HandBack when every
    remaining user must wait longer than the policy's inline wait, Parked when the job is (or
    becomes) paused, and ClaimLost when another run may hold the chunk.
    """
    store = deps.store
    view = view or store.chunk_view(job_id, n)
    pending, job = view.pending, view.record
    if not pending or job is None:
        return 0
    if job.cancel_requested:
        return store.record_results(job_id, [steps.cancelled(op, 0, deps.clock()) for op in pending])
    if job.pause is not None:  # a paused job sends nothing, reads included, until it is resumed
        raise Parked(job.pause.reason.value)
    catalog = _catalog(deps, job)
    known = store.prefetched(job_id, [op.user for op in pending]) if job.prefetched else {}
    works = []
    for op in pending:
        work = UserWork(op=op, known=(op.user in known, known.get(op.user)))
        if op.row in view.befores:  # planned in an earlier run: the read now checks against the plan
            before = view.befores[op.row]
            work.plan = plan_user(op, UserState.from_json(before) if before is not None else None, catalog)
        works.append(work)
    driver = RoundDriver(deps, job, catalog, budget_started_at, AttemptBook(view.attempts),
                         claim=(n, claim) if claim is not None else None)
    return driver.drain(works)


def _catalog(deps: ChunkDeps, job: JobRecord) -> SkuCatalog:
    """The tenant's SKU catalog; when it cannot be read for a reason of the whole tenant, the job pauses."""
    try:
        return deps.catalog()
    except CatalogUnavailable as exc:
        fault = faults.catalog_fault(exc.error, deps.breaker.state) if exc.error is not None else None
        if fault is None:
            raise
        pause_job(deps, job, fault)


def pause_job(deps: ChunkDeps, job: JobRecord, fault: Fault) -> NoReturn:
    """Pause the job and stop this chunk (Parked).

    Automatic resumes get their first probe time: seats after the recheck interval, Graph when its
    breaker probes next. A refused credential or a denied app waits for someone to resume it.
    """
    next_probe_at: float | None = None
    if fault.reason is PauseReason.NO_FREE_SEAT:
        next_probe_at = deps.clock() + deps.seat_recheck_s
    elif fault.reason is PauseReason.GRAPH_UNAVAILABLE:
        next_probe_at = deps.breaker.state().next_probe_at or deps.clock()
    if deps.store.pause(job.id, fault.reason, fault.message, next_probe_at=next_probe_at):
        deps.events.job_event(job.id, job.tenant, JobEvent.PAUSED,
                              {"reason": fault.reason.value, "message": fault.message})
    raise Parked(fault.reason.value)


class AttemptBook:
    """Each user's attempts in this run, and the write attempts the store counted that were not the users'.

    Every answered step counts one toward the user's result, on top of the writes sent before (as
    the store counted them). A fault of the whole tenant gives the user its attempt back. Write
    attempts such a fault met, and those lost without an answer, are taken back in the store when
    the job pauses (the lost ones only when it pauses because Graph is unreachable).
    """

    def __init__(self, prior: Mapping[int, int]) -> None:
        self._counts: Counter[int] = Counter(prior)
        self._not_theirs: Counter[int] = Counter()  # refused or never sent for a fault of the tenant
        self._lost: Counter[int] = Counter()  # sent, and no answer came

    def of(self, row: int) -> int:
        """The user's attempts so far."""
        return self._counts[row]

    def answered(self, work: UserWork) -> None:
        """A step of the user got an answer (or a failure)."""
        self._counts[work.row] += 1

    def not_theirs(self, work: UserWork) -> None:
        """The answer was a fault of the whole tenant: the attempt is not the user's."""
        self._counts[work.row] -= 1
        if work.step is not Step.READ:
            self._not_theirs[work.row] += 1

    def lost(self, work: UserWork) -> None:
        """A write went out and Graph gave no answer."""
        if work.step is not Step.READ:
            self._lost[work.row] += 1

    def give_back(self, store: JobStore, job_id: str, reason: PauseReason | None) -> None:
        """The job pauses for `reason`: take back in the store the write attempts that were not the users'."""
        counts = self._not_theirs.copy()
        if reason is PauseReason.GRAPH_UNAVAILABLE:
            counts.update(self._lost)
        store.uncount_attempts(job_id, counts)
        self._not_theirs.clear()
        self._lost.clear()


class SeatReturns:
    """Seats the round's users give back (taken, or found not needed), released in one step after the round."""

    def __init__(self, seats: SeatLedger | None, job: JobRecord) -> None:
        self._seats = seats
        self._job = job
        self._freed: Counter[str] = Counter()

    def planned(self, work: UserWork) -> None:
        """A new plan: the seats reserved for the user's row that the plan does not need go back at once.

        Only for a reservation counted from the input (a seat per added license of every row).
        """
        plan = work.plan
        if self._seats is None or self._job.spec.seat_basis is not SeatBasis.INPUT or plan is None:
            return
        needed = set(plan.seats_needed) if plan.outcome is PlanOutcome.CHANGE else set()
        self._freed.update(sku for sku in (a.sku_id.lower() for a in work.op.add) if sku not in needed)

    def ended(self, work: UserWork, ending: Ending) -> None:
        """The user ended: the seats its plan took are in consumedUnits now (or will never be taken)."""
        if self._seats is not None:
            self._freed.update(steps.seats_taken(work, ending, dry_run=self._job.spec.plans_only))

    def flush(self) -> None:
        """Release what the round's users gave back."""
        if self._freed and self._seats is not None:
            self._seats.release_many(self._job.id, self._freed)
        self._freed.clear()


class ReplicationWaits:
    """Users Graph does not know yet (or that lack the location just set), asked again within the grace.

    Each such answer is counted in the store, which lists the users waiting (the progress shows how many).
    """

    def __init__(self, store: JobStore, job_id: str, grace_s: float) -> None:
        self._store = store
        self._job_id = job_id
        self._grace_s = grace_s

    def wait(self, work: UserWork, error: GraphError, now: float) -> bool:
        """Whether to ask again later (the user's `not_before` is set); False once the grace is over."""
        if self._grace_s <= 0 or not steps.waits_for_replication(work, error):
            return False
        first, count = self._store.note_not_found(self._job_id, work.row, now)
        work.waited = Waited(first, now, count)
        retry_at = steps.replication_retry_at(work.waited, self._grace_s)
        if retry_at is None:
            self._store.not_found_over(self._job_id, work.row)
            return False
        work.not_before = retry_at
        return True

    def appeared(self, work: UserWork) -> None:
        """A user that was waiting answered: it no longer waits."""
        self._store.not_found_over(self._job_id, work.row)
        work.waited = None


class AllowedSteps:
    """The steps Graph let the job's app do, as far as this run knows; each is noted in the store once."""

    def __init__(self, store: JobStore, job: JobRecord) -> None:
        self._store = store
        self._job_id = job.id
        self._known = {step for step in Step if step.value in job.allowed}

    def judge(self, answers: Iterable[tuple[Step, GraphError | None]]) -> Judgement:
        """Judge a round's answers (jobs.faults), noting the steps it showed allowed."""
        judgement = faults.judge_round(answers, self._ever)
        for step in sorted(judgement.allowed - self._known, key=lambda s: s.value):
            self._store.note_allowed(self._job_id, step.value)
            self._known.add(step)
        return judgement

    def _ever(self, step: Step) -> bool:
        """Whether a call of `step` got past Graph's authorization in this job (any run, any worker)."""
        if step not in self._known and self._store.is_allowed(self._job_id, step.value):
            self._known.add(step)
        return step in self._known


@dataclass
class _RoundTally:
    """What one round's answers added up to."""

    ended: list[UserResult] = field(default_factory=list)
    new_plans: list[UserWork] = field(default_factory=list)
    throttled: int = 0
    retries: int = 0


class RoundDriver:
    """Sends rounds of the ready users' next steps, waiting out backoffs, until none is pending."""

    def __init__(self, deps: ChunkDeps, job: JobRecord, catalog: SkuCatalog, budget_started_at: float,
                 attempts: AttemptBook, claim: tuple[int, str] | None = None) -> None:
        self.deps = deps
        self.claim = claim  # the chunk and the run's claim of it, checked as each write round is registered
        self.job = job
        self.catalog = catalog
        self.budget_started_at = budget_started_at
        self.attempts = attempts
        self.seats = SeatReturns(deps.seats, job)
        self.waits = ReplicationWaits(deps.store, job.id, 0.0 if job.spec.plans_only else deps.not_found_grace_s)
        self.written = 0
        self.pause: Fault | None = None
        self.allowed = AllowedSteps(deps.store, job)
        self.started_at = deps.clock()
        self.held_back = 0  # write rounds held back because a Redis replica did not confirm
        self._pool: ThreadPoolExecutor | None = None  # for overlapping reads, made on first use
        self._unnamed: set[str] = set()  # groups Graph did not name in this run: not asked again
        self._reads: dict[Future[dict[int, Answer]], list[UserWork]] = {}  # read batches in flight
        self._reading: set[int] = set()  # their rows
        self._hand_back_s: float | None = None  # a read Graph held back this long: the chunk goes back

    def drain(self, works: list[UserWork]) -> int:
        """Run rounds until every user is terminal; returns how many results were written."""
        try:
            return self._drain(works)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def _drain(self, pending: list[UserWork]) -> int:
        deps = self.deps
        rounds = 0
        while pending:
            now = deps.clock()
            if rounds and self._ran_long_enough(now):
                raise HandBack(0.0)  # long enough on this message: the rest goes back to the queue
            rounds += 1
            ready = [w for w in pending if w.not_before <= now and w.row not in self._reading]
            if not ready and not self._reads:
                wait_s = min(w.not_before for w in pending) - now
                # Users waiting for the directory to replicate them never hold a worker slot.
                if not deps.policy.waits_inline(wait_s) or all(w.waited is not None for w in pending):
                    raise HandBack(wait_s)
                deps.sleep(wait_s)
                continue
            ended = self._next_round(ready)
            if ended is None:  # cancelled before the writes went out
                now = deps.clock()
                self._write([steps.cancelled(w.op, self.attempts.of(w.row), now) for w in pending])
                return self.written
            pending = [w for w in pending if w.row not in ended]
            if self.pause is not None:
                self.attempts.give_back(deps.store, self.job.id, self.pause.reason)
                pause_job(deps, self.job, self.pause)
        return self.written

    def _next_round(self, ready: list[UserWork]) -> set[int] | None:
        """One round; returns the rows that ended (None: the job was cancelled, nothing was written).

        A chunk with more reads than one `$batch` sends them as several at once, and each batch's
        users are planned as soon as its answers are in: their writes go out while the chunk's
        other reads are still on their way.
        """
        deps = self.deps
        reads = [w for w in ready if w.step is Step.READ]
        if deps.read_parallelism <= 1 or (len(reads) <= deps.batch_size and not self._reads):
            return self._send_round(ready[: deps.batch_size])
        self._start_reads(reads)
        writes = [w for w in ready if w.step is not Step.READ]
        written = self._send_round(writes[: deps.batch_size]) if writes else set()
        if written is None:
            return None
        return written | self._planned_reads(block=not writes)

    # --- sending ----------------------------------------------------------------------------
    def _start_reads(self, works: list[UserWork]) -> None:
        """Send reads as `$batch` requests in the background, up to `read_parallelism` in flight."""
        size = self.deps.batch_size
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.deps.read_parallelism,
                                            thread_name_prefix="bulklicense-reads")
        free = self.deps.read_parallelism - len(self._reads)
        for i in range(0, min(len(works), free * size), size):
            group = works[i:i + size]
            self._reads[self._pool.submit(self._post, group)] = group
            self._reading.update(w.row for w in group)

    def _planned_reads(self, *, block: bool) -> set[int]:
        """Apply the read batches that have answered (waiting for one when `block`); returns the rows that ended.

        A read Graph holds back for longer than the policy waits inline hands the chunk back, once
        the other reads in flight have answered.
        """
        if not self._reads:
            return set()
        done, _ = wait(self._reads, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        ended: set[int] = set()
        for future in done:
            ended |= self._landed(future)
        if self._hand_back_s is not None:
            for future in list(self._reads):
                ended |= self._landed(future)
            raise HandBack(self._hand_back_s)
        return ended

    def _landed(self, future: Future[dict[int, Answer]]) -> set[int]:
        """Apply one read batch's answers (waiting for them); returns the rows that ended."""
        group = self._reads.pop(future)
        self._reading.difference_update(w.row for w in group)
        try:
            answers = future.result()
        except ThrottleWaitTooLong as exc:
            self._hand_back_s = max(self._hand_back_s or 0.0, exc.wait_s)
            return set()
        return self._apply(group, answers)

    def _send_round(self, works: list[UserWork]) -> set[int] | None:
        """Send one round; returns the rows that ended (None: the job was cancelled, nothing was sent)."""
        deps, store = self.deps, self.deps.store
        write_rows = [w.row for w in works if w.step is not Step.READ]
        batch_id = uuid.uuid4().hex
        if write_rows:
            gate = store.begin_writes(self.job.id, batch_id, deps.clock() + deps.request_deadline_s, write_rows,
                                      claim=self.claim)
            if gate is WriteGate.NOT_CLAIMED:  # another run may be writing these users: never both
                raise ClaimLost(self.job.id)
            if gate is WriteGate.CANCELLED:
                return None
            if gate is WriteGate.PAUSED:  # paused meanwhile, by another chunk or the resumer
                record = store.job(self.job.id)
                reason = record.pause.reason if record is not None and record.pause is not None else None
                self.attempts.give_back(store, self.job.id, reason)
                raise Parked(reason.value if reason else "paused")
            if gate is WriteGate.UNREPLICATED:  # nothing was registered: nothing is sent or charged
                return self._hold_back(works)
            if gate is WriteGate.FIRST:
                deps.events.job_event(self.job.id, self.job.tenant, JobEvent.STARTED, {})
        try:
            try:
                answers = self._post(works)
            except ThrottleWaitTooLong as exc:
                raise HandBack(exc.wait_s) from None
        finally:
            if write_rows:
                store.end_writes(self.job.id, batch_id)
        return self._apply(works, answers)

    def _hold_back(self, works: Sequence[UserWork]) -> set[int]:
        """No Redis replica confirmed the job's state: the round goes again shortly; no user ended."""
        log.log(logging.DEBUG if self.held_back else logging.WARNING,
                "job %s: a Redis replica did not confirm the job's state; writes wait", self.job.id)
        self.held_back += 1
        retry_at = self.deps.clock() + UNREPLICATED_RETRY_S
        for work in works:
            work.not_before = retry_at
        return set()

    def _ran_long_enough(self, now: float) -> bool:
        """Whether this run has held its broker message `max_run_s`: the chunk hands itself back."""
        return self.deps.max_run_s is not None and now - self.started_at >= self.deps.max_run_s

    def _post(self, works: Sequence[UserWork]) -> dict[int, Answer]:
        """Each user's step as one `$batch` item, or alone when it is the only one; answers by row.

        A first read the tenant's page-by-page listing answers is not sent at all.
        """
        answers = {w.row: known for w in works if (known := steps.known_answer(w)) is not None}
        requests = {str(i + 1): (steps.request(str(i + 1), w), w) for i, w in
                    enumerate(w for w in works if w.row not in answers)}
        if len(requests) == 1:
            ((request, work),) = requests.values()
            item = self.deps.graph.send(request)
            answers[work.row] = Answer(item.body if isinstance(item.body, dict) else None, item.error)
        elif requests:
            try:
                items = self.deps.graph.batch([request for request, _ in requests.values()])
            except GraphError as exc:  # the whole batch failed: every item shares the answer
                return answers | {w.row: Answer(error=exc) for _, w in requests.values()}
            for rid, (_, work) in requests.items():
                item = items[rid]  # the client answers every item, a missing one with an error
                answers[work.row] = Answer(item.body if isinstance(item.body, dict) else None, item.error)
        return answers

    # --- applying ---------------------------------------------------------------------------
    def _apply(self, works: Sequence[UserWork], answers: Mapping[int, Answer]) -> set[int]:
        """Apply a round's answers user by user, then keep what the round did; returns the rows that ended."""
        tally = _RoundTally()
        breaker = _OncePerRound(self.deps.breaker.state)
        judgement = self.allowed.judge((w.step, answers[w.row].error) for w in works)
        for work in works:
            self._apply_one(work, answers[work.row], judgement, breaker, tally)
        self._save_plans(tally.new_plans)
        self.deps.store.bump(self.job.id, throttled=tally.throttled, retries=tally.retries)
        self._write(tally.ended)
        self.seats.flush()  # one step for the whole round's users
        return {result.row for result in tally.ended}

    def _apply_one(self, work: UserWork, answer: Answer, judgement: Judgement, breaker: _OncePerRound,
                   tally: _RoundTally) -> None:
        """Count the user's attempt and move it on, retry it, end it, or pause the job."""
        now, error, dry_run = self.deps.clock(), answer.error, self.job.spec.plans_only
        self.attempts.answered(work)
        verdict: Step | Retry | Ending | None = None
        if error is not None and self.waits.wait(work, error, now):
            pass  # asked again later, within the grace: the directory may not have it yet
        elif steps.makes_plan(work, answer):
            work.plan = steps.plan_from(work, answer, self.catalog)
            tally.new_plans.append(work)
            verdict = steps.after_plan(work, dry_run=dry_run, read_error=error)
        elif error is None:
            verdict = steps.after_success(work, answer.body or {}, dry_run=dry_run)
        else:
            tally.throttled += isinstance(error, GraphThrottled)
            verdict = self._failed(work, error, judgement, breaker, now)
            tally.retries += isinstance(verdict, Retry) and self.pause is None
        if isinstance(verdict, Ending):
            if error is not None and work.waited is not None:
                verdict = steps.with_wait(verdict, work.waited)
            self.seats.ended(work, verdict)
            tally.ended.append(steps.result(work, verdict, attempts=self.attempts.of(work.row), now=now,
                                            catalog=self.catalog))
            return
        if isinstance(verdict, Step):
            work.step = verdict
        elif isinstance(verdict, Retry):
            work.failures += 1
            work.step, work.not_before = verdict.step, verdict.not_before
        if error is None and work.waited is not None:
            self.waits.appeared(work)

    def _failed(self, work: UserWork, error: GraphError, judgement: Judgement, breaker: _OncePerRound,
                now: float) -> Retry | Ending | None:
        """A failed step: the job pauses (None) for a fault that is not the user's, else retry or end."""
        fault = faults.user_fault(work.step, error, judgement, breaker)
        if fault is not None:
            if not faults.charged(fault):
                self.attempts.not_theirs(work)
            self.pause = faults.round_pause(self.pause, fault)
            return None
        if faults.no_answer(error):
            self.attempts.lost(work)
        return steps.after_failure(work, error, policy=self.deps.policy, rng=self.deps.rng, now=now,
                                   elapsed_s=now - self.budget_started_at)

    # --- keeping ----------------------------------------------------------------------------
    def _save_plans(self, works: Sequence[UserWork]) -> None:
        """Keep the new plans' before states and counters (once per user, whatever the restarts)."""
        entries = []
        for work in works:
            plan = work.plan
            assert plan is not None
            keys = plan_keys(plan) + (day_keys(plan, work.op.due_at) if self.job.spec.schedule else [])
            entries.append((work.row, plan.before.to_json() if plan.before is not None else None, keys))
            if not self.job.spec.dry_run:
                self.seats.planned(work)
        new_rows, planned = self.deps.store.save_plans(self.job.id, entries)
        if new_rows and planned >= self.job.total > planned - len(new_rows):  # this round planned the last user
            counters = self.deps.store.plan_counters(self.job.id)
            self.deps.events.job_event(self.job.id, self.job.tenant, JobEvent.PLAN_FINISHED, counters.to_hash())

    def _write(self, results: Sequence[UserResult]) -> None:
        """Write the results of users that ended, and tell the listeners."""
        if results:
            results = self._named(results)
            self.written += self.deps.store.record_results(self.job.id, results)
            self.deps.events.users_finished(self.job.id, self.job.tenant, results)


    def _named(self, results: Sequence[UserResult]) -> Sequence[UserResult]:
        """The results with the display names of the groups they name (cached per tenant; never fatal)."""
        names = self.deps.group_names
        ids = [gid for gid in unnamed_groups(results) if gid not in self._unnamed]
        if names is None or not ids:
            return results
        found = names.names(self.job.tenant, ids, self._group_name)
        self._unnamed.update(gid for gid in ids if gid not in found)
        return with_group_names(results, found)

    def _group_name(self, group_id: str) -> str | None:
        """A group's display name from Graph; None when Graph will not say (the result keeps the id)."""
        try:
            body = self.deps.graph.get_group(group_id)
        except (GraphError, ThrottleWaitTooLong) as exc:
            log.info("job %s: group %s not named: %s", self.job.id, group_id, type(exc).__name__)
            return None
        name = body.get("displayName")
        return name if isinstance(name, str) and name else None


class _OncePerRound:
    """The breaker's state, read at most once per round (at the first transport failure or 5xx)."""

    def __init__(self, read: Callable[[], BreakerState]) -> None:
        self._read = read
        self._state: BreakerState | None = None

    def __call__(self) -> BreakerState:
        if self._state is None:
            self._state = self._read()
        return self._state

