"""The `bulklicense` command line (typer + rich)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from config import ConfigError, Settings, get_settings

app = typer.Typer(help="Bulk Microsoft 365 license assignment through Microsoft Graph.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

TERMINAL = {"completed", "completed_with_errors", "cancelled", "failed"}


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


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class ApiClient:
    """A small client for our own HTTP API."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; print the API's error and exit on failure."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            err.print(f"[red]cannot reach the API at {self.http.base_url}:[/red] {exc}")
            raise typer.Exit(2) from None
        if response.status_code >= 400:
            _print_api_error(response)
            raise typer.Exit(1)
        return response


def _print_api_error(response: httpx.Response) -> None:
    try:
        body = response.json()
    except ValueError:
        err.print(f"[red]HTTP {response.status_code}[/red] {response.text[:500]}")
        return
    err.print(f"[red]HTTP {response.status_code}:[/red] {body.get('detail')}")
    errors = body.get("errors") or []
    if errors:
        table = Table("row", "column", "value", "message", title=f"{body.get('total_errors', len(errors))} error(s)")
        for item in errors[:50]:
            cells = (item.get(k) for k in ("row", "column", "value", "message"))
            table.add_row(*("" if cell is None else str(cell) for cell in cells))
        err.print(table)


def _client(settings: Settings, api_url: str | None, api_key: str | None) -> ApiClient:
    key = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    if not key:
        err.print("[red]no API key:[/red] pass --api-key or set BULKLICENSE_API_KEY")
        raise typer.Exit(2)
    return ApiClient(api_url or settings.api_url, key)


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
            done = job["succeeded"] + job["failed"] + job["cancelled"]
            eta = f"ETA {job['eta_s']:.0f}s" if job.get("eta_s") is not None else ""
            detail = (f"[green]{job['succeeded']} ok[/green] [red]{job['failed']} failed[/red] "
                      f"{job['rate_per_s']:.0f}/s {eta} [dim]429s: {job['throttled']}[/dim]")
            progress.update(task, completed=done, detail=detail)
            if job["status"] in TERMINAL:
                break
            time.sleep(poll_s)
            job = client.request("GET", f"/v1/jobs/{job_id}").json()
    return dict(job)


def print_summary(job: dict[str, Any]) -> None:
    """A table of the job's final counters."""
    table = Table(title=f"job {job['id']} — {job['status']}")
    for col in ("total", "succeeded", "failed", "cancelled", "throttled", "retries"):
        table.add_column(col, justify="right")
    table.add_row(*(str(job[c]) for c in ("total", "succeeded", "failed", "cancelled", "throttled", "retries")))
    console.print(table)


@app.command()
def api(
    host: str = typer.Option(None, help="Interface to bind (default from BULKLICENSE_API_HOST)."),
    port: int = typer.Option(None, help="Port (default from BULKLICENSE_API_PORT)."),
) -> None:
    """Run the HTTP API."""
    import uvicorn

    from jobs.api import create_app

    settings = _settings(need_tenants=True)
    if not settings.api_keys:
        err.print("[red]configuration error:[/red] BULKLICENSE_API_KEYS: set at least one key"
                  " (KEY:tenant|tenant or KEY:*)")
        raise typer.Exit(2)
    _setup_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=host or settings.api_host, port=port or settings.api_port,
                log_level=settings.log_level.lower(), access_log=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    concurrency: int = typer.Option(None, "--concurrency", "-c", help="Chunk tasks run at once (threads)."),
) -> None:
    """Run a Celery worker (other options are passed to Celery)."""
    from worker.celery_app import create_celery_app

    settings = _settings(need_tenants=True)
    _setup_logging(settings.log_level)
    celery = create_celery_app(settings)
    argv = ["worker", "-P", "threads", "-c", str(concurrency or settings.worker_concurrency),
            "--loglevel", settings.log_level, "--without-gossip", "--without-mingle", *ctx.args]
    celery.worker_main(argv)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def simulate(ctx: typer.Context) -> None:
    """Run graphsim, the local Microsoft Graph simulator (`bulklicense simulate --help` for options)."""
    # The simulator is a test and demo tool: imported only when asked for, never by the product.
    from graphsim.cli import main as graphsim_main

    graphsim_main(list(ctx.args))


@app.command()
def submit(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="CSV or JSON file."),
    tenant: str = typer.Option(None, help="Tenant profile (CSV uploads)."),
    wait: bool = typer.Option(False, "--wait", help="Show live progress until the job ends."),
    api_url: str = typer.Option(None, help="API base URL (default BULKLICENSE_API_URL)."),
    api_key: str = typer.Option(None, help="API key (default BULKLICENSE_API_KEY)."),
) -> None:
    """Submit a job; with --wait, exit 0 only if every user succeeded."""
    settings = _settings()
    client = _client(settings, api_url, api_key)
    is_json = file.suffix.lower() == ".json"
    with file.open("rb") as fh:
        response = client.request(
            "POST", "/v1/jobs", content=fh,
            params={"tenant": tenant} if tenant else None,
            headers={"Content-Type": "application/json" if is_json else "text/csv"},
        )
    accepted = response.json()
    console.print(f"job [bold]{accepted['id']}[/bold] accepted: {accepted['total']} users")
    for warning in accepted.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if not wait:
        return
    job = watch(client, accepted["id"])
    print_summary(job)
    raise typer.Exit(0 if job["succeeded"] == job["total"] else 1)


@app.command()
def status(
    job: str,
    watch_: bool = typer.Option(False, "--watch", help="Follow until the job ends."),
    api_url: str = typer.Option(None),
    api_key: str = typer.Option(None),
) -> None:
    """Show a job's progress."""
    client = _client(_settings(), api_url, api_key)
    record = watch(client, job) if watch_ else client.request("GET", f"/v1/jobs/{job}").json()
    print_summary(record)
    console.print_json(data=record)


@app.command()
def results(
    job: str,
    status: str = typer.Option(None, "--status", help="succeeded, failed, cancelled or pending."),
    output: Path = typer.Option(None, "-o", "--output", help="Write CSV here (default: stdout)."),
    api_url: str = typer.Option(None),
    api_key: str = typer.Option(None),
) -> None:
    """Download per-user results as CSV."""
    client = _client(_settings(), api_url, api_key)
    params: dict[str, str] = {"format": "csv"}
    if status:
        params["status"] = status
    response = client.request("GET", f"/v1/jobs/{job}/results", params=params)
    if output:
        output.write_bytes(response.content)
        console.print(f"results written to {output}")
    else:
        sys.stdout.write(response.text)


@app.command()
def cancel(job: str, api_url: str = typer.Option(None), api_key: str = typer.Option(None)) -> None:
    """Cancel a job; returns once no further write for it can be sent."""
    client = _client(_settings(), api_url, api_key)
    console.print_json(data=client.request("POST", f"/v1/jobs/{job}/cancel").json())


@app.command()
def demo(
    users: int = typer.Option(1000, help="Users in the generated onboarding batch."),
    keep: bool = typer.Option(False, help="Keep the demo's working folder."),
) -> None:
    """Run everything locally: Redis, graphsim, a worker, the API, and a real onboarding batch."""
    from jobs.demo import run_demo

    raise typer.Exit(run_demo(users=users, keep=keep, console=console))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
