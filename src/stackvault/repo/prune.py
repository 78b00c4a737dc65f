"""Prune (repository layer): remove data no snapshot references, crash-safely.

Order (FORMAT.md §10): repacked packs are written first, then one new index naming every kept
pack and superseding the old index files, then old index files are deleted, then unneeded
packs. At every instant every kept snapshot is restorable; a crash leaves at most extra packs
or extra index entries, which the next prune removes. Prune needs an exclusive lock and
refuses to run if any snapshot or tree cannot be read (it could not know what that snapshot
still needs).

Under Object Lock (FORMAT.md §11) an unused object whose retention has not run out is left
alone and reported with the date it becomes removable (a later prune removes it), nothing
locked is repacked, and the retention of everything the kept snapshots need (their packs,
the live index files, the snapshots, keys and config) is extended to ``days`` from now once
less than half of that is left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from stackvault.errors import IntegrityError, ObjectLocked, ObjectNotFound
from stackvault.repo.blob import BlobType, IndexEntry
from stackvault.repo.index import encode_index
from stackvault.repo.pack import pack_name, storage_id
from stackvault.repo.repository import Repository
from stackvault.store.base import Store

DEFAULT_REPACK_THRESHOLD = 0.2


@dataclass
class PrunePlan:
    used_blobs: set[bytes] = field(default_factory=set)
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

    @property
    def nothing_to_do(self) -> bool:
        return not (self.delete_packs or self.repack_packs or self.unindexed_packs or self.extend)

    @property
    def next_release(self) -> datetime | None:
        """When the first locked unused object becomes removable."""
        return min(self.locked.values(), default=None)


def used_blobs(repo: Repository) -> set[bytes]:
    """Every blob (tree and data) reachable from any snapshot; raises if one is unreadable
    (a damaged snapshot must be forgotten first: prune cannot know what it still needs)."""
    used: set[bytes] = set()
    for snap in repo.list_snapshots(strict=True):
        stack = [snap.tree]
        while stack:
            tree_id = stack.pop()
            if tree_id in used:
                continue
            used.add(tree_id)
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


def plan_prune(repo: Repository, repack_threshold: float = DEFAULT_REPACK_THRESHOLD) -> PrunePlan:
    """Decide what to delete and repack. Reads only; changes nothing."""
    plan = PrunePlan(
        used_blobs=used_blobs(repo),
        old_index=repo.index_names(),
        superseded_index=list(repo.superseded_index),
    )
    missing = [b for b in plan.used_blobs if b not in repo.index]
    if missing:
        raise IntegrityError(
            f"prune refused: {len(missing)} blob(s) that snapshots use are not in the index",
            hint="run `stackvault check` first",
        )
    seen: set[bytes] = set()
    for pack_id, blobs in sorted(repo.index.packs().items()):
        size = sum(b.length for b in blobs)
        # A blob counts as used in the first pack that holds it; later copies are duplicates.
        live = [b for b in blobs if b.blob_id in plan.used_blobs and b.blob_id not in seen]
        seen.update(b.blob_id for b in live)
        live_size = sum(b.length for b in live)
        if not live:
            plan.delete_packs.append(pack_id)
            plan.bytes_freed += size
        elif size and (size - live_size) / size > repack_threshold:
            plan.repack_packs.append(pack_id)
            plan.bytes_freed += size - live_size
            plan.bytes_repacked += live_size
        else:
            plan.keep_packs.append(pack_id)
    indexed = {pack_name(p) for p in repo.index.pack_ids()}
    sizes = {info.name: info.size for info in repo.store.list("data/")}
    plan.unindexed_packs = sorted(name for name in sizes if name not in indexed)
    if repo.config.object_lock is not None:
        _plan_retention(repo, plan, sizes)
    return plan


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
    packs = repo.index.packs()

    def unlocked(pack_ids: list[bytes]) -> list[bytes]:
        return [p for p in pack_ids if pack_name(p) not in locked]

    def held(pack_ids: list[bytes]) -> list[bytes]:
        return [p for p in pack_ids if pack_name(p) in locked]

    for pack_id in held(plan.delete_packs) + held(plan.repack_packs):
        blobs = packs[pack_id]
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
    rewrites_index = bool(plan.delete_packs or plan.repack_packs or plan.unindexed_packs)
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
    return ThreadPoolExecutor(max_workers=max(1, min(16, store.capabilities().parallelism)))


def execute_prune(
    repo: Repository, plan: PrunePlan, notice: Callable[[str], None] = lambda _m: None
) -> None:
    """Carry out a plan made under the same exclusive lock."""
    leftovers = repo.store.cleanup()
    if leftovers:
        notice(f"removed {leftovers} temporary file(s) left by interrupted writes")
    if plan.nothing_to_do:
        return
    packs = repo.index.packs()
    if plan.repack_packs:
        writer = repo.writer()
        moved: set[bytes] = set()
        try:
            for pack_id in plan.repack_packs:
                blobs = [b for b in packs[pack_id] if b.blob_id in plan.used_blobs]
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
    changes_index = plan.delete_packs or plan.repack_packs or plan.unindexed_packs
    if changes_index:
        kept = [(p, packs[p]) for p in plan.keep_packs]
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
