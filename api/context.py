"""What the routes work with, built once per app: settings, Redis, the job store, the submitter, the audit log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import redis

from api.bodies import BodyPace
from api.errors import OUTAGES
from api.key_attempts import FailedKeyAttempts
from api.lanes import Lanes
from config import Settings
from graphclient.retry import RetryPolicy
from graphclient.tenant import TenantClients
from jobs.approval import Approvals
from jobs.audit import AuditAction, AuditLog
from jobs.catalogs import CatalogCache
from jobs.events import Listeners
from jobs.group_errors import GroupErrorReport, group_error_report
from jobs.idempotency import IdempotencyStore
from jobs.quotas import QuotaLedger
from jobs.scheduler import Send
from jobs.seats import SeatLedger
from jobs.skus import SkuCatalog
from jobs.store import JobStore
from jobs.submit import Submitter
from jobs.tenant_scan import TenantReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiContext:
    """The app's collaborators, shared by every request."""

    settings: Settings
    redis: redis.Redis
    store: JobStore
    submitter: Submitter
    audit: AuditLog
    idempotency: IdempotencyStore
    ceiling_for: Callable[[str], float | None]  # a tenant's current write ceiling, for the ETA
    catalogs: CatalogCache
    seats: SeatLedger
    send: Send
    check_broker: Callable[[], None]  # raises when the broker does not answer
    key_attempts: FailedKeyAttempts  # failed API key attempts, to throttle guessing
    lanes: Lanes  # where blocking work runs, and what each key may have in progress
    pace: BodyPace  # how fast request bodies must arrive
    quotas: QuotaLedger
    # A tenant's group license errors, read from Graph at most `limit` rows (TenantGraphs.group_error_report).
    group_errors: Callable[[str, SkuCatalog, int], GroupErrorReport]
    events: Listeners  # who hears of what the API does to jobs: the notifications of approval decisions

    def approvals(self) -> Approvals:
        """Decisions on jobs that wait for approval, each notified."""
        return Approvals(self.store, self.submitter, self.seats, events=self.events)


def audit_done(context: ApiContext, tenant: str, actor: str, action: AuditAction, job_id: str,
               details: dict[str, Any]) -> None:
    """Record a person's action on a job already done: a store outage is logged, the action stands."""
    try:
        context.audit.append(tenant, actor, action, job=job_id, details=details)
    except OUTAGES:
        log.exception("%s of job %s by %s done, but not recorded in the audit trail", action.value, job_id, actor)


class TenantGraphs:
    """What the API asks Graph directly, through each tenant profile's client (built on first use)."""

    def __init__(self, settings: Settings, redis_client: redis.Redis) -> None:
        self._settings = settings
        self.clients = TenantClients(settings, redis_client)
        # A submission waits for Graph at most a few seconds; beyond that the caller gets a 503.
        self._sku_policy = replace(RetryPolicy.from_settings(settings), max_attempts=4, max_total_s=20.0,
                                   max_inline_wait_s=10.0)

    def subscribed_skus(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's GET /subscribedSkus, retried briefly."""
        return list(self._sku_policy.call(self.clients.get(tenant).graph.subscribed_skus))

    def group_error_report(self, tenant: str, catalog: SkuCatalog, limit: int) -> GroupErrorReport:
        """The tenant's users whose group licenses are in error; a long throttle wait is an error, not a wait."""
        reader = TenantReader(self.clients.get(tenant).graph, self._sku_policy, time.sleep, patient=False)
        return group_error_report(reader, catalog, limit)

    def write_ceiling(self, tenant: str) -> float | None:
        """The tenant's current write rate ceiling; None when its profile sets no rate."""
        profile = self._settings.tenants.get(tenant)
        if profile is None or profile.write_rate_per_s is None:
            return None
        try:
            rate = self.clients.get(tenant).throttle.snapshot().rate_per_s
        except Exception as exc:  # progress must not fail because the throttle state is unreadable
            log.warning("tenant %s: write rate unreadable (%s); the ETA uses the profile's rate", tenant, exc)
            return profile.write_rate_per_s
        return None if rate is None else float(rate)
