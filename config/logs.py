"""Logging for every process, set up in one place: text or JSON lines, job context, secrets masked.

`log_context(job=..., chunk=...)` names what the current thread works on; every line logged inside
it carries those fields (in JSON: `job`, `tenant`, `chunk`). Whatever the format, the values of the
configured secrets and the passwords of URLs are replaced by `***` before a line is written; the
tenant profiles' secrets (every secret field of a profile) follow the profiles file as it is reloaded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, SecretStr

from config.settings import LogFormat, Settings, TenantProfile

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("job", "tenant", "chunk")
MASK = "***"
# Shorter values would mask ordinary words; no configured secret is that short in practice.
MIN_SECRET_CHARS = 4
# `scheme://user:password@host`: the password of any URL that reaches a log line.
URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)([^\s@/]+)(@)")

_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("bulklicense_log_context", default=_NO_FIELDS)
_http_lines_hidden: ContextVar[bool] = ContextVar("bulklicense_http_lines_hidden", default=False)
# Loggers of the HTTP client, whose request lines show whole URLs.
HTTP_LOGGERS = ("httpx", "httpcore")


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Lines logged inside carry these fields (added to any already set); restored on exit."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def bind_log_fields(**fields: Any) -> None:
    """Add fields to the current context; the enclosing `log_context` drops them on exit."""
    _context.set({**_context.get(), **fields})


def current_log_fields() -> Mapping[str, Any]:
    """The fields of the current context."""
    return _context.get()


@contextlib.contextmanager
def http_lines_hidden() -> Iterator[None]:
    """Leave out the HTTP client's own lines inside: for requests to URLs that may hold someone's secret."""
    token = _http_lines_hidden.set(True)
    try:
        yield
    finally:
        _http_lines_hidden.reset(token)


class _HideHttpLines(logging.Filter):
    """Drops the HTTP client's lines where `http_lines_hidden` is in force."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_http_lines_hidden.get() and record.name.startswith(HTTP_LOGGERS))


class Redactor:
    """Replaces secret values and URL passwords in text with `***`.

    With `profiles`, the secrets of the tenant profiles it returns are masked too, followed as the
    profiles are reloaded; a secret once seen stays masked (a rotated one may still be in flight).
    """

    def __init__(self, secrets: Iterable[str] = (), *,
                 profiles: Callable[[], Mapping[str, BaseModel]] | None = None) -> None:
        self._known = {s for s in secrets if len(s) >= MIN_SECRET_CHARS}
        self._profiles = profiles
        self._seen: Mapping[str, BaseModel] | None = None
        self._secrets = self._ordered()

    def __call__(self, text: str) -> str:
        self._follow_profiles()
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text)

    def _follow_profiles(self) -> None:
        """Take in the secrets of profiles loaded since the last line (cheap when nothing was reloaded)."""
        current = None if self._profiles is None else self._profiles()
        if current is None or current is self._seen:
            return
        self._seen = current
        self._known |= {s for profile in current.values() for s in profile_secrets(profile)
                        if len(s) >= MIN_SECRET_CHARS}
        self._secrets = self._ordered()

    def _ordered(self) -> list[str]:
        """Longest first, so a secret containing another is masked whole."""
        return sorted(self._known, key=len, reverse=True)


def profile_secrets(profile: BaseModel) -> list[str]:
    """Every secret a tenant profile holds: the value of each of its secret fields, whatever its name."""
    return [value.get_secret_value() for _, value in profile if isinstance(value, SecretStr)]


class TextFormatter(logging.Formatter):
    """The classic one-line format, masked."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the job context, any exception."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": self._redact(record.getMessage()),
        }
        context = current_log_fields()
        entry.update((name, context[name]) for name in CONTEXT_FIELDS if name in context)
        if record.exc_info:
            entry["exception"] = self._redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = self._redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = self._redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def secrets_of(settings: Settings, profiles: Iterable[TenantProfile] | None = None) -> list[str]:
    """Every secret value the settings hold: API keys, tokens, tenant credentials, URL passwords.

    `profiles`: the tenant profiles to take secrets from (by default the ones in force).
    """
    values = [key.key.get_secret_value() for key in settings.api_keys]
    values += [s.get_secret_value() for s in (settings.api_key, settings.webhook_secret, settings.metrics_token,
                                              settings.redis_sentinel_password)
               if s is not None]
    for profile in settings.tenants.values() if profiles is None else profiles:
        values += profile_secrets(profile)
    for url in (settings.redis_url, settings.broker_url or ""):
        match = URL_PASSWORD.search(url)
        if match:
            values += [match.group(2), unquote(match.group(2))]
    return values


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure_logging` installs (and replaces when called again)."""


def configure_logging(settings: Settings, *, stream: Any = None) -> None:
    """Send every log line of this process to stderr (or `stream`) in the configured format, masked.

    Calling it again replaces what an earlier call installed; other handlers are left alone.
    """
    redact = Redactor(secrets_of(settings), profiles=settings.profiles.loaded)
    formatter: logging.Formatter = (JsonFormatter(redact) if settings.log_format is LogFormat.JSON
                                    else TextFormatter(redact))
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_HideHttpLines())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.captureWarnings(True)  # Python warnings become log lines too (one format for everything)
