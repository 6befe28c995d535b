"""Quotas per tenant and key, derived from the job records: taken atomically, given back by the jobs' ends."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from jobs.quotas import QuotaExceeded, QuotaLedger, QuotaLimits


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def job(client: redis.Redis, job_id: str, *, state: str = "queued", dry_run: bool = False,
        finished_at: float | None = None) -> None:
    """A job record as the store writes it (only the fields quotas read)."""
    fields = {"state": state, "dry_run": "1" if dry_run else "0", "total": 1}
    if finished_at is not None:
        fields["finished_at"] = finished_at
    client.hset(f"bl:job:{job_id}", mapping=fields)  # type: ignore[arg-type]


def refusal(ledger: QuotaLedger, tenant: str, key: str, job_id: str, rows: int) -> tuple[str, int, int, int]:
    with pytest.raises(QuotaExceeded) as exc:
        ledger.take(tenant, key, job_id, rows)
    use = exc.value.use
    return use.quota, use.in_use, use.limit, use.requested


def test_active_jobs_are_capped_per_key_and_per_tenant(redis_client: redis.Redis) -> None:
    ledger = QuotaLedger(redis_client, QuotaLimits(tenant_active_jobs=3, key_active_jobs=2), retention_s=3600)
    for n in (1, 2):
        job(redis_client, f"a{n}")
        ledger.take("contoso", "hr", f"a{n}", 10)
    assert refusal(ledger, "contoso", "hr", "a3", 10) == ("key_active_jobs", 2, 2, 1)
    job(redis_client, "b1")
    ledger.take("contoso", "ops", "b1", 10)
    assert refusal(ledger, "contoso", "ops", "b2", 10) == ("tenant_active_jobs", 3, 3, 1)
    ledger.take("fabrikam", "ops", "c1", 10)  # another tenant: its own count
    with pytest.raises(QuotaExceeded):
        ledger.check("contoso", "ops")
    # A job that ended, one that expired and one never committed (its record gone) count no more.
    job(redis_client, "a1", finished_at=1.0)
    ledger.check("contoso", "ops")
    redis_client.delete("bl:job:a2")
    for name in ("a4", "a5"):
        job(redis_client, name)
        ledger.take("contoso", "hr", name, 10)
    assert refusal(ledger, "contoso", "hr", "a6", 10) == ("tenant_active_jobs", 3, 3, 1)  # a4, a5 and b1


def test_rows_held_are_capped_and_a_dry_run_counts_a_while_after_it_ends(redis_client: redis.Redis) -> None:
    clock = Clock()
    ledger = QuotaLedger(redis_client, QuotaLimits(key_rows=100, tenant_rows=150, dry_run_hold_s=3600),
                         retention_s=86400, clock=clock)
    job(redis_client, "dry", dry_run=True)
    ledger.take("contoso", "hr", "dry", 60)
    assert refusal(ledger, "contoso", "hr", "big", 41) == ("key_rows", 60, 100, 41)
    job(redis_client, "other")
    ledger.take("contoso", "ops", "other", 80)
    assert refusal(ledger, "contoso", "ops", "more", 11) == ("tenant_rows", 140, 150, 11)
    job(redis_client, "dry", dry_run=True, finished_at=clock.now)  # planned: still held, for the hold's length
    assert refusal(ledger, "contoso", "hr", "big", 41) == ("tenant_rows", 140, 150, 41)
    clock.now += 3601
    job(redis_client, "big")
    ledger.take("contoso", "hr", "big", 41)
    assert int(redis_client.get("bl:quota:key:hr:total") or 0) == 41
    assert redis_client.ttl("bl:quota:key:hr:holds") > 86400


def test_a_job_waiting_for_approval_holds_its_rows_like_a_dry_run(redis_client: redis.Redis) -> None:
    clock = Clock()
    ledger = QuotaLedger(redis_client, QuotaLimits(key_rows=100, dry_run_hold_s=3600), retention_s=86400,
                         clock=clock)
    job(redis_client, "waits")
    redis_client.hset("bl:job:waits", "needs_approval", "1")
    ledger.take("contoso", "hr", "waits", 60)
    redis_client.hset("bl:job:waits", "finished_at", clock.now)  # planned: it waits, its rows in Redis
    assert refusal(ledger, "contoso", "hr", "next", 41) == ("key_rows", 60, 100, 41)
    clock.now += 3601
    job(redis_client, "next")
    ledger.take("contoso", "hr", "next", 41)


def test_a_staged_job_counts_until_its_staging_record_expires(redis_client: redis.Redis) -> None:
    """An API process that dies between taking the quota and committing leaves a record that expires."""
    ledger = QuotaLedger(redis_client, QuotaLimits(key_active_jobs=1), retention_s=3600)
    job(redis_client, "staged", state="staging")
    redis_client.expire("bl:job:staged", 1)
    ledger.take("contoso", "hr", "staged", 5)
    assert refusal(ledger, "contoso", "hr", "next", 5)[0] == "key_active_jobs"
    redis_client.delete("bl:job:staged")  # what its expiry does
    ledger.take("contoso", "hr", "next", 5)


def test_concurrent_submissions_never_take_more_than_the_quota(redis_url: str) -> None:
    limits = QuotaLimits(tenant_active_jobs=5)

    def submit(n: int) -> bool:
        client = redis.Redis.from_url(redis_url)
        try:
            job(client, f"j{n}")
            QuotaLedger(client, limits, retention_s=3600).take("contoso", f"key{n}", f"j{n}", 1)
            return True
        except QuotaExceeded:
            return False
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        taken = list(pool.map(submit, range(40)))
    assert sum(taken) == 5
