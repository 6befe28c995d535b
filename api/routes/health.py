"""Liveness for load balancers and orchestrators."""

from __future__ import annotations

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Context
from api.errors import OUTAGE_RETRY_AFTER_S

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz(context: Context) -> JSONResponse:
    """Liveness: the API is up and Redis answers (pinged on threads of its own, never the busy shared pool)."""
    try:
        await context.lanes.health(context.redis.ping)
    except TimeoutError:
        return JSONResponse(status_code=503, content={"status": "unavailable", "redis": "no answer in time"},
                            headers={"Retry-After": str(OUTAGE_RETRY_AFTER_S)})
    except redis.RedisError as exc:
        return JSONResponse(status_code=503, content={"status": "unavailable", "redis": str(exc)},
                            headers={"Retry-After": str(OUTAGE_RETRY_AFTER_S)})
    return JSONResponse(content={"status": "ok", "redis": "ok"})
