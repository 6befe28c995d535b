"""Builds the per-tenant Graph client: MSAL token provider, httpx client, shared Redis throttle and breaker."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import redis

from config import Settings, TenantProfile
from graphclient.auth import GraphAuth, MsalTokenProvider
from graphclient.breaker import RedisBreaker
from graphclient.client import GraphClient, GraphObserver
from graphclient.throttle import RedisThrottle, burst_headroom
from graphclient.timescale import ScaledRetryAfterTransport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TenantClient:
    """A tenant's Graph client, its throttles (writes; reads by resource units) and its circuit breaker."""

    profile: TenantProfile
    graph: GraphClient
    throttle: RedisThrottle
    http: httpx.Client
    breaker: RedisBreaker
    read_throttle: RedisThrottle | None = None

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()


def build_tenant_client(settings: Settings, profile: TenantProfile, client: redis.Redis,
                        observer: GraphObserver | None = None) -> TenantClient:
    """One Graph client per tenant profile and process; connections are pooled and bounded.

    `observer` is told of every answer from Graph (the worker's metrics).
    """
    tokens = MsalTokenProvider(profile)
    # A private CA (a corporate proxy, a simulator) goes in as an SSL context: httpx no longer takes a path.
    verify: ssl.SSLContext | bool = True
    if profile.ca_bundle:
        verify = ssl.create_default_context(cafile=str(profile.ca_bundle))
    limits = httpx.Limits(max_connections=settings.worker_concurrency + 4, max_keepalive_connections=16)
    transport: httpx.BaseTransport = httpx.HTTPTransport(verify=verify, limits=limits)
    if settings.time_scale != 1.0:
        transport = ScaledRetryAfterTransport(transport, settings.time_scale)
    http = httpx.Client(auth=GraphAuth(tokens), transport=transport)  # GraphClient sets each request's timeout
    throttle = RedisThrottle(
        client,
        profile.name,
        capacity=profile.write_capacity,
        rate_per_s=profile.write_rate_per_s,
        clock=time.time,
        sleep=time.sleep,
        max_inline_wait_s=settings.max_inline_wait_s,
        burst_headroom_writes=burst_headroom(settings.batch_size, profile.write_rate_per_s),
    )
    # A probe holds its lease for as long as its request may take (token fetch included), then another may try.
    breaker = RedisBreaker(client, profile.name, clock=time.time, probe_lease_s=2 * settings.graph_timeout_s + 5)
    read_throttle = _read_throttle(settings, profile, client)
    graph = GraphClient(http, base_url=profile.graph_url, throttle=throttle, timeout_s=settings.graph_timeout_s,
                        breaker=breaker, read_throttle=read_throttle, observer=observer)
    return TenantClient(profile=profile, graph=graph, throttle=throttle, http=http, breaker=breaker,
                        read_throttle=read_throttle)


def _read_throttle(settings: Settings, profile: TenantProfile, client: redis.Redis) -> RedisThrottle | None:
    """The read budget: the resource units the writes leave (each write costs one), so reads never starve them."""
    ru_rate = profile.read_rate_ru_per_s
    if ru_rate is None or profile.read_capacity_ru is None:
        return None
    write_share = profile.write_rate_per_s or 0.0
    # At least a tenth of the budget stays for reads, even when the writes could use it all.
    rate = max(ru_rate - write_share, ru_rate * 0.1)
    capacity = max(1, int(profile.read_capacity_ru * rate / ru_rate))
    return RedisThrottle(client, f"{profile.name}:reads", capacity=capacity, rate_per_s=rate, clock=time.time,
                         sleep=time.sleep, max_inline_wait_s=settings.max_inline_wait_s)


class TenantClients:
    """Each tenant profile's client, built on first use and rebuilt when its profile changes; one set per process.

    `look_now` looks at the profiles file at every `get` (a stat: an edit counts from the worker's
    next chunk) instead of at the profiles' check interval. `observer_for(tenant)` is told of every
    answer of that tenant's client (the worker's metrics). A replaced client is left to the calls
    still using it, and closed by `close`.
    """

    def __init__(self, settings: Settings, client: redis.Redis, *, look_now: bool = False,
                 observer_for: Callable[[str], GraphObserver | None] = lambda _: None) -> None:
        self._settings = settings
        self._redis = client
        self._look_now = look_now
        self._observer_for = observer_for
        # Each tenant's client with the profile generation it was built from.
        self._clients: dict[str, tuple[int | None, TenantClient]] = {}
        self._retired: list[TenantClient] = []
        self._lock = threading.Lock()  # task threads and sync routes ask at once

    def get(self, tenant: str) -> TenantClient:
        """The tenant profile's client (KeyError if the profile is unknown)."""
        profiles = self._settings.profiles
        profile = (profiles.refresh() if self._look_now else profiles.current())[tenant]
        generation = profiles.generation(tenant)
        with self._lock:
            held = self._clients.get(tenant)
            if held is None or held[0] != generation:
                if held is not None:
                    log.warning("tenant profile %s changed: new Graph client and credentials", tenant)
                    self._retired.append(held[1])
                built = build_tenant_client(self._settings, profile, self._redis, observer=self._observer_for(tenant))
                held = (generation, built)
                self._clients[tenant] = held
            return held[1]

    def close(self) -> None:
        """Close every client's connections, replaced ones included."""
        with self._lock:
            clients = [c for _, c in self._clients.values()] + self._retired
            self._clients.clear()
            self._retired.clear()
        for client in clients:
            client.close()
