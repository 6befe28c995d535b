"""Faults of the whole tenant pause the job and cost the users nothing: refused credentials, a denied
app, Graph unreachable (the tenant's circuit breaker, on the real Redis). The fake Graph is
test_executor's `Tenant` behind a MockTransport; the clock is fake.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import httpx
import pytest
import redis

from graphclient.auth import GraphAuth
from graphclient.breaker import RedisBreaker
from graphclient.client import GraphClient
from graphclient.errors import GraphAuthError
from graphclient.retry import RetryPolicy
from jobs.catalogs import CatalogUnavailable
from jobs.executor import ChunkDeps, Parked, run_users
from jobs.scheduler import ProbeAnswer, resume_due
from jobs.skus import SkuCatalog
from jobs.store import JobStore
from tests.fakes import FakeClock, RecordingSleep, RecordingThrottle, Tenant
from tests.jobs.helpers import E3, job, op, results, user

DENIED = {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the "
                    "operation."}}
REFUSED = ("token request for tenant profile 'sim' failed: invalid_client: AADSTS7000215: Invalid client secret "
           "provided.")


class Tokens:
    """A token provider whose credential the identity platform accepts until `refused` is set."""

    def __init__(self) -> None:
        self.refused = False

    def get_token(self, *, force_refresh: bool = False) -> str:
        if self.refused:
            raise GraphAuthError(REFUSED, status=401, code="invalid_client")
        return "token"


class Network:
    """Graph behind a network that can go down: every request then fails with the connection closed."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self.down = False
        self.sent = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        if self.down:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        if request.url.path.endswith("/subscribedSkus"):
            return httpx.Response(200, json={"value": []})
        return self.tenant(request)


@pytest.fixture
def breaker(redis_client: redis.Redis, clock: FakeClock) -> Iterator[RedisBreaker]:
    yield RedisBreaker(redis_client, "sim", clock=clock, probe_lease_s=35)


def make_deps(store: JobStore, network: Network, clock: FakeClock, breaker: RedisBreaker | None = None,
              tokens: Tokens | None = None, catalog: SkuCatalog | None = None) -> ChunkDeps:
    http = httpx.Client(transport=httpx.MockTransport(network), auth=GraphAuth(tokens) if tokens else None)
    kwargs = {"breaker": breaker} if breaker else {}
    graph = GraphClient(http, base_url="https://graph.test", throttle=RecordingThrottle(), timeout_s=5, **kwargs)
    policy = RetryPolicy(max_attempts=8, max_total_s=3600, backoff_base_s=1, backoff_max_s=8, max_inline_wait_s=30)

    def read_catalog() -> SkuCatalog:
        if catalog is None:
            return SkuCatalog(())
        return SkuCatalog.from_graph(graph.subscribed_skus())

    return ChunkDeps(store=store, graph=graph, policy=policy, batch_size=20, request_deadline_s=60,
                     clock=clock, sleep=RecordingSleep(clock), rng=random.Random(1), catalog=read_catalog,
                     **kwargs)


def three_users(store: JobStore) -> tuple[Tenant, str]:
    tenant = Tenant({f"u{i}@x": user() for i in range(3)})
    return tenant, job(store, [op(i + 2, f"u{i}@x", add=(E3,)) for i in range(3)])


def write_attempts(store: JobStore, job_id: str) -> dict[int, int]:
    return store.attempts(job_id, [2, 3, 4])


def test_a_refused_credential_pauses_the_job_and_charges_nobody(store: JobStore, clock: FakeClock) -> None:
    tenant, job_id = three_users(store)
    tokens = Tokens()
    # The secret is revoked between the reads and the writes.
    tenant.after_round = lambda: setattr(tokens, "refused", True)
    deps = make_deps(store, Network(tenant), clock, tokens=tokens)
    with pytest.raises(Parked):
        run_users(deps, job_id, 0, budget_started_at=clock())
    progress = store.progress(job_id)
    assert progress is not None and progress.status.value == "paused"
    assert progress.paused_reason == "auth_failed" and progress.paused_message == REFUSED
    assert progress.next_probe_at is None and progress.eta_s is None  # waits for a person
    assert (progress.failed, progress.retries) == (0, 0) and results(store, job_id) == {}
    assert write_attempts(store, job_id) == {2: 0, 3: 0, 4: 0} and tenant.writes == []
    # Nothing resumes it by itself ...
    assert resume_due(store, lambda *a: None, lambda *a: ProbeAnswer(True), now=clock() + 3600,
                      retry_in_s=60) == 0
    # ... until the profile is fixed and someone resumes it.
    tokens.refused = False
    tenant.after_round = None
    assert store.resume(job_id) == []
    assert run_users(deps, job_id, 0, budget_started_at=clock()) == 3
    got = results(store, job_id)
    assert {r.status.value for r in got.values()} == {"succeeded"}
    assert {r.attempts for r in got.values()} == {2}  # one read, one write: as if nothing had happened
    assert sorted(tenant.writes) == [("POST", f"u{i}@x") for i in range(3)]


