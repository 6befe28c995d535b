"""Schemathesis against the API's own OpenAPI schema, in process: no operation answers 5xx.

Every operation is fuzzed with positive and negative cases (Hypothesis, derandomized, bounded),
with a valid API key. So that fuzzed input reaches past the first refusal, each submission is
also sent with a real tenant profile (CSV `?tenant=`, JSON `tenant`), its fuzzed text as rows under
a real header, and its fuzzed object as an operation; each `{job_id}` case is also sent with the id
of a real job, keeping the generated query parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from api.app import create_app
from config import Settings
from jobs.models import UserResult, UserStatus
from jobs.store import JobStore
from tests.api.helpers import ALL_KEY, SIM_KEY, Sent, auth

MAX_EXAMPLES = 50


@pytest.fixture
def real_job(api_app: Any) -> str:
    """A committed job of two users on the `sim` profile."""
    with TestClient(api_app) as client:
        response = client.post("/v1/jobs", params={"tenant": "sim"}, headers={**auth(), "Content-Type": "text/csv"},
                               content=b"user,add\nada@contoso.example,ENTERPRISEPACK\n"
                                       b"grace@contoso.example,EMS\n")
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


@pytest.fixture
def api_app(settings: Settings, redis_client: redis.Redis, sent: Sent, subscribed_skus: list[dict[str, Any]]) -> Any:
    return create_app(
        settings,
        redis_client=redis_client,
        send=lambda job, n, countdown: sent.append((job, n, countdown)),
        fetch_skus=lambda tenant: subscribed_skus,
        ceiling_for=lambda tenant: 20.0,
    )


OPERATIONS = [
    ("GET", "/healthz"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{job_id}"),
    ("GET", "/v1/jobs/{job_id}/results"),
    ("POST", "/v1/jobs/{job_id}/cancel"),
    ("POST", "/v1/jobs/{job_id}/approve"),
    ("POST", "/v1/jobs/{job_id}/reject"),
    ("GET", "/v1/jobs/{job_id}/events"),
    ("GET", "/v1/tenants"),
    ("GET", "/v1/audit"),
    ("POST", "/v1/reclaim"),
    ("POST", "/v1/cleanup/redundant-direct"),
]


CSV_HEADER = "user,add,remove,disabled_plans,usage_location,employeeId\n"


def deeper_variants(case: Any) -> Iterator[Any]:
    """The case again, edited in place, past the first refusal: a real tenant, fuzzed rows and operations."""
    media = (case.media_type or "").split(";")[0].strip().lower()
    if media == "application/json" and isinstance(case.body, dict):
        body = case.body
        for doc in ({**body, "tenant": "sim"}, {"tenant": "sim", "operations": [body]},
                    {"tenant": "sim", "operations": list(body.values())}):
            case.body = doc
            yield case
    elif media in ("text/csv", "multipart/form-data"):
        case.query = {**(case.query or {}), "tenant": "sim"}
        yield case
        if isinstance(case.body, str):
            case.body = CSV_HEADER + case.body
            yield case


# Negative cases exist only where the schema constrains something (a query bound, a body type):
# `healthz` has no parameters and `{job_id}` is any string, so those run positive cases only.
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if (m, p) in {
        ("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/{job_id}/results"), ("GET", "/v1/audit"),
        ("POST", "/v1/jobs/{job_id}/reject"), ("POST", "/v1/reclaim")}
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_no_operation_answers_5xx(api_app: Any, real_job: str, redis_client: redis.Redis, method: str, path: str,
                                  mode: GenerationMode) -> None:
    if path.endswith("/events"):  # a job's event stream lasts until the job ends: end it first
        JobStore(redis_client, retention_s=3600).record_results(real_job, [
            UserResult(row=row, user=f"u{row}@contoso.example", status=UserStatus.SUCCEEDED) for row in (2, 3)])
    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app)
    operation = schema[path][method]
    calls: list[int] = []

    def call(case: Any, key: str = ALL_KEY) -> None:
        response = case.call_and_validate(headers=auth(key), checks=[not_a_server_error])
        calls.append(response.status_code)

    @given(case=operation.as_strategy(generation_mode=mode))
    # No shrinking: a failure is reported with the case that found it, in seconds rather than minutes.
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
              phases=(Phase.explicit, Phase.generate), report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck))
    def fuzz(case: Any) -> None:
        call(case)
        if path == "/v1/jobs" and method == "POST":
            for variant in deeper_variants(case):
                call(variant)
                call(variant, SIM_KEY)  # a key scoped to the profile (the JSON path checks it while parsing)
        elif "{job_id}" in path:
            case.path_parameters = {**(case.path_parameters or {}), "job_id": real_job}
            call(case)

    fuzz()
    assert calls and max(calls) < 500
    print(f"{method} {path} [{mode.value}]: {len(calls)} calls, statuses {sorted(set(calls))}")


def test_the_schema_covers_every_route(api_app: Any) -> None:
    """The fuzzed schema lists every route the app serves (so none escapes the fuzzing)."""
    with TestClient(api_app) as client:
        doc = client.get("/openapi.json").json()
    operations = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    assert operations == {
        ("GET", "/healthz"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/{job_id}"),
        ("GET", "/v1/jobs/{job_id}/results"), ("POST", "/v1/jobs/{job_id}/cancel"),
        ("POST", "/v1/jobs/{job_id}/run"), ("POST", "/v1/jobs/{job_id}/resume"),
        ("POST", "/v1/jobs/{job_id}/rollback"), ("POST", "/v1/jobs/{job_id}/approve"),
        ("POST", "/v1/jobs/{job_id}/reject"),
        ("GET", "/v1/jobs/{job_id}/events"), ("GET", "/v1/tenants"), ("GET", "/v1/audit"),
        ("POST", "/v1/reclaim"), ("POST", "/v1/cleanup/redundant-direct"),
        ("GET", "/v1/tenants/{tenant}/group-license-errors"),
    }, json.dumps(sorted(operations))
