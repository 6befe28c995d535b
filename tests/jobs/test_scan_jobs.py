"""Jobs built from a scan of the tenant: chunk 0 scans (the job is planning), writes the operations, sends the rest."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis

from graphclient.client import GraphClient
from jobs.chunks import execute_chunk
from jobs.models import InputRejected, JobStatus
from jobs.quotas import QuotaExceeded, QuotaLedger, QuotaLimits
from jobs.record import JobKind, JobSpec, ScanOutcome
from jobs.scan_jobs import ScanRequest, scan_request
from jobs.skus import Sku, SkuCatalog
from jobs.store import JobStore
from tests.fakes import Directory, FakeClock, RecordingThrottle
from tests.jobs.helpers import E3, EMS, Ctx, make_deps

NOW = 1_780_000_000.0  # 2026-05-28
DAY = 86400.0
GROUP = "0f0e0d0c-0000-4000-8000-000000000001"
CATALOG = SkuCatalog([Sku(E3, "ENTERPRISEPACK", "User", "Enabled", 10, 5), Sku(EMS, "EMS", "User", "Enabled", 10, 5)])


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def graph_user(i: int, *, last_days: float | None, enabled: bool = True, states: list[dict[str, Any]] | None = None,
               created_days: float = 400) -> dict[str, Any]:
    states = [{"skuId": E3, "assignedByGroup": None, "state": "Active", "error": "None", "disabledPlans": []}] \
        if states is None else states
    return {"id": f"id-{i}", "userPrincipalName": f"u{i}@contoso.example", "accountEnabled": enabled,
            "createdDateTime": iso(NOW - created_days * DAY), "usageLocation": "US",
            "assignedLicenses": [{"skuId": s["skuId"], "disabledPlans": s["disabledPlans"]} for s in states
                                 if s["state"] == "Active"],
            "licenseAssignmentStates": states,
            "signInActivity": None if last_days is None else {
                "lastSuccessfulSignInDateTime": iso(NOW - last_days * DAY), "lastSignInDateTime": None}}


def scan_job(store: JobStore, kind: JobKind = JobKind.RECLAIM, *, dry_run: bool = True, **asked: Any) -> str:
    """A scan job as the API leaves it: committed, its chunk 0 dispatched."""
    request = ScanRequest(kind=kind, chunk_size=2, as_of=NOW, inactive_days=90, **asked)
    store.stage_scan("scan", "sim")
    store.commit("scan", JobSpec(source="scan", dry_run=dry_run, kind=kind, scan=request.to_json()))
    assert store.next_chunk("scan") == 0
    return "scan"


def context(store: JobStore, clock: FakeClock, handler: Any) -> Ctx:
    deps, _ = make_deps(store, None, clock)  # type: ignore[arg-type]
    graph = GraphClient(httpx.Client(transport=httpx.MockTransport(handler)), base_url="https://graph.test",
                        throttle=RecordingThrottle(), timeout_s=5)
    scan_deps = replace(deps, graph=graph, catalog=lambda: CATALOG)
    ctx = Ctx(store, lambda tenant: scan_deps)
    ctx.chunk_window = 3  # type: ignore[attr-defined]
    return ctx


def test_chunk_0_scans_while_the_job_is_planning_then_the_candidates_are_its_chunks(store: JobStore,
                                                                                   clock: FakeClock) -> None:
    users = [graph_user(0, last_days=5), graph_user(1, last_days=200), graph_user(2, last_days=None),
             graph_user(3, last_days=5, enabled=False), graph_user(4, last_days=None, created_days=10),
             graph_user(5, last_days=300, states=[])]
    directory = Directory(users)
    seen: list[JobStatus] = []

    def watching(request: httpx.Request) -> httpx.Response:
        progress = store.progress("scan")
        assert progress is not None
        seen.append(progress.status)
        return directory(request)

    job_id = scan_job(store)
    assert store.progress(job_id).status is JobStatus.QUEUED  # type: ignore[union-attr]
    ctx = context(store, clock, watching)
    execute_chunk(ctx, job_id, 0)
    assert seen == [JobStatus.PLANNING]
    record = store.job(job_id)
    assert record is not None and record.scan_outcome is ScanOutcome.DONE
    assert (record.total, record.chunks) == (3, 3)  # chunk 0 (the scan), then 2 + 1 users
    assert [(op.row, op.user, op.remove) for op in store.iter_operations(job_id)] == [
        (1, "id-1", (E3,)), (2, "id-2", (E3,)), (3, "id-3", (E3,))]
    assert sorted(n for _, n, _, _ in ctx.sent) == [1, 2]  # the rest of the window, after the scan
    assert record.scan_summary == {"licensed_users": 5, "users": 3, "sign_ins_read": True, "pages_read": 1,
                                   "found": {"inactive": 1, "never_signed_in": 1, "disabled": 1},
                                   "excluded": {"created_recently": 1}, "removals": {"ENTERPRISEPACK": 3}}
    # The dry run plans from what the scan read: no second read of these users.
    assert record.prefetched and store.prefetched(job_id, ["id-1"])["id-1"]["userPrincipalName"] == "u1@contoso.example"
    assert store.progress(job_id).status is JobStatus.PLANNING  # type: ignore[union-attr]


def test_a_real_reclaim_job_reads_its_users_again_before_writing(store: JobStore, clock: FakeClock) -> None:
    job_id = scan_job(store, dry_run=False)
    execute_chunk(context(store, clock, Directory([graph_user(1, last_days=200)])), job_id, 0)
    record = store.job(job_id)
    assert record is not None and record.total == 1 and not record.prefetched


def test_the_rows_a_scan_finds_count_in_the_quotas_of_its_tenant_and_key(store: JobStore, clock: FakeClock,
                                                                         redis_client: redis.Redis) -> None:
    quotas = QuotaLedger(redis_client, QuotaLimits(key_rows=4, tenant_rows=4), retention_s=3600, clock=clock)
    job_id = scan_job(store, dry_run=False)
    quotas.take("sim", "", job_id, 1)  # as submitted: its size is not known before the scan
    ctx = context(store, clock, Directory([graph_user(i, last_days=200) for i in range(3)]))
    scan_deps = ctx.deps_for_tenant("sim")
    ctx.deps_for_tenant = lambda tenant: replace(scan_deps, quotas=quotas)
    execute_chunk(ctx, job_id, 0)
    assert store.job(job_id).total == 3  # type: ignore[union-attr]
    with pytest.raises(QuotaExceeded) as refused:
        quotas.take("sim", "", "next", 2)
    assert (refused.value.use.in_use, refused.value.use.limit) == (3, 4)
    quotas.take("sim", "", "next", 1)


def test_the_exclusion_group_and_upn_patterns_are_left_alone(store: JobStore, clock: FakeClock) -> None:
    users = [graph_user(i, last_days=200) for i in range(4)]
    directory = Directory(users, groups={GROUP: ["id-0", "nested"], "nested": ["id-1"]})
    job_id = scan_job(store, exclude_group=GROUP, exclude_upns=("U2@*",))
    execute_chunk(context(store, clock, directory), job_id, 0)
    assert [op.user for op in store.iter_operations(job_id)] == ["id-3"]


def test_without_sign_ins_only_disabled_accounts_are_taken_and_the_job_says_why(store: JobStore,
                                                                                clock: FakeClock) -> None:
    users = [graph_user(0, last_days=200), graph_user(1, last_days=200, enabled=False)]
    directory = Directory(users, sign_ins_denied="Authentication_MSGraphPermissionMissing")
    job_id = scan_job(store)
    execute_chunk(context(store, clock, directory), job_id, 0)
    record = store.job(job_id)
    assert record is not None and [op.user for op in store.iter_operations(job_id)] == ["id-1"]
    assert any("AuditLog.Read.All" in w for w in record.spec.warnings)
    assert record.scan_summary is not None and record.scan_summary["sign_ins_read"] is False


def test_a_scan_cancelled_while_it_reads_ends_the_job_cancelled_with_nothing_to_do(store: JobStore,
                                                                                  clock: FakeClock) -> None:
    directory = Directory([graph_user(i, last_days=200) for i in range(5)])

    def cancelled_meanwhile(request: httpx.Request) -> httpx.Response:
        store.request_cancel("scan")
        return directory(request)

    job_id = scan_job(store)
    ctx = context(store, clock, cancelled_meanwhile)
    execute_chunk(ctx, job_id, 0)
    progress = store.progress(job_id)
    assert progress is not None and (progress.status, progress.total) == (JobStatus.CANCELLED, 0)
    assert ctx.sent == [] and progress.finished_at is not None


def test_a_tenant_that_cannot_be_read_ends_the_job_with_errors_and_says_so(store: JobStore, clock: FakeClock) -> None:
    job_id = scan_job(store, exclude_group=GROUP)  # the group does not exist
    execute_chunk(context(store, clock, Directory([graph_user(1, last_days=200)])), job_id, 0)
    progress = store.progress(job_id)
    assert progress is not None and progress.status is JobStatus.COMPLETED_WITH_ERRORS
    assert any("could not be read" in w and "404" in w for w in progress.warnings)


def test_the_cleanup_removes_direct_assignments_a_group_gives_the_same(store: JobStore, clock: FakeClock) -> None:
    def state(sku: str, group: str | None, plans: list[str] | None = None, st: str = "Active",
              error: str = "None") -> dict[str, Any]:
        return {"skuId": sku, "assignedByGroup": group, "state": st, "error": error, "disabledPlans": plans or []}
    users = [
        graph_user(0, last_days=1, states=[state(E3, None), state(E3, GROUP), state(EMS, None)]),  # E3 redundant
        graph_user(1, last_days=1, states=[state(E3, None, ["p1"]), state(E3, GROUP)]),  # other plans: kept
        graph_user(2, last_days=1, states=[state(E3, None), state(E3, GROUP, st="Error", error="CountViolation")]),
        graph_user(3, last_days=1, states=[state(E3, GROUP)]),  # group only
    ]
    directory = Directory(users)
    job_id = scan_job(store, JobKind.REDUNDANT_DIRECT)
    execute_chunk(context(store, clock, directory), job_id, 0)
    ops = list(store.iter_operations(job_id))
    assert [(op.user, op.remove, dict(op.extra)["covered_by_groups"]) for op in ops] == [("id-0", (E3,), GROUP)]
    assert "signInActivity" not in json.dumps(directory.requests)  # the cleanup needs no sign-ins


def test_a_scan_request_lists_every_problem_with_what_was_asked() -> None:
    with pytest.raises(InputRejected) as refused:
        scan_request(JobKind.RECLAIM, CATALOG, chunk_size=10, as_of=NOW, skus=["ENTERPRISEPACK", "NOPE"],
                     inactive_days=0, exclude_group="not-a-guid", exclude_upns=["x" * 300])
    assert [(e.column, (e.value or "")[:20]) for e in refused.value.errors] == [
        ("skus", "NOPE"), ("inactive_days", "0"), ("exclude_group", "not-a-guid"), ("exclude_upns", "x" * 20)]
    asked = scan_request(JobKind.RECLAIM, CATALOG, chunk_size=10, as_of=NOW, skus=["enterprisepack", E3],
                         inactive_days=30, exclude_group=GROUP.upper(), exclude_upns=["svc-*, room-*"])
    assert (asked.skus, asked.exclude_group, asked.exclude_upns) == ((E3,), GROUP, ("svc-*", "room-*"))
    assert ScanRequest.from_json(asked.to_json()) == asked


def test_a_scan_that_cannot_run_here_ends_the_job_with_errors(store: JobStore, clock: FakeClock) -> None:
    def unknown(tenant: str) -> Any:
        raise KeyError(tenant)

    job_id = scan_job(store)
    ctx = Ctx(store, unknown)
    ctx.chunk_window = 3  # type: ignore[attr-defined]
    execute_chunk(ctx, job_id, 0)
    progress = store.progress(job_id)
    assert progress is not None and progress.status is JobStatus.COMPLETED_WITH_ERRORS and progress.total == 0


def test_the_run_of_a_preview_scans_again_and_keeps_only_what_is_still_called_for(store: JobStore,
                                                                                  clock: FakeClock) -> None:
    both = [{"skuId": s, "assignedByGroup": None, "state": "Active", "error": "None", "disabledPlans": []}
            for s in (E3, EMS)]
    users = [graph_user(1, last_days=200), graph_user(2, last_days=200), graph_user(3, last_days=200),
             graph_user(4, last_days=5)]
    preview = scan_job(store)
    execute_chunk(context(store, clock, Directory(users)), preview, 0)
    assert [op.user for op in store.iter_operations(preview)] == ["id-1", "id-2", "id-3"]
    # Since the preview: id-2 signed in, id-3 got EMS as well, id-4 stopped signing in.
    users[1] = graph_user(2, last_days=1)
    users[2] = graph_user(3, last_days=200, states=both)
    users[3] = graph_user(4, last_days=200)
    request = ScanRequest(kind=JobKind.RECLAIM, chunk_size=2, as_of=NOW, inactive_days=90, planned_from=preview)
    store.stage_scan("run", "sim")
    store.commit("run", JobSpec(source="scan", kind=JobKind.RECLAIM, scan=request.to_json()))
    assert store.next_chunk("run") == 0
    execute_chunk(context(store, clock, Directory(users)), "run", 0)
    assert [(op.row, op.user, op.remove) for op in store.iter_operations("run")] == [(1, "id-1", (E3,)),
                                                                                     (3, "id-3", (E3,))]
    record = store.job("run")
    assert record is not None and record.total == 2 and not record.prefetched  # the run reads users again
    assert record.scan_summary is not None and record.scan_summary["excluded"]["changed_since_preview"] == 1
    assert record.scan_summary["removals"] == {"ENTERPRISEPACK": 2}
