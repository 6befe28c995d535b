"""Fixtures of the API and CLI tests: the API in-process against a real Redis, the broker send and the SKU source
injected; the same API served over HTTP for the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from config import Settings
from tests.api.helpers import ALL_KEY, ALL_NAME, CORPUS, OTHER_KEY, SIM_KEY, SIM_NAME, Sent, served, write_tenants


@pytest.fixture
def subscribed_skus() -> list[dict[str, Any]]:
    """The corpus tenant's SKUs with seats to spare (seat shortages have tests of their own)."""
    skus = list(json.loads((CORPUS / "subscribed_skus.json").read_text())["value"])
    for sku in skus:
        sku["prepaidUnits"] = {**sku["prepaidUnits"], "enabled": sku["consumedUnits"] + 1000}
    return skus


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        tenants_file=write_tenants(tmp_path),
        api_keys=f"{ALL_NAME}={ALL_KEY}:*,{SIM_NAME}={SIM_KEY}:sim,{OTHER_KEY}:other",  # type: ignore[arg-type]
        max_rows=1000,
        max_upload_bytes=2 * 1024 * 1024,
        max_json_bytes=1024 * 1024,
        chunk_size=10,
    )


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def client(settings: Settings, redis_client: redis.Redis, sent: Sent,
           subscribed_skus: list[dict[str, Any]]) -> Iterator[TestClient]:
    app = create_app(
        settings,
        redis_client=redis_client,
        send=lambda job, n, countdown: sent.append((job, n, countdown)),
        fetch_skus=lambda tenant: subscribed_skus,
        ceiling_for=lambda tenant: 20.0,
    )
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def api_url(settings: Settings, redis_client: redis.Redis, subscribed_skus: list[dict[str, Any]]) -> Iterator[str]:
    """The API on a local port, served by uvicorn in a thread."""
    app = create_app(settings, redis_client=redis_client, send=lambda job, n, countdown: None,
                     fetch_skus=lambda tenant: subscribed_skus, ceiling_for=lambda tenant: 20.0)
    with served(app) as url:
        yield url
