"""The one retry policy for Graph calls: Retry-After when Graph gives one, else full-jitter backoff.

One `RetryPolicy` holds the numbers (backoff base and cap, attempts, total time, inline wait) and
small pure functions decide with them:

    backoff_s     how long to wait before the next attempt (Retry-After, else full jitter)
    may_retry     whether attempts and total time allow another attempt after that wait
    waits_inline  whether that wait may be slept through, or the work must be handed back

`RetryPolicy.call` runs one Graph call under `tenacity.Retrying`, whose wait, stop and
before-sleep callbacks are these functions; the `$batch` executor retries items one by one in its
own loop and calls them directly. So a single call and a batch item back off and give up alike.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception

from graphclient.errors import GraphError, GraphThrottled, GraphTransientError, ThrottleWaitTooLong

if TYPE_CHECKING:
    from config.settings import Settings

T = TypeVar("T")

# 2**64 backoff bases are far past any cap; a larger exponent would only risk a float overflow.
_MAX_DOUBLINGS = 64


def is_retryable(error: BaseException, *, retry_ambiguous: bool = True) -> bool:
    """Whether a failure may pass on a later attempt: throttled or transient (ambiguous ones optionally)."""
    if not isinstance(error, GraphThrottled | GraphTransientError):
        return False
    return retry_ambiguous or not error.ambiguous


def full_jitter_s(failures: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform over [0, min(cap_s, base_s * 2^(failures-1))].

    Uniform from zero, so workers that failed together do not come back together.
    """
    doublings = min(max(failures, 1) - 1, _MAX_DOUBLINGS)
    return rng.uniform(0.0, min(cap_s, base_s * 2.0**doublings))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a throttled or transient Graph failure.

    `max_inline_wait_s`, when set, is the longest wait a caller sleeps through; a longer one is
    handed back (ThrottleWaitTooLong from `call`) so the work can go back to the broker with a
    countdown instead of holding a worker slot.
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

    def backoff_s(self, failures: int, error: BaseException | None, rng: random.Random) -> float:
        """Seconds to wait after `failures` failed attempts: the error's Retry-After, else full jitter."""
        if isinstance(error, GraphError) and error.retry_after_s is not None:
            return max(0.0, error.retry_after_s)
        return full_jitter_s(failures, base_s=self.backoff_base_s, cap_s=self.backoff_max_s, rng=rng)

    def may_retry(self, failures: int, elapsed_s: float, wait_s: float = 0.0) -> bool:
        """Whether another attempt fits the budget: attempts left, and `elapsed_s + wait_s` under the total."""
        return failures < self.max_attempts and elapsed_s + wait_s < self.max_total_s

    def waits_inline(self, wait_s: float) -> bool:
        """Whether a wait is short enough to sleep through rather than hand the work back."""
        return self.max_inline_wait_s is None or wait_s <= self.max_inline_wait_s

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
        jitter = rng or random.Random()
        started_at = clock()

        def wait(state: RetryCallState) -> float:
            return self.backoff_s(state.attempt_number, _failure(state), jitter)

        def stop(state: RetryCallState) -> bool:
            # tenacity runs this after `wait`, so upcoming_sleep is the planned wait. Time is read
            # from our clock, not tenacity's own, so the total-time cap is testable without sleeping.
            return not self.may_retry(state.attempt_number, clock() - started_at, state.upcoming_sleep)

        def hand_back_long_waits(state: RetryCallState) -> None:
            if not self.waits_inline(state.upcoming_sleep):
                raise ThrottleWaitTooLong(state.upcoming_sleep) from _failure(state)

        retrying = Retrying(
            sleep=sleep,
            wait=wait,
            stop=stop,
            retry=retry_if_exception(lambda exc: is_retryable(exc, retry_ambiguous=retry_ambiguous)),
            before_sleep=hand_back_long_waits,
            reraise=True,
        )
        return retrying(fn)


def _failure(state: RetryCallState) -> BaseException | None:
    """The exception the last attempt raised (tenacity only calls wait/stop/before_sleep after one)."""
    return state.outcome.exception() if state.outcome is not None else None
