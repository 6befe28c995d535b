"""The executor (run_users) against a stateful fake Graph (MockTransport) and a real Redis store."""

from __future__ import annotations

import dataclasses
import json
import random
import threading
from typing import Any

import httpx
import pytest

from graphclient.client import GraphClient
from jobs.counters import PlanCounters
from jobs.events import JobEvent, Listeners
from jobs.executor import ChunkDeps, HandBack, Parked, run_users
from jobs.models import LicenseMode
from jobs.record import JobSpec
from jobs.store import JobStore, WriteGate
from tests.fakes import FakeClock, RecordingThrottle, Tenant
from tests.jobs.helpers import E3, EMS, SWAY, job, make_deps, op, results, user


def test_adds_removes_swaps_and_usage_location(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user(), "b@x": user(EMS), "c@x": user(location=None), "d@x": user(E3)})
    job_id = job(store, [op(2, "a@x", add=(E3,), plans=(SWAY,)), op(3, "b@x", remove=(EMS,)),
                         op(4, "c@x", add=(EMS,), location="GB"), op(5, "d@x", add=(EMS,), remove=(E3,))])
    deps, _ = make_deps(store, tenant, clock)
    assert run_users(deps, job_id, 0, budget_started_at=clock()) == 4
    assert {u: r.status.value for u, r in results(store, job_id).items()} == dict.fromkeys(
        ["a@x", "b@x", "c@x", "d@x"], "succeeded")
    assert tenant.users["a@x"]["assignedLicenses"] == [{"skuId": E3, "disabledPlans": [SWAY]}]
    assert tenant.users["b@x"]["assignedLicenses"] == []
    assert tenant.users["c@x"] == {"usageLocation": "GB", "assignedLicenses": [{"skuId": EMS, "disabledPlans": []}]}
    assert tenant.users["d@x"]["assignedLicenses"] == [{"skuId": EMS, "disabledPlans": []}]
    # The swap was one call; the location was set before the assignment; nothing was sent twice.
    assert tenant.writes.count(("POST", "d@x")) == 1
    assert [w for w in tenant.writes if w[1] == "c@x"] == [("PATCH", "c@x"), ("POST", "c@x")]
    assert len(tenant.writes) == 5


def test_an_unchanged_usage_location_is_not_written(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user(location="US")})
    job_id = job(store, [op(2, "a@x", add=(EMS,), location="US")])
    deps, _ = make_deps(store, tenant, clock)
    run_users(deps, job_id, 0, budget_started_at=clock())
    assert tenant.writes == [("POST", "a@x")]


def test_ambiguous_failure_reads_back_instead_of_resending(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user(EMS), "b@x": user()})
    sent = {"n": 0}

    def drop_first_answer() -> Exception | None:
        if not tenant.writes:
            return None  # the reads of the plan go through
        sent["n"] += 1  # the writes were applied, but the answer never arrives
        return httpx.ReadTimeout("timed out") if sent["n"] == 1 else None

    tenant.batch_fault = drop_first_answer
    job_id = job(store, [op(2, "a@x", remove=(EMS,)), op(3, "b@x", add=(E3,))])
    deps, sleep = make_deps(store, tenant, clock)
    run_users(deps, job_id, 0, budget_started_at=clock())
    got = results(store, job_id)
    assert got["a@x"].status.value == "succeeded"  # not "license_not_assigned" from a blind resend
    assert got["a@x"].detail == "already in the requested state"
    assert got["b@x"].status.value == "succeeded"
    assert tenant.writes == [("POST", "a@x"), ("POST", "b@x")]  # each write reached Graph once
    # One backoff (full jitter, base 1 s) per user before the read-back.
    assert len(sleep.intervals) == 2 and all(0 <= i <= 1.0 for i in sleep.intervals)


