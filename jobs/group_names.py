"""Display names of the groups users inherit licenses from: asked of Graph once, kept per tenant in Redis.

Results name the group a license comes from by id and display name. A job whose users share a few
groups asks Graph once per group (`GET /groups/{id}?$select=id,displayName`, one resource unit),
not once per user; the names are kept for an hour, so the next jobs of the tenant ask nothing.
Bounded: a tenant keeps at most `max_entries` names (a full hash is started afresh), and one call
asks Graph for at most `max_lookups` names (the others stay unnamed: the id is still there).
A name Graph will not give (no permission, group deleted, throttled) is left out, never fatal.

Keys:

    bl:groupnames:{tenant}    hash   group id -> displayName (expires `ttl_s` after the last name kept)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

import redis

from jobs.models import UserResult

# How long a name is kept, how many names a tenant keeps, how many one call may ask Graph for.
GROUP_NAMES_TTL_S = 3600
MAX_GROUP_NAMES = 5000
MAX_LOOKUPS_PER_CALL = 50


class GroupNames:
    """Group display names per tenant, read through a Redis hash."""

    def __init__(self, client: redis.Redis, *, ttl_s: int = GROUP_NAMES_TTL_S, max_entries: int = MAX_GROUP_NAMES,
                 max_lookups: int = MAX_LOOKUPS_PER_CALL) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._max_lookups = max_lookups

    @staticmethod
    def _key(tenant: str) -> str:
        return f"bl:groupnames:{tenant}"

    def names(self, tenant: str, ids: Iterable[str], fetch: Callable[[str], str | None]) -> dict[str, str]:
        """id → display name for the ids known here or that `fetch` (Graph) names; the others left out."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        key = self._key(tenant)
        raw = self._redis.hmget(key, wanted)
        found = {gid: _text(value) for gid, value in zip(wanted, raw, strict=True) if value is not None}
        fetched: dict[str, str] = {}
        for gid in [gid for gid in wanted if gid not in found][: self._max_lookups]:
            name = fetch(gid)
            if name is not None:
                fetched[gid] = name
        if fetched:
            self._keep(key, fetched)
        return found | fetched

    def _keep(self, key: str, names: Mapping[str, str]) -> None:
        """Keep new names; a hash that would grow past the bound starts afresh."""
        pipe = self._redis.pipeline()
        if int(self._redis.hlen(key)) + len(names) > self._max_entries:
            pipe.delete(key)
        for group_id, name in names.items():
            pipe.hset(key, group_id, name)
        pipe.expire(key, self._ttl_s)
        pipe.execute()


def unnamed_groups(results: Sequence[UserResult]) -> list[str]:
    """Group ids the results name without a display name, each once."""
    return list(dict.fromkeys(g.group_id for r in results for g in r.groups if g.group_name is None))


def with_group_names(results: Sequence[UserResult], names: Mapping[str, str]) -> list[UserResult]:
    """The results with the display names known filled in."""
    return [replace(r, groups=tuple(replace(g, group_name=names.get(g.group_id, g.group_name)) for g in r.groups))
            if r.groups else r for r in results]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
