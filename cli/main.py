"""The `bulklicense` command line (typer + rich)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer
import uvicorn

from api.app import create_app
from cli.client import ApiClient, console, err, print_summary, watch
from cli.demo import run_demo
from config import ConfigError, Settings, get_settings
from worker.celery_app import create_celery_app

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


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _client(settings: Settings, api_url: str | None, api_key: str | None) -> ApiClient:
    key = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    if not key:
        err.print("[red]no API key:[/red] pass --api-key or set BULKLICENSE_API_KEY")
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
    settings = _settings(need_tenants=True)
    _setup_logging(settings.log_level)
    celery = create_celery_app(settings)
    argv = ["worker", "-P", "threads", "-c", str(concurrency or settings.worker_concurrency),
            "--loglevel", settings.log_level, "--without-gossip", "--without-mingle", *ctx.args]
    celery.worker_main(argv)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def simulate(ctx: typer.Context) -> None:
    """Run graphsim, the local Microsoft Graph simulator (`bulklicense simulate --help` for options)."""
    # The simulator is a test and demo tool: run as its own program, never imported by the product.
    os.execv(sys.executable, [sys.executable, "-m", "graphsim", *ctx.args])


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
def resume(job: str, api_url: str = typer.Option(None), api_key: str = typer.Option(None)) -> None:
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
