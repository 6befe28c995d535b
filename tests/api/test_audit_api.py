"""The audit trail over HTTP: what submit, cancel and refusals record, and who may read which tenant's events."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis
from fastapi.testclient import TestClient

from jobs.audit import AuditAction, AuditLog
from jobs.models import iso_time
from tests.api.helpers import ALL_KEY, ALL_NAME, GOOD_CSV, OTHER_KEY, OTHER_NAME, SIM_KEY, SIM_NAME, auth, submit_csv
from tests.fakes import FakeClock

JSON_JOB = {"tenant": "sim", "operations": [
    {"user": "ada@contoso.example", "addLicenses": [{"sku": "EMS"}], "removeLicenses": []}]}


def read_audit(client: TestClient, key: str = ALL_KEY, **params: str) -> list[dict[str, Any]]:
    response = client.get("/v1/audit", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in response.text.splitlines()]


def stored_streams(redis_client: redis.Redis) -> bytes:
    """Every audit stream's raw entries, as stored."""
    raw = b""
    for key in redis_client.scan_iter(match="bl:audit*", _type="stream"):
        for entry_id, fields in redis_client.xrange(key):
            raw += entry_id + b"".join(k + b"=" + v + b";" for k, v in fields.items())
    return raw


def test_submissions_record_the_actor_file_digest_and_rows(client: TestClient) -> None:
    multipart = client.post("/v1/jobs?tenant=sim", headers=auth(SIM_KEY),
                            files={"file": ("C:\\exports\\onboarding.csv", GOOD_CSV.encode(), "text/csv")})
    assert multipart.status_code == 202, multipart.text
    bare = submit_csv(client)
    body = json.dumps(JSON_JOB).encode()
    named_json = client.post("/v1/jobs", content=body, headers={
        **auth(SIM_KEY), "Content-Type": "application/json",
        "Content-Disposition": 'attachment; filename="weekly.json"'})
    assert named_json.status_code == 202, named_json.text

    events = read_audit(client)
    assert [(e["action"], e["actor"], e["tenant"], e["job"]) for e in events] == [
        ("submitted", SIM_NAME, "sim", multipart.json()["id"]),
        ("submitted", ALL_NAME, "sim", bare["id"]),
        ("submitted", SIM_NAME, "sim", named_json.json()["id"]),
    ]
    csv_digest = hashlib.sha256(GOOD_CSV.encode()).hexdigest()
    assert [e["details"] for e in events] == [
        {"file": "onboarding.csv", "sha256": csv_digest, "rows": 3, "dry_run": False, "on_seat_shortage": "fail",
         "mode": "add", "assignment": "any"},
        {"file": None, "sha256": csv_digest, "rows": 3, "dry_run": False, "on_seat_shortage": "fail",
         "mode": "add", "assignment": "any"},
        {"file": "weekly.json", "sha256": hashlib.sha256(body).hexdigest(), "rows": 1, "dry_run": False,
         "on_seat_shortage": "fail", "mode": "add", "assignment": "any"},
    ]
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)


def test_refused_submissions_are_not_audited_as_submitted(client: TestClient) -> None:
    response = client.post("/v1/jobs?tenant=sim", content=b"user,add\nnot-a-user,NOPE\n",
                           headers={**auth(), "Content-Type": "text/csv"})
    assert response.status_code == 422
    assert read_audit(client) == []


