"""A small client for our own HTTP API, and the live progress bar the CLI and the demo show."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from jobs.models import TERMINAL_JOB_STATUSES, JobStatus

console = Console()
err = Console(stderr=True)


class ApiClient:
    """A small client for our own HTTP API."""

    def __init__(self, url: str, key: str, *, transport: httpx.BaseTransport | None = None) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120,
                                 transport=transport)

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; print the API's error and exit on failure."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            err.print(f"[red]cannot reach the API at {self.http.base_url}:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None
        if response.status_code >= 400:
            _print_api_error(response)
            raise typer.Exit(1)
        return response


    def lines(self, path: str, params: dict[str, str] | None = None) -> Iterator[str]:
        """A streamed GET's non-empty lines; print the API's error and exit on failure."""
        try:
            with self.http.stream("GET", path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    _print_api_error(response)
                    raise typer.Exit(1)
                yield from (line for line in response.iter_lines() if line.strip())
        except httpx.HTTPError as exc:
            err.print(f"[red]cannot reach the API at {self.http.base_url}:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None


def audit_events(client: ApiClient, params: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The audit events `GET /v1/audit` streams, oldest first."""
    for line in client.lines("/v1/audit", params):
        event: dict[str, Any] = json.loads(line)
        yield event


def print_audit(events: Iterable[dict[str, Any]], *, as_json: bool = False) -> None:
    """Print audit events as a table, or as JSON lines written as they arrive."""
    if as_json:
        for event in events:
            sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
        return
    table = Table("time", "tenant", "actor", "action", "job", "details", title="audit trail (oldest first)")
    for event in events:
        details = ", ".join(f"{k}={v}" for k, v in (event.get("details") or {}).items())
        # Values are other people's (file names, tenant names): shown as text, never as rich markup.
        table.add_row(*(Text(str(value)) for value in (event["time"], event["tenant"], event["actor"],
                                                        event["action"], event.get("job") or "", details)))
    console.print(table if table.row_count else "no audit events")


def _print_api_error(response: httpx.Response) -> None:
    try:
        body = response.json()
    except ValueError:
        err.print(f"[red]HTTP {response.status_code}[/red] {escape(response.text[:500])}")
        return
    err.print(f"[red]HTTP {response.status_code}:[/red] {escape(str(body.get('detail')))}")
    errors = body.get("errors") or []
    if errors:
        table = Table("row", "column", "value", "message", title=f"{body.get('total_errors', len(errors))} error(s)")
        for item in errors[:50]:
            cells = (item.get(k) for k in ("row", "column", "value", "message"))
            table.add_row(*(Text("" if cell is None else str(cell)) for cell in cells))  # the file's values, as text
        err.print(table)


def watch(client: ApiClient, job_id: str, *, poll_s: float = 0.5) -> dict[str, Any]:
    """Show a live progress bar until the job ends; returns the final job record."""
    job = client.request("GET", f"/v1/jobs/{job_id}").json()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"job {job_id[:8]}", total=job["total"], detail="")
        while True:
            done = job["total"] - job["pending"]  # every terminal user: unchanged and dry-run outcomes too
            counts = f"[green]{job['succeeded']} ok[/green] [red]{job['failed']} failed[/red]"
            paused = pause_line(job, time.time())
            if paused:  # no rate or ETA while paused: nothing moves until the cause is gone
                detail = f"{counts} [yellow]{escape(paused)}[/yellow]"
            else:
                eta = f"ETA {job['eta_s']:.0f}s" if job.get("eta_s") is not None else ""
                detail = f"{counts} {job['rate_per_s']:.0f}/s {eta} [dim]429s: {job['throttled']}[/dim]"
                if job.get("waiting_for_replication"):
                    detail += f" [cyan]{job['waiting_for_replication']} not replicated yet[/cyan]"
            progress.update(task, completed=done, detail=detail)
            # A scheduled job's remaining rows wait for their day: nothing more to watch now.
            if job["status"] in TERMINAL_JOB_STATUSES or job["status"] == JobStatus.SCHEDULED:
                break
            time.sleep(poll_s)
            job = client.request("GET", f"/v1/jobs/{job_id}").json()
    return dict(job)


def pause_line(job: dict[str, Any], now: float) -> str | None:
    """`paused: <reason> — <message>, next probe in N s` for a paused job (how it resumes), else None."""
    if job.get("status") != "paused":
        return None
    line = f"paused: {job.get('paused_reason')}"
    if job.get("paused_message"):
        line += f" — {job['paused_message']}"
    next_probe_at = job.get("next_probe_at")
    if next_probe_at:
        wait_s = max(0.0, datetime.fromisoformat(next_probe_at.replace("Z", "+00:00")).timestamp() - now)
        line += f", next probe in {wait_s:.0f} s"
    else:
        line += f" — fix the cause, then: bulklicense resume {job['id']}"
    return line


def print_summary(job: dict[str, Any]) -> None:
    """A table of the job's counters, and why it is paused when it is."""
    plans_only = job.get("dry_run") or job.get("approval")
    columns = ("total", "would_change", "unchanged", "would_fail") if plans_only else (
        "total", "succeeded", "unchanged", "failed", "cancelled", "throttled", "retries")
    table = Table(title=f"job {job['id']} — {status_text(job)}")
    for col in columns:
        table.add_column(col, justify="right")
    table.add_row(*(str(job.get(c, 0)) for c in columns))
    console.print(table)
    paused = pause_line(job, time.time())
    if paused:
        console.print(f"[yellow]{escape(paused)}[/yellow]", highlight=False)
    approval = approval_line(job)
    if approval:
        console.print(f"[yellow]{escape(approval)}[/yellow]", highlight=False)
    print_schedule(job)


