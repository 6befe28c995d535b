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
