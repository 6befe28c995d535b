"""`bulklicense submit` says how the file was read, and passes --mode, --keep-columns and --assignment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from cli.main import app as cli
from tests.api.helpers import ALL_KEY

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "files" / "microsoft"


def submit(url: str, file: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["submit", str(file), "--tenant", "sim", "--api-url", url, "--api-key", ALL_KEY,
                                    *args], env={"COLUMNS": "200"})


def test_submit_prints_each_columns_reading(api_url: str) -> None:
    result = submit(api_url, CORPUS / "learn_powershell_create_users.csv")
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    start = lines.index('read as UTF-8 CSV (plain), delimiter ",", mode=add:') + 1
    assert lines[start : start + 6] == ["UserPrincipalName → user", "FirstName → kept", "LastName → kept",
                                        "DisplayName → kept", "UsageLocation → usage_location", "AccountSkuId → add"]


def test_submit_notes_skipped_lines(api_url: str) -> None:
    result = submit(api_url, CORPUS / "windows_powershell_redirect_utf16le.csv")
    assert result.exit_code == 0, result.output
    assert "read as UTF-16 LE with BOM CSV (powershell_export)" in result.output
    assert "line 1: #TYPE line skipped (Windows PowerShell Export-Csv type information)" in result.output


def test_an_export_needs_mode(api_url: str) -> None:
    refused = submit(api_url, CORPUS / "m365_admin_center_export_users.csv")
    assert refused.exit_code == 1
    assert "choose mode=exact" in " ".join(refused.output.split())
    accepted = submit(api_url, CORPUS / "m365_admin_center_export_users.csv", "--mode", "exact",
                      "--keep-columns", "Department")
    assert "Licenses → licenses to hold (mode=exact: the others are removed)" in accepted.output
    assert "Department → kept (keep_columns)" in accepted.output


def test_submit_passes_assignment_direct(api_url: str) -> None:
    result = submit(api_url, CORPUS / "learn_powershell_create_users.csv", "--assignment", "direct")
    assert result.exit_code == 0, result.output
    assert "assignment=direct: a license a group already gives is assigned directly too" in result.output
    assert "assignment=direct" not in submit(api_url, CORPUS / "learn_powershell_create_users.csv").output
