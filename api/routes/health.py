"""Liveness for load balancers and orchestrators."""

from __future__ import annotations

import logging

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Context
from api.errors import OUTAGE_RETRY_AFTER_S
from api.lanes import HEALTH_TIMEOUT_S

log = logging.getLogger(__name__)

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz(context: Context) -> JSONResponse:
    """Liveness: the API is up and Redis answers (pinged on threads of its own, never the busy shared pool)."""
    try:
        await context.lanes.health(context.redis.ping)
    except TimeoutError:  # e.g. a host that refuses, asked again by the client's retries: logged, not answered
        log.warning("healthz: Redis at %s gave no answer within %.0f s", _address(context.redis), HEALTH_TIMEOUT_S)
        return JSONResponse(status_code=503, content={"status": "unavailable", "redis": "unavailable"},
                            headers={"Retry-After": str(OUTAGE_RETRY_AFTER_S)})
    except redis.RedisError as exc:  # the error names internal hosts and ports: logged, not answered
        log.warning("healthz: Redis does not answer: %s", exc)
        return JSONResponse(status_code=503, content={"status": "unavailable", "redis": "unavailable"},
                            headers={"Retry-After": str(OUTAGE_RETRY_AFTER_S)})
    return JSONResponse(content={"status": "ok", "redis": "ok"})


def _address(client: redis.Redis) -> str:
    """Where the client connects (host:port, or the socket path), for the log."""
    kwargs = client.connection_pool.connection_kwargs
    return str(kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}")
