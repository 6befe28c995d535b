"""The API's side of the broker: checked before a job is accepted, and not fatal once it is."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery

from api.errors import OUTAGES
from config import Settings
from jobs.scheduler import Send

log = logging.getLogger(__name__)

BROKER_CONNECT_TIMEOUT_S = 2.0


class BrokerProbe:
    """Raises the broker's OperationalError when it does not answer (one connection attempt)."""

    def __init__(self, url: str, *, connect_timeout_s: float = BROKER_CONNECT_TIMEOUT_S,
                 use_ssl: dict[str, Any] | None = None) -> None:
        self._app = Celery("bulklicense-probe", broker=url, set_as_current=False)
        self._app.conf.broker_connection_timeout = connect_timeout_s
        if use_ssl is not None:  # a rediss:// broker, verified as the workers verify it
            self._app.conf.broker_use_ssl = use_ssl

    def __call__(self) -> None:
        with self._app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=0)


def broker_check(settings: Settings) -> Callable[[], None]:
    """What a submission checks before writing anything: a broker kept apart from Redis answers.

    A broker that is the job store's Redis needs no check: staging the job fails first.
    """
    if settings.broker_is_store:
        return _nothing_to_check
    return BrokerProbe(settings.effective_broker_url, use_ssl=settings.broker_use_ssl)


def _nothing_to_check() -> None:
    """The broker is the job store's Redis."""


def send_after_commit(send: Send) -> Send:
    """`send` for a job already committed: an unreachable broker leaves the chunk for the reaper.

    The chunk is marked queued before it is sent, and the reaper sends a chunk queued too long again,
    so the job starts when the broker is back; failing the request would invite a duplicate job.
    """
    def guarded(job_id: str, n: int, countdown_s: float, budget_started_at: float | None = None) -> None:
        try:
            if budget_started_at is None:  # what new jobs send; injected senders may take no budget
                send(job_id, n, countdown_s)
            else:
                send(job_id, n, countdown_s, budget_started_at)
        except OUTAGES as exc:
            log.warning("chunk %d of job %s not sent (%s); the reaper sends it when the broker is back",
                        n, job_id, exc)

    return guarded
