"""Settings: environment parsing, tenant profiles, and errors that name the setting."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from config import ConfigError, KeyScope, get_settings, key_label, load_tenants, parse_api_keys


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.effective_broker_url == settings.redis_url
    assert settings.retention_s == 30 * 86400
    monkeypatch.setenv("BULKLICENSE_CHUNK_SIZE", "250")
    monkeypatch.setenv("BULKLICENSE_BROKER_URL", "redis://broker:6379/1")
    settings = get_settings()
    assert settings.chunk_size == 250
    assert settings.effective_broker_url == "redis://broker:6379/1"


@pytest.mark.parametrize(("name", "value", "named"), [
    ("BULKLICENSE_CHUNK_SIZE", "abc", "BULKLICENSE_CHUNK_SIZE"),
    ("BULKLICENSE_CHUNK_SIZE", "0", "BULKLICENSE_CHUNK_SIZE"),
    ("BULKLICENSE_API_KEYS", "nokey", "BULKLICENSE_API_KEYS"),
    ("BULKLICENSE_API_KEYS", "short:*", "BULKLICENSE_API_KEYS"),
    ("BULKLICENSE_API_KEYS", "ops=short:*", "BULKLICENSE_API_KEYS"),
    ("BULKLICENSE_AUDIT_MAX_EVENTS", "10", "BULKLICENSE_AUDIT_MAX_EVENTS"),
    ("BULKLICENSE_TENANTS_FILE", "/does/not/exist.toml", "BULKLICENSE_TENANTS_FILE"),
])
def test_invalid_settings_name_the_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                          named: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        get_settings()


def test_api_keys_are_scoped() -> None:
    keys = parse_api_keys("key-abcdefgh-0001:contoso|fabrikam, key-bcdefghi-0002:*")
    assert keys[0].allows("contoso") and keys[0].allows("fabrikam") and not keys[0].allows("other")
    assert keys[1].allows("anything")
    assert "key-abcdefgh-0001" not in repr(keys[0])  # secrets do not leak through repr
    assert all(k.scope is KeyScope.WRITE and k.may_write for k in keys)


def test_an_empty_metrics_token_means_none() -> None:
    """Compose passes `${BULKLICENSE_METRICS_TOKEN:-}`: empty must not become a token anyone can send."""
    assert get_settings(metrics_token="").metrics_token is None
    assert get_settings(metrics_token="  ").metrics_token is None
    token = get_settings(metrics_token="scrape-token-123").metrics_token
    assert token is not None and token.get_secret_value() == "scrape-token-123"


def test_a_key_may_be_read_only() -> None:
    keys = parse_api_keys("audit=s3cret-audit-0001:contoso|fabrikam:read,ops=s3cret-ops-00002:*:write,"
                          "s3cret-legacy-0003:*:read")
    assert [(k.name, k.scope, k.may_write) for k in keys] == [
        ("audit", KeyScope.READ, False), ("ops", KeyScope.WRITE, True),
        (key_label("s3cret-legacy-0003"), KeyScope.READ, False)]
    assert keys[0].tenants == {"contoso", "fabrikam"} and keys[2].allows("anything")


def test_named_and_unnamed_api_keys() -> None:
    keys = parse_api_keys("hr-portal=s3cret-hr-000001:contoso|fabrikam,ops=s3cret-ops-00002:*,"
                          "legacy-key-000003:contoso,QUJDREVGR0hJSktM=:fabrikam")
    assert [k.name for k in keys] == ["hr-portal", "ops", key_label("legacy-key-000003"),
                                      key_label("QUJDREVGR0hJSktM=")]
    assert keys[0].key.get_secret_value() == "s3cret-hr-000001" and keys[0].tenants == {"contoso", "fabrikam"}
    assert keys[1].allows("anything")
    # Unnamed keys get a stable label from a hash prefix; base64 padding stays part of the key.
    assert keys[2].name == "key-" + hashlib.sha256(b"legacy-key-000003").hexdigest()[:8]
    assert keys[3].key.get_secret_value() == "QUJDREVGR0hJSktM="
    assert key_label("legacy-key-000003") == key_label("legacy-key-000003") != key_label("legacy-key-000004")
    assert "legacy-key-000003" not in key_label("legacy-key-000003")
    assert all("s3cret" not in repr(k) for k in keys)


@pytest.mark.parametrize(("raw", "message"), [
    ("nokey", "entry 1: each entry must look like NAME=KEY"),
    ("ops=s3cret-ops-00002", "entry 1 ('ops'): each entry must look like"),
    ("ops=s3cret-ops-00002:|", "entry 1 ('ops'): each entry must look like"),
    ("ops=s3cret-ops-00002:*, hr=short:*", "entry 2 ('hr'): API keys must be at least 16 characters"),
    ("ops=s3cret-ops-0002:*", "entry 1 ('ops'): API keys must be at least 16 characters"),  # 15
    ("ops=s3cret-s3cret-s3cret:*", "with at least 8 different ones"),  # 20 characters, 7 different
    ("ops=s3cret-ops-00002:*:admin", "entry 1 ('ops'): the scope after the tenants is 'read' or 'write'"),
    ("bad name=s3cret-ops-00002:*", "entry 1: a key name is 1-64 letters"),
    ("ops=s3cret-ops-00002:*,ops=s3cret-ops-00003:*", "the name 'ops' is used by more than one key"),
    ("ops=s3cret-ops-00002:*,hr=s3cret-ops-00002:x", "keys 'ops' and 'hr' are the same key"),
    ("s3cret-ops-00002:*,s3cret-ops-00002:x", "is used by more than one key"),
])
def test_bad_api_keys_name_the_setting_and_never_the_key(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^BULKLICENSE_API_KEYS: ") as exc:
        parse_api_keys(raw)
    assert message in str(exc.value)
    assert "s3cret" not in str(exc.value)


def test_tenant_profiles(tmp_path: Path) -> None:
    cert = tmp_path / "app.pem"
    cert.write_text("-----BEGIN PRIVATE KEY-----\n")
    path = tmp_path / "tenants.toml"
    path.write_text(
        '[tenants.contoso]\ntenant_id = "t1"\nclient_id = "c1"\nclient_secret = "s3cret-value"\n'
        '[tenants.gov]\ntenant_id = "t2"\nclient_id = "c2"\ncertificate_path = "app.pem"\n'
        'authority_host = "https://login.microsoftonline.us"\ngraph_url = "https://graph.microsoft.us"\n'
        'write_capacity = "none"\n'
    )
    profiles = load_tenants(path)
    assert profiles["contoso"].authority == "https://login.microsoftonline.com/t1"
    assert profiles["contoso"].write_rate_per_s == 20.0  # Graph's 3,000 writes per 150 s
    assert "s3cret-value" not in repr(profiles["contoso"])
    assert profiles["gov"].certificate_path == cert.resolve()
    assert profiles["gov"].write_rate_per_s is None
    assert str(profiles["contoso"].zone) == "UTC"  # a date in an input is a day in this zone


def test_a_tenant_profile_names_its_time_zone(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text('[tenants.a]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s"\n'
                    'timezone = "America/New_York"\n')
    assert str(load_tenants(path)["a"].zone) == "America/New_York"


def test_a_profile_may_require_approval_from_a_number_of_rows(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    base = 'tenant_id = "t"\nclient_id = "c"\nclient_secret = "s3cret-value"\n'
    path.write_text(f"[tenants.any]\n{base}require_approval = true\n"
                    f"[tenants.big]\n{base}require_approval = true\napproval_min_rows = 50\n[tenants.free]\n{base}")
    profiles = load_tenants(path)
    assert [profiles["any"].needs_approval(rows) for rows in (1, 1000)] == [True, True]
    assert [profiles["big"].needs_approval(rows) for rows in (49, 50, 51)] == [False, True, True]
    assert [profiles["free"].needs_approval(rows) for rows in (1, 1000)] == [False, False]


@pytest.mark.parametrize(("body", "message"), [
    ('[tenants.a]\ntenant_id = "t"\nclient_id = "c"\n', "tenants.a: Value error, set exactly one of"),
    ('[tenants.a]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s"\ngraph_url = "http://x"\n',
     "graph_url must be an https:// URL"),
    ('[tenants.a]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s"\nsurprise = 1\n', "tenants.a.surprise"),
    ('[tenants.a]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s"\napproval_min_rows = 5\n',
     "approval_min_rows applies only with require_approval = true"),
    ('[tenants.a]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s"\nrequire_approval = true\n'
     'approval_min_rows = 0\n', "tenants.a.approval_min_rows"),
    ('[tenants.a]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s"\ntimezone = "Paris"\n',
     "timezone 'Paris' is not an IANA time zone name"),
    ("not toml [", "is not valid TOML"),
    ("[other]\n", "has no [tenants.<name>] table"),
])
def test_bad_tenant_files_name_the_problem(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match="BULKLICENSE_TENANTS_FILE") as exc:
        load_tenants(path)
    assert message in str(exc.value)


def test_a_rows_quota_below_the_row_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULKLICENSE_QUOTA_KEY_ROWS", "10")
    with pytest.raises(ConfigError, match="quota_key_rows must be 0 .no quota. or at least max_rows"):
        get_settings()
    monkeypatch.setenv("BULKLICENSE_MAX_ROWS", "10")
    assert get_settings().quota_key_rows == 10
