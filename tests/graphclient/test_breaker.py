"""The per-tenant circuit breaker on a real Redis, several 'workers' with their own fake clocks.

Each worker is a RedisBreaker of its own (as in separate processes) over the same Redis state; the
GraphClient tests check that every call asks it first and tells it how the call went.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from graphclient.breaker import Admission, RedisBreaker
from graphclient.client import BatchRequest, GraphClient
from graphclient.errors import GraphAuthError, GraphTransientError, GraphUnavailable
from tests.fakes import FakeClock, RecordingThrottle

T0 = 1_700_000_000.0
Factory = Callable[..., RedisBreaker]


@pytest.fixture
def make(redis_client: redis.Redis) -> Factory:
    def make(clock: FakeClock, tenant: str = "contoso", **kwargs: float) -> RedisBreaker:
        return RedisBreaker(redis_client, tenant, clock=clock, probe_lease_s=35.0, **kwargs)

    return make


def fail(breaker: RedisBreaker, request: str, admission: Admission | None = None) -> None:
    breaker.record(admission or breaker.admit(), answered=False, request=request, error=f"{request}: ConnectError")


def test_opens_after_five_failures_in_a_row_from_several_workers(make: Factory) -> None:
    clock = FakeClock(T0)
    a, b = make(clock), make(clock)
    for i, worker in enumerate([a, b, a, b]):
        fail(worker, f"POST /$batch {i}")
    assert not a.state().open and b.state().failures_in_row == 4
    fail(b, "GET /users/x")
    state = a.state()
    assert state.open and state.opened_at == T0 and state.next_probe_at == T0 + 2.0
    assert state.last_error == "GET /users/x: ConnectError" and state.opens_total == 1
    with pytest.raises(GraphUnavailable) as refused:
        a.admit()
    assert refused.value.next_probe_at == T0 + 2.0
    assert "Graph does not answer for tenant profile 'contoso'" in refused.value.message


def test_one_request_failing_again_and_again_does_not_open_it(make: Factory) -> None:
    clock = FakeClock(T0)
    breaker = make(clock)
    for _ in range(20):
        fail(breaker, "GET /users/broken")
    fail(breaker, "GET /users/also-broken")
    assert not breaker.state().open  # 21 failures in a row, but only two distinct requests
    fail(breaker, "GET /users/third")
    assert breaker.state().open


def test_a_success_in_between_starts_the_count_again(make: Factory) -> None:
    clock = FakeClock(T0)
    a, b = make(clock), make(clock)
    for i in range(4):
        fail(a, f"req {i}")
    b.record(b.admit(), answered=True)
    for i in range(4):
        fail(a, f"again {i}")
    assert not a.state().open and a.state().failures_in_row == 4


def test_one_prober_at_a_time_and_the_probe_interval_grows_to_its_cap(make: Factory) -> None:
    clock = FakeClock(T0)
    workers = [make(clock) for _ in range(3)]
    for i in range(5):
        fail(workers[i % 3], f"req {i}")
    intervals: list[float] = []
    for _ in range(7):
        state = workers[0].state()
        assert state.open and state.next_probe_at is not None
        clock.t = state.next_probe_at - 0.001
        for worker in workers:  # not yet: nobody may call
            with pytest.raises(GraphUnavailable):
                worker.admit()
        clock.t = state.next_probe_at
        probe = workers[1].admit()
        assert probe.probe  # the first to ask probes ...
        for worker in (workers[0], workers[2], workers[1]):  # ... and the others wait, itself included
            with pytest.raises(GraphUnavailable):
                worker.admit()
        fail(workers[1], "GET /subscribedSkus", probe)
        next_probe_at = workers[2].state().next_probe_at
        assert next_probe_at is not None
        intervals.append(next_probe_at - clock.t)
    assert intervals == [4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_the_probes_answer_closes_it_and_every_worker_sends_again(make: Factory) -> None:
    clock = FakeClock(T0)
    a, b = make(clock), make(clock)
    for i in range(5):
        fail(a, f"req {i}")
    clock.advance(2.0)
    probe = b.admit()
    b.record(probe, answered=True)
    assert not a.state().open and a.state().failures_in_row == 0
    assert a.admit() == Admission() and b.admit() == Admission()
    # The next outage starts again from the first probe interval.
    for i in range(5):
        fail(a, f"later {i}")
    assert a.state().next_probe_at == clock.t + 2.0 and a.state().opens_total == 2


def test_answers_to_calls_sent_before_it_opened_do_not_close_it(make: Factory) -> None:
    clock = FakeClock(T0)
    a, b = make(clock), make(clock)
    in_flight = b.admit()  # sent while still closed, answered after it opened
    for i in range(5):
        fail(a, f"req {i}")
    b.record(in_flight, answered=True)
    b.record(in_flight, answered=False, request="late", error="late failure")
    state = a.state()
    assert state.open and state.next_probe_at == T0 + 2.0  # neither closed nor pushed back


def test_a_prober_that_died_lets_another_probe_after_its_lease(make: Factory, redis_client: redis.Redis) -> None:
    clock = FakeClock(T0)
    a, b = make(clock), make(clock)
    for i in range(5):
        fail(a, f"req {i}")
    clock.advance(2.0)
    assert a.admit().probe  # and never reports back
    with pytest.raises(GraphUnavailable):
        b.admit()
    # The lease is a Redis key that expires on Redis's own clock: end it as its expiry would.
    lease = f"{a.key}:probe"
    assert 30_000 < redis_client.pttl(lease) <= 35_000
    redis_client.delete(lease)
    assert b.admit().probe


def test_tenants_have_separate_breakers(make: Factory) -> None:
    clock = FakeClock(T0)
    down, up = make(clock, tenant="down"), make(clock, tenant="up")
    for i in range(5):
        fail(down, f"req {i}")
    assert down.state().open and not up.state().open
    assert up.admit() == Admission()


# --- the Graph client asks it before every call and reports every outcome --------------------------

class Graph:
    """A MockTransport handler whose next replies are set by the test; counts what reached it."""

    def __init__(self) -> None:
        self.sent = 0
        self.reply: Callable[[httpx.Request], httpx.Response] = lambda r: httpx.Response(200, json={"value": []})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return self.reply(request)


def client_for(graph: Graph, breaker: RedisBreaker, auth: httpx.Auth | None = None) -> GraphClient:
    http = httpx.Client(transport=httpx.MockTransport(graph), auth=auth)
    return GraphClient(http, base_url="https://graph.test", throttle=RecordingThrottle(), timeout_s=5,
                       breaker=breaker)


def refuse_connection(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_transport_failures_and_5xx_open_it_then_nothing_is_sent(make: Factory) -> None:
    clock = FakeClock(T0)
    graph = Graph()
    client = client_for(graph, make(clock))
    graph.reply = refuse_connection
    for user in ("a", "b"):
        with pytest.raises(GraphTransientError):
            client.get_user(f"{user}@x", ["id"])

    def dropped(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    graph.reply = dropped
    with pytest.raises(GraphTransientError):
        client.batch([BatchRequest.get_user("1", "c@x", ["id"]), BatchRequest.get_user("2", "d@x", ["id"])])
    graph.reply = lambda r: httpx.Response(503, json={"error": {"code": "serviceNotAvailable", "message": "x"}})
    for user in ("e", "f"):
        with pytest.raises(GraphTransientError):
            client.assign_license(f"{user}@x", [], ["sku"])
    assert graph.sent == 5
    with pytest.raises(GraphUnavailable):
        client.subscribed_skus()
    assert graph.sent == 5  # refused without being sent


def test_answers_that_are_errors_are_still_answers(make: Factory) -> None:
    clock = FakeClock(T0)
    graph = Graph()
    breaker = make(clock)
    client = client_for(graph, breaker)
    replies = [httpx.Response(404, json={"error": {"code": "Request_ResourceNotFound", "message": "no"}}),
               httpx.Response(429, headers={"Retry-After": "0"}, json={}),
               httpx.Response(403, json={"error": {"code": "Authorization_RequestDenied", "message": "no"}})]
    for i in range(12):
        graph.reply = refuse_connection if i % 3 else (lambda r, k=i: replies[k // 3 % 3])
        with pytest.raises(Exception):  # noqa: B017 - each call fails one way or another
            client.get_user(f"u{i}@x", ["id"])
    assert not breaker.state().open and breaker.state().failures_in_row == 2


def test_an_unreachable_identity_platform_counts_a_refused_credential_does_not(make: Factory) -> None:
    clock = FakeClock(T0)
    graph = Graph()
    breaker = make(clock)

    class Tokens(httpx.Auth):
        def __init__(self) -> None:
            self.error: Exception = GraphTransientError("token request failed: ConnectionError")

        def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
            raise self.error
            yield request  # a generator, as httpx wants

    tokens = Tokens()
    client = client_for(graph, breaker, auth=tokens)
    for i in range(4):
        with pytest.raises(GraphTransientError):
            client.get_user(f"u{i}@x", ["id"])
    assert breaker.state().failures_in_row == 4 and graph.sent == 0
    tokens.error = GraphAuthError("AADSTS7000215: Invalid client secret provided.", status=401)
    with pytest.raises(GraphAuthError):
        client.get_user("u9@x", ["id"])
    assert breaker.state().failures_in_row == 0  # the identity platform answered: Graph is reachable