def test_cancel_and_refusals_carry_key_names_and_never_keys(client: TestClient, redis_client: redis.Redis) -> None:
    job = submit_csv(client, key=SIM_KEY)
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth()).status_code == 202
    refused_csv = client.post("/v1/jobs?tenant=sim", content=GOOD_CSV.encode(),
                              headers={**auth(OTHER_KEY), "Content-Type": "text/csv"})
    refused_json = client.post("/v1/jobs", json=JSON_JOB, headers=auth(OTHER_KEY))
    refused_read = client.get("/v1/audit?tenant=sim", headers=auth(OTHER_KEY))
    assert (refused_csv.status_code, refused_json.status_code, refused_read.status_code) == (403, 403, 403)

    events = read_audit(client, tenant="sim")
    # One refusal event per key and tenant a minute: the two after it are counted, for the next one.
    assert [(e["action"], e["actor"], e["job"]) for e in events] == [
        ("submitted", SIM_NAME, job["id"]),
        ("cancelled", ALL_NAME, job["id"]),
        ("key_refused", OTHER_NAME, None),
    ]
    assert events[2]["details"] == {"request": "POST /v1/jobs", "suppressed": 0}
    assert redis_client.get(f"bl:audit-refused-count:sim:{OTHER_NAME}") == b"2"
    stored = stored_streams(redis_client)
    assert OTHER_NAME.encode() in stored and SIM_NAME.encode() in stored
    for key in (ALL_KEY, SIM_KEY, OTHER_KEY):
        assert key.encode() not in stored
    assert redis_client.hget(f"bl:job:{job['id']}", "owner") == SIM_NAME.encode()


def test_a_key_reads_only_its_tenants_events(client: TestClient, redis_client: redis.Redis) -> None:
    sim_job = submit_csv(client, key=SIM_KEY)
    other_job = submit_csv(client, key=OTHER_KEY, tenant="other")

    assert [e["job"] for e in read_audit(client, SIM_KEY)] == [sim_job["id"]]
    assert [e["job"] for e in read_audit(client, SIM_KEY, tenant="sim")] == [sim_job["id"]]
    refused = client.get("/v1/audit", params={"tenant": "other"}, headers=auth(SIM_KEY))
    assert refused.status_code == 403
    assert refused.json()["detail"] == "this API key may not read the audit trail of tenant 'other'"
    assert client.get("/v1/audit", params={"tenant": "nope"}, headers=auth(SIM_KEY)).status_code == 403
    assert client.get("/v1/audit", params={"tenant": "nope"}, headers=auth()).status_code == 422
    assert redis_client.exists("bl:audit:nope") == 0  # made-up tenants get no stream

    # The other tenant's key sees its job and the refusal of the sim key, the all-tenants key sees all.
    assert [(e["action"], e["actor"], e["job"]) for e in read_audit(client, OTHER_KEY)] == [
        ("submitted", OTHER_NAME, other_job["id"]), ("key_refused", SIM_NAME, None)]
    assert [e["tenant"] for e in read_audit(client)] == ["sim", "other", "other"]
    assert client.get("/v1/audit").status_code == 401


def test_since_until_and_job_filters(client: TestClient, redis_client: redis.Redis) -> None:
    clock = FakeClock()
    log = AuditLog(redis_client, max_events=1000, retention_s=86400, clock=clock)
    t0 = clock.t
    for n in range(4):  # sim and other alternate, one event a minute
        log.append("sim" if n % 2 == 0 else "other", "ops", AuditAction.SUBMITTED, job=f"{n % 2:032x}",
                   details={"n": n})
        clock.advance(60)

    def numbers(key: str = ALL_KEY, **params: str) -> list[int]:
        return [e["details"]["n"] for e in read_audit(client, key, **params)]

    assert numbers() == [0, 1, 2, 3]
    assert numbers(since=iso_time(t0 + 60)) == [1, 2, 3]
    assert numbers(since=str(int(t0 + 60)), until=str(int(t0 + 120))) == [1, 2]
    assert numbers(until="2023-11-14T22:15:20Z") == [0, 1, 2]  # t0 + 120 s
    assert numbers(until="2023-11-14T23:15:20+01:00") == [0, 1, 2]
    assert numbers(job=f"{1:032x}") == [1, 3]
    assert numbers(SIM_KEY, job=f"{0:032x}", since=iso_time(t0 + 1)) == [2]
    assert numbers(since=iso_time(t0 + 3600)) == []

    bad = client.get("/v1/audit", params={"since": "last tuesday"}, headers=auth())
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["column"] == "since"
