"""Fixtures of the Graph client tests: a fake clock and a sleep that advances it."""

from __future__ import annotations

import pytest

from tests.fakes import FakeClock, RecordingSleep


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleep(clock: FakeClock) -> RecordingSleep:
    return RecordingSleep(clock)
