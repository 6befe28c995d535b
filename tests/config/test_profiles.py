"""Tenant profiles follow their file: an edit is seen without a restart, and only a changed profile's
Graph client is rebuilt (the worker's and the API's)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from celery import Celery

from api.context import TenantGraphs
from config import ConfigError, Settings, get_settings, load_tenants
from config.profiles import TenantProfiles
from config.settings import TenantProfile
from tests.fakes import FakeClock
from worker.runtime import WorkerRuntime


def profile(name: str, secret: str, extra: str = "") -> str:
    return (f'[tenants.{name}]\ntenant_id = "t-{name}"\nclient_id = "c-{name}"\nclient_secret = "{secret}"\n'
            f'authority_host = "https://login.test"\ngraph_url = "https://graph.test"\n{extra}\n')


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "tenants.toml"
    p.write_text(profile("a", "first-secret") + profile("b", "b-secret"))
    return p


def edit(path: Path, text: str) -> None:
    """Rewrite the file as an editor saving over it does (a new file renamed into place)."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    tmp.replace(path)


def test_an_edit_is_seen_at_the_next_look_and_only_that_profile_changes(path: Path) -> None:
    clock = FakeClock(0.0)
    profiles: TenantProfiles[TenantProfile] = TenantProfiles(path, load_tenants, check_interval_s=2.0, clock=clock)
    first = profiles.current()
    gen_a, gen_b = profiles.generation("a"), profiles.generation("b")
    assert first["a"].client_secret is not None and first["a"].client_secret.get_secret_value() == "first-secret"

    edit(path, profile("a", "fixed-secret") + profile("b", "b-secret"))
    clock.advance(1.0)
    assert profiles.current()["a"].client_secret.get_secret_value() == "first-secret"
    clock.advance(1.0)
    now = profiles.current()
    assert now["a"].client_secret.get_secret_value() == "fixed-secret"
    assert profiles.generation("a") != gen_a and profiles.generation("b") == gen_b


def test_refresh_looks_at_once_and_an_unchanged_rewrite_rebuilds_nothing(path: Path) -> None:
    profiles: TenantProfiles[TenantProfile] = TenantProfiles(path, load_tenants, check_interval_s=3600)
    profiles.current()
    gen_a = profiles.generation("a")
    edit(path, path.read_text())  # saved again, same content
    assert set(profiles.refresh()) == {"a", "b"} and profiles.generation("a") == gen_a
    edit(path, profile("a", "first-secret") + profile("b", "b-secret") + profile("c", "c-secret"))
    assert set(profiles.refresh()) == {"a", "b", "c"} and profiles.generation("a") == gen_a
    edit(path, profile("a", "first-secret"))
    assert set(profiles.refresh()) == {"a"} and profiles.generation("b") is None


def test_a_changed_file_a_profile_names_changes_its_generation(path: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("old CA")
    edit(path, profile("a", "s", f'ca_bundle = "{bundle}"') + profile("b", "b-secret"))
    profiles: TenantProfiles[TenantProfile] = TenantProfiles(path, load_tenants, check_interval_s=3600)
    profiles.current()
    gen_a, gen_b = profiles.generation("a"), profiles.generation("b")
    bundle.write_text("the renewed CA, same path")
    profiles.refresh()
    assert profiles.generation("a") != gen_a and profiles.generation("b") == gen_b


def test_a_broken_edit_keeps_the_profiles_in_force(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    profiles: TenantProfiles[TenantProfile] = TenantProfiles(path, load_tenants, check_interval_s=3600)
    profiles.current()
    gen_a = profiles.generation("a")
    edit(path, profile("a", "half-saved")[:40])
    with caplog.at_level(logging.ERROR, logger="config.profiles"):
        assert set(profiles.refresh()) == {"a", "b"}
    assert profiles.generation("a") == gen_a
    assert "tenant profiles not reloaded, the ones in force stay" in caplog.text
    assert "is not valid TOML" in caplog.text
    edit(path, profile("a", "fixed-secret"))
    assert profiles.refresh()["a"].client_secret.get_secret_value() == "fixed-secret"


def test_a_bad_file_at_start_still_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text("[tenants.a]\n")
    with pytest.raises(ConfigError, match="tenants.a.tenant_id"):
        get_settings(tenants_file=path)


def test_settings_tenants_follow_the_file(path: Path) -> None:
    settings = get_settings(tenants_file=path)
    assert set(settings.tenants) == {"a", "b"}
    edit(path, profile("a", "first-secret") + profile("new", "n-secret"))
    settings.profiles.refresh()
    assert set(settings.tenants) == {"a", "new"}
    assert settings.tenant("new").client_id == "c-new"


def test_the_worker_and_the_api_rebuild_a_changed_tenants_client(path: Path, redis_url: str) -> None:
    settings = Settings(tenants_file=path, redis_url=redis_url)
    runtime = WorkerRuntime(settings, Celery("test", broker="memory://", set_as_current=False))
    graphs = TenantGraphs(settings, runtime.redis)
    try:
        worker_a, worker_b, api_a = runtime.client("a"), runtime.client("b"), graphs.client("a")
        assert runtime.client("a") is worker_a and graphs.client("a") is api_a  # kept while unchanged
        edit(path, profile("a", "fixed-secret") + profile("b", "b-secret"))
        settings.profiles.refresh()
        assert runtime.client("a") is not worker_a and graphs.client("a") is not api_a
        assert runtime.client("a").profile.client_secret.get_secret_value() == "fixed-secret"
        assert runtime.client("b") is worker_b  # another tenant's client (its tokens, its connections) stays
        assert runtime.deps_for("a").breaker is runtime.client("a").breaker
        with pytest.raises(KeyError):
            runtime.client("gone")
    finally:
        runtime.stop()
