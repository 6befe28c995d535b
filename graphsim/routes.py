"""What every Graph route module works against: the tenant, its group license processing, the URL and knobs."""

from __future__ import annotations

from collections.abc import Callable

from graphsim.config import SimConfig
from graphsim.licensing import GroupLicensing
from graphsim.tenant import Tenant


class TenantRoutes:
    """Routes against one tenant; `config` is read on every call (it changes at run time)."""

    def __init__(self, tenant: Tenant, licensing: GroupLicensing, base_url: str,
                 config: Callable[[], SimConfig]) -> None:
        self.tenant = tenant
        self.licensing = licensing
        self.base_url = base_url
        self._config = config
