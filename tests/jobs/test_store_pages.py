"""Reading a whole job's results page by page: the same rows in input order, a page of reads at a time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from jobs.models import License, Operation, UserResult, UserStatus
from jobs.plan import UserState
from jobs.record import JobSpec
from jobs.rollback import rollback_operations, undo
from jobs.skus import SkuCatalog
from jobs.store import JobStore

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"  # ENTERPRISEPACK
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
USERS, CHUNK_ROWS = 23, 4  # six chunks, the last one short


def state(*skus: str) -> dict[str, Any]:
    return UserState.from_graph({"id": "id", "usageLocation": "US", "assignedLicenses": [
        {"skuId": sku, "disabledPlans": []} for sku in skus]}).to_json()


def operations() -> list[Operation]:
    return [Operation(row=i + 2, user=f"u{i}@contoso.example", add=(License(E3),), extra=(("employeeId", f"E{i}"),))
            for i in range(USERS)]


def outcome(op: Operation) -> UserResult | None:
    """Every third user pending, the others changed (E3 added) or, every fifth, failed."""
    if op.row % 3 == 0:
        return None
    if op.row % 5 == 0:
        return UserResult(row=op.row, user=op.user, status=UserStatus.FAILED, reason="no_free_seat", attempts=2,
                          updated_at=1.0)
    return UserResult(row=op.row, user=op.user, status=UserStatus.SUCCEEDED, before=state(EMS),
                      after=state(EMS, E3), attempts=1, updated_at=1.0)


@pytest.fixture
def finished(redis_client: redis.Redis) -> tuple[JobStore, str, list[tuple[Operation, UserResult | None]]]:
    store = JobStore(redis_client, retention_s=3600)
    ops = operations()
    store.stage("paged", "sim", ops, CHUNK_ROWS)
    store.commit("paged", JobSpec(source="csv"))
    expected = [(op, outcome(op)) for op in ops]
    store.record_results("paged", [res for _, res in expected if res is not None])
    return store, "paged", expected


def calls(client: redis.Redis) -> dict[str, int]:
    """How many GET and HMGET commands the Redis server has run."""
    stats = client.info("commandstats")
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("get", "hmget")}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in after}


@pytest.mark.parametrize("page_rows", [1, 4, 9, 1_000])
def test_every_page_size_gives_every_row_with_its_result_in_input_order(finished: Any, page_rows: int) -> None:
    store, job_id, expected = finished
    assert list(store.iter_results(job_id, page_rows=page_rows)) == expected


def test_a_page_is_read_in_two_round_trips_and_only_when_reached(finished: Any, redis_client: redis.Redis) -> None:
    store, job_id, _ = finished
    rows = store.iter_results(job_id, page_rows=8)  # two chunks of 4 a page: pages of 8, 8 and 7 rows
    before = calls(redis_client)
    next(rows)
    # The job's size, then the first page: its two chunks in one pipeline, their results in one HMGET.
    assert delta(calls(redis_client), before) == {"get": 2, "hmget": 2}
    for _ in range(7):  # the rest of the first page comes from what was read
        next(rows)
    assert delta(calls(redis_client), before) == {"get": 2, "hmget": 2}
    next(rows)
    assert delta(calls(redis_client), before) == {"get": 4, "hmget": 3}
    assert len(list(rows)) == USERS - 9
    assert delta(calls(redis_client), before) == {"get": 6, "hmget": 4}


def test_a_rollback_is_planned_the_same_from_pages_of_any_size(finished: Any) -> None:
    store, job_id, expected = finished
    items = json.loads((CORPUS / "subscribed_skus.json").read_text(encoding="utf-8"))["value"]
    catalog = SkuCatalog.from_graph(items)
    wanted = [back for op, res in expected if (back := undo(op, res, catalog)) is not None]
    assert wanted and all(back.remove == (E3,) for back in wanted)
    for page_rows in (1, 5, 1_000):
        assert list(rollback_operations(lambda n=page_rows: store.iter_results(job_id, page_rows=n),
                                        catalog)) == wanted
