"""Inputs (rows that cost exactly one Graph write each) and a small client for our API."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

from bench.stack import TERMINAL
from jobs.models import JobStatus

# Added in this order of preference: neither conflicts with any plan a fixture user may hold.
ONE_WRITE_SKUS = ("EMS", "POWER_BI_PRO")
GENERATED_SKU = "EMS"  # what every row of a generated CSV adds


@dataclass(frozen=True)
class Row:
    """One user and the one SKU to add to it."""

    upn: str
    part_number: str


def one_write_rows(users: Iterable[dict[str, Any]], skus: list[dict[str, Any]]) -> list[Row]:
    """Users that need exactly one assignLicense and no PATCH: a usageLocation, and a SKU they lack.

    The SKUs in ONE_WRITE_SKUS have no service plan that is mutually exclusive with another SKU's.
    """
    ids = {s["skuPartNumber"]: s["skuId"].lower() for s in skus}
    rows: list[Row] = []
    for user in users:
        if not user.get("usageLocation"):
            continue
        held = {str(a["skuId"]).lower() for a in user.get("assignedLicenses") or ()}
        for part in ONE_WRITE_SKUS:
            if ids[part] not in held:
                rows.append(Row(user["userPrincipalName"], part))
                break
    return rows


def seat_demand(rows: Iterable[Row]) -> dict[str, int]:
    """Seats the rows add, per SKU part number."""
    return dict(Counter(row.part_number for row in rows))


def check_seats(rows: list[Row], skus: list[dict[str, Any]]) -> None:
    """Refuse to run if a SKU has fewer free seats than the rows add (every write must succeed)."""
    free = {s["skuPartNumber"]: int(s["freeUnits"]) for s in skus}
    short = {part: (n, free.get(part, 0)) for part, n in seat_demand(rows).items() if n > free.get(part, 0)}
    if short:
        raise RuntimeError(f"not enough free seats for the benchmark rows (needed, free): {short}")


def csv_bytes(rows: Iterable[Row]) -> bytes:
    """A CSV body `user,add`."""
    return ("user,add\n" + "".join(f"{r.upn},{r.part_number}\n" for r in rows)).encode()


def write_generated_csv(path: Path, count: int, domain: str) -> int:
    """A CSV of `count` generated rows (users need not exist: validation checks shape and SKU names)."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("user,add,employeeId\n")
        block: list[str] = []
        for i in range(count):
            block.append(f"bulk.user{i:07d}@{domain},{GENERATED_SKU},E{i:07d}\n")
            if len(block) >= 10_000:
                fh.write("".join(block))
                block.clear()
        fh.write("".join(block))
    return path.stat().st_size


@dataclass(frozen=True)
class Accepted:
    """A submitted job: its id, when the submission started and when the 202 came back (epoch seconds)."""

    id: str
    total: int
    sent_at: float
    accepted_at: float

    @property
    def submit_s(self) -> float:
        """Seconds from sending the body to the 202."""
        return self.accepted_at - self.sent_at


def submit(api: httpx.Client, tenant: str, body: bytes | IO[bytes], *, dry_run: bool = False) -> Accepted:
    """POST a CSV (bytes, or a binary file object that httpx streams) to /v1/jobs (`?dry_run=true`: plan only)."""
    params = {"tenant": tenant, **({"dry_run": "true"} if dry_run else {})}
    sent = time.time()
    response = api.post("/v1/jobs", params=params, content=body, headers={"Content-Type": "text/csv"})
    accepted = time.time()
    if response.status_code != 202:
        raise RuntimeError(f"submission refused: HTTP {response.status_code} {response.text[:500]}")
    data = response.json()
    return Accepted(data["id"], int(data["total"]), sent, accepted)


def get_job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    """`GET /v1/jobs/{id}`."""
    response = api.get(f"/v1/jobs/{job_id}")
    response.raise_for_status()
    job: dict[str, Any] = response.json()
    return job


def wait_job(api: httpx.Client, job_id: str, *, timeout_s: float, poll_s: float = 0.5) -> dict[str, Any]:
    """Poll until the job is terminal; raises TimeoutError with the last record, RuntimeError if it pauses
    (a benchmark job pauses only when its setup is wrong: no seats, no access)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = get_job(api, job_id)
        if job["status"] in TERMINAL:
            return job
        if job["status"] == JobStatus.PAUSED:
            raise RuntimeError(f"job {job_id} paused ({job.get('paused_reason')}): {job.get('paused_message')}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not finished after {timeout_s:.0f} s: {job}")
        time.sleep(poll_s)


def cancel_job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    """`POST /v1/jobs/{id}/cancel` (returns once no write of the job can still go out)."""
    response = api.post(f"/v1/jobs/{job_id}/cancel")
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def epoch(stamp: str | None) -> float | None:
    """An API timestamp (`2025-01-01T00:00:00.000Z`) as epoch seconds."""
    if stamp is None:
        return None
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def job_wall_s(job: dict[str, Any], accepted: Accepted) -> float:
    """Submission accepted -> last result, from the job's own `finished_at` (same machine clock)."""
    finished = epoch(job.get("finished_at"))
    if finished is None:
        raise RuntimeError(f"job {accepted.id} has no finished_at: {job}")
    return finished - accepted.accepted_at
