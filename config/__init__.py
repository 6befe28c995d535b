"""Configuration: one Settings object (environment / .env) and the tenant profiles it points to."""

from config.settings import (
    GRAPH_WRITE_CAPACITY,
    GRAPH_WRITE_PERIOD_S,
    ApiKey,
    ConfigError,
    KeyScope,
    LogFormat,
    Settings,
    TenantProfile,
    get_settings,
    key_label,
    load_tenants,
    parse_api_keys,
)

__all__ = [
    "GRAPH_WRITE_CAPACITY",
    "GRAPH_WRITE_PERIOD_S",
    "ApiKey",
    "ConfigError",
    "KeyScope",
    "LogFormat",
    "Settings",
    "TenantProfile",
    "get_settings",
    "key_label",
    "load_tenants",
    "parse_api_keys",
]
