"""SKU catalog: building from subscribedSkus, resolving license and service plan names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.skus import SkuCatalog, UnknownName, did_you_mean, normalize_name

CORPUS = Path(__file__).resolve().parent.parent / "corpus"

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
E5 = "06ebc4ee-1bb5-47dd-8120-11324bc54e06"
PBI = "f8a1db68-be16-40ed-86d5-cb42ce701560"
SWAY = "a23b959c-7ce8-4e57-9140-b90eb88a9e97"
BI_AZURE_P2 = "70d33638-9c74-4d01-bfd3-562de28bd4ba"


@pytest.fixture(scope="module")
def catalog() -> SkuCatalog:
    """The corpus tenant's catalog."""
    items = json.loads((CORPUS / "subscribed_skus.json").read_text(encoding="utf-8"))["value"]
    return SkuCatalog.from_graph(items)


def test_from_graph_reads_every_field(catalog: SkuCatalog) -> None:
    sku = catalog.resolve_sku("ENTERPRISEPACK")
    assert sku.sku_id == E3
    assert sku.applies_to == "User"
    assert sku.capability_status == "Enabled"
    assert (sku.enabled_units, sku.consumed_units) == (250, 240)
    assert [p.name for p in sku.plans] == ["SWAY", "EXCHANGE_S_ENTERPRISE", "TEAMS1"]
    assert sku.plans[0].plan_id == SWAY
    assert len(catalog.skus) == 6


def test_free_seats_and_part_number(catalog: SkuCatalog) -> None:
    assert catalog.free_seats(E3) == 10
    assert catalog.free_seats(EMS) == 0
    assert catalog.free_seats(E3.upper()) == 10
    assert catalog.part_number(E5) == "SPE_E5"
    assert catalog.part_number("00000000-0000-0000-0000-000000000001") == "00000000-0000-0000-0000-000000000001"
    with pytest.raises(KeyError):
        catalog.free_seats("00000000-0000-0000-0000-000000000001")


@pytest.mark.parametrize(
    "text",
    [
        "ENTERPRISEPACK",
        "enterprisepack",
        "  EnterprisePack ",
        "\u00a0ENTERPRISEPACK\t",
        "\ufeffENTERPRISEPACK",
        E3,
        E3.upper(),
        f" {E3} ",
    ],
)
def test_resolve_sku_by_part_number_or_id(catalog: SkuCatalog, text: str) -> None:
    assert catalog.resolve_sku(text).sku_id == E3


def test_unknown_part_number_suggests_close_names(catalog: SkuCatalog) -> None:
    with pytest.raises(UnknownName) as exc:
        catalog.resolve_sku("ENTERPRISPACK")
    assert exc.value.message == (
        'unknown license "ENTERPRISPACK": no subscribed SKU has this skuPartNumber; did you mean ENTERPRISEPACK?'
    )


def test_unknown_part_number_without_close_match_lists_the_tenant(catalog: SkuCatalog) -> None:
    with pytest.raises(UnknownName) as exc:
        catalog.resolve_sku("VISIOCLIENT")
    assert exc.value.message.startswith(
        'unknown license "VISIOCLIENT": Microsoft\'s part number for Visio Plan 2, which the tenant does not subscribe '
        "to; subscribed: ENTERPRISEPACK, EMS, SPE_E5")
    assert "WINDOWS_STORE" not in exc.value.message  # not assignable to users, so not offered


def test_a_made_up_part_number_lists_the_tenant(catalog: SkuCatalog) -> None:
    with pytest.raises(UnknownName) as exc:
        catalog.resolve_sku("NOT_A_SKU_AT_ALL")
    assert "no subscribed SKU has this skuPartNumber; subscribed: ENTERPRISEPACK, EMS, SPE_E5" in exc.value.message


def test_sku_id_not_in_tenant(catalog: SkuCatalog) -> None:
    with pytest.raises(UnknownName, match="no SKU with this skuId is subscribed in the tenant"):
        catalog.resolve_sku("05e9a617-0261-4cee-bb44-138d3ef5d965")


