"""The report of a tenant's group license errors: who did not get a license a group gives them, and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobs.holdings import Holdings
from jobs.skus import SkuCatalog
from jobs.tenant_scan import TenantReader

# What each error means for an admin (licenseAssignmentState.error values; jobs.holdings.AssignmentError).
ERROR_HELP = {
    "CountViolation": "no free seat of the SKU (buy seats, then reprocess the user)",
    "MutuallyExclusiveViolation": "a service plan clashes with one the user holds from another license",
    "DependencyViolation": "a service plan needs another plan the user does not hold",
    "ProhibitedInUsageLocationViolation": "the SKU may not be used in the user's usage location",
    "UniquenessViolation": "an address of the user is not unique in the tenant",
    "Other": "Graph gives no reason",
}


@dataclass(frozen=True)
class GroupErrorRow:
    """One user whose license from one group is in error, for one SKU."""

    user_id: str
    upn: str
    group_id: str
    group: str
    sku_id: str
    sku: str
    state: str
    error: str

    def to_json(self) -> dict[str, Any]:
        """The report's row shape."""
        return {"user_id": self.user_id, "userPrincipalName": self.upn, "group_id": self.group_id,
                "group": self.group, "sku_id": self.sku_id, "sku": self.sku, "state": self.state,
                "error": self.error, "meaning": ERROR_HELP.get(self.error, ERROR_HELP["Other"]),
                "holds_license": self.state == "ActiveWithError"}


@dataclass(frozen=True)
class GroupErrorReport:
    """The rows found (at most `limit`), and whether more were left out."""

    rows: tuple[GroupErrorRow, ...]
    groups: int
    truncated: bool

    def to_json(self) -> dict[str, Any]:
        """The API's report shape."""
        return {"groups_with_errors": self.groups, "count": len(self.rows), "truncated": self.truncated,
                "value": [row.to_json() for row in self.rows]}


def group_error_report(reader: TenantReader, catalog: SkuCatalog, limit: int) -> GroupErrorReport:
    """Read the groups with license errors and their members in error (at most `limit` rows)."""
    rows: list[GroupErrorRow] = []
    groups = 0
    for group in reader.groups_with_license_errors():
        groups += 1
        group_id = str(group.get("id") or "").lower()
        name = str(group.get("displayName") or group_id)
        for user in reader.members_with_license_errors(group_id):
            for sku_id, failure in Holdings.from_graph(user).failures():
                if failure.group_id != group_id:
                    continue
                if len(rows) >= limit:
                    return GroupErrorReport(tuple(rows), groups, truncated=True)
                rows.append(GroupErrorRow(str(user.get("id") or ""), str(user.get("userPrincipalName") or ""),
                                          group_id, name, sku_id, catalog.part_number(sku_id),
                                          failure.state.value, failure.error.value))
    return GroupErrorReport(tuple(rows), groups, truncated=False)
