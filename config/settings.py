"""The one settings object: environment / .env, plus the tenant profiles file it points to."""

from __future__ import annotations

import hashlib
import re
import ssl
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.profiles import TenantProfiles

# Graph's documented write limit per app+tenant: 3,000 writes per 150 s (throttling-limits).
GRAPH_WRITE_CAPACITY = 3000
GRAPH_WRITE_PERIOD_S = 150.0
# The resource-unit budget of the smallest tenants (Graph: S < 50 users), safe for any tenant.
GRAPH_READ_CAPACITY_RU = 3500
GRAPH_READ_PERIOD_S = 10.0


class ConfigError(Exception):
    """Invalid configuration; the message names the setting."""


class TenantProfile(BaseModel):
    """One tenant: how to authenticate, where Graph is, and its write budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    certificate_path: Path | None = None
    certificate_password: SecretStr | None = None
    authority_host: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com"
    ca_bundle: Path | None = None
    # Token bucket: `write_capacity` writes, refilled over `write_period_s`. None = unlimited.
    write_capacity: int | None = Field(default=GRAPH_WRITE_CAPACITY, ge=1)
    write_period_s: float = Field(default=GRAPH_WRITE_PERIOD_S, gt=0)
    # Resource units (RU) per app and tenant, which every request costs (a read of a user 1, a
    # write 1 too): Graph allows 3,500 / 5,000 / 8,000 per 10 s to tenants of under 50, 50-500
    # and over 500 users. The default suits any tenant. Reads get what the writes leave. None = unlimited.
    read_capacity_ru: int | None = Field(default=GRAPH_READ_CAPACITY_RU, ge=1)
    read_period_s: float = Field(default=GRAPH_READ_PERIOD_S, gt=0)
    # A job that would write waits, once planned, for another API key's approval (README "Approvals"),
    # when it holds at least `approval_min_rows` rows (each row is one user: what it may change at most).
    require_approval: bool = False
    approval_min_rows: int | None = Field(default=None, ge=1)
    # Where this tenant's jobs are reported when they end or pause (a job's own callback is told too).
    callback_url: str | None = None
    # Signs this tenant's notifications; without it, BULKLICENSE_WEBHOOK_SECRET does.
    webhook_secret: SecretStr | None = None
    # The IANA time zone an input's dates are days of (an effective date runs at its start there).
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {value!r} is not an IANA time zone name (such as Europe/Paris or UTC)") \
                from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The profile's time zone."""
        return ZoneInfo(self.timezone)

    @model_validator(mode="after")
    def _one_credential(self) -> TenantProfile:
        if (self.client_secret is None) == (self.certificate_path is None):
            raise ValueError("set exactly one of client_secret or certificate_path")
        if self.certificate_path is not None and not self.certificate_path.is_file():
            raise ValueError(f"certificate_path {self.certificate_path} is not a readable file")
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            raise ValueError(f"ca_bundle {self.ca_bundle} is not a readable file")
        for name in ("authority_host", "graph_url"):
            if not getattr(self, name).startswith("https://"):
                raise ValueError(f"{name} must be an https:// URL")
        if self.approval_min_rows is not None and not self.require_approval:
            raise ValueError("approval_min_rows applies only with require_approval = true")
        if self.callback_url is not None:
            parts = urlsplit(self.callback_url)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                raise ValueError("callback_url must be an https:// URL (http:// only to an allowed host)")
        return self

    @property
    def authority(self) -> str:
        """The MSAL authority URL for this tenant."""
        return f"{self.authority_host.rstrip('/')}/{self.tenant_id}"

    def needs_approval(self, rows: int) -> bool:
        """Whether a job of `rows` rows that would write must wait for another key's approval."""
        return self.require_approval and rows >= (self.approval_min_rows or 1)

    @property
    def read_rate_ru_per_s(self) -> float | None:
        """Resource units per second the read budget refills at, or None when unlimited."""
        if self.read_capacity_ru is None:
            return None
        return self.read_capacity_ru / self.read_period_s

    @property
    def write_rate_per_s(self) -> float | None:
        """Sustained writes per second the bucket refills at, or None when unlimited."""
        if self.write_capacity is None:
            return None
        return self.write_capacity / self.write_period_s


