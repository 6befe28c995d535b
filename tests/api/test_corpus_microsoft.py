"""Microsoft's own file layouts end to end in-process: uploaded through the API, planned by the executor against a
fake Graph, and read back through the API, each with the exact reading report and plan it must produce."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from config import Settings
from graphclient.client import GraphClient
from graphclient.retry import RetryPolicy
from jobs.executor import ChunkDeps, run_users
from jobs.skus import SkuCatalog
from jobs.store import JobStore
from tests.api.helpers import ALL_KEY, Sent, auth, write_tenants
from tests.fakes import FakeClock, RecordingSleep, RecordingThrottle, Tenant

CORPUS = Path(__file__).parent.parent / "corpus"
MANIFEST = json.loads((CORPUS / "microsoft.json").read_text(encoding="utf-8"))
SKUS: list[dict[str, Any]] = json.loads((CORPUS / MANIFEST["subscribed_skus"]).read_text())["value"]
for _sku in SKUS:  # seats to spare: seat shortages have tests of their own
    _sku["prepaidUnits"] = {**_sku["prepaidUnits"], "enabled": _sku["consumedUnits"] + 1000}
CATALOG = SkuCatalog.from_graph(SKUS)


@pytest.fixture
def corpus_client(tmp_path: Path, redis_url: str, redis_client: redis.Redis, sent: Sent) -> Iterator[TestClient]:
    settings = Settings(redis_url=redis_url, tenants_file=write_tenants(tmp_path),
                        api_keys=f"{ALL_KEY}:*")  # type: ignore[arg-type]
    app = create_app(settings, redis_client=redis_client, send=lambda j, n, c: sent.append((j, n, c)),
                     fetch_skus=lambda tenant: SKUS, ceiling_for=lambda tenant: None)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def graph_users(users: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fake Graph's users, from the manifest's part numbers."""
    return {upn: {"id": f"id-{upn}", "usageLocation": user["location"],
                  "assignedLicenses": [{"skuId": CATALOG.resolve_sku(p).sku_id, "disabledPlans": []}
                                       for p in user["licenses"]]}
            for upn, user in users.items()}


def plan_job(store: JobStore, job_id: str, users: dict[str, Any]) -> None:
    """Run every chunk of a job as a worker would, against a fake Graph holding `users`."""
    clock = FakeClock()
    http = httpx.Client(transport=httpx.MockTransport(Tenant(graph_users(users))))
    graph = GraphClient(http, base_url="https://graph.test", throttle=RecordingThrottle(), timeout_s=5)
    policy = RetryPolicy(max_attempts=4, max_total_s=3600, backoff_base_s=1, backoff_max_s=8, max_inline_wait_s=30)
    deps = ChunkDeps(store=store, graph=graph, policy=policy, batch_size=20, request_deadline_s=60,
                     catalog=lambda: CATALOG, clock=clock, sleep=RecordingSleep(clock), rng=random.Random(1))
    for n in range(int(store.job_fields(job_id, "chunks")["chunks"])):
        run_users(deps, job_id, n, budget_started_at=clock())


@pytest.mark.parametrize("case", MANIFEST["cases"], ids=[c["name"] for c in MANIFEST["cases"]])
def test_microsoft_layouts_end_to_end(case: dict[str, Any], corpus_client: TestClient,
                                      redis_client: redis.Redis) -> None:
    body = (CORPUS / case["file"]).read_bytes()
    query = {"tenant": "sim", "dry_run": "true", **case["query"]}
    response = corpus_client.post("/v1/jobs", params=query, content=body,
                                  headers={**auth(), "Content-Type": "text/csv"})
    expect = case["expect"]
    assert response.status_code == expect["status"], response.text[:800]
    if expect["status"] != 202:
        first = response.json()["errors"][0]
        assert (first["row"], first["column"]) == (expect["row"], expect["column"]), first
        assert expect["message"] in first["message"], first["message"]
        return
    accepted = response.json()
    check_reading(accepted, expect)

    plan_job(JobStore(redis_client, retention_s=3600), accepted["id"], case["users"])
    job = corpus_client.get(f"/v1/jobs/{accepted['id']}", headers=auth()).json()
    assert job["status"] == "planned", job
    assert job["input"] == accepted["input"] and job["mode"] == expect["mode"]
    seats = {line["sku"]: [line["needed"], line["released"]] for line in job["plan"]["seats"]}
    assert seats == expect["seats"]
    rows = corpus_client.get(f"/v1/jobs/{accepted['id']}/results", headers=auth()).json()["value"]
    plan = {row["user"]: [row["status"], row["reason"] if row["status"] == "would_fail" else row["action"]]
            for row in rows}
    assert plan == expect["plan"]


def check_reading(accepted: dict[str, Any], expect: dict[str, Any]) -> None:
    """The 202's reading report: mode, layout, encoding, each column, the notes."""
    reading = accepted["input"]
    assert (accepted["mode"], reading["mode"]) == (expect["mode"], expect["mode"])
    assert (reading["layout"], reading["encoding"]) == (expect["layout"], expect["encoding"])
    columns = [f"{c['column']} → {c['read_as']}" for c in reading["columns"]]
    if "columns" in expect:
        assert columns == expect["columns"]
    else:
        assert len(columns) == expect["columns_count"]
        assert set(expect.get("columns_include", [])) <= set(columns), columns
    assert reading["notes"] == expect["notes"]
