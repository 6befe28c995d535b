"""The one retry layer for Graph calls: Retry-After when Graph gives one, else jittered backoff.

It is used two ways with the same maths: `RetryPolicy.call` runs one Graph call under
`tenacity.Retrying`, and `next_delay`/`should_retry` let a caller's loop retry `$batch` items one by
one. Both are built from the same tenacity wait and stop strategy objects.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity
from tenacity import RetryCallState, Retrying
from tenacity.stop import stop_after_attempt, stop_base, stop_before_delay
from tenacity.wait import wait_base, wait_exponential

from graphclient.errors import GraphError, GraphThrottled, GraphTransientError, ThrottleWaitTooLong

if TYPE_CHECKING:
    from config.settings import Settings

T = TypeVar("T")


def _is_retryable(exc: BaseException, retry_ambiguous: bool) -> bool:
    if not isinstance(exc, GraphThrottled | GraphTransientError):
        return False
    return retry_ambiguous or not exc.ambiguous


class wait_graph(wait_base):  # lower case, as tenacity names strategies
    """Wait strategy: the error's Retry-After when it has one, else full-jitter exponential backoff."""

    def __init__(self, base_s: float, max_s: float, rng: random.Random) -> None:
        self._cap = wait_exponential(multiplier=base_s, max=max_s)
        self._rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, GraphError) and error.retry_after_s is not None:
            return max(0.0, error.retry_after_s)
        # Full jitter: uniform over [0, min(max, base * 2^(n-1))], so workers that failed together
        # do not come back together.
        return self._rng.uniform(0.0, self._cap(retry_state))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a throttled or transient Graph failure.

    `max_inline_wait_s`, when set, is the longest wait `call` sleeps through; a longer one raises
    ThrottleWaitTooLong so the caller can hand the work back to the broker with a countdown.
    """

    max_attempts: int
    max_total_s: float
    backoff_base_s: float
    backoff_max_s: float
    max_inline_wait_s: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy configured in settings."""
        return cls(
            max_attempts=settings.retry_max_attempts,
            max_total_s=settings.retry_max_total_s,
            backoff_base_s=settings.retry_backoff_base_s,
            backoff_max_s=settings.retry_backoff_max_s,
            max_inline_wait_s=settings.max_inline_wait_s,
        )

    def wait_strategy(self, rng: random.Random | None = None) -> wait_graph:
        """The tenacity wait strategy of this policy."""
        return wait_graph(self.backoff_base_s, self.backoff_max_s, rng or random.Random())

    def stop_strategy(self) -> stop_base:
        """The tenacity stop strategy: attempts used up, or the next wait would pass the total budget."""
        return stop_after_attempt(self.max_attempts) | stop_before_delay(self.max_total_s)

    def call(
        self,
        fn: Callable[[], T],
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        retry_ambiguous: bool = True,
    ) -> T:
        """Run `fn` (one Graph call), retrying throttled and transient failures; re-raise the last one.

        With `retry_ambiguous=False` an ambiguous failure (the request may have been applied) is
        raised at once, so the caller can read state before deciding to resend a write.
        """
        started_at = clock()

        def use_clock(retry_state: RetryCallState) -> None:
            # tenacity measures elapsed time with its own monotonic clock; measure with ours so the
            # total-time cap is testable without sleeping.
            retry_state.start_time = started_at
            retry_state.outcome_timestamp = clock()

        def check_inline(retry_state: RetryCallState) -> None:
            limit = self.max_inline_wait_s
            if limit is not None and retry_state.upcoming_sleep > limit:
                outcome = retry_state.outcome
                error = outcome.exception() if outcome is not None else None
                raise ThrottleWaitTooLong(retry_state.upcoming_sleep) from error

        retrying = Retrying(
            sleep=sleep,
            retry=tenacity.retry_if_exception(lambda exc: _is_retryable(exc, retry_ambiguous)),
            wait=self.wait_strategy(rng),
            stop=self.stop_strategy(),
            after=use_clock,
            before_sleep=check_inline,
            reraise=True,
        )
        return retrying(fn)

    def next_delay(self, attempt: int, error: GraphError, rng: random.Random | None = None) -> float:
        """Seconds to wait before retrying after failed attempt number `attempt` (1-based)."""
        return float(self.wait_strategy(rng)(_state(attempt, error)))

    def should_retry(self, attempt: int, elapsed_s: float, error: GraphError, *, delay_s: float = 0.0) -> bool:
        """Whether failed attempt number `attempt`, `elapsed_s` into the budget, may be retried.

        Pass the planned `delay_s` to also refuse a retry whose wait would pass the total budget.
        """
        if not _is_retryable(error, retry_ambiguous=True):
            return False
        return not self.stop_strategy()(_state(attempt, error, elapsed_s=elapsed_s, delay_s=delay_s))


def _state(attempt: int, error: BaseException, *, elapsed_s: float = 0.0, delay_s: float = 0.0) -> RetryCallState:
    """A tenacity call state as it stands after failed attempt `attempt`, for the strategies."""
    state = RetryCallState(retry_object=Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = max(1, attempt)
    outcome: Any = tenacity.Future(state.attempt_number)
    outcome.set_exception(error)
    state.outcome = outcome
    state.start_time = 0.0
    state.outcome_timestamp = elapsed_s
    state.upcoming_sleep = delay_s
    return state