def status_text(job: dict[str, Any]) -> str:
    """The job's status as people read it: `planned, awaiting approval` for a job that waits for a decision."""
    if job.get("awaiting_approval"):
        return f"{job['status']}, awaiting approval"
    return str(job["status"])


def approval_line(job: dict[str, Any]) -> str | None:
    """Who submitted a job that waits for approval and how to decide; or the decision taken; None otherwise."""
    approval = job.get("approval")
    if not approval:
        return None
    if job.get("awaiting_approval"):
        return (f"awaiting approval: submitted by {approval['submitted_by']}; another API key decides: "
                f"bulklicense approve {job['id']}  |  bulklicense reject {job['id']} --reason ...")
    if approval.get("decision"):
        why = f": {approval['reason']}" if approval.get("reason") else ""
        run = f"; its run is job {job['run_as']}" if job.get("run_as") else ""
        return f"{approval['decision']} by {approval['by']}{why}{run}"
    return f"waits for another API key's approval once planned (submitted by {approval['submitted_by']})"


def print_jobs(jobs: Iterable[dict[str, Any]]) -> None:
    """Recent jobs as a table: id, tenant, status (awaiting approval said), users, created."""
    table = Table("job", "tenant", "status", "users", "created", title="recent jobs (newest first)")
    for job in jobs:
        kind = " (dry run)" if job.get("dry_run") else ""
        table.add_row(*(Text(str(v)) for v in (job["id"], job["tenant"], status_text(job) + kind, job["total"],
                                                job.get("created_at") or "")))
    console.print(table if table.row_count else "no jobs")


def print_schedule(job: dict[str, Any]) -> None:
    """A job's rows per day they are due, and its seat table by date (shortfalls in red)."""
    if not job.get("schedule"):
        return
    table = Table("due", "rows", title=f"rows by day ({job.get('scheduled', 0)} waiting for their day)")
    for day in job["schedule"]:
        table.add_row(day["at"] or "at submission", str(day["rows"]))
    console.print(table)
    seats = job.get("seats_by_day") or []
    if seats:
        table = Table("due", "sku", "adds", "frees", "free before", "shortfall", title="seats by date")
        for line in seats:
            short = str(line["shortfall"])
            table.add_row(line["at"] or "at submission", line["sku"], str(line["adds"]), str(line["releases"]),
                          str(line["free"]), f"[red]{short}[/red]" if line["shortfall"] else short)
        console.print(table)


def print_reading(answer: dict[str, Any]) -> None:
    """How the upload was read: mode, encoding and layout, `column → read as` for each column, lines skipped."""
    reading = answer.get("input")
    if not reading:
        return
    if reading.get("format") != "csv":
        console.print(f"read as {reading.get('format', '').upper()}, mode={reading.get('mode')}", highlight=False)
        return
    console.print(f"read as {reading.get('encoding')} CSV ({reading.get('layout')}), delimiter "
                  f"\"{reading.get('delimiter')}\", mode={reading.get('mode')}:", highlight=False)
    for column in reading.get("columns") or []:
        console.print(f"  {escape(column['column'])} → {escape(column['read_as'])}", highlight=False)
    for note in reading.get("notes") or []:
        console.print(f"  [dim]{escape(note)}[/dim]", highlight=False)


def print_plan(job: dict[str, Any]) -> None:
    """The plan: predicted failures, warnings and notes by reason, and the seat table (shortfalls in red)."""
    plan = job.get("plan") or {}
    for title, counts in (("predicted failures", plan.get("predicted_failures")), ("warnings", plan.get("warnings")),
                          ("notes", plan.get("notes"))):
        if counts:
            table = Table("reason", "users", title=title)
            for reason, n in sorted(counts.items()):
                table.add_row(reason, str(n))
            console.print(table)
    seats = plan.get("seats") or []
    if seats:
        table = Table("sku", "needed", "released", "free", "shortfall", title="seats")
        for line in seats:
            short = str(line["shortfall"])
            table.add_row(line["sku"], str(line["needed"]), str(line["released"]), str(line["free"]),
                          f"[red]{short}[/red]" if line["shortfall"] else short)
        console.print(table)


def print_scan(job: dict[str, Any]) -> None:
    """What the scan of a job built from the tenant counted: users read, found and left alone, removals per SKU."""
    scan = job.get("scan") or {}
    summary = scan.get("summary") or {}
    if not summary:
        return
    console.print(f"scan {scan.get('outcome')}: {summary.get('licensed_users', 0)} licensed users read, "
                  f"{summary.get('users', 0)} to change", highlight=False)
    for title, counts in (("found", summary.get("found")), ("left alone", summary.get("excluded")),
                          ("assignments removed", summary.get("removals"))):
        if counts:
            table = Table("", "users", title=title)
            for name, n in sorted(counts.items()):
                table.add_row(escape(str(name)), str(n))
            console.print(table)


def print_group_errors(report: dict[str, Any]) -> None:
    """The group license errors report as a table."""
    table = Table("user", "group", "sku", "error", "holds it", title=f"group license errors — {report['count']} "
                  f"in {report['groups_with_errors']} group(s){' (truncated)' if report.get('truncated') else ''}")
    for row in report.get("value", []):
        table.add_row(escape(row["userPrincipalName"]), escape(row["group"]), escape(row["sku"]), row["error"],
                      "yes" if row["holds_license"] else "no")
    console.print(table)
