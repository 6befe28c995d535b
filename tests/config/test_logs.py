"""Log lines: JSON one object per line with the job context, text as before, secrets masked in both."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import BaseModel, SecretStr

from config import Settings
from config.logs import (
    Redactor,
    bind_log_fields,
    configure_logging,
    current_log_fields,
    http_lines_hidden,
    log_context,
    secrets_of,
)
from jobs.chunks import execute_chunk
from jobs.executor import ChunkDeps
from jobs.models import Operation
from jobs.store import JobStore
from tests.jobs.helpers import Ctx

API_KEY = "api-key-0123456789"
CLIENT_SECRET = "tenant~client~secret~value"
REDIS_PASSWORD = "redis-p@ss/word"
WEBHOOK_SECRET = "webhook-secret-abcdef"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    tenants = tmp_path / "tenants.toml"
    tenants.write_text(f'[tenants.contoso]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "{CLIENT_SECRET}"\n')
    return Settings(_env_file=None, tenants_file=tenants, api_keys=f"ops={API_KEY}:*",  # type: ignore[call-arg]
                    redis_url="rediss://:redis-p%40ss%2Fword@redis.example:6380/0", webhook_secret=WEBHOOK_SECRET,
                    log_format="json", log_level="DEBUG")


@pytest.fixture
def captured(settings: Settings) -> Iterator[io.StringIO]:
    """Everything logged, as the configured handler writes it."""
    stream = io.StringIO()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    configure_logging(settings, stream=stream)
    try:
        yield stream
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message_and_the_job_context(captured: io.StringIO) -> None:
    log = logging.getLogger("bulklicense.test")
    log.info("outside")
    with log_context(job="j1", chunk=3):
        log.warning("inside %s", "a chunk")
        bind_log_fields(tenant="contoso")
        log.info("with the tenant")
        with log_context(chunk=4):
            log.debug("a nested chunk")
        log.info("back")
    log.info("after")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    entries = lines(captured)
    assert [e["message"] for e in entries] == ["outside", "inside a chunk", "with the tenant", "a nested chunk",
                                                "back", "after", "failed"]
    assert [(e.get("job"), e.get("tenant"), e.get("chunk")) for e in entries] == [
        (None, None, None), ("j1", None, 3), ("j1", "contoso", 3), ("j1", "contoso", 4), ("j1", "contoso", 3),
        (None, None, None), (None, None, None)]
    first = entries[0]
    assert first["level"] == "INFO" and first["logger"] == "bulklicense.test"
    assert isinstance(first["time"], str) and first["time"].endswith("Z") and "T" in first["time"]
    assert "ValueError: boom" in str(entries[-1]["exception"])
    assert current_log_fields() == {}


def test_secrets_never_reach_a_line_in_either_format(settings: Settings, captured: io.StringIO) -> None:
    log = logging.getLogger("bulklicense.test")
    log.info("key %s secret %s webhook %s", API_KEY, CLIENT_SECRET, WEBHOOK_SECRET)
    log.info("connecting to %s", settings.redis_url)
    log.info("decoded password %s", REDIS_PASSWORD)
    log.info("some other url amqp://guest:guest-pass@rabbit:5672//")
    try:
        raise RuntimeError(f"auth failed with {CLIENT_SECRET}")
    except RuntimeError:
        log.exception("in a traceback")
    configure_logging(settings.model_copy(update={"log_format": "text"}), stream=captured)
    log.info("text key %s at redis://:%s@host", API_KEY, "other-password")
    text = captured.getvalue()
    for secret in (API_KEY, CLIENT_SECRET, WEBHOOK_SECRET, REDIS_PASSWORD, "redis-p%40ss%2Fword", "guest-pass",
                   "other-password"):
        assert secret not in text, secret
    assert text.count("***") >= 9
    json_lines, text_line = text.splitlines()[:-1], text.splitlines()[-1]
    assert all(json.loads(line) for line in json_lines if line.startswith("{"))
    assert "INFO bulklicense.test: text key *** at redis://:***@host" in text_line


def test_the_handler_is_replaced_not_added_and_others_stay(settings: Settings, captured: io.StringIO) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    configure_logging(settings, stream=captured)
    configure_logging(settings, stream=captured)
    assert len(root.handlers) == len(before)


def test_every_secret_of_the_settings_is_known(settings: Settings) -> None:
    secrets = set(secrets_of(settings))
    assert {API_KEY, CLIENT_SECRET, WEBHOOK_SECRET, REDIS_PASSWORD, "redis-p%40ss%2Fword"} <= secrets


def test_secrets_a_profile_reload_brings_are_masked_from_then_on(settings: Settings, captured: io.StringIO) -> None:
    tenants = settings.tenants_file
    assert tenants is not None
    log = logging.getLogger("bulklicense.test")
    rotated, webhook = "rotated~client~secret~value", "fabrikam-webhook-secret-42"
    tenants.write_text(tenants.read_text().replace(CLIENT_SECRET, rotated)
                       + f'[tenants.fabrikam]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s3cret-value"\n'
                       f'webhook_secret = "{webhook}"\n')
    settings.profiles.refresh()  # what a worker does before each chunk
    log.warning("after the reload: %s %s", rotated, webhook)
    text = captured.getvalue()
    assert rotated not in text and webhook not in text and text.count("***") == 2


def test_the_http_clients_lines_can_be_left_out(captured: io.StringIO) -> None:
    httpx_log = logging.getLogger("httpx")
    httpx_log.info("HTTP Request: POST https://hooks.example/notify?token=one")
    with http_lines_hidden():
        httpx_log.info("HTTP Request: POST https://hooks.example/notify?token=two")
        logging.getLogger("jobs.notify").info("delivered to https://hooks.example")
    text = captured.getvalue()
    assert "token=one" in text and "token=two" not in text and "delivered to https://hooks.example" in text


def test_secrets_a_profile_reload_brings_are_masked(settings: Settings, captured: io.StringIO) -> None:
    """L10: a rotated client secret, or a new tenant's, is masked from the reload on, without a restart."""
    rotated, added = "rotated~client~secret~1", "northwind~client~secret"
    assert settings.tenants_file is not None
    settings.tenants_file.write_text(
        f'[tenants.contoso]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "{rotated}"\n'
        f'[tenants.northwind]\ntenant_id = "t2"\nclient_id = "c2"\nclient_secret = "{added}"\n')
    assert set(settings.profiles.refresh()) == {"contoso", "northwind"}
    logging.getLogger("bulklicense.test").warning("tokens for %s, %s and %s", rotated, added, CLIENT_SECRET)
    text = captured.getvalue()
    assert rotated not in text and added not in text and CLIENT_SECRET not in text
    assert lines(captured)[-1]["message"] == "tokens for ***, *** and ***"  # the old one stays masked too


