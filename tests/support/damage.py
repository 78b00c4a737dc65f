"""Damage a repository's stored data the way a failing disk or a tampering hand would."""

from __future__ import annotations

from stackvault.repo.blob import IndexEntry
from stackvault.repo.pack import pack_name
from stackvault.store.base import Store


def damage_blob(store: Store, entry: IndexEntry, mask: int = 0x40) -> None:
    """Flip bits (``mask``) of the byte in the middle of the stored blob ``entry`` names."""
    name = pack_name(entry.pack_id)
    pack = bytearray(store.get(name))
    pack[entry.offset + entry.length // 2] ^= mask
    store.put(name, bytes(pack))
