"""Access control at the API: read-only keys, throttled key guessing, tenant names not enumerable,
job ids checked before they reach Redis, and what /healthz tells nobody in particular."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from api.deps import READ_ONLY
from cli.localstack import free_port
from config import Settings, parse_api_keys
from jobs.models import UserStatus
from tests.api.helpers import (
    ALL_KEY,
    E3,
    JOB_CSV,
    OTHER_KEY,
    OUTCOMES,
    SIM_KEY,
    Sent,
    auth,
    finish,
    finished_job,
    store_of,
    submit_csv,
)

READ_KEY = "key-read-only-sim-0001"
KEYS = f"admin={ALL_KEY}:*,hr-portal={SIM_KEY}:sim,{OTHER_KEY}:other,auditor={READ_KEY}:sim:read"


def app_for(settings: Settings, redis_client: redis.Redis, skus: list[dict[str, Any]], sent: Sent | None = None,
            **changes: Any) -> Any:
    sent = Sent() if sent is None else sent
    changed = settings.model_copy(update={"api_keys": parse_api_keys(KEYS), **changes})
    return create_app(changed, redis_client=redis_client, send=lambda job, n, countdown: sent.append((job, n, 0.0)),
                      fetch_skus=lambda tenant: skus, ceiling_for=lambda tenant: 20.0)


@pytest.fixture
def keyed(settings: Settings, redis_client: redis.Redis, sent: Sent,
          subscribed_skus: list[dict[str, Any]]) -> Iterator[TestClient]:
    """The API with a read-only key for `sim` besides the usual ones."""
    with TestClient(app_for(settings, redis_client, subscribed_skus, sent), raise_server_exceptions=False) as client:
        yield client


def test_a_read_only_key_reads_everything_and_changes_nothing(keyed: TestClient, redis_client: redis.Redis,
                                                              sent: Sent) -> None:
    job_id = finished_job(keyed, redis_client)
    reads = {path: keyed.get(path, headers=auth(READ_KEY)).status_code for path in (
        "/v1/jobs", f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/results", f"/v1/jobs/{job_id}/results?format=csv",
        f"/v1/jobs/{job_id}/events", "/v1/audit?tenant=sim", "/v1/tenants")}
    assert set(reads.values()) == {200}, reads
    assert [j["id"] for j in keyed.get("/v1/jobs", headers=auth(READ_KEY)).json()["value"]] == [job_id]

    sent.clear()
    before = keyed.get("/v1/audit", headers=auth()).text
    writes = {
        "submit csv": keyed.post("/v1/jobs?tenant=sim", content=JOB_CSV.encode(),
                                 headers={**auth(READ_KEY), "Content-Type": "text/csv"}),
        "submit json": keyed.post("/v1/jobs", json={"tenant": "sim", "operations": [{"user": "a@contoso.example"}]},
                                  headers=auth(READ_KEY)),
        "cancel": keyed.post(f"/v1/jobs/{job_id}/cancel", headers=auth(READ_KEY)),
        "run": keyed.post(f"/v1/jobs/{job_id}/run", headers=auth(READ_KEY)),
        "resume": keyed.post(f"/v1/jobs/{job_id}/resume", headers=auth(READ_KEY)),
        "rollback": keyed.post(f"/v1/jobs/{job_id}/rollback", headers=auth(READ_KEY)),
        # Scope first: a job it cannot see, or one that does not exist, gets the same answer.
        "cancel unknown": keyed.post(f"/v1/jobs/{0:032x}/cancel", headers=auth(READ_KEY)),
    }
    for label, response in writes.items():
        assert response.status_code == 403, (label, response.text)
        assert response.json()["detail"] == READ_ONLY, label
    assert sent == [] and redis_client.zcard("bl:jobs") == 1
    assert keyed.get("/v1/audit", headers=auth()).text == before  # nothing happened, nothing recorded


def test_the_openapi_document_says_which_calls_a_read_only_key_may_not_make(keyed: TestClient) -> None:
    paths = keyed.get("/openapi.json").json()["paths"]
    for path, method in (("/v1/jobs", "post"), ("/v1/jobs/{job_id}/cancel", "post"), ("/v1/jobs/{job_id}/run", "post"),
                         ("/v1/jobs/{job_id}/resume", "post"), ("/v1/jobs/{job_id}/rollback", "post")):
        assert "403" in paths[path][method]["responses"], (path, method)
    parameter = next(p for p in paths["/v1/jobs/{job_id}"]["get"]["parameters"] if p["name"] == "job_id")
    assert parameter["schema"]["pattern"] == "^[0-9a-f]{32}$"


def test_failed_key_attempts_are_throttled_per_address_and_logged_without_the_key(
    settings: Settings, redis_client: redis.Redis, subscribed_skus: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = app_for(settings, redis_client, subscribed_skus, auth_failures_per_address=3)
    guesses = [f"guess-{n:04d}-abcdefghijk" for n in range(5)]
    with caplog.at_level(logging.WARNING, logger="api.deps"), TestClient(app) as client:
        answers = [client.get("/v1/jobs", headers=auth(guess)) for guess in guesses]
        assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]
        throttled = answers[3]
        assert 55 <= int(throttled.headers["retry-after"]) <= 60
        assert throttled.json()["detail"].startswith("too many failed API key attempts from this address")
        # From that address even a good key waits: keys are not checked there for now.
        assert client.get("/v1/jobs", headers=auth()).status_code == 429
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("invalid API key from testclient for GET /v1/jobs") == 3
    assert "failed API key attempts from testclient throttled: 3 in 60 s" in lines
    assert not any(guess in line for guess in guesses for line in caplog.text.splitlines())


def test_other_addresses_are_served_while_one_is_throttled(api_url: str) -> None:
    # Over HTTP the address is the connection's: 127.0.0.1 guesses, 127.0.0.2 is someone else.
    with httpx.Client(base_url=api_url) as client:
        codes = [client.get("/v1/jobs", headers=auth(f"guess-{n:04d}-abcdefghijk")).status_code for n in range(11)]
        assert codes == [401] * 10 + [429]
        assert client.get("/v1/jobs", headers=auth()).status_code == 429
    with httpx.Client(base_url=api_url, transport=httpx.HTTPTransport(local_address="127.0.0.2")) as elsewhere:
        assert elsewhere.get("/v1/jobs", headers=auth()).status_code == 200


def test_tenant_names_are_not_enumerable(keyed: TestClient) -> None:
    """A key learns nothing of profiles it may not use: unknown and forbidden are the same 403."""

    def csv_answer(tenant: str, key: str) -> tuple[int, str]:
        response = keyed.post(f"/v1/jobs?tenant={tenant}", content=JOB_CSV.encode(),
                              headers={**auth(key), "Content-Type": "text/csv"})
        return response.status_code, response.json()["detail"]

    def json_answer(tenant: str, key: str) -> tuple[int, str]:
        response = keyed.post("/v1/jobs", json={"tenant": tenant, "operations": [{"user": "a@contoso.example"}]},
                              headers=auth(key))
        return response.status_code, response.json()["detail"]

    def audit_answer(tenant: str, key: str) -> tuple[int, str]:
        response = keyed.get(f"/v1/audit?tenant={tenant}", headers=auth(key))
        return response.status_code, response.json()["detail"]

    for answer in (csv_answer, json_answer, audit_answer):
        exists, made_up = answer("other", SIM_KEY), answer("no-such-profile", SIM_KEY)
        assert exists[0] == made_up[0] == 403, answer.__name__
        assert exists[1].replace("'other'", "'?'") == made_up[1].replace("'no-such-profile'", "'?'")
        # A key that may use every profile is told plainly that a name is unknown.
        assert answer("no-such-profile", ALL_KEY)[0] == 422, answer.__name__


def test_crafted_job_ids_and_event_ids_never_give_500(keyed: TestClient, redis_client: redis.Redis) -> None:
    job_id = submit_csv(keyed)["id"]
    assert redis_client.exists(f"bl:job:{job_id}:ops:0")  # a string key: HMGET on it is WRONGTYPE
    for method, suffix in (("GET", ""), ("GET", "/results"), ("GET", "/events"), ("POST", "/cancel"),
                           ("POST", "/run"), ("POST", "/resume"), ("POST", "/rollback")):
        for crafted in (f"{job_id}:ops:0", f"{job_id}:res", job_id.upper(), job_id[:31]):
            response = keyed.request(method, f"/v1/jobs/{crafted}{suffix}", headers=auth())
            assert response.status_code == 422, (method, crafted, suffix, response.text)
    assert keyed.get(f"/v1/audit?job={job_id}:ops:0", headers=auth()).status_code == 422

    finish(redis_client, job_id, {
        "ada@contoso.example": (UserStatus.SUCCEEDED, None, None),
        "grace@contoso.example": (UserStatus.SUCCEEDED, None, None),
        "linus@contoso.example": (UserStatus.SUCCEEDED, None, None)})
    # Superscript digits are digits to str.isdigit(), not to int(); header bytes arrive as Latin-1.
    for last_event_id in (b"\xb2", b"12\xb3", b"\xb9\xb2", b"-1", b"1e3"):
        stream = keyed.get(f"/v1/jobs/{job_id}/events", headers={**auth(), "Last-Event-ID": last_event_id})
        assert stream.status_code == 200, last_event_id
        assert "event: end" in stream.text  # read from the start, as with no Last-Event-ID


def test_healthz_says_unavailable_without_redis_s_own_words(settings: Settings, subscribed_skus: list[dict[str, Any]],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    nowhere = redis.Redis(port=port, socket_connect_timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="api.routes.health"), \
            TestClient(app_for(settings, nowhere, subscribed_skus)) as client:
        response = client.get("/healthz")
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json() == {"status": "unavailable", "redis": "unavailable"}
    assert str(port) not in response.text
    assert str(port) in caplog.text  # the operator still learns what failed, from the log


def test_cancelling_an_ended_job_is_409_and_not_audited(keyed: TestClient, redis_client: redis.Redis) -> None:
    job_id = finished_job(keyed, redis_client)
    before = keyed.get("/v1/audit", headers=auth()).text
    response = keyed.post(f"/v1/jobs/{job_id}/cancel", headers=auth())
    assert response.status_code == 409
    assert response.json()["detail"] == f"job {job_id} has ended (completed): there is nothing to cancel"
    assert keyed.get("/v1/audit", headers=auth()).text == before
    assert redis_client.hget(f"bl:job:{job_id}", "cancel_requested") is None
    running = submit_csv(keyed)["id"]
    assert keyed.post(f"/v1/jobs/{running}/cancel", headers=auth()).status_code == 202
    assert keyed.post(f"/v1/jobs/{running}/cancel", headers=auth()).status_code == 202  # still ending: asked again


def test_a_dry_run_raced_ten_times_is_run_once(settings: Settings, redis_client: redis.Redis,
                                               subscribed_skus: list[dict[str, Any]]) -> None:
    def slow_skus(tenant: str) -> list[dict[str, Any]]:
        time.sleep(0.2)  # Graph takes its time: every racer is inside `run` at once
        return subscribed_skus

    sent = Sent()
    racing = settings.model_copy(update={"api_submissions_per_key": 0})  # all ten inside `run` at once
    app = create_app(racing, redis_client=redis_client, send=lambda job, n, countdown: sent.append((job, n, 0.0)),
                     fetch_skus=slow_skus, ceiling_for=lambda tenant: 20.0)
    with TestClient(app) as client:
        planned = client.post("/v1/jobs?tenant=sim&dry_run=true", content=JOB_CSV.encode(),
                              headers={**auth(), "Content-Type": "text/csv"}).json()["id"]
        finish(redis_client, planned, {u: (UserStatus.WOULD_CHANGE, b, None) for u, (_, b, _) in OUTCOMES.items()})
        store_of(redis_client).save_plans(planned, [(2, None, [f"need:{E3}"])])  # the run reserves a seat
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda _: client.post(f"/v1/jobs/{planned}/run", headers=auth()), range(10)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] + [409] * 9, [a.text for a in answers]
    winner = next(a.json()["id"] for a in answers if a.status_code == 202)
    assert all(f"already run as job {winner}" in a.json()["detail"] for a in answers if a.status_code == 409)
    assert redis_client.hget(f"bl:job:{planned}", "run_as") == winner.encode()
    assert redis_client.zcard("bl:jobs") == 2  # the dry run and its one run


def test_a_run_that_fails_gives_its_claim_back(settings: Settings, redis_client: redis.Redis,
                                               subscribed_skus: list[dict[str, Any]]) -> None:
    no_seats = [{**sku, "prepaidUnits": {**sku["prepaidUnits"], "enabled": sku["consumedUnits"]}}
                for sku in subscribed_skus]
    skus = {"now": no_seats}
    app = create_app(settings, redis_client=redis_client, send=lambda job, n, countdown: None,
                     fetch_skus=lambda tenant: skus["now"], ceiling_for=lambda tenant: 20.0)
    with TestClient(app) as client:
        skus["now"] = subscribed_skus
        planned = client.post("/v1/jobs?tenant=sim&dry_run=true", content=JOB_CSV.encode(),
                              headers={**auth(), "Content-Type": "text/csv"}).json()["id"]
        finish(redis_client, planned, {u: (UserStatus.WOULD_CHANGE, b, None) for u, (_, b, _) in OUTCOMES.items()})
        store_of(redis_client).save_plans(planned, [(2, None, [f"need:{E3}"])])
        skus["now"] = no_seats
        assert client.post(f"/v1/jobs/{planned}/run", headers=auth()).status_code == 409  # seats short
        assert redis_client.hget(f"bl:job:{planned}", "run_as") is None
        skus["now"] = subscribed_skus
        assert client.post(f"/v1/jobs/{planned}/run", headers=auth()).status_code == 202
