"""Submission: validate a whole input, stage it, and only then commit and enqueue it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from config import Settings
from jobs.catalogs import CatalogCache
from jobs.input import Limits, parse_csv, read_json_job
from jobs.input.reading import Reading
from jobs.input.rules import clip
from jobs.models import (
    Assignment,
    FieldError,
    InputRejected,
    JobOptions,
    JobStatus,
    LicenseMode,
    Operation,
    SeatPolicy,
)
from jobs.progress import accepted_status
from jobs.quotas import QuotaLedger
from jobs.record import SCAN_KINDS, Approval, JobKind, JobRecord, JobSpec, Prefetch, SeatBasis
from jobs.rollback import SeatDemand, rollback_operations
from jobs.scan_jobs import ScanRequest
from jobs.schedule import Day, Holder, peak_demand
from jobs.scheduler import Send, dispatch
from jobs.seats import SeatLedger, SeatLine, seat_lines
from jobs.skus import SkuCatalog
from jobs.store import JobStore, new_job_id
from webhooks.policy import CallbackPolicy, CallbackRefused

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    """A job accepted for processing."""

    id: str
    total: int
    chunks: int
    warnings: tuple[str, ...]
    dry_run: bool = False
    rollback_of: str | None = None  # the job it rolls back
    mode: LicenseMode = LicenseMode.ADD
    assignment: Assignment = Assignment.ANY
    # How the input was read (jobs.input.reading), as the API shows it.
    reading: dict[str, object] = field(default_factory=dict)
    needs_approval: bool = False  # it plans, then waits for another key's approval before anything is written
    status: JobStatus = JobStatus.QUEUED  # `scheduled` when every row waits for its day (jobs.progress)
    held: tuple[Day, ...] = ()  # the days a real job holds rows for (jobs.schedule)
    counted_by_scan: bool = False  # built from a scan of the tenant: `total` is 0 until the scan has found its rows

    def audited_rows(self) -> dict[str, object]:
        """The job's rows as the audit trail records them: null, `counted_by_scan`, until a scan has found them."""
        if self.counted_by_scan:
            return {"rows": None, "counted_by_scan": True}
        return {"rows": self.total}


class SeatShortage(Exception):
    """A real job needs more seats than the tenant has free (minus other jobs' reservations)."""

    def __init__(self, lines: list[SeatLine], mode: LicenseMode = LicenseMode.ADD) -> None:
        short = ", ".join(f"{line.sku} short by {line.shortfall}" for line in lines if line.shortfall)
        exact = (" (under mode=exact every listed license counts until the users are read, also those already "
                 "held)") if mode is LicenseMode.EXACT else ""
        super().__init__(
            f"not enough free seats: {short}{exact}. Nothing was started. Buy seats, submit with "
            "on_seat_shortage=wait to start now and wait for seats, or make a dry run first: "
            "it counts only the users who really need a seat, and running it reserves just those"
        )
        self.lines = lines


class NotRunnable(Exception):
    """`run` or `rollback` was asked of a job it does not apply to (the message says why)."""


