"""Repository verification (repository layer): structure, and optionally every byte of data.

`check` answers two questions: is anything damaged or missing, and if so, which snapshots and
files does it affect? Without ``read_data`` it verifies the index files, that every indexed
pack exists with a plausible size, every snapshot and every tree. With ``read_data`` (or a
subset) it also reads packs, checks their hash, header and every blob's authentication tag and
keyed id. Unreferenced packs (left by a crash) are notices, not errors. Run records
(``runs/``) are read and authenticated; a damaged one is an error that calls for no repair.

A damaged pack is named with the snapshots that use its blobs (`CheckReport.pack_users`), as
far as the index still tells which blobs it holds: those are the snapshots its repair keeps
whole (or, for blobs that no longer read, the ones `repair snapshots` will cut down).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from stackvault.errors import IntegrityError, ObjectNotFound, StackvaultError
from stackvault.repo.blob import IndexEntry
from stackvault.repo.pack import PACKS_PREFIX, PackedBlob, pack_name, read_pack_header, storage_id
from stackvault.repo.repository import Repository
from stackvault.repo.tree import Node


@dataclass
class CheckProblem:
    """One damaged or missing thing."""

    kind: str
    name: str
    message: str


@dataclass
class CheckReport:
    errors: list[CheckProblem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    affected: dict[str, list[str]] = field(default_factory=dict)
    """Snapshot id → paths of files (or directories) it can no longer restore."""
    snapshots: int = 0
    runs: int = 0
    """Run records read and authenticated (FORMAT.md §14)."""
    trees: int = 0
    packs: int = 0
    packs_read: int = 0
    blobs_read: int = 0
    bytes_read: int = 0
    damaged_packs: set[str] = field(default_factory=set)
    """Packs read whose content, header or blobs are damaged (names)."""
    pack_users: dict[str, list[str]] = field(default_factory=dict)
    """Damaged pack (name) → ids of the snapshots that use one of its blobs (a file's data or
    a directory's tree), as the index lists the pack's blobs; oldest snapshot first."""

    @property
    def ok(self) -> bool:
        return not self.errors

    def repairs(self) -> list[str]:
        """The repair commands to run, in order, for what was found (FORMAT.md §12)."""
        out: list[str] = []
        if self.damaged_packs:
            ids = " ".join(sorted(n.rsplit("/", 1)[1][:16] for n in self.damaged_packs))
            out.append(f"stackvault repair packs {ids}")
        if any(
            e.kind == "index"
            or (e.kind == "pack" and e.name not in self.damaged_packs)
            or (e.kind == "blob" and "not in the index" in e.message)
            for e in self.errors
        ):
            out.append("stackvault repair index")
        if self.affected:
            out.append(
                "stackvault repair snapshots (after backing up the same data again, if it "
                "still exists: that stores the lost blobs again and heals the snapshots)"
            )
        return out


class Checker:
    """Runs a check. ``subset`` is a fraction in (0, 1] of packs to read, drawn at random
    (implies read_data); ``packs``, a rule that picks the packs to read by their id (implies
    read_data; e.g. a rotating slice, so that every pack is read once per period)."""

    def __init__(
        self,
        repo: Repository,
        *,
        read_data: bool = False,
        subset: float | None = None,
        progress: Callable[[int], None] | None = None,
        rng: random.Random | None = None,
        packs: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.repo = repo
        self.read_data = read_data or subset is not None or packs is not None
        self.subset = subset
        self.packs = packs
        self.progress = progress
        self.rng = rng or random.Random()
        self.report = CheckReport()
        self._bad_blobs: dict[bytes, str] = {}
        self._tree_memo: dict[bytes, list[str]] = {}

    def _error(self, kind: str, name: str, message: str) -> None:
        self.report.errors.append(CheckProblem(kind, name, message))

    def run(self) -> CheckReport:
        self.repo.load_index(on_error=lambda n, e: self._error("index", n, str(e)))
        self._check_packs()
        if self.read_data:
            self._read_packs()
        self._check_snapshots()
        self._check_runs()
        return self.report

    # --- packs --------------------------------------------------------------------------------

    def _check_packs(self) -> None:
        stored = {info.name: info.size for info in self.repo.store.list(PACKS_PREFIX)}
        names: set[str] = set()
        for pack_id, blobs in self.repo.index.iter_packs():
            name = pack_name(pack_id)
            names.add(name)
            size = stored.get(name)
            if size is None:
                self._error("pack", name, "pack is missing")
                self._mark(blobs, f"pack {pack_id.hex()[:12]} is missing")
                continue
            end = max((b.offset + b.length for b in blobs), default=0)
            if size < end:
                self._error("pack", name, f"pack is truncated ({size} bytes, index needs {end})")
                self._mark([b for b in blobs if b.offset + b.length > size], "pack truncated")
        self.report.packs = len(names)
        for name in sorted(set(stored) - names):
            self.report.notices.append(
                f"{name} is not referenced by the index (left by an interrupted run, or "
                "listed only in a damaged index file; `stackvault prune` removes it once no "
                "snapshot uses it, `stackvault repair index` indexes it again)"
            )

    def _mark(self, blobs: list[PackedBlob], why: str) -> None:
        for b in blobs:
            self._bad_blobs[b.blob_id] = why

    def _read_packs(self) -> None:
        indexed = sorted(self.repo.index.pack_ids())
        if self.packs is not None:
            indexed = [pack_id for pack_id in indexed if self.packs(pack_id)]
        elif self.subset is not None and indexed:
            count = max(1, math.ceil(len(indexed) * self.subset))
            indexed = self.rng.sample(indexed, count)
        # Whole packs are held in memory while checked (`StoreAccess.check_readers`); their
        # blob lists are taken from the index one pack at a time.
        workers = self.repo.access.check_readers
        index = self.repo.index
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="check") as pool:
            for _ in pool.map(lambda p: self._read_pack(p, index.pack_blobs(p)), indexed):
                pass

    def _read_pack(self, pack_id: bytes, entries: list[PackedBlob]) -> None:
        name = pack_name(pack_id)
        if any(b.blob_id in self._bad_blobs for b in entries):
            return  # already reported missing or truncated
        try:
            data = self.repo.store.get(name)
        except ObjectNotFound:
            self._error("pack", name, "pack is missing")
            self._mark(entries, "pack missing")
            return
        except StackvaultError as exc:
            self._error("pack", name, f"cannot read pack: {exc}")
            self._mark(entries, "pack unreadable")
            return
        self.report.packs_read += 1
        self.report.bytes_read += len(data)
        if self.progress:
            self.progress(len(data))
        if storage_id(data).hex() != pack_id.hex():
            self._error("pack", name, "pack content does not match its name (bit rot?)")
            self.report.damaged_packs.add(name)
        try:
            header = read_pack_header(self.repo.envelope, data, len(data))
            in_header = {(h.blob_id, h.offset, h.length) for h in header}
            for b in entries:
                if (b.blob_id, b.offset, b.length) not in in_header:
                    self._error(
                        "pack",
                        name,
                        f"index lists blob {b.blob_id.hex()[:12]} that the pack header does not",
                    )
        except IntegrityError as exc:
            self._error("pack", name, f"pack header is damaged: {exc}")
            self.report.damaged_packs.add(name)
        view = memoryview(data)
        for b in entries:  # every entry came from the index, so each blob is indexed
            try:
                sealed = view[b.offset : b.offset + b.length]
                # Verify this copy, not whichever copy the index prefers.
                self.repo.open_blob(
                    IndexEntry(pack_id, b.offset, b.length, b.raw_length, b.type),
                    b.blob_id,
                    sealed,
                )
                self.report.blobs_read += 1
            except IntegrityError as exc:
                self._error("blob", b.blob_id.hex(), str(exc))
                self._bad_blobs[b.blob_id] = str(exc)
                self.report.damaged_packs.add(name)

    # --- snapshots and trees -------------------------------------------------------------------

    def _check_snapshots(self) -> None:
        snaps = self.repo.list_snapshots(on_error=lambda n, e: self._error("snapshot", n, str(e)))
        self.report.snapshots = len(snaps)
        for snap in snaps:
            damaged = self._damaged_below(snap.tree, "")
            if damaged:
                self.report.affected[snap.id] = damaged
        if self.report.damaged_packs:
            self._name_pack_users([snap.id for snap in snaps], [snap.tree for snap in snaps])

    def _name_pack_users(self, snap_ids: list[str], roots: list[bytes]) -> None:
        """`CheckReport.pack_users` of every damaged pack the index still lists: a second
        walk of the snapshots' trees, done only when a pack is damaged. Each tree's answer
        (the damaged packs used below it) is kept per tree id, so a shared tree is read once;
        a tree that cannot be read was reported by the first walk and counts for nothing."""
        in_pack: dict[bytes, str] = {}
        for pack_id, blobs in self.repo.index.packs().items():
            name = pack_name(pack_id)
            if name in self.report.damaged_packs:
                in_pack.update((b.blob_id, name) for b in blobs)
        if not in_pack:
            return
        memo: dict[bytes, frozenset[str]] = {}
        users: dict[str, list[str]] = {}
        for snap_id, root in zip(snap_ids, roots, strict=True):
            for name in sorted(_packs_below(self.repo, root, in_pack, memo)):
                users.setdefault(name, []).append(snap_id)
        self.report.pack_users = dict(sorted(users.items()))

    def _check_runs(self) -> None:
        """Every run record must authenticate and parse; a damaged one is an error of kind
        ``run`` (like a damaged snapshot), which calls for no repair: nothing depends on a
        record, so it can simply be deleted."""
        self.report.runs = len(
            self.repo.list_runs(
                on_error=lambda n, e: self._error(
                    "run", n, f"{e} (it holds only the history of one run: delete the object)"
                )
            )
        )

    def _damaged_below(self, tree_id: bytes, prefix: str) -> list[str]:
        """Paths (relative to ``prefix``) that cannot be restored in this tree. Depth first
        with a stack of its own (a snapshot may be deeper than Python's recursion limit), not
        `walk_tree_nodes`: a tree's result is known only after its subtrees', and is kept per
        tree id (``_tree_memo``), so a tree shared by snapshots or directories is read once."""
        first = self._enter_tree(tree_id)
        stack = [first] if isinstance(first, _TreeVisit) else []
        while stack:
            visit = stack[-1]
            if visit.next == len(visit.nodes):
                stack.pop()
                self._tree_memo[visit.tree_id] = visit.out
                if stack:
                    parent = stack[-1]
                    rel = f"/{parent.nodes[parent.next - 1].name}"
                    parent.out.extend(rel + p for p in visit.out)
                continue
            node = visit.nodes[visit.next]
            visit.next += 1
            rel = f"/{node.name}"
            if node.type == "dir" and node.subtree is not None:
                below = self._enter_tree(node.subtree)
                if isinstance(below, _TreeVisit):
                    stack.append(below)
                else:
                    visit.out.extend(rel + p for p in below)
            elif node.type == "file":
                for blob_id in node.content:
                    if blob_id in self._bad_blobs or blob_id not in self.repo.index:
                        if blob_id not in self.repo.index and blob_id not in self._bad_blobs:
                            self._bad_blobs[blob_id] = "not in the index"
                            self._error("blob", blob_id.hex(), "data blob is not in the index")
                        visit.out.append(rel)
                        break
        return [prefix + p for p in self._tree_memo[tree_id]]

    def _enter_tree(self, tree_id: bytes) -> _TreeVisit | list[str]:
        """A tree to visit, or the paths below it that cannot be restored if known already
        (or if the tree itself cannot be read)."""
        known = self._tree_memo.get(tree_id)
        if known is not None:
            return known
        try:
            nodes: list[Node] = self.repo.load_tree(tree_id)
            self.report.trees += 1
        except IntegrityError as exc:
            self._error("tree", tree_id.hex(), str(exc))
            known = self._tree_memo[tree_id] = ["/ (whole directory)"]
            return known
        return _TreeVisit(tree_id, nodes)


def _packs_below(
    repo: Repository, root: bytes, in_pack: dict[bytes, str], memo: dict[bytes, frozenset[str]]
) -> frozenset[str]:
    """The packs of ``in_pack`` (blob id → pack name) that the tree ``root`` uses: its own
    blob, its subtrees' and its files' data blobs. Depth first with a stack of its own; every
    tree's answer is kept in ``memo``."""
    stack: list[tuple[bytes, list[Node], set[str]]] = []

    def enter(tree_id: bytes) -> frozenset[str] | None:
        known = memo.get(tree_id)
        if known is not None:
            return known
        try:
            nodes = repo.load_tree(tree_id)
        except IntegrityError:
            memo[tree_id] = frozenset()
            return memo[tree_id]
        found = {in_pack[tree_id]} if tree_id in in_pack else set()
        for node in nodes:
            if node.type == "file":
                found.update(in_pack[b] for b in node.content if b in in_pack)
        stack.append((tree_id, [n for n in nodes if n.type == "dir" and n.subtree], found))
        return None

    first = enter(root)
    if first is not None:
        return first
    while stack:
        tree_id, dirs, found = stack[-1]
        if not dirs:
            stack.pop()
            memo[tree_id] = frozenset(found)
            if stack:
                stack[-1][2].update(found)
            continue
        subtree = dirs.pop().subtree
        assert subtree is not None
        below = enter(subtree)
        if below is not None:
            found.update(below)
    return memo[root]


@dataclass
class _TreeVisit:
    """A tree on `Checker._damaged_below`'s stack: its nodes, the next one to look at, and the
    paths found so far that cannot be restored."""

    tree_id: bytes
    nodes: list[Node]
    next: int = 0
    out: list[str] = field(default_factory=list)
