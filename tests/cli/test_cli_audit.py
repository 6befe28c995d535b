"""`bulklicense audit` against the API served over HTTP: a table, JSON lines, filters and refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from cli.main import app as cli
from jobs.audit import AuditAction, AuditLog
from tests.api.helpers import ALL_KEY, SIM_KEY
from tests.fakes import FakeClock


@pytest.fixture
def events(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    log = AuditLog(redis_client, max_events=1000, retention_s=86400, clock=clock)
    log.append("sim", "hr-portal", AuditAction.SUBMITTED, job="job-a", details={"rows": 3, "file": "a.csv"})
    clock.advance(60)
    log.append("other", "ops", AuditAction.SUBMITTED, job="job-b", details={"rows": 1})
    clock.advance(60)
    log.append("sim", "admin", AuditAction.CANCELLED, job="job-a")


def run(api_url: str, *args: str, key: str = ALL_KEY) -> Any:
    return CliRunner().invoke(cli, ["audit", "--api-url", api_url, "--api-key", key, *args],
                              env={"COLUMNS": "200"})


@pytest.mark.usefixtures("events")
def test_audit_prints_json_lines_oldest_first(api_url: str) -> None:
    result = run(api_url, "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["tenant"], e["actor"], e["action"], e["job"]) for e in lines] == [
        ("sim", "hr-portal", "submitted", "job-a"), ("other", "ops", "submitted", "job-b"),
        ("sim", "admin", "cancelled", "job-a")]
    filtered = run(api_url, "--json", "--job", "job-a", "--since", "2023-11-14T22:14:00Z")
    assert [json.loads(line)["action"] for line in filtered.stdout.splitlines()] == ["cancelled"]
    scoped = run(api_url, "--json", key=SIM_KEY)
    assert [json.loads(line)["tenant"] for line in scoped.stdout.splitlines()] == ["sim", "sim"]


@pytest.mark.usefixtures("events")
def test_audit_prints_a_table_and_refusals(api_url: str) -> None:
    result = run(api_url, "--tenant", "sim", "--until", "1700000000")
    assert result.exit_code == 0, result.output
    assert "hr-portal" in result.stdout and "file=a.csv, rows=3" in result.stdout
    assert "admin" not in result.stdout and "job-b" not in result.stdout

    refused = run(api_url, "--tenant", "other", key=SIM_KEY)
    assert refused.exit_code == 1
    assert "403" in refused.stderr and "may not read the audit trail of tenant 'other'" in refused.stderr
    assert run(api_url, "--tenant", "sim", "--since", "2030-01-01").stdout.strip() == "no audit events"
