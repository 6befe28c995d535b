"""End-to-end fixtures: the brokers a stack can run on (its own Redis, or a private RabbitMQ node)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.rabbitmq import PrivateRabbitMQ, rabbitmq_missing

# The brokers the crash tests run on: the stack's Redis, and RabbitMQ with quorum queues.
BROKERS = ["redis", "rabbitmq"]


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRabbitMQ]:
    """One private RabbitMQ node for the session (about 4 s to start), shared through virtual hosts."""
    missing = rabbitmq_missing()
    if missing is not None:
        pytest.skip(missing)
    node = PrivateRabbitMQ(tmp_path_factory.mktemp("rabbitmq")).start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(params=BROKERS)
def broker_url(request: pytest.FixtureRequest) -> str | None:
    """None for the stack's own Redis as the broker; else a fresh virtual host of the session's RabbitMQ."""
    if request.param == "redis":
        return None
    node: PrivateRabbitMQ = request.getfixturevalue("rabbitmq")
    return node.fresh_vhost_url()
