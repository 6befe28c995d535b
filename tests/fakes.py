"""Fakes shared by the tests: a settable clock, a recording sleep, a recording throttle, a tiny Graph tenant."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx

from graphclient.throttle import ThrottleSnapshot


@dataclass
class FakeClock:
    """Wall-clock seconds that only move when told to."""

    t: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class RecordingSleep:
    """A sleep that records each interval and advances a fake clock instead of sleeping."""

    clock: FakeClock
    intervals: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.intervals.append(seconds)
        self.clock.advance(seconds)


@dataclass
class RecordingThrottle:
    """A Throttle that grants everything and records what it was asked and told."""

    acquired: list[int] = field(default_factory=list)
    observed: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    def acquire(self, writes: int) -> None:
        self.acquired.append(writes)

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        self.observed.append((status, {k.lower(): v for k, v in headers.items()}))

    def snapshot(self) -> ThrottleSnapshot:
        return ThrottleSnapshot(None, None, None, 0.0, sum(1 for s, _ in self.observed if s == 429))


Fault = Callable[[str, str], httpx.Response | Exception | None]


class Tenant:
    """A tiny Graph: users with licenses and usageLocation, assignLicense/PATCH/GET, and $batch."""

    def __init__(self, users: dict[str, dict[str, Any]]) -> None:
        self.users = users
        self.writes: list[tuple[str, str]] = []  # (method, user) of every write that reached us
        self.faults: list[Fault] = []  # consulted per item: (method, user) -> reply, or None
        self.batch_fault: Callable[[], Exception | None] | None = None
        self.after_round: Callable[[], None] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = unquote(request.url.path)
        if path.endswith("/$batch"):
            items = json.loads(request.content)["requests"]
            responses = []
            for item in items:
                status, headers, body = self.item(item["method"], item["url"], item.get("body"))
                responses.append({"id": item["id"], "status": status, "headers": headers, "body": body})
            if self.after_round:
                self.after_round()
            if self.batch_fault and (exc := self.batch_fault()) is not None:
                raise exc
            return httpx.Response(200, json={"responses": responses[::-1]})
        body = json.loads(request.content) if request.content else None
        status, headers, out = self.item(request.method, path.split("/v1.0", 1)[1], body)
        if self.after_round:
            self.after_round()
        return httpx.Response(status, headers=headers, json=out) if out is not None else httpx.Response(status)

    def item(self, method: str, url: str, body: Any) -> tuple[int, dict[str, str], Any]:
        user = unquote(url.split("/users/", 1)[1].split("/")[0].split("?")[0])
        for fault in list(self.faults):
            reply = fault(method, user)
            if isinstance(reply, httpx.Response):
                return reply.status_code, dict(reply.headers), reply.json() if reply.content else None
        state = self.users.get(user)
        if state is None:
            missing = f"Resource '{user}' does not exist"
            return 404, {}, {"error": {"code": "Request_ResourceNotFound", "message": missing}}
        if method == "GET":
            return 200, {}, {"userPrincipalName": user, **state}
        self.writes.append((method, user))
        if method == "PATCH":
            state["usageLocation"] = body["usageLocation"]
            return 204, {}, None
        held = {a["skuId"]: a for a in state["assignedLicenses"]}
        for sku in body["removeLicenses"]:
            if sku not in held:
                return 400, {}, {"error": {"code": "Request_BadRequest",
                                           "message": "User does not have a corresponding license."}}
        for sku in body["removeLicenses"]:
            held.pop(sku)
        for add in body["addLicenses"]:
            held[add["skuId"]] = {"skuId": add["skuId"], "disabledPlans": add["disabledPlans"]}
        state["assignedLicenses"] = list(held.values())
        return 200, {}, {"userPrincipalName": user, **state}


Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class FakeGraph:
    """A MockTransport handler: records requests and answers from a script (default 200 {})."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        # A copy: the auth flow edits and resends the same request object after a 401.
        self.requests.append(
            httpx.Request(request.method, request.url, headers=request.headers.copy(), content=request.content)
        )
        reply = self.replies.pop(0) if self.replies else httpx.Response(200, json={})
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx.Response):
            return reply
        return reply(request)

    def body(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)
