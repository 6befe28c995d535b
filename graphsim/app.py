"""The simulator as one raw ASGI application: identity, Graph, faults and the `/_sim/` control surface."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs

from graphsim.config import SimConfig, apply_updates, resolve_read_limit
from graphsim.control import DirectoryControl
from graphsim.fixture import ISO_COUNTRIES, Fixture, build_fixture
from graphsim.graph import GraphService
from graphsim.identity import IdentityService
from graphsim.stats import Stats
from graphsim.tenant import Tenant
from graphsim.throttle import Throttler
from graphsim.tokens import TokenError, TokenIssuer
from graphsim.wire import BAD_JSON, GRAPH_JSON, WRITE_METHODS, Call, Reply, error_body, parse_json_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = b"application/json; charset=utf-8"
_PRE_APPLY_FAULTS = ("fault_503", "fault_504", "fault_reset")
_POST_APPLY_FAULTS = ("fault_reset_after_apply", "fault_slow", "fault_malformed")


class ConnectionDropped(Exception):
    """Raised to make the server close the connection without a (complete) response."""


class DropFilter(logging.Filter):
    """Hides the server's traceback for connections graphsim drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionDropped("client went away")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _drop(send: Send) -> None:
    # A header value with a NUL byte makes the server refuse the response start before writing anything;
    # the exception that follows makes it close the socket: the client sees a reset, not a status line.
    with contextlib.suppress(Exception):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-graphsim-drop", b"\x00")]})
    raise ConnectionDropped("graphsim fault: connection dropped")


