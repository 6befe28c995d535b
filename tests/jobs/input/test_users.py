"""The seen-users table (open addressing on 64-bit keys) and the user check built on it."""

from __future__ import annotations

import tracemalloc

import pytest

from jobs.input.rules import CSV_WORDING, JSON_WORDING, Wording
from jobs.input.users import SeenUsers, UserCheck


def test_keys_in_the_same_slot_are_kept_apart() -> None:
    seen = SeenUsers(slots=8)
    colliding = [3, 3 + 8, 3 + 16]  # all start probing at slot 3
    assert [seen.add_key(key, row) for row, key in enumerate(colliding, start=2)] == [None, None, None]
    assert [seen.add_key(key, 99) for key in colliding] == [2, 3, 4]


def test_probing_wraps_around_the_end_of_the_table() -> None:
    seen = SeenUsers(slots=8)
    assert seen.add_key(7, 10) is None
    assert seen.add_key(15, 11) is None  # slot 7 taken: goes on at slot 0
    assert seen.add_key(0 + 8, 12) is None  # slot 0 taken by the key above: slot 1
    assert (seen.add_key(15, 0), seen.add_key(8, 0), seen.add_key(7, 0)) == (11, 12, 10)


def test_growth_keeps_every_key_and_its_row() -> None:
    seen = SeenUsers(slots=2)
    shared_low_bits = [1 + (i << 9) for i in range(300)]
    dense_run = list(range(1 << 20, (1 << 20) + 300))
    keys = shared_low_bits + dense_run
    for row, key in enumerate(keys, start=2):
        assert seen.add_key(key, row) is None, key
    for row, key in enumerate(keys, start=2):
        assert seen.add_key(key, 0) == row, key
    assert seen.add_key(1 << 40, 0) is None


def test_users_are_case_insensitive() -> None:
    seen = SeenUsers()
    assert seen.add("Ada@Contoso.com", 2) is None
    assert seen.add("ada@contoso.COM", 5) == 2
    assert seen.add("bob@contoso.com", 6) is None


def test_many_users_are_told_apart_in_little_memory() -> None:
    users = [f"user{i}@contoso.com" for i in range(200_000)]
    tracemalloc.start()
    try:
        seen = SeenUsers()
        repeated = sum(seen.add(user, row) is not None for row, user in enumerate(users, start=2))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert repeated == 0
    assert [seen.add(users[i].upper(), 0) for i in (0, 99_999, 199_999)] == [2, 100_001, 200_001]
    # At most 48 bytes a user, 72 while doubling (old and new table); keeping the names would take more.
    assert peak / len(users) < 80, f"{peak / len(users):.0f} bytes a user"


def test_table_size_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        SeenUsers(slots=12)


@pytest.mark.parametrize(
    ("wording", "first", "unit"), [(CSV_WORDING, "row 2", "row"), (JSON_WORDING, "operations[1]", "operation")]
)
def test_user_check_names_the_first_place(wording: Wording, first: str, unit: str) -> None:
    check = UserCheck(wording)
    assert check.problem("ada@contoso.com", 2) is None
    assert check.problem("1234", 3) is not None  # an invalid user is not remembered
    assert check.problem("1234", 4) == check.problem("1234", 3)
    assert check.problem("ADA@contoso.com", 5) == (
        f'user "ADA@contoso.com" appears more than once: first in {first}; give each user one {unit} '
        f"(one {unit} can both add and remove licenses)"
    )
