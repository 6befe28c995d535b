"""The tenant scan: licensed users page by page (120 with sign-ins), the sign-in refusals told apart, nested groups."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from graphclient.client import GraphClient
from graphclient.errors import GraphPermanentError, GraphThrottled, ThrottleWaitTooLong
from graphclient.retry import RetryPolicy
from jobs.tenant_scan import ScannedUser, SignInsUnavailable, TenantReader
from tests.fakes import Directory, FakeClock, RecordingSleep, RecordingThrottle
from tests.jobs.helpers import E3

POLICY = RetryPolicy(max_attempts=3, max_total_s=600, backoff_base_s=1, backoff_max_s=8, max_inline_wait_s=30)


def graph_user(i: int, *, licensed: bool = True, enabled: bool = True,
               last_success: str | None = "2026-01-02T03:04:05Z") -> dict[str, Any]:
    return {"id": f"id-{i}", "userPrincipalName": f"u{i}@contoso.example", "accountEnabled": enabled,
            "createdDateTime": "2024-01-01T00:00:00Z", "usageLocation": "US",
            "assignedLicenses": [{"skuId": E3, "disabledPlans": []}] if licensed else [],
            "licenseAssignmentStates": [{"skuId": E3, "assignedByGroup": None, "state": "Active", "error": "None",
                                         "disabledPlans": []}] if licensed else [],
            "signInActivity": {"lastSuccessfulSignInDateTime": last_success,
                               "lastSignInDateTime": "2026-02-01T00:00:00Z"}}


def reader(directory: Any, sleep: Any = None, *, patient: bool = True) -> TenantReader:
    http = httpx.Client(transport=httpx.MockTransport(directory))
    graph = GraphClient(http, base_url="https://graph.test", throttle=RecordingThrottle(), timeout_s=5)
    return TenantReader(graph, POLICY, sleep or RecordingSleep(FakeClock()), patient=patient)


def test_the_scan_pages_licensed_users_120_at_a_time_when_it_reads_sign_ins() -> None:
    users = [graph_user(i, licensed=i % 3 != 0) for i in range(250)]
    directory = Directory(users)
    scan = reader(directory)
    found = list(scan.licensed_users(sign_ins=True))
    assert [u.id for u in found] == [u["id"] for u in users if u["assignedLicenses"]]
    assert scan.pages == 3 and all(q["$top"] == "120" for _, q in directory.requests)
    assert found[1].sign_ins is not None
    assert found[1].sign_ins.last_successful == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert "signInActivity" not in found[1].body and found[1].body["assignedLicenses"]


def test_a_user_whose_only_group_assignment_failed_is_not_licensed() -> None:
    failed = graph_user(1, licensed=False)
    failed["licenseAssignmentStates"] = [{"skuId": E3, "assignedByGroup": "g", "state": "Error",
                                          "error": "CountViolation", "disabledPlans": []}]
    assert [u.id for u in reader(Directory([failed, graph_user(2)])).licensed_users(sign_ins=False)] == ["id-2"]


def test_without_sign_ins_the_scan_takes_pages_of_999_and_leaves_sign_ins_unknown() -> None:
    directory = Directory([graph_user(i) for i in range(5)])
    found = list(reader(directory).licensed_users(sign_ins=False))
    assert len(found) == 5 and found[0].sign_ins is None
    _, query = directory.requests[0]
    assert query["$top"] == "999" and "signInActivity" not in query["$select"]


@pytest.mark.parametrize(("code", "words"), [
    ("Authentication_MSGraphPermissionMissing", "AuditLog.Read.All"),
    ("Authentication_RequestFromNonPremiumTenantOrB2CTenant", "Microsoft Entra ID P1 or P2"),
])
def test_a_refused_sign_in_read_says_why(code: str, words: str) -> None:
    with pytest.raises(SignInsUnavailable, match=words):
        list(reader(Directory([graph_user(1)], sign_ins_denied=code)).licensed_users(sign_ins=True))


def test_other_refusals_are_not_taken_for_missing_sign_ins() -> None:
    with pytest.raises(GraphPermanentError):
        list(reader(Directory([graph_user(1)], sign_ins_denied="Authorization_RequestDenied"))
             .licensed_users(sign_ins=True))


def test_a_user_who_never_signed_in_has_no_sign_in_times() -> None:
    raw = graph_user(1, last_success=None)
    raw["signInActivity"] = None
    user = ScannedUser.from_graph(raw, sign_ins_read=True)
    assert user.sign_ins is not None and user.sign_ins.last_successful is None and user.sign_ins.last_attempt is None


def test_members_of_nested_groups_count_at_any_depth_and_a_loop_ends() -> None:
    users = [graph_user(i) for i in range(4)]
    directory = Directory(users, groups={"outer": ["id-0", "mid"], "mid": ["id-1", "inner", "outer"],
                                         "inner": ["id-2"]})
    assert reader(directory).transitive_member_ids("outer") == {"id-0", "id-1", "id-2"}


def test_a_long_throttle_wait_is_slept_through_by_a_scan_and_raised_when_impatient() -> None:
    calls = {"n": 0}
    directory = Directory([graph_user(1)])

    def throttled_once(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(429, headers={"Retry-After": "120"},
                                  json={"error": {"code": "TooManyRequests", "message": "later"}})
        return directory(request)

    sleep = RecordingSleep(FakeClock())
    assert len(list(reader(throttled_once, sleep).licensed_users(sign_ins=True))) == 1
    assert sleep.intervals == [120.0]
    calls["n"] = 0
    with pytest.raises(ThrottleWaitTooLong) as raised:
        list(reader(throttled_once, patient=False).licensed_users(sign_ins=True))
    assert isinstance(raised.value.__cause__, GraphThrottled)
