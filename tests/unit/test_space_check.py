"""`space_check`: room in a local repository for the next stack backup, judged by what the
project's recent stack backups stored."""

from __future__ import annotations

from stackvault.stack.preflight import ERROR, OK, WARNING, space_check

MiB = 1 << 20
GiB = 1 << 30


def test_plenty_of_room_is_ok() -> None:
    check = space_check("local repository /r", 50 * GiB, [300 * MiB, 20 * MiB])
    assert (check.status, check.message) == (OK, "local repository /r opens; 50 GiB free")


def test_less_than_a_recent_backup_stored_is_an_error_naming_both_sizes() -> None:
    check = space_check("local repository /r", 500 * MiB, [30 * MiB, 800 * MiB, 10 * MiB])
    assert check.status == ERROR
    assert check.message == (
        "local repository /r has 500 MiB free, but recent stack backups stored up to 800 MiB each"
    )
    assert "prune" in check.fix


def test_less_than_twice_the_most_or_under_a_gibibyte_warns() -> None:
    tight = space_check("r", 3 * GiB, [2 * GiB])
    assert tight.status == WARNING and "stored up to 2048 MiB each" in tight.message
    first = space_check("r", 900 * MiB, [])
    assert first.status == WARNING
    assert first.message == "r opens, but only 900 MiB are free there"
    assert space_check("r", 2 * GiB, []).status == OK
