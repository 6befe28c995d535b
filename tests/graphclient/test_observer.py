"""The Graph client's observer: told of every answer ($batch items on their own), never failing a call."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from graphclient.client import BatchRequest, GraphAnswer, GraphClient
from graphclient.errors import GraphThrottled, GraphTransientError
from tests.fakes import FakeGraph, RecordingThrottle

NOW = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)


def client(graph: FakeGraph, answers: list[GraphAnswer]) -> GraphClient:
    return GraphClient(httpx.Client(transport=httpx.MockTransport(graph)), base_url="https://graph.test",
                       throttle=RecordingThrottle(), timeout_s=5, utcnow=lambda: NOW, observer=answers.append)


def test_single_calls_report_method_status_and_throttling() -> None:
    answers: list[GraphAnswer] = []
    graph = FakeGraph(
        httpx.Response(200, json={"id": "u"}),
        httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"code": "TooManyRequests"}}),
        httpx.Response(503, json={"error": {"code": "Request_ThrottledTemporarily",
                                            "message": "Please try after 3 seconds"}}),
        httpx.ConnectError("refused"),
    )
    graph_client = client(graph, answers)
    graph_client.get_user("u@x", ["id"])
    with pytest.raises(GraphThrottled):
        graph_client.assign_license("u@x", [], ["sku"])
    with pytest.raises(GraphThrottled):
        graph_client.update_user("u@x", {"usageLocation": "US"})
    with pytest.raises(GraphTransientError):
        graph_client.get_user("u@x", ["id"])
    assert answers == [GraphAnswer("GET", 200), GraphAnswer("POST", 429, True, 7.0),
                       GraphAnswer("PATCH", 503, True, 3.0), GraphAnswer("GET", 0)]


def test_a_batch_reports_its_envelope_and_each_item() -> None:
    answers: list[GraphAnswer] = []
    graph = FakeGraph(httpx.Response(200, json={"responses": [
        {"id": "1", "status": 200, "body": {"id": "a"}},
        {"id": "2", "status": 429, "headers": {"Retry-After": "2"}, "body": {"error": {"code": "TooManyRequests"}}},
        {"id": "3", "status": 404, "body": {"error": {"code": "Request_ResourceNotFound"}}},
    ]}))
    results = client(graph, answers).batch([BatchRequest.get_user("1", "a@x", ["id"]),
                                            BatchRequest.assign_license("2", "b@x", [], ["sku"]),
                                            BatchRequest.update_user("3", "c@x", {"usageLocation": "US"})])
    assert set(results) == {"1", "2", "3"}
    assert answers == [GraphAnswer("$batch", 200), GraphAnswer("GET", 200), GraphAnswer("POST", 429, True, 2.0),
                       GraphAnswer("PATCH", 404)]


def test_a_failing_observer_does_not_fail_the_call(caplog: pytest.LogCaptureFixture) -> None:
    def broken(answer: GraphAnswer) -> None:
        raise RuntimeError("metrics are broken")

    graph_client = GraphClient(httpx.Client(transport=httpx.MockTransport(FakeGraph())), base_url="https://graph.test",
                               throttle=RecordingThrottle(), timeout_s=5, observer=broken)
    assert graph_client.get_user("u@x", ["id"]) == {}
    assert "Graph observer failed" in caplog.text
