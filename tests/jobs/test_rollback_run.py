"""A rollback job run by the executor against a stateful fake Graph: step order, drift, notes, restarts."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from jobs.executor import ChunkDeps, run_users
from jobs.models import Operation, Reason, UserResult, UserStatus
from jobs.plan import UserState
from jobs.rollback import LOCATION_KEPT, rollback_operations
from jobs.skus import SkuCatalog
from jobs.store import JobStore, WriteGate
from tests.fakes import FakeClock, Tenant
from tests.jobs.helpers import make_deps

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"  # ENTERPRISEPACK
E1 = "18181a46-0d4e-45cd-891e-60aabd171b4e"  # STANDARDPACK
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
BI = "f8a1db68-be16-40ed-86d5-cb42ce701560"  # POWER_BI_PRO
SWAY = "a23b959c-7ce8-4e57-9140-b90eb88a9e97"  # in ENTERPRISEPACK and STANDARDPACK


def graph_user(user_id: str, *licenses: tuple[str, list[str]], location: str | None = "US") -> dict[str, Any]:
    return {"id": user_id, "usageLocation": location,
            "assignedLicenses": [{"skuId": sku, "disabledPlans": plans} for sku, plans in licenses]}


def stored(user: dict[str, Any]) -> dict[str, Any]:
    return UserState.from_graph(user).to_json()


# Each user before the original job, and as the job left it.
BEFORE = {
    "added@x": graph_user("id-a"),
    "removed@x": graph_user("id-b", (E1, [SWAY]), (EMS, [])),
    "moved@x": graph_user("id-c", location="GB"),
    "drifted@x": graph_user("id-d"),
    "unlocated@x": graph_user("id-e", location=None),
}
AFTER = {
    "added@x": graph_user("id-a", (E3, [SWAY])),
    "removed@x": graph_user("id-b", (EMS, [])),
    "moved@x": graph_user("id-c", (BI, []), location="NL"),
    "drifted@x": graph_user("id-d", (BI, [])),
    "unlocated@x": graph_user("id-e", (BI, []), location="FR"),
}


@pytest.fixture(scope="module")
def catalog() -> SkuCatalog:
    items = json.loads((CORPUS / "subscribed_skus.json").read_text(encoding="utf-8"))["value"]
    return SkuCatalog.from_graph(items)


def rollback_job(store: JobStore, catalog: SkuCatalog, *, dry_run: bool = False) -> str:
    """Stage the rollback of the original job (its rows and results as above) as job `rb`."""
    original = [(Operation(row=i + 2, user=upn), UserResult(row=i + 2, user=upn, status=UserStatus.SUCCEEDED,
                                                            before=stored(BEFORE[upn]), after=stored(AFTER[upn])))
                for i, upn in enumerate(BEFORE)]
    store.stage("rb", "sim", rollback_operations(lambda: original, catalog), 100)
    store.commit("rb", source="rollback", options={"dry_run": "1" if dry_run else "0", "kind": "rollback"})
    return "rb"


def tenant_now() -> Tenant:
    """Graph as the job left it, but for one user someone gave EMS since."""
    users = copy.deepcopy(AFTER)
    users["drifted@x"]["assignedLicenses"].append({"skuId": EMS, "disabledPlans": []})
    return Tenant(users)


def named(deps: ChunkDeps, catalog: SkuCatalog) -> ChunkDeps:
    """The deps with the tenant's SKU names (results and drift messages name licenses)."""
    return dataclasses.replace(deps, catalog=lambda: catalog)


def results(store: JobStore, job_id: str) -> dict[str, UserResult]:
    return {op.user: res for op, res in store.iter_results(job_id) if res is not None}


def licenses(user: dict[str, Any]) -> dict[str, list[str]]:
    return {a["skuId"]: sorted(a["disabledPlans"]) for a in user["assignedLicenses"]}


