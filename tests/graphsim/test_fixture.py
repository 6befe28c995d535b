"""The generated tenant: deterministic, realistic SKUs, the seat and conflict facts tests rely on."""

from __future__ import annotations

import json
from pathlib import Path

from graphsim.fixture import DEFAULT_TENANT_ID, MAIN_CLIENT_ID, build_fixture
from graphsim.tenant import Tenant


def test_same_seed_same_tenant() -> None:
    assert build_fixture(300, 7) == build_fixture(300, 7)
    assert build_fixture(300, 7).users != build_fixture(300, 8).users


def test_users_shape() -> None:
    fixture = build_fixture(1000, 1)
    assert fixture.tenant_id == DEFAULT_TENANT_ID
    assert fixture.users[0].upn == "user00001@contoso.example"
    missing = sum(1 for u in fixture.users if u.usage_location is None)
    assert 70 <= missing <= 130  # about 10 %
    licensed = sum(1 for u in fixture.users if u.licenses)
    assert 100 < licensed < 600
    assert all(u.licenses == () for u in fixture.users if u.usage_location is None)


def test_skus_and_seats() -> None:
    tenant = Tenant(build_fixture(1000, 1))
    parts = {s.part_number for s in tenant.skus.values()}
    assert {"ENTERPRISEPACK", "SPE_E3", "SPE_E5", "EMS", "POWER_BI_PRO", "FLOW_FREE", "STANDARDPACK",
            "VISIOCLIENT", "WINDOWS_STORE"} <= parts
    assert tenant.sku_by_part("ENTERPRISEPACK").sku_id == "6fd2c87f-b296-42f0-b197-1e91e994b900"
    assert tenant.free_seats("VISIOCLIENT") == 10
    assert tenant.sku_by_part("WINDOWS_STORE").applies_to == "Company"
    plans = {p.name: p.plan_id for p in tenant.sku_by_part("ENTERPRISEPACK").plans}
    assert plans["SWAY"] == "a23b959c-7ce8-4e57-9140-b90eb88a9e97"
    # Nobody is generated holding the conflicting pair.
    e3, e1 = tenant.sku_by_part("ENTERPRISEPACK").sku_id, tenant.sku_by_part("STANDARDPACK").sku_id
    assert not any(e3 in u.licenses and e1 in u.licenses for u in tenant.user_order)


def test_json_fixture(tmp_path: Path) -> None:
    path = tmp_path / "tenant.json"
    path.write_text(json.dumps({
        "tenant_id": "11111111-2222-3333-4444-555555555555",
        "skus": [{"skuPartNumber": "POWER_BI_PRO", "skuId": "f8a1db68-be16-40ed-86d5-cb42ce701560",
                  "prepaidUnits": {"enabled": 3}, "servicePlans": ["BI_AZURE_P2"]}],
        "users": [{"userPrincipalName": "a@x.example", "usageLocation": "NL",
                   "assignedLicenses": [{"skuId": "f8a1db68-be16-40ed-86d5-cb42ce701560"}]}],
    }))
    tenant = Tenant(build_fixture(0, 1, path=path))
    assert tenant.tenant_id == "11111111-2222-3333-4444-555555555555"
    assert tenant.free_seats("POWER_BI_PRO") == 2
    assert tenant.find_user("A@X.EXAMPLE") is not None
    assert {a.client_id for a in build_fixture(0, 1, path=path).apps} >= {MAIN_CLIENT_ID}


def test_group_licensed_share_is_deterministic() -> None:
    fixture = build_fixture(1000, 1, group_licensed_share=0.3)
    assert fixture == build_fixture(1000, 1, group_licensed_share=0.3)
    assert fixture.groups != build_fixture(1000, 2, group_licensed_share=0.3).groups
    assert build_fixture(1000, 1).groups == ()
    members = {m for g in fixture.groups for m in g.members}
    assert 0.28 * 1000 <= len(members) <= 0.32 * 1000


def test_fixture_groups_hold_licenses_both_ways_and_with_errors() -> None:
    tenant = Tenant(build_fixture(1000, 1, group_licensed_share=0.3))
    e3 = tenant.sku_by_part("ENTERPRISEPACK").sku_id
    in_groups = [u for u in tenant.user_order if u.member_of]
    both = [u for u in in_groups if e3 in u.licenses and any(e3 in per for per in u.inherited.values())]
    assert both  # the same SKU directly and through a group
    errors = {(lic.state.value, lic.error.value) for u in in_groups for per in u.inherited.values()
              for lic in per.values()}
    assert {("Active", "None"), ("Error", "CountViolation"), ("Error", "MutuallyExclusiveViolation")} <= errors
    # Members without a usageLocation are licensed through the directory's country.
    assert any(u.usage_location is None and u.inherited for u in in_groups)
    # Seats: once per user and SKU, whatever path holds it; errors take none.
    for sku_id in tenant.skus:
        assert tenant.consumed[sku_id] == sum(1 for u in tenant.user_order if sku_id in u.held_skus())
    assert tenant.free_seats("VISIOCLIENT") == 0


def test_json_fixture_groups(tmp_path: Path) -> None:
    sku = "f8a1db68-be16-40ed-86d5-cb42ce701560"
    path = tmp_path / "tenant.json"
    path.write_text(json.dumps({
        "skus": [{"skuPartNumber": "POWER_BI_PRO", "skuId": sku, "prepaidUnits": {"enabled": 1},
                  "servicePlans": ["BI_AZURE_P2"]}],
        "users": [{"userPrincipalName": "a@x.example", "usageLocation": "NL"},
                  {"userPrincipalName": "b@x.example", "usageLocation": "NL",
                   "createdDateTime": "2024-01-02T03:04:05Z", "accountEnabled": False,
                   "signInActivity": {"lastSignInDateTime": "2025-01-01T00:00:00Z"}}],
        "groups": [{"displayName": "BI", "assignedLicenses": [{"skuId": sku}],
                    "members": ["a@x.example", "B@X.EXAMPLE"]}],
    }))
    tenant = Tenant(build_fixture(0, 1, path=path))
    a, b = tenant.find_user("a@x.example"), tenant.find_user("b@x.example")
    assert a is not None and b is not None
    group = tenant.group_order[0]
    assert group.display_name == "BI" and list(group.members) == [a.id, b.id]
    assert [lic.state.value for lic in a.inherited[group.id].values()] == ["Active"]
    assert [lic.error.value for lic in b.inherited[group.id].values()] == ["CountViolation"]  # one seat only
    assert b.account_enabled is False and b.sign_in is not None and b.sign_in.last_successful is None
    assert b.created == 1704164645.0
