"""The audit log: append-only per-tenant streams, ordered reads with filters, trimming by size and age."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import redis

from jobs.audit import SYSTEM_ACTOR, AuditAction, AuditLog, parse_instant
from jobs.models import iso_time
from tests.fakes import FakeClock

DAY_S = 86400


def audit_log(client: redis.Redis, clock: FakeClock, **kwargs: Any) -> AuditLog:
    return AuditLog(client, max_events=kwargs.pop("max_events", 1000), retention_s=kwargs.pop("retention_s", DAY_S),
                    clock=clock, **kwargs)


def test_events_come_back_oldest_first_across_tenants(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    log = audit_log(redis_client, clock)
    log.append("contoso", "hr-portal", AuditAction.SUBMITTED, job="j1", details={"rows": 3, "dry_run": False})
    clock.advance(1)
    log.append("fabrikam", "ops", AuditAction.SUBMITTED, job="j2")
    clock.advance(1)
    log.append("contoso", SYSTEM_ACTOR, AuditAction.STARTED, job="j1")
    clock.advance(1)
    log.append("fabrikam", "ops", AuditAction.CANCELLED, job="j2")

    events = list(log.events(["fabrikam", "contoso"]))
    assert [(e.tenant, e.action, e.job) for e in events] == [
        ("contoso", "submitted", "j1"), ("fabrikam", "submitted", "j2"),
        ("contoso", "started", "j1"), ("fabrikam", "cancelled", "j2"),
    ]
    first = events[0].to_json()
    assert first == {"id": first["id"], "time": iso_time(1_700_000_000.0), "tenant": "contoso", "actor": "hr-portal",
                     "action": "submitted", "job": "j1", "details": {"rows": 3, "dry_run": False}}
    assert [e.tenant for e in log.events(["contoso"])] == ["contoso", "contoso"]
    assert list(log.events([])) == []


def test_since_until_and_job_filters(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    log = audit_log(redis_client, clock)
    for n in range(6):  # one event a minute, jobs alternating
        log.append("contoso", "ops", AuditAction.SUBMITTED, job=f"j{n % 2}", details={"n": n})
        clock.advance(60)
    t0 = 1_700_000_000.0

    def numbers(**filters: object) -> list[int]:
        return [e.details["n"] for e in log.events(["contoso"], **filters)]  # type: ignore[arg-type]

    assert numbers(since=t0 + 120) == [2, 3, 4, 5]  # bounds are inclusive
    assert numbers(until=t0 + 120) == [0, 1, 2]
    assert numbers(since=t0 + 60, until=t0 + 180) == [1, 2, 3]
    assert numbers(since=t0 + 61, until=t0 + 179) == [2]
    assert numbers(job="j1") == [1, 3, 5]
    assert numbers(job="j0", since=t0 + 60) == [2, 4]
    assert numbers(since=t0 + 1000) == []
    # An event's own printed time, given back as `since`, includes it.
    third = list(log.events(["contoso"]))[2]
    assert numbers(since=parse_instant(third.time)) == [2, 3, 4, 5]


def test_reads_page_through_long_streams(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    log = audit_log(redis_client, clock, page_size=3)
    for n in range(10):
        log.append("contoso", "ops", AuditAction.SUBMITTED, details={"n": n})
        if n % 4 == 0:
            clock.advance(0.0004)  # several events share a millisecond
    assert [e.details["n"] for e in log.events(["contoso"])] == list(range(10))
    assert [e.details["n"] for e in log.events(["contoso"], since=clock.t)] == [9]


def test_ids_never_go_backwards_when_a_clock_does(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    log = audit_log(redis_client, clock)
    first = log.append("contoso", "ops", AuditAction.SUBMITTED, job="a")
    clock.advance(-5)  # another process whose clock is behind
    second = log.append("contoso", SYSTEM_ACTOR, AuditAction.STARTED, job="a")
    ms1, seq1 = map(int, first.split("-"))
    ms2, seq2 = map(int, second.split("-"))
    assert (ms2, seq2) == (ms1, seq1 + 1)
    assert [e.action for e in log.events(["contoso"])] == ["submitted", "started"]


def test_old_events_are_trimmed_on_append_and_the_stream_expires(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    log = audit_log(redis_client, clock, retention_s=DAY_S)
    log.append("contoso", "ops", AuditAction.SUBMITTED, job="old")
    clock.advance(DAY_S / 2)
    log.append("contoso", "ops", AuditAction.SUBMITTED, job="middle")
    clock.advance(DAY_S / 2 + 1)
    log.append("contoso", "ops", AuditAction.SUBMITTED, job="new")
    assert [e.job for e in log.events(["contoso"])] == ["middle", "new"]
    assert 0 < redis_client.ttl(log.stream_key("contoso")) <= DAY_S


def test_the_stream_is_bounded_in_size(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    log = audit_log(redis_client, clock, max_events=100)
    for n in range(1000):
        log.append("contoso", "ops", AuditAction.SUBMITTED, details={"n": n})
    length = redis_client.xlen(log.stream_key("contoso"))
    assert 100 <= length < 300  # MAXLEN ~ trims whole stream nodes
    assert list(log.events(["contoso"]))[-1].details == {"n": 999}


def test_trimming_by_size_is_counted_and_logged(redis_client: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    log = audit_log(redis_client, FakeClock(), max_events=100)
    with caplog.at_level(logging.WARNING, logger="jobs.audit"):
        for n in range(1000):
            log.append("contoso", "ops", AuditAction.SUBMITTED, details={"n": n})
    dropped = 1000 - redis_client.xlen(log.stream_key("contoso"))
    assert log.trimmed() == {"contoso": dropped}
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings and all(w.startswith("the audit trail of tenant contoso is full (BULKLICENSE_AUDIT_MAX_EVENTS=100)")
                            for w in warnings)
    assert sum(int(w.split("its ")[1].split(" ")[0]) for w in warnings) == dropped


def test_age_trimming_and_the_refusals_stream_are_not_counted_as_lost(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    log = audit_log(redis_client, clock, max_events=100, max_refusals=100, refusal_window_s=0.001)
    log.append("contoso", "ops", AuditAction.SUBMITTED)
    clock.advance(DAY_S + 1)
    log.append("contoso", "ops", AuditAction.SUBMITTED)
    for n in range(300):
        log.refused("contoso", f"key-{n}", {"request": "GET /v1/audit"})
    assert log.trimmed() == {}


def test_refusals_never_evict_the_real_trail(redis_client: redis.Redis) -> None:
    """M6: a flood of refused requests by keys of another tenant leaves the tenant's history whole."""
    clock = FakeClock()
    log = audit_log(redis_client, clock, max_events=100, max_refusals=100)
    for n in range(50):
        log.append("contoso", "hr-portal", AuditAction.SUBMITTED, job=f"{n:032x}")
    for n in range(3000):  # many keys, so that collapsing per key does not hide the flood
        clock.advance(0.001)
        log.refused("contoso", f"intruder-{n % 600}", {"request": "GET /v1/audit"})
    events = list(log.events(["contoso"]))
    assert [e.job for e in events if e.action == "submitted"] == [f"{n:032x}" for n in range(50)]
    refusals = [e for e in events if e.action == "key_refused"]
    assert 100 <= len(refusals) < 300  # their own stream, bounded on its own
    assert redis_client.xlen(log.stream_key("contoso")) == 50


