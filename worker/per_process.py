"""One runtime of a kind per worker process: made and started on first use, stopped at shutdown."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import redis
from celery import Celery

from config import Settings
from config.redis_clients import redis_client


class Runtime(Protocol):
    """What a per-process runtime offers: the app it serves, and its start and stop."""

    @property
    def app(self) -> Celery: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


R = TypeVar("R", bound=Runtime)


class PerProcess(Generic[R]):
    """Holds this process's runtime of one kind."""

    def __init__(self, make: Callable[[Settings, Celery], R]) -> None:
        self._make = make
        self._runtime: R | None = None
        self._lock = threading.Lock()

    def get(self, settings: Settings, app: Celery) -> R:
        """The runtime of this process, created (and started) on first use."""
        with self._lock:
            if self._runtime is None or self._runtime.app is not app:
                self._runtime = self._make(settings, app)
                self._runtime.start()
            return self._runtime

    def stop(self, **_: Any) -> None:
        """Stop this process's runtime, if any."""
        with self._lock:
            if self._runtime is not None:
                self._runtime.stop()
                self._runtime = None


def worker_redis(settings: Settings) -> redis.Redis:
    """The Redis client a worker process shares between its threads (job store, outbox, throttle, due set).

    Made by the one factory of Redis clients: the URL's server, or the primary Sentinel names.
    """
    return redis_client(settings, socket_keepalive=True, health_check_interval=30, socket_timeout=30)
