"""Application roles that allow each kind of call (Graph permission reference pages)."""

from __future__ import annotations

READ_USERS = frozenset({"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All",
                        "User.ReadBasic.All"})
WRITE_USERS = frozenset({"User.ReadWrite.All", "Directory.ReadWrite.All"})
# Writing employeeLeaveDateTime needs this besides a user write role (user resource documentation).
WRITE_LIFECYCLE = "User-LifeCycleInfo.ReadWrite.All"
ASSIGN_LICENSES = frozenset({"LicenseAssignment.ReadWrite.All", "User.ReadWrite.All", "Directory.ReadWrite.All"})
READ_SKUS = frozenset({"LicenseAssignment.Read.All", "LicenseAssignment.ReadWrite.All", "Organization.Read.All",
                       "Organization.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
# signInActivity needs AuditLog.Read.All on top of a user read role (signInActivity / inactive-users docs).
READ_SIGN_INS = "AuditLog.Read.All"

READ_GROUPS = frozenset({"GroupMember.Read.All", "Group.Read.All", "GroupMember.ReadWrite.All",
                         "Group.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
CREATE_GROUPS = frozenset({"Group.Create", "Group.ReadWrite.All", "Directory.ReadWrite.All"})
WRITE_GROUPS = frozenset({"Group.ReadWrite.All", "Directory.ReadWrite.All"})
WRITE_MEMBERS = frozenset({"GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All"})
ASSIGN_GROUP_LICENSES = frozenset({"LicenseAssignment.ReadWrite.All", "Group.ReadWrite.All",
                                   "Directory.ReadWrite.All"})
