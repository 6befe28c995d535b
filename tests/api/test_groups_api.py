"""Group-based licensing at the API: the `assignment` option, and inherited licenses in the results."""

from __future__ import annotations

import csv
import io
import json

import redis
from fastapi.testclient import TestClient

from jobs.models import Assignment, GroupLink, PlanNote, Reason, UserResult, UserStatus
from jobs.store import JobStore
from tests.api.helpers import auth

CSV = "user,add\nada@contoso.example,ENTERPRISEPACK\n"
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
G1 = "0a0a0a0a-1111-4111-8111-000000000001"
G2 = "0a0a0a0a-1111-4111-8111-000000000002"


def post(client: TestClient, body: str, content_type: str, **query: str) -> tuple[int, dict]:
    response = client.post("/v1/jobs", params=query, content=body.encode(),
                           headers={**auth(), "Content-Type": content_type})
    return response.status_code, dict(response.json())


def test_assignment_direct_in_the_query_reaches_every_operation_and_the_job(client: TestClient,
                                                                             redis_client: redis.Redis) -> None:
    status, accepted = post(client, CSV, "text/csv", tenant="sim", assignment="direct")
    assert status == 202, accepted
    ops = list(JobStore(redis_client, retention_s=3600).iter_operations(accepted["id"]))
    assert [op.assignment for op in ops] == [Assignment.DIRECT]
    job = client.get(f"/v1/jobs/{accepted['id']}", headers=auth()).json()
    assert job["assignment"] == "direct"


def test_by_default_a_group_counts_and_the_job_says_so(client: TestClient, redis_client: redis.Redis) -> None:
    status, accepted = post(client, CSV, "text/csv", tenant="sim")
    assert status == 202, accepted
    ops = list(JobStore(redis_client, retention_s=3600).iter_operations(accepted["id"]))
    assert [op.assignment for op in ops] == [Assignment.ANY]
    assert client.get(f"/v1/jobs/{accepted['id']}", headers=auth()).json()["assignment"] == "any"


def test_a_json_body_may_ask_for_direct_assignments(client: TestClient, redis_client: redis.Redis) -> None:
    body = {"tenant": "sim", "assignment": "direct",
            "operations": [{"user": "ada@contoso.example", "addLicenses": [{"sku": "ENTERPRISEPACK"}]}]}
    status, accepted = post(client, json.dumps(body), "application/json")
    assert status == 202, accepted
    ops = list(JobStore(redis_client, retention_s=3600).iter_operations(accepted["id"]))
    assert [op.assignment for op in ops] == [Assignment.DIRECT]


def test_assignment_given_twice_differently_or_made_up_is_refused(client: TestClient) -> None:
    body = {"tenant": "sim", "assignment": "direct",
            "operations": [{"user": "ada@contoso.example", "addLicenses": [{"sku": "ENTERPRISEPACK"}]}]}
    status, refused = post(client, json.dumps(body), "application/json", assignment="any")
    assert status == 422
    assert refused["errors"][0]["column"] == "assignment" and "given twice" in refused["errors"][0]["message"]
    status, refused = post(client, CSV, "text/csv", tenant="sim", assignment="group")
    assert status == 422


def test_results_name_the_group_a_license_is_inherited_from(client: TestClient, redis_client: redis.Redis) -> None:
    status, job = post(client, "user,remove,add\nada@contoso.example,ENTERPRISEPACK,\nbob@contoso.example,,EMS\n",
                       "text/csv", tenant="sim")
    assert status == 202, job
    JobStore(redis_client, retention_s=3600).record_results(job["id"], [
        UserResult(row=2, user="ada@contoso.example", status=UserStatus.FAILED, reason=Reason.INHERITED_FROM_GROUP,
                   graph_message=f"the user holds ENTERPRISEPACK from group {G1} and not directly", attempts=1,
                   groups=(GroupLink(E3, G1, "Sales E3"),)),
        UserResult(row=3, user="bob@contoso.example", status=UserStatus.UNCHANGED, note=PlanNote.HELD_VIA_GROUP,
                   attempts=1, groups=(GroupLink(EMS, G2),)),
    ])
    rows = client.get(f"/v1/jobs/{job['id']}/results", headers=auth()).json()["value"]
    assert (rows[0]["reason"], rows[0]["note"]) == ("inherited_from_group", None)
    assert rows[0]["groups"] == [{"sku_id": E3, "sku": "ENTERPRISEPACK", "group_id": G1, "group_name": "Sales E3"}]
    assert rows[1]["note"] == "held_via_group"
    assert rows[1]["groups"] == [{"sku_id": EMS, "sku": "EMS", "group_id": G2}]
    text = client.get(f"/v1/jobs/{job['id']}/results?format=csv", headers=auth()).text
    lines = list(csv.DictReader(io.StringIO(text)))
    assert lines[0]["groups"] == f"ENTERPRISEPACK via Sales E3 ({G1})" and lines[0]["note"] == ""
    assert (lines[1]["groups"], lines[1]["note"]) == (f"EMS via group {G2}", "held_via_group")
