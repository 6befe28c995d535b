"""Quotas per tenant and per API key: how many jobs each may have active, and how many rows they hold.

A job is active from its submission until it ends (queued, planning, running or paused); its rows
are held in Redis meanwhile, and a finished dry run's rows count for `dry_run_hold_s` more (the
time to look at the plan and run it), so that a key cannot pile dry runs into Redis.

Use is derived from the job records, not counted up and down: each scope keeps the ids of the jobs
that count, and every check first drops those that ended, expired or were never committed (their
staging record expired). So nothing needs releasing when a job ends, is cancelled or expires, and a
process dying anywhere (between staging and commit, in a worker) can leave nothing counted for
ever. The check and the taking of a new job's share are one Lua script: two submissions never both
take the last share.

Keys (per scope, `tenant:{name}` or `key:{name}`; they expire with the jobs they count):

    bl:quota:{scope}:holds   zset    job id -> +inf while active; for a finished dry run, when it stops counting
    bl:quota:{scope}:rows    hash    job id -> rows
    bl:quota:{scope}:total   string  rows held (the sum of the hash)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from config import Settings
from jobs.scripts import lua_script

QUOTA_RETRY_AFTER_S = 60


@dataclass(frozen=True)
class QuotaLimits:
    """The caps (0: none)."""

    tenant_active_jobs: int = 0
    tenant_rows: int = 0
    key_active_jobs: int = 0
    key_rows: int = 0
    dry_run_hold_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> QuotaLimits:
        """The quotas configured in `settings`."""
        return cls(tenant_active_jobs=settings.quota_tenant_active_jobs, tenant_rows=settings.quota_tenant_rows,
                   key_active_jobs=settings.quota_key_active_jobs, key_rows=settings.quota_key_rows,
                   dry_run_hold_s=settings.quota_dry_run_hold_hours * 3600)


@dataclass(frozen=True)
class QuotaUse:
    """One quota, what is in use of it and its limit; `requested` is what was asked for on top."""

    quota: str  # tenant_active_jobs, key_rows, ...
    in_use: int
    limit: int
    requested: int = 1

    def to_json(self) -> dict[str, object]:
        """The API's shape."""
        return {"quota": self.quota, "in_use": self.in_use, "limit": self.limit, "requested": self.requested}


class QuotaExceeded(Exception):
    """A submission that would take a tenant or a key past a quota: nothing was created."""

    def __init__(self, use: QuotaUse, retry_after_s: int = QUOTA_RETRY_AFTER_S) -> None:
        unit = "rows" if use.quota.endswith("rows") else "jobs at once"
        asked = f" and this job has {use.requested:,}" if unit == "rows" else ""
        super().__init__(f"quota {use.quota} reached: {use.in_use:,} of {use.limit:,} {unit} in use{asked}; retry when"
                         " a job has ended, or ask the operator to raise the quota")
        self.use = use
        self.retry_after_s = retry_after_s


class QuotaLedger:
    """Checks and takes tenants' and keys' quotas in Redis."""

    def __init__(self, client: redis.Redis, limits: QuotaLimits, *, retention_s: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self._retention_s = retention_s
        self._clock = clock
        self._script = lua_script(client, "quota")
        self._recount = lua_script(client, "quota_recount")

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> QuotaLedger:
        """The ledger of the quotas configured in `settings`."""
        return cls(client, QuotaLimits.from_settings(settings), retention_s=settings.retention_s)

    def check(self, tenant: str, key: str) -> None:
        """QuotaExceeded when the tenant or the key has no room left for even a one-row job."""
        self._run(tenant, key, "", 1)

    def take(self, tenant: str, key: str, job_id: str, rows: int) -> None:
        """Count a new job (of `rows` rows) for its tenant and key, or QuotaExceeded and count nothing."""
        self._run(tenant, key, job_id, rows)

    def recount(self, tenant: str, key: str, job_id: str, rows: int) -> None:
        """Count a job already taken at the rows it holds now (a scan-built job, once its scan found them).

        Never refused: the rows are in Redis already; the next submission sees them counted.
        """
        scopes = (f"tenant:{tenant}", f"key:{key}")
        keys = [f"bl:quota:{scope}:{part}" for scope in scopes for part in ("rows", "total")]
        self._recount(keys=keys, args=[job_id, rows])

    def _run(self, tenant: str, key: str, job_id: str, rows: int) -> None:
        limits = self.limits
        scopes = ((f"tenant:{tenant}", "tenant", limits.tenant_active_jobs, limits.tenant_rows),
                  (f"key:{key}", "key", limits.key_active_jobs, limits.key_rows))
        keys = [f"bl:quota:{scope}:{part}" for scope, *_ in scopes for part in ("holds", "rows", "total")]
        args: list[str | int | float] = [job_id, rows, self._clock(), limits.dry_run_hold_s, "bl:job:",
                                         self._retention_s + int(limits.dry_run_hold_s)]
        for _, _, jobs, held_rows in scopes:
            args += [jobs, held_rows]
        raw = self._script(keys=keys, args=args)
        if int(raw[0]) == 0:
            return
        scope = scopes[int(raw[0]) - 1][1]
        kind = raw[1].decode() if isinstance(raw[1], bytes) else str(raw[1])
        name = f"{scope}_active_jobs" if kind == "jobs" else f"{scope}_rows"
        raise QuotaExceeded(QuotaUse(name, int(raw[2]), int(raw[3]), rows if kind == "rows" else 1))
