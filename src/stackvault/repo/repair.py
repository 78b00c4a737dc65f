"""Repairs (repository layer): rebuild the index from the packs, salvage damaged packs.

Each repair runs under the repository's exclusive lock and keeps the commit order of
FORMAT.md §10: new objects first (packs, then an index that supersedes every older index
file), deletions last — a crash in the middle leaves a repository at least as good as
before. See FORMAT.md §12 for the procedures and what each one can and cannot bring back.

* `rebuild_index` (``repair index``): reads the header of every pack the intact index files
  do not describe (every pack with ``read_all``) and writes one index naming exactly the
  packs that exist and can be read. Blobs of missing packs, or listed only in damaged index
  files, are then absent from the index: reads report them missing, and the next backup of
  the same data stores them again (healing older snapshots that use the same blobs).
* `salvage_packs` (``repair packs``): copies every blob of the named packs that still
  authenticates into new packs and drops the damaged packs; what cannot be read is gone
  from the index, so the next backup of the same data stores it again.
* `repair_snapshots` (``repair snapshots``): writes a copy of each snapshot that references
  lost data, without it (see the function), tagged ``repaired``; originals stay until asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from stackvault.errors import IntegrityError, ObjectLocked, ObjectNotFound, UsageError
from stackvault.repo.blob import BlobType, IndexEntry
from stackvault.repo.index import encode_index
from stackvault.repo.pack import PACKS_PREFIX, PackedBlob, pack_name, storage_id
from stackvault.repo.packheaders import load_pack_headers
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node, encode_tree
from stackvault.repo.writer import BlobWriter


@dataclass
class IndexRepair:
    """What `rebuild_index` found and did."""

    packs: int = 0
    """Packs in the store."""
    headers_read: int = 0
    packs_indexed: int = 0
    blobs_indexed: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)
    """Packs whose header cannot be read (name → why): not indexed, left in place."""
    missing_packs: list[str] = field(default_factory=list)
    """Packs the old index listed that the store does not hold."""
    blobs_lost: int = 0
    """Blobs the old index listed that no readable pack holds any more."""
    damaged_index: list[str] = field(default_factory=list)
    index_written: str | None = None
    index_removed: int = 0
    index_kept: list[str] = field(default_factory=list)
    """Old index files that could not be deleted (Object Lock): superseded, so ignored."""


def _pack_id(name: str) -> bytes:
    return bytes.fromhex(name.rsplit("/", 1)[1])


def rebuild_index(
    repo: Repository,
    *,
    read_all: bool = False,
    dry_run: bool = False,
    progress: Callable[[], None] | None = None,
) -> IndexRepair:
    """Rebuild the index from the packs (see the module docstring). Loads the index itself
    (damaged files are skipped and counted); with ``dry_run`` only reports."""
    report = IndexRepair()
    repo.load_index(on_error=lambda name, _exc: report.damaged_index.append(name))
    old_index = repo.index_names()
    known = repo.index.packs()
    listing = {info.name: info.size for info in repo.store.list(PACKS_PREFIX)}
    report.packs = len(listing)
    packs: dict[bytes, list[PackedBlob]] = {}
    to_read: list[tuple[str, int]] = []
    for name, size in sorted(listing.items()):
        blobs = known.get(_pack_id(name))
        if not read_all and blobs and _fits(blobs, size):
            packs[_pack_id(name)] = blobs
        else:
            to_read.append((name, size))
    headers = load_pack_headers(repo.store, repo.envelope, to_read, progress=progress)
    report.headers_read = len(headers)
    for name, got in sorted(headers.items()):
        if isinstance(got, IntegrityError):
            report.unreadable[name] = str(got)
        else:
            packs[_pack_id(name)] = got
    report.missing_packs = sorted(pack_name(p) for p in known if pack_name(p) not in listing)
    now_held = {b.blob_id for blobs in packs.values() for b in blobs}
    report.blobs_lost = len({b for b, _ in repo.index.items()} - now_held)
    report.packs_indexed = len(packs)
    report.blobs_indexed = len(now_held)
    if dry_run:
        return report
    _write_index(repo, sorted(packs.items()), old_index, report)
    return report


def _fits(blobs: list[PackedBlob], size: int) -> bool:
    """Whether a pack of ``size`` bytes can hold what the index says (its blobs end before
    its header starts)."""
    return max(b.offset + b.length for b in blobs) < size


def _write_index(
    repo: Repository,
    packs: list[tuple[bytes, list[PackedBlob]]],
    old_index: list[str],
    report: IndexRepair,
) -> None:
    """Write one index naming ``packs`` that supersedes ``old_index``, then delete those."""
    old_ids = [bytes.fromhex(n.removeprefix("index/")) for n in old_index]
    data = encode_index(repo.envelope, packs, supersedes=old_ids)
    name = f"index/{storage_id(data).hex()}"
    repo.store.put(name, data)
    report.index_written = name
    for old in old_index:
        if old == name:
            continue
        try:
            repo.store.delete(old)
            report.index_removed += 1
        except ObjectLocked:
            report.index_kept.append(old)


@dataclass
class PackSalvage:
    """What `salvage_packs` did."""

    packs: list[str] = field(default_factory=list)
    """The damaged packs handled (deleted unless under Object Lock)."""
    blobs_saved: int = 0
    bytes_saved: int = 0
    blobs_lost: list[str] = field(default_factory=list)
    """Ids (hex) of blobs that could not be read: no longer indexed."""
    packs_kept: list[str] = field(default_factory=list)
    """Damaged packs that could not be deleted (Object Lock); no longer indexed."""


def resolve_pack_ids(repo: Repository, refs: list[str]) -> list[bytes]:
    """The stored packs that pack id prefixes (hex, any case) name, each exactly one; a
    `UsageError` for a prefix that names none or several."""
    stored = [info.name.rsplit("/", 1)[1] for info in repo.store.list(PACKS_PREFIX)]
    chosen: list[bytes] = []
    for ref in refs:
        ref = ref.lower()
        matches = [s for s in stored if s.startswith(ref)] if ref else []
        if len(matches) != 1:
            raise UsageError(
                f"{ref!r} matches {len(matches)} stored packs; give a unique pack id prefix"
            )
        chosen.append(bytes.fromhex(matches[0]))
    return chosen


def salvage_packs(
    repo: Repository,
    pack_ids: list[bytes],
    *,
    dry_run: bool = False,
    notice: Callable[[str], None] = lambda _m: None,
) -> PackSalvage:
    """Copy the readable blobs of ``pack_ids`` into new packs, then write an index without
    the damaged packs and delete them. The index must be loaded. A pack's blobs are taken
    from the index, or from its header when the index does not list it."""
    report = PackSalvage()
    known = repo.index.packs()
    targets = _salvage_targets(repo, known, pack_ids)
    report.packs.extend(pack_name(pack_id) for pack_id in pack_ids)
    elsewhere = {b.blob_id for p, blobs in known.items() if p not in targets for b in blobs}
    writer = None if dry_run else repo.writer()
    saved: set[bytes] = set()
    try:
        for pack_id, blobs in targets.items():
            data = _read_whole(repo, pack_id)
            for b in blobs:
                if b.blob_id in saved or b.blob_id in elsewhere:
                    continue
                sealed = data[b.offset : b.offset + b.length] if data is not None else b""
                entry = IndexEntry(pack_id, b.offset, b.length, b.raw_length, b.type)
                try:
                    if len(sealed) != b.length:
                        raise IntegrityError("cut short")
                    repo.open_blob(entry, b.blob_id, sealed)
                except IntegrityError:
                    report.blobs_lost.append(b.blob_id.hex())
                    continue
                if writer is not None:
                    writer.add_sealed(BlobType(b.type), b.blob_id, sealed, b.raw_length)
                saved.add(b.blob_id)
                report.blobs_saved += 1
                report.bytes_saved += b.raw_length
        if writer is not None:
            writer.flush()
    finally:
        if writer is not None:
            writer.close(commit=False)
    lost = set(report.blobs_lost) - {b.hex() for b in saved}
    report.blobs_lost = sorted(lost)
    if dry_run:
        return report
    # The new packs are indexed (flush wrote an index file); now an index without the
    # damaged packs replaces every older file, then the damaged packs go.
    remaining = {p: b for p, b in repo.index.packs().items() if p not in targets}
    old_index = repo.index_names()
    _write_index(repo, sorted(remaining.items()), old_index, IndexRepair())
    for pack_id in targets:
        try:
            repo.store.delete(pack_name(pack_id))
        except ObjectLocked:
            report.packs_kept.append(pack_name(pack_id))
    if report.blobs_lost:
        notice(
            f"{len(report.blobs_lost)} blob(s) could not be read and are no longer indexed; "
            "a backup of the same data stores them again, `stackvault repair snapshots` "
            "rewrites the snapshots that used them"
        )
    return report


def _salvage_targets(
    repo: Repository, known: dict[bytes, list[PackedBlob]], pack_ids: list[bytes]
) -> dict[bytes, list[PackedBlob]]:
    """The blobs of each pack to salvage: as ``known`` (the index) lists them, else as the
    pack's header does. `IntegrityError` for a pack neither indexed nor stored, or
    unindexed with an unreadable header (nothing then tells its blobs apart)."""
    listing = {info.name: info.size for info in repo.store.list(PACKS_PREFIX)}
    targets: dict[bytes, list[PackedBlob]] = {}
    for pack_id in pack_ids:
        name = pack_name(pack_id)
        blobs = known.get(pack_id)
        if blobs is None:
            if name not in listing:
                raise IntegrityError(f"pack {pack_id.hex()[:12]} is neither indexed nor stored")
            got = load_pack_headers(repo.store, repo.envelope, [(name, listing[name])])
            header = got.get(name)
            if not isinstance(header, list):
                raise IntegrityError(
                    f"pack {pack_id.hex()[:12]}: the index does not list it and its header "
                    f"cannot be read ({header}); its blobs cannot be told apart",
                    hint="delete it by hand if nothing else can be done; `repair index` "
                    "and `repair snapshots` then account for what it held",
                )
            blobs = header
        targets[pack_id] = blobs
    return targets


def _read_whole(repo: Repository, pack_id: bytes) -> bytes | None:
    """A pack's bytes, or None if it is gone (its blobs are then lost)."""
    try:
        return repo.store.get(pack_name(pack_id))
    except ObjectNotFound:
        return None