API_KEYS_SETTING = "BULKLICENSE_API_KEYS"
# A key is a bearer secret: long, and not one character repeated (`secrets.token_urlsafe(32)` gives 43).
MIN_API_KEY_CHARS = 16
MIN_API_KEY_DISTINCT_CHARS = 8
# A key's name is shown in job records, audit events and logs; it never contains the key.
API_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def key_label(key: str) -> str:
    """A stable, non-revealing name for a key: `key-` and the first 8 hex digits of its SHA-256."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


class KeyScope(StrEnum):
    """What an API key may do on its tenants."""

    WRITE = "write"  # everything: submit, run, cancel, resume, roll back, and read
    READ = "read"  # list and read jobs, results, events, audit and tenants; change nothing


@dataclass(frozen=True)
class ApiKey:
    """A named API key, the tenant profiles it may act on (`*` = all) and its scope."""

    name: str
    key: SecretStr
    tenants: frozenset[str]
    scope: KeyScope = KeyScope.WRITE

    def allows(self, tenant: str) -> bool:
        """Whether this key may act on `tenant`."""
        return "*" in self.tenants or tenant in self.tenants

    @property
    def may_write(self) -> bool:
        """Whether this key may change anything (submit, run, cancel, resume, roll back)."""
        return self.scope is KeyScope.WRITE


def parse_api_keys(raw: str) -> tuple[ApiKey, ...]:
    """Parse `name=key:tenantA|tenantB,name2=key2:*:read` (or unnamed `key:tenants`) into API keys.

    Errors are ConfigErrors naming the setting and the entry by position (or name), never the key.
    """
    keys: list[ApiKey] = []
    for position, part in enumerate((p.strip() for p in raw.split(",") if p.strip()), start=1):
        key = _parse_key_entry(part, position)
        for earlier in keys:
            if earlier.name == key.name:
                raise ConfigError(f"{API_KEYS_SETTING}: the name '{key.name}' is used by more than one key")
            if earlier.key == key.key:
                raise ConfigError(f"{API_KEYS_SETTING}: keys '{earlier.name}' and '{key.name}' are the same key")
        keys.append(key)
    return tuple(keys)


def _parse_key_entry(entry: str, position: int) -> ApiKey:
    """One `name=key:tenants[:scope]` or `key:tenants[:scope]` entry."""
    secret, sep, rest_of_entry = entry.partition(":")
    tenant_list, _, scope = rest_of_entry.partition(":")
    name, eq, rest = secret.partition("=")
    # `=` only as trailing padding (base64) belongs to an unnamed key; otherwise it ends the name.
    if eq and rest.strip("="):
        where = f"entry {position} ('{name}')"
        if not API_KEY_NAME.fullmatch(name):
            raise ConfigError(f"{API_KEYS_SETTING}: entry {position}: a key name is 1-64 letters, digits, '.', '_'"
                              " or '-', starting with a letter or digit")
        secret = rest
    else:
        where = f"entry {position}"
        name = key_label(secret)
    tenants = frozenset(t.strip() for t in tenant_list.split("|") if t.strip())
    if not sep or not secret or not tenants:
        raise ConfigError(f"{API_KEYS_SETTING}: {where}: each entry must look like NAME=KEY:tenant1|tenant2,"
                          " NAME=KEY:*, NAME=KEY:tenants:read or KEY:tenants")
    if scope.strip() not in ("", *KeyScope):
        raise ConfigError(f"{API_KEYS_SETTING}: {where}: the scope after the tenants is 'read' or 'write'")
    if len(secret) < MIN_API_KEY_CHARS or len(set(secret)) < MIN_API_KEY_DISTINCT_CHARS:
        raise ConfigError(f"{API_KEYS_SETTING}: {where}: API keys must be at least {MIN_API_KEY_CHARS} characters,"
                          f" with at least {MIN_API_KEY_DISTINCT_CHARS} different ones (generate one with"
                          " `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return ApiKey(name, SecretStr(secret), tenants, KeyScope(scope.strip() or KeyScope.WRITE))


DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class WebhookOrigin:
    """An origin callbacks may name although it is not public: scheme, host and port exactly, under a path."""

    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int
    path_prefix: str = "/"  # a callback's path must be this, or below it

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path_prefix.rstrip('/')}"


def parse_webhook_origin(text: str) -> WebhookOrigin:
    """`scheme://host[:port][/path]` as an origin (the scheme's port when none is given); ValueError if not one."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"'{text}' is not a URL") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"'{text}' is not an origin: give scheme://host:port, e.g. https://hr.internal:8443")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ValueError(f"'{text}': an origin has no credentials, query or fragment")
    path = parts.path or "/"
    if any(segment in (".", "..") for segment in path.split("/")):
        raise ValueError(f"'{text}': the path may not contain . or .. segments")
    return WebhookOrigin(parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme],
                         path if path.endswith("/") else path + "/")