def test_after_a_crash_users_with_a_write_in_flight_are_read_first(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user(), "b@x": user()})
    job_id = job(store, [op(2, "a@x", add=(E3,)), op(3, "b@x", add=(E3,))])
    # A previous worker planned row 2 (keeping its before state), sent its write, Graph applied
    # it, then the worker died.
    store.save_plans(job_id, [(2, {"assignedLicenses": [], "usageLocation": "US"}, ["changes", f"need:{E3}"])])
    assert store.begin_writes(job_id, "dead-batch", clock() + 30, [2]) is WriteGate.FIRST
    tenant.users["a@x"]["assignedLicenses"] = [{"skuId": E3, "disabledPlans": []}]
    deps, _ = make_deps(store, tenant, clock)
    run_users(deps, job_id, 0, budget_started_at=clock())
    got = results(store, job_id)
    assert (got["a@x"].status.value, got["a@x"].detail) == ("succeeded", "already in the requested state")
    assert got["a@x"].attempts == 2  # the write before the crash + the read
    assert got["a@x"].before == {"assignedLicenses": [], "usageLocation": "US"}  # as first planned
    assert tenant.writes == [("POST", "b@x")]
    assert store.plan_counters(job_id) == PlanCounters(planned=2, changes=2, needed={E3: 2})  # row 2 counted once


def test_a_redelivered_chunk_records_nothing_twice(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user(), "b@x": user()})
    job_id = job(store, [op(2, "a@x", add=(E3,)), op(3, "b@x", add=(E3,))])
    deps, _ = make_deps(store, tenant, clock)
    assert run_users(deps, job_id, 0, budget_started_at=clock()) == 2
    assert run_users(deps, job_id, 0, budget_started_at=clock()) == 0
    progress = store.progress(job_id)
    assert progress is not None and (progress.succeeded, progress.pending) == (2, 0)
    assert len(tenant.writes) == 2


def test_throttled_items_wait_their_retry_after_then_succeed(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user(), "b@x": user()})
    left = {"n": 2}

    def throttle_a(method: str, upn: str) -> httpx.Response | None:
        if method == "POST" and upn == "a@x" and left["n"]:
            left["n"] -= 1
            return httpx.Response(429, headers={"Retry-After": "2.5"}, json={"error": {"code": "TooManyRequests"}})
        return None

    tenant.faults.append(throttle_a)
    job_id = job(store, [op(2, "a@x", add=(E3,)), op(3, "b@x", add=(E3,))])
    deps, sleep = make_deps(store, tenant, clock)
    run_users(deps, job_id, 0, budget_started_at=clock())
    assert sleep.intervals == [2.5, 2.5]
    got = results(store, job_id)
    assert got["a@x"].status.value == "succeeded" and got["a@x"].attempts == 4  # read, 429, 429, write
    progress = store.progress(job_id)
    assert progress is not None and (progress.throttled, progress.retries) == (2, 2)
    assert tenant.writes.count(("POST", "b@x")) == 1  # the other item was not resent


def test_transient_failures_give_up_after_the_attempt_cap(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user()})
    tenant.faults.append(lambda m, u: httpx.Response(503, json={"error": {"code": "ServiceUnavailable",
                                                                          "message": "try later"}}))
    job_id = job(store, [op(2, "a@x", add=(E3,))])
    deps, sleep = make_deps(store, tenant, clock, max_attempts=3)
    run_users(deps, job_id, 0, budget_started_at=clock())
    got = results(store, job_id)
    assert (got["a@x"].status.value, got["a@x"].reason, got["a@x"].http_status) == ("failed", "retries_exhausted", 503)
    assert got["a@x"].attempts == 3
    # Full jitter from the injected RNG: uniform up to base 1 s, then up to 2 s (the sleeps are
    # differences of epoch timestamps, hence the float tolerance).
    rng = random.Random(1)
    assert sleep.intervals == pytest.approx([rng.uniform(0.0, 1.0), rng.uniform(0.0, 2.0)], abs=1e-6)


def test_permanent_errors_are_not_retried(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user()})
    job_id = job(store, [op(2, "ghost@x", add=(E3,)), op(3, "a@x", remove=(EMS,))])
    deps, sleep = make_deps(store, tenant, clock)
    run_users(deps, job_id, 0, budget_started_at=clock())
    got = results(store, job_id)
    assert (got["ghost@x"].reason, got["ghost@x"].graph_code, got["ghost@x"].attempts) == (
        "user_not_found", "Request_ResourceNotFound", 1)
    # Removing a license the user does not hold is known from the read: no write is sent.
    assert (got["a@x"].reason, got["a@x"].http_status) == ("license_not_assigned", None)
    assert got["a@x"].detail == "known from the user's state; nothing was sent"
    assert sleep.intervals == [] and tenant.writes == []


