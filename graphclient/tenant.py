"""Builds the per-tenant Graph client: MSAL token provider, httpx client, shared Redis throttle and breaker."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import redis

from config import Settings, TenantProfile
from graphclient.auth import GraphAuth, MsalTokenProvider
from graphclient.breaker import RedisBreaker
from graphclient.client import GraphClient
from graphclient.throttle import RedisThrottle, burst_headroom
from graphclient.timescale import ScaledRetryAfterTransport


@dataclass(frozen=True)
class TenantClient:
    """A tenant's Graph client and the throttle and circuit breaker every call of it passes through."""

    profile: TenantProfile
    graph: GraphClient
    throttle: RedisThrottle
    http: httpx.Client
    breaker: RedisBreaker

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()


def build_tenant_client(settings: Settings, profile: TenantProfile, client: redis.Redis) -> TenantClient:
    """One Graph client per tenant profile and process; connections are pooled and bounded."""
    tokens = MsalTokenProvider(profile)
    verify: str | bool = str(profile.ca_bundle) if profile.ca_bundle else True
    limits = httpx.Limits(max_connections=settings.worker_concurrency + 4, max_keepalive_connections=16)
    transport: httpx.BaseTransport = httpx.HTTPTransport(verify=verify, limits=limits)
    if settings.time_scale != 1.0:
        transport = ScaledRetryAfterTransport(transport, settings.time_scale)
    http = httpx.Client(
        auth=GraphAuth(tokens),
        transport=transport,
        timeout=httpx.Timeout(settings.graph_timeout_s, connect=min(10.0, settings.graph_timeout_s)),
    )
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
    graph = GraphClient(http, base_url=profile.graph_url, throttle=throttle, timeout_s=settings.graph_timeout_s,
                        breaker=breaker)
    return TenantClient(profile=profile, graph=graph, throttle=throttle, http=http, breaker=breaker)
