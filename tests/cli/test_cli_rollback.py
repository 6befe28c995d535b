"""`bulklicense rollback` against the API served over HTTP: accepted, and refused with the API's reason."""

from __future__ import annotations

from typing import Any

import redis
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli.main import app as cli
from tests.api.helpers import ALL_KEY, auth, finished_job


def rollback(url: str, *args: str) -> Any:
    return CliRunner().invoke(cli, ["rollback", "--api-url", url, "--api-key", ALL_KEY, *args],
                              env={"COLUMNS": "200"})


def test_rollback_starts_the_rollback_then_refuses_a_second(api_url: str, client: TestClient,
                                                            redis_client: redis.Redis) -> None:
    job_id = finished_job(client, redis_client)
    first = rollback(api_url, job_id)
    assert first.exit_code == 0, first.output
    back_id = client.get(f"/v1/jobs/{job_id}", headers=auth()).json()["rolled_back_by"]
    assert f"rollback {back_id} of job {job_id} accepted: 3 users" in " ".join(first.output.split())

    again = rollback(api_url, job_id, "--dry-run")
    assert again.exit_code == 1
    assert f"already rolled back by job {back_id}" in " ".join(again.output.split())
