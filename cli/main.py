"""The `bulklicense` command line (typer + rich)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import uvicorn
from rich.markup import escape
from rich.text import Text

from api.app import create_app
from cli.alongside import follow_parent, start_notifier, stop_child
from cli.client import (
    ApiClient,
    audit_events,
    console,
    err,
    print_audit,
    print_group_errors,
    print_jobs,
    print_plan,
    print_reading,
    print_scan,
    print_summary,
    watch,
)
from cli.demo import run_demo
from config import ConfigError, LogFormat, Settings, get_settings
from config.logs import configure_logging
from jobs.models import Assignment, JobStatus, SeatPolicy
from worker.celery_app import create_celery_app
from worker.producer import CHUNK_QUEUE, NOTIFY_QUEUE

app = typer.Typer(help="Bulk Microsoft 365 license assignment through Microsoft Graph.", no_args_is_help=True)


def _settings(*, need_tenants: bool = False) -> Settings:
    try:
        settings = get_settings()
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    if need_tenants and not settings.tenants:
        err.print("[red]configuration error:[/red] BULKLICENSE_TENANTS_FILE: no tenant profiles configured")
        raise typer.Exit(2)
    return settings


def _setup_logging(settings: Settings) -> None:
    configure_logging(settings)


# A key given as an option shows in `ps` and in the shell's history: the variable or the prompt do not.
API_KEY_HELP = "API key; better BULKLICENSE_API_KEY, or type it when asked (an option shows in `ps`)."


def api_key_for(option: str | None, settings: Settings, *, interactive: bool,
                ask: Callable[[], str]) -> str | None:
    """The API key: the option, else BULKLICENSE_API_KEY (environment or .env), else asked for on a terminal."""
    if option:
        return option
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    if not interactive:
        return None
    return ask().strip() or None


def _client(settings: Settings, api_url: str | None, api_key: str | None) -> ApiClient:
    key = api_key_for(api_key, settings, interactive=sys.stdin.isatty(),
                      ask=lambda: str(typer.prompt("API key", hide_input=True, err=True)))
    if not key:
        err.print("[red]no API key:[/red] set BULKLICENSE_API_KEY (or pass --api-key, which shows in `ps`)")
        raise typer.Exit(2)
    return ApiClient(api_url or settings.api_url, key)


@app.command()
def api(
    host: str = typer.Option(None, help="Interface to bind (default from BULKLICENSE_API_HOST)."),
    port: int = typer.Option(None, help="Port (default from BULKLICENSE_API_PORT)."),
) -> None:
    """Run the HTTP API."""
    settings = _settings(need_tenants=True)
    if not settings.api_keys:
        err.print("[red]configuration error:[/red] BULKLICENSE_API_KEYS: set at least one key"
                  " (NAME=KEY:tenant|tenant, NAME=KEY:* or unnamed KEY:tenants)")
        raise typer.Exit(2)
    _setup_logging(settings)
    # No log_config: uvicorn's lines go through the handler configured above, in the same format.
    uvicorn.run(create_app(settings), host=host or settings.api_host, port=port or settings.api_port,
                log_level=settings.log_level.lower(), access_log=False, log_config=None)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    concurrency: int = typer.Option(None, "--concurrency", "-c", help="Chunk tasks run at once (threads)."),
    notifications: bool | None = typer.Option(None, "--notifications/--no-notifications",
                                       help="Start a notifications worker alongside (default: when a webhook"
                                            " secret is configured)."),
) -> None:
    """Run a Celery worker for chunks, and a notifications worker beside it (other options go to Celery)."""
    settings = _settings(need_tenants=True)
    _setup_logging(settings)
    child = None
    if notifications or (notifications is None and settings.webhooks_configured()):
        child = start_notifier(os.getpid())
    try:
        _celery_worker(settings, CHUNK_QUEUE, concurrency or settings.worker_concurrency, ctx.args)
    finally:
        if child is not None:
            stop_child(child)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def notifier(
    ctx: typer.Context,
    concurrency: int = typer.Option(None, "--concurrency", "-c",
                                    help="Attempts made at once (default BULKLICENSE_WEBHOOK_CONCURRENCY)."),
    parent_pid: int | None = typer.Option(None, hidden=True, help="Stop when this process is no longer the parent."),
) -> None:
    """Run a notifications worker: job notifications, a few at a time, never in a chunk's slot."""
    settings = _settings(need_tenants=True)
    _setup_logging(settings)
    if parent_pid is not None:
        follow_parent(parent_pid)
    # Its own node name, so that it never clashes with the chunk worker's on the same host.
    name = [] if any(a.startswith("-n") for a in ctx.args) else ["-n", f"notifier-{parent_pid or os.getpid()}@%h"]
    _celery_worker(settings, NOTIFY_QUEUE, concurrency or settings.webhook_concurrency, [*name, *ctx.args])


