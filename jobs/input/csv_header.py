"""The header of a CSV job file: its delimiter and the role of each column."""

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
    EXTRA = "extra"  # any other named column: echoed in the results
    IGNORED = "ignored"  # a column of our results CSV
    BLANK = "blank"  # a column without a name


# Header names as written (lower-cased; spaces, underscores and hyphens removed) → canonical column.
COLUMN_ALIASES = {
    "user": Role.USER,
    "userprincipalname": Role.USER,
    "upn": Role.USER,
    "id": Role.USER,
    "add": Role.ADD,
    "addlicenses": Role.ADD,
    "licenses": Role.ADD,
    "sku": Role.ADD,
    "remove": Role.REMOVE,
    "removelicenses": Role.REMOVE,
    "disabledplans": Role.DISABLED_PLANS,
    "usagelocation": Role.USAGE_LOCATION,
}
# Columns our results CSV writes: a failed-rows export resubmitted as is must parse, so they are dropped.
IGNORED_COLUMNS = frozenset(
    {"row", "status", "reason", "graphcode", "graphmessage", "httpstatus", "attempts", "updatedat", "detail",
     "before", "after", "action", "warnings"}
)
_NAME_NOISE_RE = re.compile(r"[\s_-]+")


@dataclass(frozen=True)
class Header:
    """The columns of a CSV: what each holds, and its name in messages."""

    roles: tuple[Role, ...]
    labels: tuple[str, ...]

    def index(self, role: Role) -> int:
        """The position of the column with `role`, or the width (a padding cell) when there is none."""
        return self.roles.index(role) if role in self.roles else len(self.roles)


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


def read_header(names: Sequence[str], row: int, max_cell_chars: int) -> Header:
    """The role and label of each column named in the header record at line `row`."""
    roles: list[Role] = []
    labels: list[str] = []
    canonical_names: dict[Role, str] = {}
    extra_names: dict[str, str] = {}
    for raw in names:
        name = raw.strip()
        key = _NAME_NOISE_RE.sub("", name).lower()
        role = COLUMN_ALIASES.get(key)
        if role is not None:
            _check_canonical(role, name, canonical_names, row)
            label = role.value
        elif key in IGNORED_COLUMNS:
            role, label = Role.IGNORED, name
        elif not key:
            role, label = Role.BLANK, f"column {len(roles) + 1}"
        else:
            _check_extra(key, name, extra_names, row, max_cell_chars)
            role, label = Role.EXTRA, name
        roles.append(role)
        labels.append(label)
    if Role.USER not in canonical_names:
        _no_user_column(names, row)
    return Header(tuple(roles), tuple(labels))


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
            f"no user column: the header must name a column user (or userPrincipalName, upn, id); found {found}{hint}",
            row=row,
            column="user",
        )
    )