def test_a_long_retry_after_hands_the_chunk_back(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user(), "b@x": user()})
    tenant.faults.append(lambda m, u: httpx.Response(429, headers={"Retry-After": "300"}, json={})
                         if u == "a@x" else None)
    job_id = job(store, [op(2, "a@x", add=(E3,)), op(3, "b@x", add=(E3,))])
    deps, sleep = make_deps(store, tenant, clock, max_inline_wait_s=30)
    with pytest.raises(HandBack) as handed:
        run_users(deps, job_id, 0, budget_started_at=clock())
    assert handed.value.countdown_s == pytest.approx(300)
    assert sleep.intervals == []  # the slot was not held
    assert set(results(store, job_id)) == {"b@x"}  # finished users are kept; a@x is still pending


def test_cancel_before_and_during_a_chunk(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({f"u{i}@x": user() for i in range(5)})
    job_id = job(store, [op(i + 2, f"u{i}@x", add=(E3,)) for i in range(5)])
    deps, _ = make_deps(store, tenant, clock, batch_size=2)
    # The cancel arrives during the first round of writes (after the first round of reads).
    tenant.after_round = lambda: store.request_cancel(job_id) if tenant.writes else None
    run_users(deps, job_id, 0, budget_started_at=clock())
    statuses = [r.status.value for r in results(store, job_id).values()]
    assert statuses.count("succeeded") == 2 and statuses.count("cancelled") == 3
    assert len(tenant.writes) == 2  # no write after the cancel


def test_a_dry_run_reads_and_plans_but_never_writes(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user(), "b@x": user(E3), "c@x": user(location=None), "d@x": user(E3)})
    ops = [op(2, "a@x", add=(E3,)), op(3, "b@x", add=(E3,)), op(4, "c@x", add=(EMS,)),
           op(5, "d@x", remove=(EMS,)), op(6, "ghost@x", add=(E3,)), op(7, "d@x2", location="GB")]
    tenant.users["d@x2"] = user(location="US")
    store.stage("job", "sim", ops, 100)
    store.commit("job", JobSpec(source="csv", dry_run=True))
    deps, _ = make_deps(store, tenant, clock)
    assert run_users(deps, "job", 0, budget_started_at=clock()) == 6
    got = {u: (r.status.value, r.reason) for u, r in results(store, "job").items()}
    assert got == {"a@x": ("would_change", None), "b@x": ("unchanged", None),
                   "c@x": ("would_fail", "usage_location_missing"), "d@x": ("would_fail", "license_not_assigned"),
                   "ghost@x": ("would_fail", "user_not_found"), "d@x2": ("would_change", None)}
    assert tenant.writes == []
    a = results(store, "job")["a@x"]
    assert a.before == {"assignedLicenses": [], "usageLocation": "US", "userPrincipalName": "a@x"}
    assert a.after is None
    assert store.plan_counters("job") == PlanCounters(
        planned=6, changes=2, unchanged=1, needed={E3: 1},
        predicted_failures={"usage_location_missing": 1, "license_not_assigned": 1, "user_not_found": 1})
    progress = store.progress("job")
    assert progress is not None and progress.status.value == "planned" and progress.pending == 0


def test_a_real_job_writes_only_what_differs(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user(), "b@x": user(E3)})
    job_id = job(store, [op(2, "a@x", add=(E3,)), op(3, "b@x", add=(E3,))])
    deps, _ = make_deps(store, tenant, clock)
    run_users(deps, job_id, 0, budget_started_at=clock())
    got = results(store, job_id)
    assert (got["a@x"].status.value, got["b@x"].status.value) == ("succeeded", "unchanged")
    assert got["a@x"].after == {"assignedLicenses": [{"skuId": E3, "disabledPlans": []}], "usageLocation": "US",
                                "userPrincipalName": "a@x"}
    assert got["b@x"].after is None and got["b@x"].before is not None
    assert tenant.writes == [("POST", "a@x")]
    progress = store.progress(job_id)
    assert progress is not None and (progress.succeeded, progress.unchanged, progress.pending) == (1, 1, 0)


