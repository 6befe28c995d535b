"""Jobs built from a scan of the tenant itself: reclamation and the redundant-direct cleanup.

Such a job is submitted with no operations and one chunk, chunk 0, which scans (a scan can take
minutes on a large tenant, so it runs in a worker, never in the API request). The job is `planning`
meanwhile. The scan writes the operations it finds as chunks 1..n, counts them in the job at once
(`JobStore.finish_scan`), and the job goes on as any other: each user is read and planned, then
written (or, in a dry run, reported), so it can be run, cancelled and rolled back as usual. A dry
run plans from the states the scan read (no second read per user); a real job reads each user again
before writing. A scan run again (its worker died) starts over and overwrites what the first wrote.

The run of such a dry run scans again with the same criteria and keeps only what the preview showed
and the tenant still calls for: a user who signed in since, joined the exclusion group, or whose group
no longer covers the license is left out (counted as `changed_since_preview`), and nothing the preview
did not show is added.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from graphclient.errors import GraphError
from jobs.holdings import Holdings
from jobs.input.rules import clip
from jobs.models import FieldError, InputRejected, Operation
from jobs.reclaim import (
    MAX_INACTIVE_DAYS,
    MAX_UPN_PATTERNS,
    Candidate,
    Exclusion,
    ReclaimCriteria,
    judge,
    parse_upn_patterns,
    reclaim_operation,
)
from jobs.record import JobKind, JobRecord, ScanOutcome
from jobs.skus import SkuCatalog, UnknownName, is_guid
from jobs.store import JobStore
from jobs.tenant_scan import ScannedUser, SignInsUnavailable, TenantReader

log = logging.getLogger(__name__)
MAX_PATTERN_CHARS = 256


class ScanCancelled(Exception):
    """The job was cancelled while its scan ran."""


@dataclass(frozen=True)
class ScanRequest:
    """What the scan of a job built from the tenant looks for, as submitted (kept in the job's spec)."""

    kind: JobKind
    chunk_size: int
    as_of: float  # epoch seconds: inactivity counts back from here (the request's time)
    skus: tuple[str, ...] = ()  # skuIds, lower-case; empty: every SKU
    inactive_days: int = 0
    exclude_group: str | None = None
    exclude_upns: tuple[str, ...] = ()
    planned_from: str | None = None  # the run of a dry run: keep only that preview's operations

    def to_json(self) -> dict[str, Any]:
        """The spec's `scan` JSON (also the job JSON's `scan.request`)."""
        data: dict[str, Any] = {"kind": self.kind.value, "chunk_size": self.chunk_size,
                                "as_of": datetime.fromtimestamp(self.as_of, UTC).isoformat(), "skus": list(self.skus)}
        if self.kind is JobKind.RECLAIM:
            data |= {"inactive_days": self.inactive_days, "exclude_group": self.exclude_group,
                     "exclude_upns": list(self.exclude_upns)}
        if self.planned_from is not None:
            data["planned_from"] = self.planned_from
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScanRequest:
        """Inverse of `to_json`."""
        return cls(kind=JobKind(data["kind"]), chunk_size=int(data["chunk_size"]),
                   as_of=datetime.fromisoformat(str(data["as_of"])).timestamp(),
                   skus=tuple(data.get("skus") or ()), inactive_days=int(data.get("inactive_days") or 0),
                   exclude_group=data.get("exclude_group"), exclude_upns=tuple(data.get("exclude_upns") or ()),
                   planned_from=data.get("planned_from"))


@dataclass
class ScanTally:
    """What a scan counted, for the job's `scan.summary` (mutable while the scan runs)."""

    licensed_users: int = 0
    operations: int = 0
    found: Counter[str] = field(default_factory=Counter)  # why users were taken (reclaim: inactivity)
    excluded: Counter[str] = field(default_factory=Counter)  # why users were left alone
    seats: Counter[str] = field(default_factory=Counter)  # skuId -> direct assignments the job removes
    sign_ins_read: bool = False

    def to_json(self, catalog: SkuCatalog) -> dict[str, Any]:
        """The summary: counts by reason, and assignments removed per SKU (by part number)."""
        return {"licensed_users": self.licensed_users, "users": self.operations, "found": dict(self.found),
                "excluded": dict(self.excluded), "sign_ins_read": self.sign_ins_read,
                "removals": {catalog.part_number(sku): n for sku, n in sorted(self.seats.items())}}


def scan_request(kind: JobKind, catalog: SkuCatalog, *, chunk_size: int, as_of: float, skus: Sequence[str] = (),
                 inactive_days: int = 0, exclude_group: str | None = None,
                 exclude_upns: Sequence[str] = ()) -> ScanRequest:
    """A scan request from what the caller gave (names resolved); InputRejected listing every problem."""
    errors: list[FieldError] = []
    sku_ids: list[str] = []
    for name in skus:
        try:
            sku_ids.append(catalog.resolve_sku(name).sku_id.lower())
        except UnknownName as exc:
            errors.append(FieldError(exc.message, column="skus", value=clip(name)))
    if kind is JobKind.RECLAIM and not 1 <= inactive_days <= MAX_INACTIVE_DAYS:
        errors.append(FieldError(f"must be from 1 to {MAX_INACTIVE_DAYS} days", column="inactive_days",
                                 value=str(inactive_days)))
    group = (exclude_group or "").strip() or None
    if group is not None and not is_guid(group):
        errors.append(FieldError("must be a group's object id (a GUID)", column="exclude_group", value=clip(group)))
    patterns = parse_upn_patterns(exclude_upns)
    if len(patterns) > MAX_UPN_PATTERNS:
        errors.append(FieldError(f"at most {MAX_UPN_PATTERNS} patterns", column="exclude_upns",
                                 value=str(len(patterns))))
    errors.extend(FieldError(f"a pattern is at most {MAX_PATTERN_CHARS} characters", column="exclude_upns",
                             value=clip(p)) for p in patterns if len(p) > MAX_PATTERN_CHARS)
    if errors:
        raise InputRejected(errors)
    return ScanRequest(kind=kind, chunk_size=chunk_size, as_of=as_of, skus=tuple(dict.fromkeys(sku_ids)),
                       inactive_days=inactive_days, exclude_group=group.lower() if group else None,
                       exclude_upns=patterns)


def run_scan(reader: TenantReader, store: JobStore, job: JobRecord, catalog: SkuCatalog) -> ScanOutcome:
    """Scan the tenant for a scan-built job, write its operations and record the outcome (once)."""
    assert job.spec.scan is not None
    request = ScanRequest.from_json(job.spec.scan)
    tally, warnings = ScanTally(), list(job.spec.warnings)
    total, chunks, outcome = 0, 1, ScanOutcome.DONE
    # A dry run plans from the states the scan read: one read of the tenant in all.
    keep = StateKeeper(store, job.id) if job.spec.dry_run else None
    try:
        ops = _operations(reader, request, catalog, tally, warnings, keep)
        if request.planned_from is not None:
            ops = _still_called_for(store, request.planned_from, ops, catalog, tally)
        total, chunks = store.save_scanned(job.id, ops, request.chunk_size)
        if keep is not None:
            keep.flush()
            store.mark_prefetched(job.id)
    except ScanCancelled:
        outcome = ScanOutcome.CANCELLED
    except GraphError as exc:
        outcome = ScanOutcome.FAILED
        warnings.append(f"the tenant could not be read, nothing was planned: {exc}")
        log.warning("job %s: scan failed: %s", job.id, exc)
    if outcome is not ScanOutcome.DONE:
        total, chunks = 0, 1
    summary = tally.to_json(catalog) | {"pages_read": reader.pages}
    store.finish_scan(job.id, total, chunks, outcome.value, warnings, summary)
    log.info("job %s: scan %s, %d licensed users read in %d pages, %d to change", job.id, outcome.value,
             tally.licensed_users, reader.pages, total)
    return outcome


def _still_called_for(store: JobStore, planned_from: str, found: Iterator[Operation], catalog: SkuCatalog,
                      tally: ScanTally) -> Iterator[Operation]:
    """The preview's operations (rows kept) narrowed to the licenses the scan finds to remove now."""
    now = {op.user: frozenset(op.remove) for op in found}  # one entry per user found: bounded by the candidates
    tally.operations, tally.seats = 0, Counter()
    for op in store.iter_operations(planned_from):
        keep = tuple(sku for sku in op.remove if sku in now.get(op.user, ()))
        if len(keep) < len(op.remove):
            tally.excluded[Exclusion.CHANGED_SINCE_PREVIEW.value] += 1
        if keep:
            tally.operations += 1
            tally.seats.update(keep)
            yield replace(op, remove=keep, source=(("remove", ";".join(catalog.part_number(s) for s in keep)),))


class StateKeeper:
    """Keeps the states of a dry run's users as the scan read them (jobs.store's `prefetched`), a batch at a time."""

    BATCH = 500

    def __init__(self, store: JobStore, job_id: str) -> None:
        self._store, self._job_id = store, job_id
        self._batch: dict[str, str] = {}

    def keep(self, user: ScannedUser) -> None:
        """Keep one user's state, by id and by UPN."""
        state = json.dumps(dict(user.body), separators=(",", ":"))
        for key in (user.id, user.upn):
            if key:
                self._batch[key.lower()] = state
        if len(self._batch) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        """Write what is kept so far."""
        self._store.keep_prefetched(self._job_id, self._batch)
        self._batch = {}


def _operations(reader: TenantReader, request: ScanRequest, catalog: SkuCatalog, tally: ScanTally,
                warnings: list[str], keep: StateKeeper | None) -> Iterator[Operation]:
    """The scan's operations, numbered from 1, as the pages come."""
    if request.kind is JobKind.RECLAIM:
        found = _reclaims(reader, request, catalog, tally, warnings)
    else:
        found = _redundant(reader, request, catalog, tally)
    for op, user in found:
        tally.operations += 1
        tally.seats.update(sku.lower() for sku in op.remove)
        if keep is not None:
            keep.keep(user)
        yield op


def _reclaims(reader: TenantReader, request: ScanRequest, catalog: SkuCatalog, tally: ScanTally,
              warnings: list[str]) -> Iterator[tuple[Operation, ScannedUser]]:
    """Reclamation: a removal for each disabled or inactive user (jobs.reclaim); sign-ins unread: disabled only."""
    excluded = reader.transitive_member_ids(request.exclude_group) if request.exclude_group else frozenset()
    criteria = ReclaimCriteria(inactive_days=request.inactive_days, as_of=datetime.fromtimestamp(request.as_of, UTC),
                               skus=frozenset(request.skus), exclude_upns=request.exclude_upns, excluded_ids=excluded)
    users = _users_with_sign_ins(reader, warnings)
    tally.sign_ins_read = users is not None
    if users is None:
        users = reader.licensed_users(sign_ins=False)
        criteria = replace(criteria, sign_ins_known=False)
    row = 0
    for user in users:
        tally.licensed_users += 1
        verdict = judge(user, criteria)
        if verdict.excluded is not None:
            tally.excluded[verdict.excluded.value] += 1
        candidate: Candidate | None = verdict.candidate
        if candidate is not None:
            row += 1
            tally.found[candidate.why.value] += 1
            yield reclaim_operation(row, candidate, catalog), user


def _users_with_sign_ins(reader: TenantReader, warnings: list[str]) -> Iterator[ScannedUser] | None:
    """The licensed users with their sign-ins, or None (and a warning saying why) when Graph refuses sign-ins."""
    users = reader.licensed_users(sign_ins=True)
    try:
        first = next(users, None)
    except SignInsUnavailable as exc:
        warnings.append(f"{exc}; only disabled accounts were looked for. Grant AuditLog.Read.All (and license the "
                        "tenant for Microsoft Entra ID P1) to find users who no longer sign in")
        return None

    def chained() -> Iterator[ScannedUser]:
        if first is not None:
            yield first
            yield from users
    return chained()


def _redundant(reader: TenantReader, request: ScanRequest, catalog: SkuCatalog,
               tally: ScanTally) -> Iterator[tuple[Operation, ScannedUser]]:
    """The cleanup: remove each direct assignment a group already gives the same, plan for plan."""
    wanted = frozenset(request.skus)
    row = 0
    for user in reader.licensed_users(sign_ins=False):
        tally.licensed_users += 1
        holdings = Holdings.from_graph(user.body)
        redundant = [h for h in holdings.redundant_direct_skus() if not wanted or h.sku_id in wanted]
        if not redundant:
            continue
        row += 1
        tally.found[JobKind.REDUNDANT_DIRECT.value] += 1
        covering = sorted({g for h in redundant for g in h.covering_groups(h.direct or ())})
        yield Operation(row=row, user=user.id, remove=tuple(h.sku_id for h in redundant),
                        extra=(("userPrincipalName", user.upn), ("covered_by_groups", ";".join(covering))),
                        source=(("remove", ";".join(catalog.part_number(h.sku_id) for h in redundant)),)), user


def cancel_check(store: JobStore, job_id: str) -> Callable[[], None]:
    """What the reader calls after each page: ScanCancelled once someone cancelled the job."""
    def check() -> None:
        if store.cancel_requested(job_id):
            raise ScanCancelled(job_id)
    return check

