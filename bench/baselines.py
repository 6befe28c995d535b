"""What admins run today, against the same graphsim: a sequential loop and a naive parallel client.

Both get an app-only token through MSAL (the product's MsalTokenProvider, which caches it) and send
one `POST /users/{upn}/assignLicense` per user with httpx. On a 429 they wait the Retry-After and
resend, as the Graph PowerShell SDK's retry handler does; neither shares a gate between requests,
nor batches.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from config import TenantProfile
from graphclient.auth import MsalTokenProvider

MAX_ATTEMPTS = 10  # per user; the SDK's default is fewer, but a lost user would skew the comparison
TRANSIENT_PAUSE_S = 1.0


@dataclass
class BaselineResult:
    """What one baseline run did."""

    users: int
    succeeded: int = 0
    failed: int = 0
    requests: int = 0
    throttled: int = 0
    gave_up: int = 0  # users failed because every attempt was throttled or transient
    wall_s: float = 0.0

    @property
    def users_per_s(self) -> float:
        """Users finished per second."""
        return self.users / self.wall_s if self.wall_s > 0 else 0.0


class _Client:
    """assignLicense for one user with per-request retries (honouring Retry-After) and nothing shared."""

    def __init__(self, profile: TenantProfile, pool: int) -> None:
        if profile.ca_bundle is None:
            raise ValueError("the graphsim profile needs its ca_bundle")
        self.tokens = MsalTokenProvider(profile)
        self.http = httpx.Client(
            base_url=profile.graph_url.rstrip("/") + "/v1.0",
            verify=ssl.create_default_context(cafile=str(profile.ca_bundle)),
            timeout=30,
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            trust_env=False,
        )
        self.lock = threading.Lock()

    def assign(self, upn: str, sku_id: str, result: BaselineResult) -> None:
        body = {"addLicenses": [{"skuId": sku_id, "disabledPlans": []}], "removeLicenses": []}
        for _ in range(MAX_ATTEMPTS):
            token = self.tokens.get_token()
            try:
                response = self.http.post(f"/users/{upn}/assignLicense", json=body,
                                          headers={"Authorization": f"Bearer {token}"})
            except httpx.TransportError:
                with self.lock:
                    result.requests += 1
                time.sleep(TRANSIENT_PAUSE_S)
                continue
            with self.lock:
                result.requests += 1
            if response.status_code == 429:
                with self.lock:
                    result.throttled += 1
                try:
                    wait = float(response.headers.get("Retry-After", TRANSIENT_PAUSE_S))
                except ValueError:
                    wait = TRANSIENT_PAUSE_S
                time.sleep(wait)
                continue
            if response.status_code >= 500:
                time.sleep(TRANSIENT_PAUSE_S)
                continue
            with self.lock:
                if response.status_code < 300:
                    result.succeeded += 1
                else:
                    result.failed += 1
            return
        with self.lock:
            result.failed += 1
            result.gave_up += 1

    def close(self) -> None:
        self.http.close()


def sequential(profile: TenantProfile, users: Sequence[tuple[str, str]]) -> BaselineResult:
    """One call at a time, as a `foreach ($u in $users) { Set-MgUserLicense ... }` loop."""
    client = _Client(profile, pool=1)
    result = BaselineResult(users=len(users))
    try:
        client.tokens.get_token()  # as the script's Connect-MgGraph, before the loop
        start = time.monotonic()
        for upn, sku_id in users:
            client.assign(upn, sku_id, result)
        result.wall_s = time.monotonic() - start
    finally:
        client.close()
    return result


def naive_parallel(profile: TenantProfile, users: Sequence[tuple[str, str]], threads: int) -> BaselineResult:
    """`threads` workers, each retrying its own requests on 429 after Retry-After; no shared gate, no $batch."""
    client = _Client(profile, pool=threads)
    result = BaselineResult(users=len(users))
    try:
        client.tokens.get_token()
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="naive") as pool:
            for future in [pool.submit(client.assign, upn, sku, result) for upn, sku in users]:
                future.result()
        result.wall_s = time.monotonic() - start
    finally:
        client.close()
    return result
