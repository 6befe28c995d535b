"""How an upload was read, at the API: the 202 and the job say it; mode and keep_columns; results paged; kept
columns in the results CSV."""

from __future__ import annotations

import csv
import io
import json

import redis
from fastapi.testclient import TestClient

from jobs.models import UserResult, UserStatus
from jobs.store import JobStore
from tests.api.helpers import auth

LEARN_CSV = ("UserPrincipalName,FirstName,LastName,DisplayName,UsageLocation,AccountSkuId\n"
             "ClaudeL@contoso.onmicrosoft.com,Claude,Loiselle,Claude Loiselle,US,contoso:ENTERPRISEPACK\n")


def post_csv(client: TestClient, body: str, **query: str) -> dict:
    response = client.post("/v1/jobs", params={"tenant": "sim", **query}, content=body.encode(),
                           headers={**auth(), "Content-Type": "text/csv"})
    assert response.status_code == 202, response.text
    return dict(response.json())


def test_the_202_and_the_job_say_how_each_column_was_read(client: TestClient) -> None:
    accepted = post_csv(client, LEARN_CSV)
    assert accepted["mode"] == "add"
    assert accepted["input"] == {
        "format": "csv", "mode": "add", "encoding": "UTF-8", "delimiter": ",", "layout": "plain",
        "columns": [{"column": "UserPrincipalName", "read_as": "user"}, {"column": "FirstName", "read_as": "kept"},
                    {"column": "LastName", "read_as": "kept"}, {"column": "DisplayName", "read_as": "kept"},
                    {"column": "UsageLocation", "read_as": "usage_location"},
                    {"column": "AccountSkuId", "read_as": "add"}],
        "notes": [],
    }
    # The earlier fields are unchanged.
    assert {k: accepted[k] for k in ("status", "total", "warnings", "dry_run")} == {
        "status": "queued", "total": 1, "warnings": [], "dry_run": False}
    job = client.get(f"/v1/jobs/{accepted['id']}", headers=auth()).json()
    assert (job["mode"], job["input"]) == ("add", accepted["input"])


def test_a_json_job_says_its_format_and_mode(client: TestClient) -> None:
    body = {"tenant": "sim", "mode": "exact",
            "operations": [{"user": "ada@contoso.example", "addLicenses": [{"sku": "Office 365 E3"}]}]}
    response = client.post("/v1/jobs", content=json.dumps(body), headers={**auth(), "Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    assert response.json()["mode"] == "exact"
    assert response.json()["input"] == {"format": "json", "mode": "exact", "encoding": None, "delimiter": None,
                                        "layout": None, "columns": [], "notes": []}


def test_mode_sync_is_exact_and_a_made_up_mode_is_refused(client: TestClient) -> None:
    export = "User principal name,Licenses,Block credential,Object Id\nada@contoso.example,Office 365 E3,False,1\n"
    assert post_csv(client, export, mode="sync")["mode"] == "exact"
    response = client.post("/v1/jobs", params={"tenant": "sim", "mode": "replace"}, content=export.encode(),
                           headers={**auth(), "Content-Type": "text/csv"})
    assert response.status_code == 422
    refused = client.post("/v1/jobs", params={"tenant": "sim"}, content=export.encode(),
                          headers={**auth(), "Content-Type": "text/csv"})
    assert refused.status_code == 422 and "choose mode=exact" in refused.json()["errors"][0]["message"]


def test_keep_columns_acknowledges_a_column_naming_licenses(client: TestClient) -> None:
    body = "user,usage_location,Previous plan\nada@contoso.example,US,ENTERPRISEPACK\n"
    refused = client.post("/v1/jobs", params={"tenant": "sim"}, content=body.encode(),
                          headers={**auth(), "Content-Type": "text/csv"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["column"] == "Previous plan"
    accepted = post_csv(client, body, keep_columns="Previous plan")
    assert {"column": "Previous plan", "read_as": "kept (keep_columns)"} in accepted["input"]["columns"]


def test_results_are_paged(client: TestClient, redis_client: redis.Redis) -> None:
    body = "user,add\n" + "".join(f"u{i}@contoso.example,EMS\n" for i in range(5))
    job = post_csv(client, body)
    JobStore(redis_client, retention_s=3600).record(job["id"], [
        UserResult(row=2, user="u0@contoso.example", status=UserStatus.SUCCEEDED, attempts=1, updated_at=1.0)])
    first = client.get(f"/v1/jobs/{job['id']}/results?limit=2", headers=auth()).json()
    assert [r["user"] for r in first["value"]] == ["u0@contoso.example", "u1@contoso.example"]
    assert first["next_offset"] == 2
    last = client.get(f"/v1/jobs/{job['id']}/results?limit=2&offset=4", headers=auth()).json()
    assert [r["user"] for r in last["value"]] == ["u4@contoso.example"] and last["next_offset"] is None
    pending = client.get(f"/v1/jobs/{job['id']}/results?status=pending&limit=10&offset=1", headers=auth()).json()
    assert [r["row"] for r in pending["value"]] == [4, 5, 6] and pending["next_offset"] is None
    assert "next_offset" not in client.get(f"/v1/jobs/{job['id']}/results", headers=auth()).json()


def test_the_results_csv_has_every_kept_column_though_empty_cells_are_not_stored(client: TestClient) -> None:
    job = post_csv(client, "user,add,Team,Site\nada@contoso.example,EMS,,Oslo\nbob@contoso.example,EMS,Ops,\n")
    text = client.get(f"/v1/jobs/{job['id']}/results?format=csv", headers=auth()).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["user"], r["Team"], r["Site"]) for r in rows] == [
        ("ada@contoso.example", "", "Oslo"), ("bob@contoso.example", "Ops", "")]
    assert client.get(f"/v1/jobs/{job['id']}/results", headers=auth()).json()["value"][0]["extra"] == {"Site": "Oslo"}
