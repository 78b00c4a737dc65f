"""Reading a repository's index files into its in-memory index (repository layer).

Every index file that no other one supersedes is added to the `Index`, each as soon as it is
read (a bounded read-ahead: at most a few decoded files are in memory at once, whatever the
index's size). A prune writes an index file that *supersedes* older ones (FORMAT.md §6);
under Object Lock the older ones stay in the store, and they may be read before the file that
supersedes them: what they listed that no file in force lists is then taken out again.
A damaged file is skipped and reported; one damaged file never blocks the others.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from stackvault.crypto.envelope import Envelope
from stackvault.errors import IntegrityError, ObjectNotFound
from stackvault.readahead import read_ahead
from stackvault.repo.index import Index, IndexFile, decode_index_file
from stackvault.repo.pack import storage_id
from stackvault.store.base import Store


@dataclass
class IndexLoad:
    """What reading the index files found besides the index itself: the files superseded
    by others (still in the store), and the damaged files skipped, with why."""

    superseded: list[str] = field(default_factory=list)
    damaged: list[tuple[str, IntegrityError]] = field(default_factory=list)


def read_index_files(
    store: Store, envelope: Envelope, names: list[str], index: Index, *, workers: int
) -> IndexLoad:
    """Add to ``index`` every index file of ``names`` that no readable one supersedes."""

    def fetch(name: str) -> tuple[str, IndexFile | IntegrityError]:
        try:
            data = store.get(name)
        except ObjectNotFound:
            return name, IntegrityError(f"index file {name} vanished while it was read")
        if storage_id(data).hex() != name.removeprefix("index/"):
            return name, IntegrityError(f"index file {name} does not match its name")
        try:
            return name, decode_index_file(envelope, data)
        except IntegrityError as exc:
            return name, exc

    listed: dict[str, set[bytes]] = {}  # the packs of each file added, by file
    superseded: set[str] = set()
    damaged: list[tuple[str, IntegrityError]] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for name, got in read_ahead(pool, names, fetch, ahead=2 * workers):
            if isinstance(got, IntegrityError):
                damaged.append((name, got))
                continue
            superseded.update(f"index/{old.hex()}" for old in got.supersedes)
            if name in superseded:
                continue
            for pack_id, blobs in got.packs:
                index.add_pack(pack_id, blobs)
            listed[name] = {pack_id for pack_id, _blobs in got.packs}
    _forget_superseded(index, listed, superseded)
    return IndexLoad(
        superseded=sorted(superseded & set(names)),
        # A damaged file that a readable one supersedes was garbage anyway.
        damaged=[(n, e) for n, e in damaged if n not in superseded],
    )


def _forget_superseded(index: Index, listed: dict[str, set[bytes]], superseded: set[str]) -> None:
    """Take out of ``index`` what files read before the file that supersedes them listed:
    the packs that no file still in force lists (prune deleted them)."""
    late = [name for name in listed if name in superseded]
    if not late:
        return
    in_force = set().union(*(p for n, p in listed.items() if n not in superseded))
    gone = set().union(*(listed[n] for n in late)) - in_force
    if gone:
        index.drop_packs(gone)
