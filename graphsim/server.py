"""Running the simulator: TLS material, a uvicorn server in a background thread, the info and profile."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from graphsim.app import DropFilter, SimApp, create_app
from graphsim.config import SimConfig, resolve_read_limit
from graphsim.fixture import AppDef
from graphsim.permissions import ASSIGN_LICENSES, WRITE_MEMBERS, WRITE_USERS
from graphsim.pki import PkiFiles, ensure_pki, thumbprints
from graphsim.tenant import Tenant

_START_TIMEOUT_S = 20.0


def _toml_str(value: str) -> str:
    # A TOML basic string; JSON's escaping is a valid subset for these values.
    return json.dumps(value)


def write_profile(path: Path, name: str, info: dict[str, Any], config: SimConfig) -> None:
    """Write a `[tenants.<name>]` profile the product's settings can load."""
    limit = config.write_limit
    lines = [
        f"[tenants.{name}]",
        f"tenant_id = {_toml_str(info['tenant_id'])}",
        f"client_id = {_toml_str(info['client_id'])}",
        f"client_secret = {_toml_str(info['client_secret'])}",
        f"authority_host = {_toml_str(info['authority_host'])}",
        f"graph_url = {_toml_str(info['graph_url'])}",
        f"ca_bundle = {_toml_str(info['ca_path'])}",
        f"write_capacity = {limit.capacity if limit else _toml_str('none')}",
        f"write_period_s = {float(limit.period_s) if limit else 150.0}",
        *_read_budget(config),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def _read_budget(config: SimConfig) -> list[str]:
    """The profile's read budget: graphsim's resource-unit limit when it enforces one, else none."""
    limit = resolve_read_limit(config.read_limit, config.users)
    if limit is None:
        return [f"read_capacity_ru = {_toml_str('none')}"]
    return [f"read_capacity_ru = {limit.capacity}", f"read_period_s = {float(limit.period_s)}"]


class SimServer:
    """A graphsim instance served over HTTPS from a background thread; use as a context manager."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.info: dict[str, Any] = {}
        self.app: SimApp | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._tempdir: Path | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> SimServer:
        """Create or reuse the certificates, bind the port, serve, and wait until ready."""
        config = self.config
        if config.state_dir is not None:
            workdir = config.state_dir.resolve()
        else:
            self._tempdir = workdir = Path(tempfile.mkdtemp(prefix="graphsim-"))
        pki = ensure_pki(workdir, (config.public_host,) if config.public_host else ())
        ca_path = pki.ca_cert
        if config.ca_out is not None:
            ca_path = config.ca_out.resolve()
            ca_path.parent.mkdir(parents=True, exist_ok=True)
            if ca_path != pki.ca_cert.resolve():
                shutil.copyfile(pki.ca_cert, ca_path)

        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((config.host, config.port))
        port = sock.getsockname()[1]
        url_host = "127.0.0.1" if config.host in ("0.0.0.0", "") else config.host
        if config.public_host:
            url_host = config.public_host  # the name other hosts (containers) reach us by
        if ":" in url_host:
            url_host = f"[{url_host}]"
        base_url = f"https://{url_host}:{port}"

        app = create_app(config, base_url, pki.app_cert_pem)
        self.app = app
        uv_config = uvicorn.Config(
            app, ssl_certfile=str(pki.server_cert), ssl_keyfile=str(pki.server_key), lifespan="off",
            log_config=None, log_level=config.log_level, access_log=False, server_header=False,
            http="httptools", timeout_keep_alive=30, backlog=2048,
        )
        error_logger = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, DropFilter) for f in error_logger.filters):
            error_logger.addFilter(DropFilter())
        self._server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"graphsim:{port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("graphsim did not start")
            time.sleep(0.01)
        sock.close()  # the server holds its own duplicate

        self.info = self._build_info(app, base_url, port, ca_path, pki)
        if config.profile_out is not None:
            write_profile(config.profile_out.resolve(), config.profile_name, self.info, config)
        return self

    def stop(self) -> None:
        """Stop serving and remove the temporary state directory."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server, self._thread = None, None
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    @property
    def alive(self) -> bool:
        """Whether the server thread is still serving."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- views ---------------------------------------------------------------------------------------

    def _build_info(self, app: SimApp, base_url: str, port: int, ca_path: Path, pki: PkiFiles) -> dict[str, Any]:
        config = self.config
        apps = app.fixture.apps
        main = next((a for a in apps if a.roles & ASSIGN_LICENSES), apps[0])
        readonly: AppDef | None = next((a for a in apps if not a.roles & (ASSIGN_LICENSES | WRITE_USERS)), None)
        least: AppDef | None = next((a for a in apps if a is not main and a.roles & ASSIGN_LICENSES
                                     and not a.roles & (WRITE_USERS | WRITE_MEMBERS)), None)
        groups_admin: AppDef | None = next((a for a in apps if a.roles & WRITE_MEMBERS), None)
        sha1, sha256 = thumbprints(pki.app_cert.read_bytes())
        tenant_id = app.fixture.tenant_id
        return {
            "graph_url": base_url,
            "authority": f"{base_url}/{tenant_id}",
            "authority_host": base_url,
            "tenant_id": tenant_id,
            "tenant_domain": app.fixture.domain,
            "client_id": main.client_id,
            "client_secret": main.secret,
            "readonly_client_id": readonly.client_id if readonly else None,
            "readonly_client_secret": readonly.secret if readonly else None,
            "license_only_client_id": least.client_id if least else None,
            "license_only_client_secret": least.secret if least else None,
            "groups_admin_client_id": groups_admin.client_id if groups_admin else None,
            "groups_admin_client_secret": groups_admin.secret if groups_admin else None,
            "cert_path": str(pki.app_cert),
            "key_path": str(pki.app_key),
            "cert_bundle_path": str(pki.app_bundle),
            "cert_thumbprint": sha1,
            "cert_thumbprint_sha256": sha256,
            "ca_path": str(ca_path),
            "profile_path": str(config.profile_out.resolve()) if config.profile_out else None,
            "profile_name": config.profile_name,
            "control_url": f"{base_url}/_sim" if config.control else None,
            "port": port,
            "users": len(app.fixture.users),
            "groups": len(app.fixture.groups),
            "seed": config.seed,
            "write_limit": str(config.write_limit) if config.write_limit else "none",
            "tenant_write_limit": str(config.tenant_write_limit) if config.tenant_write_limit else "none",
            "read_limit": str(resolve_read_limit(config.read_limit, len(app.fixture.users)) or "none"),
        }

    def _require_app(self) -> SimApp:
        if self.app is None:
            raise RuntimeError("the simulator is not started")
        return self.app

    @property
    def graph_url(self) -> str:
        """Graph's base URL, without /v1.0."""
        return str(self.info["graph_url"])

    @property
    def authority(self) -> str:
        """The MSAL authority: https://host:port/<tenant id>."""
        return str(self.info["authority"])

    @property
    def ca_path(self) -> str:
        """PEM file of the CA clients must trust."""
        return str(self.info["ca_path"])

    @property
    def control_url(self) -> str | None:
        """Base URL of the control surface, or None when it is off."""
        value = self.info.get("control_url")
        return None if value is None else str(value)

    @property
    def state(self) -> Tenant:
        """The live in-memory tenant (replaced by a reset, so read it afresh)."""
        return self._require_app().state

    def issue_token(self, client_id: str | None = None, lifetime_s: float = 3600.0) -> str:
        """A Graph access token for an app of the fixture, bypassing the token endpoint (tests only)."""
        app = self._require_app()
        wanted = (client_id or str(self.info["client_id"])).lower()
        registered = next(a for a in app.fixture.apps if a.client_id.lower() == wanted)
        return app.issuer.issue(registered.client_id.lower(), registered.roles, time.time(), lifetime_s)
