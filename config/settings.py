"""The one settings object: environment / .env, plus the tenant profiles file it points to."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

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
        return self

    @property
    def authority(self) -> str:
        """The MSAL authority URL for this tenant."""
        return f"{self.authority_host.rstrip('/')}/{self.tenant_id}"

    @property
    def write_rate_per_s(self) -> float | None:
        """Sustained writes per second the bucket refills at, or None when unlimited."""
        if self.write_capacity is None:
            return None
        return self.write_capacity / self.write_period_s


@dataclass(frozen=True)
class ApiKey:
    """An API key and the tenant profiles it may act on (`*` = all)."""

    key: SecretStr
    tenants: frozenset[str]

    def allows(self, tenant: str) -> bool:
        """Whether this key may act on `tenant`."""
        return "*" in self.tenants or tenant in self.tenants


def parse_api_keys(raw: str) -> tuple[ApiKey, ...]:
    """Parse `key:tenantA|tenantB,key2:*` into API keys."""
    keys: list[ApiKey] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        key, sep, tenants = part.partition(":")
        if not sep or not key or not tenants:
            raise ValueError("each entry must look like KEY:tenant1|tenant2 or KEY:*")
        if len(key) < 8:
            raise ValueError("API keys must be at least 8 characters")
        keys.append(ApiKey(SecretStr(key), frozenset(t.strip() for t in tenants.split("|") if t.strip())))
    return tuple(keys)


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
        if raw.get("write_capacity") in ("none", "unlimited", 0):
            raw["write_capacity"] = None
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


class Settings(BaseSettings):
    """Everything configurable, from the environment (BULKLICENSE_*) or a .env file."""

    model_config = SettingsConfigDict(env_prefix="BULKLICENSE_", env_file=".env", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str | None = None
    tenants_file: Path | None = None
    api_keys: Annotated[tuple[ApiKey, ...], NoDecode] = ()

    # Input limits.
    max_rows: int = Field(default=1_000_000, ge=1)
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    max_cell_chars: int = Field(default=1024, ge=64)
    max_json_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
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
    # A chunk started this many times without finishing (crashes, long-wait hand-backs) fails its
    # remaining users as chunk_failed_repeatedly instead of being requeued for ever.
    max_chunk_runs: int = Field(default=50, ge=2)
    # A job paused for want of seats reads subscribedSkus this often to see whether seats appeared.
    seat_recheck_interval_s: float = Field(default=60.0, gt=0)
    visibility_timeout_s: int = Field(default=6 * 3600, ge=60)
    worker_concurrency: int = Field(default=16, ge=1)
    # Tests and demos only: multiplies Graph's Retry-After values (see worker/timescale.py).
    time_scale: float = Field(default=1.0, gt=0, le=1.0)
    retention_days: float = Field(default=30.0, gt=0)

    # API server.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    log_level: str = "INFO"

    # CLI client commands (submit, status, results, cancel).
    api_url: str = "http://127.0.0.1:8000"
    api_key: SecretStr | None = None

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_api_keys(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_inline_wait_s * 4 > self.visibility_timeout_s:
            raise ValueError("visibility_timeout_s must be well above max_inline_wait_s")
        if self.heartbeat_interval_s * 2 > self.lease_ttl_s:
            raise ValueError("lease_ttl_s must be at least twice heartbeat_interval_s")
        return self

    @property
    def effective_broker_url(self) -> str:
        """The Celery broker URL (the results Redis unless set apart)."""
        return self.broker_url or self.redis_url

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

    def tenant(self, name: str) -> TenantProfile:
        """One profile by name; KeyError when unknown."""
        return self.tenants[name]


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
