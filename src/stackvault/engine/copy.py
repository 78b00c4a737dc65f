"""Copying snapshots between repositories (engine layer): `stackvault copy`, for 3-2-1 tiers.

Contract of `CopyJob.run` (both repositories open, their indexes loaded, the source locked
shared and the destination locked shared for writing, like a backup — the caller does that):

* **What is copied.** Every given source snapshot whose backup the destination does not hold
  yet. A backup is recognised by its *origin* (`Snapshot.origin`): a copy records the id of the
  snapshot it copies in ``original`` (or that snapshot's own ``original``, along a chain), so a
  second run copies nothing, and copying back to where a snapshot came from, or along two paths
  (A → B → C and A → C), never duplicates it.
* **What is transferred.** Only blobs the destination lacks are stored, through the
  destination's `BlobWriter`. Blob ids are keyed with each repository's own id key (FORMAT.md
  §2), so in general the same bytes have different ids in the two repositories: each blob is
  read from the source, authenticated, given its destination id, and stored only if the
  destination index lacks that id; trees are rewritten bottom-up with the translated ids
  (files' ``content``, directories' ``subtree``) and every other field kept as it was. Chunk
  boundaries are the source's (blobs are not re-chunked). When both repositories share their
  id key (``init --copy-chunker-params-from``), ids are the same in both: trees are copied
  unchanged and a blob the destination index lists is not even downloaded. From a remote
  source (S3) the blobs a directory needs are read a span of nearby blobs of a pack per
  request (`stackvault.repo.spans`), not one request each; a damaged blob is still named.
* **Incremental copies.** The destination's copy of the previous snapshot of the same host and
  paths (if it holds one) is used as a parent: a directory unchanged since then is taken over
  whole without reading it, and blobs of that parent's files are known to be present under
  their destination ids, so they are not downloaded again even when the id keys differ.
* **Commit order**, per snapshot: its packs, then an index naming them, then the snapshot.
  A failure or interruption saves no snapshot whose data is not complete; snapshots copied
  before it stay. Packs already stored are indexed, so the next run does not transfer them
  again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from stackvault.engine.copyresult import CopyResult, CopyStats, SnapshotCopy
from stackvault.engine.progress import NullProgress, Progress
from stackvault.errors import IntegrityError, Interrupted, SnapshotNotFound, StackvaultError
from stackvault.repo.blob import BlobType, IndexEntry
from stackvault.repo.repository import Repository
from stackvault.repo.selection import SnapshotFilter
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.spans import by_pack, cut_spans, read_span
from stackvault.repo.tree import Node, decode_tree, rewrite_tree
from stackvault.repo.writer import BlobWriter


def select_snapshots(
    repo: Repository,
    refs: Sequence[str] = (),
    *,
    host: str | None = None,
    tags: Iterable[str] = (),
    paths: Iterable[str] = (),
) -> list[Snapshot]:
    """The snapshots of ``repo`` to copy, oldest first, each once.

    Snapshots are first filtered by ``host``, ``tags`` (a snapshot must carry every tag
    given) and ``paths`` (it must include every one), then ``refs`` (id prefixes or
    ``latest``, resolved among the filtered ones, so ``latest`` is the newest that matches)
    pick some of them; no ``refs`` means all of them.
    Raises `SnapshotNotFound` for a reference that matches nothing.
    """
    chosen = SnapshotFilter.of(host, tags, paths)
    snaps = chosen.apply(repo.list_snapshots())
    if not refs:
        return snaps
    if not snaps:
        what = f"{chosen.describe()} " if chosen.narrows else ""
        raise SnapshotNotFound(
            f"no snapshot {what}exists in the source repository",
            hint="list them with `stackvault --repo SOURCE snapshots`",
        )
    picked = {repo.find_snapshot(ref, snaps).id for ref in refs}
    return [s for s in snaps if s.id in picked]


@dataclass(frozen=True)
class _Hint:
    """One directory of a snapshot the destination already holds: its tree id in the source
    and in the destination."""

    source: bytes
    dest: bytes


_Transfer = tuple[bytes, bool, int]
"""A stored blob: its destination id, whether it was added (not already present), its size."""
_T = TypeVar("_T")


def _first(ref: tuple[IndexEntry, bytes, Future[_Transfer]]) -> IndexEntry:
    return ref[0]


def _settle(span: list[tuple[IndexEntry, bytes, Future[_Transfer]]], job: Future[None]) -> None:
    """When a span's job has ended (or was cancelled), give its failure to every blob of it
    still without an outcome, so that nobody waits for them for ever."""
    error: BaseException
    if job.cancelled():
        error = Interrupted("copy interrupted")
    else:
        error = job.exception() or Interrupted("copy interrupted")
    for _entry, _id, fut in span:
        if not fut.done():
            fut.set_exception(error)


@dataclass
class _Walk:
    """State of copying one snapshot (main thread only)."""

    stats: CopyStats
    seen: set[bytes] = field(default_factory=set)
    """Source data blob ids this snapshot has counted already."""
    pending: dict[bytes, Future[_Transfer]] = field(default_factory=dict)
    """Source data blob ids being transferred."""


@dataclass
class _TreeCopy:
    """A source tree being copied (on `CopyJob._tree`'s stack): its nodes, the same directory
    in the previous copy (by name, in the source and the destination), its files' blobs
    being transferred, and its subdirectories still to copy."""

    src_id: bytes
    plain: bytes
    nodes: list[Node]
    prev_src: dict[str, Node]
    prev_dst: dict[str, Node]
    mine: list[bytes]
    dirs: Iterator[Node]
    mapping: dict[bytes, bytes] = field(default_factory=dict)
    """Source id → destination id of the subtrees copied so far (and, at the end, of the
    files' blobs)."""


class CopyJob:
    """Copies snapshots from ``source`` into ``dest`` (see the module docstring for the
    contract). Create, then call `run` once. `stop` may be called from another thread."""

    def __init__(
        self,
        source: Repository,
        dest: Repository,
        *,
        progress: Progress | None = None,
        workers: int | None = None,
    ) -> None:
        self.source = source
        self.dest = dest
        self.progress: Progress = progress or NullProgress()
        self.shared_ids = dest.shares_blob_ids(source)
        access = source.access
        self._in_spans = access.copy_in_spans
        """Blobs are read a span of a pack at a time (`_submit_all`)."""
        self._workers = workers or access.copy_readers
        # Reads from the source not yet handed to the writer: bounded, so a slow destination
        # throttles the downloads (each holds up to one chunk in memory, or from a remote
        # source one span of up to `SPAN_MAX` while it runs).
        self._slots = threading.BoundedSemaphore(self._workers * 2)
        self._stop = threading.Event()
        self._trees: dict[bytes, bytes] = {}
        """Source tree id → destination tree id, for trees complete in the destination."""
        self._ids: dict[bytes, bytes] = {}
        """Source data blob id → destination id, for blobs the destination holds (only when
        the id keys differ; otherwise ids are the same)."""

    def stop(self) -> None:
        """Ask the run to stop at the next blob (from a signal handler or another thread)."""
        self._stop.set()

    # --- the run ----------------------------------------------------------------------------

    def run(
        self,
        snapshots: Sequence[Snapshot],
        *,
        on_snapshot: Callable[[SnapshotCopy], None] | None = None,
    ) -> CopyResult:
        """Copy ``snapshots`` (source snapshots, e.g. from `select_snapshots`), oldest first;
        ``on_snapshot`` hears about each as soon as it is saved or skipped.

        Raises `Interrupted` (after `stop` or Ctrl-C) or the error that stopped it; either way
        the snapshots reported to ``on_snapshot`` are complete in the destination and nothing
        else was recorded.
        """
        by_origin = {s.origin: s for s in self.dest.list_snapshots()}
        source_snaps = self.source.list_snapshots()
        results: list[SnapshotCopy] = []
        writer = self.dest.writer()
        pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="copy")
        committed = False
        try:
            for snap in sorted(snapshots, key=lambda s: (s.time, s.id)):
                existing = by_origin.get(snap.origin)
                if existing is not None:
                    outcome = SnapshotCopy(snap, existing=existing)
                else:
                    outcome = self._copy_one(snap, writer, pool, source_snaps, by_origin)
                    assert outcome.copy is not None
                    by_origin[snap.origin] = outcome.copy
                results.append(outcome)
                if on_snapshot is not None:
                    on_snapshot(outcome)
            committed = True
        except KeyboardInterrupt as exc:
            self._stop.set()
            raise Interrupted(self._interrupted(results)) from exc
        except Interrupted as exc:
            self._stop.set()
            raise Interrupted(self._interrupted(results)) from exc
        finally:
            if not committed:
                self._stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            writer.close(commit=committed)
        self.progress.close()
        return CopyResult(results, self.shared_ids)

    @staticmethod
    def _interrupted(results: list[SnapshotCopy]) -> str:
        done = sum(1 for r in results if r.copy is not None)
        return (
            f"copy interrupted; {done} snapshot(s) were copied completely and the one in "
            "progress was not saved"
        )

    def _copy_one(
        self,
        snap: Snapshot,
        writer: BlobWriter,
        pool: ThreadPoolExecutor,
        source_snaps: list[Snapshot],
        by_origin: dict[str, Snapshot],
    ) -> SnapshotCopy:
        walk = _Walk(CopyStats())
        stored_before = writer.stats.stored_added
        try:
            tree = self._tree(
                snap.tree, self._previous(snap, source_snaps, by_origin), walk, pool, writer
            )
            writer.flush()
        except IntegrityError as exc:
            raise IntegrityError(
                f"cannot copy snapshot {snap.short_id}: {exc.message}",
                hint="run `stackvault check --read-data` on the source repository",
            ) from exc
        walk.stats.bytes_stored = writer.stats.stored_added - stored_before
        parent = None
        if snap.parent is not None:
            src_parent = next((s for s in source_snaps if s.id == snap.parent), None)
            dst_parent = by_origin.get(src_parent.origin) if src_parent is not None else None
            parent = dst_parent.id if dst_parent is not None else None
        copy = Snapshot(
            time=snap.time,
            tree=tree,
            paths=list(snap.paths),
            hostname=snap.hostname,
            username=snap.username,
            tags=list(snap.tags),
            parent=parent,
            program=snap.program,
            complete=snap.complete,
            problems=list(snap.problems),
            summary=dict(snap.summary),
            original=snap.origin,
            artifacts=[a.copy() for a in snap.artifacts],
            stack=dict(snap.stack) if snap.stack is not None else None,
        )
        self.dest.save_snapshot(copy)  # last: commit order (FORMAT.md §10)
        return SnapshotCopy(snap, copy=copy, stats=walk.stats)

    @staticmethod
    def _previous(
        snap: Snapshot, source_snaps: list[Snapshot], by_origin: dict[str, Snapshot]
    ) -> _Hint | None:
        """The root trees of the newest source snapshot of the same host and paths that the
        destination already holds (at or before ``snap``'s time if there is one)."""
        paths = sorted(snap.paths)
        candidates = [
            s
            for s in source_snaps
            if s.origin != snap.origin
            and s.origin in by_origin
            and s.hostname == snap.hostname
            and sorted(s.paths) == paths
        ]
        if not candidates:
            return None
        before = [s for s in candidates if s.time <= snap.time]
        prev = (
            max(before, key=lambda s: (s.time, s.id))
            if before
            else min(candidates, key=lambda s: (s.time, s.id))
        )
        return _Hint(prev.tree, by_origin[prev.origin].tree)

    # --- trees ------------------------------------------------------------------------------

    def _tree(
        self,
        src_id: bytes,
        hint: _Hint | None,
        walk: _Walk,
        pool: ThreadPoolExecutor,
        writer: BlobWriter,
    ) -> bytes:
        """Make the source tree ``src_id`` and everything below it present in the destination;
        return its destination id. Depth first, a tree stored after its children, with a
        stack of its own rather than recursion (trees may be deeper than Python's recursion
        limit) and not `walk_tree_nodes`: a tree is rewritten once its subtrees' destination
        ids are known, each tree id once, and a directory unchanged since the previous copy
        is not read at all."""
        first = self._enter_tree(src_id, hint, walk, pool, writer)
        if isinstance(first, bytes):
            return first
        stack = [first]
        while True:
            visit = stack[-1]
            node = next(visit.dirs, None)
            if node is not None:
                assert node.subtree is not None
                child_hint = self._child_hint(node, visit.prev_src, visit.prev_dst)
                child = self._enter_tree(node.subtree, child_hint, walk, pool, writer)
                if isinstance(child, bytes):
                    visit.mapping[node.subtree] = child
                else:
                    stack.append(child)
                continue
            new_id = self._leave_tree(visit, walk, writer)
            stack.pop()
            if not stack:
                return new_id
            stack[-1].mapping[visit.src_id] = new_id

    def _enter_tree(
        self,
        src_id: bytes,
        hint: _Hint | None,
        walk: _Walk,
        pool: ThreadPoolExecutor,
        writer: BlobWriter,
    ) -> bytes | _TreeCopy:
        """The destination id of tree ``src_id`` if it is complete there already; else the
        tree to copy, with the transfers of its files' blobs the destination lacks started."""
        if self._stop.is_set():
            raise Interrupted("copy interrupted")
        known = self._trees.get(src_id)
        if known is not None:
            walk.stats.trees_reused += 1
            return known
        if hint is not None and hint.source == src_id and self.dest.has_blob(hint.dest):
            # Unchanged since a snapshot the destination holds: its copy there is complete.
            self._trees[src_id] = hint.dest
            walk.stats.trees_reused += 1
            return hint.dest
        plain = self.source.tree_bytes(src_id)
        nodes = decode_tree(plain)
        prev_src, prev_dst = self._hint_nodes(hint)
        if not self.shared_ids:
            self._learn_ids(prev_src, prev_dst)
        mine: list[bytes] = []
        for node in nodes:
            if node.type != "file":
                continue
            self.progress.advance(files=1)
            for blob_id in node.content:
                if blob_id in walk.seen:
                    continue
                walk.seen.add(blob_id)
                present = blob_id if self.shared_ids else self._ids.get(blob_id)
                if present is not None and self.dest.has_blob(present):
                    self._count_present(walk.stats, present)
                else:
                    mine.append(blob_id)
        self._submit_all(pool, writer, mine, walk)
        dirs = [n for n in nodes if n.type == "dir" and n.subtree is not None]
        return _TreeCopy(src_id, plain, nodes, prev_src, prev_dst, mine, iter(dirs))

    def _leave_tree(self, visit: _TreeCopy, walk: _Walk, writer: BlobWriter) -> bytes:
        """Store a tree whose subdirectories are all in the destination (``visit.mapping``
        holds their ids) once its files' blobs are; its destination id."""
        mapping = visit.mapping
        for blob_id in visit.mine:
            self._resolve(blob_id, walk)
        if self.shared_ids:
            new_plain, new_id = visit.plain, visit.src_id  # same ids in both: the same tree
        else:
            for node in visit.nodes:
                for blob_id in node.content:
                    mapping[blob_id] = self._resolve(blob_id, walk)
            new_plain = rewrite_tree(visit.plain, mapping)
            new_id = self.dest.blob_id(new_plain)
        _id, added = writer.save(BlobType.TREE, new_plain, new_id)
        if added:
            walk.stats.blobs_copied += 1
            walk.stats.bytes_copied += len(new_plain)
        else:
            walk.stats.blobs_present += 1
            walk.stats.bytes_present += len(new_plain)
        self._trees[visit.src_id] = new_id
        return new_id

    def _hint_nodes(self, hint: _Hint | None) -> tuple[dict[str, Node], dict[str, Node]]:
        """The same directory in the snapshot the destination holds, by name, as the source
        and the destination list it; empty if there is none or it cannot be read."""
        if hint is None or not self.dest.has_blob(hint.dest):
            return {}, {}
        try:
            prev_src = {n.name: n for n in self.source.load_tree(hint.source)}
            prev_dst = {n.name: n for n in self.dest.load_tree(hint.dest)}
        except StackvaultError as exc:
            # Only an optimisation: without it, the directory is copied blob by blob.
            self.progress.notice(f"notice: not using the previous copy of a directory: {exc}")
            return {}, {}
        return prev_src, prev_dst

    def _learn_ids(self, prev_src: dict[str, Node], prev_dst: dict[str, Node]) -> None:
        """Record the destination ids of the previous copy's file blobs: the same file in the
        two copies lists its blobs in the same order."""
        for name, a in prev_src.items():
            b = prev_dst.get(name)
            if a.type != "file" or b is None or not _same_shape(a, b):
                continue
            for src_id, dst_id in zip(a.content, b.content, strict=True):
                if src_id not in self._ids and self.dest.has_blob(dst_id):
                    self._ids[src_id] = dst_id

    @staticmethod
    def _child_hint(
        node: Node, prev_src: dict[str, Node], prev_dst: dict[str, Node]
    ) -> _Hint | None:
        a, b = prev_src.get(node.name), prev_dst.get(node.name)
        if (
            a is None
            or b is None
            or a.type != "dir"
            or a.subtree is None
            or b.subtree is None
            or not _same_shape(a, b)
        ):
            return None
        return _Hint(a.subtree, b.subtree)

    # --- data blobs -------------------------------------------------------------------------

    def _submit_all(
        self, pool: ThreadPoolExecutor, writer: BlobWriter, blob_ids: list[bytes], walk: _Walk
    ) -> None:
        """Start transferring ``blob_ids`` (a directory's files' blobs the destination
        lacks): from a remote source a span of nearby blobs of a pack per request
        (`stackvault.repo.spans`), else blob by blob."""
        if not self._in_spans:
            for blob_id in blob_ids:
                walk.pending[blob_id] = self._submit(pool, self._transfer, writer, blob_id)
            return
        located: list[tuple[IndexEntry, bytes, Future[_Transfer]]] = []
        for blob_id in blob_ids:
            entry = self.source.index.get(blob_id)
            if entry is None:  # read on its own, which reports it
                walk.pending[blob_id] = self._submit(pool, self._transfer, writer, blob_id)
                continue
            fut: Future[_Transfer] = Future()
            walk.pending[blob_id] = fut
            located.append((entry, blob_id, fut))
        for refs in by_pack(located, _first).values():
            for span in cut_spans(refs, _first):
                job = self._submit(pool, self._transfer_span, writer, span)
                job.add_done_callback(partial(_settle, span))

    def _submit(self, pool: ThreadPoolExecutor, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        self._slots.acquire()
        try:
            return pool.submit(self._released, fn, *args)
        except BaseException:
            self._slots.release()
            raise

    def _released(self, fn: Callable[..., _T], *args: Any) -> _T:
        try:
            return fn(*args)
        finally:
            self._slots.release()

    def _transfer(self, writer: BlobWriter, src_id: bytes) -> _Transfer:
        """Read one data blob from the source and store it in the destination unless there."""
        if self._stop.is_set():
            raise Interrupted("copy interrupted")
        return self._store(writer, src_id, self.source.load_blob(src_id))

    def _transfer_span(
        self, writer: BlobWriter, span: list[tuple[IndexEntry, bytes, Future[_Transfer]]]
    ) -> None:
        """Read the blobs of ``span`` with one request and store each; each blob's future
        gets its outcome (a damaged blob fails only its own)."""
        if self._stop.is_set():
            raise Interrupted("copy interrupted")
        data = read_span(self.source.store, [entry for entry, _id, _fut in span])
        for entry, src_id, fut in span:
            try:
                if self._stop.is_set():
                    raise Interrupted("copy interrupted")
                plain = self.source.span_blob(data, entry, src_id)
                fut.set_result(self._store(writer, src_id, plain))
            except IntegrityError as exc:
                fut.set_exception(exc)
            # any other error ends the span: `_settle` gives it to the blobs not done

    def _store(self, writer: BlobWriter, src_id: bytes, plain: bytes | memoryview) -> _Transfer:
        dst_id = src_id if self.shared_ids else self.dest.blob_id(plain)
        _id, added = writer.save(BlobType.DATA, plain, dst_id)
        if added:
            self.progress.advance(bytes_=len(plain))
        return dst_id, added, len(plain)

    def _resolve(self, src_id: bytes, walk: _Walk) -> bytes:
        """The destination id of a data blob of this snapshot, waiting for its transfer."""
        fut = walk.pending.pop(src_id, None)
        if fut is not None:
            dst_id, added, size = fut.result()
            if added:
                walk.stats.blobs_copied += 1
                walk.stats.bytes_copied += size
            else:
                walk.stats.blobs_present += 1
                walk.stats.bytes_present += size
            if not self.shared_ids:
                self._ids[src_id] = dst_id
            return dst_id
        return src_id if self.shared_ids else self._ids[src_id]

    def _count_present(self, stats: CopyStats, dst_id: bytes) -> None:
        entry = self.dest.index.get(dst_id)
        stats.blobs_present += 1
        stats.bytes_present += entry.raw_length if entry is not None else 0


def _same_shape(a: Node, b: Node) -> bool:
    """True if two nodes are the same entry of a backup as two repositories store it: equal in
    everything but the blob ids, with as many content blobs."""
    ja, jb = a.to_json(), b.to_json()
    for doc in (ja, jb):
        doc.pop("content", None)
        doc.pop("subtree", None)
    return ja == jb and len(a.content) == len(b.content)