def test_an_app_denied_on_every_write_pauses_as_forbidden(store: JobStore, clock: FakeClock) -> None:
    tenant, job_id = three_users(store)
    tenant.faults.append(lambda m, u: httpx.Response(403, json=DENIED) if m == "POST" else None)
    deps = make_deps(store, Network(tenant), clock)
    with pytest.raises(Parked):
        run_users(deps, job_id, 0, budget_started_at=clock())
    progress = store.progress(job_id)
    assert progress is not None and progress.paused_reason == "forbidden" and progress.next_probe_at is None
    assert progress.paused_message is not None
    assert progress.paused_message.startswith("the app may not assign licenses (3 user(s) refused): ")
    assert "Authorization_RequestDenied: Insufficient privileges" in progress.paused_message
    assert results(store, job_id) == {} and write_attempts(store, job_id) == {2: 0, 3: 0, 4: 0}
    # The permission is granted; the job is resumed and every user is written once.
    tenant.faults.clear()
    store.resume(job_id)
    run_users(deps, job_id, 0, budget_started_at=clock())
    got = results(store, job_id)
    assert {(r.status.value, r.attempts) for r in got.values()} == {("succeeded", 2)}
    assert sorted(tenant.writes) == [("POST", f"u{i}@x") for i in range(3)]


def test_a_403_beside_allowed_writes_is_the_users_own(store: JobStore, clock: FakeClock) -> None:
    tenant, job_id = three_users(store)
    tenant.faults.append(lambda m, u: httpx.Response(403, json=DENIED) if (m, u) == ("POST", "u1@x") else None)
    run_users(make_deps(store, Network(tenant), clock), job_id, 0, budget_started_at=clock())
    got = results(store, job_id)
    assert {u: (r.status.value, r.reason) for u, r in got.items()} == {
        "u0@x": ("succeeded", None), "u1@x": ("failed", "forbidden"), "u2@x": ("succeeded", None)}
    progress = store.progress(job_id)
    assert progress is not None and progress.status.value == "completed_with_errors"


def test_a_lone_403_pauses_unless_the_job_was_allowed_that_write_before(store: JobStore, clock: FakeClock) -> None:
    tenant = Tenant({"a@x": user()})
    tenant.faults.append(lambda m, u: httpx.Response(403, json=DENIED) if m == "POST" else None)
    job_id = job(store, [op(2, "a@x", add=(E3,))])
    deps = make_deps(store, Network(tenant), clock)
    with pytest.raises(Parked):  # one user, nothing allowed yet: taken as the app's
        run_users(deps, job_id, 0, budget_started_at=clock())
    assert store.job_fields(job_id, "paused_reason") == {"paused_reason": "forbidden"}
    store.resume(job_id)
    # Another chunk of the job has since assigned a license: a lone 403 now is the user's own.
    store.note_allowed(job_id, "assign")
    run_users(deps, job_id, 0, budget_started_at=clock())
    got = results(store, job_id)["a@x"]
    assert (got.status.value, got.reason, got.http_status) == ("failed", "forbidden", 403)


