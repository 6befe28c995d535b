"""The API in-process against a real Redis, with the broker send and the SKU source injected."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from config import Settings, key_label

CORPUS = Path(__file__).parent.parent / "corpus"
ALL_KEY = "key-all-tenants-0001"
SIM_KEY = "key-sim-only-00001"
OTHER_KEY = "key-other-only-0001"
# Named as configured below: two keys by name, one in the older unnamed form.
ALL_NAME = "admin"
SIM_NAME = "hr-portal"
OTHER_NAME = key_label(OTHER_KEY)


def write_tenants(tmp: Path) -> Path:
    path = tmp / "tenants.toml"
    path.write_text(
        "".join(
            f'[tenants.{name}]\ntenant_id = "t-{name}"\nclient_id = "c-{name}"\nclient_secret = "s3cret-{name}"\n'
            for name in ("sim", "other")
        )
    )
    return path


class Sent(list[tuple[str, int, float]]):
    """Chunk tasks the API put on the (injected) broker."""


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


def auth(key: str = ALL_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
