"""Paused jobs in the scheduler: jobs of a tenant Graph stopped answering are paused; probes resume them."""

from __future__ import annotations

import redis

from graphclient.breaker import BreakerState, RedisBreaker
from jobs.models import LicenseAdd, Operation
from jobs.scheduler import ProbeAnswer, pause_unreachable, resume_due
from jobs.store import JobStore
from tests.fakes import FakeClock


def new_job(store: JobStore, job_id: str, tenant: str) -> str:
    store.stage(job_id, tenant, [Operation(row=2, user="u@x", add=(LicenseAdd("sku"),))], 10)
    store.commit(job_id, source="csv")
    return job_id


def test_the_running_jobs_of_an_unreachable_tenant_are_paused(store: JobStore, clock: FakeClock,
                                                              redis_client: redis.Redis) -> None:
    breakers = {t: RedisBreaker(redis_client, t, clock=clock, probe_lease_s=35) for t in ("down", "up")}
    for i in range(5):
        breakers["down"].record(breakers["down"].admit(), answered=False, request=f"r{i}", error="ConnectError")
    running = new_job(store, "running", "down")
    other_tenant = new_job(store, "other", "up")
    cancelled = new_job(store, "cancelled", "down")
    store.request_cancel(cancelled)
    seats = new_job(store, "seats", "down")
    store.pause(seats, "no_free_seat", "no seat", next_probe_at=clock() + 60)
    asked: list[str] = []

    def state(tenant: str) -> BreakerState | None:
        asked.append(tenant)
        return breakers[tenant].state() if tenant in breakers else None

    assert pause_unreachable(store, state) == 1
    assert sorted(asked) == ["down", "up"]  # once per tenant, whatever its number of jobs
    fields = store.job_fields(running, "paused_reason", "paused_message", "next_probe_at")
    assert fields["paused_reason"] == "graph_unavailable"
    assert float(fields["next_probe_at"]) == breakers["down"].state().next_probe_at
    assert fields["paused_message"].startswith("Graph does not answer for tenant profile 'down'")
    assert store.job_fields(other_tenant, "paused_reason") == {}
    assert store.job_fields(cancelled, "paused_reason") == {}
    assert store.job_fields(seats, "paused_reason") == {"paused_reason": "no_free_seat"}  # its own pause stays
    assert pause_unreachable(store, state) == 0  # already paused


def test_a_probe_sets_the_next_probe_time_and_a_failing_one_holds_back_no_other(store: JobStore,
                                                                               clock: FakeClock) -> None:
    a, b, c = (new_job(store, j, "t") for j in ("a", "b", "c"))
    for job_id in (a, b, c):
        store.pause(job_id, "graph_unavailable", "down", next_probe_at=clock())
    store.pause(new_job(store, "manual", "t"), "auth_failed", "AADSTS7000215")  # no probe time: a person resumes
    probed: list[str] = []

    def probe(job_id: str, tenant: str, reason: str) -> ProbeAnswer:
        probed.append(job_id)
        if job_id == a:
            raise RuntimeError("probe crashed")
        return ProbeAnswer(job_id == c, None if job_id == a else clock() + 8)

    sent: list[tuple[str, int]] = []
    assert resume_due(store, lambda j, n, cd, bs=None: sent.append((j, n)), probe, now=clock(),
                      retry_in_s=60) == 1
    assert probed == [a, b, c]
    assert float(store.job_fields(a, "next_probe_at")["next_probe_at"]) == clock() + 60  # the usual interval
    assert float(store.job_fields(b, "next_probe_at")["next_probe_at"]) == clock() + 8  # the probe's
    assert store.job_fields(c, "paused_reason") == {} and store.paused_jobs() == ["a", "b", "manual"]
