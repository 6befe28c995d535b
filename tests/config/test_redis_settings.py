"""Settings for Redis Sentinel, replica waits and the RabbitMQ broker, and the one factory of Redis clients."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from redis.sentinel import SentinelConnectionPool

from config import ConfigError, Settings, get_settings
from config.logs import secrets_of
from config.redis_clients import redis_client
from worker.producer import broker_options

SENTINELS = "10.0.0.1:26380, sentinel-2 ,[fd00::3]:26381"


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_sentinels_are_host_port_pairs_with_the_default_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULKLICENSE_REDIS_SENTINELS", SENTINELS)
    monkeypatch.setenv("BULKLICENSE_REDIS_SENTINEL_MASTER", "bulklicense")
    got = get_settings(_env_file=None)
    assert got.redis_sentinels == (("10.0.0.1", 26380), ("sentinel-2", 26379), ("fd00::3", 26381))
    for bad in ("10.0.0.1:http", "10.0.0.1:0", ":26379", "[fd00::3]:x"):
        monkeypatch.setenv("BULKLICENSE_REDIS_SENTINELS", bad)
        with pytest.raises(ConfigError, match="BULKLICENSE_REDIS_SENTINELS: .*is not host:port"):
            get_settings(_env_file=None)


def test_sentinels_and_their_master_name_go_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULKLICENSE_REDIS_SENTINELS", SENTINELS)
    with pytest.raises(ConfigError, match="set both or neither"):
        get_settings(_env_file=None)
    monkeypatch.delenv("BULKLICENSE_REDIS_SENTINELS")
    monkeypatch.setenv("BULKLICENSE_REDIS_SENTINEL_MASTER", "bulklicense")
    with pytest.raises(ConfigError, match="set both or neither"):
        get_settings(_env_file=None)


def test_with_sentinel_the_broker_is_kombus_sentinel_transport_with_the_urls_credentials() -> None:
    got = settings(redis_url="rediss://:pa%40ss@ignored.example:6380/2", redis_sentinels="s1:26379,s2:26380",
                   redis_sentinel_master="bulklicense", redis_sentinel_password="sentinel-pw")
    assert got.broker_is_store and not got.broker_is_amqp
    assert got.effective_broker_url == "sentinel://:pa%40ss@s1:26379/2;sentinel://:pa%40ss@s2:26380/2"
    assert got.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": None}
    assert broker_options(got)["broker_transport_options"] == {
        "visibility_timeout": got.visibility_timeout_s, "master_name": "bulklicense",
        "sentinel_kwargs": {"password": "sentinel-pw"}}
    assert "sentinel-pw" in secrets_of(got) and "pa@ss" in secrets_of(got)
    assert "sentinel-pw" not in repr(got)


def test_a_rabbitmq_broker_confirms_publishes_and_has_no_visibility_timeout() -> None:
    got = settings(broker_url="amqp://user:pw@rabbit.example:5672/bulk")
    assert got.broker_is_amqp and not got.broker_is_store
    assert got.effective_broker_url == "amqp://user:pw@rabbit.example:5672/bulk"
    assert broker_options(got) == {"broker_transport_options": {"confirm_publish": True}}
    assert got.broker_delivery_limit == 10
    # With Sentinel for the job store and RabbitMQ as the broker, Sentinel stays with Redis.
    both = settings(broker_url="amqp://rabbit.example//", redis_sentinels="s1", redis_sentinel_master="m")
    assert both.effective_broker_url == "amqp://rabbit.example//"
    assert "master_name" not in broker_options(both)["broker_transport_options"]


def test_writes_wait_for_one_replica_with_sentinel_unless_told_otherwise() -> None:
    assert settings().wait_replicas == 0
    assert settings(redis_sentinels="s1", redis_sentinel_master="m").wait_replicas == 1
    assert settings(redis_sentinels="s1", redis_sentinel_master="m", redis_wait_replicas=0).wait_replicas == 0
    assert settings(redis_wait_replicas=2).wait_replicas == 2


def test_without_sentinel_clients_go_to_the_urls_server_with_its_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    client = redis_client(settings(redis_url="rediss://:pw@redis.example:6380/3", redis_ca_file=ca),
                          socket_timeout=7)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("redis.example", 6380, 3, "pw")
    assert (kwargs["ssl_cert_reqs"], kwargs["ssl_ca_certs"], kwargs["socket_timeout"]) == ("required", str(ca), 7)


def test_with_sentinel_clients_ask_the_sentinels_for_the_primary(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    got = settings(redis_url="rediss://user:pa%40ss@ignored.example:6380/2", redis_ca_file=ca,
                   redis_sentinels="s1:26379,s2:26380", redis_sentinel_master="bulklicense",
                   redis_sentinel_password="sentinel-pw")
    client = redis_client(got, socket_timeout=7)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "bulklicense"
    kwargs = pool.connection_kwargs  # the primary's connections: the URL's credentials, database and TLS
    assert (kwargs["db"], kwargs["username"], kwargs["password"], kwargs["socket_timeout"]) == (
        2, "user", "pa@ss", 7)
    assert (kwargs["ssl_cert_reqs"], kwargs["ssl_ca_certs"]) == ("required", str(ca))
    assert "host" not in kwargs  # the address comes from the sentinels
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
            for s in sentinels] == [("s1", 26379), ("s2", 26380)]
    sentinel_kwargs = sentinels[0].connection_pool.connection_kwargs
    assert (sentinel_kwargs["password"], sentinel_kwargs["ssl_ca_certs"]) == ("sentinel-pw", str(ca))