class Submitter:
    """Turns an uploaded CSV or JSON body into a committed, enqueued job, or refuses it whole."""

    def __init__(self, settings: Settings, store: JobStore, catalogs: CatalogCache, send: Send,
                 seats: SeatLedger, callbacks: CallbackPolicy | None = None, quotas: QuotaLedger | None = None) -> None:
        self.settings = settings
        self.store = store
        self.catalogs = catalogs
        self.send = send
        self.seats = seats
        self.limits = Limits.from_settings(settings)
        self.callbacks = callbacks or CallbackPolicy.from_settings(settings)
        self.quotas = quotas or QuotaLedger.from_settings(store.redis, settings)

    def submit_csv(self, tenant: str, chunks: Iterable[bytes], *, owner: str = "",
                   options: JobOptions = JobOptions()) -> Submitted:
        """Validate and enqueue a CSV for a tenant profile."""
        if tenant not in self.settings.tenants:
            raise InputRejected([FieldError(f"unknown tenant profile '{tenant}'", column="tenant", value=tenant)])
        catalog = self.catalogs.get(tenant)
        parse = parse_csv(chunks, catalog, self.limits, options)
        return self._stage_and_commit(tenant, parse, lambda: (parse.errors, parse.total_errors),
                                      source="csv", owner=owner, options=options,
                                      status=lambda: parse.status_code, reading=lambda: parse.reading,
                                      kept_columns=lambda: parse.kept_columns)

    def submit_json(
        self, body: bytes, *, owner: str = "", allowed: Callable[[str], bool] = lambda _: True,
        options: JobOptions = JobOptions(),
    ) -> Submitted:
        """Validate and enqueue a JSON body `{"tenant", "operations": [...], "dry_run"?, "on_seat_shortage"?}`.

        Options given as query parameters (`options`) add to those in the body.
        """
        def catalog_for(tenant: str) -> SkuCatalog:
            # Allowed first: a key learns nothing of the profiles it may not use, not even whether they exist.
            if not allowed(tenant):
                raise InputRejected(
                    [FieldError(f"this API key may not submit jobs for tenant '{tenant}'", column="tenant",
                                value=tenant)],
                    status_code=403,
                )
            if tenant not in self.settings.tenants:
                raise KeyError(tenant)
            return self.catalogs.get(tenant)

        # The body's syntax, limits, tenant and options; `mode` from the query, or the body's.
        parse = read_json_job(body, catalog_for, self.limits, options.mode)
        in_body = parse.options
        if options.callback_url and in_body.callback_url and options.callback_url != in_body.callback_url:
            raise InputRejected([FieldError("callback_url is given twice (query and body), differently",
                                            column="callback_url", value=in_body.callback_url)])
        if options.assignment and in_body.assignment and options.assignment is not in_body.assignment:
            raise InputRejected([FieldError(f"assignment is given twice, differently: {options.assignment.value} in "
                                            f"the query, {in_body.assignment.value} in the body", column="assignment",
                                            value=in_body.assignment.value)])
        merged = JobOptions(
            dry_run=options.dry_run or in_body.dry_run,
            seat_policy=SeatPolicy.WAIT if SeatPolicy.WAIT in (options.seat_policy, in_body.seat_policy)
            else SeatPolicy.FAIL,
            callback_url=options.callback_url or in_body.callback_url,
            mode=in_body.mode,
            assignment=options.assignment or in_body.assignment,
        )
        reading = Reading("json", mode=(in_body.mode or LicenseMode.ADD).value)
        return self._stage_and_commit(parse.tenant, parse, lambda: (parse.errors, parse.total_errors), source="json",
                                      owner=owner, options=merged, status=lambda: parse.status_code,
                                      reading=lambda: reading)

    def submit_scan(self, tenant: str, request: ScanRequest, *, owner: str = "", dry_run: bool = True,
                    callback_url: str | None = None) -> Submitted:
        """Create and enqueue a job built from a scan of the tenant: `planning` while a worker scans (jobs.scan_jobs).

        It removes licenses only, so it reserves no seat. In a tenant that requires approval a scan job that
        would write always waits for one: how many users it changes is not known until the scan ends.
        """
        if tenant not in self.settings.tenants:
            raise InputRejected([FieldError(f"unknown tenant profile '{tenant}'", column="tenant", value=tenant)])
        self._check_callback(callback_url, tenant, owner)
        job_id = new_job_id()
        try:
            self.store.stage_scan(job_id, tenant)
            self.quotas.take(tenant, owner, job_id, 1)
        except BaseException:
            self.store.discard(job_id)
            raise
        gated = not dry_run and self.settings.tenants[tenant].require_approval
        spec = JobSpec(source="scan", owner=owner, dry_run=dry_run, seat_basis=SeatBasis.PLAN, kind=request.kind,
                       scan=request.to_json(), needs_approval=gated, callback_url=callback_url)
        self.store.commit(job_id, spec)
        dispatch(self.store, self.send, job_id, 1)
        log.info("job %s accepted: %s from a scan of tenant %s%s", job_id, request.kind.value, tenant,
                 " (dry run)" if dry_run else " (waits for approval once planned)" if gated else "")
        return Submitted(id=job_id, total=0, chunks=1, warnings=(), dry_run=dry_run, needs_approval=gated,
                         counted_by_scan=True)

    def run_planned(self, planned_id: str, *, owner: str = "", seat_policy: SeatPolicy = SeatPolicy.FAIL,
                    approval: Approval | None = None) -> Submitted:
        """Start the real job of a finished dry run, from the same input (it reads the users again).

        The run of a rollback's dry run is that rollback: it is refused if its job was rolled back meanwhile.
        With `approval` (jobs.approval), the run of a job that waited for it: it takes that job's seats.
        Without, in a tenant that requires approval the run waits for one in turn.
        """
        planned, rows = self._runnable(planned_id, approval)
        job_id = new_job_id()
        # Claimed before anything is staged, atomically: of requests racing to run one dry run, one wins.
        ran_as = self.store.link_once(planned_id, "run_as", job_id)
        if ran_as is not None:
            raise NotRunnable(f"this dry run was already run as job {ran_as}")
        schedule, gated = self._stage_run(planned, rows, job_id, owner, seat_policy, approval)
        # The run of a rollback's dry run is that rollback; the run reports where its dry run did, and
        # keeps how its input was read.
        # A scan-built dry run's run keeps its kind and scans again (jobs.scan_jobs: the preview's users only).
        undone = planned.spec.rollback_of
        kind = planned.spec.kind if undone is not None or planned.spec.kind in SCAN_KINDS else JobKind.JOB
        scan = None if planned.spec.scan is None else {**planned.spec.scan, "planned_from": planned_id}
        spec = replace(planned.spec, owner=owner, warnings=(), dry_run=False, seat_policy=seat_policy,
                       seat_basis=SeatBasis.PLAN, kind=kind, prefetch=None, planned_from=planned_id, scan=scan,
                       needs_approval=gated, schedule=schedule)
        total, chunks = self.store.commit(job_id, spec, held_window=self.settings.chunk_window)
        dispatch(self.store, self.send, job_id, 1 if scan is not None else self.settings.chunk_window)
        self._send_held(job_id, spec)
        log.info("job %s accepted: the run of %s %s, %d users for tenant %s%s", job_id,
                 "approved job" if approval else "dry run", planned_id, total, planned.tenant,
                 " (waits for approval once planned)" if gated else "")
        return Submitted(id=job_id, total=total, chunks=chunks, warnings=(), rollback_of=undone,
                         assignment=planned.spec.assignment, needs_approval=gated,
                         status=accepted_status(spec, total, self.store.clock()), held=_held(spec),
                         counted_by_scan=scan is not None)

    def _runnable(self, planned_id: str, approval: Approval | None) -> tuple[JobRecord, int]:
        """The finished plan to run and its rows; NotRunnable when it may not run (yet, or without approval)."""
        planned = self.store.job(planned_id)
        progress = self.store.progress(planned_id)
        if planned is None or not planned.spec.plans_only or progress is None \
                or progress.status is not JobStatus.PLANNED:
            raise NotRunnable("only a finished dry run (status planned) can be run")
        if planned.spec.needs_approval and approval is None:
            raise NotRunnable(f"job {planned_id} needs another API key's approval: POST /v1/jobs/{planned_id}/approve")
        return planned, progress.total

    def _stage_run(self, planned: JobRecord, rows: int, job_id: str, owner: str, seat_policy: SeatPolicy,
                   approval: Approval | None) -> tuple[tuple[Day, ...], bool]:
        """Stage the run of a plan with its quota and seats: its days, and whether it waits for approval in turn.

        Undone on any failure: nothing staged, reserved or linked is left behind.
        """
        tenant, undone, planned_id = planned.tenant, planned.spec.rollback_of, planned.id
        try:
            if undone is not None:
                self._claim_rollback(undone, job_id)
            holder = self._holder(tenant)
            cuts: list[tuple[float | None, int, int]] = []
            if planned.spec.scan is not None:  # it scans again, keeping the previewed users still called for
                self.store.stage_scan(job_id, tenant)
                total = 1
            else:
                total = self.store.stage(job_id, tenant, holder.order(self.store.iter_operations(planned_id)),
                                         self.settings.chunk_size, cuts)
            if holder.errors:  # a day further ahead than a job is kept (the retention was shortened since)
                raise InputRejected(holder.errors, holder.error_count)
            self.quotas.take(tenant, owner, job_id, total)
            # A scan's run is staged as one chunk to scan again: its size is what the preview found.
            gated = approval is None and self._needs_approval(tenant, rows if planned.spec.scan is not None else total)
            if approval is not None:
                self.seats.transfer(tenant, planned_id, job_id)  # the seats it held while it waited
            else:
                self._reserve(tenant, job_id, self._planned_demand(planned), seat_policy)
        except BaseException:
            self.store.discard(job_id)
            if approval is not None:
                self.seats.transfer(tenant, job_id, planned_id)
            self.store.unlink(planned_id, "run_as", job_id)
            if undone is not None:
                self.store.unlink(undone, "rolled_back_by", job_id)
            raise
        return holder.days(cuts) if holder.held() else (), gated

    def rollback(self, job_id: str, *, owner: str = "", dry_run: bool = False,
                 seat_policy: SeatPolicy = SeatPolicy.FAIL) -> Submitted:
        """Create the job that returns every user `job_id` changed to its `before` state (see jobs.rollback).

        NotRunnable (nothing created) for a dry run, a job not yet ended, one already rolled back
        (by a real rollback; dry runs of it do not count) and one that changed no user.
        """
        undone = self._rollback_target(job_id)
        tenant = undone.tenant
        catalog = self.catalogs.get(tenant)
        new_id = new_job_id()
        # A rollback that waits for approval claims its job only when approved (its run is the rollback).
        may_wait = not dry_run and self._needs_approval(tenant, 1)
        claimed = not dry_run and not may_wait
        if claimed:
            self._claim_rollback(job_id, new_id)
        demand = SeatDemand()
        try:
            ops = demand.count(rollback_operations(lambda: self.store.iter_results(job_id), catalog))
            total = self.store.stage(new_id, tenant, ops, self.settings.chunk_size)
            if total == 0:
                raise NotRunnable(f"job {job_id} changed no user: there is nothing to roll back")
            gated = may_wait and self._needs_approval(tenant, total)
            if may_wait and not gated:  # under the tenant's threshold: an ordinary rollback
                claimed = True
                self._claim_rollback(job_id, new_id)
            self.quotas.take(tenant, owner, new_id, total)
            warnings = () if dry_run else self._reserve(tenant, new_id, demand.net(), seat_policy)
        except BaseException:
            self.store.discard(new_id)
            if claimed:
                self.store.unlink(job_id, "rolled_back_by", new_id)
            raise
        spec = JobSpec(source="rollback", owner=owner, warnings=warnings, dry_run=dry_run, seat_policy=seat_policy,
                       seat_basis=SeatBasis.PLAN, kind=JobKind.ROLLBACK, rollback_of=job_id, mode=None,
                       kept_columns=undone.spec.kept_columns, needs_approval=gated)
        total, chunks = self.store.commit(new_id, spec)
        dispatch(self.store, self.send, new_id, self.settings.chunk_window)
        log.info("job %s accepted: the rollback%s of job %s, %d users for tenant %s", new_id,
                 " (dry run)" if dry_run else "", job_id, total, tenant)
        return Submitted(id=new_id, total=total, chunks=chunks, warnings=warnings, dry_run=dry_run, rollback_of=job_id,
                         needs_approval=gated)

    def _rollback_target(self, job_id: str) -> JobRecord:
        """The record of a job that may be rolled back; NotRunnable saying why when it may not."""
        job = self.store.job(job_id)
        progress = self.store.progress(job_id)
        if job is None or progress is None or not job.tenant:
            raise NotRunnable(f"job {job_id} does not exist")
        if job.spec.plans_only:
            raise NotRunnable(f"job {job_id} is a dry run: it changed nothing, so there is nothing to roll back")
        if not progress.status.is_terminal:
            raise NotRunnable(f"job {job_id} is {progress.status.value}: a job is rolled back once it has ended;"
                              " cancel it first")
        if job.rolled_back_by is not None:
            raise NotRunnable(f"job {job_id} was already rolled back by job {job.rolled_back_by}")
        return job

    def _planned_demand(self, planned: JobRecord) -> Mapping[str, int]:
        """The seats the run of a finished plan reserves: for dated rows, what the plan needs on its busiest day."""
        counters = self.store.plan_counters(planned.id)
        return peak_demand(counters.planned_days(planned.spec.schedule)) if planned.spec.schedule \
            else counters.seat_demand()

    def _needs_approval(self, tenant: str, rows: int) -> bool:
        """Whether a job of `rows` rows that would write waits for another key's approval in this tenant."""
        profile = self.settings.tenants.get(tenant)
        return profile is not None and profile.needs_approval(rows)

    def _claim_rollback(self, job_id: str, rollback_id: str) -> None:
        """Note `rollback_id` as the one rollback of `job_id`, atomically; NotRunnable if it has one."""
        existing = self.store.link_once(job_id, "rolled_back_by", rollback_id)
        if existing is not None:
            raise NotRunnable(f"job {job_id} was already rolled back by job {existing}")

    def _stage_and_commit(
        self,
        tenant: str,
        operations: Iterable[Operation],
        errors: Callable[[], tuple[list[FieldError], int]],
        *,
        source: str,
        owner: str,
        options: JobOptions,
        status: Callable[[], int] = lambda: 422,
        reading: Callable[[], Reading] | None = None,
        kept_columns: Callable[[], tuple[str, ...]] = tuple,
    ) -> Submitted:
        self._check_callback(options.callback_url, tenant, owner)
        job_id = new_job_id()
        assignment = options.assignment or Assignment.ANY
        holder = self._holder(tenant)
        cuts: list[tuple[float | None, int, int]] = []

        def valid_until_first_error() -> Iterator[Operation]:
            # Keep parsing after the first error (to report them all) but stop writing to Redis.
            for op in operations:
                if errors()[0] or holder.errors:
                    continue
                yield replace(op, assignment=assignment)

        try:
            total = self.store.stage(job_id, tenant, holder.order(valid_until_first_error()),
                                     self.settings.chunk_size, cuts)
            found, count = errors()
            if found or holder.errors:
                raise InputRejected(found + holder.errors, count + holder.error_count, status())
            if total == 0:
                raise InputRejected([FieldError("the input has no operations")])
            self.quotas.take(tenant, owner, job_id, total)  # dropped by the next check if refused below
            mode = options.mode or LicenseMode.ADD
            days = holder.days(cuts)
            # Seats for the busiest day of the job: what its rows add up to then, minus its earlier leavers'.
            warnings = () if options.dry_run else self._reserve(tenant, job_id, peak_demand(days), options.seat_policy,
                                                                mode)
        except BaseException:
            self.store.discard(job_id)
            raise
        gated = not options.dry_run and self._needs_approval(tenant, total)
        # A large dry run (or plan awaiting approval) reads the tenant page by page (jobs.prefetch):
        # its first chunk does that alone, then sends the rest of the window.
        paged = (options.dry_run or gated) and total >= self.settings.paged_read_min_users
        read = reading() if reading is not None else Reading(source, mode=mode.value)
        spec = JobSpec(source=source, owner=owner, warnings=warnings, dry_run=options.dry_run,
                       seat_policy=options.seat_policy, seat_basis=SeatBasis.INPUT,
                       prefetch=Prefetch.ASKED if paged else None, callback_url=options.callback_url or None,
                       mode=mode, reading=read.to_json(), kept_columns=kept_columns(), assignment=assignment,
                       needs_approval=gated, schedule=days if holder.held() else ())
        total, chunks = self.store.commit(job_id, spec, held_window=self.settings.chunk_window)
        dispatch(self.store, self.send, job_id, 1 if paged else self.settings.chunk_window)
        self._send_held(job_id, spec)
        log.info("job %s accepted: %d users in %d chunks for tenant %s%s", job_id, total, chunks, tenant,
                 " (dry run)" if options.dry_run else " (waits for approval once planned)" if gated else "")
        return Submitted(id=job_id, total=total, chunks=chunks, warnings=warnings, dry_run=options.dry_run,
                         mode=mode, reading=read.to_json(), assignment=assignment, needs_approval=gated,
                         status=accepted_status(spec, total, self.store.clock()), held=_held(spec))

    def _holder(self, tenant: str) -> Holder:
        """Orders a submission's rows by when they are due, in the tenant's time zone."""
        return Holder(self.settings.tenants[tenant].zone, self.store.clock(), self.settings.retention_s)

    def _send_held(self, job_id: str, spec: JobSpec) -> None:
        """Put the first chunks (a window) of each day a real job holds rows for in the due set, due at its instant.

        Each that completes sends the day's next (jobs.chunks). Were this process to die before, the
        reaper sends them once their time is past (their live state says when they are due).
        """
        if spec.plans_only:
            return
        now = self.store.clock()
        for day in spec.schedule:
            if day.due_at is not None:
                for n in range(day.first_chunk, day.first_chunk + min(day.chunks, self.settings.chunk_window)):
                    self.send(job_id, n, max(day.due_at - now, 0.001))

    def _check_callback(self, url: str | None, tenant: str, owner: str) -> None:
        """Refuse the submission (422) when it names a callback URL notifications may not go to.

        The host lookup waits a few seconds at most, a few at once per API key (CallbackCheckBusy beyond).
        """
        if url is None:
            return
        problem = None
        if self.settings.webhook_secret_for(tenant) is None:
            problem = ("notifications are not configured on this server (no webhook secret: set"
                       " BULKLICENSE_WEBHOOK_SECRET or the tenant profile's webhook_secret)")
        else:
            try:
                self.callbacks.check(url, caller=owner)
            except CallbackRefused as exc:
                problem = str(exc)
        if problem is not None:
            raise InputRejected([FieldError(problem, column="callback_url", value=clip(url))])

    def _reserve(self, tenant: str, job_id: str, demand: Mapping[str, int], policy: SeatPolicy,
                 mode: LicenseMode = LicenseMode.ADD) -> tuple[str, ...]:
        """Reserve the job's seats (fresh free counts from Graph); SeatShortage unless it may wait."""
        wanted = {sku: n for sku, n in demand.items() if n > 0}
        if not wanted:
            return ()
        catalog = self.catalogs.get(tenant, max_age_s=0)
        free = {sku: catalog.free_seats(sku) for sku in wanted}
        short = self.seats.reserve(tenant, job_id, wanted, free, force=policy is SeatPolicy.WAIT)
        if not short:
            return ()
        # The shortfall is the one the reservation found (others' reservations may have moved since).
        lines = [replace(line, shortfall=short.get(line.sku_id, 0))
                 for line in seat_lines(wanted, {}, catalog, self.seats.held_by_others(tenant, job_id))]
        if policy is SeatPolicy.FAIL:
            raise SeatShortage(lines, mode)
        return tuple(f"{line.sku}: the job adds up to {line.needed} but only {max(line.free, 0)} seats are free;"
                     " it pauses when they run out and goes on when seats appear" for line in lines if line.shortfall)


def _held(spec: JobSpec) -> tuple[Day, ...]:
    """The days a job holds rows for until then (none for a job that only plans: it plans them all now)."""
    return () if spec.plans_only else tuple(d for d in spec.schedule if d.due_at is not None)
