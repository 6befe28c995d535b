"""The user of each row or operation: a valid UPN or object id, and given only once per job."""

from __future__ import annotations

from array import array

from jobs.input.rules import Wording, quoted, user_problem

_FIRST_SLOTS = 1 << 12


class SeenUsers:
    """Users seen so far, as 64-bit keyed hashes in an open-addressing table.

    A slot is 12 bytes (key and row); the table doubles when half full, so a user costs 24 to 48 bytes.
    """

    def __init__(self, slots: int = _FIRST_SLOTS) -> None:
        if slots < 2 or slots & (slots - 1):
            raise ValueError("slots must be a power of two")
        self._slots = slots
        self._keys = array("Q", [0]) * slots
        self._rows = array("I", [0]) * slots
        self._count = 0

    @staticmethod
    def _digest(user: str) -> int:
        """The non-zero 64-bit key of `user` (case-insensitive); 0 marks an empty slot."""
        # str hashes are 64-bit SipHash keyed per process: collisions (a false "duplicate") are
        # about n²/2⁶⁵, 3e-8 for a million users, and cannot be crafted from outside.
        return hash(user.lower()) & 0xFFFF_FFFF_FFFF_FFFF or 1

    def add(self, user: str, row: int) -> int | None:
        """Record `user` at `row`; the row it was first seen at if it was seen before."""
        return self.add_key(self._digest(user), row)

    def add_key(self, key: int, row: int) -> int | None:
        """Record the user with digest `key` at `row`; the row it was first seen at if seen before."""
        keys, mask = self._keys, self._slots - 1
        slot = key & mask
        while True:
            held = keys[slot]
            if held == 0:
                break
            if held == key:
                return self._rows[slot]
            slot = (slot + 1) & mask
        keys[slot] = key
        self._rows[slot] = row
        self._count += 1
        if self._count * 2 > self._slots:
            self._grow()
        return None

    def _grow(self) -> None:
        old_keys, old_rows = self._keys, self._rows
        self._slots *= 2
        self._keys = array("Q", [0]) * self._slots
        self._rows = array("I", [0]) * self._slots
        keys, rows, mask = self._keys, self._rows, self._slots - 1
        for key, row in zip(old_keys, old_rows, strict=True):
            if key:
                slot = key & mask
                while keys[slot]:
                    slot = (slot + 1) & mask
                keys[slot] = key
                rows[slot] = row


class UserCheck:
    """Checks each user: valid, and not already given in an earlier row or operation.

    With `adjacent` (a file with an Action column, one license per row), consecutive rows may
    name the same user: they are one operation. The same user further on is still refused.
    """

    def __init__(self, wording: Wording, delimiter: str | None = None, *, adjacent: bool = False) -> None:
        self._wording = wording
        self._delimiter = delimiter
        self._seen = SeenUsers()
        self._adjacent = adjacent
        self._last = ""

    def problem(self, user: str, row: int) -> str | None:
        """Why the (trimmed) `user` of `row` is refused, or None; a valid user is remembered."""
        problem = user_problem(user, self._delimiter)
        if problem:
            return problem
        if self._adjacent:
            if user.lower() == self._last:
                return None
            self._last = user.lower()
        first = self._seen.add(user, row)
        if first is None:
            return None
        unit = self._wording.unit
        if self._adjacent:
            return (
                f"user {quoted(user)} appears more than once: first in {self._wording.place(first)}; put a "
                f"user's {unit}s next to each other (they are one operation)"
            )
        return (
            f"user {quoted(user)} appears more than once: first in {self._wording.place(first)}; give each "
            f"user one {unit} (one {unit} can both add and remove licenses)"
        )
