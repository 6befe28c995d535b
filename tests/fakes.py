"""Fakes shared by the tests: a settable clock, a recording sleep, a recording throttle, a tiny Graph tenant,
and a hostile webhook receiver."""

from __future__ import annotations

import json
import socket
import threading
import time
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
    """A tiny Graph: users with licenses and usageLocation, assignLicense/PATCH/GET, $batch, and GET of groups."""

    def __init__(self, users: dict[str, dict[str, Any]], groups: dict[str, str] | None = None) -> None:
        self.users = users
        self.groups = groups or {}  # group id -> displayName, for GET /groups/{id}
        self.group_reads: list[str] = []  # the group ids asked for
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
        if url.startswith("/groups/"):
            return self.group(url)
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

    def group(self, url: str) -> tuple[int, dict[str, str], Any]:
        group_id = url.split("/groups/", 1)[1].split("?")[0]
        self.group_reads.append(group_id)
        if group_id not in self.groups:
            return 404, {}, {"error": {"code": "Request_ResourceNotFound", "message": f"'{group_id}' does not exist"}}
        return 200, {}, {"id": group_id, "displayName": self.groups[group_id]}


class Directory:
    """A tiny Graph directory for scans: paged `GET /users` (120 a page with signInActivity), groups and members.

    `users` are Graph user bodies (with `signInActivity` when they have one); `groups` maps a group id to
    its members (user or group ids) and `error_groups` lists the groups with members in license error.
    `sign_ins_denied` is the 403 code a signInActivity read gets (None: allowed).
    """

    def __init__(self, users: list[dict[str, Any]], groups: dict[str, list[str]] | None = None,
                 error_groups: dict[str, str] | None = None, sign_ins_denied: str | None = None) -> None:
        self.users = users
        self.groups = groups or {}
        self.error_groups = error_groups or {}  # id -> displayName
        self.sign_ins_denied = sign_ins_denied
        self.requests: list[tuple[str, dict[str, str]]] = []  # path and query parameters of every request

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = unquote(request.url.path).split("/v1.0", 1)[1]
        query = {k: v for k, v in request.url.params.items()}
        self.requests.append((path, query))
        select = query.get("$select", "").split(",")
        top, skip = int(query.get("$top", "100")), int(query.get("$skiptoken", "0"))
        if path == "/users":
            if "signInActivity" in select:
                if self.sign_ins_denied:
                    return httpx.Response(403, json={"error": {"code": self.sign_ins_denied, "message": "denied"}})
                if top > 120:
                    return httpx.Response(400, json={"error": {"code": "Request_BadRequest", "message":
                                                               "Cannot query data for more than 120 users at a time."}})
            return self._page(request, [self._user(u, select) for u in self.users], top, skip)
        if path == "/groups":
            assert query.get("$filter") == "hasMembersWithLicenseErrors eq true"
            return self._page(request, [{"id": g, "displayName": n} for g, n in self.error_groups.items()], top, skip)
        group, _, segment = path.removeprefix("/groups/").partition("/")
        if group not in self.groups:
            return httpx.Response(404, json={"error": {"code": "Request_ResourceNotFound", "message": group}})
        by_id = {u["id"]: u for u in self.users}
        if segment == "membersWithLicenseErrors":
            members = [self._user(by_id[m], select) for m in self.groups[group] if m in by_id]
        else:
            members = [{"@odata.type": "#microsoft.graph.user", "id": m} if m in by_id
                       else {"@odata.type": "#microsoft.graph.group", "id": m} for m in self.groups[group]]
        return self._page(request, members, top, skip)

    @staticmethod
    def _user(user: dict[str, Any], select: list[str]) -> dict[str, Any]:
        return {k: v for k, v in user.items() if k in select or k == "id"}

    @staticmethod
    def _page(request: httpx.Request, items: list[dict[str, Any]], top: int, skip: int) -> httpx.Response:
        body: dict[str, Any] = {"value": items[skip:skip + top]}
        if skip + top < len(items):
            body["@odata.nextLink"] = str(request.url.copy_merge_params({"$skiptoken": str(skip + top)}))
        return httpx.Response(200, json=body)


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


# --- a hostile webhook receiver ------------------------------------------------------------------------

@dataclass
class Connection:
    """One connection a HostileReceiver served: when it opened and ended, and how much it sent."""

    opened_at: float
    closed_at: float | None = None
    bytes_sent: int = 0


# One chunk of an endless body, made once (so that it does not count in the memory a test measures).
FLOOD_CHUNK = b"100000\r\n" + b"A" * 0x100000 + b"\r\n"


class HostileReceiver:
    """A plain-HTTP receiver on 127.0.0.1 answering as a hostile one would, on real sockets, one thread each.

    Modes: `ok` (200 at once), `silent` (reads, never answers), `drip-headers` (a status line, then a
    header one byte at a time), `drip-body` (200, then a chunked body one byte at a time), `flood` (200,
    then 1 MiB chunks as fast as they go, up to `flood_limit_bytes` per connection).
    """

    MODES = ("ok", "silent", "drip-headers", "drip-body", "flood")

    def __init__(self, mode: str, *, drip_interval_s: float = 1.0, flood_limit_bytes: int = 256 << 20) -> None:
        assert mode in self.MODES, mode
        self.mode = mode
        self.drip_interval_s = drip_interval_s
        self.flood_limit_bytes = flood_limit_bytes
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self._listener.getsockname()[1]

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> HostileReceiver:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()

    def open_now(self) -> int:
        """Connections not known to be closed yet (a drip learns of a close at its next byte)."""
        with self._lock:
            return sum(c.closed_at is None for c in self.connections)

    def served(self) -> list[Connection]:
        with self._lock:
            return list(self.connections)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            record = Connection(time.monotonic())
            with self._lock:
                self.connections.append(record)
            threading.Thread(target=self._serve, args=(conn, record), daemon=True).start()

    def _serve(self, conn: socket.socket, record: Connection) -> None:
        try:
            with conn:
                _read_request(conn)
                for piece in self._answer():
                    conn.sendall(piece)
                    record.bytes_sent += len(piece)
                if self.mode == "silent":
                    self._stop.wait(600)
        except OSError:
            pass
        finally:
            record.closed_at = time.monotonic()

    def _answer(self) -> Any:
        chunked = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        if self.mode == "ok":
            yield b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        elif self.mode == "drip-headers":
            yield b"HTTP/1.1 200 OK\r\nX-Drip: "
            while not self._stop.wait(self.drip_interval_s):
                yield b"a"
        elif self.mode == "drip-body":
            yield chunked
            while not self._stop.wait(self.drip_interval_s):
                yield b"1\r\nA\r\n"
        elif self.mode == "flood":
            yield chunked
            for _ in range(self.flood_limit_bytes // len(FLOOD_CHUNK)):
                yield FLOOD_CHUNK


def _read_request(conn: socket.socket) -> bytes:
    """Read one request (headers, and a body of Content-Length bytes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
