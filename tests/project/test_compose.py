"""The deployment sample: nothing published beyond this host's loopback, and the API can be given its metrics token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def services() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return dict(data["services"])


def test_every_published_port_is_on_loopback_only() -> None:
    """L12: Flower has no login and the API speaks plain HTTP: neither is published on every interface."""
    published = {name: service.get("ports", []) for name, service in services().items()}
    assert published["api"] and published["flower"]
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_the_api_passes_its_metrics_token_on() -> None:
    environment = services()["api"]["environment"]
    assert environment["BULKLICENSE_METRICS_TOKEN"] == "${BULKLICENSE_METRICS_TOKEN:-}"
    assert environment["BULKLICENSE_API_KEYS"].startswith("${BULKLICENSE_API_KEYS:?")  # the shared settings stay
