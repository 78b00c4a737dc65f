"""Reading pack headers from the store (repository layer): what a pack holds, without the index.

A pack ends with its sealed header and the header's length (FORMAT.md §5), so the blobs a
pack holds can be learnt from its last bytes alone: `repair index` rebuilds the index this
way, and prune reads the header of every pack the index does not list before it decides
anything about it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from stackvault.crypto.envelope import Envelope
from stackvault.errors import IntegrityError, ObjectNotFound
from stackvault.repo.access import store_access
from stackvault.repo.pack import PackedBlob, read_pack_header
from stackvault.store.base import Store

TAIL_GUESS = 64 * 1024
"""Bytes read from the end of a pack at first: the header of a pack of up to ~1,500 blobs."""
_TRAILER = struct.Struct("<I")


def load_pack_header(store: Store, envelope: Envelope, name: str, size: int) -> list[PackedBlob]:
    """The blobs the pack ``name`` of ``size`` bytes holds, from its header (one ranged read,
    two for a header larger than `TAIL_GUESS`). Raises `IntegrityError` if the header cannot
    be authenticated or does not fit the pack, `ObjectNotFound` if the pack is gone."""
    if size < _TRAILER.size:
        raise IntegrityError(f"pack {name} is too short to hold a header ({size} bytes)")
    start = max(0, size - TAIL_GUESS)
    tail = store.get(name, start, size - start)
    if len(tail) != size - start:
        raise IntegrityError(f"pack {name} is shorter than listed (truncated while read?)")
    (hlen,) = _TRAILER.unpack_from(tail, len(tail) - _TRAILER.size)
    need = hlen + _TRAILER.size
    if need > size:
        raise IntegrityError(f"pack {name}: its header length points outside the pack")
    if need > len(tail):
        tail = store.get(name, size - need, need)
    try:
        return read_pack_header(envelope, tail, size)
    except IntegrityError as exc:
        raise IntegrityError(f"pack {name}: {exc}") from exc


def load_pack_headers(
    store: Store,
    envelope: Envelope,
    packs: Iterable[tuple[str, int]],
    *,
    progress: Callable[[], None] | None = None,
) -> dict[str, list[PackedBlob] | IntegrityError]:
    """The header of each ``(name, size)``, or the `IntegrityError` that says why it cannot
    be read; packs that vanished meanwhile are left out. Reads on several threads."""

    def one(item: tuple[str, int]) -> tuple[str, list[PackedBlob] | IntegrityError] | None:
        name, size = item
        try:
            got: list[PackedBlob] | IntegrityError = load_pack_header(store, envelope, name, size)
        except ObjectNotFound:
            return None
        except IntegrityError as exc:
            got = exc
        if progress is not None:
            progress()
        return name, got

    workers = store_access(store).request_workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pack-header") as pool:
        return dict(r for r in pool.map(one, list(packs)) if r is not None)