def _celery_worker(settings: Settings, queue: str, concurrency: int, extra: list[str]) -> None:
    """Run a Celery worker (threads) on one queue."""
    celery = create_celery_app(settings)
    # Celery's start-up banner is not a log line: left out when every line must be JSON.
    quiet = ["--quiet"] if settings.log_format is LogFormat.JSON else []
    argv = [*quiet, "worker", "-P", "threads", "-c", str(concurrency), "-Q", queue,
            "--loglevel", settings.log_level, "--without-gossip", "--without-mingle", *extra]
    celery.worker_main(argv)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def simulate(ctx: typer.Context) -> None:
    """Run graphsim, the local Microsoft Graph simulator (`bulklicense simulate --help` for options)."""
    # The simulator is a test and demo tool: run as its own program, never imported by the product.
    os.execv(sys.executable, [sys.executable, "-m", "graphsim", *ctx.args])


def _upload(client: ApiClient, file: Path, tenant: str | None, params: dict[str, str]) -> dict[str, Any]:
    """POST a CSV or JSON file as a job; prints what was accepted."""
    is_json = file.suffix.lower() == ".json"
    query = {**params, **({"tenant": tenant} if tenant else {})}
    headers = {"Content-Type": "application/json" if is_json else "text/csv",
               "Content-Disposition": f'attachment; filename="{file.name}"'}
    with file.open("rb") as fh:
        accepted: dict[str, Any] = client.request("POST", "/v1/jobs", content=fh, params=query,
                                                  headers=headers).json()
    _print_accepted(accepted, "dry run" if accepted.get("dry_run") else "job")
    print_reading(accepted)
    if accepted.get("assignment") == Assignment.DIRECT:
        console.print("assignment=direct: a license a group already gives is assigned directly too")
    for warning in accepted.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    return accepted


def _print_accepted(accepted: dict[str, Any], kind: str, of: str = "") -> None:
    """`job X accepted: N users`, and that it waits for approval when it does."""
    waits = "; it plans, then waits for another API key's approval" if accepted.get("needs_approval") else ""
    console.print(f"{kind} [bold]{accepted['id']}[/bold]{of} accepted: {_users(accepted)}{waits}")


def _users(accepted: dict[str, Any]) -> str:
    """`N users`, or what a job built from a scan has instead: users not counted until its scan ends."""
    return "the users its scan of the tenant finds" if accepted.get("counted_by_scan") else f"{accepted['total']} users"


# Exit status of --wait for a job that planned and waits for another key's approval: nothing was written yet.
EXIT_AWAITING_APPROVAL = 3


def _reading_params(mode: str | None, keep_columns: str | None, assignment: Assignment | None = None) -> dict[str, str]:
    """The query parameters that say how to read the file (and how its adds must be held)."""
    return {**({"mode": mode} if mode else {}), **({"keep_columns": keep_columns} if keep_columns else {}),
            **({"assignment": assignment.value} if assignment else {})}


MODE_HELP = ("add (default): add and remove what the file says. exact (alias sync): each user ends up holding exactly "
             "the listed licenses (others held directly are removed); needed for admin center exports.")
KEEP_HELP = "Comma-separated columns to keep unread although their values name licenses."
ASSIGNMENT_HELP = ("any (default): an add a group already gives the user is left as is (noted held_via_group). "
                   "direct: assign it directly too (no further seat; the user keeps it on leaving the group).")


def _finish(client: ApiClient, job_id: str) -> None:
    """Follow a job to its end; exit 0 only if no user failed or was cancelled."""
    job = watch(client, job_id)
    print_summary(job)
    if job.get("dry_run"):
        print_plan(job)
        raise typer.Exit(0)
    if job.get("approval"):  # planned only: written once another key approves (then its run is followed)
        print_plan(job)
        raise typer.Exit(EXIT_AWAITING_APPROVAL if job.get("awaiting_approval") else 1)
    if job["status"] == JobStatus.SCHEDULED:  # the rows due now are done; the others wait for their day
        raise typer.Exit(0 if not job["failed"] and not job["cancelled"] else 1)
    raise typer.Exit(0 if job["succeeded"] + job.get("unchanged", 0) == job["total"] else 1)


