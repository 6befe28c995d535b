"""Hostile receivers on real processes: they hold notification slots at worst, never another tenant's job.

One deployment (Redis, graphsim, the API, a worker that starts its notifications worker beside
itself). Twenty one-row dry runs of tenant `sim` name two hostile receivers as their callback
(allowed as local origins): one answers with a status line and then drips its headers a byte every
half second (only a deadline on the whole attempt ends that), the other answers 200 and floods an
endless body. While the drips hold every notification slot, jobs of tenant `other` are timed from
submission to their end, against the same jobs before any hostile receiver; the resident memory of
both worker processes is sampled throughout the flood.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.stack import Stack, sim_profile
from tests.fakes import HostileReceiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

DEADLINE_S = 2.0  # BULKLICENSE_WEBHOOK_TIMEOUT_S
MAX_ATTEMPTS = 2
NOTIFY_CONCURRENCY = 4
DRIP_INTERVAL_S = 0.5
BAD_JOBS = 20
# Another tenant's job may take this much longer while the hostile receivers are at work: scheduling
# noise on a shared machine, not a queue behind notifications (those never end before the deadline).
LATENCY_BOUND_S = 1.5
# Resident memory a worker process may gain while floods stream in (each is read 4 KiB, then closed).
RSS_GROWTH_BOUND = 32 << 20
FLOOD_BYTES = 64 << 20  # per connection: far more than the bound, if it were read


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[HostileReceiver, HostileReceiver]]:
    drip = HostileReceiver("drip-headers", drip_interval_s=DRIP_INTERVAL_S).start()
    flood = HostileReceiver("flood", flood_limit_bytes=FLOOD_BYTES).start()
    try:
        yield drip, flood
    finally:
        drip.stop()
        flood.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory,
          receivers: tuple[HostileReceiver, HostileReceiver]) -> Iterator[Stack]:
    drip, flood = receivers
    env = {
        "BULKLICENSE_WEBHOOK_SECRET": "whsec-isolation-7d1e",
        "BULKLICENSE_WEBHOOK_ALLOWED_ORIGINS": f"{drip.url('')},{flood.url('')}",
        "BULKLICENSE_WEBHOOK_TIMEOUT_S": str(DEADLINE_S),
        "BULKLICENSE_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "BULKLICENSE_WEBHOOK_BACKOFF_BASE_S": "0.5",
        "BULKLICENSE_WEBHOOK_CONCURRENCY": str(NOTIFY_CONCURRENCY),
    }
    s = Stack(tmp_path_factory.mktemp("isolation"), sim_args=["--users", "60", "--seed", "5", "--latency-ms", "20"],
              env=env, extra_profiles=lambda sim: sim_profile("other", sim))
    try:
        yield s.start(workers=1)
    finally:
        s.stop()


def notifier_process(stack: Stack) -> psutil.Process:
    """The notifications worker the chunk worker started beside itself, once it is ready."""
    worker = psutil.Process(stack.workers[0].pid)
    deadline = time.monotonic() + 60
    while True:
        children = worker.children()
        log = (stack.workdir / "worker1.log").read_text(errors="replace")
        if len(children) == 1 and "notifier-" in log and log.count(" ready.") >= 2:
            return children[0]
        assert time.monotonic() < deadline, f"no notifications worker beside the worker: {children}\n{log[-2000:]}"
        time.sleep(0.1)


def dry_run(stack: Stack, tenant: str, user: str, callback_url: str | None = None) -> str:
    params = {"tenant": tenant, "dry_run": "true", **({"callback_url": callback_url} if callback_url else {})}
    with stack.api() as api:
        response = api.post("/v1/jobs", params=params, content=f"user,usage_location\n{user},GB\n".encode(),
                            headers={"Content-Type": "text/csv"})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def latency_s(stack: Stack, user: str) -> float:
    """Submission to the end of a one-row dry run of tenant `other`, as its client sees it."""
    started = time.monotonic()
    job_id = dry_run(stack, "other", user)
    deadline = started + 60
    with stack.api() as api:
        while api.get(f"/v1/jobs/{job_id}").json()["status"] != "planned":
            assert time.monotonic() < deadline, f"job {job_id} of tenant other did not end within 60 s"
            time.sleep(0.02)
    return time.monotonic() - started


class RssSampler:
    """Samples the resident memory of some processes every 50 ms, in a thread."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self.processes = processes
        self.peak = {name: p.memory_info().rss for name, p in processes.items()}
        self.before = dict(self.peak)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for name, process in self.processes.items():
                self.peak[name] = max(self.peak[name], process.memory_info().rss)

    def growth(self, name: str) -> int:
        return self.peak[name] - self.before[name]