def parse_webhook_origins(raw: str) -> frozenset[WebhookOrigin]:
    """A comma-separated list of origins; ValueError naming the entry that is not one."""
    return frozenset(parse_webhook_origin(entry) for entry in (e.strip() for e in raw.split(",")) if entry)


def load_tenants(path: Path) -> dict[str, TenantProfile]:
    """Read a TOML file of `[tenants.<name>]` tables into profiles."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"BULKLICENSE_TENANTS_FILE: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"BULKLICENSE_TENANTS_FILE: {path} is not valid TOML: {exc}") from None
    tables = data.get("tenants")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"BULKLICENSE_TENANTS_FILE: {path} has no [tenants.<name>] table")
    profiles: dict[str, TenantProfile] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"BULKLICENSE_TENANTS_FILE: tenants.{name} must be a table")
        raw: dict[str, Any] = dict(table)
        for budget in ("write_capacity", "read_capacity_ru"):
            if raw.get(budget) in ("none", "unlimited", 0):
                raw[budget] = None
        for key in ("certificate_path", "ca_bundle"):
            if isinstance(raw.get(key), str) and not Path(raw[key]).is_absolute():
                raw[key] = str((path.parent / raw[key]).resolve())
        try:
            profiles[name] = TenantProfile(name=name, **raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "profile"
            raise ConfigError(
                f"BULKLICENSE_TENANTS_FILE: tenants.{name}.{where}: {first['msg']}".replace(".profile", "")
            ) from None
    return profiles


class LogFormat(StrEnum):
    """How log lines are written."""

    TEXT = "text"
    JSON = "json"  # one JSON object per line


REDIS_SENTINEL_PORT = 26379


def _parse_sentinels(value: object) -> object:
    """`10.0.0.1:26379,sentinel-2,[::1]:26380` as (host, port) pairs (port 26379 when left out)."""
    if not isinstance(value, str):
        return value
    sentinels: list[tuple[str, int]] = []
    for entry in (e.strip() for e in value.split(",") if e.strip()):
        host, port = entry, str(REDIS_SENTINEL_PORT)
        if entry.startswith("["):  # an IPv6 address: [::1]:26379
            host, _, rest = entry[1:].partition("]")
            port = rest.removeprefix(":") or port
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"'{entry}' is not host:port")
        sentinels.append((host, int(port)))
    return tuple(sentinels)


class Settings(BaseSettings):
    """Everything configurable, from the environment (BULKLICENSE_*) or a .env file."""

    model_config = SettingsConfigDict(env_prefix="BULKLICENSE_", env_file=".env", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str | None = None
    # Redis Sentinel: where the sentinels are and the name they know the primary by. With them, the
    # URL above gives only the scheme (TLS), the credentials and the database; the primary's address
    # comes from the sentinels, for every Redis client and for a Redis broker.
    redis_sentinels: Annotated[tuple[tuple[str, int], ...], NoDecode] = ()
    redis_sentinel_master: str | None = None
    redis_sentinel_password: SecretStr | None = None  # the sentinels' own `requirepass`, if any
    # Before a write batch goes to Graph, Redis replicas must hold what the job recorded so far (its
    # plans and attempts): a failover then never loses the `before` state of a user being written.
    # None: 1 with Sentinel, else 0 (off). Replicas that are not connected are not waited for.
    redis_wait_replicas: int | None = Field(default=None, ge=0, le=16)
    redis_wait_timeout_s: float = Field(default=1.0, gt=0, le=60)
    # RabbitMQ: a chunk message delivered this often without being acknowledged (its workers died)
    # is dead-lettered; the reaper sends the chunk again, and BULKLICENSE_MAX_CHUNK_RUNS ends it.
    broker_delivery_limit: int = Field(default=10, ge=1, le=1000)
    # CA certificates that `rediss://` servers (results, broker, throttle) are verified against,
    # besides the system's.
    redis_ca_file: Path | None = None
    tenants_file: Path | None = None
    api_keys: Annotated[tuple[ApiKey, ...], NoDecode] = ()

    # Input limits.
    max_rows: int = Field(default=1_000_000, ge=1)
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    max_cell_chars: int = Field(default=1024, ge=64)
    # A JSON body is read whole (then checked without being built): larger jobs go as CSV.
    max_json_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # Columns a CSV job keeps (not read, echoed in the results), and what one row may store in them.
    max_kept_columns: int = Field(default=50, ge=0, le=1000)
    max_kept_chars_per_row: int = Field(default=4096, ge=0)
    sku_cache_ttl_s: float = Field(default=60.0, ge=0)

    # Execution.
    chunk_size: int = Field(default=100, ge=1, le=10_000)
    chunk_window: int = Field(default=4, ge=1, le=64)
    batch_size: int = Field(default=20, ge=1, le=20)
    graph_timeout_s: float = Field(default=30.0, gt=0)
    retry_max_attempts: int = Field(default=8, ge=1)
    retry_max_total_s: float = Field(default=3600.0, gt=0)
    retry_backoff_base_s: float = Field(default=1.0, gt=0)
    retry_backoff_max_s: float = Field(default=60.0, gt=0)
    # A Retry-After longer than this hands the chunk back to the broker instead of sleeping in a slot.
    max_inline_wait_s: float = Field(default=30.0, gt=0)
    lease_ttl_s: float = Field(default=20.0, gt=0)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    reaper_interval_s: float = Field(default=10.0, gt=0)
    # A chunk queued this long without being picked up is sent again (its message may have been
    # reserved by a worker that died); duplicates are harmless, claims being exclusive.
    requeue_queued_after_s: float = Field(default=45.0, gt=0)
    # A chunk running this long hands itself back to the broker between two rounds: no broker
    # message is held longer than this and one round (RabbitMQ cancels a consumer that holds a
    # message past its consumer_timeout, 30 minutes by default).
    chunk_max_run_s: float = Field(default=600.0, ge=10, le=1500)
    # A chunk started this many times without finishing (crashes, long-wait hand-backs) fails its
    # remaining users as chunk_failed_repeatedly instead of being requeued for ever.
    max_chunk_runs: int = Field(default=50, ge=2)
    # A user Graph says does not exist is asked again for this long before it ends user_not_found:
    # the directory is eventually consistent, and new hires can take a minute or two to appear.
    not_found_grace_s: float = Field(default=180.0, ge=0)
    # `$batch` requests of reads one chunk may have in flight at once: reading keeps pace with writing.
    read_parallelism: int = Field(default=5, ge=1, le=20)
    # A dry run of at least this many users reads the whole tenant page by page (999 users a read)
    # instead of user by user (one read each).
    paged_read_min_users: int = Field(default=1000, ge=1)
    # A job paused for want of seats reads subscribedSkus this often to see whether seats appeared.
    seat_recheck_interval_s: float = Field(default=60.0, gt=0)
    visibility_timeout_s: int = Field(default=6 * 3600, ge=60)
    worker_concurrency: int = Field(default=16, ge=1)
    # Tests and demos only: multiplies Graph's Retry-After values (see worker/timescale.py).
    time_scale: float = Field(default=1.0, gt=0, le=1.0)
    retention_days: float = Field(default=30.0, gt=0)
    # Audit events kept per tenant at most (approximately: trimmed in whole stream nodes); events
    # older than the retention period are dropped too.
    audit_max_events: int = Field(default=100_000, ge=100)
    # Refused requests (`key_refused`) are kept apart, in a stream of their own per tenant, this long at most.
    audit_max_refusals: int = Field(default=10_000, ge=100)

    # Celery task events (for Flower); off by default, as nothing else reads them.
    worker_task_events: bool = False

    # API server.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Failed API key attempts a minute, from one client address and from all: beyond them, 429.
    auth_failures_per_address: int = Field(default=10, ge=1)
    auth_failures_total: int = Field(default=100, ge=1)
    # A request body has this long to arrive, plus 1 s per `api_body_min_rate_bytes_s` bytes received (408).
    api_body_timeout_s: float = Field(default=20.0, gt=0)
    api_body_min_rate_bytes_s: int = Field(default=16 * 1024, ge=1)
    # Threads that parse and stage submissions (apart from the pool that serves reads), and how many
    # submissions one API key may have in progress at once in one API process (0: no cap).
    api_submission_threads: int = Field(default=4, ge=1, le=64)
    api_submissions_per_key: int = Field(default=4, ge=0)
    # Progress streams (SSE) one API key may have open at once in one API process (0: no cap).
    api_event_streams_per_key: int = Field(default=20, ge=0)

    # Quotas (0: none): jobs active at once (queued, planning, running or paused) and rows they hold
    # in Redis, per tenant and per API key; a finished dry run's rows count for `quota_dry_run_hold_hours`.
    quota_tenant_active_jobs: int = Field(default=50, ge=0)
    quota_tenant_rows: int = Field(default=5_000_000, ge=0)
    quota_key_active_jobs: int = Field(default=20, ge=0)
    quota_key_rows: int = Field(default=2_000_000, ge=0)
    quota_dry_run_hold_hours: float = Field(default=24.0, ge=0)
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.TEXT

    # Prometheus metrics: `GET /metrics` on the API (behind `metrics_token` when set, else to this
    # host only), and a server per worker process on the first free port of metrics_port ..
    # + metrics_port_range - 1.
    api_metrics: bool = True
    metrics_token: SecretStr | None = None
    # The API's families are collected at most this often; scrapes in between get the same page.
    metrics_cache_s: float = Field(default=5.0, ge=0)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_port_range: int = Field(default=16, ge=1, le=1024)
    metrics_host: str = "127.0.0.1"
    # Jobs counted by status at each scrape of the API: the most recent ones only.
    metrics_recent_jobs: int = Field(default=500, ge=1, le=100_000)

    # Job notifications: signed POSTs of the job to its callback URLs when it ends or pauses.
    # The secret signs them unless the tenant profile has its own.
    webhook_secret: SecretStr | None = None
    # Origins (scheme://host:port[/path]) a callback may name although they are not public; http allowed there.
    webhook_allowed_origins: Annotated[frozenset[WebhookOrigin], NoDecode] = frozenset()
    # Replaced by webhook_allowed_origins: refused at start, so that no host stays open on every port.
    webhook_allowed_hosts: str | None = None
    webhook_ca_file: Path | None = None
    # Each attempt's whole time: DNS, connect, TLS, sending and the answer, by the wall clock.
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_max_attempts: int = Field(default=5, ge=1, le=20)
    # The wait before the second attempt; each later one waits three times longer (10, 30, 90, 270 s).
    webhook_backoff_base_s: float = Field(default=10.0, gt=0)
    # Attempts a notifications worker makes at once (threads of its own, never a chunk's).
    webhook_concurrency: int = Field(default=4, ge=1, le=64)
    # Also send X-BulkLicense-Signature (the body alone signed) for receivers not yet checking the new one.
    webhook_legacy_signature: bool = True
    # Callback host lookups: each waits this long at most, and only this many run at once (2 per API key).
    webhook_dns_timeout_s: float = Field(default=2.0, gt=0, le=30)
    webhook_dns_concurrency: int = Field(default=8, ge=1, le=256)

    # CLI client commands (submit, status, results, cancel).
    api_url: str = "http://127.0.0.1:8000"
    api_key: SecretStr | None = None

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_api_keys(value)
        return value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _parse_sentinel_list(cls, value: object) -> object:
        return _parse_sentinels(value)

    @field_validator("metrics_token", "webhook_secret", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # An empty variable (as compose passes `${BULKLICENSE_METRICS_TOKEN:-}`) means unset: no token, never
        # an empty one; `BULKLICENSE_WEBHOOK_SECRET=` turns notifications off.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("webhook_allowed_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        return parse_webhook_origins(value) if isinstance(value, str) else value

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _renamed(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("replaced by BULKLICENSE_WEBHOOK_ALLOWED_ORIGINS, which names exact origins"
                             " (scheme://host:port, optionally a path), e.g. https://hr.internal:8443/hooks")
        return value

    @field_validator("redis_ca_file", "webhook_ca_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_inline_wait_s * 4 > self.visibility_timeout_s:
            raise ValueError("visibility_timeout_s must be well above max_inline_wait_s")
        if self.heartbeat_interval_s * 2 > self.lease_ttl_s:
            raise ValueError("lease_ttl_s must be at least twice heartbeat_interval_s")
        if bool(self.redis_sentinels) != bool(self.redis_sentinel_master):
            raise ValueError("redis_sentinels and redis_sentinel_master go together: set both or neither")
        for name in ("quota_tenant_rows", "quota_key_rows"):
            if 0 < getattr(self, name) < self.max_rows:
                raise ValueError(f"{name} must be 0 (no quota) or at least max_rows ({self.max_rows:,}): a job of"
                                 " max_rows rows could never start")
        return self

    @property
    def redis_tls(self) -> bool:
        """Whether the job store's Redis is reached over TLS (a `rediss://` URL)."""
        return self.redis_url.startswith("rediss://")

    @property
    def wait_replicas(self) -> int:
        """Redis replicas a write batch waits for (BULKLICENSE_REDIS_WAIT_REPLICAS; by default 1 with Sentinel)."""
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.redis_sentinels else 0

    @property
    def broker_is_store(self) -> bool:
        """Whether the Celery broker is the job store's Redis (no BULKLICENSE_BROKER_URL of its own)."""
        return self.broker_url is None or self.broker_url == self.redis_url

    @property
    def broker_is_amqp(self) -> bool:
        """Whether the broker is RabbitMQ (an `amqp://` or `amqps://` URL)."""
        return self.effective_broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))

    @property
    def effective_broker_url(self) -> str:
        """The Celery broker URL: the results Redis unless set apart (through its sentinels with Sentinel)."""
        if not self.broker_is_store:
            return self.broker_url or self.redis_url
        if not self.redis_sentinels:
            return self.redis_url
        # kombu's Sentinel transport: one `sentinel://` URL per sentinel; the first carries the
        # primary's credentials and database (those of BULKLICENSE_REDIS_URL).
        parts = urlsplit(self.redis_url)
        auth = parts.netloc.rpartition("@")[0]
        urls = [f"sentinel://{auth + '@' if auth else ''}{_netloc(host, port)}{parts.path}"
                for host, port in self.redis_sentinels]
        return ";".join(urls)

    def redis_options(self, url: str) -> dict[str, Any]:
        """redis-py connection options for `url`: for `rediss://`, certificates verified (with our CA)."""
        if not url.startswith("rediss://"):
            return {}
        options: dict[str, Any] = {"ssl_cert_reqs": "required"}
        if self.redis_ca_file is not None:
            options["ssl_ca_certs"] = str(self.redis_ca_file)
        return options

    @property
    def broker_use_ssl(self) -> dict[str, Any] | None:
        """Celery's `broker_use_ssl` for a `rediss://` broker (kombu would not verify the server otherwise)."""
        tls_sentinel = self.broker_is_store and self.redis_sentinels and self.redis_tls
        if not (self.effective_broker_url.startswith("rediss://") or tls_sentinel):
            return None
        return {"ssl_cert_reqs": ssl.CERT_REQUIRED,
                "ssl_ca_certs": str(self.redis_ca_file) if self.redis_ca_file else None}

    @property
    def retention_s(self) -> int:
        """How long job data is kept in Redis, in seconds."""
        return int(self.retention_days * 86400)

    @cached_property
    def profiles(self) -> TenantProfiles[TenantProfile]:
        """The tenant profiles file, followed: an edit takes effect without a restart (config.profiles)."""
        return TenantProfiles(self.tenants_file, load_tenants)

    @property
    def tenants(self) -> dict[str, TenantProfile]:
        """The tenant profiles in force, from `tenants_file` (re-read when it changes)."""
        return self.profiles.current()

    def webhook_secret_for(self, tenant: str) -> SecretStr | None:
        """The secret that signs a tenant's notifications: its profile's, else the global one (None: none)."""
        profile = self.tenants.get(tenant)
        return (profile.webhook_secret if profile is not None else None) or self.webhook_secret

    def webhooks_configured(self) -> bool:
        """Whether any notification can be signed: a global secret, or a profile's own."""
        return self.webhook_secret is not None or any(p.webhook_secret for p in self.tenants.values())


def _netloc(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def get_settings(**overrides: Any) -> Settings:
    """Build the settings once at start; every configuration error names the setting."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        name = f"BULKLICENSE_{field.upper()}" if field else "settings"
        raise ConfigError(f"{name}: {first['msg']}") from None
    _ = settings.tenants  # read and validate the profiles now, not in a task
    return settings
