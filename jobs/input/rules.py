"""Value rules shared by CSV and JSON input: limits, users, country codes, cells, and message wording."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobs.models import FORMULA_START
from jobs.skus import GUID_RE

if TYPE_CHECKING:
    from config.settings import Settings

MAX_UPN_CHARS = 113  # Entra ID: 64 for the part before @, 48 for the domain, plus the @
MAX_UPN_LOCAL_CHARS = 64
VALUE_CHARS = 100  # a value as stored in a FieldError
SHOW_CHARS = 60  # a value as quoted inside a message

# Officially assigned ISO 3166-1 alpha-2 codes (249), as Graph's usageLocation accepts them.
_ISO_CODES = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT
    BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH
    ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT
    HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS
    LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI
    NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG
    SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG
    UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
"""
ISO_COUNTRIES = frozenset(_ISO_CODES.split())
# What people write instead of the alpha-2 code: EU usage (UK, EL) and alpha-3 codes.
_COUNTRY_FIXES = {"UK": "GB", "EL": "GR", "USA": "US", "GBR": "GB", "DEU": "DE", "FRA": "FR", "CAN": "CA"}

_UPN_DOMAIN_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
# C0 and C1 control characters other than tab, line feed and carriage return.
CONTROL_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
_CONTROL_RE = re.compile(CONTROL_CHARS)
_PHONE_RE = re.compile(r"[0-9 .()/+-]*")
_SPACE_RE = re.compile(r"\s")
# The everyday UPN, accepted without the detailed checks below.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38}[A-Za-z0-9])?"
_PLAIN_UPN_RE = re.compile(rf"[A-Za-z0-9._'!#^~+-]{{1,64}}@{_LABEL}(?:\.{_LABEL}){{1,3}}")


@dataclass(frozen=True)
class Limits:
    """Input size limits, from settings."""

    max_rows: int = 1_000_000
    max_upload_bytes: int = 512 * 1024 * 1024
    max_cell_chars: int = 1024
    max_json_bytes: int = 64 * 1024 * 1024
    max_kept_columns: int = 50
    max_kept_chars_per_row: int = 4096

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits configured in `settings`."""
        return cls(
            max_rows=settings.max_rows,
            max_upload_bytes=settings.max_upload_bytes,
            max_cell_chars=settings.max_cell_chars,
            max_json_bytes=settings.max_json_bytes,
            max_kept_columns=settings.max_kept_columns,
            max_kept_chars_per_row=settings.max_kept_chars_per_row,
        )


@dataclass(frozen=True)
class Wording:
    """How an input format names its parts in messages (CSV columns or JSON fields)."""

    unit: str  # one user's operation: "row" or "operation"
    container: str  # what holds a list of names: "column" or "list"
    add: str
    remove: str
    disabled_plans: str
    usage_location: str
    place_format: str  # where a unit is, formatted with row= (1-based) and index= (0-based)

    def place(self, row: int) -> str:
        """Where the unit numbered `row` is, for messages."""
        return self.place_format.format(row=row, index=row - 1)


CSV_WORDING = Wording("row", "column", "add", "remove", "disabled_plans", "usage_location", "row {row}")
JSON_WORDING = Wording(
    "operation", "list", "addLicenses", "removeLicenses", "disabledPlans", "usageLocation", "operations[{index}]"
)


def clip(value: str, limit: int = VALUE_CHARS) -> str:
    """A value shortened for display."""
    return value if len(value) <= limit else f"{value[:limit]}…"


def quoted(value: str) -> str:
    """A value quoted inside a message, shortened."""
    return f'"{clip(value, SHOW_CHARS)}"'


def size_text(n: int) -> str:
    """A byte count for people."""
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n:,} bytes"


def cell_problem(value: str, max_chars: int) -> str | None:
    """Why a cell is refused whatever its column (length, control characters, formula), or None."""
    if len(value) > max_chars:
        return f"is {len(value):,} characters long; the limit is {max_chars:,} characters"
    bad = _CONTROL_RE.search(value)
    if bad:
        char = bad.group()
        name = "a NUL character" if char == "\0" else f"a control character (U+{ord(char):04X})"
        return f"contains {name}; remove it"
    first = value[0] if value else ""
    if first in FORMULA_START and not (first in "+-" and _PHONE_RE.fullmatch(value)):
        shown = {"\t": "a tab", "\r": "a carriage return"}.get(first, f'"{first}"')
        return (
            f"looks like a spreadsheet formula (starts with {shown}), which spreadsheet apps would run; "
            "remove the leading character"
        )
    return None


def user_problem(user: str, delimiter: str | None = None) -> str | None:
    """Why `user` is neither a valid UPN nor an object id, or None; `delimiter` is the CSV's, for hints."""
    if len(user) <= MAX_UPN_CHARS and _PLAIN_UPN_RE.fullmatch(user):
        return None
    if not user:
        return "user is empty; every row needs a userPrincipalName or an object id"
    if "@" in user:
        return _upn_problem(user, delimiter)
    if GUID_RE.fullmatch(user):
        return None
    if _SPACE_RE.search(user):
        return f"user {quoted(user)} contains a space; give a userPrincipalName (name@domain) or an object id"
    return (
        f"user {quoted(user)} is neither a userPrincipalName (name@domain) nor a valid object id "
        "(a GUID such as 2b1c6c0e-33a4-4c1d-8b5b-3f5b7c2e9a10)"
    )


def _upn_problem(user: str, delimiter: str | None) -> str | None:
    """Why `user`, which holds an @, is not a valid userPrincipalName, or None."""
    shown = quoted(user)
    if len(user) > MAX_UPN_CHARS:
        return (
            f"user {shown} is longer than {MAX_UPN_CHARS} characters ({len(user)}), the maximum for a userPrincipalName"
        )
    if _SPACE_RE.search(user):
        return f"user {shown} contains a space; a userPrincipalName has none"
    local, _, domain = user.partition("@")
    if "@" in domain:
        hint = ""
        if delimiter and (";" in user or "," in user):
            hint = f'; the file is "{delimiter}"-separated, check this row\'s delimiter'
        return f"user {shown} holds more than one @: give one userPrincipalName per row{hint}"
    if not local:
        return f"user {shown} is not a valid userPrincipalName: nothing before the @"
    if len(local) > MAX_UPN_LOCAL_CHARS:
        return (
            f"user {shown} is not a valid userPrincipalName: the part before @ is longer than "
            f"{MAX_UPN_LOCAL_CHARS} characters"
        )
    if not _UPN_DOMAIN_RE.fullmatch(domain):
        hint = ""
        other = ";" if delimiter == "," else "," if delimiter == ";" else ""
        if other and other in domain:
            hint = f'; the file is "{delimiter}"-separated but this row seems to use "{other}"'
        return (
            f"user {shown} is not a valid userPrincipalName: {quoted(domain)} is not a domain name "
            f"(expected name@contoso.com){hint}"
        )
    return None


def usage_location_problem(value: str, field: str) -> str | None:
    """Why `value` is not an assigned ISO 3166-1 alpha-2 code, or None; `field` names it in the message."""
    code = value.strip().upper()
    if code in ISO_COUNTRIES:
        return None
    fix = _COUNTRY_FIXES.get(code)
    if fix is None and len(code) == 2 and code.isalpha():
        return (
            f"{field} {quoted(value)} is not an assigned ISO 3166-1 alpha-2 country code; use the user's "
            "two-letter country code such as US, GB or DE"
        )
    hint = f"; did you mean {fix}?" if fix else "; use two letters such as US, GB or DE"
    return f"{field} {quoted(value)} is not an ISO 3166-1 alpha-2 country code{hint}"
