"""Takes the pending users of one chunk to a terminal state: read/PATCH/assignLicense in `$batch` rounds.

Layers, outside in: the Celery task (worker.celery_app) unpacks ids; `jobs.chunks.execute_chunk`
claims the chunk, hands it back or completes it; `run_users` (here) loads its pending users and
drives the round loop, each `_send_round` sending one `$batch` of their next steps.

Per user the steps are:

    VERIFY  GET the user (when a usageLocation is asked for, or after an ambiguous failure or a
            crash left a write of unknown outcome): decides whether a PATCH is needed and whether
            the requested state already holds, so a write is never blindly repeated.
    PATCH   set usageLocation (only when it differs).
    ASSIGN  one assignLicense call with both addLicenses and removeLicenses (a swap is one call).

Items of many users go out together in `$batch` requests of up to 20; throttled and transient
items are retried individually under the one retry policy; every user ends in exactly one terminal
state, recorded atomically in the store.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from graphclient.client import BatchRequest, GraphClient
from graphclient.errors import GraphError, GraphPermanentError, GraphThrottled, ThrottleWaitTooLong
from graphclient.retry import RetryPolicy, is_retryable
from jobs.models import Operation, Reason, UserResult, UserStatus
from jobs.reasons import reason_for
from jobs.store import JobStore

USER_SELECT = ("id", "userPrincipalName", "usageLocation", "assignedLicenses")

# What one item came back with: its body on success, else the error.
_Outcome = tuple[dict[str, Any] | None, GraphError | None]


class Step(Enum):
    """What a user needs next."""

    VERIFY = "verify"
    PATCH = "patch"
    ASSIGN = "assign"


class HandBack(Exception):
    """The chunk must wait longer than a worker slot should; requeue it after `countdown_s`."""

    def __init__(self, countdown_s: float) -> None:
        super().__init__(f"hand back for {countdown_s:.1f}s")
        self.countdown_s = countdown_s


@dataclass
class _Work:
    """Mutable progress of one user within this run."""

    op: Operation
    step: Step
    verify_first: bool
    attempts: int = 0
    failures: int = 0
    not_before: float = 0.0


@dataclass(frozen=True)
class ChunkDeps:
    """What running a chunk needs; built once per worker process and per tenant."""

    store: JobStore
    graph: GraphClient
    policy: RetryPolicy
    batch_size: int
    request_deadline_s: float
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)


def desired_state_holds(op: Operation, user: Mapping[str, Any]) -> bool:
    """Whether the user already looks the way the operation asks for."""
    assigned: dict[str, set[str]] = {}
    for lic in user.get("assignedLicenses") or ():
        assigned[str(lic.get("skuId", "")).lower()] = {str(p).lower() for p in lic.get("disabledPlans") or ()}
    for add in op.add:
        plans = assigned.get(add.sku_id.lower())
        if plans is None or plans != {p.lower() for p in add.disabled_plans}:
            return False
    if any(sku.lower() in assigned for sku in op.remove):
        return False
    return not (op.usage_location and user.get("usageLocation") != op.usage_location)


def _first_step(op: Operation, verify_first: bool) -> Step:
    if verify_first or op.usage_location:
        return Step.VERIFY
    return Step.ASSIGN


def run_users(deps: ChunkDeps, job_id: str, n: int, *, budget_started_at: float) -> int:
    """Take chunk n's pending users to a terminal state; returns how many results were recorded.

    Raises HandBack when every remaining user must wait longer than the policy's inline wait.
    """
    store = deps.store
    ops = store.load_chunk(job_id, n)
    done = store.terminal_rows(job_id, [op.row for op in ops])
    pending_ops = [op for op in ops if op.row not in done]
    if not pending_ops:
        return 0
    if store.is_cancelled(job_id):
        return store.record(job_id, [_cancelled(op, 0, deps.clock()) for op in pending_ops])
    prior = store.attempts(job_id, [op.row for op in pending_ops])
    work = [
        _Work(op=op, step=_first_step(op, op.row in prior), verify_first=op.row in prior,
              attempts=prior.get(op.row, 0))
        for op in pending_ops
    ]
    return _RoundLoop(deps, job_id, budget_started_at).drain(work)


class _RoundLoop:
    """Sends rounds of the ready users' next steps, waiting out backoffs, until none is pending."""

    def __init__(self, deps: ChunkDeps, job_id: str, budget_started_at: float) -> None:
        self.deps = deps
        self.job_id = job_id
        self.budget_started_at = budget_started_at
        self.recorded = 0

    def drain(self, work: list[_Work]) -> int:
        """Run rounds until every user of `work` is terminal; returns how many results were recorded."""
        deps = self.deps
        pending = work
        while pending:
            now = deps.clock()
            ready = [w for w in pending if w.not_before <= now]
            if not ready:
                wait_s = min(w.not_before for w in pending) - now
                if not deps.policy.waits_inline(wait_s):
                    raise HandBack(wait_s)
                deps.sleep(wait_s)
                continue
            round_work = ready[: deps.batch_size]
            finished = self._send_round(round_work)
            if finished is None:  # cancelled before the writes went out
                now = deps.clock()
                self._record([_cancelled(w.op, w.attempts, now) for w in pending])
                return self.recorded
            pending = [w for w in pending if id(w) not in finished]
        return self.recorded

    def _send_round(self, round_work: list[_Work]) -> set[int] | None:
        """Send one batch; returns ids of works that reached a terminal state (None if cancelled)."""
        deps, store = self.deps, self.deps.store
        requests: list[BatchRequest] = []
        by_id: dict[str, _Work] = {}
        write_rows: list[int] = []
        for i, w in enumerate(round_work):
            rid = str(i + 1)
            by_id[rid] = w
            op = w.op
            if w.step is Step.VERIFY:
                requests.append(BatchRequest.get_user(rid, op.user, USER_SELECT))
            elif w.step is Step.PATCH:
                requests.append(BatchRequest.update_user(rid, op.user, {"usageLocation": op.usage_location}))
                write_rows.append(op.row)
            else:
                requests.append(BatchRequest.assign_license(rid, op.user, _adds(op), list(op.remove)))
                write_rows.append(op.row)
        batch_id = uuid.uuid4().hex
        if write_rows:
            deadline = deps.clock() + deps.request_deadline_s
            if not store.begin_writes(self.job_id, batch_id, deadline, write_rows):
                return None
        try:
            try:
                outcomes = self._post(requests, round_work)
            except ThrottleWaitTooLong as exc:
                raise HandBack(exc.wait_s) from None
        finally:
            if write_rows:
                store.end_writes(self.job_id, batch_id)
        return self._apply_outcomes(by_id, outcomes)

    def _post(self, requests: list[BatchRequest], works: list[_Work]) -> dict[str, _Outcome]:
        """Send the items, as one `$batch` or (for a single item, where batching buys nothing) one plain call."""
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
            if w.step is Step.VERIFY:
                return graph.get_user(op.user, USER_SELECT), None
            if w.step is Step.PATCH:
                graph.update_user(op.user, {"usageLocation": op.usage_location})
                return {}, None
            return graph.assign_license(op.user, _adds(op), list(op.remove)), None
        except GraphError as exc:
            return None, exc

    def _apply_outcomes(
        self,
        by_id: dict[str, _Work],
        outcomes: dict[str, _Outcome],
    ) -> set[int]:
        """Count each item's attempt and move its user on, retry it or end it; returns ids of ended works."""
        deps = self.deps
        now = deps.clock()
        terminal: list[UserResult] = []
        finished: set[int] = set()
        throttled = retries = 0
        for rid, w in by_id.items():
            body, error = outcomes[rid]
            w.attempts += 1
            if error is None:
                result = self._advance(w, body or {}, now)
            else:
                if isinstance(error, GraphThrottled):
                    throttled += 1
                result = self._failed_attempt(w, error, now)
                if result is None:
                    retries += 1
            if result is not None:
                terminal.append(result)
                finished.add(id(w))
        self.deps.store.bump(self.job_id, throttled=throttled, retries=retries)
        self._record(terminal)
        return finished

    def _advance(self, w: _Work, body: dict[str, Any], now: float) -> UserResult | None:
        """A step succeeded: move the user on, or return its terminal result."""
        op = w.op
        if w.step is Step.VERIFY:
            if w.verify_first and desired_state_holds(op, body):
                return _succeeded(op, w.attempts, now, detail="already in the requested state")
            w.verify_first = False
            if op.usage_location and body.get("usageLocation") != op.usage_location:
                w.step = Step.PATCH
                return None
            if op.add or op.remove:
                w.step = Step.ASSIGN
                return None
            return _succeeded(op, w.attempts, now, detail="usage location already set")
        if w.step is Step.PATCH and (op.add or op.remove):
            w.step = Step.ASSIGN
            return None
        return _succeeded(op, w.attempts, now)

    def _failed_attempt(self, w: _Work, error: GraphError, now: float) -> UserResult | None:
        """A step failed: schedule a retry, or return the terminal failure."""
        deps = self.deps
        if isinstance(error, GraphPermanentError):
            return _failed(w.op, w.attempts, now, error)
        w.failures += 1
        elapsed_s = now - self.budget_started_at
        # The wait itself is not charged to the budget here: a retry planned inside it still goes
        # out (perhaps after a hand-back), and the budget is checked again if it fails.
        if not (is_retryable(error) and deps.policy.may_retry(w.failures, elapsed_s)):
            return _failed(w.op, w.attempts, now, error, reason=Reason.RETRIES_EXHAUSTED)
        if error.ambiguous and w.step is not Step.VERIFY:
            # The write may have been applied: read the user before deciding to resend.
            w.verify_first = True
            w.step = Step.VERIFY
        w.not_before = now + deps.policy.backoff_s(w.failures, error, deps.rng)
        return None

    def _record(self, results: Sequence[UserResult]) -> None:
        if results:
            self.recorded += self.deps.store.record(self.job_id, results)


def _adds(op: Operation) -> list[dict[str, Any]]:
    return [{"skuId": a.sku_id, "disabledPlans": list(a.disabled_plans)} for a in op.add]


def _succeeded(op: Operation, attempts: int, now: float, detail: str | None = None) -> UserResult:
    return UserResult(row=op.row, user=op.user, status=UserStatus.SUCCEEDED, attempts=attempts,
                      updated_at=now, detail=detail)


def _cancelled(op: Operation, attempts: int, now: float) -> UserResult:
    return UserResult(row=op.row, user=op.user, status=UserStatus.CANCELLED, reason=Reason.CANCELLED,
                      attempts=attempts, updated_at=now)


def _failed(op: Operation, attempts: int, now: float, error: GraphError, reason: Reason | None = None) -> UserResult:
    return UserResult(
        row=op.row,
        user=op.user,
        status=UserStatus.FAILED,
        reason=reason or reason_for(error),
        graph_code=error.code,
        graph_message=error.message,
        http_status=error.status,
        attempts=attempts,
        updated_at=now,
    )