def test_one_key_s_refusals_are_collapsed_and_counted(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    log = audit_log(redis_client, clock, refusal_window_s=0.3)
    assert log.refused("contoso", "fabrikam-key", {"request": "GET /v1/audit"}) is not None
    for _ in range(4):
        assert log.refused("contoso", "fabrikam-key", {"request": "POST /v1/jobs"}) is None
    assert log.refused("contoso", "other-key", {"request": "POST /v1/jobs"}) is not None  # each key on its own
    assert log.refused("northwind", "fabrikam-key", {"request": "POST /v1/jobs"}) is not None  # each tenant too
    time.sleep(0.35)  # the window (a Redis expiry) has passed
    clock.advance(1)
    assert log.refused("contoso", "fabrikam-key", {"request": "POST /v1/jobs"}) is not None
    mine = [(e.actor, e.details) for e in log.events(["contoso"]) if e.actor == "fabrikam-key"]
    assert mine == [("fabrikam-key", {"request": "GET /v1/audit", "suppressed": 0}),
                    ("fabrikam-key", {"request": "POST /v1/jobs", "suppressed": 4})]
    assert all(e.action == "key_refused" and e.job is None for e in log.events(["contoso"]))


def test_refuses_what_is_not_an_event(redis_client: redis.Redis) -> None:
    log = audit_log(redis_client, FakeClock())
    with pytest.raises(ValueError, match="4096 bytes"):
        log.append("contoso", "ops", AuditAction.SUBMITTED, details={"blob": "x" * 5000})
    with pytest.raises(ValueError):
        log.append("contoso", "ops", "renamed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tenant and an actor"):
        log.append("", "ops", AuditAction.SUBMITTED)
    assert redis_client.exists(log.stream_key("contoso")) == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("1700000000", 1_700_000_000.0),
    ("1700000000.25", 1_700_000_000.25),
    ("2023-11-14T22:13:20Z", 1_700_000_000.0),
    ("2023-11-14T22:13:20.500Z", 1_700_000_000.5),
    ("2023-11-14T22:13:20", 1_700_000_000.0),  # no offset: UTC
    ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
    ("2023-11-14", 1_699_920_000.0),
])
def test_instants(text: str, expected: float) -> None:
    assert parse_instant(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "", "2023-13-01", "-5", "1e9"])
def test_bad_instants(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text)