def test_company_sku_is_refused(catalog: SkuCatalog) -> None:
    with pytest.raises(UnknownName) as exc:
        catalog.resolve_sku("windows_store")
    assert exc.value.message == 'license "WINDOWS_STORE" applies to the company and cannot be assigned to users'


def test_empty_name(catalog: SkuCatalog) -> None:
    with pytest.raises(UnknownName, match="license name is empty"):
        catalog.resolve_sku(" \u00a0 ")


def test_plan_is_found_in_every_given_sku_that_contains_it(catalog: SkuCatalog) -> None:
    added = [catalog.resolve_sku("ENTERPRISEPACK"), catalog.resolve_sku("EMS"), catalog.resolve_sku("SPE_E5")]
    assert catalog.resolve_plan("sway", added) == [(E3, SWAY), (E5, SWAY)]
    assert catalog.resolve_plan(BI_AZURE_P2.upper(), added) == [(E5, BI_AZURE_P2)]


def test_plan_name(catalog: SkuCatalog) -> None:
    assert catalog.plan_name(SWAY.upper()) == "SWAY"
    assert catalog.plan_name("00000000-0000-0000-0000-000000000001") == "00000000-0000-0000-0000-000000000001"


def test_plan_in_no_added_sku(catalog: SkuCatalog) -> None:
    added = [catalog.resolve_sku("EMS"), catalog.resolve_sku("POWER_BI_PRO")]
    with pytest.raises(UnknownName) as exc:
        catalog.resolve_plan("SWAY", added)
    assert exc.value.message == (
        "plan SWAY is not in any added SKU (EMS, POWER_BI_PRO); disable it only in a row that adds a SKU containing it"
    )
    with pytest.raises(UnknownName, match=rf"plan {SWAY} \(SWAY\) is not in any added SKU \(EMS, POWER_BI_PRO\)"):
        catalog.resolve_plan(SWAY, added)


def test_unknown_plan_suggests_from_added_skus_first(catalog: SkuCatalog) -> None:
    added = [catalog.resolve_sku("ENTERPRISEPACK")]
    with pytest.raises(UnknownName) as exc:
        catalog.resolve_plan("TEAMS", added)
    assert exc.value.message == (
        'unknown service plan "TEAMS": no subscribed SKU has a plan by this name; did you mean TEAMS1?'
    )


def test_unknown_plan_without_suggestion_lists_added_plans(catalog: SkuCatalog) -> None:
    added = [catalog.resolve_sku("POWER_BI_PRO")]
    with pytest.raises(UnknownName) as exc:
        catalog.resolve_plan("XYZZY_PLAN", added)
    assert exc.value.message.endswith("; plans in POWER_BI_PRO: BI_AZURE_P2")


def test_unknown_plan_id(catalog: SkuCatalog) -> None:
    added = [catalog.resolve_sku("ENTERPRISEPACK")]
    with pytest.raises(UnknownName, match="no subscribed SKU has a plan with this id"):
        catalog.resolve_plan("00000000-0000-0000-0000-000000000001", added)


def test_helpers() -> None:
    assert normalize_name(" spe_e5\u00a0\t") == "SPE_E5"
    assert did_you_mean("EMX", ["EMS", "SPE_E5"]) == "; did you mean EMS?"
    assert did_you_mean("SPE_E", ["SPE_E5", "SPE_E3", "EMS"]) == "; did you mean SPE_E5 or SPE_E3?"
    assert did_you_mean("ZZZZ", ["EMS"]) == ""


# --- the names admins' files use: display names, MSOnline's account:PART, "+"-joined lists --------------------

VISIO_PLAN2 = "c5928f49-12ba-48f7-ada3-0d743a3601d5"  # VISIOCLIENT
VISIO_PLAN2_DEPT = "38b434d2-a15e-4cde-9a98-e737c75623e1"


def _tenant(*skus: tuple[str, str], account: str | None = "contoso") -> SkuCatalog:
    items = [{"skuId": sku_id, "skuPartNumber": part, "appliesTo": "User", "prepaidUnits": {"enabled": 5},
              **({"accountName": account} if account is not None else {})} for part, sku_id in skus]
    return SkuCatalog.from_graph(items)


