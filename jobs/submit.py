"""Submission: validate a whole input, stage it, and only then commit and enqueue it."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from config import Settings
from graphclient.errors import GraphError, ThrottleWaitTooLong
from jobs.input import Limits, parse_csv, parse_json
from jobs.models import FieldError, InputRejected, Operation
from jobs.scheduler import Send, dispatch
from jobs.skus import SkuCatalog
from jobs.store import JobStore, new_job_id

log = logging.getLogger(__name__)


class CatalogUnavailable(Exception):
    """The tenant's subscribedSkus could not be read, so names cannot be validated."""


@dataclass(frozen=True)
class Submitted:
    """A job accepted for processing."""

    id: str
    total: int
    chunks: int
    warnings: tuple[str, ...]


class CatalogCache:
    """Each tenant's SKU catalog, read from Graph and kept for a short while."""

    def __init__(self, fetch: Callable[[str], list[dict[str, object]]], ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, SkuCatalog]] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str) -> SkuCatalog:
        """The catalog of a tenant profile (KeyError if the profile is unknown)."""
        now = self._clock()
        with self._lock:
            hit = self._cache.get(tenant)
            if hit and now - hit[0] < self._ttl_s:
                return hit[1]
        try:
            items = self._fetch(tenant)
        except GraphError as exc:
            raise CatalogUnavailable(
                f"could not read the subscribed SKUs of tenant '{tenant}' from Graph: {exc.message}"
            ) from None
        except ThrottleWaitTooLong as exc:
            raise CatalogUnavailable(
                f"Graph throttles tenant '{tenant}' for {exc.wait_s:.0f} s; submit again after that"
            ) from None
        catalog = SkuCatalog.from_graph(items)
        with self._lock:
            self._cache[tenant] = (now, catalog)
        return catalog


class Submitter:
    """Turns an uploaded CSV or JSON body into a committed, enqueued job, or refuses it whole."""

    def __init__(self, settings: Settings, store: JobStore, catalogs: CatalogCache, send: Send) -> None:
        self.settings = settings
        self.store = store
        self.catalogs = catalogs
        self.send = send
        self.limits = Limits.from_settings(settings)

    def submit_csv(self, tenant: str, chunks: Iterable[bytes], *, owner: str = "") -> Submitted:
        """Validate and enqueue a CSV for a tenant profile."""
        if tenant not in self.settings.tenants:
            raise InputRejected([FieldError(f"unknown tenant profile '{tenant}'", column="tenant", value=tenant)])
        catalog = self.catalogs.get(tenant)
        parse = parse_csv(chunks, catalog, self.limits)
        return self._stage_and_commit(tenant, catalog, parse, lambda: (parse.errors, parse.total_errors),
                                      source="csv", owner=owner, status=lambda: parse.status_code)

    def submit_json(
        self, body: bytes, *, owner: str = "", allowed: Callable[[str], bool] = lambda _: True
    ) -> Submitted:
        """Validate and enqueue a JSON body `{"tenant", "operations": [...]}`."""
        def catalog_for(tenant: str) -> SkuCatalog:
            if tenant not in self.settings.tenants:
                raise KeyError(tenant)
            if not allowed(tenant):
                raise InputRejected(
                    [FieldError(f"this API key may not submit jobs for tenant '{tenant}'", column="tenant",
                                value=tenant)],
                    status_code=403,
                )
            return self.catalogs.get(tenant)

        tenant, ops = parse_json(body, catalog_for, self.limits)
        return self._stage_and_commit(tenant, self.catalogs.get(tenant), ops, lambda: ([], 0),
                                      source="json", owner=owner)

    def _stage_and_commit(
        self,
        tenant: str,
        catalog: SkuCatalog,
        operations: Iterable[Operation],
        errors: Callable[[], tuple[list[FieldError], int]],
        *,
        source: str,
        owner: str,
        status: Callable[[], int] = lambda: 422,
    ) -> Submitted:
        job_id = new_job_id()
        adds: Counter[str] = Counter()

        def valid_until_first_error() -> Iterator[Operation]:
            # Keep parsing after the first error (to report them all) but stop writing to Redis.
            for op in operations:
                if errors()[0]:
                    continue
                for lic in op.add:
                    adds[lic.sku_id] += 1
                yield op

        try:
            total = self.store.stage(job_id, tenant, valid_until_first_error(), self.settings.chunk_size)
            found, count = errors()
            if found:
                raise InputRejected(found, count, status())
            if total == 0:
                raise InputRejected([FieldError("the input has no operations")])
        except BaseException:
            self.store.discard(job_id)
            raise
        warnings = tuple(
            f"{catalog.part_number(sku)}: the job adds {n} but only {catalog.free_seats(sku)} seats are free"
            for sku, n in sorted(adds.items())
            if n > catalog.free_seats(sku)
        )
        total, chunks = self.store.commit(job_id, source=source, warnings=warnings, owner=owner)
        dispatch(self.store, self.send, job_id, self.settings.chunk_window)
        log.info("job %s accepted: %d users in %d chunks for tenant %s", job_id, total, chunks, tenant)
        return Submitted(id=job_id, total=total, chunks=chunks, warnings=warnings)
