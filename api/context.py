"""What the routes work with, built once per app: settings, Redis, the job store, the submitter, the audit log."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import redis

from api.bodies import BodyPace
from api.key_attempts import FailedKeyAttempts
from api.lanes import Lanes
from config import Settings
from graphclient.retry import RetryPolicy
from graphclient.tenant import TenantClient, build_tenant_client
from jobs.audit import AuditLog
from jobs.catalogs import CatalogCache
from jobs.idempotency import IdempotencyStore
from jobs.quotas import QuotaLedger
from jobs.scheduler import Send
from jobs.seats import SeatLedger
from jobs.store import JobStore
from jobs.submit import Submitter

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


class TenantGraphs:
    """Each tenant profile's Graph client, built on first use; what the API asks Graph directly."""

    def __init__(self, settings: Settings, redis_client: redis.Redis) -> None:
        self._settings = settings
        self._redis = redis_client
        # Each tenant's client with the profile generation it was built from (rebuilt when it changes).
        self._clients: dict[str, tuple[int | None, TenantClient]] = {}
        self._lock = threading.Lock()  # sync routes run in a thread pool
        # A submission waits for Graph at most a few seconds; beyond that the caller gets a 503.
        self._sku_policy = replace(RetryPolicy.from_settings(settings), max_attempts=4, max_total_s=20.0,
                                   max_inline_wait_s=10.0)

    def client(self, tenant: str) -> TenantClient:
        """The tenant profile's client, shared with every later call until the profile changes."""
        profiles = self._settings.profiles
        profile = profiles.current()[tenant]
        generation = profiles.generation(tenant)
        with self._lock:
            held = self._clients.get(tenant)
            if held is None or held[0] != generation:
                if held is not None:  # the old one is left to requests still using it, then collected
                    log.warning("tenant profile %s changed: new Graph client and credentials", tenant)
                held = (generation, build_tenant_client(self._settings, profile, self._redis))
                self._clients[tenant] = held
            return held[1]

    def subscribed_skus(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's GET /subscribedSkus, retried briefly."""
        return list(self._sku_policy.call(self.client(tenant).graph.subscribed_skus))

    def write_ceiling(self, tenant: str) -> float | None:
        """The tenant's current write rate ceiling; None when its profile sets no rate."""
        profile = self._settings.tenants.get(tenant)
        if profile is None or profile.write_rate_per_s is None:
            return None
        try:
            rate = self.client(tenant).throttle.snapshot().rate_per_s
        except Exception:  # progress must not fail because the throttle state is unreadable
            return profile.write_rate_per_s
        return None if rate is None else float(rate)
