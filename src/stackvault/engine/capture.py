"""Application sources captured into a backup's artifact trees (engine layer).

`SourceCapture.run` captures each source of a backup, in order, into its own `TreeSink`
below ``/.stackvault/artifacts/NAME`` and builds the ``.stackvault`` node of the snapshot's
root. The failure semantics (FORMAT.md §8.2): a failing source alone fails the run; with
other sources or paths, it is recorded as a failed artifact (the snapshot becomes
incomplete) and nothing it stored is referenced. A capture whose data changed while it was
read (`SourceChanged`) is taken again from the start, `CAPTURE_TRIES` in all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stackvault.engine.artifacts import ARTIFACTS_DIR, RESERVED, TreeSink, artifact_path
from stackvault.engine.progress import Progress
from stackvault.errors import SourceChanged, SourceError, StackvaultError
from stackvault.fs.walk import Problem
from stackvault.records.artifact import ArtifactRecord
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node
from stackvault.repo.writer import BlobWriter
from stackvault.sources.contract import Source

CAPTURE_TRIES = 3
"""Tries of a source whose data changed while it was read (`SourceChanged`)."""

StoreStream = Callable[[object], tuple[list[bytes], str, int]]
"""Chunks, hashes and stores a byte stream: (blob ids, SHA-256 hex, size)."""


class SourceCapture:
    """The sources of one backup run, captured with the run's writer and callbacks:
    ``store_stream`` stores a file's bytes, ``save_tree`` a tree (its id), ``problem``
    records a failed artifact, ``stopping`` tells an interrupt."""

    def __init__(
        self,
        repo: Repository,
        writer: BlobWriter,
        progress: Progress,
        *,
        store_stream: StoreStream,
        save_tree: Callable[[list[Node]], bytes],
        problem: Callable[[Problem], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.repo = repo
        self.writer = writer
        self.progress = progress
        self.store_stream = store_stream
        self.save_tree = save_tree
        self.problem = problem
        self.stopping = stopping
        self.bytes = 0
        """Bytes of the artifacts captured completely."""

    def run(
        self,
        sources: list[Source],
        parent: Snapshot | None,
        records: list[ArtifactRecord],
        *,
        several: bool,
        alone: bool,
        before_cut: Callable[[], None] | None = None,
        cut_at: int = 0,
        captured: Callable[[str], None] | None = None,
    ) -> list[Node]:
        """Capture every source, appending its record to ``records``; return the root's
        ``.stackvault`` node (none when nothing was captured). ``several``: a failed source
        makes the snapshot incomplete instead of failing the run; ``alone``: nothing but the
        sources is backed up, so all of them failing fails the run. ``before_cut`` is called
        once the first ``cut_at`` sources are captured; ``captured`` with each source's name
        once its capture is over (complete or failed)."""
        nodes: list[Node] = []
        for i, source in enumerate(sources):
            if i == cut_at and i > 0 and before_cut is not None:
                before_cut()
            nodes += self._one(source, parent, records, several=several)
            if captured is not None:
                captured(source.name)
        if 0 < len(sources) <= cut_at and before_cut is not None:
            before_cut()
        if several and not nodes and alone:
            failures = "; ".join(f"{r.name}: {r.error}" for r in records)
            raise SourceError(f"no source could be captured; no snapshot was saved ({failures})")
        if not nodes:
            return []
        artifacts_tree = self.save_tree(sorted(nodes, key=lambda n: n.name))
        artifacts_dir = Node(name=ARTIFACTS_DIR, type="dir", mode=0o700, subtree=artifacts_tree)
        top = self.save_tree([artifacts_dir])
        return [Node(name=RESERVED, type="dir", mode=0o700, subtree=top)]

    def _one(
        self,
        source: Source,
        parent: Snapshot | None,
        records: list[ArtifactRecord],
        *,
        several: bool,
    ) -> list[Node]:
        """Capture ``source``; its artifact node, or none when it failed among several."""
        started = self.repo.clock.now()
        t0 = self.repo.clock.monotonic()
        self.progress.notice(f"capturing {source.name} from {source.location}")
        record = ArtifactRecord(
            name=source.name,
            kind=source.kind,
            location=source.location,
            path=artifact_path(source.name),
            started=started.isoformat(timespec="microseconds"),
            complete=False,
            error=None,
            duration_s=0.0,
        )
        nodes: list[Node] = []
        try:
            try:
                sink, metadata, node = self._tries(source, parent)
            finally:
                source.close()
        except SourceError as exc:
            if not several:
                raise
            record.error = str(exc)
            self.problem(Problem(f"artifact:{source.name}", str(exc), True))
        else:
            record.complete = True
            record.files, record.bytes, record.reused = sink.files, sink.bytes, sink.reused
            record.metadata = metadata
            nodes.append(node)
            self.bytes += sink.bytes
        record.duration_s = round(self.repo.clock.monotonic() - t0, 3)
        records.append(record)
        return nodes

    def _tries(
        self, source: Source, parent: Snapshot | None
    ) -> tuple[TreeSink, dict[str, Any], Node]:
        """``source`` into a fresh sink: its sink, metadata and root node; taken again after
        `SourceChanged`, up to `CAPTURE_TRIES` in all (an abandoned try's data is left
        unreferenced)."""
        for attempt in range(1, CAPTURE_TRIES + 1):
            sink = TreeSink(
                self.repo,
                self.writer,
                source.name,
                self.store_stream,
                previous_tree=self.previous_artifact(parent, source.name),
                notice=self.progress.notice,
                stopping=self.stopping,
            )
            try:
                metadata = source.capture(sink)
                return sink, metadata, sink.finish()
            except SourceChanged as exc:
                if attempt == CAPTURE_TRIES:
                    raise
                self.progress.notice(
                    f"{source.name}: {exc.message}; capturing it again "
                    f"(try {attempt + 1} of {CAPTURE_TRIES})"
                )
        raise AssertionError("unreachable")

    def previous_artifact(self, parent: Snapshot | None, name: str) -> bytes | None:
        """The tree of artifact ``name`` in the parent snapshot, if it was complete there."""
        if parent is None or not any(a.name == name and a.complete for a in parent.artifacts):
            return None
        from stackvault.engine.filedata import find_node

        try:
            node = find_node(self.repo, parent, artifact_path(name))
        except StackvaultError:
            return None
        return node.subtree if node.type == "dir" else None