def _number(value: Any, name: str) -> float:
    """A JSON number >= 0 (not a boolean); ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number >= 0")
    return float(value)


def _outage_value(value: Any) -> float:
    return _number(value, "outage_s")


class SimApp:
    """One simulated tenant behind an ASGI callable; `state` is the live directory."""

    def __init__(self, config: SimConfig, fixture: Fixture, base_url: str) -> None:
        self.fixture = fixture
        self.base_url = base_url
        self.issuer = TokenIssuer(fixture.tenant_id)
        self._config = config
        self.identity = IdentityService(fixture, self.issuer, base_url, lambda: self.config.token_lifetime_s)
        self._latency_rng = random.Random(f"latency:{config.seed}")
        self._fault_rng = random.Random(config.fault_seed if config.fault_seed is not None else config.seed)
        # Until when (graphsim's clock) Graph and the identity platform are unreachable; None: they are up.
        self._outage_until: float | None = None
        self.graph = self._new_graph(config)
        # Graph requests received and not answered yet (a slow fault logs its write only when it answers).
        self._graph_in_flight = 0

    def _new_throttler(self, config: SimConfig) -> Throttler:
        read_limit = resolve_read_limit(config.read_limit, len(self.fixture.users))
        return Throttler(self.fixture.tenant_id, config.write_limit, config.tenant_write_limit, config.clock,
                         read_limit, charge_refused=config.charge_refused)

    def _new_graph(self, config: SimConfig) -> GraphService:
        return GraphService(Tenant(self.fixture), self._new_throttler(config), Stats(), config, self.base_url,
                            random.Random(f"shuffle:{config.seed}"))

    @property
    def config(self) -> SimConfig:
        """The configuration in force (the Graph service owns it, as force_429 counts down there)."""
        return self.graph.config

    @property
    def state(self) -> Tenant:
        """The live tenant."""
        return self.graph.tenant

    @property
    def stats(self) -> Stats:
        """The live counters."""
        return self.graph.stats

    def reset(self) -> None:
        """Back to the fixture (users, seats, full buckets, counters, write log) and out of any outage; knobs stay."""
        self._outage_until = None
        self.graph = self._new_graph(replace(self.config, force_429=None))

    def update_config(self, updates: dict[str, Any]) -> SimConfig:
        """Apply run-time knob changes (and `outage_s`); a changed limit gets fresh (full) buckets."""
        updates = dict(updates)
        outage_s = _outage_value(updates.pop("outage_s")) if "outage_s" in updates else None
        old = self.config
        new = apply_updates(old, updates)
        self.graph.config = new
        limits = ("write_limit", "tenant_write_limit", "read_limit")
        if any(getattr(new, name) != getattr(old, name) for name in limits):
            self.graph.throttler = self._new_throttler(new)
        self.graph.throttler.charge_refused = new.charge_refused
        if "fault_seed" in updates:
            self._fault_rng = random.Random(new.fault_seed if new.fault_seed is not None else new.seed)
        if outage_s is not None:
            self._outage_until = new.clock() + outage_s if outage_s > 0 else None
        return new

    def outage_remaining_s(self) -> float:
        """Seconds the current outage still lasts (0 when Graph and the identity platform are up)."""
        until = self._outage_until
        if until is None:
            return 0.0
        remaining = until - self.config.clock()
        if remaining <= 0:
            self._outage_until = None
            return 0.0
        return remaining

    def describe(self) -> dict[str, Any]:
        """The run-time knobs and the outage's remaining seconds (what `GET /_sim/config` returns)."""
        return {**self.config.describe(), "outage_s": round(self.outage_remaining_s(), 3)}

    # -- ASGI ----------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await _read_body(receive)
        is_control = path.startswith("/_sim/") and self.config.control
        if not is_control and self._outage_until is not None and self.outage_remaining_s() > 0:
            self._drop_in_outage(method, path, body)
            await _drop(send)
        if path.startswith(("/v1.0/", "/beta/")):
            self._graph_in_flight += 1
            try:
                await self._graph_request(method, path, scope.get("query_string", b""), headers, body, send)
            finally:
                self._graph_in_flight -= 1
        elif is_control:
            await self._control(method, path, scope.get("query_string", b""), body, send)
        elif path.endswith("/oauth2/v2.0/token") and method == "POST":
            status, payload = self.identity.token(path.split("/")[1], body, headers)
            self.stats.count("token", status)
            await _respond(send, status, _dumps(payload),
                           [(b"content-type", _JSON), (b"cache-control", b"no-store, no-cache")])
        elif path.endswith("/v2.0/.well-known/openid-configuration") and method == "GET":
            status, payload = self.identity.discovery(path.split("/")[1])
            self.stats.count("openid-configuration", status)
            await _respond(send, status, _dumps(payload), [(b"content-type", _JSON)])
        else:
            request_id = str(uuid.uuid4())
            segment = path.strip("/").split("/")[0]
            payload = error_body("BadRequest", f"Resource not found for the segment '{segment}'.",
                                 request_id, headers.get("client-request-id", request_id))
            self.stats.count("other", 404)
            await _respond(send, 404, _dumps(payload), [(b"content-type", GRAPH_JSON.encode())])

    def _drop_in_outage(self, method: str, path: str, raw_body: bytes) -> None:
        """Count (and log, for writes) a request the outage swallows."""
        if path.startswith(("/v1.0/", "/beta/")):
            segments = [s for s in path.split("/")[2:] if s]
            route = GraphService.endpoint_of(method, segments)
            self._log_unrun_writes(method, path, parse_json_body(raw_body), "dropped", "outage")
        elif path.endswith("/oauth2/v2.0/token"):
            route = "token"
        elif path.endswith("/.well-known/openid-configuration"):
            route = "openid-configuration"
        else:
            route = "other"
        self.stats.fault("outage")
        self.stats.count(route, "dropped")

    # -- Graph ---------------------------------------------------------------------------------------

    def _log_write(self, method: str, path: str, reply: Reply | None, status: int | str,
                   fault: str | None = None) -> None:
        user = reply.user if reply is not None else None
        group = reply.group if reply is not None else None
        parts = [p for p in path.split("?")[0].strip("/").split("/") if p]
        if user is None and group is None:
            user = _segment_after(parts, "users")
            group = _segment_after(parts, "groups") if user is None else None
        resolved = self.state.find_user(user) if user else None
        entry: dict[str, Any] = {"user": user, "user_id": resolved.id if resolved else None, "method": method,
                                 "path": path, "status": status, "ts": time.time()}
        if group is not None:
            found = self.state.find_group(group)
            entry["group"], entry["group_id"] = group, found.id if found else None
        if fault:
            entry["fault"] = fault
        self.stats.log_write(entry)

    def _log_unrun_writes(self, method: str, path: str, body: Any, status: int | str, fault: str | None) -> None:
        """Log the writes of a request that never ran (401 or a pre-apply fault), batch items included."""
        if path.rstrip("/").endswith("/$batch") and isinstance(body, dict):
            for item in body.get("requests") or []:
                if isinstance(item, dict) and str(item.get("method", "")).upper() in WRITE_METHODS:
                    self._log_write(str(item["method"]).upper(), str(item.get("url", "")), None, status, fault)
        elif method in WRITE_METHODS:
            self._log_write(method, path, None, status, fault)

    def _roll_fault(self) -> str | None:
        config = self.config
        draw = self._fault_rng.random()
        for name in (*_PRE_APPLY_FAULTS, *_POST_APPLY_FAULTS):
            rate: float = getattr(config, name)
            if draw < rate:
                return name
            draw -= rate
        return None

    async def _graph_request(self, method: str, path: str, query_string: bytes, headers: dict[str, str],
                             raw_body: bytes, send: Send) -> None:
        version, _, rest = path[1:].partition("/")
        request_id = str(uuid.uuid4())
        client_request_id = headers.get("client-request-id", request_id)
        base_headers = [(b"request-id", request_id.encode()), (b"client-request-id", client_request_id.encode()),
                        (b"cache-control", b"no-cache"), (b"strict-transport-security", b"max-age=31536000")]
        segments = [s for s in rest.split("/") if s]
        is_batch = segments == ["$batch"] and method == "POST"
        endpoint = GraphService.endpoint_of(method, segments)
        body = parse_json_body(raw_body)
        config = self.config

        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        failure = "Access token is empty." if not token else None
        app_token = None
        if token:
            try:
                app_token = self.issuer.validate(token, time.time())
            except TokenError as exc:
                failure = str(exc)
        if app_token is None:
            payload = error_body("InvalidAuthenticationToken", failure or "Access token is empty.", request_id,
                                 client_request_id)
            self.stats.count(endpoint, 401)
            self._log_unrun_writes(method, path, body, 401, None)
            www = b'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize"'
            await _respond(send, 401, _dumps(payload), [*base_headers, (b"content-type", GRAPH_JSON.encode()),
                                                        (b"www-authenticate", www)])
            return

        if config.latency_ms > 0 or config.latency_jitter_ms > 0:
            jitter = self._latency_rng.uniform(-config.latency_jitter_ms, config.latency_jitter_ms)
            await asyncio.sleep(max(0.0, config.latency_ms + jitter) / 1000.0)

        fault = self._roll_fault()
        if fault is not None:
            self.stats.fault(fault)
        if fault == "fault_reset":
            self.stats.count(endpoint, "reset")
            self._log_unrun_writes(method, path, body, "reset", fault)
            await _drop(send)
        if fault in ("fault_503", "fault_504"):
            status = 503 if fault == "fault_503" else 504
            code, message = (("serviceNotAvailable", "Service is temporarily unavailable. Please try again later.")
                             if status == 503 else
                             ("GatewayTimeout", "The gateway did not receive a timely response from the "
                              "upstream server."))
            self.stats.count(endpoint, status)
            self._log_unrun_writes(method, path, body, status, fault)
            await _respond(send, status, _dumps(error_body(code, message, request_id, client_request_id)),
                           [*base_headers, (b"content-type", GRAPH_JSON.encode())])
            return

        call = Call(method=method, version=version, path="/" + rest,
                    query=parse_qs(query_string.decode("latin-1"), keep_blank_values=True), body=body,
                    app=app_token, request_id=request_id, client_request_id=client_request_id)
        if is_batch:
            if body is BAD_JSON:
                reply = Reply(400, error_body("BadRequest", "Invalid batch payload format.", request_id,
                                              client_request_id), endpoint="$batch")
            else:
                reply = self.graph.batch(call, lambda m, p, r: self._log_write(m, p, r, r.status))
        else:
            reply = self.graph.execute(call)

        if fault == "fault_reset_after_apply":
            self.stats.count(endpoint, "reset")
            if not is_batch and method in WRITE_METHODS:
                self._log_write(method, path, reply, "reset", fault)
            await _drop(send)
        payload_bytes = b"" if reply.body is None else _dumps(reply.body)
        if fault == "fault_malformed":
            # The call was applied; only the response body is cut short, as a broken proxy would.
            payload_bytes = payload_bytes[: max(1, len(payload_bytes) // 2)] if payload_bytes else b"{"
            reply = replace(reply, status=200)
        if fault == "fault_slow":
            await asyncio.sleep(config.slow_s)
        self.stats.count(endpoint, reply.status)
        if not is_batch and method in WRITE_METHODS and fault != "fault_reset_after_apply":
            self._log_write(method, path, reply, reply.status, fault)
        out_headers = [*base_headers, *((k.encode(), v.encode()) for k, v in reply.headers)]
        if reply.body is not None or fault == "fault_malformed":
            out_headers.append((b"content-type", GRAPH_JSON.encode()))
        await _respond(send, reply.status, payload_bytes, out_headers)

    # -- control surface -----------------------------------------------------------------------------

    async def _control(self, method: str, path: str, query_string: bytes, body: bytes, send: Send) -> None:
        parts = path.strip("/").split("/")[1:]
        query = parse_qs(query_string.decode("latin-1"))
        try:
            status, payload = self._control_reply(method, parts, query, body)
        except ValueError as exc:
            status, payload = 400, {"error": str(exc)}
        if status == 404 and payload is None:
            payload = {"error": f"no control endpoint {method} {path}"}
        await _respond(send, status, _dumps(payload), [(b"content-type", _JSON)])

    def _control_reply(self, method: str, parts: list[str], query: dict[str, list[str]],
                       body: bytes) -> tuple[int, Any]:
        """Status and JSON of one control request; ValueError means 400, (404, None) an unknown endpoint."""
        self.graph.licensing.run_due()
        directory = DirectoryControl(self.state, self.graph.licensing).reply(method, parts,
                                                                             lambda: _json_object(body))
        if directory is not None:
            return directory
        if parts == ["users"] and method == "GET":
            return 200, {"value": [u.summary() for u in self.state.user_order]}
        if parts == ["users"] and method == "POST":
            return self._create_user(_json_object(body))
        if parts == ["skus"] and method == "GET":
            return 200, {"value": [self._sku_view(sku_id) for sku_id in self.state.skus]}
        if len(parts) == 2 and parts[0] == "skus" and method == "PATCH":
            return self._patch_sku(parts[1], _json_object(body))
        if parts == ["reset"] and method == "POST":
            self.reset()
            return 200, {"reset": True}
        if parts == ["config"] and method == "GET":
            return 200, self.describe()
        if parts == ["config"] and method == "POST":
            self.update_config(_json_object(body))
            return 200, self.describe()
        if parts == ["stats"] and method == "GET":
            return 200, {**self.stats.snapshot(), "graph_requests_in_flight": self._graph_in_flight}
        if parts == ["tokens"] and method == "GET":
            # Test-only (the control surface is off unless asked for): the exact tokens issued.
            return 200, {"value": list(self.issuer.issued)}
        if parts == ["writes"] and method == "GET":
            return 200, self._writes(query)
        return 404, None

    def _sku_view(self, sku_id: str) -> dict[str, Any]:
        sku = self.state.skus[sku_id]
        return {**self.state.sku_json(sku), "freeUnits": sku.enabled - self.state.consumed[sku_id]}

    def _patch_sku(self, key: str, body: dict[str, Any]) -> tuple[int, Any]:
        """`PATCH /_sim/skus/{skuId|part number}` with {"enabled": N}: buy or lose seats."""
        enabled = body.get("enabled")
        if set(body) != {"enabled"} or isinstance(enabled, bool) or not isinstance(enabled, int) or enabled < 0:
            raise ValueError('the body must be {"enabled": N} with N an integer >= 0')
        try:
            sku = self.state.set_enabled_seats(key, enabled)
        except KeyError:
            return 404, {"error": f"no sku {key!r}"}
        return 200, self._sku_view(sku.sku_id)

    def _create_user(self, body: dict[str, Any]) -> tuple[int, Any]:
        """`POST /_sim/users`: a new user Graph sees only after `visible_after_s` (replication lag)."""
        unknown = set(body) - {"userPrincipalName", "usageLocation", "visible_after_s"}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        upn = body.get("userPrincipalName")
        if not isinstance(upn, str) or upn.count("@") != 1 or upn.startswith("@") or upn.endswith("@"):
            raise ValueError("userPrincipalName must look like name@domain")
        location = body.get("usageLocation")
        if location is not None and location not in ISO_COUNTRIES:
            raise ValueError("usageLocation must be an ISO 3166 alpha-2 code or null")
        delay_s = _number(body.get("visible_after_s", 0), "visible_after_s")
        visible_from = self.config.clock() + delay_s if delay_s > 0 else None
        try:
            user = self.state.add_user(upn, location, visible_from)
        except ValueError as exc:
            return 409, {"error": str(exc)}
        return 201, {**user.summary(), "visible_after_s": delay_s}

    def _writes(self, query: dict[str, list[str]]) -> dict[str, Any]:
        entries = self.stats.write_log
        if "user" in query:
            wanted = query["user"][0].lower()
            entries = [e for e in entries if wanted in (str(e["user"]).lower(), str(e["user_id"]).lower())]
        if "group" in query:
            wanted = query["group"][0].lower()
            entries = [e for e in entries if "group" in e
                       and wanted in ("*", str(e["group"]).lower(), str(e["group_id"]).lower())]
        if "since" in query:
            since = float(query["since"][0])
            entries = [e for e in entries if e["ts"] >= since]
        return {"value": entries, "count": len(entries)}


def _segment_after(parts: list[str], name: str) -> str | None:
    """The path segment after `name` (the object id of users/{id}/... or groups/{id}/...), if any."""
    if name in parts and parts.index(name) + 1 < len(parts):
        return parts[parts.index(name) + 1]
    return None


def _json_object(body: bytes) -> dict[str, Any]:
    """A control request's JSON object body (empty means {}); ValueError otherwise."""
    value = json.loads(body or b"{}")
    if not isinstance(value, dict):
        raise ValueError("the body must be a JSON object")
    return value


def create_app(config: SimConfig, base_url: str, cert_pem: bytes | None = None,
               fixture: Fixture | None = None) -> SimApp:
    """Build the simulator app for `config`, serving at `base_url` (the fixture is built unless given)."""
    if fixture is None:
        fixture = build_fixture(config.users, config.seed, config.tenant_id, config.fixture_path, cert_pem,
                                config.group_licensed_share)
    return SimApp(config, fixture, base_url)