def wait_until(condition: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_hostile_receivers_never_delay_another_tenants_jobs_nor_grow_a_worker(
    stack: Stack, receivers: tuple[HostileReceiver, HostileReceiver]
) -> None:
    drip, flood = receivers
    with stack.control() as control:
        users = [u["userPrincipalName"] for u in control.get("/users").json()["value"]]
    notifier = notifier_process(stack)
    worker = psutil.Process(stack.workers[0].pid)

    latency_s(stack, users[0])  # warm-up: first Graph token, first catalog read
    before = [latency_s(stack, user) for user in users[1:4]]

    with RssSampler({"notifier": notifier, "worker": worker}) as rss:
        for i in range(BAD_JOBS):
            dry_run(stack, "sim", users[10 + i], (drip if i % 2 == 0 else flood).url(f"/hook/{i}"))
        # Every notification slot held by a drip: what used to take every chunk slot.
        wait_until(lambda: drip.open_now() == NOTIFY_CONCURRENCY, "the drips to hold every notification slot")
        during = [latency_s(stack, user) for user in users[4:7]]
        held_while_measuring = drip.open_now()
        # Every notification ends: drips at the deadline (then once more), floods after a few KiB.
        wait_until(lambda: len(drip.served()) == BAD_JOBS // 2 * MAX_ATTEMPTS and not drip.open_now()
                   and len(flood.served()) == BAD_JOBS // 2 and not flood.open_now(),
                   "every hostile delivery to end", timeout_s=90)

    base_s, bad_s = statistics.median(before), statistics.median(during)
    drip_s = [c.closed_at - c.opened_at for c in drip.served() if c.closed_at is not None]
    flood_sent = [c.bytes_sent for c in flood.served()]
    print(f"\n[isolation] other tenant's one-row dry run, submit -> planned: before {base_s:.2f}s "
          f"{[round(x, 2) for x in before]}, with hostile receivers {bad_s:.2f}s {[round(x, 2) for x in during]}"
          f" ({held_while_measuring} drips holding notification slots at the end of the measure)\n"
          f"[isolation] RSS notifier {rss.before['notifier'] >> 20} MiB -> peak {rss.peak['notifier'] >> 20} MiB"
          f" (+{rss.growth('notifier') / (1 << 20):.1f}), worker {rss.before['worker'] >> 20} MiB -> peak"
          f" {rss.peak['worker'] >> 20} MiB (+{rss.growth('worker') / (1 << 20):.1f}); drip connections"
          f" {min(drip_s):.1f}-{max(drip_s):.1f}s; flood bytes sent per connection before the close"
          f" {min(flood_sent) >> 20}-{max(flood_sent) >> 20} MiB of {FLOOD_BYTES >> 20}")

    assert bad_s <= base_s + LATENCY_BOUND_S, (before, during)
    assert held_while_measuring >= NOTIFY_CONCURRENCY - 1  # the drips were still at it all along
    # Each drip ends at the deadline (seen by the receiver at its next byte or the one after).
    assert max(drip_s) <= DEADLINE_S + 2 * DRIP_INTERVAL_S + 1.0, drip_s
    assert max(flood_sent) < FLOOD_BYTES // 2, flood_sent
    assert rss.growth("notifier") <= RSS_GROWTH_BOUND and rss.growth("worker") <= RSS_GROWTH_BOUND, rss.peak
    log = Path(stack.workdir / "worker1.log").read_text(errors="replace")
    assert "/hook/" not in log  # receivers are named by origin only


def test_the_notifications_worker_goes_when_its_worker_is_killed(stack: Stack) -> None:
    # Last in the module: it kills the stack's worker. A SIGKILL gives the parent no chance to stop it.
    notifier = notifier_process(stack)
    stack.kill_worker(stack.workers[0])
    started = time.monotonic()
    notifier.wait(timeout=30)  # a warm shutdown: attempts under way end by their deadline first
    print(f"\n[isolation] notifications worker gone {time.monotonic() - started:.1f}s after its worker was killed")
    assert time.monotonic() - started < DEADLINE_S + 10