def test_seats_running_out_pause_the_job_instead_of_failing_users(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user(), "b@x": user()})
    no_seat = {"error": {"code": "Request_BadRequest",
                         "message": "Subscription for SKU does not have any available licenses."}}
    tenant.faults.append(lambda m, u: httpx.Response(400, json=no_seat) if (m, u) == ("POST", "b@x") else None)
    job_id = job(store, [op(2, "a@x", add=(E3,)), op(3, "b@x", add=(E3,))])
    deps, _ = make_deps(store, tenant, clock)
    with pytest.raises(Parked):
        run_users(deps, job_id, 0, budget_started_at=clock())
    assert set(results(store, job_id)) == {"a@x"}  # b@x waits, neither failed nor charged as a retry
    progress = store.progress(job_id)
    assert progress is not None and progress.status.value == "paused"
    assert progress.paused_reason == "no_free_seat" and progress.eta_s is None
    assert progress.next_probe_at == pytest.approx(clock() + 60)
    # While paused no write goes out: a redelivered chunk parks again before writing.
    tenant.faults.clear()
    writes = list(tenant.writes)
    with pytest.raises(Parked):
        run_users(deps, job_id, 0, budget_started_at=clock())
    assert tenant.writes == writes
    assert store.resume(job_id) == []  # nothing parked in this unit test (parking is the chunk's job)
    run_users(deps, job_id, 0, budget_started_at=clock())
    assert results(store, job_id)["b@x"].status.value == "succeeded"