REPAIRED_TAG = "repaired"
WHOLE_DIRECTORY = "/ (whole directory)"


@dataclass
class SnapshotRepair:
    """One snapshot that references lost data, and its repaired replacement."""

    snapshot: str
    """The damaged snapshot's id."""
    lost: list[str]
    """Paths whose data is lost: files cut down to their readable blobs, directories whose
    listing is lost (``…/ (whole directory)``, restored empty)."""
    new_id: str | None = None
    """The repaired snapshot (None in a dry run)."""
    forgotten: bool = False


@dataclass
class _Frame:
    tree_id: bytes
    nodes: list[Node] | None = None


def repair_snapshots(
    repo: Repository,
    snapshots: list[Snapshot],
    *,
    forget: bool = False,
    dry_run: bool = False,
) -> list[SnapshotRepair]:
    """Write a repaired copy of each of ``snapshots`` that references data the repository
    no longer holds (a blob the index does not list, or whose pack is gone).

    In the copy a file keeps the blobs that exist, in order (it is shorter, and its SHA-256 is
    dropped so a restore checks its blobs instead); a directory whose tree cannot be read is
    empty. The copy keeps the original's time, host, paths and tags, adds the tag
    ``repaired``, is marked incomplete and lists each loss as a problem. The original stays
    unless ``forget``. Snapshots that lose nothing are left alone and not reported. The
    index must be loaded; run `salvage_packs` and `rebuild_index` first so damaged and
    missing blobs are known as such."""
    stored = {info.name for info in repo.store.list(PACKS_PREFIX)}

    def available(blob_id: bytes) -> bool:
        entry = repo.index.get(blob_id)
        return entry is not None and pack_name(entry.pack_id) in stored

    memo: dict[bytes, tuple[bytes, list[str]]] = {}
    writer = None if dry_run else repo.writer()
    out: list[SnapshotRepair] = []
    try:
        for snap in snapshots:
            new_root, lost = _repair_tree(repo, writer, snap.tree, available, memo)
            if not lost:
                continue
            out.append(SnapshotRepair(snap.id, lost))
        if writer is not None:
            writer.flush()
    finally:
        if writer is not None:
            writer.close(commit=False)
    if dry_run:
        return out
    by_id = {s.id: s for s in snapshots}
    for item in out:
        snap = by_id[item.snapshot]
        new_root = memo[snap.tree][0]
        repaired = replace(
            snap,
            tree=new_root,
            tags=[*snap.tags, *([] if REPAIRED_TAG in snap.tags else [REPAIRED_TAG])],
            complete=False,
            problems=[
                *snap.problems,
                *(
                    {"path": p, "message": f"lost (repaired from snapshot {snap.short_id})"}
                    for p in item.lost
                ),
            ],
            program="",
            id="",
        )
        item.new_id = repo.save_snapshot(repaired)
        if forget:
            repo.remove_snapshot(snap.id)
            item.forgotten = True
    return out


