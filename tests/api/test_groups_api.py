"""Group-based licensing at the API: the `assignment` option, and inherited licenses in the results."""

from __future__ import annotations

import json

import redis
from fastapi.testclient import TestClient

from jobs.models import Assignment
from jobs.store import JobStore
from tests.api.helpers import auth

CSV = "user,add\nada@contoso.example,ENTERPRISEPACK\n"


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
