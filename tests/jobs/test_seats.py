"""The seat ledger on a real Redis: atomic check-and-reserve across jobs, release, cleanup."""

from __future__ import annotations

import threading

import redis

from jobs.seats import SeatLedger

E3 = "sku-e3"


def test_second_job_cannot_count_on_seats_the_first_reserved(redis_client: redis.Redis) -> None:
    ledger = SeatLedger(redis_client, retention_s=60)
    assert ledger.reserve("contoso", "job-a", {E3: 8}, {E3: 10}) == {}
    assert ledger.reserve("contoso", "job-b", {E3: 3}, {E3: 10}) == {E3: 1}
    assert ledger.held("job-b") == {}  # a refused job holds nothing
    assert ledger.held_by_others("contoso", "job-b") == {E3: 8}


def test_reservation_shrinks_and_is_dropped(redis_client: redis.Redis) -> None:
    ledger = SeatLedger(redis_client, retention_s=60)
    ledger.reserve("contoso", "job-a", {E3: 2}, {E3: 2})
    assert ledger.release("job-a", E3) == 1
    assert ledger.release("job-a", E3, 5) == 0
    assert ledger.held("job-a") == {}
    ledger.reserve("contoso", "job-a", {E3: 2}, {E3: 2})
    ledger.release_all("contoso", "job-a")
    assert ledger.held_by_others("contoso") == {}


def test_a_job_that_waits_for_seats_reserves_only_what_is_free(redis_client: redis.Redis) -> None:
    """It cannot squat the tenant's seats: those bought later go to whichever job asks first."""
    ledger = SeatLedger(redis_client, retention_s=60)
    assert ledger.reserve("contoso", "job-a", {E3: 1000}, {E3: 10}, force=True) == {E3: 990}
    assert ledger.held("job-a") == {E3: 10}
    assert ledger.reserve("contoso", "job-b", {E3: 1}, {E3: 10}) == {E3: 1}
    assert ledger.reserve("contoso", "job-b", {E3: 1}, {E3: 60}) == {}  # 50 seats bought
    assert ledger.reserve("contoso", "job-c", {E3: 100}, {E3: 60}, force=True) == {E3: 51}
    assert ledger.held("job-c") == {E3: 49}


def test_tenants_do_not_share_seats(redis_client: redis.Redis) -> None:
    ledger = SeatLedger(redis_client, retention_s=60)
    assert ledger.reserve("contoso", "job-a", {E3: 10}, {E3: 10}) == {}
    assert ledger.reserve("fabrikam", "job-b", {E3: 10}, {E3: 10}) == {}


def test_concurrent_reservations_for_the_last_seats(redis_client: redis.Redis, redis_url: str) -> None:
    results: dict[str, dict[str, int]] = {}
    barrier = threading.Barrier(20)

    def submit(i: int) -> None:
        ledger = SeatLedger(redis.Redis.from_url(redis_url), retention_s=60)
        barrier.wait()
        results[f"job-{i}"] = ledger.reserve("contoso", f"job-{i}", {E3: 1}, {E3: 5})

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for short in results.values() if not short) == 5
    assert SeatLedger(redis_client, retention_s=60).held_by_others("contoso") == {E3: 5}