def _repair_tree(
    repo: Repository,
    writer: BlobWriter | None,
    root: bytes,
    available: Callable[[bytes], bool],
    memo: dict[bytes, tuple[bytes, list[str]]],
) -> tuple[bytes, list[str]]:
    """The id of ``root`` rewritten without lost data, and the lost paths below it.
    Iterative (trees may nest deeper than Python's recursion limit) with a stack of its own,
    not `walk_tree_nodes`: a tree is rewritten after its subtrees; each tree is repaired
    once (``memo``: tree id → new id and lost paths relative to it)."""
    stack = [_Frame(root)]
    while stack:
        frame = stack[-1]
        if frame.tree_id in memo:
            stack.pop()
            continue
        if frame.nodes is None:
            try:
                frame.nodes = repo.load_tree(frame.tree_id)
            except IntegrityError:
                memo[frame.tree_id] = (_store_tree(writer, []), [WHOLE_DIRECTORY])
                stack.pop()
                continue
        pending = next(
            (
                n.subtree
                for n in frame.nodes
                if n.type == "dir" and n.subtree is not None and n.subtree not in memo
            ),
            None,
        )
        if pending is not None:
            stack.append(_Frame(pending))
            continue
        nodes: list[Node] = []
        lost: list[str] = []
        for node in frame.nodes:
            if node.type == "dir" and node.subtree is not None:
                new_id, below = memo[node.subtree]
                lost.extend(f"/{node.name}{p}" for p in below)
                if new_id != node.subtree:
                    node = replace(node, subtree=new_id)
            elif node.type == "file" and not all(map(available, node.content)):
                kept = [b for b in node.content if available(b)]
                size = 0
                for b in kept:
                    entry = repo.index.get(b)
                    size += entry.raw_length if entry is not None else 0
                node = replace(node, content=kept, size=size, sha256="")
                lost.append(f"/{node.name}")
            nodes.append(node)
        new_id = _store_tree(writer, nodes) if lost else frame.tree_id
        memo[frame.tree_id] = (new_id, lost)
        stack.pop()
    return memo[root]


def _store_tree(writer: BlobWriter | None, nodes: list[Node]) -> bytes:
    """Store a tree blob and return its id; in a dry run (no writer) store nothing and return
    a placeholder."""
    data = encode_tree(nodes)
    if writer is None:
        return storage_id(data)
    blob_id, _added = writer.save(BlobType.TREE, data)
    return blob_id
