"""Two bounds on a chunk's run, against the fake Graph (MockTransport) and the real Redis store.

- A write round a Redis replica did not confirm (the store's gate says UNREPLICATED) is not sent
  and costs the users nothing; it goes again a moment later.
- A chunk that has run `max_run_s` hands itself back between two rounds, so that no broker message
  is held longer than that and one round (RabbitMQ's consumer_timeout).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
import redis

from jobs.executor import UNREPLICATED_RETRY_S, HandBack, run_users
from jobs.models import UserStatus
from jobs.store import JobStore, WriteGate
from tests.fakes import FakeClock, Tenant
from tests.jobs.helpers import EMS, job, make_deps, op, results, user


class HeldBackStore(JobStore):
    """The real store, whose write gate answers UNREPLICATED the first `held` times (a replica lagging)."""

    def __init__(self, client: redis.Redis, clock: FakeClock, held: int) -> None:
        super().__init__(client, retention_s=3600, clock=clock)
        self.held = held

    def begin_writes(self, job_id: str, batch_id: str, deadline: float, rows: Sequence[int], *,
                     claim: tuple[int, str] | None = None) -> WriteGate:
        if self.held > 0:
            self.held -= 1
            return WriteGate.UNREPLICATED
        return super().begin_writes(job_id, batch_id, deadline, rows, claim=claim)


def test_a_round_no_replica_confirmed_is_not_sent_and_costs_nothing(redis_client: redis.Redis,
                                                                     clock: FakeClock) -> None:
    upns = [f"u{i}@x" for i in range(3)]
    store = HeldBackStore(redis_client, clock, held=2)
    tenant = Tenant({u: user() for u in upns})
    deps, sleep = make_deps(store, tenant, clock)
    job_id = job(store, [op(i + 2, u, add=(EMS,)) for i, u in enumerate(upns)])
    assert run_users(deps, job_id, 0, budget_started_at=clock()) == 3
    got = results(store, job_id)
    assert {u: (r.status, r.attempts) for u, r in got.items()} == dict.fromkeys(upns, (UserStatus.SUCCEEDED, 2))
    assert tenant.writes == [("POST", u) for u in upns]  # one write each, sent once the gate opened
    assert sleep.intervals == [UNREPLICATED_RETRY_S] * 2  # held back twice, a second each, inline
    assert store.held == 0


def test_a_chunk_that_ran_long_enough_hands_itself_back_between_rounds(store: JobStore, clock: FakeClock) -> None:
    upns = [f"u{i}@x" for i in range(20)]
    tenant = Tenant({u: user() for u in upns})
    tenant.after_round = lambda: clock.advance(40.0)  # each round takes 40 s
    deps, _ = make_deps(store, tenant, clock, batch_size=5)
    job_id = job(store, [op(i + 2, u, add=(EMS,)) for i, u in enumerate(upns)])
    with pytest.raises(HandBack) as raised:
        run_users(dataclasses.replace(deps, max_run_s=100.0), job_id, 0, budget_started_at=clock())
    assert raised.value.countdown_s == 0.0  # back in the queue at once, behind the others
    done = len(results(store, job_id))
    assert 0 < done < len(upns)
    assert len(tenant.writes) == done  # it stopped between rounds: nothing sent and left unrecorded
    # The next run takes the rest (every user once).
    run_users(dataclasses.replace(deps, max_run_s=1000.0), job_id, 0, budget_started_at=clock())
    assert sorted(tenant.writes) == sorted(("POST", u) for u in upns)