@pytest.mark.parametrize("text", ["Office 365 E3", "OFFICE 365 E3", "  office 365\u00a0e3 ", "contoso:ENTERPRISEPACK",
                                  "Contoso:enterprisepack", "CONTOSO:Office 365 E3"])
def test_display_names_and_account_prefixes_resolve(catalog: SkuCatalog, text: str) -> None:
    assert catalog.resolve_sku(text).sku_id == E3


def test_a_prefix_naming_another_account_is_refused(catalog: SkuCatalog) -> None:
    with pytest.raises(UnknownName) as exc:
        catalog.resolve_sku("fabrikam:ENTERPRISEPACK")
    assert exc.value.message == (
        'license "fabrikam:ENTERPRISEPACK" belongs to the account "fabrikam", but this tenant\'s account is '
        '"Contoso": the file may be meant for another tenant; check ?tenant=, or write the license without '
        '"fabrikam:"')


def test_a_prefix_is_refused_when_the_tenant_reports_no_account_name() -> None:
    tenant = _tenant(("ENTERPRISEPACK", E3), account=None)
    assert tenant.resolve_sku("ENTERPRISEPACK").sku_id == E3
    with pytest.raises(UnknownName, match="cannot be checked: the tenant's subscribedSkus report no accountName"):
        tenant.resolve_sku("contoso:ENTERPRISEPACK")


def test_a_display_name_of_several_subscribed_skus_names_them_and_guesses_nothing() -> None:
    both = _tenant(("VISIOCLIENT", VISIO_PLAN2), ("VISIO_PLAN2_DEPT", VISIO_PLAN2_DEPT))
    with pytest.raises(UnknownName) as exc:
        both.resolve_sku("Visio Plan 2")
    assert exc.value.message == (
        'license "Visio Plan 2" is ambiguous: Microsoft\'s table gives this name to VISIOCLIENT, VISIO_PLAN2_DEPT, '
        "all subscribed in the tenant; write the skuPartNumber instead")
    # One of the candidates subscribed: the tenant's subscription decides, nothing is guessed.
    assert _tenant(("VISIO_PLAN2_DEPT", VISIO_PLAN2_DEPT)).resolve_sku("Visio Plan 2").part_number == "VISIO_PLAN2_DEPT"


def test_a_display_name_the_tenant_does_not_subscribe_to(catalog: SkuCatalog) -> None:
    with pytest.raises(UnknownName) as exc:
        catalog.resolve_sku("Microsoft 365 F1")
    assert exc.value.message == (
        'unknown license "Microsoft 365 F1": Microsoft\'s name for M365_F1 or M365_F1_COMM, which the tenant does '
        "not subscribe to; did you mean Microsoft 365 E5?")


@pytest.mark.parametrize(("text", "names"), [
    ("Office 365 E3", ["Office 365 E3"]),
    ("Enterprise Mobility + Security E3", ["Enterprise Mobility + Security E3"]),
    ("Microsoft 365 E5+Power BI Pro", ["Microsoft 365 E5", "Power BI Pro"]),
    ("OFFICE 365 E3+ENTERPRISE MOBILITY + SECURITY E3+POWER BI PRO",
     ["OFFICE 365 E3", "ENTERPRISE MOBILITY + SECURITY E3", "POWER BI PRO"]),
    # Unknown pieces stay whole where nothing splits them into known names, apart where it does.
    ("Made Up+Also Made Up", ["Made Up+Also Made Up"]),
    ("Office 365 E3+Made Up", ["Office 365 E3", "Made Up"]),
])
def test_plus_joined_lists_split_only_where_the_pieces_are_names(catalog: SkuCatalog, text: str,
                                                                  names: list[str]) -> None:
    assert catalog.split_joined(text) == names


def test_names_license_finds_license_names_in_any_cell(catalog: SkuCatalog) -> None:
    assert catalog.names_license("contoso:ENTERPRISEPACK") == "ENTERPRISEPACK"
    assert catalog.names_license("Sales; Office 365 E3") == "ENTERPRISEPACK"
    assert catalog.names_license("Microsoft 365 E5+Power BI Pro") == "SPE_E5"
    assert catalog.names_license("Sales") is None
    assert catalog.names_license("Visio Plan 2") is None  # a license, but not the tenant's
