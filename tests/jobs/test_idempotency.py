"""Idempotency keys: claimed once per caller, replayed for the same request, refused for another."""

from __future__ import annotations

import pytest
import redis

from jobs.idempotency import (
    PENDING_TTL_S,
    TTL_S,
    IdempotencyConflict,
    IdempotencyInProgress,
    IdempotencyStore,
    check_key,
    request_fingerprint,
)
from tests.fakes import FakeClock, RecordingSleep

ANSWER = {"id": "job-1", "status": "queued", "total": 3, "warnings": []}


def make_store(client: redis.Redis, sleep: RecordingSleep | None = None,
               clock: FakeClock | None = None) -> IdempotencyStore:
    clock = clock or FakeClock()
    return IdempotencyStore(client, wait_s=1.0, poll_s=0.25, clock=clock, sleep=sleep or RecordingSleep(clock))


def test_the_first_claim_runs_and_later_ones_replay_its_answer(redis_client: redis.Redis) -> None:
    store = make_store(redis_client)
    first = store.claim("hr-portal", "retry-me")
    assert first.owned
    assert 0 < redis_client.ttl(first.record_key) <= PENDING_TTL_S
    store.complete(first, "fp-1", ANSWER)
    assert TTL_S - 5 < redis_client.ttl(first.record_key) <= TTL_S

    again = store.claim("hr-portal", "retry-me")
    assert not again.owned
    assert store.replay(again, "fp-1") == ANSWER
    with pytest.raises(IdempotencyConflict, match="different request"):
        store.replay(again, "fp-2")
    assert "retry-me" not in first.record_key  # the key is hashed into the record's name


def test_keys_are_scoped_per_caller(redis_client: redis.Redis) -> None:
    store = make_store(redis_client)
    store.complete(store.claim("hr-portal", "k"), "fp-1", ANSWER)
    assert store.claim("ops", "k").owned


def test_a_released_key_can_be_claimed_again(redis_client: redis.Redis) -> None:
    store = make_store(redis_client)
    refused = store.claim("ops", "k")
    store.release(refused)
    assert store.claim("ops", "k").owned


def test_release_leaves_someone_elses_claim_alone(redis_client: redis.Redis) -> None:
    store = make_store(redis_client)
    stale = store.claim("ops", "k")
    redis_client.delete(stale.record_key)  # its claim expired and another request took the key
    current = store.claim("ops", "k")
    store.release(stale)
    assert redis_client.get(current.record_key) is not None
    with pytest.raises(IdempotencyInProgress):
        store.claim("ops", "k")


def test_a_claim_waits_for_the_running_request_then_gives_up(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    sleep = RecordingSleep(clock)
    store = make_store(redis_client, sleep, clock)
    store.claim("ops", "k")
    with pytest.raises(IdempotencyInProgress, match="still being processed"):
        store.claim("ops", "k")
    assert sleep.intervals == [0.25] * 4  # polled for wait_s, then gave up


def test_a_waiting_claim_gets_the_answer_when_the_first_request_finishes(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    store_a = make_store(redis_client, clock=clock)
    running = store_a.claim("ops", "k")

    def first_request_finishes(seconds: float) -> None:
        clock.advance(seconds)
        store_a.complete(running, "fp-1", ANSWER)

    store_b = IdempotencyStore(redis_client, wait_s=1.0, poll_s=0.25, clock=clock, sleep=first_request_finishes)
    waited = store_b.claim("ops", "k")
    assert not waited.owned and store_b.replay(waited, "fp-1") == ANSWER


@pytest.mark.parametrize("key", ["a", "x" * 200, "order-42 retry #1", "~!@#$%^&*()"])
def test_valid_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 201, "tab\there", "nul\x00", "caf\u00e9", "line\nbreak"])
def test_invalid_keys(key: str, redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="1 to 200 printable ASCII"):
        check_key(key)
    with pytest.raises(ValueError):
        make_store(redis_client).claim("ops", key)


def test_fingerprints() -> None:
    base = request_fingerprint("ab" * 32, {"tenant": "sim", "dry_run": "false"})
    assert base == request_fingerprint("ab" * 32, {"dry_run": "false", "tenant": "sim"})
    assert base != request_fingerprint("ab" * 32, {"tenant": "other", "dry_run": "false"})
    assert base != request_fingerprint("cd" * 32, {"tenant": "sim", "dry_run": "false"})
    assert base != request_fingerprint("ab" * 32, {"tenant": "sim"})


def test_a_claim_is_kept_alive_only_by_its_holder(redis_client: redis.Redis) -> None:
    store = IdempotencyStore(redis_client, pending_ttl_s=20)
    held = store.claim("ops", "k")
    redis_client.pexpire(held.record_key, 50)
    assert store.keep(held)
    assert 19_000 < redis_client.pttl(held.record_key) <= 20_000
    assert store.keep_alive_s == 5.0
    store.complete(held, "fp-1", ANSWER)
    assert not store.keep(held)  # done: the answer keeps its own 24 h
    assert redis_client.ttl(held.record_key) > 20
