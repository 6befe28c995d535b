"""The tenant profiles an API key may use (by name only: no credentials), and reports read from a tenant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from api.deps import Authenticated, Context, permits, tenant_refused
from api.errors import ApiError
from api.plan_view import known_catalog
from api.schemas import error_responses
from graphclient.errors import GraphError, ThrottleWaitTooLong
from jobs.skus import SkuCatalog

MAX_REPORT_ROWS = 5000

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


@router.get("", responses=error_responses(401))
def list_tenants(context: Context, who: Authenticated) -> dict[str, Any]:
    """The tenant profiles this API key may submit jobs for, sorted by name; and the key's own name and scope.

    The console uses `key` to offer approving only jobs another key submitted (the API checks it anyway).
    """
    names = sorted(name for name in context.settings.tenants if who.allows(name))
    return {"value": [{"name": name} for name in names], "key": {"name": who.name, "may_write": who.key.may_write}}


@router.get("/{tenant}/group-license-errors", responses=error_responses(401, 403, 404, 503))
async def group_license_errors(
    context: Context, who: Authenticated, tenant: Annotated[str, Path(max_length=128)],
    limit: Annotated[int, Query(ge=1, le=MAX_REPORT_ROWS, description="At most this many rows.")] = 1000,
) -> dict[str, Any]:
    """Users whose license from a group is in error: the user, the group, the SKU, Graph's reason and what it means.

    Read from Graph when asked (the groups with `hasMembersWithLicenseErrors`, then their
    `membersWithLicenseErrors`); `truncated` says whether rows beyond `limit` were left out.
    """
    if not permits(context, who, tenant, "GET /v1/tenants/{tenant}/group-license-errors"):
        raise tenant_refused(tenant, "read")
    if tenant not in context.settings.tenants:
        raise ApiError(404, f"unknown tenant profile '{tenant}'")
    catalog = await run_in_threadpool(known_catalog, context, tenant) or SkuCatalog(())
    try:
        report = await context.lanes.submission(context.group_errors, tenant, catalog, limit)
    except (GraphError, ThrottleWaitTooLong) as exc:
        raise ApiError(503, f"Graph could not be read for tenant '{tenant}': {exc}",
                       headers={"Retry-After": "30"}) from exc
    return {"tenant": tenant, **report.to_json()}
