"""Fixtures of the job-domain unit tests: a settable clock and a job store on the real Redis using it."""

from __future__ import annotations

import pytest
import redis

from jobs.store import JobStore
from tests.fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(redis_client: redis.Redis, clock: FakeClock) -> JobStore:
    return JobStore(redis_client, retention_s=3600, clock=clock)
