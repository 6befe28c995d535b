"""Settings for operations: Redis over TLS, webhook origins and CA, metrics, a tenant's callback URL and secret."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from config import ConfigError, LogFormat, Settings, get_settings
from config.settings import WebhookOrigin
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


def test_files_must_exist_and_origins_are_exact(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BULKLICENSE_REDIS_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="BULKLICENSE_REDIS_CA_FILE: .*missing.pem is not a readable file"):
        get_settings(_env_file=None)
    monkeypatch.delenv("BULKLICENSE_REDIS_CA_FILE")
    monkeypatch.setenv("BULKLICENSE_WEBHOOK_ALLOWED_ORIGINS",
                       " http://127.0.0.1:9000, HTTPS://HR.Internal/hooks ,https://[::1]:8443/a/b/,")
    monkeypatch.setenv("BULKLICENSE_LOG_FORMAT", "json")
    loaded = get_settings(_env_file=None)
    assert loaded.webhook_allowed_origins == frozenset({
        WebhookOrigin("http", "127.0.0.1", 9000), WebhookOrigin("https", "hr.internal", 443, "/hooks/"),
        WebhookOrigin("https", "::1", 8443, "/a/b/")})
    assert sorted(map(str, loaded.webhook_allowed_origins)) == [
        "http://127.0.0.1:9000", "https://[::1]:8443/a/b", "https://hr.internal:443/hooks"]
    assert loaded.log_format is LogFormat.JSON
    monkeypatch.setenv("BULKLICENSE_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="BULKLICENSE_LOG_FORMAT"):
        get_settings(_env_file=None)


@pytest.mark.parametrize(("value", "why"), [
    ("127.0.0.1", "is not an origin"),
    ("ftp://files.internal", "is not an origin"),
    ("https://hr.internal:99999", "is not a URL"),
    ("https://user:pw@hr.internal", "no credentials"),
    ("https://hr.internal/hooks?token=1", "no credentials, query or fragment"),
    ("https://hr.internal/hooks/../admin", "may not contain . or .. segments"),
])
def test_an_allowed_origin_that_is_not_one_stops_the_start(monkeypatch: pytest.MonkeyPatch, value: str,
                                                           why: str) -> None:
    monkeypatch.setenv("BULKLICENSE_WEBHOOK_ALLOWED_ORIGINS", value)
    with pytest.raises(ConfigError, match=f"BULKLICENSE_WEBHOOK_ALLOWED_ORIGINS: .*{why.replace('.', '[.]')}"):
        get_settings(_env_file=None)


def test_the_old_allowed_hosts_setting_stops_the_start_saying_what_replaced_it(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # It opened a whole host, on any port: kept silently, it would keep doing so.
    monkeypatch.setenv("BULKLICENSE_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
    with pytest.raises(ConfigError, match="BULKLICENSE_WEBHOOK_ALLOWED_HOSTS: .*replaced by"
                                          " BULKLICENSE_WEBHOOK_ALLOWED_ORIGINS"):
        get_settings(_env_file=None)


def test_a_tenant_may_have_a_webhook_secret_of_its_own(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.toml"
    base = '[tenants.{name}]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s"\n'
    tenants.write_text(base.format(name="contoso") + 'webhook_secret = "contoso-webhook-secret"\n'
                       + base.format(name="fabrikam"))
    own = settings(tenants_file=tenants)
    secret = own.webhook_secret_for("contoso")
    assert secret is not None and secret.get_secret_value() == "contoso-webhook-secret"
    assert "contoso-webhook-secret" not in repr(own.tenant("contoso"))
    assert own.webhook_secret_for("fabrikam") is None and own.webhooks_configured()
    shared = settings(tenants_file=tenants, webhook_secret="global-secret")
    assert shared.webhook_secret_for("fabrikam") == shared.webhook_secret
    assert not settings().webhooks_configured()


def test_a_tenant_default_callback_must_be_a_web_url(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.toml"
    base = '[tenants.contoso]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s"\n'
    tenants.write_text(base + 'callback_url = "https://hr.contoso.example/bulk"\n')
    assert settings(tenants_file=tenants).tenant("contoso").callback_url == "https://hr.contoso.example/bulk"
    tenants.write_text(base + 'callback_url = "file:///etc/passwd"\n')
    with pytest.raises(ConfigError, match="tenants.contoso: .*callback_url must be an https:// URL"):
        get_settings(_env_file=None, tenants_file=tenants)
