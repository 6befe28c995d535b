"""The Graph client against a scripted fake Graph: requests sent, errors translated, throttle used."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from graphclient.auth import GraphAuth
from graphclient.client import BatchRequest, GraphClient, read_cost
from graphclient.errors import (
    GraphAuthError,
    GraphError,
    GraphPermanentError,
    GraphThrottled,
    GraphTransientError,
)
from tests.fakes import FakeGraph, RecordingThrottle, Reply

TOKEN_1 = "eyJ0eXAi.SECRET-TOKEN-ONE.sig"
TOKEN_2 = "eyJ0eXAi.SECRET-TOKEN-TWO.sig"
NOW = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)
SKU = "6fd2c87f-b296-42f0-b197-1e91e994b900"

class FakeTokens:
    """A TokenProvider that hands out TOKEN_1, then TOKEN_2 after a forced refresh."""

    def __init__(self) -> None:
        self.calls: list[bool] = []
        self.token = TOKEN_1

    def get_token(self, *, force_refresh: bool = False) -> str:
        self.calls.append(force_refresh)
        if force_refresh:
            self.token = TOKEN_2
        return self.token


@pytest.fixture
def throttle() -> RecordingThrottle:
    return RecordingThrottle()


@pytest.fixture
def tokens() -> FakeTokens:
    return FakeTokens()


@pytest.fixture
def make_client(throttle: RecordingThrottle, tokens: FakeTokens) -> Iterator[Callable[[FakeGraph], GraphClient]]:
    clients: list[httpx.Client] = []

    def make(fake: FakeGraph) -> GraphClient:
        http = httpx.Client(transport=httpx.MockTransport(fake), auth=GraphAuth(tokens))
        clients.append(http)
        return GraphClient(
            http, base_url="https://graph.example/", throttle=throttle, timeout_s=5.0, utcnow=lambda: NOW
        )

    yield make
    for http in clients:
        http.close()


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": message, "innerError": {"request-id": "rid-body"}}}
    return httpx.Response(status, json=body, headers=headers or {})


def assert_no_secrets(error: BaseException) -> None:
    text = str(error) + repr(error) + str(getattr(error, "message", ""))
    assert TOKEN_1 not in text
    assert TOKEN_2 not in text
    assert "Bearer" not in text


# -- single calls ----------------------------------------------------------------------------------


def test_get_group_asks_for_the_id_and_display_name_and_refuses_a_non_id(make_client: Any) -> None:
    gid = "0A0A0A0A-1111-4111-8111-000000000001"
    fake = FakeGraph(httpx.Response(200, json={"id": gid.lower(), "displayName": "Sales E3"}))
    client = make_client(fake)
    assert client.get_group(gid) == {"id": gid.lower(), "displayName": "Sales E3"}
    request = fake.requests[0]
    assert request.method == "GET"
    assert request.url.path == f"/v1.0/groups/{gid.lower()}"
    assert request.url.params["$select"] == "id,displayName"
    with pytest.raises(GraphPermanentError, match="not a group id"):
        client.get_group("../users/ada")
    assert len(fake.requests) == 1


def test_assign_license_sends_both_keys_and_encodes_the_user(make_client: Any, throttle: RecordingThrottle) -> None:
    fake = FakeGraph(httpx.Response(200, json={"id": "u1"}))
    client = make_client(fake)
    assert client.assign_license("o'brien#1@contoso.com", [], []) == {"id": "u1"}
    request = fake.requests[0]
    assert request.method == "POST"
    assert request.url.raw_path == b"/v1.0/users/o%27brien%231@contoso.com/assignLicense"
    assert fake.body() == {"addLicenses": [], "removeLicenses": []}
    assert request.headers["Authorization"] == f"Bearer {TOKEN_1}"
    uuid.UUID(request.headers["client-request-id"])
    assert throttle.acquired == [1]
    assert [s for s, _ in throttle.observed] == [200]


def test_assign_license_swap_is_one_call(make_client: Any) -> None:
    fake = FakeGraph(httpx.Response(200, json={"id": "u1"}))
    make_client(fake).assign_license("a@b.c", [{"skuId": SKU, "disabledPlans": ["p1"]}], ["old"])
    assert fake.body() == {"addLicenses": [{"skuId": SKU, "disabledPlans": ["p1"]}], "removeLicenses": ["old"]}


def test_reads_take_no_write_tokens_but_still_pass_the_gate(make_client: Any, throttle: RecordingThrottle) -> None:
    fake = FakeGraph(
        httpx.Response(200, json={"value": [{"skuId": SKU}]}),
        httpx.Response(200, json={"id": "u1", "usageLocation": "US"}),
        httpx.Response(204),
    )
    client = make_client(fake)
    assert client.subscribed_skus() == [{"skuId": SKU}]
    assert client.get_user("a@b.c", ["id", "usageLocation"]) == {"id": "u1", "usageLocation": "US"}
    client.update_user("a@b.c", {"usageLocation": "DE"})
    assert throttle.acquired == [0, 0, 1]
    assert str(fake.requests[1].url) == "https://graph.example/v1.0/users/a@b.c?$select=id,usageLocation"
    assert fake.requests[2].method == "PATCH"
    assert fake.body(2) == {"usageLocation": "DE"}
    # Every request gets its own correlation id.
    assert len({r.headers["client-request-id"] for r in fake.requests}) == 3


def test_user_starting_with_dollar_uses_the_parenthesised_form(make_client: Any) -> None:
    fake = FakeGraph(httpx.Response(200, json={"id": "u1"}))
    make_client(fake).get_user("$adele'x@contoso.com", ["id"])
    assert fake.requests[0].url.raw_path.startswith(b"/v1.0/users('%24adele%27%27x@contoso.com')")


@pytest.mark.parametrize(
    ("reply", "kind", "status", "retry_after_s"),
    [
        (
            graph_error(429, "TooManyRequests", "Please retry again later.", {"Retry-After": "2.128"}),
            GraphThrottled,
            429,
            2.128,
        ),
        (
            graph_error(429, "TooManyRequests", "later", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
            GraphThrottled,
            429,
            30.0,
        ),
        (graph_error(503, "Request_ThrottledTemporarily", "Please try after 7 seconds."), GraphThrottled, 503, 7.0),
        (graph_error(503, "serviceNotAvailable", "busy", {"Retry-After": "3"}), GraphTransientError, 503, 3.0),
        (httpx.Response(500, text="<html>oops</html>"), GraphTransientError, 500, None),
        (httpx.Response(504), GraphTransientError, 504, None),
        (
            graph_error(400, "Request_BadRequest", "User does not have a corresponding license."),
            GraphPermanentError,
            400,
            None,
        ),
        (
            graph_error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."),
            GraphPermanentError,
            403,
            None,
        ),
        (graph_error(404, "Request_ResourceNotFound", "Resource 'x' does not exist."), GraphPermanentError, 404, None),
    ],
)
def test_error_translation(
    make_client: Any, reply: httpx.Response, kind: type[GraphError], status: int, retry_after_s: float | None
) -> None:
    fake = FakeGraph(reply)
    with pytest.raises(GraphError) as info:
        make_client(fake).assign_license("a@b.c", [{"skuId": SKU, "disabledPlans": []}], [])
    error = info.value
    assert type(error) is kind
    assert error.status == status
    assert error.retry_after_s == retry_after_s
    assert not error.ambiguous
    assert_no_secrets(error)
    if status < 500 and status != 429:
        assert error.code is not None and error.code in str(error)
        assert error.request_id == "rid-body"
        assert error.message and "rid-body" in error.message


def test_permanent_error_carries_graph_code_message_and_request_id(make_client: Any) -> None:
    reply = graph_error(
        400,
        "Request_BadRequest",
        "License assignment cannot be done for user with invalid usage location.",
        {"request-id": "rid-header"},
    )
    with pytest.raises(GraphPermanentError) as info:
        make_client(FakeGraph(reply)).assign_license("a@b.c", [], [])
    error = info.value
    assert error.code == "Request_BadRequest"
    assert "invalid usage location" in error.message
    assert error.request_id == "rid-header"


def test_legacy_503_throttle_pauses_the_throttle(make_client: Any, throttle: RecordingThrottle) -> None:
    reply = graph_error(503, "Request_ThrottledTemporarily", "Please try after 7 seconds.")
    with pytest.raises(GraphThrottled):
        make_client(FakeGraph(reply)).assign_license("a@b.c", [], [])
    assert [(s, h.get("retry-after")) for s, h in throttle.observed] == [(503, None), (429, "7.0")]


@pytest.mark.parametrize(
    ("exc", "ambiguous"),
    [
        (httpx.ReadTimeout("read timed out"), True),
        (httpx.WriteTimeout("write timed out"), True),
        (httpx.RemoteProtocolError("peer closed connection"), True),
        (httpx.ReadError("connection reset"), True),
        (httpx.ConnectError("connection refused"), False),
        (httpx.ConnectTimeout("connect timed out"), False),
    ],
)
def test_transport_errors(make_client: Any, throttle: RecordingThrottle, exc: Exception, ambiguous: bool) -> None:
    with pytest.raises(GraphTransientError) as info:
        make_client(FakeGraph(exc)).assign_license("a@b.c", [], [])
    assert info.value.ambiguous is ambiguous
    assert info.value.__cause__ is exc
    assert info.value.request_id  # the client-request-id, to find it in Graph's logs
    assert throttle.observed == []  # no response, nothing to learn
    assert_no_secrets(info.value)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[1, 2]", b""])
def test_malformed_success_body_is_transient_and_ambiguous(make_client: Any, content: bytes) -> None:
    reply = httpx.Response(200, content=content, headers={"Content-Type": "application/json"})
    with pytest.raises(GraphTransientError) as info:
        make_client(FakeGraph(reply)).assign_license("a@b.c", [], [])
    assert info.value.ambiguous
    assert info.value.status == 200


def test_401_refreshes_the_token_once_then_succeeds(make_client: Any, tokens: FakeTokens) -> None:
    fake = FakeGraph(
        graph_error(401, "InvalidAuthenticationToken", "Access token has expired."),
        httpx.Response(200, json={"id": "u1"}),
    )
    assert make_client(fake).assign_license("a@b.c", [], []) == {"id": "u1"}
    assert tokens.calls == [False, True]
    assert [r.headers["Authorization"] for r in fake.requests] == [f"Bearer {TOKEN_1}", f"Bearer {TOKEN_2}"]
    assert fake.body(0) == fake.body(1) == {"addLicenses": [], "removeLicenses": []}


def test_second_401_is_an_auth_error_without_tokens(make_client: Any, tokens: FakeTokens) -> None:
    expired = graph_error(401, "InvalidAuthenticationToken", "Access token validation failure.")
    fake = FakeGraph(expired, expired, httpx.Response(200, json={}))
    with pytest.raises(GraphAuthError) as info:
        make_client(fake).assign_license("a@b.c", [], [])
    assert info.value.status == 401
    assert len(fake.requests) == 2
    assert tokens.calls == [False, True]
    assert_no_secrets(info.value)


def test_token_failure_propagates_as_graph_error(make_client: Any, throttle: RecordingThrottle) -> None:
    class BrokenTokens:
        def get_token(self, *, force_refresh: bool = False) -> str:
            raise GraphAuthError("token request failed: invalid_client", status=401)

    fake = FakeGraph()
    http = httpx.Client(transport=httpx.MockTransport(fake), auth=GraphAuth(BrokenTokens()))
    client = GraphClient(http, base_url="https://graph.example", throttle=throttle, timeout_s=5.0)
    with pytest.raises(GraphAuthError):
        client.assign_license("a@b.c", [], [])
    assert fake.requests == []
    http.close()


# -- $batch ----------------------------------------------------------------------------------------


def item(id: str, status: int, body: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"id": id, "status": status, "headers": headers or {}, "body": body}


def three_requests() -> list[BatchRequest]:
    return [
        BatchRequest.assign_license("1", "a@b.c", [{"skuId": SKU, "disabledPlans": []}], []),
        BatchRequest.update_user("2", "o'b#2@b.c", {"usageLocation": "US"}),
        BatchRequest.get_user("3", "c@b.c", ["id", "assignedLicenses"]),
    ]


def test_batch_payload_write_count_and_shuffled_responses(make_client: Any, throttle: RecordingThrottle) -> None:
    responses = [
        item("3", 200, {"id": "c", "assignedLicenses": []}, {"Content-Type": "application/json"}),
        item("1", 200, {"id": "a"}, {"x-ms-throttle-limit-percentage": "0.9"}),
        item("2", 204),
    ]
    random.Random(5).shuffle(responses)
    fake = FakeGraph(httpx.Response(200, json={"responses": responses}))
    results = make_client(fake).batch(three_requests())

    request = fake.requests[0]
    assert request.url.path == "/v1.0/$batch"
    sent = fake.body()["requests"]
    assert sent[0] == {
        "id": "1",
        "method": "POST",
        "url": "/users/a@b.c/assignLicense",
        "body": {"addLicenses": [{"skuId": SKU, "disabledPlans": []}], "removeLicenses": []},
        "headers": {"Content-Type": "application/json"},
    }
    assert sent[1]["url"] == "/users/o%27b%232@b.c" and sent[1]["method"] == "PATCH"
    assert sent[2] == {"id": "3", "method": "GET", "url": "/users/c@b.c?$select=id,assignedLicenses"}

    assert throttle.acquired == [2]
    assert {k: (r.status, r.error) for k, r in results.items()} == {
        "1": (200, None),
        "2": (204, None),
        "3": (200, None),
    }
    assert results["1"].body == {"id": "a"}
    assert results["3"].body == {"id": "c", "assignedLicenses": []}
    # The outer response, then each item in the order Graph sent them.
    assert throttle.observed[0][0] == 200
    assert sorted(s for s, _ in throttle.observed[1:]) == [200, 200, 204]
    assert {"x-ms-throttle-limit-percentage": "0.9"} in [h for _, h in throttle.observed]


def test_batch_items_fail_individually_with_their_own_retry_after(
    make_client: Any, throttle: RecordingThrottle
) -> None:
    responses = [
        item(
            "2",
            429,
            {"error": {"code": "TooManyRequests", "message": "Please retry again later."}},
            {"Retry-After": "0.249"},
        ),
        item("1", 200, {"id": "a"}),
        item("3", 404, {"error": {"code": "Request_ResourceNotFound", "message": "Resource 'c' does not exist."}}),
    ]
    fake = FakeGraph(httpx.Response(200, json={"responses": responses}))
    results = make_client(fake).batch(three_requests())
    assert results["1"].error is None
    throttled = results["2"].error
    assert isinstance(throttled, GraphThrottled)
    assert throttled.retry_after_s == 0.249
    assert "$batch item 2" in str(throttled)
    missing = results["3"].error
    assert isinstance(missing, GraphPermanentError) and missing.code == "Request_ResourceNotFound"
    assert (429, {"retry-after": "0.249"}) in throttle.observed


def test_batch_item_missing_or_malformed_is_ambiguous(make_client: Any) -> None:
    responses = [item("1", 200, "not an object"), {"id": "3", "body": {}}, item("99", 200, {})]
    fake = FakeGraph(httpx.Response(200, json={"responses": responses}))
    results = make_client(fake).batch(three_requests())
    assert set(results) == {"1", "2", "3"}
    for key in ("1", "2", "3"):
        error = results[key].error
        assert isinstance(error, GraphTransientError) and error.ambiguous, key


def test_batch_limits_are_checked_before_sending(make_client: Any, throttle: RecordingThrottle) -> None:
    fake = FakeGraph()
    client = make_client(fake)
    too_many = [BatchRequest.get_user(str(i), f"u{i}@b.c", ["id"]) for i in range(21)]
    with pytest.raises(ValueError, match="at most 20"):
        client.batch(too_many)
    duplicate = [BatchRequest.get_user("1", "a@b.c", ["id"]), BatchRequest.get_user("1", "b@b.c", ["id"])]
    with pytest.raises(ValueError, match="unique"):
        client.batch(duplicate)
    assert client.batch([]) == {}
    assert fake.requests == []
    assert throttle.acquired == []


def test_twenty_writes_count_twenty(make_client: Any, throttle: RecordingThrottle) -> None:
    requests = [BatchRequest.assign_license(str(i), f"u{i}@b.c", [], ["x"]) for i in range(20)]
    responses = [item(str(i), 200, {"id": str(i)}) for i in range(20)]
    make_client(FakeGraph(httpx.Response(200, json={"responses": responses}))).batch(requests)
    assert throttle.acquired == [20]
    assert len(throttle.observed) == 21


@pytest.mark.parametrize(
    ("reply", "kind", "ambiguous"),
    [
        (graph_error(429, "TooManyRequests", "later", {"Retry-After": "5"}), GraphThrottled, False),
        (httpx.Response(502), GraphTransientError, False),
        (httpx.ReadTimeout("timed out"), GraphTransientError, True),
        (httpx.Response(200, content=b"{truncated"), GraphTransientError, True),
        (httpx.Response(200, json={"value": []}), GraphTransientError, True),
        (graph_error(400, "BadRequest", "Batch request contains duplicate ids"), GraphPermanentError, False),
    ],
)
def test_whole_batch_failures_raise(make_client: Any, reply: Reply, kind: type[GraphError], ambiguous: bool) -> None:
    with pytest.raises(kind) as info:
        make_client(FakeGraph(reply)).batch(three_requests())
    assert info.value.ambiguous is ambiguous
    assert_no_secrets(info.value)


# -- the read budget --------------------------------------------------------------------------------


@pytest.fixture
def budgets(tokens: FakeTokens) -> Iterator[tuple[RecordingThrottle, RecordingThrottle, Any]]:
    """A client with a write throttle and a separate read (resource-unit) throttle."""
    writes, reads = RecordingThrottle(), RecordingThrottle()
    clients: list[httpx.Client] = []

    def make(fake: FakeGraph) -> GraphClient:
        http = httpx.Client(transport=httpx.MockTransport(fake), auth=GraphAuth(tokens))
        clients.append(http)
        return GraphClient(http, base_url="https://graph.example/", throttle=writes, read_throttle=reads,
                           timeout_s=5.0, utcnow=lambda: NOW)

    yield writes, reads, make
    for http in clients:
        http.close()


def test_reads_spend_the_read_budget_and_writes_the_write_budget(budgets: Any) -> None:
    writes, reads, make = budgets
    client = make(FakeGraph(httpx.Response(200, json={"id": "a"}), httpx.Response(200, json={"value": []}),
                            httpx.Response(200, json={"id": "a"})))
    client.get_user("a@b.c", ["id", "assignedLicenses"])
    client.subscribed_skus()
    client.assign_license("a@b.c", [], [SKU])
    assert reads.acquired == [1, 3]  # a user with $select 1 RU, subscribedSkus 3 RU
    assert writes.acquired == [1]  # reads leave the write budget (and its gate) alone
    assert [s for s, _ in reads.observed] == [200, 200] and [s for s, _ in writes.observed] == [200]


def test_a_mixed_batch_spends_both_budgets(budgets: Any) -> None:
    writes, reads, make = budgets
    responses = [item("1", 200, {}), item("2", 204), item("3", 200, {"id": "c"})]
    make(FakeGraph(httpx.Response(200, json={"responses": responses}))).batch(three_requests())
    assert (writes.acquired, reads.acquired) == ([2], [1])


def test_a_resource_unit_429_slows_the_reads_not_the_writes(budgets: Any) -> None:
    writes, reads, make = budgets
    refused = graph_error(429, "TooManyRequests", "Please retry again later.", {
        "Retry-After": "1.5", "x-ms-throttle-information": "ResourceUnitLimitExceeded",
        "x-ms-throttle-scope": "Tenant_Application/Read/app/tenant"})
    with pytest.raises(GraphThrottled):
        make(FakeGraph(refused)).get_user("a@b.c", ["id"])
    assert [s for s, _ in reads.observed] == [429] and writes.observed == []
    write_refused = graph_error(429, "TooManyRequests", "Please retry again later.", {
        "Retry-After": "2", "x-ms-throttle-information": "WriteLimitExceeded"})
    with pytest.raises(GraphThrottled):
        make(FakeGraph(write_refused)).get_user("a@b.c", ["id"])  # a read refused by the write limit
    assert [s for s, _ in writes.observed] == [429]


@pytest.mark.parametrize(("path", "cost"), [
    ("/users/a@b.c?$select=id,assignedLicenses", 1), ("/users/a@b.c", 2), ("/users?$select=id&$top=999", 1),
    ("/subscribedSkus", 3), ("/groups/g1/members?$select=id", 2), ("/groups/g1/members", 3),
    ("/groups?$select=id,displayName", 1), ("/groups/g1/membersWithLicenseErrors", 1)])
def test_read_cost_follows_graphs_table(path: str, cost: int) -> None:
    assert read_cost(path) == cost
