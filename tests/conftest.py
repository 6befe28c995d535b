"""Shared fixtures: a private real Redis server per test session; the timeout of slow tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from cli.localstack import EmbeddedRedis

# The default timeout (pyproject) guards the fast tests; a slow test that sets none gets this.
SLOW_TEST_TIMEOUT_S = 120


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give each slow test without a timeout of its own SLOW_TEST_TIMEOUT_S."""
    for item in items:
        if item.get_closest_marker("slow") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT_S))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A real redis-server for this test session, on a free port."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """A clean database on the session's Redis server."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client to the clean database."""
    client = redis.Redis.from_url(redis_url, decode_responses=False)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built in tests see only what the test sets, not the developer's BULKLICENSE_* env."""
    for name in list(os.environ):
        if name.startswith("BULKLICENSE_"):
            monkeypatch.delenv(name)
