"""Reclamation's rules: who is unused, who is left alone, and which licenses are taken back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobs.reclaim import Exclusion, Inactivity, ReclaimCriteria, Verdict, judge, parse_upn_patterns, reclaim_operation
from jobs.skus import Sku, SkuCatalog
from jobs.tenant_scan import ScannedUser, SignIns
from tests.jobs.helpers import E3, EMS

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CRITERIA = ReclaimCriteria(inactive_days=90, as_of=NOW)
GROUP = "0f0e0d0c-0000-4000-8000-000000000001"


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def direct(*skus: str) -> list[dict[str, Any]]:
    return [{"skuId": s, "assignedByGroup": None, "state": "Active", "error": "None", "disabledPlans": []}
            for s in skus]


def via_group(*skus: str, state: str = "Active", error: str = "None") -> list[dict[str, Any]]:
    return [{"skuId": s, "assignedByGroup": GROUP, "state": state, "error": error, "disabledPlans": []} for s in skus]


def scanned(*, states: list[dict[str, Any]] | None = None, enabled: bool = True, created: datetime | None = None,
            last: datetime | None = None, attempt: datetime | None = None, upn: str = "ann@contoso.example",
            sign_ins_read: bool = True) -> ScannedUser:
    states = direct(E3) if states is None else states
    held = [s for s in states if s["state"] in ("Active", "ActiveWithError")]
    body = {"id": "ID-1", "userPrincipalName": upn, "licenseAssignmentStates": states,
            "assignedLicenses": [{"skuId": s["skuId"], "disabledPlans": []} for s in held]}
    return ScannedUser(id="ID-1", upn=upn, enabled=enabled, created_at=created or days_ago(400),
                       sign_ins=SignIns(last, attempt) if sign_ins_read else None, body=body)


@pytest.mark.parametrize(("user", "why"), [
    (scanned(last=days_ago(91)), Inactivity.INACTIVE),
    (scanned(last=days_ago(10), enabled=False), Inactivity.DISABLED),
    (scanned(last=None), Inactivity.NEVER_SIGNED_IN),
    (scanned(enabled=False, sign_ins_read=False), Inactivity.DISABLED),
])
def test_disabled_inactive_and_never_signed_in_users_are_candidates(user: ScannedUser, why: Inactivity) -> None:
    verdict = judge(user, CRITERIA)
    assert verdict.candidate is not None and verdict.candidate.why is why
    assert verdict.candidate.skus == (E3,)


@pytest.mark.parametrize("user", [
    scanned(last=days_ago(89)),
    scanned(sign_ins_read=False),  # sign-ins unknown: only disabled accounts qualify
])
def test_users_in_use_or_unknown_are_left(user: ScannedUser) -> None:
    assert judge(user, CRITERIA) == Verdict()


def test_the_inactive_detail_names_the_last_sign_in() -> None:
    verdict = judge(scanned(last=days_ago(120)), CRITERIA)
    assert verdict.candidate is not None
    assert verdict.candidate.detail == "last successful sign-in 2026-02-01 (120 days ago)"


@pytest.mark.parametrize(("user", "criteria", "why"), [
    (scanned(last=None, created=days_ago(30)), CRITERIA, Exclusion.NEW),  # a new hire who has not started
    (scanned(enabled=False, created=days_ago(5)), CRITERIA, Exclusion.NEW),
    (scanned(last=days_ago(200)), ReclaimCriteria(90, NOW, excluded_ids=frozenset({"id-1"})), Exclusion.GROUP),
    (scanned(last=days_ago(200), upn="SVC-Backup@Contoso.example"),
     ReclaimCriteria(90, NOW, exclude_upns=("svc-*@contoso.example",)), Exclusion.UPN),
    (scanned(last=days_ago(200), upn="room.12@contoso.example"),
     ReclaimCriteria(90, NOW, exclude_upns=("nobody", "room.??@*")), Exclusion.UPN),
    (scanned(last=days_ago(200), states=via_group(E3)), CRITERIA, Exclusion.NOTHING_DIRECT),
    (scanned(last=days_ago(200), states=direct(E3)), ReclaimCriteria(90, NOW, skus=frozenset({EMS})),
     Exclusion.NOTHING_DIRECT),
])
def test_exclusions(user: ScannedUser, criteria: ReclaimCriteria, why: Exclusion) -> None:
    verdict = judge(user, criteria)
    assert verdict.candidate is None and verdict.excluded is why


def test_only_direct_licenses_of_the_named_skus_are_taken_and_group_held_ones_are_kept() -> None:
    states = [*direct(E3, EMS), *via_group(E3)]
    every = judge(scanned(last=days_ago(200), states=states), CRITERIA).candidate
    assert every is not None and every.skus == (EMS,) and every.kept == (E3,)  # E3 both ways: no seat to free
    named = judge(scanned(last=days_ago(200), states=direct(E3, EMS)),
                  ReclaimCriteria(90, NOW, skus=frozenset({EMS}))).candidate
    assert named is not None and named.skus == (EMS,)


def test_a_group_assignment_in_error_does_not_protect_a_direct_license() -> None:
    states = [*direct(E3), *via_group(E3, state="Error", error="CountViolation")]
    candidate = judge(scanned(last=days_ago(200), states=states), CRITERIA).candidate
    assert candidate is not None and candidate.skus == (E3,)


def test_before_december_2023_the_last_attempt_stands_in_for_the_unrecorded_success() -> None:
    long_ago = ReclaimCriteria(inactive_days=1200, as_of=NOW)  # reaches back before 1 December 2023
    recent_attempt = scanned(last=None, attempt=days_ago(1000), created=days_ago(3000))
    assert judge(recent_attempt, long_ago).candidate is None
    assert judge(recent_attempt, CRITERIA).candidate is not None  # within the recorded era: no success is inactivity
    old_attempt = scanned(last=None, attempt=days_ago(1300), created=days_ago(3000))
    candidate = judge(old_attempt, long_ago).candidate
    assert candidate is not None and candidate.why is Inactivity.INACTIVE


def test_the_operation_removes_by_id_and_echoes_the_upn_and_the_reason() -> None:
    catalog = SkuCatalog([Sku(E3, "ENTERPRISEPACK", "User", "Enabled", 10, 5),
                          Sku(EMS, "EMS", "User", "Enabled", 10, 5)])
    candidate = judge(scanned(last=days_ago(200), states=[*direct(E3, EMS), *via_group(E3)]), CRITERIA).candidate
    assert candidate is not None
    op = reclaim_operation(7, candidate, catalog)
    assert (op.row, op.user, op.remove, op.add) == (7, "ID-1", (EMS,), ())
    extra = dict(op.extra)
    assert extra["userPrincipalName"] == "ann@contoso.example" and extra["reclaim_reason"] == "inactive"
    assert extra["kept_group_licenses"] == "ENTERPRISEPACK" and dict(op.source) == {"remove": "EMS"}


def test_upn_patterns_split_on_commas_and_lines_without_repeats() -> None:
    assert parse_upn_patterns(["svc-*, room-*", "svc-*\nshared@x", " "]) == ("svc-*", "room-*", "shared@x")
