"""POST /v1/reclaim, POST /v1/cleanup/redundant-direct and GET /v1/tenants/{tenant}/group-license-errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from config import Settings
from config.settings import parse_webhook_origins
from graphclient.client import GraphClient
from graphclient.retry import RetryPolicy
from jobs.group_errors import group_error_report
from jobs.skus import SkuCatalog
from jobs.tenant_scan import TenantReader
from tests.api.helpers import ALL_KEY, OTHER_KEY, SIM_KEY, Sent, auth, store_of
from tests.fakes import Directory, FakeClock, RecordingSleep, RecordingThrottle

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
GROUP = "0f0e0d0c-0000-4000-8000-000000000001"


def audit_events(client: TestClient) -> list[dict[str, Any]]:
    return [json.loads(line) for line in client.get("/v1/audit", headers=auth()).text.splitlines()]


def test_a_reclaim_request_is_a_dry_run_job_planning_in_a_worker_and_audited(client: TestClient, sent: Sent) -> None:
    response = client.post("/v1/reclaim", params={"tenant": "sim", "inactive_days": 60, "sku": "ENTERPRISEPACK",
                                                  "exclude_upn": "svc-*"},
                           json={"exclude_group": GROUP, "exclude_upns": ["room-*"]}, headers=auth(SIM_KEY))
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert (accepted["status"], accepted["dry_run"], accepted["total"]) == ("queued", True, 0)
    assert accepted["counted_by_scan"] is True  # 0 is not a count: the scan decides
    assert sent == [(accepted["id"], 0, 0.0)]  # chunk 0: the scan
    job = client.get(f"/v1/jobs/{accepted['id']}", headers=auth()).json()
    assert (job["kind"], job["status"], job["scan"]["outcome"]) == ("reclaim", "queued", None)
    asked = job["scan"]["request"]
    assert (asked["inactive_days"], asked["skus"], asked["exclude_group"], asked["exclude_upns"]) == (
        60, [E3], GROUP, ["svc-*", "room-*"])
    event = audit_events(client)[-1]
    assert (event["action"], event["job"], event["actor"], event["tenant"]) == (
        "submitted", accepted["id"], "hr-portal", "sim")
    assert event["details"]["kind"] == "reclaim" and event["details"]["dry_run"] is True
    assert event["details"]["exclude_upns"] == ["svc-*", "room-*"]


def test_a_reclaim_request_with_bad_values_is_refused_whole(client: TestClient, sent: Sent,
                                                             redis_client: redis.Redis) -> None:
    response = client.post("/v1/reclaim", params={"tenant": "sim", "inactive_days": 0, "sku": "NOT_A_SKU",
                                                  "exclude_group": "finance"}, headers=auth())
    assert response.status_code == 422, response.text
    assert [e["column"] for e in response.json()["errors"]] == ["skus", "inactive_days", "exclude_group"]
    twice = client.post("/v1/reclaim", params={"tenant": "sim", "exclude_group": GROUP},
                        json={"exclude_group": GROUP.replace("1", "2")}, headers=auth())
    assert twice.status_code == 422 and "twice" in twice.json()["detail"]
    assert sent == [] and store_of(redis_client).recent_jobs() == []


@pytest.mark.parametrize(("key", "tenant", "status"), [(OTHER_KEY, "sim", 403), (SIM_KEY, "nowhere", 403),
                                                       (ALL_KEY, "nowhere", 422)])
def test_a_reclaim_for_a_tenant_the_key_may_not_use_is_refused(client: TestClient, key: str, tenant: str,
                                                               status: int) -> None:
    assert client.post("/v1/reclaim", params={"tenant": tenant}, headers=auth(key)).status_code == status


def test_a_real_cleanup_is_a_redundant_direct_job(client: TestClient, sent: Sent) -> None:
    response = client.post("/v1/cleanup/redundant-direct", params={"tenant": "sim", "dry_run": "false"},
                           headers=auth())
    assert response.status_code == 202, response.text
    job = client.get(f"/v1/jobs/{response.json()['id']}", headers=auth()).json()
    assert (job["kind"], job["dry_run"], job["scan"]["request"]["skus"]) == ("redundant_direct", False, [])
    assert "inactive_days" not in job["scan"]["request"]


@pytest.fixture
def reporting_client(settings: Settings, redis_client: redis.Redis,
                     subscribed_skus: list[dict[str, Any]]) -> Iterator[TestClient]:
    """The API with Graph for the report answered by a small directory (two users in error through one group)."""
    failed = {"skuId": E3, "assignedByGroup": GROUP, "state": "Error", "error": "CountViolation", "disabledPlans": []}
    users = [{"id": "id-1", "userPrincipalName": "ann@contoso.example", "licenseAssignmentStates": [failed]},
             {"id": "id-2", "userPrincipalName": "bob@contoso.example",
              "licenseAssignmentStates": [{**failed, "state": "ActiveWithError"}]}]
    directory = Directory(users, groups={GROUP: ["id-1", "id-2"]}, error_groups={GROUP: "LIC - E3"})

    def report(tenant: str, catalog: SkuCatalog, limit: int) -> Any:
        graph = GraphClient(httpx.Client(transport=httpx.MockTransport(directory)), base_url="https://graph.test",
                            throttle=RecordingThrottle(), timeout_s=5)
        policy = RetryPolicy(max_attempts=1, max_total_s=1, backoff_base_s=0, backoff_max_s=0)
        return group_error_report(TenantReader(graph, policy, RecordingSleep(FakeClock())), catalog, limit)

    app = create_app(settings, redis_client=redis_client, send=lambda job, n, countdown: None,
                     fetch_skus=lambda tenant: subscribed_skus, ceiling_for=lambda tenant: 20.0, group_errors=report)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_the_group_license_errors_report_names_user_group_sku_and_reason(reporting_client: TestClient) -> None:
    response = reporting_client.get("/v1/tenants/sim/group-license-errors", headers=auth(SIM_KEY))
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["groups_with_errors"], report["count"], report["truncated"]) == (1, 2, False)
    first = report["value"][0]
    assert (first["userPrincipalName"], first["group"], first["sku"], first["error"], first["holds_license"]) == (
        "ann@contoso.example", "LIC - E3", "ENTERPRISEPACK", "CountViolation", False)
    assert "no free seat" in first["meaning"] and report["value"][1]["holds_license"] is True
    limited = reporting_client.get("/v1/tenants/sim/group-license-errors", params={"limit": 1}, headers=auth()).json()
    assert (limited["count"], limited["truncated"]) == (1, True)
    assert reporting_client.get("/v1/tenants/sim/group-license-errors", headers=auth(OTHER_KEY)).status_code == 403


def test_a_scan_request_retried_with_its_idempotency_key_returns_the_first_job(client: TestClient, sent: Sent) -> None:
    def reclaim(key: str, sku: str = "ENTERPRISEPACK", path: str = "/v1/reclaim") -> httpx.Response:
        return client.post(path, params={"tenant": "sim", "sku": sku}, json={"exclude_upns": ["svc-*"]},
                           headers={**auth(), "Idempotency-Key": key})

    first, retry = reclaim("nightly-1"), reclaim("nightly-1")
    assert (first.status_code, retry.status_code) == (202, 200)
    assert retry.json() == first.json() and retry.headers["location"] == f"/v1/jobs/{first.json()['id']}"
    assert [job for job, _, _ in sent] == [first.json()["id"]]  # one job, one scan
    # The same key for another request (other criteria, another route) is refused; another key is another job.
    assert reclaim("nightly-1", sku="EMS").status_code == 409
    assert reclaim("nightly-1", path="/v1/cleanup/redundant-direct").status_code == 409
    assert reclaim("nightly-2").status_code == 202 and len(sent) == 2


def test_a_scan_request_takes_a_callback_url_checked_as_a_submissions(
        settings: Settings, redis_client: redis.Redis, subscribed_skus: list[dict[str, Any]], client: TestClient,
        sent: Sent) -> None:
    hook = "http://127.0.0.1:9000/hook"
    refused = client.post("/v1/cleanup/redundant-direct", params={"tenant": "sim", "callback_url": hook},
                          headers=auth())  # no webhook secret on this server
    assert refused.status_code == 422 and refused.json()["errors"][0]["column"] == "callback_url"
    assert sent == []
    hooked = settings.model_copy(update={"webhook_secret": SecretStr("s3cret-webhook"),
                                         "webhook_allowed_origins": parse_webhook_origins("http://127.0.0.1:9000")})
    app = create_app(hooked, redis_client=redis_client, send=lambda job, n, countdown: None,
                     fetch_skus=lambda tenant: subscribed_skus, ceiling_for=lambda tenant: 20.0)
    with TestClient(app, raise_server_exceptions=False) as hooked_client:
        internal = hooked_client.post("/v1/reclaim", params={"tenant": "sim", "callback_url": "http://10.0.0.5/x"},
                                      headers=auth())
        assert internal.status_code == 422 and internal.json()["errors"][0]["column"] == "callback_url"
        accepted = hooked_client.post("/v1/reclaim", params={"tenant": "sim", "callback_url": hook}, headers=auth())
    assert accepted.status_code == 202, accepted.text
    assert redis_client.hget(f"bl:job:{accepted.json()['id']}", "callback_url") == hook.encode()


def test_the_run_of_a_scan_preview_says_its_scan_counts_its_users(client: TestClient,
                                                                   redis_client: redis.Redis) -> None:
    preview = client.post("/v1/cleanup/redundant-direct", params={"tenant": "sim"}, headers=auth()).json()
    store_of(redis_client).finish_scan(preview["id"], 0, 1, "done", [], {})  # as a worker whose scan found nobody
    run = client.post(f"/v1/jobs/{preview['id']}/run", headers=auth())
    assert run.status_code == 202, run.text
    assert (run.json()["total"], run.json()["counted_by_scan"]) == (0, True)
    [event] = [e for e in audit_events(client) if e["job"] == run.json()["id"]]
    assert (event["action"], event["details"]["rows"], event["details"]["counted_by_scan"]) == ("submitted", None, True)
    plain = client.post("/v1/jobs?tenant=sim", content=b"user,add\nada@contoso.example,EMS\n",
                        headers={**auth(), "Content-Type": "text/csv"}).json()
    assert plain["counted_by_scan"] is False
