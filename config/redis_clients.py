"""Every Redis client of the product, made here: to the server of the URL, or to the primary Sentinel names.

With `BULKLICENSE_REDIS_SENTINELS`, clients ask the sentinels where the primary is (redis-py's
Sentinel support) and ask again when a connection to it fails, so after a failover they follow the
promoted replica; a connection that finds a demoted primary (read-only) is dropped the same way.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.connection import parse_url
from redis.sentinel import Sentinel

from config.settings import Settings

# How long a sentinel may take to answer "where is the primary" before the next one is asked.
SENTINEL_TIMEOUT_S = 2.0


def redis_client(settings: Settings, **options: Any) -> redis.Redis:
    """A client to the job store's Redis; `options` are redis-py connection options (timeouts, retry, ...)."""
    tls = settings.redis_options(settings.redis_url)
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **tls, **options)
    assert settings.redis_sentinel_master is not None  # the settings require both
    sentinel = Sentinel(list(settings.redis_sentinels),  # type: ignore[no-untyped-call]
                        sentinel_kwargs=sentinel_connection_options(settings))
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        settings.redis_sentinel_master, redis_class=redis.Redis, **primary_connection_options(settings), **options)
    return client


def primary_connection_options(settings: Settings) -> dict[str, Any]:
    """What the URL says of the primary behind the sentinels: database, credentials, TLS (not its address)."""
    parsed: dict[str, Any] = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    options = {key: parsed[key] for key in ("db", "username", "password") if parsed.get(key) is not None}
    if settings.redis_tls:
        options.update(ssl=True, **settings.redis_options(settings.redis_url))
    return options


def sentinel_connection_options(settings: Settings) -> dict[str, Any]:
    """How to talk to the sentinels themselves: their password, and TLS when the URL is `rediss://`."""
    options: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S}
    if settings.redis_sentinel_password is not None:
        options["password"] = settings.redis_sentinel_password.get_secret_value()
    if settings.redis_tls:
        options.update(ssl=True, **settings.redis_options(settings.redis_url))
    return options
