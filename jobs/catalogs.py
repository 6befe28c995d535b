"""Each tenant's SKU catalog (`GET /subscribedSkus`), read from Graph and kept for a short while."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from graphclient.errors import GraphError, ThrottleWaitTooLong
from jobs.skus import SkuCatalog


class CatalogUnavailable(Exception):
    """The tenant's subscribedSkus could not be read, so names cannot be validated; `error` is Graph's."""

    def __init__(self, message: str, error: GraphError | None = None) -> None:
        super().__init__(message)
        self.error = error


class CatalogCache:
    """Each tenant's SKU catalog, read from Graph and kept for a short while."""

    def __init__(self, fetch: Callable[[str], list[dict[str, object]]], ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, SkuCatalog]] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str, *, max_age_s: float | None = None) -> SkuCatalog:
        """The catalog of a tenant profile (KeyError if the profile is unknown).

        `max_age_s` overrides the cache's TTL for this read (0: read Graph now, as seat checks do).
        """
        now = self._clock()
        ttl_s = self._ttl_s if max_age_s is None else max_age_s
        with self._lock:
            hit = self._cache.get(tenant)
            if hit and now - hit[0] < ttl_s:
                return hit[1]
        try:
            items = self._fetch(tenant)
        except GraphError as exc:
            raise CatalogUnavailable(
                f"could not read the subscribed SKUs of tenant '{tenant}' from Graph: {exc.message}", exc
            ) from None
        except ThrottleWaitTooLong as exc:
            raise CatalogUnavailable(
                f"Graph throttles tenant '{tenant}' for {exc.wait_s:.0f} s; submit again after that"
            ) from None
        catalog = SkuCatalog.from_graph(items)
        with self._lock:
            self._cache[tenant] = (now, catalog)
        return catalog
