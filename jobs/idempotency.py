"""Idempotent submissions: a client's idempotency key stands for the first job it created, for 24 h.

Keys:

    bl:idem:{scope}:{sha256 of the key}   string  {"state": "pending", "token"} while the first request
                                                  runs (kept alive by it, lapses PENDING_TTL_S after it
                                                  stops), then {"state": "done", "fingerprint", "answer"}
                                                  for TTL_S

The scope is the caller's API key name, so two callers never share a key. The first request claims
the key with SET NX and keeps the claim alive while it runs; one arriving meanwhile waits up to
`wait_s` for its answer, then gives up (IdempotencyInProgress). A refused submission gives its claim
back, so the key can be used again; a claim whose holder died (or could not give it back because
Redis was away) lapses by itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis

TTL_S = 24 * 3600
PENDING_TTL_S = 20  # a claim not kept alive for this long is abandoned
WAIT_S = 10.0
POLL_S = 0.05
MAX_KEY_CHARS = 200
VALID_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_CHARS}}}")  # printable ASCII


class IdempotencyConflict(Exception):
    """The key was already used for a different request."""


class IdempotencyInProgress(Exception):
    """The first request with this key is still running."""


@dataclass(frozen=True)
class Claim:
    """A claimed key: ours to use (`token` set), or done by an earlier request (`fingerprint`, `answer`)."""

    record_key: str
    token: str | None
    fingerprint: str | None = None
    answer: Mapping[str, Any] | None = None

    @property
    def owned(self) -> bool:
        """Whether this request runs the submission."""
        return self.token is not None


def check_key(key: str) -> str:
    """The key if it is 1-200 printable ASCII characters; ValueError otherwise."""
    if not VALID_KEY.fullmatch(key):
        raise ValueError(f"an idempotency key is 1 to {MAX_KEY_CHARS} printable ASCII characters")
    return key


def request_fingerprint(body_sha256: str, parameters: Mapping[str, str]) -> str:
    """What makes two requests the same: the body's SHA-256 and the parameters (tenant, options)."""
    canonical = json.dumps({"body": body_sha256, "parameters": sorted(parameters.items())}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyStore:
    """Claims, completes and gives back idempotency keys in Redis."""

    def __init__(self, client: redis.Redis, *, ttl_s: int = TTL_S, pending_ttl_s: float = PENDING_TTL_S,
                 wait_s: float = WAIT_S, poll_s: float = POLL_S, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self.pending_ttl_s = pending_ttl_s
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.clock = clock
        self.sleep = sleep
        script = (resources.files("jobs") / "lua" / "idempotency_claim.lua").read_text(encoding="utf-8")
        self._pending_claim = client.register_script(script)

    @property
    def keep_alive_s(self) -> float:
        """How often the holder of a claim renews it."""
        return self.pending_ttl_s / 4

    @staticmethod
    def record_key(scope: str, key: str) -> str:
        """Where a caller's key is recorded (the key itself hashed: any printable text is allowed)."""
        return f"bl:idem:{scope}:{hashlib.sha256(key.encode()).hexdigest()}"

    def claim(self, scope: str, key: str) -> Claim:
        """Claim the key, or return what the earlier request with it answered; waits (sleeping) while it runs."""
        deadline = self.clock() + self.wait_s
        while True:
            claim = self.try_claim(scope, key)
            if claim is not None:
                return claim
            if self.clock() >= deadline:
                raise IdempotencyInProgress("a request with this idempotency key is still being processed")
            self.sleep(self.poll_s)

    def try_claim(self, scope: str, key: str) -> Claim | None:
        """Claim the key, or return what the earlier request with it answered; None while that one runs."""
        record_key = self.record_key(scope, check_key(key))
        token = uuid.uuid4().hex
        while True:
            if self.redis.set(record_key, _pending(token), nx=True, px=int(self.pending_ttl_s * 1000)):
                return Claim(record_key, token)
            raw = self.redis.get(record_key)
            if raw is None:
                continue  # given back (or expired) in between: claim it again
            record = json.loads(raw)
            if record.get("state") == "done":
                return Claim(record_key, None, record["fingerprint"], record["answer"])
            return None

    def complete(self, claim: Claim, fingerprint: str, answer: Mapping[str, Any]) -> None:
        """Record the answer to the claimed key's request, kept for `ttl_s`."""
        record = {"state": "done", "fingerprint": fingerprint, "answer": dict(answer)}
        self.redis.set(claim.record_key, json.dumps(record, separators=(",", ":")), ex=self.ttl_s)

    def keep(self, claim: Claim) -> bool:
        """Renew our claim for another `pending_ttl_s`; False if it is no longer ours."""
        ttl_ms = int(self.pending_ttl_s * 1000)
        return claim.token is not None and bool(
            self._pending_claim(keys=[claim.record_key], args=[_pending(claim.token), ttl_ms]))

    def release(self, claim: Claim) -> None:
        """Give the key back (the request was refused), unless it is no longer our claim."""
        if claim.token is not None:
            self._pending_claim(keys=[claim.record_key], args=[_pending(claim.token), 0])

    @staticmethod
    def replay(claim: Claim, fingerprint: str) -> Mapping[str, Any]:
        """The earlier answer, if this request is the same as the earlier one; IdempotencyConflict if not."""
        if claim.answer is None or claim.fingerprint != fingerprint:
            raise IdempotencyConflict(
                "this idempotency key was already used for a different request (body, tenant or options);"
                " use a new key for a new submission"
            )
        return claim.answer


def _pending(token: str) -> str:
    """The record of a claim in progress."""
    return json.dumps({"state": "pending", "token": token}, separators=(",", ":"))
