"""The header of a CSV job file: its delimiter and the role of each column, from one table of columns.

Header names are matched without case, spaces, underscores or hyphens. A bracketed header, as in
the Entra admin center's bulk templates (`User name [userPrincipalName] Required`), is read by
the property in brackets. A new column is one entry in COLUMNS.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NoReturn

from jobs.input.errors import Fatal
from jobs.input.rules import cell_problem, clip
from jobs.models import FieldError


class Role(StrEnum):
    """What a column holds."""

    USER = "user"
    ADD = "add"
    REMOVE = "remove"
    DISABLED_PLANS = "disabled_plans"
    USAGE_LOCATION = "usage_location"
    ACTION = "action"  # Add or Remove: the side the row's licenses go to
    EFFECTIVE_DATE = "effective_date"  # the day (or instant) the row takes effect
    END_DATE = "end_date"  # a leaver's last day: the row's removals run at its end
    HELD = "held"  # the licenses a user holds (an export): their meaning depends on the job's mode
    EXTRA = "extra"  # any other named column: kept and echoed in the results
    IGNORED = "ignored"  # a column of our results CSV
    SECRET = "secret"  # a password (the Entra bulk-create template's): neither read nor kept
    BLANK = "blank"  # a column without a name


@dataclass(frozen=True)
class Column:
    """One column the service reads: its role, and the header names (matching keys) that mean it."""

    role: Role
    names: tuple[str, ...]


# The columns the service reads. Names are matching keys: lower-case, without spaces, "_" or "-".
COLUMNS = (
    Column(Role.USER, ("user", "userprincipalname", "upn", "id", "username")),
    Column(Role.ADD, ("add", "addlicenses", "licenses", "license", "sku", "accountskuid", "skupartnumber", "skuid")),
    Column(Role.REMOVE, ("remove", "removelicenses")),
    Column(Role.DISABLED_PLANS, ("disabledplans",)),
    Column(Role.USAGE_LOCATION, ("usagelocation",)),
    Column(Role.ACTION, ("action", "operation")),
    Column(Role.EFFECTIVE_DATE, ("effectivedate", "startdate", "employeehiredate")),
    Column(Role.END_DATE, ("enddate", "lastday", "employeeleavedatetime")),
    # Microsoft 365 usage reports (Graph reports' CSVs) list what each user holds, "+"-joined.
    Column(Role.HELD, ("assignedproducts",)),
)
COLUMN_ALIASES = {name: column.role for column in COLUMNS for name in column.names}
# Columns our results CSV writes: a failed-rows export resubmitted as is must parse, so they are dropped.
IGNORED_COLUMNS = frozenset(
    {"row", "status", "reason", "graphcode", "graphmessage", "httpstatus", "attempts", "updatedat", "detail",
     "before", "after", "action", "warnings"}
)
# Our results CSV, recognised by these columns: its `action` column is a description, not an Action.
_RESULTS_SIGNATURE = frozenset({"status", "reason", "attempts"})
# Columns our results CSV writes that an admin's own file may well have (kept there): dropped only in ours.
_RESULTS_ONLY_COLUMNS = frozenset({"note", "groups"})
# The Microsoft 365 admin center's user export ("Export users"): its `Licenses` column lists what
# each user holds, display names joined by "+", or "Unlicensed". Two of these columns mark it.
_ADMIN_EXPORT_SIGNATURE = frozenset(
    {"blockcredential", "licenseassignmentdetails", "dirsyncenabled", "lastdirsynctime", "softdeletiontimestamp",
     "passwordneverexpires", "strongpasswordrequired", "oathtokenmetadata", "releasetrack",
     "lastpasswordchangetimestamp", "whencreated", "preferreddatalocation", "objectid"}
)
# Passwords (the Entra bulk-create template asks for one per user): never stored, never echoed.
SECRET_COLUMNS = frozenset({"passwordprofile", "password", "initialpassword"})
# An admin center export's column describing how each held license is assigned: kept, and not taken for
# an unread column of licenses (it names the licenses the Licenses column already lists).
ASSIGNMENT_DETAILS = "licenseassignmentdetails"
_ROLES_FROM_RESULTS = frozenset({Role.ACTION})
_NAME_NOISE_RE = re.compile(r"[\s_-]+")
# `Label [property] Required`: the Entra admin center's bulk templates.
_BRACKETED_RE = re.compile(r"(?P<label>.*?)\[\s*(?P<property>[A-Za-z][A-Za-z0-9_.]*)\s*\]\s*(?:required)?\s*",
                           re.IGNORECASE | re.DOTALL)


class Layout(StrEnum):
    """The kind of file a header says it is."""

    PLAIN = "plain"
    RESULTS = "results_csv"  # this service's own results, resubmitted
    ENTRA_TEMPLATE = "entra_bulk_template"  # bracketed headers (the version:v1.0 line is seen before)
    ADMIN_EXPORT = "m365_admin_center_export"
    USAGE_REPORT = "m365_usage_report"


@dataclass(frozen=True)
class Header:
    """The columns of a CSV: what each holds, its label in messages, and its name as written."""

    roles: tuple[Role, ...]
    labels: tuple[str, ...]
    names: tuple[str, ...] = ()
    layout: Layout = Layout.PLAIN
    by_property: tuple[bool, ...] = ()  # read by its [property]

    def index(self, role: Role) -> int:
        """The position of the column with `role`, or the width (a padding cell) when there is none."""
        return self.roles.index(role) if role in self.roles else len(self.roles)

    def has(self, role: Role) -> bool:
        """Whether some column holds `role`."""
        return role in self.roles


def detect_delimiter(line: str, row: int) -> str:
    """`,` or `;`, from the header line alone (cells may hold the other one as a list separator)."""
    counts = {",": 0, ";": 0}
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    shown = clip(line.rstrip("\r\n"))
    if counts[","] and counts[";"]:
        raise Fatal(
            FieldError(
                f'the header line mixes "," ({counts[","]}×) and ";" ({counts[";"]}×) as delimiters; '
                "separate all columns with one of them",
                row=row,
                value=shown,
            )
        )
    if counts[";"]:
        return ";"
    if not counts[","] and "\t" in line:
        raise Fatal(
            FieldError(
                "the header line is tab-separated; save the file as CSV (comma- or semicolon-separated)",
                row=row,
                value=shown,
            )
        )
    return ","


def column_key(name: str) -> tuple[str, bool]:
    """The matching key of a header name, and whether it was read by its bracketed [property]."""
    match = _BRACKETED_RE.fullmatch(name)
    if match is not None:
        return _NAME_NOISE_RE.sub("", match.group("property")).lower(), True
    return _NAME_NOISE_RE.sub("", name).lower(), False


def read_header(names: Sequence[str], row: int, max_cell_chars: int, max_kept_columns: int | None = None) -> Header:
    """The role and label of each column named in the header record at line `row`."""
    keyed = [(raw.strip(), *column_key(raw.strip())) for raw in names]
    keys = {key for _, key, _ in keyed}
    results = keys >= _RESULTS_SIGNATURE
    admin_export = len(_ADMIN_EXPORT_SIGNATURE & keys) >= 2
    roles: list[Role] = []
    labels: list[str] = []
    canonical_names: dict[Role, str] = {}
    extra_names: dict[str, str] = {}
    for name, key, _ in keyed:
        role = COLUMN_ALIASES.get(key)
        if role in _ROLES_FROM_RESULTS and results:
            role = None
        if role is Role.ADD and admin_export and key == "licenses":
            role = Role.HELD
        if role is not None:
            _check_canonical(role, name, canonical_names, row)
            label = role.value
        elif key in IGNORED_COLUMNS or (results and key in _RESULTS_ONLY_COLUMNS):
            role, label = Role.IGNORED, name
        elif key in SECRET_COLUMNS:
            role, label = Role.SECRET, name
        elif not key:
            role, label = Role.BLANK, f"column {len(roles) + 1}"
        else:
            _check_extra(key, name, extra_names, row, max_cell_chars)
            role, label = Role.EXTRA, name
        roles.append(role)
        labels.append(label)
    if Role.USER not in canonical_names:
        _no_user_column(names, row)
    _check_columns(canonical_names, len(extra_names), row, max_kept_columns)
    layout = _layout(keys, results, admin_export, any(bracketed for _, _, bracketed in keyed))
    return Header(tuple(roles), tuple(labels), tuple(n for n, _, _ in keyed), layout,
                  tuple(bracketed for _, _, bracketed in keyed))


def _check_columns(canonical: dict[Role, str], kept: int, row: int, max_kept_columns: int | None) -> None:
    """Refuse a header that lists held licenses beside licenses to add, or keeps too many columns."""
    if Role.HELD in canonical and Role.ADD in canonical:
        raise Fatal(FieldError(
            f'columns "{canonical[Role.HELD]}" (the licenses users hold) and "{canonical[Role.ADD]}" '
            "(licenses to add) cannot both be read; keep one of them", row=row, column=Role.HELD.value))
    if max_kept_columns is not None and kept > max_kept_columns:
        raise Fatal(FieldError(
            f"the header has {kept:,} columns the job would keep (columns it does not read, echoed in the results); "
            f"the limit is {max_kept_columns:,} (setting max_kept_columns): remove the columns you do not need",
            row=row))


def _layout(keys: set[str], results: bool, admin_export: bool, bracketed: bool) -> Layout:
    if results:
        return Layout.RESULTS
    if admin_export:
        return Layout.ADMIN_EXPORT
    if "assignedproducts" in keys:
        return Layout.USAGE_REPORT
    if bracketed:
        return Layout.ENTRA_TEMPLATE
    return Layout.PLAIN


def _check_canonical(role: Role, name: str, seen: dict[Role, str], row: int) -> None:
    """Record a canonical column; a second column meaning the same is fatal."""
    if role in seen:
        raise Fatal(
            FieldError(
                f'columns "{seen[role]}" and "{name}" both mean {role}; keep one of them',
                row=row,
                column=role.value,
                value=clip(name),
            )
        )
    seen[role] = name


def _check_extra(key: str, name: str, seen: dict[str, str], row: int, max_cell_chars: int) -> None:
    """Record an extra column; a repeated or unsafe name is fatal."""
    if key in seen:
        raise Fatal(
            FieldError(
                f'column "{name}" appears twice in the header (also as "{seen[key]}"); rename or remove one',
                row=row,
                column=name,
                value=clip(name),
            )
        )
    problem = cell_problem(name, max_cell_chars)
    if problem:
        raise Fatal(FieldError(f"the header name {problem}", row=row, column=name, value=clip(name)))
    seen[key] = name


def _no_user_column(names: Sequence[str], row: int) -> NoReturn:
    found = ", ".join(f'"{clip(n.strip(), 40)}"' for n in names[:10])
    looks_like_data = any("@" in n for n in names)
    hint = "; the first line looks like data: add a header line above it" if looks_like_data else ""
    raise Fatal(
        FieldError(
            f"no user column: the header must name a column user (or userPrincipalName, upn, id, User name); "
            f"found {found}{hint}",
            row=row,
            column="user",
        )
    )