def test_graph_unreachable_opens_the_breaker_and_pauses_without_charging_anyone(
        store: JobStore, clock: FakeClock, breaker: RedisBreaker) -> None:
    tenant = Tenant({f"u{i}@x": user() for i in range(6)})
    job_id = job(store, [op(i + 2, f"u{i}@x", add=(E3,)) for i in range(6)])
    network = Network(tenant)
    tenant.after_round = lambda: setattr(network, "down", True)  # down between the reads and the writes
    deps = make_deps(store, network, clock, breaker)
    with pytest.raises(Parked):
        run_users(deps, job_id, 0, budget_started_at=clock())
    state = breaker.state()
    assert state.open and "RemoteProtocolError" in state.last_error
    # One batch of reads, then exactly the five failed calls that opened it: nothing after.
    assert network.sent == 1 + 5
    progress = store.progress(job_id)
    assert progress is not None and progress.status.value == "paused"
    assert progress.paused_reason == "graph_unavailable" and progress.next_probe_at == state.next_probe_at
    assert progress.paused_message is not None and "Graph does not answer for tenant profile 'sim'" in (
        progress.paused_message)
    assert results(store, job_id) == {} and progress.failed == 0
    # The dropped write batch (and any write refused while open) is not charged to anyone.
    assert set(store.attempts(job_id, list(range(2, 8))).values()) == {0}

    # Graph answers again: the probe at the breaker's next probe time closes it and the job resumes.
    network.down = False
    sent: list[tuple[str, int]] = []

    def probe(job: str, tenant_name: str, reason: str) -> ProbeAnswer:
        assert reason == "graph_unavailable"
        deps.graph.subscribed_skus()  # admitted as the half-open probe
        return ProbeAnswer(not breaker.state().open, breaker.state().next_probe_at)

    assert resume_due(store, lambda j, n, c, b=None: sent.append((j, n)), probe, now=clock(), retry_in_s=60) == 0
    clock.t = state.next_probe_at or 0.0
    assert resume_due(store, lambda j, n, c, b=None: sent.append((j, n)), probe, now=clock(), retry_in_s=60) == 1
    assert not breaker.state().open
    tenant.after_round = None
    run_users(deps, job_id, 0, budget_started_at=clock())
    got = results(store, job_id)
    assert {(r.status.value, r.reason, r.attempts) for r in got.values()} == {("succeeded", None, 2)}
    assert sorted(tenant.writes) == [("POST", f"u{i}@x") for i in range(6)]


def test_one_users_own_5xx_does_not_open_the_breaker(store: JobStore, clock: FakeClock,
                                                     breaker: RedisBreaker) -> None:
    tenant = Tenant({"a@x": user(), "b@x": user()})
    tenant.faults.append(lambda m, u: httpx.Response(500, json={"error": {"code": "generalException",
                                                                          "message": "boom"}})
                         if (m, u) == ("POST", "a@x") else None)
    job_id = job(store, [op(2, "a@x", add=(E3,)), op(3, "b@x", add=(E3,))])
    run_users(make_deps(store, Network(tenant), clock, breaker), job_id, 0, budget_started_at=clock())
    got = results(store, job_id)
    assert (got["a@x"].status.value, got["a@x"].reason, got["a@x"].attempts) == ("failed", "retries_exhausted", 9)
    assert got["b@x"].status.value == "succeeded"
    assert not breaker.state().open and breaker.state().opens_total == 0


def test_a_catalog_read_refused_for_the_tenant_pauses_instead_of_crashing(store: JobStore, clock: FakeClock) -> None:
    tenant, job_id = three_users(store)
    tokens = Tokens()
    tokens.refused = True
    deps = make_deps(store, Network(tenant), clock, tokens=tokens, catalog=SkuCatalog(()))

    def catalog() -> SkuCatalog:
        try:
            return deps.catalog()
        except GraphAuthError as exc:  # as the worker's CatalogCache reports it
            raise CatalogUnavailable(f"could not read the subscribed SKUs: {exc.message}", exc) from None

    with pytest.raises(Parked):
        run_users(ChunkDeps(**{**deps.__dict__, "catalog": catalog}), job_id, 0, budget_started_at=clock())
    assert store.job_fields(job_id, "paused_reason") == {"paused_reason": "auth_failed"}


def test_a_paused_jobs_chunk_parks_before_reading(store: JobStore, clock: FakeClock) -> None:
    tenant, job_id = three_users(store)
    network = Network(tenant)
    store.pause(job_id, "graph_unavailable", "down", next_probe_at=clock() + 2)
    with pytest.raises(Parked):
        run_users(make_deps(store, network, clock), job_id, 0, budget_started_at=clock())
    assert network.sent == 0


def test_a_write_refused_by_an_open_breaker_is_not_sent_nor_charged(store: JobStore, clock: FakeClock,
                                                                    breaker: RedisBreaker) -> None:
    tenant, job_id = three_users(store)
    network = Network(tenant)

    def another_worker_sees_graph_go() -> None:
        for i in range(5):
            breaker.record(breaker.admit(), answered=False, request=f"elsewhere {i}", error="ConnectTimeout")

    tenant.after_round = another_worker_sees_graph_go  # after this chunk's reads
    with pytest.raises(Parked):
        run_users(make_deps(store, network, clock, breaker), job_id, 0, budget_started_at=clock())
    assert network.sent == 1  # the reads; the writes were refused before being sent
    assert store.job_fields(job_id, "paused_reason") == {"paused_reason": "graph_unavailable"}
    assert write_attempts(store, job_id) == {2: 0, 3: 0, 4: 0} and tenant.writes == []
