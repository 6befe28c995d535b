"""`python -m graphsim`: the JSON line, the CA and profile it writes, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx

from config import load_tenants
from graphsim.cli import build_parser, config_from_args
from graphsim.config import SimConfig
from graphsim.server import SimServer


def test_cli_json_line_profile_and_sigterm(tmp_path: Path) -> None:
    profile = tmp_path / "sim.toml"
    ca = tmp_path / "ca.pem"
    # The context manager closes both pipes however the test ends.
    with subprocess.Popen(
        [sys.executable, "-m", "graphsim", "--port", "0", "--users", "50", "--seed", "3", "--control",
         "--write-limit", "100/10", "--ca-out", str(ca), "--profile-out", str(profile),
         "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:
        try:
            assert process.stdout is not None
            info = json.loads(process.stdout.readline())
            assert {"graph_url", "authority", "tenant_id", "client_id", "client_secret", "ca_path", "profile_path",
                    "control_url"} <= set(info)
            assert info["graph_url"].startswith("https://127.0.0.1:") and not info["graph_url"].endswith("/v1.0")
            assert info["authority"] == f"{info['graph_url']}/{info['tenant_id']}"
            assert Path(info["ca_path"]) == ca.resolve()

            # What a script does with the line: get a token, call Graph, trusting only the CA file.
            tls = ssl.create_default_context(cafile=info["ca_path"])
            token = httpx.post(f"{info['authority']}/oauth2/v2.0/token", verify=tls, data={
                "grant_type": "client_credentials", "client_id": info["client_id"],
                "client_secret": info["client_secret"], "scope": "https://graph.microsoft.com/.default"},
            ).json()["access_token"]
            users = httpx.get(f"{info['graph_url']}/v1.0/users?$top=999", verify=tls,
                              headers={"Authorization": f"Bearer {token}"}).json()["value"]
            assert len(users) == 50

            tenant = load_tenants(profile)["sim"]
            assert tenant.tenant_id == info["tenant_id"] and tenant.client_id == info["client_id"]
            assert tenant.graph_url == info["graph_url"] and tenant.authority == info["authority"]
            assert tenant.write_capacity == 100 and tenant.write_period_s == 10.0
            assert tenant.ca_bundle == ca.resolve()
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read()


def test_profile_unlimited(tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    with SimServer(SimConfig(users=1, write_limit=None, profile_out=profile, profile_name="lab")):
        tenant = load_tenants(profile)["lab"]
    assert tenant.write_capacity is None


def test_group_and_lifecycle_options() -> None:
    args = build_parser().parse_args(["--group-licensed-share", "0.3", "--group-license-delay-s", "0",
                                      "--no-premium"])
    config = config_from_args(args)
    assert (config.group_licensed_share, config.group_license_delay_s, config.premium) == (0.3, 0.0, False)
    defaults = config_from_args(build_parser().parse_args([]))
    assert (defaults.group_licensed_share, defaults.group_license_delay_s, defaults.premium) == (0.0, 1.0, True)