class ProfileWithMore(BaseModel):
    """A profile with secret fields of other names (as later profile settings may add)."""

    name: str
    client_secret: SecretStr
    webhook_secret: SecretStr | None = None
    tenant_id: str = "not-a-secret-value"


def test_every_secret_field_of_a_profile_is_masked_whatever_its_name() -> None:
    profiles = {"a": ProfileWithMore(name="a", client_secret=SecretStr("client-one-value"),
                                     webhook_secret=SecretStr("hook-signing-value"))}
    redact = Redactor(profiles=lambda: profiles)
    assert redact("client-one-value hook-signing-value not-a-secret-value") == "*** *** not-a-secret-value"
    profiles = {"a": ProfileWithMore(name="a", client_secret=SecretStr("client-two-value"))}  # a reload
    assert redact("client-two-value client-one-value") == "*** ***"


def test_short_values_are_not_masked_everywhere() -> None:
    assert Redactor(["abc", "long-secret"])("abc long-secret") == "abc ***"


def test_a_chunk_runs_inside_its_job_chunk_and_tenant_context(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client, retention_s=3600)
    store.stage("j7", "contoso", [Operation(row=2, user="u@x", remove=("sku",))], 10)
    store.commit("j7", source="csv")
    seen: list[dict[str, object]] = []

    def deps_for(tenant: str) -> ChunkDeps:
        seen.append(dict(current_log_fields()))
        raise KeyError(tenant)  # an unknown tenant: the chunk fails its users and completes

    assert execute_chunk(Ctx(store, deps_for), "j7", 0) == "done"
    assert seen == [{"job": "j7", "chunk": 0, "tenant": "contoso"}]
    assert current_log_fields() == {}
