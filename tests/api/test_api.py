"""The HTTP API: auth and scoping, submission formats, progress, results, cancel."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator

import redis
from fastapi.testclient import TestClient

from jobs.models import UserResult, UserStatus
from jobs.store import JobStore
from tests.api.helpers import GOOD_CSV, OTHER_KEY, SIM_KEY, Sent, auth, submit_csv


def test_healthz_needs_no_key_and_checks_redis(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "redis": "ok"}


def test_every_job_call_needs_a_valid_key(client: TestClient) -> None:
    for method, path in (("GET", "/v1/jobs"), ("GET", "/v1/jobs/x"), ("POST", "/v1/jobs"),
                         ("GET", "/v1/jobs/x/results"), ("POST", "/v1/jobs/x/cancel")):
        assert client.request(method, path).status_code == 401
        assert client.request(method, path, headers=auth("wrong-key-123")).status_code == 401
        assert client.request(method, path, headers={"Authorization": "Basic abc"}).status_code == 401


def test_csv_job_is_accepted_and_a_window_of_chunks_is_enqueued(client: TestClient, sent: Sent) -> None:
    response = client.post("/v1/jobs?tenant=sim", content=GOOD_CSV.encode(),
                           headers={**auth(), "Content-Type": "text/csv"})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["total"] == 3
    assert response.headers["location"] == f"/v1/jobs/{body['id']}"
    assert sent == [(body["id"], 0, 0.0)]
    job = client.get(f"/v1/jobs/{body['id']}", headers=auth()).json()
    assert job["status"] == "queued"
    assert (job["total"], job["pending"], job["succeeded"], job["failed"]) == (3, 3, 0, 0)
    assert set(job) >= {"id", "tenant", "status", "total", "succeeded", "failed", "cancelled", "pending",
                        "throttled", "retries", "created_at", "started_at", "finished_at", "rate_per_s", "eta_s"}
    assert job["eta_s"] == 3 / 20.0  # no rate measured yet: the tenant's ceiling


def test_large_job_enqueues_only_its_window(client: TestClient, sent: Sent) -> None:
    rows = "".join(f"u{i}@contoso.example,ENTERPRISEPACK\n" for i in range(95))
    body = submit_csv(client, "user,add\n" + rows)
    assert body["total"] == 95
    assert [n for _, n, _ in sent] == [0, 1, 2, 3]  # window of 4 out of 10 chunks


def test_multipart_upload(client: TestClient) -> None:
    response = client.post("/v1/jobs?tenant=sim", headers=auth(),
                           files={"file": ("onboarding.csv", GOOD_CSV.encode(), "text/csv")})
    assert response.status_code == 202, response.text
    assert response.json()["total"] == 3


def test_json_job(client: TestClient, sent: Sent) -> None:
    body = {"tenant": "sim", "operations": [
        {"user": "ada@contoso.example", "addLicenses": [{"sku": "ENTERPRISEPACK", "disabledPlans": ["SWAY"]}],
         "removeLicenses": ["EMS"], "usageLocation": "US"},
        {"user": "grace@contoso.example",
         "addLicenses": [{"skuId": "06ebc4ee-1bb5-47dd-8120-11324bc54e06", "disabledPlans": []}],
         "removeLicenses": []},
    ]}
    response = client.post("/v1/jobs", json=body, headers=auth())
    assert response.status_code == 202, response.text
    assert response.json()["total"] == 2
    assert len(sent) == 1


def test_keys_are_scoped_to_tenants(client: TestClient, sent: Sent) -> None:
    job = submit_csv(client, key=SIM_KEY)
    # A key for another tenant cannot submit for sim, nor see sim's jobs.
    response = client.post("/v1/jobs?tenant=sim", content=GOOD_CSV.encode(),
                           headers={**auth(OTHER_KEY), "Content-Type": "text/csv"})
    assert response.status_code == 403
    json_response = client.post("/v1/jobs", json={"tenant": "sim", "operations": [
        {"user": "a@contoso.example", "addLicenses": [{"sku": "EMS"}], "removeLicenses": []}]},
        headers=auth(OTHER_KEY))
    assert json_response.status_code in (403, 422)
    assert json_response.status_code != 202
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/results"):
        assert client.get(path, headers=auth(OTHER_KEY)).status_code == 404
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(OTHER_KEY)).status_code == 404
    assert [j["id"] for j in client.get("/v1/jobs", headers=auth(OTHER_KEY)).json()["value"]] == []
    assert [j["id"] for j in client.get("/v1/jobs", headers=auth(SIM_KEY)).json()["value"]] == [job["id"]]
    assert len(sent) == 1


def test_unknown_job_is_404_and_a_malformed_id_422(client: TestClient) -> None:
    assert client.get("/v1/jobs/" + "0" * 32, headers=auth()).status_code == 404
    for bad in ("does-not-exist", "x" * 5000, "A" * 32):
        response = client.get(f"/v1/jobs/{bad}", headers=auth())
        assert response.status_code == 422, bad
        assert response.json()["errors"][0]["column"] == "path.job_id"


def test_results_csv_is_neutralised_and_resubmittable(client: TestClient, redis_client: redis.Redis) -> None:
    job = submit_csv(client)
    store = JobStore(redis_client, retention_s=3600)
    store.record_results(job["id"], [
        UserResult(row=2, user="ada@contoso.example", status=UserStatus.SUCCEEDED, attempts=1, updated_at=1.0),
        UserResult(row=3, user="grace@contoso.example", status=UserStatus.FAILED, reason="no_free_seat",
                   graph_code="Request_BadRequest", graph_message="=cmd|' /C calc'!A0", http_status=400,
                   attempts=1, updated_at=1.0),
    ])
    response = client.get(f"/v1/jobs/{job['id']}/results?status=failed&format=csv", headers=auth())
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 1
    row = rows[0]
    assert (row["user"], row["status"], row["reason"], row["http_status"]) == (
        "grace@contoso.example", "failed", "no_free_seat", "400")
    assert row["graph_message"].startswith("'=")  # defused for spreadsheets
    assert (row["add"], row["remove"], row["employeeId"]) == ("SPE_E5", "ENTERPRISEPACK", "E1002")
    # The failed rows go back in as they are.
    again = submit_csv(client, response.text)
    assert again["total"] == 1

    everything = client.get(f"/v1/jobs/{job['id']}/results", headers=auth()).json()["value"]
    assert [r["status"] for r in everything] == ["succeeded", "failed", "pending"]
    assert everything[0]["extra"] == {"employeeId": "E1001"}


def test_cancel_flags_the_job(client: TestClient, redis_client: redis.Redis) -> None:
    job = submit_csv(client)
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth())
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    record = JobStore(redis_client, retention_s=3600).job(job["id"])
    assert record is not None and record.cancel_requested


def test_wrong_content_type_is_415(client: TestClient, redis_client: redis.Redis) -> None:
    response = client.post("/v1/jobs?tenant=sim", content=b"<xml/>",
                           headers={**auth(), "Content-Type": "application/xml"})
    assert response.status_code == 415
    assert "text/csv" in response.json()["detail"]
    assert redis_client.keys("bl:job:*") == []


def test_csv_without_tenant_or_with_unknown_tenant(client: TestClient) -> None:
    response = client.post("/v1/jobs", content=GOOD_CSV.encode(), headers={**auth(), "Content-Type": "text/csv"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["column"] == "tenant"
    response = client.post("/v1/jobs?tenant=nope", content=GOOD_CSV.encode(),
                           headers={**auth(), "Content-Type": "text/csv"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["value"] == "nope"


def test_oversized_bodies_are_413_and_leave_nothing(client: TestClient, redis_client: redis.Redis, sent: Sent) -> None:
    big = b"user,add\n" + b"x@contoso.example,EMS\n" * (3 * 1024 * 1024 // 21)
    response = client.post("/v1/jobs?tenant=sim", content=big, headers={**auth(), "Content-Type": "text/csv"})
    assert response.status_code == 413
    huge_json = json.dumps({"tenant": "sim", "operations": [], "pad": "x" * (2 * 1024 * 1024)}).encode()
    response = client.post("/v1/jobs", content=huge_json, headers={**auth(), "Content-Type": "application/json"})
    assert response.status_code == 413
    assert sent == []
    assert redis_client.keys("bl:job:*") == []


def test_a_file_past_the_row_limit_is_refused_whole_and_leaves_nothing(client: TestClient, redis_client: redis.Redis,
                                                                       sent: Sent) -> None:
    # The row limit scaled down (1,000 here): rows are staged as they are read, and all of them go.
    body = "user,add\n" + "".join(f"u{i}@contoso.example,EMS\n" for i in range(1500))
    response = client.post("/v1/jobs?tenant=sim", content=body.encode(), headers={**auth(), "Content-Type": "text/csv"})
    assert response.status_code == 422, response.text
    first = response.json()["errors"][0]
    assert (first["row"], first["column"]) == (1002, None) and "more than 1,000 data rows" in first["message"]
    assert sent == []
    assert redis_client.keys("bl:job*") == []
    assert client.get("/v1/jobs", headers=auth()).json()["value"] == []


def test_oversized_bodies_name_the_limit_once(client: TestClient, redis_client: redis.Redis, sent: Sent) -> None:
    """Declared (Content-Length) or found while streaming (no length), the 413 states the limit once."""
    csv_body = b"user,add\n" + b"\n" * (3 * 1024 * 1024)  # past the limit and the multipart framing slack
    json_body = b" " * (1024 * 1024 + 1)

    def streamed(body: bytes) -> Iterator[bytes]:
        yield from (body[i:i + 65536] for i in range(0, len(body), 65536))

    for content, limit in ((csv_body, "2 MB"), (streamed(csv_body), "2 MB")):
        response = client.post("/v1/jobs?tenant=sim", content=content, headers={**auth(), "Content-Type": "text/csv"})
        assert response.status_code == 413
        assert response.json()["detail"].count(limit) == 1, response.json()["detail"]
        assert "larger than 2 MB" in response.json()["detail"]
    for content in (json_body, streamed(json_body)):
        response = client.post("/v1/jobs", content=content, headers={**auth(), "Content-Type": "application/json"})
        assert response.status_code == 413
        assert response.json()["detail"].count("1 MB") == 1, response.json()["detail"]
        assert "more than the limit of 1 MB" in response.json()["detail"]
    assert sent == []
    assert redis_client.keys("bl:job:*") == []


def test_multipart_needs_one_file_field(client: TestClient, redis_client: redis.Redis) -> None:
    response = client.post("/v1/jobs?tenant=sim", headers=auth(),
                           files={"upload": ("onboarding.csv", GOOD_CSV.encode(), "text/csv")})
    assert response.status_code == 422
    assert response.json()["errors"] == [{"row": None, "column": "file", "value": None, "message": "missing"}]
    two = [("file", ("a.csv", GOOD_CSV.encode(), "text/csv")), ("file", ("b.csv", GOOD_CSV.encode(), "text/csv"))]
    response = client.post("/v1/jobs?tenant=sim", headers=auth(), files=two)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("malformed multipart body")
    assert redis_client.keys("bl:job:*") == []


def test_csv_for_a_tenant_the_key_may_not_use_is_403_with_the_error_body(client: TestClient) -> None:
    response = client.post("/v1/jobs?tenant=other", content=GOOD_CSV.encode(),
                           headers={**auth(SIM_KEY), "Content-Type": "text/csv"})
    assert response.status_code == 403
    detail = "this API key may not submit jobs for tenant 'other'"
    assert response.json() == {"detail": detail, "total_errors": 1,
                               "errors": [{"row": None, "column": None, "value": None, "message": detail}]}


def test_results_and_progress_share_one_timestamp_format(client: TestClient, redis_client: redis.Redis) -> None:
    job = submit_csv(client)
    JobStore(redis_client, retention_s=3600).record_results(job["id"], [
        UserResult(row=2, user="ada@contoso.example", status=UserStatus.SUCCEEDED, attempts=1, updated_at=1.25),
    ])
    rows = client.get(f"/v1/jobs/{job['id']}/results", headers=auth()).json()["value"]
    assert rows[0]["updated_at"] == "1970-01-01T00:00:01.250Z"
    csv_rows = list(csv.DictReader(io.StringIO(
        client.get(f"/v1/jobs/{job['id']}/results?format=csv&status=succeeded", headers=auth()).text)))
    assert csv_rows[0]["updated_at"] == "1970-01-01T00:00:01.250Z"
    created = client.get(f"/v1/jobs/{job['id']}", headers=auth()).json()["created_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", created), created


def test_results_csv_with_no_rows_is_the_header(client: TestClient) -> None:
    job = submit_csv(client)
    response = client.get(f"/v1/jobs/{job['id']}/results?format=csv&status=cancelled", headers=auth())
    assert response.status_code == 200
    assert response.headers["content-disposition"] == f'attachment; filename="{job["id"]}-results.csv"'
    assert response.text.splitlines() == [
        "row,user,add,remove,disabled_plans,usage_location,status,reason,graph_code,graph_message,http_status,"
        "attempts,updated_at,detail,action,before,after,warnings,note,groups"]


def test_the_job_shape_is_documented_and_what_get_answers(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    answer = doc["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert answer["schema"] == {"$ref": "#/components/schemas/JobOut"}
    documented = set(doc["components"]["schemas"]["JobOut"]["properties"])
    job = client.get(f"/v1/jobs/{submit_csv(client)['id']}", headers=auth()).json()
    assert set(job) <= documented
    assert set(job) == documented - {"would_change", "would_fail", "planned_from", "run_as", "rollback_of",
                                     "rolled_back_by", "scan",  # a real job's JSON leaves those out, as before
                                     "schedule", "scheduled", "seats_by_day"}  # and those of dated rows
    assert doc["components"]["schemas"]["JobOut"]["properties"]["status"] == {"$ref": "#/components/schemas/JobStatus"}
