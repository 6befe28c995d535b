"""The tenant profiles an API key may use, by name only (for pickers; no credentials)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import Authenticated, Context
from api.schemas import error_responses

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


@router.get("", responses=error_responses(401))
def list_tenants(context: Context, who: Authenticated) -> dict[str, Any]:
    """The tenant profiles this API key may submit jobs for, sorted by name; and the key's own name and scope.

    The console uses `key` to offer approving only jobs another key submitted (the API checks it anyway).
    """
    names = sorted(name for name in context.settings.tenants if who.allows(name))
    return {"value": [{"name": name} for name in names], "key": {"name": who.name, "may_write": who.key.may_write}}
