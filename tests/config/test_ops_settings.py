"""Settings for operations: Redis over TLS, webhook hosts and CA, metrics, a tenant's callback URL."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from config import ConfigError, LogFormat, Settings, get_settings
from worker.producer import broker_options


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_rediss_urls_verify_the_server_with_the_configured_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    plain = settings()
    assert plain.redis_options(plain.redis_url) == {} and plain.broker_use_ssl is None
    assert "broker_use_ssl" not in broker_options(plain)

    tls = settings(redis_url="rediss://:pw@redis.example:6380/0", redis_ca_file=ca)
    assert tls.redis_options(tls.redis_url) == {"ssl_cert_reqs": "required", "ssl_ca_certs": str(ca)}
    assert tls.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(ca)}
    assert broker_options(tls)["broker_use_ssl"] == tls.broker_use_ssl

    # A plain-Redis job store with a TLS broker: each gets what its own URL needs.
    split = settings(broker_url="rediss://broker.example:6380/0")
    assert split.redis_options(split.redis_url) == {}
    assert split.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": None}


def test_files_must_exist_and_hosts_are_a_lower_case_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BULKLICENSE_REDIS_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="BULKLICENSE_REDIS_CA_FILE: .*missing.pem is not a readable file"):
        get_settings(_env_file=None)
    monkeypatch.delenv("BULKLICENSE_REDIS_CA_FILE")
    monkeypatch.setenv("BULKLICENSE_WEBHOOK_ALLOWED_HOSTS", " 127.0.0.1, HR.Internal ,[::1],")
    monkeypatch.setenv("BULKLICENSE_LOG_FORMAT", "json")
    loaded = get_settings(_env_file=None)
    assert loaded.webhook_allowed_hosts == frozenset({"127.0.0.1", "hr.internal", "::1"})
    assert loaded.log_format is LogFormat.JSON
    monkeypatch.setenv("BULKLICENSE_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="BULKLICENSE_LOG_FORMAT"):
        get_settings(_env_file=None)


def test_a_tenant_default_callback_must_be_a_web_url(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.toml"
    base = '[tenants.contoso]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s"\n'
    tenants.write_text(base + 'callback_url = "https://hr.contoso.example/bulk"\n')
    assert settings(tenants_file=tenants).tenant("contoso").callback_url == "https://hr.contoso.example/bulk"
    tenants.write_text(base + 'callback_url = "file:///etc/passwd"\n')
    with pytest.raises(ConfigError, match="tenants.contoso: .*callback_url must be an https:// URL"):
        get_settings(_env_file=None, tenants_file=tenants)
