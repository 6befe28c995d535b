"""Where the API's blocking work runs, so that nothing one client does can hold up everybody else.

- Short Redis reads of the sync routes use the shared thread pool (Starlette's, 40 threads).
- Submissions (parsing, staging, the callback URL's DNS check, Graph's SKU list) run in a lane of
  their own (`submission_threads`), and each API key may have `submissions_per_key` of them in
  progress in this process: a key sending many large bodies waits for itself, never starves reads.
- `/healthz` pings Redis on two threads of its own, with a deadline: it answers within a couple
  of seconds whatever the pool is doing.
- Waiting (for an idempotency key's first request, between polls) is `await`, never a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from config import Settings
from jobs.quotas import QuotaExceeded, QuotaUse

T = TypeVar("T")

HEALTH_THREADS = 2
HEALTH_TIMEOUT_S = 2.0
GATE_RETRY_AFTER_S = 5
# Requests that may wait at once for the first request with the same idempotency key; more get 409 at once.
IDEMPOTENCY_WAITERS_PER_KEY = 4


class KeyGate:
    """How many of one thing each key has in progress in this API process; 429 past the cap (0: no cap)."""

    def __init__(self, quota: str, cap: int, retry_after_s: int = GATE_RETRY_AFTER_S) -> None:
        self.quota = quota
        self.cap = cap
        self.retry_after_s = retry_after_s
        self._held: Counter[str] = Counter()

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Count one more in progress for `key` while the block runs; QuotaExceeded when it has `cap` already."""
        if self.full(key):
            raise QuotaExceeded(QuotaUse(self.quota, in_use=self._held[key], limit=self.cap),
                                retry_after_s=self.retry_after_s)
        self._held[key] += 1
        try:
            yield
        finally:
            self._held[key] -= 1
            if not self._held[key]:
                del self._held[key]

    def full(self, key: str) -> bool:
        """Whether `key` has as many in progress as the cap allows."""
        return bool(self.cap) and self._held[key] >= self.cap


class Lanes:
    """The thread lanes of one API app, and what each key may have in progress (see the module docstring)."""

    def __init__(self, submission_threads: int, *, submissions_per_key: int = 0, streams_per_key: int = 0) -> None:
        self._submissions = anyio.CapacityLimiter(submission_threads)
        self._health = ThreadPoolExecutor(max_workers=HEALTH_THREADS, thread_name_prefix="healthz")
        self.submissions_per_key = KeyGate("key_concurrent_submissions", submissions_per_key)
        self.streams_per_key = KeyGate("key_event_streams", streams_per_key)
        self.idempotency_waiters = KeyGate("idempotency_key_waiters", IDEMPOTENCY_WAITERS_PER_KEY)

    @classmethod
    def from_settings(cls, settings: Settings) -> Lanes:
        """The lanes and caps configured in `settings`."""
        return cls(settings.api_submission_threads, submissions_per_key=settings.api_submissions_per_key,
                   streams_per_key=settings.api_event_streams_per_key)

    async def submission(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a submission's blocking step in the submissions lane."""
        return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs), limiter=self._submissions)

    async def health(self, func: Callable[[], T], timeout_s: float = HEALTH_TIMEOUT_S) -> T:
        """Run a health check on its own threads; TimeoutError after `timeout_s` (the check may go on)."""
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self._health, func), timeout_s)
