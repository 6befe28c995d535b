"""Constants and builders shared by the API and CLI tests: keys, tenants, a good CSV, finished jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cli.localstack import free_port
from config import key_label
from jobs.models import UserResult, UserStatus
from jobs.plan import UserState
from jobs.seats import SeatLedger
from jobs.store import JobStore

CORPUS = Path(__file__).parent.parent / "corpus"
ALL_KEY = "key-all-tenants-0001"
SIM_KEY = "key-sim-only-00001"
OTHER_KEY = "key-other-only-0001"
# Named as configured in the fixtures: two keys by name, one in the older unnamed form.
ALL_NAME = "admin"
SIM_NAME = "hr-portal"
OTHER_NAME = key_label(OTHER_KEY)


def write_tenants(tmp: Path) -> Path:
    path = tmp / "tenants.toml"
    path.write_text(
        "".join(
            f'[tenants.{name}]\ntenant_id = "t-{name}"\nclient_id = "c-{name}"\nclient_secret = "s3cret-{name}"\n'
            for name in ("sim", "other")
        )
    )
    return path


class Sent(list[tuple[str, int, float]]):
    """Chunk tasks the API put on the (injected) broker."""


def auth(key: str = ALL_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


GOOD_CSV = (
    "userPrincipalName,licenses,removeLicenses,disabledPlans,usageLocation,employeeId\n"
    "ada@contoso.example,ENTERPRISEPACK,,SWAY,GB,E1001\n"
    "grace@contoso.example,SPE_E5,ENTERPRISEPACK,,,E1002\n"
    "linus@contoso.example,,EMS,,,=HYPERLINK_SAFE\n"
).replace("=HYPERLINK_SAFE", "E1003")


def submit_csv(client: TestClient, body: str = GOOD_CSV, key: str = ALL_KEY, tenant: str = "sim") -> dict:
    response = client.post(f"/v1/jobs?tenant={tenant}", content=body.encode(),
                           headers={**auth(key), "Content-Type": "text/csv"})
    assert response.status_code == 202, response.text
    return dict(response.json())


E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"  # ENTERPRISEPACK
E5 = "06ebc4ee-1bb5-47dd-8120-11324bc54e06"  # SPE_E5
E1 = "18181a46-0d4e-45cd-891e-60aabd171b4e"  # STANDARDPACK
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
SWAY = "a23b959c-7ce8-4e57-9140-b90eb88a9e97"

JOB_CSV = (
    "user,add,remove,disabled_plans,usage_location\n"
    "ada@contoso.example,ENTERPRISEPACK,,SWAY,\n"
    "grace@contoso.example,SPE_E5,STANDARDPACK,,\n"
    "linus@contoso.example,,EMS,,\n"
    "ken@contoso.example,EMS,,,\n"
)


def state(*licenses: tuple[str, list[str]], location: str = "US") -> dict[str, Any]:
    return UserState.from_graph({"usageLocation": location, "assignedLicenses": [
        {"skuId": sku, "disabledPlans": plans} for sku, plans in licenses]}).to_json()


# What the job above did to each user: (status, before, after).
OUTCOMES = {
    "ada@contoso.example": (UserStatus.SUCCEEDED, state(), state((E3, [SWAY]))),
    "grace@contoso.example": (UserStatus.SUCCEEDED, state((E1, [])), state((E5, []))),
    "linus@contoso.example": (UserStatus.SUCCEEDED, state((EMS, [])), state()),
    "ken@contoso.example": (UserStatus.UNCHANGED, state((EMS, [])), None),
}


def store_of(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, retention_s=3600)


def finish(redis_client: redis.Redis, job_id: str, outcomes: dict[str, tuple[UserStatus, Any, Any]]) -> None:
    """Record every user's result and drop the job's seat reservations, as a worker would have."""
    store = store_of(redis_client)
    rows = {op.user: op.row for op in store.iter_operations(job_id)}
    store.record(job_id, [UserResult(row=rows[u], user=u, status=s, before=b, after=a, attempts=1, updated_at=1.0)
                          for u, (s, b, a) in outcomes.items()])
    SeatLedger(redis_client, retention_s=3600).release_all("sim", job_id)


def finished_job(client: TestClient, redis_client: redis.Redis, key: str = ALL_KEY) -> str:
    job_id = str(submit_csv(client, JOB_CSV, key=key)["id"])
    finish(redis_client, job_id, OUTCOMES)
    assert client.get(f"/v1/jobs/{job_id}", headers=auth()).json()["status"] == "completed"
    return job_id


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """The app served by uvicorn in a thread on a free local port; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
