"""Liveness for load balancers and orchestrators."""

from __future__ import annotations

import logging

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Context
from api.errors import OUTAGE_RETRY_AFTER_S

log = logging.getLogger(__name__)

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz(context: Context) -> JSONResponse:
    """Liveness: the API is up and Redis answers."""
    try:
        context.redis.ping()
    except redis.RedisError as exc:  # the error names internal hosts and ports: logged, not answered
        log.warning("healthz: Redis does not answer: %s", exc)
        return JSONResponse(status_code=503, content={"status": "unavailable", "redis": "unavailable"},
                            headers={"Retry-After": str(OUTAGE_RETRY_AFTER_S)})
    return JSONResponse(content={"status": "ok", "redis": "ok"})