def test_a_rollback_returns_users_to_before_and_leaves_the_drifted_alone(
        store: JobStore, clock: FakeClock, catalog: SkuCatalog) -> None:
    tenant = tenant_now()
    drifted = copy.deepcopy(tenant.users["drifted@x"])
    job_id = rollback_job(store, catalog)
    deps = named(make_deps(store, tenant, clock)[0], catalog)
    run_users(deps, job_id, 0, budget_started_at=clock())

    for upn in ("added@x", "removed@x", "moved@x"):
        assert licenses(tenant.users[upn]) == licenses(BEFORE[upn]), upn
        assert tenant.users[upn]["usageLocation"] == BEFORE[upn]["usageLocation"], upn
    assert tenant.users["drifted@x"] == drifted  # untouched
    assert licenses(tenant.users["unlocated@x"]) == {} and tenant.users["unlocated@x"]["usageLocation"] == "FR"
    # The licenses that needed the location went first, then the location; one call each.
    assert [w for w in tenant.writes if w[1] == "moved@x"] == [("POST", "moved@x"), ("PATCH", "moved@x")]
    assert not any(w[1] == "drifted@x" for w in tenant.writes)
    assert len(tenant.writes) == 5

    got = results(store, job_id)
    assert {u: r.status for u, r in got.items()} == {
        "added@x": UserStatus.SUCCEEDED, "removed@x": UserStatus.SUCCEEDED, "moved@x": UserStatus.SUCCEEDED,
        "drifted@x": UserStatus.FAILED, "unlocated@x": UserStatus.SUCCEEDED}
    assert got["drifted@x"].reason == Reason.DRIFTED
    assert got["drifted@x"].graph_message == "changed since the job: holds EMS, which the job did not leave"
    assert got["unlocated@x"].detail == LOCATION_KEPT.format(location="FR")
    assert got["removed@x"].action == "add STANDARDPACK (SWAY off)"
    assert got["moved@x"].after == stored(BEFORE["moved@x"]) | {"userPrincipalName": "moved@x"}


def test_a_rollback_dry_run_writes_nothing(store: JobStore, clock: FakeClock, catalog: SkuCatalog) -> None:
    tenant = tenant_now()
    job_id = rollback_job(store, catalog, dry_run=True)
    deps = named(make_deps(store, tenant, clock)[0], catalog)
    run_users(deps, job_id, 0, budget_started_at=clock())
    assert tenant.writes == []
    got = results(store, job_id)
    assert got["drifted@x"].status is UserStatus.WOULD_FAIL and got["drifted@x"].reason == Reason.DRIFTED
    assert got["moved@x"].status is UserStatus.WOULD_CHANGE
    assert got["moved@x"].action == "set usage location GB; remove POWER_BI_PRO"
    assert got["unlocated@x"].detail == LOCATION_KEPT.format(location="FR")


@pytest.mark.parametrize("assign_applied", [False, True])
def test_after_a_crash_the_read_back_keeps_the_rollback_order(
        store: JobStore, clock: FakeClock, catalog: SkuCatalog, assign_applied: bool) -> None:
    tenant = Tenant({"moved@x": copy.deepcopy(AFTER["moved@x"])})
    original = [(Operation(row=2, user="moved@x"),
                 UserResult(row=2, user="moved@x", status=UserStatus.SUCCEEDED,
                            before=stored(BEFORE["moved@x"]), after=stored(AFTER["moved@x"])))]
    store.stage("rb", "sim", rollback_operations(lambda: original, catalog), 100)
    store.commit("rb", source="rollback", options={"kind": "rollback"})
    # A previous worker planned the user and sent its first write; then it died.
    store.save_plans("rb", [(2, {**stored(AFTER["moved@x"]), "userPrincipalName": "moved@x"}, ["changes"])])
    assert store.begin_writes("rb", "dead-batch", clock() + 30, [2]) is WriteGate.FIRST
    if assign_applied:
        tenant.users["moved@x"]["assignedLicenses"] = []
    deps, _ = make_deps(store, tenant, clock)
    run_users(deps, "rb", 0, budget_started_at=clock())
    assert tenant.writes == ([] if assign_applied else [("POST", "moved@x")]) + [("PATCH", "moved@x")]
    assert tenant.users["moved@x"] == BEFORE["moved@x"]
    assert results(store, "rb")["moved@x"].status is UserStatus.SUCCEEDED