class RecordingListener:
    """A JobListener that keeps what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.finished: list[str] = []

    def job_event(self, job_id: str, tenant: str, event: JobEvent, details: Any) -> None:
        self.events.append((event.value, dict(details)))

    def users_finished(self, job_id: str, tenant: str, results: Any) -> None:
        self.finished += [r.user for r in results]


def test_listeners_hear_the_plan_finish_the_first_write_and_every_user(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({f"u{i}@x": user() for i in range(3)} | {"held@x": user(E3)})
    job_id = job(store, [op(i + 2, f"u{i}@x", add=(E3,)) for i in range(3)] + [op(5, "held@x", add=(E3,))])
    deps, _ = make_deps(store, tenant, clock, batch_size=2)
    listener = RecordingListener()
    deps = dataclasses.replace(deps, events=Listeners([listener]))
    run_users(deps, job_id, 0, budget_started_at=clock())
    assert [name for name, _ in listener.events] == ["started", "plan_finished"]  # each once, in this order
    assert dict(listener.events)["plan_finished"]["changes"] == 3
    assert sorted(listener.finished) == ["held@x", "u0@x", "u1@x", "u2@x"]


def test_a_failing_listener_does_not_fail_the_job(store: JobStore, clock: FakeClock) -> None:
    class Broken(RecordingListener):
        def users_finished(self, job_id: str, tenant: str, results: Any) -> None:
            raise RuntimeError("listener down")

    tenant = Tenant({"a@x": user()})
    job_id = job(store, [op(2, "a@x", add=(E3,))])
    deps, _ = make_deps(store, tenant, clock)
    run_users(dataclasses.replace(deps, events=Listeners([Broken()])), job_id, 0, budget_started_at=clock())
    assert results(store, job_id)["a@x"].status.value == "succeeded"



def test_a_new_hire_not_replicated_yet_is_asked_again_until_it_appears(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"old@x": user()})
    job_id = job(store, [op(2, "new@x", add=(E3,)), op(3, "old@x", add=(E3,))])
    deps, sleep = make_deps(store, tenant, clock, max_inline_wait_s=30)
    deps = dataclasses.replace(deps, not_found_grace_s=180)
    reads = {"n": 0}

    def appear_on_third_read(method: str, upn: str) -> httpx.Response | None:
        if upn == "new@x" and method == "GET":
            reads["n"] += 1
            if reads["n"] == 2:
                progress = store.progress(job_id)
                assert progress is not None and progress.waiting_for_replication == 1  # shown while it waits
            if reads["n"] == 3:
                tenant.users["new@x"] = user()
        return None

    tenant.faults.append(appear_on_third_read)
    assert handed_back_until_done(deps, job_id, clock) == [2.0, 4.0]  # growing waits, none held a slot
    got = results(store, job_id)
    assert (got["new@x"].status.value, got["old@x"].status.value) == ("succeeded", "succeeded")
    assert sleep.intervals == []
    assert tenant.writes.index(("POST", "old@x")) == 0  # the other user was written meanwhile
    progress = store.progress(job_id)
    assert progress is not None and progress.waiting_for_replication == 0


def test_a_user_that_never_appears_fails_after_the_grace_without_holding_a_slot(
        store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({})
    job_id = job(store, [op(2, "typo@x", add=(E3,))])
    deps, sleep = make_deps(store, tenant, clock, max_inline_wait_s=10)
    deps = dataclasses.replace(deps, not_found_grace_s=60)
    waits = handed_back_until_done(deps, job_id, clock)
    result = results(store, job_id)["typo@x"]
    assert (result.status.value, result.reason) == ("failed", "user_not_found")
    assert result.detail is not None and result.detail.startswith("given up after 60 s of waiting")
    # Growing waits, every one handed back to the broker (no slot held), the last at the grace's end.
    assert sleep.intervals == [] and waits == [2.0, 4.0, 8.0, 16.0, 30.0]


def handed_back_until_done(deps: ChunkDeps, job_id: str, clock: FakeClock) -> list[float]:
    """Run the chunk as the broker would: each hand-back comes back after its countdown."""
    waits: list[float] = []
    started = clock()
    while True:
        try:
            run_users(deps, job_id, 0, budget_started_at=started)
            return waits
        except HandBack as hb:
            waits.append(hb.countdown_s)
            clock.advance(hb.countdown_s)


def test_a_location_the_job_just_set_is_waited_for_but_one_nobody_set_is_not(
        store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"moved@x": user(location=None), "nobody@x": user(location="US")})
    refusals = {"moved@x": 2, "nobody@x": 99}
    invalid = {"error": {"code": "Request_BadRequest",
                         "message": "License assignment cannot be done for user with invalid usage location."}}

    def stale_location(method: str, upn: str) -> httpx.Response | None:
        if method == "POST" and refusals.get(upn, 0) > 0:
            refusals[upn] -= 1
            return httpx.Response(400, json=invalid)
        return None

    tenant.faults.append(stale_location)
    job_id = job(store, [op(2, "moved@x", add=(E3,), location="GB"), op(3, "nobody@x", add=(E3,))])
    deps, _ = make_deps(store, tenant, clock)
    assert handed_back_until_done(dataclasses.replace(deps, not_found_grace_s=180), job_id, clock) == [2.0, 4.0]
    got = results(store, job_id)
    assert got["moved@x"].status.value == "succeeded"
    assert (got["nobody@x"].status.value, got["nobody@x"].reason) == ("failed", "usage_location_missing")


def test_a_dry_run_does_not_wait_for_replication(store: JobStore, clock: FakeClock) -> None:
    store.stage("job", "sim", [op(2, "new@x", add=(E3,))], 100)
    store.commit("job", JobSpec(source="csv", dry_run=True))
    deps, sleep = make_deps(store, Tenant({}), clock)
    run_users(dataclasses.replace(deps, not_found_grace_s=180), "job", 0, budget_started_at=clock())
    result = results(store, "job")["new@x"]
    assert (result.status.value, result.reason) == ("would_fail", "user_not_found")
    assert result.detail == "new accounts may take a while to appear" and sleep.intervals == []


def test_a_chunks_reads_go_out_together_and_its_writes_one_batch_at_a_time(store: JobStore, clock: FakeClock) -> None:
    users = {f"u{i:02d}@x": user() for i in range(50)}
    tenant = Tenant(users)
    together = threading.Barrier(3, timeout=10)  # the three $batch requests of reads must be in flight at once
    writes_in_flight: list[int] = []
    inner = tenant.__call__

    def handler(request: httpx.Request) -> httpx.Response:
        methods = {item["method"] for item in json.loads(request.content)["requests"]}
        if methods == {"GET"}:
            together.wait()
        else:
            writes_in_flight.append(len(writes_in_flight))
        return inner(request)

    job_id = job(store, [op(i + 2, f"u{i:02d}@x", add=(E3,)) for i in range(50)])
    deps, _ = make_deps(store, tenant, clock)
    http = httpx.Client(transport=httpx.MockTransport(handler))
    graph = GraphClient(http, base_url="https://graph.test", throttle=RecordingThrottle(), timeout_s=5)
    deps = dataclasses.replace(deps, graph=graph, read_parallelism=3)
    assert run_users(deps, job_id, 0, budget_started_at=clock()) == 50
    assert {r.status.value for r in results(store, job_id).values()} == {"succeeded"}
    assert len(tenant.writes) == 50 and len(writes_in_flight) == 3  # 20 + 20 + 10 written in turn


def test_exact_mode_removes_what_the_user_holds_beyond_the_list(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user(E3, EMS), "b@x": user(E3), "c@x": user(EMS)})
    exact = [dataclasses.replace(o, mode=LicenseMode.EXACT) for o in
             (op(2, "a@x", add=(E3,)), op(3, "b@x", add=(E3,)), op(4, "c@x"))]
    job_id = job(store, exact)
    deps, _ = make_deps(store, tenant, clock)
    assert run_users(deps, job_id, 0, budget_started_at=clock()) == 3
    got = results(store, job_id)
    assert {u: r.status.value for u, r in got.items()} == {"a@x": "succeeded", "b@x": "unchanged", "c@x": "succeeded"}
    assert tenant.users["a@x"]["assignedLicenses"] == [{"skuId": E3, "disabledPlans": []}]
    assert tenant.users["c@x"]["assignedLicenses"] == []
    assert got["a@x"].after is not None and got["a@x"].before is not None
    assert tenant.writes == [("POST", "a@x"), ("POST", "c@x")]


def overlapping(tenant: Tenant, held_read: str) -> tuple[httpx.MockTransport, list[tuple[str, frozenset[str]]],
                                                         threading.Event, list[bool]]:
    """A transport that holds back the $batch of reads naming `held_read` until a write arrives (5 s at most).

    Returns it, the log of (read|write, users) in arrival order, the first write's event, and
    whether the held read saw a write before it went on.
    """
    log: list[tuple[str, frozenset[str]]] = []
    first_write = threading.Event()
    seen: list[bool] = []
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["requests"]
        users = frozenset(item["url"].split("/users/", 1)[1].split("?")[0].split("/")[0] for item in items)
        kind = "read" if {item["method"] for item in items} == {"GET"} else "write"
        if kind == "read" and held_read in users:
            seen.append(first_write.wait(5))
        with lock:
            log.append((kind, users))
        if kind == "write":
            first_write.set()
        return tenant(request)

    return httpx.MockTransport(handler), log, first_write, seen


def test_a_batchs_writes_go_out_while_the_chunks_other_reads_are_in_flight(store: JobStore, clock: FakeClock) -> None:
    # Odd users hold E3 already: their reads plan them unchanged, and nothing is written to them.
    tenant = Tenant({f"u{i:02d}@x": user(E3) if i % 2 else user() for i in range(60)})
    transport, log, _, seen = overlapping(tenant, "u40@x")
    job_id = job(store, [op(i + 2, f"u{i:02d}@x", add=(E3,)) for i in range(60)])
    deps, _ = make_deps(store, tenant, clock)
    graph = GraphClient(httpx.Client(transport=transport), base_url="https://graph.test",
                        throttle=RecordingThrottle(), timeout_s=5)
    assert run_users(dataclasses.replace(deps, graph=graph, read_parallelism=3), job_id, 0,
                     budget_started_at=clock()) == 60
    assert seen == [True]  # the third batch of reads was still out when the first writes went
    got = results(store, job_id)
    lacking, holding = [f"u{i:02d}@x" for i in range(0, 60, 2)], [f"u{i:02d}@x" for i in range(1, 60, 2)]
    assert sorted(u for u, r in got.items() if r.status.value == "succeeded") == lacking
    assert sorted(u for u, r in got.items() if r.status.value == "unchanged") == holding
    assert sorted(u for _, u in tenant.writes) == lacking
    read_at = {u: i for i, (kind, users) in enumerate(log) if kind == "read" for u in users}
    assert all(read_at[u] < i for i, (kind, users) in enumerate(log) if kind == "write" for u in users)
    assert store.plan_counters(job_id).planned == 60


def test_a_dry_run_with_overlapping_reads_writes_nothing(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({f"u{i:02d}@x": user(E3) if i % 2 else user() for i in range(45)})
    store.stage("job", "sim", [op(i + 2, f"u{i:02d}@x", add=(E3,)) for i in range(45)], 100)
    store.commit("job", JobSpec(source="csv", dry_run=True))
    deps, _ = make_deps(store, tenant, clock)
    assert run_users(dataclasses.replace(deps, read_parallelism=3), "job", 0, budget_started_at=clock()) == 45
    assert tenant.writes == []
    statuses = [r.status.value for _, r in sorted(results(store, "job").items())]
    assert statuses == ["would_change" if i % 2 == 0 else "unchanged" for i in range(45)]
