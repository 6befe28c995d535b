"""The job domain's Lua scripts (package files under jobs/lua), registered on a Redis client."""

from __future__ import annotations

from importlib import resources

import redis
from redis.commands.core import Script


def lua_script(client: redis.Redis, name: str) -> Script:
    """Script `jobs/lua/<name>.lua`, ready to call on `client` (sent by hash, its source only when Redis lacks it)."""
    return client.register_script((resources.files("jobs") / "lua" / f"{name}.lua").read_text(encoding="utf-8"))
