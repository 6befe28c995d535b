"""Downloads of a job's results: sent in blocks, every row once and in input order, whatever the job's size."""

from __future__ import annotations

import csv
import io

import redis
from fastapi.testclient import TestClient

from api.results import blocks
from jobs.models import UserResult, UserStatus
from jobs.store import JobStore
from tests.api.helpers import auth, submit_csv

USERS = 45  # five chunks of the fixtures' ten rows


def test_blocks_carry_the_same_bytes_in_pieces_of_at_least_the_size() -> None:
    lines = [f"row {i},{'x' * (i % 13)}\n".encode() for i in range(500)]
    pieces = list(blocks(iter(lines), size_bytes=100))
    assert b"".join(pieces) == b"".join(lines)
    assert all(len(piece) >= 100 for piece in pieces[:-1])
    assert len(pieces) < len(lines) / 5
    assert list(blocks(iter([]), size_bytes=100)) == []


def test_results_and_failed_rows_of_a_job_of_several_chunks(client: TestClient, redis_client: redis.Redis) -> None:
    body = "user,add\n" + "".join(f"u{i}@contoso.example,EMS\n" for i in range(USERS))
    job = submit_csv(client, body)
    store = JobStore(redis_client, retention_s=3600)
    rows = [op.row for op in store.iter_operations(job["id"])]
    failed = set(rows[: USERS - 3 : 4])
    store.record_results(job["id"], [
        UserResult(row=row, user=f"u{i}@contoso.example",
                   status=UserStatus.FAILED if row in failed else UserStatus.SUCCEEDED,
                   reason="no_free_seat" if row in failed else None, attempts=1, updated_at=1.0)
        for i, row in enumerate(rows) if i < USERS - 3])  # the last three still pending

    response = client.get(f"/v1/jobs/{job['id']}/results?format=csv", headers=auth())
    assert response.status_code == 200
    got = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["user"] for r in got] == [f"u{i}@contoso.example" for i in range(USERS)]
    assert [r["status"] for r in got] == [
        "pending" if i >= USERS - 3 else "failed" if row in failed else "succeeded" for i, row in enumerate(rows)]

    failed_csv = client.get(f"/v1/jobs/{job['id']}/results?format=csv&status=failed", headers=auth()).text
    assert [r["user"] for r in csv.DictReader(io.StringIO(failed_csv))] == [
        f"u{i}@contoso.example" for i, row in enumerate(rows) if row in failed]
    listed = client.get(f"/v1/jobs/{job['id']}/results", headers=auth()).json()["value"]
    assert [r["row"] for r in listed] == rows