@app.command()
def submit(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="CSV or JSON file."),
    tenant: str = typer.Option(None, help="Tenant profile (CSV uploads)."),
    wait: bool = typer.Option(False, "--wait", help="Show live progress until the job ends."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan only: read every user, write nothing."),
    on_seat_shortage: SeatPolicy = typer.Option(SeatPolicy.FAIL, help="fail: refuse when seats are short; "
                                                "wait: start, pause when they run out, go on when they appear."),
    mode: str = typer.Option(None, help=MODE_HELP),
    keep_columns: str = typer.Option(None, help=KEEP_HELP),
    assignment: Assignment = typer.Option(None, help=ASSIGNMENT_HELP),
    api_url: str = typer.Option(None, help="API base URL (default BULKLICENSE_API_URL)."),
    api_key: str = typer.Option(None, help=API_KEY_HELP),
) -> None:
    """Submit a job; with --wait, exit 0 only if every user succeeded (or already held what was asked)."""
    params = {"on_seat_shortage": on_seat_shortage.value, **({"dry_run": "true"} if dry_run else {}),
              **_reading_params(mode, keep_columns, assignment)}
    with _client(_settings(), api_url, api_key) as client:
        accepted = _upload(client, file, tenant, params)
        if wait or dry_run:
            _finish(client, accepted["id"])


@app.command()
def plan(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="CSV or JSON file."),
    tenant: str = typer.Option(None, help="Tenant profile (CSV uploads)."),
    mode: str = typer.Option(None, help=MODE_HELP),
    keep_columns: str = typer.Option(None, help=KEEP_HELP),
    assignment: Assignment = typer.Option(None, help=ASSIGNMENT_HELP),
    api_url: str = typer.Option(None),
    api_key: str = typer.Option(None, help=API_KEY_HELP),
) -> None:
    """Dry-run a file: how it was read, what would change, what already holds, what would fail, the seats it needs."""
    with _client(_settings(), api_url, api_key) as client:
        accepted = _upload(client, file, tenant, {"dry_run": "true", **_reading_params(mode, keep_columns, assignment)})
        _finish(client, accepted["id"])


@app.command()
def run(
    job: str = typer.Argument(..., help="A finished dry run (status planned)."),
    wait: bool = typer.Option(False, "--wait", help="Show live progress until the job ends."),
    on_seat_shortage: SeatPolicy = typer.Option(SeatPolicy.FAIL, help="fail or wait, as for submit."),
    api_url: str = typer.Option(None),
    api_key: str = typer.Option(None, help=API_KEY_HELP),
) -> None:
    """Run a dry run for real (it reads every user again: the tenant may have moved on)."""
    with _client(_settings(), api_url, api_key) as client:
        accepted = client.request("POST", f"/v1/jobs/{job}/run",
                                  params={"on_seat_shortage": on_seat_shortage.value}).json()
        _print_accepted(accepted, "job")
        if wait:
            _finish(client, accepted["id"])


