"""`bulklicense reclaim`, `cleanup-redundant` and `group-errors` against the API served over HTTP."""

from __future__ import annotations

from typing import Any

import redis
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from cli.main import app as cli
from config import Settings
from jobs.group_errors import GroupErrorReport, GroupErrorRow
from tests.api.helpers import ALL_KEY, auth, served

GROUP = "0f0e0d0c-0000-4000-8000-000000000001"


def invoke(url: str, *args: str) -> Any:
    return CliRunner().invoke(cli, [*args, "--api-url", url, "--api-key", ALL_KEY], env={"COLUMNS": "200"})


def test_reclaim_run_starts_the_scan_job_with_what_was_asked(api_url: str, client: TestClient) -> None:
    result = invoke(api_url, "reclaim", "--tenant", "sim", "--inactive-days", "120", "--sku", "ENTERPRISEPACK",
                    "--exclude-upn", "svc-*", "--exclude-upn", "room-*", "--exclude-group", GROUP, "--run")
    assert result.exit_code == 0, result.output
    job_id = result.output.split()[1]
    job = client.get(f"/v1/jobs/{job_id}", headers=auth()).json()
    asked = job["scan"]["request"]
    assert (job["kind"], job["dry_run"], asked["inactive_days"], asked["exclude_upns"], asked["exclude_group"]) == (
        "reclaim", False, 120, ["svc-*", "room-*"], GROUP)


def test_reclaim_refused_prints_the_reason_and_fails(api_url: str) -> None:
    result = invoke(api_url, "reclaim", "--tenant", "sim", "--sku", "NOT_A_SKU", "--run")
    assert result.exit_code == 1 and "NOT_A_SKU" in result.output


def test_cleanup_redundant_run_starts_the_cleanup_job(api_url: str, client: TestClient) -> None:
    result = invoke(api_url, "cleanup-redundant", "--tenant", "sim", "--run")
    assert result.exit_code == 0, result.output
    assert client.get(f"/v1/jobs/{result.output.split()[1]}", headers=auth()).json()["kind"] == "redundant_direct"


def test_group_errors_prints_one_line_per_user_in_error(settings: Settings, redis_client: redis.Redis,
                                                        subscribed_skus: list[dict[str, Any]]) -> None:
    row = GroupErrorRow("id-1", "ann@contoso.example", GROUP, "LIC - Visio", "sku", "VISIOCLIENT", "Error",
                        "CountViolation")
    app = create_app(settings, redis_client=redis_client, send=lambda job, n, countdown: None,
                     fetch_skus=lambda tenant: subscribed_skus,
                     group_errors=lambda tenant, catalog, limit: GroupErrorReport((row,), 1, truncated=False))
    with served(app) as url:
        result = invoke(url, "group-errors", "--tenant", "sim")
    assert result.exit_code == 0, result.output
    assert "ann@contoso.example" in result.output and "CountViolation" in result.output
    assert "LIC - Visio" in result.output
