"""Key files in the store (repository layer): which are damaged, told without the password.

A key file is named by the unkeyed BLAKE3 of its bytes (FORMAT.md §1), so a flipped byte shows
as a name that no longer matches, whatever the password. When no key opens with a password,
`damaged_keys` tells a wrong password (every key intact) from damage (some key is not).
"""

from __future__ import annotations

from stackvault.crypto.keyfile import read_key_info
from stackvault.errors import IntegrityError, ObjectNotFound, UnsupportedFormat
from stackvault.repo.pack import storage_id
from stackvault.store.base import Store

KEYS_PREFIX = "keys/"


def damaged_keys(store: Store) -> list[tuple[str, str]]:
    """``(key id, what is wrong)`` for each key file that is damaged, in name order."""
    found: list[tuple[str, str]] = []
    for name in sorted(info.name for info in store.list(KEYS_PREFIX)):
        key_id = name.removeprefix(KEYS_PREFIX)
        try:
            data = store.get(name)
        except ObjectNotFound:
            continue  # removed meanwhile (`key remove` of another client)
        if storage_id(data).hex() != key_id:
            found.append((key_id, "its bytes no longer match its name"))
            continue
        try:
            read_key_info(data)
        except (UnsupportedFormat, IntegrityError) as exc:
            found.append((key_id, str(exc)))
    return found


def damaged_key_error(store: Store, damaged: list[tuple[str, str]]) -> IntegrityError:
    """The error for "no key opens with this password, and these key files are damaged"."""
    shown = "; ".join(f"keys/{key_id}: {why}" for key_id, why in damaged)
    return IntegrityError(
        f"no key of the repository at {store.describe()} opens with this password, and "
        f"{len(damaged)} key file(s) are damaged ({shown})",
        hint="if the password belongs to a damaged key, restore that key file from a copy of "
        "the repository; otherwise check the password",
    )
