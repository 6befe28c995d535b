"""Reading a whole tenant page by page, for dry runs of many users: 999 users for the price of one read.

A dry run of N users reads them one by one (N resource units, 20 to a `$batch`) unless it is large
(BULKLICENSE_PAGED_READ_MIN_USERS, 1,000: from there paging, which costs about tenant size / 999
resource units, is cheaper in any tenant of under about a million users). Then its first chunk
pages `GET /users?$select=...&$top=999` once and keeps the states of the job's users in the store;
every chunk then plans from those.
Real jobs keep reading user by user, because their reads overlap their writes and a whole-tenant
listing would hold the writes back until the last page.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial

from graphclient.client import GraphClient
from graphclient.retry import RetryPolicy
from jobs.steps import USER_SELECT
from jobs.store import JobStore

log = logging.getLogger(__name__)


def prefetch_users(graph: GraphClient, policy: RetryPolicy, store: JobStore, job_id: str,
                   sleep: Callable[[float], None]) -> tuple[int, int]:
    """Page the tenant's users and keep the states of the job's users; returns (pages, users kept)."""
    wanted = {op.user.lower() for op in store.iter_operations(job_id)}
    pages = kept = 0
    next_link: str | None = None
    while True:
        users, next_link = policy.call(partial(graph.users_page, USER_SELECT, next_link), sleep=sleep)
        pages += 1
        found: dict[str, str] = {}
        for user in users:
            state = json.dumps(user, separators=(",", ":"))
            for key in (user.get("id"), user.get("userPrincipalName")):
                if isinstance(key, str) and key.lower() in wanted:
                    found[key.lower()] = state
        kept += store.keep_prefetched(job_id, found)
        if next_link is None:
            break
    store.mark_prefetched(job_id)
    log.info("job %s: read the tenant in %d page(s), %d of the job's users found", job_id, pages, kept)
    return pages, kept
