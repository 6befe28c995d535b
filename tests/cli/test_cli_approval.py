"""`bulklicense approve`, `reject` and `jobs` against the API served over HTTP, for a tenant that requires approval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli.main import app as cli
from config import Settings
from jobs.models import UserResult, UserStatus
from tests.api.helpers import ALL_KEY, ALL_NAME, JOB_CSV, SIM_KEY, SIM_NAME, auth, store_of, submit_csv


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    path = tmp_path / "tenants.toml"
    path.write_text('[tenants.sim]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s3cret-value"\n'
                    "require_approval = true\n")
    return Settings(redis_url=redis_url, tenants_file=path, chunk_size=10,
                    api_keys=f"{ALL_NAME}={ALL_KEY}:*,{SIM_NAME}={SIM_KEY}:sim")  # type: ignore[arg-type]


def bulklicense(url: str, key: str, *args: str) -> Any:
    return CliRunner().invoke(cli, [*args, "--api-url", url, "--api-key", key], env={"COLUMNS": "250"})


def waiting_job(client: TestClient, redis_client: redis.Redis) -> str:
    """A job submitted by the `hr-portal` key, planned as a worker leaves it."""
    job_id = str(submit_csv(client, JOB_CSV, key=SIM_KEY)["id"])
    store = store_of(redis_client)
    store.record_results(job_id, [UserResult(row=op.row, user=op.user, status=UserStatus.WOULD_CHANGE, attempts=1,
                                             updated_at=1.0) for op in store.iter_operations(job_id)])
    return job_id


def test_status_and_jobs_show_a_job_awaiting_approval(api_url: str, client: TestClient,
                                                      redis_client: redis.Redis) -> None:
    job_id = waiting_job(client, redis_client)

    status = bulklicense(api_url, ALL_KEY, "status", job_id)
    assert status.exit_code == 0, status.output
    text = " ".join(status.output.split())
    assert f"job {job_id} — planned, awaiting approval" in text
    assert f"awaiting approval: submitted by {SIM_NAME}; another API key decides: bulklicense approve {job_id}" in text

    listed = bulklicense(api_url, ALL_KEY, "jobs", "--awaiting")
    assert listed.exit_code == 0, listed.output
    assert job_id in listed.output and "planned, awaiting approval" in " ".join(listed.output.split())


def test_approve_starts_the_run_and_the_submitter_is_refused(api_url: str, client: TestClient,
                                                             redis_client: redis.Redis) -> None:
    job_id = waiting_job(client, redis_client)

    own = bulklicense(api_url, SIM_KEY, "approve", job_id)
    assert own.exit_code == 1
    assert "HTTP 403" in own.output and "another API key must approve" in " ".join(own.output.split())

    approved = bulklicense(api_url, ALL_KEY, "approve", job_id)
    assert approved.exit_code == 0, approved.output
    run_id = client.get(f"/v1/jobs/{job_id}", headers=auth()).json()["run_as"]
    assert f"job {job_id} approved: its run, job {run_id}, started with 4 users" in " ".join(approved.output.split())


def test_reject_ends_the_job_with_the_reason(api_url: str, client: TestClient, redis_client: redis.Redis) -> None:
    job_id = waiting_job(client, redis_client)

    rejected = bulklicense(api_url, ALL_KEY, "reject", job_id, "--reason", "[bold]not now[/bold]")
    assert rejected.exit_code == 0, rejected.output
    assert f"job {job_id} rejected by {ALL_NAME}: [bold]not now[/bold]" in rejected.output  # text, not markup
    job = client.get(f"/v1/jobs/{job_id}", headers=auth()).json()
    assert (job["status"], job["approval"]["reason"]) == ("cancelled", "[bold]not now[/bold]")

    again = bulklicense(api_url, ALL_KEY, "reject", job_id)
    assert again.exit_code == 1 and "HTTP 409" in again.output
