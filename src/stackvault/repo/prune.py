"""Prune (repository layer): remove data no snapshot references, crash-safely.

Order (FORMAT.md §10): repacked packs are written first, then one new index naming every kept
pack and superseding the old index files, then old index files are deleted, then unneeded
packs. At every instant every kept snapshot is restorable; a crash leaves at most extra packs
or extra index entries, which the next prune removes. Prune needs an exclusive lock and
refuses to run if any snapshot or tree cannot be read (it could not know what that snapshot
still needs).

Prune never trusts a lock decision alone with data (FORMAT.md §10): an unused pack whose
store modification time is within ``safety_margin`` of the prune's start (by the store's
clock: the time of prune's own lock object) is kept and stays indexed, so a backup that runs
although prune judged its lock stale — or that took no lock — loses nothing it wrote in that
margin; packs written after prune started are younger still. A pack the index does not list
is deleted only after its header was read and shows that no snapshot uses any of its blobs;
one whose header holds blobs snapshots use is indexed again, one whose header cannot be read
is kept (`repair packs` salvages it).

Under Object Lock (FORMAT.md §11) an unused object whose retention has not run out is left
alone and reported with the date it becomes removable (a later prune removes it), nothing
locked is repacked, and the retention of everything the kept snapshots need (their packs,
the live index files, the snapshots, keys and config) is extended to ``days`` from now once
less than half of that is left.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from preshed.maps import PreshMap

from stackvault.errors import IntegrityError, ObjectLocked, ObjectNotFound, StoreFull
from stackvault.repo.access import store_access
from stackvault.repo.appendonly import refuse_on_append_only_store
from stackvault.repo.blob import BlobType, IndexEntry
from stackvault.repo.index import encode_index
from stackvault.repo.lock import DEFAULT_LEASE_S
from stackvault.repo.pack import PACKS_PREFIX, PackedBlob, pack_name, storage_id
from stackvault.repo.packheaders import load_pack_headers
from stackvault.repo.repository import Repository
from stackvault.repo.reserve import write_reserve
from stackvault.store.base import ObjectInfo, Store

DEFAULT_REPACK_THRESHOLD = 0.2
DEFAULT_SAFETY_MARGIN = timedelta(seconds=2 * DEFAULT_LEASE_S)
"""Unused packs younger than this (by the store's clock) are never deleted: twice the lock
lease, so a backup whose lock was wrongly judged stale cannot lose what it is writing."""


_ID = 32
_key = struct.Struct("<Q").unpack_from  # an id's first 8 bytes (ids are keyed hashes)


class BlobSet:
    """A set of blob ids in ~64 bytes an id where a `set` of bytes objects takes ~110: the
    32-byte ids one after another in a byte array, and a hash table (preshed, as in `Index`)
    from an id's first eight bytes to its place there. An id whose first eight bytes another
    one has (about one pair in 10^12), or that is not 32 bytes long, is kept in a small set
    beside it; membership always compares whole ids."""

    def __init__(self, blob_ids: Iterable[bytes] = ()) -> None:
        self._ids = bytearray()
        self._table = PreshMap()
        self._other: set[bytes] = set()
        self.update(blob_ids)

    def __len__(self) -> int:
        return len(self._ids) // _ID + len(self._other)

    def __contains__(self, blob_id: object) -> bool:
        if not isinstance(blob_id, bytes):
            return False
        if len(blob_id) == _ID:
            at = self._table[_key(blob_id)[0]]
            if at is not None and self._ids.startswith(blob_id, at * _ID):
                return True
        return bool(self._other) and blob_id in self._other

    def add(self, blob_id: bytes) -> bool:
        """Add ``blob_id``; False if it was there already."""
        if len(blob_id) == _ID:
            key = _key(blob_id)[0]
            at = self._table[key]
            if at is None:
                self._table[key] = len(self._ids) // _ID
                self._ids += blob_id
                return True
            if self._ids.startswith(blob_id, at * _ID):
                return False
        if blob_id in self._other:
            return False
        self._other.add(bytes(blob_id))
        return True

    def update(self, blob_ids: Iterable[bytes]) -> None:
        add = self.add
        for blob_id in blob_ids:
            add(blob_id)

    def select(self, blobs: Iterable[PackedBlob]) -> list[PackedBlob]:
        """Those of ``blobs`` whose id is in the set (prune's pass over every listed blob:
        `__contains__` written out)."""
        table, ids, other = self._table, self._ids, self._other
        found = []
        for b in blobs:
            blob_id = b.blob_id
            if len(blob_id) == _ID:
                at = table[_key(blob_id)[0]]
                if at is not None and ids.startswith(blob_id, at * _ID):
                    found.append(b)
                    continue
            if other and blob_id in other:
                found.append(b)
        return found

    def __iter__(self) -> Iterator[bytes]:
        ids = self._ids
        for at in range(0, len(ids), _ID):
            yield bytes(ids[at : at + _ID])
        yield from self._other


@dataclass
class PrunePlan:
    used_blobs: BlobSet = field(default_factory=BlobSet)
    delete_packs: list[bytes] = field(default_factory=list)
    repack_packs: list[bytes] = field(default_factory=list)
    keep_packs: list[bytes] = field(default_factory=list)
    unindexed_packs: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    bytes_repacked: int = 0
    old_index: list[str] = field(default_factory=list)
    superseded_index: list[str] = field(default_factory=list)
    """Index files a newer one supersedes: garbage, deleted unless locked."""
    locked: dict[str, datetime] = field(default_factory=dict)
    """Unused objects kept because their Object Lock retention has not run out yet."""
    bytes_locked: int = 0
    extend: list[str] = field(default_factory=list)
    """Objects the kept snapshots need whose retention is extended to `extend_until`."""
    extend_until: datetime | None = None
    header_blobs: dict[bytes, list[PackedBlob]] = field(default_factory=dict)
    """The blobs of the `reindexed` packs, read from their headers. Every other pack's blobs
    are taken from the in-memory index one pack at a time when needed (`pack_blobs`), never
    copied out of it whole: at millions of blobs such a copy would cost several times the
    index itself."""
    young_packs: list[str] = field(default_factory=list)
    """Unused packs kept because they are younger than the safety margin."""
    bytes_young: int = 0
    bytes_unindexed: int = 0
    """Bytes of the `unindexed_packs` prune deletes (their headers show nothing used)."""
    reindexed: list[bytes] = field(default_factory=list)
    """Packs the index did not list whose headers hold blobs snapshots use: indexed again."""
    unreadable_packs: dict[str, str] = field(default_factory=dict)
    """Unindexed packs whose header cannot be read, kept (name → why)."""

    @property
    def nothing_to_do(self) -> bool:
        return not (self.rewrites_index or self.extend)

    @property
    def rewrites_index(self) -> bool:
        """Whether prune writes a new index (superseding every loaded index file)."""
        return bool(
            self.delete_packs
            or self.repack_packs
            or self.unindexed_packs
            or self.reindexed
            or self.damaged_index
        )

    damaged_index: list[str] = field(default_factory=list)
    """Index files that could not be read: replaced by the new index, whose packs prune
    learnt from their headers."""
    low_space: bool = False
    """The store was full: prune deleted in the low-space order and repacked nothing."""

    @property
    def next_release(self) -> datetime | None:
        """When the first locked unused object becomes removable."""
        return min(self.locked.values(), default=None)


def pack_blobs(repo: Repository, plan: PrunePlan, pack_id: bytes) -> list[PackedBlob]:
    """The blobs of one pack the plan knows: those its header listed if the index did not
    list it (`PrunePlan.header_blobs`), else the index's listing."""
    found = plan.header_blobs.get(pack_id)
    return found if found is not None else repo.index.pack_blobs(pack_id)


def used_blobs(repo: Repository) -> BlobSet:
    """Every blob (tree and data) reachable from any snapshot, in a `BlobSet` (a `set` of
    the ids would cost nearly twice the memory); raises if one is unreadable
    (a damaged snapshot must be forgotten first: prune cannot know what it still needs).
    Each distinct tree is read once, in no particular order, with a stack of tree ids (no
    recursion), not `walk_tree_nodes`: paths do not matter here, and a tree that many
    snapshots share is not read again for each."""
    used = BlobSet()
    for snap in repo.list_snapshots(strict=True):
        stack = [snap.tree]
        while stack:
            tree_id = stack.pop()
            if not used.add(tree_id):
                continue
            try:
                nodes = repo.load_tree(tree_id)
            except IntegrityError as exc:
                raise IntegrityError(
                    f"prune refused: snapshot {snap.short_id} has an unreadable tree ({exc})",
                    hint="run `stackvault check` and forget damaged snapshots first",
                ) from exc
            for node in nodes:
                if node.type == "dir" and node.subtree is not None:
                    stack.append(node.subtree)
                elif node.type == "file":
                    used.update(node.content)
    return used


def plan_prune(
    repo: Repository,
    repack_threshold: float = DEFAULT_REPACK_THRESHOLD,
    *,
    now: datetime | None = None,
    safety_margin: timedelta = DEFAULT_SAFETY_MARGIN,
) -> PrunePlan:
    """Decide what to delete and repack. Reads only (pack headers of unindexed packs
    included); changes nothing in the store. ``now`` is the store's time at the prune's
    start (its lock's `store_time`); packs written within ``safety_margin`` before it, or
    after it, are kept.

    The headers of unindexed packs are read first and their blobs added to the in-memory
    index, so that trees a damaged index file listed can still be walked."""
    listing = {info.name: info for info in repo.store.list(PACKS_PREFIX)}
    sizes = {name: info.size for name, info in listing.items()}
    cutoff = (now or repo.clock.now()) - safety_margin

    def young(name: str) -> bool:
        info: ObjectInfo | None = listing.get(name)
        return info is not None and info.mtime is not None and info.mtime > cutoff

    plan = PrunePlan(
        old_index=repo.index_names(),
        superseded_index=list(repo.superseded_index),
        damaged_index=list(repo.damaged_index),
    )
    indexed = repo.index.pack_ids()
    found = _read_unindexed(repo, plan, listing, young, indexed)
    plan.used_blobs = used_blobs(repo)
    for name, blobs in sorted(found.items()):
        pack_id = bytes.fromhex(name.rsplit("/", 1)[1])
        if any(b.blob_id in plan.used_blobs for b in blobs):
            plan.header_blobs[pack_id] = blobs
            plan.reindexed.append(pack_id)
        else:
            plan.unindexed_packs.append(name)
            plan.bytes_unindexed += listing[name].size
            plan.bytes_freed += listing[name].size
    missing = [b for b in plan.used_blobs if b not in repo.index]
    if missing:
        raise IntegrityError(
            f"prune refused: {len(missing)} blob(s) that snapshots use are in no readable pack",
            hint="run `stackvault check`, then `stackvault repair index` (and `repair "
            "snapshots` for what is lost)",
        )
    # A blob counts as used in the first pack that holds it; later copies are duplicates.
    # The blobs counted are remembered only if the index lists some blob in several packs
    # (the ids taken out of the index are copies: a set of them costs ~110 bytes a blob).
    used = plan.used_blobs
    seen: set[bytes] | None = set() if repo.index.listings > len(repo.index) else None
    # One pack at a time, in the order of their ids: the index's packs and the reindexed ones.
    for pack_id in sorted(indexed.union(plan.reindexed)):
        blobs = pack_blobs(repo, plan, pack_id)
        size = sum(b.length for b in blobs)
        live = used.select(blobs)
        if seen is not None:
            live = [b for b in live if b.blob_id not in seen]
            seen.update(b.blob_id for b in live)
        live_size = sum(b.length for b in live)
        wasted = size - live_size
        if (not live or (size and wasted / size > repack_threshold)) and young(pack_name(pack_id)):
            plan.young_packs.append(pack_name(pack_id))
            plan.bytes_young += wasted
            plan.keep_packs.append(pack_id)
        elif not live:
            plan.delete_packs.append(pack_id)
            plan.bytes_freed += size
        elif size and wasted / size > repack_threshold:
            plan.repack_packs.append(pack_id)
            plan.bytes_freed += wasted
            plan.bytes_repacked += live_size
        else:
            plan.keep_packs.append(pack_id)
    if repo.config.object_lock is not None:
        _plan_retention(repo, plan, sizes)
    return plan


def _read_unindexed(
    repo: Repository,
    plan: PrunePlan,
    listing: dict[str, ObjectInfo],
    young: Callable[[str], bool],
    indexed: set[bytes],
) -> dict[str, list[PackedBlob]]:
    """Packs the index does not list (``indexed``: those it does): young ones are left alone
    (recorded in the plan), the others' headers are read; unreadable ones are kept
    (recorded), readable ones returned and their blobs added to the in-memory index."""
    names = {pack_name(p) for p in indexed}
    unindexed = sorted(name for name in listing if name not in names)
    for name in unindexed:
        if young(name):
            plan.young_packs.append(name)
            plan.bytes_young += listing[name].size
    old = [(n, listing[n].size) for n in unindexed if not young(n)]
    if not old:
        return {}
    repo.notice(f"reading the headers of {len(old)} pack(s) the index does not list")
    found: dict[str, list[PackedBlob]] = {}
    for name, got in sorted(load_pack_headers(repo.store, repo.envelope, old).items()):
        if isinstance(got, IntegrityError):
            plan.unreadable_packs[name] = str(got)
            continue
        found[name] = got
        repo.index.add_pack(bytes.fromhex(name.rsplit("/", 1)[1]), got)
    return found


def _plan_retention(repo: Repository, plan: PrunePlan, sizes: dict[str, int]) -> None:
    """Leave locked objects alone and choose what to extend (see the module docstring)."""
    assert repo.config.object_lock is not None
    now = repo.clock.now()
    days = repo.config.object_lock.days
    live_index = [n for n in plan.old_index if n not in repo.superseded_index]
    needed = [
        *(pack_name(p) for p in plan.keep_packs),
        *live_index,
        *repo.snapshot_names(),
        *(info.name for info in repo.store.list("keys/")),
        "config",
    ]
    doomed = [
        *(pack_name(p) for p in plan.delete_packs + plan.repack_packs),
        *plan.unindexed_packs,
    ]
    until = retentions(repo.store, [*needed, *doomed, *repo.superseded_index])
    locked = {name for name in doomed if (until.get(name) or now) > now}
    for name in locked:
        plan.locked[name] = until[name] or now
        plan.bytes_locked += sizes.get(name, 0)

    def unlocked(pack_ids: list[bytes]) -> list[bytes]:
        return [p for p in pack_ids if pack_name(p) not in locked]

    def held(pack_ids: list[bytes]) -> list[bytes]:
        return [p for p in pack_ids if pack_name(p) in locked]

    for pack_id in held(plan.delete_packs) + held(plan.repack_packs):
        blobs = pack_blobs(repo, plan, pack_id)
        freed = sum(b.length for b in blobs)
        if pack_id in plan.repack_packs:
            live = sum(b.length for b in blobs if b.blob_id in plan.used_blobs)
            freed -= live
            plan.bytes_repacked -= live
        plan.bytes_freed -= freed
        plan.keep_packs.append(pack_id)
    plan.delete_packs = unlocked(plan.delete_packs)
    plan.repack_packs = unlocked(plan.repack_packs)
    plan.unindexed_packs = [n for n in plan.unindexed_packs if n not in locked]
    # Index files are deleted only when prune writes a new index that supersedes them.
    index_files = list(repo.superseded_index)
    rewrites_index = plan.rewrites_index
    if rewrites_index:
        index_files += plan.old_index
    for name in index_files:
        if (until.get(name) or now) > now:
            plan.locked[name] = until[name] or now
    plan.superseded_index = [n for n in plan.superseded_index if n not in plan.locked]
    plan.extend_until = now + timedelta(days=days)
    threshold = now + timedelta(days=days / 2)
    kept_names = set(needed) | {pack_name(p) for p in plan.keep_packs}
    if rewrites_index:  # the new index gets a fresh retention when it is written
        kept_names -= set(plan.old_index)
    plan.extend = sorted(
        name
        for name in kept_names
        if name in until and name not in locked and (until[name] or now) < threshold
    )


def retentions(store: Store, names: Iterable[str]) -> dict[str, datetime | None]:
    """The retention date of each object (None: none); objects that vanished are left out."""

    def one(name: str) -> tuple[str, datetime | None] | None:
        try:
            return name, store.retention(name)
        except ObjectNotFound:
            return None

    with _request_pool(store) as pool:
        found = [r for r in pool.map(one, list(dict.fromkeys(names))) if r is not None]
    return dict(found)


def _request_pool(store: Store) -> ThreadPoolExecutor:
    """Threads for many small metadata requests (retention lookups and updates)."""
    return ThreadPoolExecutor(max_workers=store_access(store).request_workers)


def execute_prune(
    repo: Repository, plan: PrunePlan, notice: Callable[[str], None] = lambda _m: None
) -> None:
    """Carry out a plan made under the same exclusive lock.

    If the store is too full for the repacked packs or the new index, nothing has been
    deleted yet; prune then frees space in the low-space order (`_execute_low_space`). In
    the end it writes the space reserve again if there is room (`repo/reserve.py`).

    On a store opened append-only it refuses (`AppendOnlyRefused`) before touching anything."""
    refuse_on_append_only_store(
        repo.store,
        "prune",
        "deletes packs and index files",
        "add --dry-run to only see what it would do",
    )
    leftovers = repo.store.cleanup()
    if leftovers:
        notice(f"removed {leftovers} temporary file(s) left by interrupted writes")
    if plan.nothing_to_do:
        write_reserve(repo.store)
        return
    try:
        _execute(repo, plan, notice)
    except StoreFull:
        if not plan.rewrites_index:
            raise
        notice(
            "the store is full: prune frees space in the low-space order instead (no "
            "repacking; old index files are deleted before the new one is written)"
        )
        _execute_low_space(repo, plan, notice)
    write_reserve(repo.store)


def _execute(repo: Repository, plan: PrunePlan, notice: Callable[[str], None]) -> None:
    """The normal order: repacked packs, new index, then deletions (FORMAT.md §10)."""
    if plan.repack_packs:
        writer = repo.writer()
        moved: set[bytes] = set()
        try:
            for pack_id in plan.repack_packs:
                used = plan.used_blobs
                blobs = [b for b in pack_blobs(repo, plan, pack_id) if b.blob_id in used]
                data = repo.store.get(pack_name(pack_id))
                for b in blobs:
                    if b.blob_id in moved:
                        continue
                    sealed = data[b.offset : b.offset + b.length]
                    # Blob envelopes bind type and id, not the pack: copy them as they are,
                    # after checking them, so damage is not spread silently.
                    entry = IndexEntry(pack_id, b.offset, b.length, b.raw_length, b.type)
                    repo.open_blob(entry, b.blob_id, sealed)
                    writer.add_sealed(BlobType(b.type), b.blob_id, sealed, b.raw_length)
                    moved.add(b.blob_id)
            # flush writes the new packs and an index file naming them; that file is not
            # among plan.old_index, so it survives the deletions below.
            writer.flush()
        finally:
            writer.close(commit=False)
    if plan.rewrites_index:
        # The kept packs' listings are taken out of the index one pack at a time as the new
        # index is encoded (the repacked packs just added to it are not among them).
        kept = ((p, pack_blobs(repo, plan, p)) for p in plan.keep_packs)
        old = [bytes.fromhex(n.removeprefix("index/")) for n in plan.old_index]
        data = encode_index(repo.envelope, kept, supersedes=old)
        repo.store.put(f"index/{storage_id(data).hex()}", data)
        for name in plan.old_index:
            _delete(repo, name, plan)
        for pack_id in plan.delete_packs + plan.repack_packs:
            _delete(repo, pack_name(pack_id), plan)
        for name in plan.unindexed_packs:
            _delete(repo, name, plan)
        notice(
            f"removed {len(plan.delete_packs) + len(plan.unindexed_packs)} pack(s), "
            f"repacked {len(plan.repack_packs)}"
        )
    else:
        for name in plan.superseded_index:
            _delete(repo, name, plan)
    if plan.extend and plan.extend_until is not None:
        until = plan.extend_until
        with _request_pool(repo.store) as pool:
            list(pool.map(lambda n: repo.store.set_retention(n, until), plan.extend))


def _execute_low_space(repo: Repository, plan: PrunePlan, notice: Callable[[str], None]) -> None:
    """Free space on a full store without writing anything first.

    1. Packs no index lists whose headers showed nothing used go (nothing refers to them).
    2. The old index files go: from here until step 3 the packs are unindexed, which a crash
       leaves recoverable (`repair index`, or the next prune, reads their headers) and never
       lets an index name a deleted pack.
    3. The new index is written into the space the old ones held (it names fewer packs).
    4. The unused packs go. Packs that were to be repacked are kept whole.
    """
    plan.low_space = True
    for pack_id in plan.repack_packs:
        blobs = pack_blobs(repo, plan, pack_id)
        live = sum(b.length for b in blobs if b.blob_id in plan.used_blobs)
        plan.bytes_freed -= sum(b.length for b in blobs) - live
        plan.bytes_repacked -= live
        plan.keep_packs.append(pack_id)
    plan.repack_packs = []
    for name in plan.unindexed_packs:
        _delete(repo, name, plan)
    for name in plan.old_index:
        _delete(repo, name, plan)
    kept = ((p, pack_blobs(repo, plan, p)) for p in plan.keep_packs)
    data = encode_index(repo.envelope, kept)
    try:
        repo.store.put(f"index/{storage_id(data).hex()}", data)
    except StoreFull as exc:
        raise StoreFull(
            f"prune could not write the new index even after deleting the old ones ({exc}); "
            "no data was deleted, but the packs are unindexed",
            hint="free some space on the store's file system, then run `stackvault repair index`",
        ) from exc
    for pack_id in plan.delete_packs:
        _delete(repo, pack_name(pack_id), plan)
    notice(f"removed {len(plan.delete_packs) + len(plan.unindexed_packs)} pack(s)")


def _delete(repo: Repository, name: str, plan: PrunePlan) -> None:
    """Delete an object; one still under retention (e.g. locked since planning) stays and is
    reported as locked instead."""
    try:
        repo.store.delete(name)
    except ObjectLocked:
        try:
            until = repo.store.retention(name)
        except ObjectNotFound:
            return
        plan.locked[name] = until or repo.clock.now()
