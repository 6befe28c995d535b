"""A write batch goes out only once a Redis replica holds what the job recorded (WAIT), against real servers.

A primary and a replica of its own (redis-server processes, started in a few milliseconds). The
replica is made unresponsive with `DEBUG SLEEP`: it stays connected, but confirms nothing. A cancel
must reach the replica before it is answered, too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jobs.store import JobStore, ReplicaLagging, WriteGate
from tests.e2e.sentinel import RedisProcess

# They start redis-server processes; the first sleeps through the replica's 1.5 s nap.
pytestmark = pytest.mark.slow

ROWS = [2, 3, 4]


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess("primary", tmp_path, []).start()
    yield server
    server.stop()


@pytest.fixture
def replica(tmp_path: Path, primary: RedisProcess) -> Iterator[RedisProcess]:
    server = RedisProcess("replica", tmp_path, ["--replicaof", "127.0.0.1", str(primary.port)]).start()
    with primary.client() as client:
        deadline = time.monotonic() + 10
        while client.info("replication").get("slave0", {}).get("state") != "online":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.02)
    yield server
    server.stop()


def job(store: JobStore) -> str:
    store.redis.hset("bl:job:j", mapping={"id": "j", "state": "queued"})
    return "j"


def state(client: redis.Redis) -> tuple[dict[bytes, bytes], int, bool]:
    """Attempts per row, write batches in flight, whether the job's first write is marked."""
    return (client.hgetall("bl:job:j:att"), int(client.zcard("bl:job:j:inflight")),
            bool(client.hexists("bl:job:j", "first_write_at")))


def test_a_batch_waits_for_the_replica_and_is_held_back_while_it_confirms_nothing(
        primary: RedisProcess, replica: RedisProcess) -> None:
    client = primary.client(socket_timeout=5)
    store = JobStore(client, retention_s=600, wait_replicas=1, wait_timeout_s=0.2)
    job_id = job(store)
    store.save_plans(job_id, [(2, {"assignedLicenses": [], "usageLocation": "US"}, ["changes"])])

    nap = replica.client(socket_timeout=10)
    sleeper = threading.Thread(target=lambda: nap.execute_command("DEBUG", "SLEEP", 1.5))
    sleeper.start()
    time.sleep(0.1)  # the replica is asleep: connected, confirming nothing
    started = time.monotonic()
    assert store.begin_writes(job_id, "b1", time.time() + 30, ROWS) is WriteGate.UNREPLICATED
    assert time.monotonic() - started >= 0.2  # it waited for the replica, in vain
    assert state(client) == ({b"2": b"0", b"3": b"0", b"4": b"0"}, 0, False)  # nothing registered or charged
    sleeper.join()

    # Awake again: the batch goes out, once the replica holds the plan and the attempts.
    assert store.begin_writes(job_id, "b2", time.time() + 30, ROWS) is WriteGate.FIRST
    with replica.client() as r:
        assert r.hexists("bl:job:j:before", "2") and r.hgetall("bl:job:j:att") == {b"2": b"1", b"3": b"1", b"4": b"1"}
    assert store.begin_writes(job_id, "b3", time.time() + 30, ROWS) is WriteGate.OPEN

    # A cancel is answered only once a replica holds it: else a failover could let writes go on.
    sleeper = threading.Thread(target=lambda: nap.execute_command("DEBUG", "SLEEP", 0.8))
    sleeper.start()
    time.sleep(0.1)
    with pytest.raises(ReplicaLagging):
        store.request_cancel(job_id)
    sleeper.join()
    store.request_cancel(job_id)  # asked again (the API answered 503): confirmed now
    with replica.client() as r:
        assert r.hexists("bl:job:j", "cancel_requested")
    nap.close()
    client.close()


def test_no_replica_connected_means_no_wait(primary: RedisProcess) -> None:
    client = primary.client(socket_timeout=5)
    store = JobStore(client, retention_s=600, wait_replicas=1, wait_timeout_s=2.0)
    job_id = job(store)
    started = time.monotonic()
    assert store.begin_writes(job_id, "b1", time.time() + 30, ROWS) is WriteGate.FIRST
    assert store.begin_writes(job_id, "b2", time.time() + 30, ROWS) is WriteGate.OPEN
    assert time.monotonic() - started < 0.5  # WAIT for a replica that is not there would take 2 s each
    client.close()
