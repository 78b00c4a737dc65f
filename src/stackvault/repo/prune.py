"""Prune (repository layer): remove data no snapshot references, crash-safely.

Order (FORMAT.md §10): repacked packs are written first, then one new index naming every kept
pack, then old index files are deleted, then unneeded packs. At every instant every kept
snapshot is restorable; a crash leaves at most extra packs or extra index entries, which the
next prune removes. Prune needs an exclusive lock and refuses to run if any snapshot or tree
cannot be read (it could not know what that snapshot still needs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from stackvault.errors import IntegrityError
from stackvault.repo.blob import BlobType, IndexEntry
from stackvault.repo.index import encode_index
from stackvault.repo.pack import pack_name, storage_id
from stackvault.repo.repository import Repository

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

    @property
    def nothing_to_do(self) -> bool:
        return not (self.delete_packs or self.repack_packs or self.unindexed_packs)


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
    plan = PrunePlan(used_blobs=used_blobs(repo), old_index=repo.index_names())
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
    plan.unindexed_packs = sorted(
        info.name for info in repo.store.list("data/") if info.name not in indexed
    )
    return plan


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
    kept = [(p, packs[p]) for p in plan.keep_packs]
    if kept:
        data = encode_index(repo.envelope, kept)
        repo.store.put(f"index/{storage_id(data).hex()}", data)
    for name in plan.old_index:
        repo.store.delete(name)
    for pack_id in plan.delete_packs + plan.repack_packs:
        repo.store.delete(pack_name(pack_id))
    for name in plan.unindexed_packs:
        repo.store.delete(name)
    notice(
        f"removed {len(plan.delete_packs) + len(plan.unindexed_packs)} pack(s), "
        f"repacked {len(plan.repack_packs)}"
    )