@app.command()
def rollback(
    job: str = typer.Argument(..., help="A finished job (not a dry run) to undo."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan the rollback only: read every user, write nothing."),
    wait: bool = typer.Option(False, "--wait", help="Show live progress until the rollback ends."),
    on_seat_shortage: SeatPolicy = typer.Option(SeatPolicy.FAIL, help="fail or wait, as for submit."),
    api_url: str = typer.Option(None),
    api_key: str = typer.Option(None, help=API_KEY_HELP),
) -> None:
    """Return every user a job changed to its state before the job; users changed since are left alone (drifted)."""
    params = {"on_seat_shortage": on_seat_shortage.value, **({"dry_run": "true"} if dry_run else {})}
    with _client(_settings(), api_url, api_key) as client:
        accepted = client.request("POST", f"/v1/jobs/{job}/rollback", params=params).json()
        _print_accepted(accepted, "rollback dry run" if accepted.get("dry_run") else "rollback", f" of job {job}")
        for warning in accepted.get("warnings", []):
            console.print(f"[yellow]warning:[/yellow] {warning}")
        if wait or dry_run:
            _finish(client, accepted["id"])


def _scan_job(client: ApiClient, path: str, params: list[tuple[str, str]], body: dict[str, Any] | None,
              dry_run: bool, wait: bool) -> None:
    """Ask for a job built from a scan of the tenant; follow it (a dry run always) and show what the scan found."""
    accepted = client.request("POST", path, params=[*params, ("dry_run", "true" if dry_run else "false")],
                              json=body).json()
    kind = "dry run" if accepted.get("dry_run") else "job"
    console.print(f"{kind} [bold]{accepted['id']}[/bold] accepted: a worker scans the tenant (the job is planning "
                  "meanwhile)")
    if not (wait or dry_run):
        return
    job = watch(client, accepted["id"])
    print_scan(job)
    for warning in job.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    _finish(client, accepted["id"])


@app.command()
def reclaim(
    tenant: str = typer.Option(..., help="Tenant profile to scan."),
    inactive_days: int = typer.Option(90, help="Days without a successful sign-in."),
    sku: list[str] = typer.Option(None, "--sku", help="Only this SKU (repeat; default: every SKU)."),
    exclude_group: str = typer.Option(None, help="Object id of a group whose members (nested too) keep theirs."),
    exclude_upn: list[str] = typer.Option(None, "--exclude-upn", help="UPN pattern to leave alone, `*` and `?` "
                                                                      "wildcards (repeat)."),
    run_now: bool = typer.Option(False, "--run", help="Remove at once instead of a dry run (default: dry run)."),
    wait: bool = typer.Option(False, "--wait", help="Show progress until the job ends."),
    api_url: str = typer.Option(None),
    api_key: str = typer.Option(None, help=API_KEY_HELP),
) -> None:
    """Reclaim licenses of disabled users and of users who no longer sign in (a dry run unless --run)."""
    params = [("tenant", tenant), ("inactive_days", str(inactive_days)), *(("sku", s) for s in sku or ()),
              *(("exclude_upn", p) for p in exclude_upn or ())]
    body = {"exclude_group": exclude_group} if exclude_group else None
    with _client(_settings(), api_url, api_key) as client:
        _scan_job(client, "/v1/reclaim", params, body, not run_now, wait)


@app.command("cleanup-redundant")
def cleanup_redundant(
    tenant: str = typer.Option(..., help="Tenant profile to scan."),
    sku: list[str] = typer.Option(None, "--sku", help="Only this SKU (repeat; default: every SKU)."),
    run_now: bool = typer.Option(False, "--run", help="Remove at once instead of a dry run (default: dry run)."),
    wait: bool = typer.Option(False, "--wait", help="Show progress until the job ends."),
    api_url: str = typer.Option(None),
    api_key: str = typer.Option(None, help=API_KEY_HELP),
) -> None:
    """Remove direct assignments a group already gives the same (same SKU, same disabled plans): no seat moves."""
    params = [("tenant", tenant), *(("sku", s) for s in sku or ())]
    with _client(_settings(), api_url, api_key) as client:
        _scan_job(client, "/v1/cleanup/redundant-direct", params, None, not run_now, wait)


@app.command("group-errors")
def group_errors(
    tenant: str = typer.Option(..., help="Tenant profile to read."),
    limit: int = typer.Option(1000, help="At most this many rows."),
    as_json: bool = typer.Option(False, "--json", help="The API's JSON instead of a table."),
    api_url: str = typer.Option(None),
    api_key: str = typer.Option(None, help=API_KEY_HELP),
) -> None:
    """Users whose license from a group is in error: the group, the SKU and Graph's reason."""
    with _client(_settings(), api_url, api_key) as client:
        report = client.request("GET", f"/v1/tenants/{tenant}/group-license-errors",
                                params={"limit": str(limit)}).json()
    if as_json:
        console.print_json(data=report)
        return
    print_group_errors(report)


@app.command()
def status(
    job: str,
    watch_: bool = typer.Option(False, "--watch", help="Follow until the job ends."),
    api_url: str = typer.Option(None),
    api_key: str = typer.Option(None, help=API_KEY_HELP),
) -> None:
    """Show a job's progress."""
    with _client(_settings(), api_url, api_key) as client:
        record = watch(client, job) if watch_ else client.request("GET", f"/v1/jobs/{job}").json()
    print_summary(record)
    if record.get("plan"):
        print_reading(record)
        print_plan(record)
    console.print_json(data=record)


@app.command()
def results(
    job: str,
    status: str = typer.Option(None, "--status", help="succeeded, failed, cancelled, unchanged, would_change, "
                                                      "would_fail, pending or scheduled."),
    output: Path = typer.Option(None, "-o", "--output", help="Write CSV here (default: stdout)."),
    api_url: str = typer.Option(None),
    api_key: str = typer.Option(None, help=API_KEY_HELP),
) -> None:
    """Download per-user results as CSV."""
    params: dict[str, str] = {"format": "csv"}
    if status:
        params["status"] = status
    with _client(_settings(), api_url, api_key) as client:
        response = client.request("GET", f"/v1/jobs/{job}/results", params=params)
    if output:
        output.write_bytes(response.content)
        console.print(f"results written to {output}")
    else:
        sys.stdout.write(response.text)


@app.command()
def cancel(job: str, api_url: str = typer.Option(None),
           scheduled_only: bool = typer.Option(False, "--scheduled-only",
                                               help="Cancel only the rows waiting for their day; the others go on."),
           api_key: str = typer.Option(None, help=API_KEY_HELP)) -> None:
    """Cancel a job; returns once no further write for it can be sent. Rows waiting for their day are cancelled."""
    params = {"scheduled_only": "true"} if scheduled_only else {}
    with _client(_settings(), api_url, api_key) as client:
        console.print_json(data=client.request("POST", f"/v1/jobs/{job}/cancel", params=params).json())


@app.command()
def approve(
    job: str = typer.Argument(..., help="A job that waits for approval (planned, awaiting approval)."),
    wait: bool = typer.Option(False, "--wait", help="Show the run's live progress until it ends."),
    api_url: str = typer.Option(None),
    api_key: str = typer.Option(None, help=API_KEY_HELP),
) -> None:
    """Approve a job another API key submitted: its run starts (it reads every user again)."""
    with _client(_settings(), api_url, api_key) as client:
        accepted = client.request("POST", f"/v1/jobs/{job}/approve").json()
        console.print(f"job {job} approved: its run, job [bold]{accepted['id']}[/bold], started with"
                      f" {_users(accepted)}")
        if wait:
            _finish(client, accepted["id"])


@app.command()
def reject(
    job: str = typer.Argument(..., help="A job that waits for approval."),
    reason: str = typer.Option(None, "--reason", help="Why (shown with the job and kept in the audit trail)."),
    api_url: str = typer.Option(None),
    api_key: str = typer.Option(None, help=API_KEY_HELP),
) -> None:
    """Reject a job another API key submitted: it ends cancelled, nothing written, its seats released."""
    with _client(_settings(), api_url, api_key) as client:
        answer = client.request("POST", f"/v1/jobs/{job}/reject", json={"reason": reason}).json()
    why = f": {answer['reason']}" if answer.get("reason") else ""
    console.print(Text(f"job {job} rejected by {answer['by']}{why}"))


@app.command()
def jobs(
    awaiting: bool = typer.Option(False, "--awaiting", help="Only jobs awaiting approval."),
    limit: int = typer.Option(50, help="At most this many (newest first)."),
    api_url: str = typer.Option(None),
    api_key: str = typer.Option(None, help=API_KEY_HELP),
) -> None:
    """List recent jobs the key may see, with their status (`planned, awaiting approval` for those that wait)."""
    with _client(_settings(), api_url, api_key) as client:
        found = client.request("GET", "/v1/jobs", params={"limit": limit}).json()["value"]
    print_jobs(j for j in found if j.get("awaiting_approval") or not awaiting)


@app.command()
def audit(
    tenant: str = typer.Option(None, help="Only this tenant profile (default: every one the key may see)."),
    since: str = typer.Option(None, help="From this time: ISO-8601 (UTC unless it has an offset) or epoch seconds."),
    until: str = typer.Option(None, help="Up to this time (same forms); both bounds are included."),
    job: str = typer.Option(None, help="Only this job's events."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line instead of a table."),
    api_url: str = typer.Option(None),
    api_key: str = typer.Option(None, help=API_KEY_HELP),
) -> None:
    """Show the audit trail (submissions, cancels, refused keys, job events), oldest first."""
    filters = {"tenant": tenant, "since": since, "until": until, "job": job}
    with _client(_settings(), api_url, api_key) as client:
        print_audit(audit_events(client, {k: v for k, v in filters.items() if v}), as_json=as_json)


@app.command()
def resume(job: str, api_url: str = typer.Option(None),
           api_key: str = typer.Option(None, help=API_KEY_HELP)) -> None:
    """Resume a paused job (after fixing the tenant profile, granting the app's permission or buying seats)."""
    client = _client(_settings(), api_url, api_key)
    console.print_json(data=client.request("POST", f"/v1/jobs/{job}/resume").json())


@app.command()
def demo(
    users: int = typer.Option(1000, help="Users in the generated onboarding batch."),
    keep: bool = typer.Option(False, help="Keep the demo's working folder."),
) -> None:
    """Run everything locally: Redis, graphsim, a worker, the API, and a real onboarding batch."""
    raise typer.Exit(run_demo(users=users, keep=keep, console=console))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
