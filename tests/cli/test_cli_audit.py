"""`bulklicense audit` against the API served over HTTP: a table, JSON lines, filters and refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from cli.main import api_key_for
from cli.main import app as cli
from config import Settings
from jobs.audit import AuditAction, AuditLog
from tests.api.helpers import ALL_KEY, SIM_KEY
from tests.fakes import FakeClock

JOB_A, JOB_B = "a" * 32, "b" * 32


@pytest.fixture
def events(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    log = AuditLog(redis_client, max_events=1000, retention_s=86400, clock=clock)
    log.append("sim", "hr-portal", AuditAction.SUBMITTED, job=JOB_A, details={"rows": 3, "file": "a.csv"})
    clock.advance(60)
    log.append("other", "ops", AuditAction.SUBMITTED, job=JOB_B, details={"rows": 1})
    clock.advance(60)
    log.append("sim", "admin", AuditAction.CANCELLED, job=JOB_A)


def run(api_url: str, *args: str, key: str = ALL_KEY) -> Any:
    return CliRunner().invoke(cli, ["audit", "--api-url", api_url, "--api-key", key, *args],
                              env={"COLUMNS": "200"})


@pytest.mark.usefixtures("events")
def test_audit_prints_json_lines_oldest_first(api_url: str) -> None:
    result = run(api_url, "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["tenant"], e["actor"], e["action"], e["job"]) for e in lines] == [
        ("sim", "hr-portal", "submitted", JOB_A), ("other", "ops", "submitted", JOB_B),
        ("sim", "admin", "cancelled", JOB_A)]
    filtered = run(api_url, "--json", "--job", JOB_A, "--since", "2023-11-14T22:14:00Z")
    assert [json.loads(line)["action"] for line in filtered.stdout.splitlines()] == ["cancelled"]
    scoped = run(api_url, "--json", key=SIM_KEY)
    assert [json.loads(line)["tenant"] for line in scoped.stdout.splitlines()] == ["sim", "sim"]


@pytest.mark.usefixtures("events")
def test_audit_prints_a_table_and_refusals(api_url: str) -> None:
    result = run(api_url, "--tenant", "sim", "--until", "1700000000")
    assert result.exit_code == 0, result.output
    assert "hr-portal" in result.stdout and "file=a.csv, rows=3" in result.stdout
    assert "admin" not in result.stdout and JOB_B not in result.stdout

    refused = run(api_url, "--tenant", "other", key=SIM_KEY)
    assert refused.exit_code == 1
    assert "403" in refused.stderr and "may not read the audit trail of tenant 'other'" in refused.stderr
    assert run(api_url, "--tenant", "sim", "--since", "2030-01-01").stdout.strip() == "no audit events"


def test_audit_shows_values_as_text_never_as_markup(api_url: str, redis_client: redis.Redis) -> None:
    """L13: a file name another uploader chose, such as "[conceal]x.csv", is printed as it is."""
    log = AuditLog(redis_client, max_events=1000, retention_s=86400, clock=FakeClock())
    log.append("sim", "hr-portal", AuditAction.SUBMITTED, job=JOB_A,
               details={"file": "[conceal]payroll.csv", "note": "[link=https://x.example]y[/link]"})
    result = run(api_url, "--tenant", "sim")
    assert result.exit_code == 0, result.output
    assert "file=[conceal]payroll.csv" in result.stdout
    assert "[link=https://x.example]y[/link]" in result.stdout


def test_the_key_can_come_from_the_environment_instead_of_the_command_line(api_url: str) -> None:
    result = CliRunner().invoke(cli, ["audit", "--api-url", api_url, "--json"],
                                env={"BULKLICENSE_API_KEY": ALL_KEY, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    missing = CliRunner().invoke(cli, ["audit", "--api-url", api_url], env={"BULKLICENSE_API_KEY": ""})
    assert missing.exit_code == 2 and "set BULKLICENSE_API_KEY" in missing.stderr


def test_the_key_is_asked_for_on_a_terminal_when_no_other_source_has_it() -> None:
    asked: list[str] = []

    def ask() -> str:
        asked.append("API key")
        return " typed-key-value-0001 \n"

    none_set = Settings(_env_file=None)  # type: ignore[call-arg]
    assert api_key_for(None, none_set, interactive=True, ask=ask) == "typed-key-value-0001"
    assert api_key_for(None, none_set, interactive=False, ask=ask) is None  # a script: no prompt to hang on
    from_env = Settings(_env_file=None, api_key="env-key-value-0001")  # type: ignore[call-arg]
    assert api_key_for(None, from_env, interactive=True, ask=ask) == "env-key-value-0001"
    assert api_key_for("option-key-0001", from_env, interactive=True, ask=ask) == "option-key-0001"
    assert asked == ["API key"]
