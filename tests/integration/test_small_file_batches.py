"""`FileReader.read_small_files`, the way a backup's child process reads the small files of
a directory (opened once, each file by its name there, counted once for the batch), gives
the nodes, counts and progress that reading each file by its path gives; a file that
vanished, was replaced or grew since it was listed is reported or read as a stream as
`read_file` would; a directory replaced since it was listed gives nothing of the new one."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from stackvault.engine.filereader import FileReader
from stackvault.engine.listing import DirectoryLister
from stackvault.engine.progress import NullProgress
from stackvault.engine.walkprocs import SealingSink
from stackvault.fs.entry import FsEntry
from stackvault.fs.exclude import ExcludeMatcher
from stackvault.fs.walk import VANISHED, FileWalker, Problem
from stackvault.repo.repository import Repository
from stackvault.repo.tree import Node
from support.localrepo import new_local_repo

PW = b"small file batches"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return new_local_repo(tmp_path / "repo", PW)


class Run:
    """A reader, a walker and a sink as a backup's child has them, with what they report."""

    def __init__(self, repo: Repository) -> None:
        self.problems: list[Problem] = []
        self.progress = NullProgress()
        stop = threading.Event()
        lister = DirectoryLister(repo, self.progress, force=False, stop=stop)
        self.reader = FileReader(
            repo, self.progress, lister, workers=1, stop=stop, problem=self.problems.append
        )
        self.walker = FileWalker(ExcludeMatcher([]), False, self.problems.append)
        self.sink = SealingSink(repo)

    def listed(self, directory: Path) -> tuple[FsEntry, list[FsEntry]]:
        entry = self.walker.stat_root(str(directory))
        assert entry is not None
        return entry, self.walker.scan_dir(entry)


def _documents(directory: Path, count: int) -> None:
    directory.mkdir()
    for i in range(count):
        (directory / f"doc-{i:03d}.json").write_bytes(b'{"n": %d, "text": "%s"}' % (i, b"ab" * i))
    (directory / "empty").write_bytes(b"")


def _fields(node: Node) -> tuple[object, ...]:
    return (node.name, node.mode, node.mtime_ns, node.inode, node.size, node.sha256, node.content)


def test_a_batch_gives_what_reading_each_file_gives(repo: Repository, tmp_path: Path) -> None:
    _documents(tmp_path / "d", 40)
    batch, each = Run(repo), Run(repo)
    directory, entries = batch.listed(tmp_path / "d")
    old = Node(name="previous", type="file")
    files = [(e, old if i % 3 == 0 else None) for i, e in enumerate(entries)]

    nodes = batch.reader.read_small_files(batch.sink, batch.walker, directory, files)
    alone = [each.reader.read_file(each.sink, each.walker, e, o) for e, o in files]

    assert [_fields(n) for n in nodes] == [_fields(n) for n in alone if n is not None]
    assert len(nodes) == 41 and batch.problems == []
    size = sum(len(p.read_bytes()) for p in (tmp_path / "d").iterdir())
    changed = len(range(0, 41, 3))
    for run in (batch, each):
        counts = run.reader.counts
        assert (counts.files, counts.files_changed, counts.files_new) == (41, changed, 41 - changed)
        assert counts.bytes == size
        assert (run.progress.files, run.progress.bytes) == (41, size)
    # The same blobs were kept to be sealed: one per non-empty file, the empty one has none.
    assert len(batch.sink.take()) == len(each.sink.take()) == 40


def test_files_changed_since_listing_are_reported_or_streamed(
    repo: Repository, tmp_path: Path
) -> None:
    _documents(tmp_path / "d", 5)
    run = Run(repo)
    directory, entries = run.listed(tmp_path / "d")
    d = tmp_path / "d"
    os.unlink(d / "doc-001.json")  # vanished
    (d / "new").write_bytes(b"replacement")
    os.rename(d / "new", d / "doc-002.json")  # replaced: another inode
    grown = os.urandom(repo.config.chunker.min + 1000)
    (d / "doc-003.json").write_bytes(grown)  # grew past the small-file bound: streamed

    nodes = run.reader.read_small_files(
        run.sink, run.walker, directory, [(e, None) for e in entries]
    )

    by_name = {n.name: n for n in nodes}
    assert sorted(by_name) == ["doc-000.json", "doc-003.json", "doc-004.json", "empty"]
    assert by_name["doc-003.json"].size == len(grown)
    reasons = {Path(p.path).name: (p.message, p.incomplete) for p in run.problems}
    assert reasons["doc-001.json"] == (VANISHED, False)
    assert reasons["doc-002.json"][0].endswith("replaced during backup")
    assert reasons["doc-002.json"][1] is True
    assert reasons["doc-003.json"] == ("file changed size while being read", False)
    assert run.reader.counts.files == 4
    # The grown file's bytes reached progress once, chunk by chunk as it was streamed.
    small = sum(n.size for n in nodes if n.name != "doc-003.json")
    assert run.progress.bytes == small + len(grown)


def test_a_directory_replaced_since_listing_gives_nothing_of_the_new_one(
    repo: Repository, tmp_path: Path
) -> None:
    _documents(tmp_path / "d", 5)
    run = Run(repo)
    directory, entries = run.listed(tmp_path / "d")
    os.rename(tmp_path / "d", tmp_path / "listed")
    _documents(tmp_path / "d", 5)  # the same names, other files

    nodes = run.reader.read_small_files(
        run.sink, run.walker, directory, [(e, None) for e in entries]
    )

    assert nodes == []
    assert len(run.problems) == 6
    assert all(p.message.endswith("replaced during backup") for p in run.problems)
    assert run.reader.counts.files == 0 and run.sink.take() == []
