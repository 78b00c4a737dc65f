"""The artifact sink contract (sources/contract.py, `ArtifactSink`): what a source may do with
the sink it captures into, and what a reader then gives back.

One suite, two sinks: the in-memory `MemorySink` that the sources' own tests capture into
(tests/support/artifacts.py, read back through its `MemoryReader`), and the engine's real sink,
the one `BackupJob` hands a source during a backup (engine/capture.py), read back from the
snapshot with `RepoArtifactReader`. A source that passes its tests against `MemorySink` thus
behaves the same in a real backup.

Each test hands a *script* to the harness, which runs it as the capture of one source named
``art`` and returns the reader of what was stored; a harness captures again with the previous
capture as the parent (``previous`` / ``reuse``).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pytest

from stackvault.crypto.kdf import KdfParams
from stackvault.engine.artifacts import RepoArtifactReader, find_artifact
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.progress import NullProgress
from stackvault.errors import Interrupted, SourceError
from stackvault.repo.repository import Repository
from stackvault.sources.contract import (
    ArtifactEntry,
    ArtifactReader,
    ArtifactSink,
    EntryMeta,
    Source,
    StoredFile,
)
from stackvault.sources.url import SourceURL
from stackvault.store.local import LocalStore
from support.artifacts import MemoryReader, MemorySink

Script = Callable[[ArtifactSink], None]


class SinkHarness(Protocol):
    notices: list[str]

    def capture(self, script: Script) -> ArtifactReader:
        """Run ``script`` as the capture of artifact ``art`` (the previous capture, if any,
        is its parent); the reader of what it stored."""
        ...

    def stop(self) -> None:
        """Stop the run (what SIGINT does to a backup)."""
        ...


class MemoryHarness:
    def __init__(self) -> None:
        self.notices: list[str] = []
        self._last: MemoryReader | None = None
        self._sink: MemorySink | None = None

    def capture(self, script: Script) -> ArtifactReader:
        self._sink = MemorySink(previous=self._last)
        script(self._sink)
        self.notices += self._sink.notices
        self._last = self._sink.reader("art", "scripted", {"facts": {}})
        return self._last

    def stop(self) -> None:
        assert self._sink is not None
        self._sink.stop()


class ScriptedSource(Source):
    """A source whose capture is a test's script."""

    kind: ClassVar[str] = "scripted"
    schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, script: Script) -> None:
        super().__init__("art", "scripted://art")
        self.script = script

    @classmethod
    def from_url(cls, url: SourceURL) -> Source:  # pragma: no cover - never opened by URL
        raise NotImplementedError

    def capture(self, sink: ArtifactSink) -> dict[str, Any]:
        self.script(sink)
        return {"facts": {}}


class EngineHarness:
    def __init__(self, tmp_path: Path) -> None:
        store = LocalStore(str(tmp_path / "repo"))
        store.ensure_root()
        self.repo = Repository.init(
            store, b"sink contract", kdf=KdfParams(memory_kib=8 * 1024, iterations=1)
        )
        self.repo.load_index()
        self.notices: list[str] = []
        self._job: BackupJob | None = None

    def capture(self, script: Script) -> ArtifactReader:
        progress = NullProgress()
        options = BackupOptions(sources=[ScriptedSource(script)], host="contract")
        self._job = BackupJob(self.repo, options, progress=progress)
        try:
            snapshot = self._job.run().snapshot
        finally:
            self.notices += progress.notices
        return RepoArtifactReader(self.repo, snapshot, find_artifact(snapshot, "art"))

    def stop(self) -> None:
        assert self._job is not None
        self._job.stop()


@pytest.fixture(params=["memory", "engine"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> SinkHarness:
    if request.param == "memory":
        return MemoryHarness()
    return EngineHarness(tmp_path)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entries(reader: ArtifactReader) -> dict[str, ArtifactEntry]:
    return {e.path: e for e in reader.entries()}


class Trickle:
    """A stream that hands out at most ``step`` bytes per call, through ``read`` and
    ``readinto`` alike (as a pipe does): a sink reads until EOF, not until a short read."""

    def __init__(self, data: bytes, step: int = 65_521) -> None:
        self._data = io.BytesIO(data)
        self.step = step

    def read(self, n: int = -1) -> bytes:
        return self._data.read(self.step if n < 0 else min(n, self.step))

    def readinto(self, buf: memoryview) -> int:
        return self._data.readinto(buf[: self.step])


class Breaking(Trickle):
    """A stream that fails after ``after`` bytes, as a dump tool's stream does when the tool
    dies."""

    def __init__(self, data: bytes, after: int) -> None:
        super().__init__(data)
        self.after = after
        self.given = 0

    def _check(self) -> None:
        if self.given >= self.after:
            raise SourceError("the dump tool died")

    def read(self, n: int = -1) -> bytes:
        self._check()
        part = super().read(n)
        self.given += len(part)
        return part

    def readinto(self, buf: memoryview) -> int:
        self._check()
        got = super().readinto(buf)
        self.given += got
        return got


META = EntryMeta(
    mode=0o640, uid=1001, gid=1002, mtime_ns=1_700_000_000_123_456_789, xattrs=(("user.k", b"v"),)
)


# --- files ------------------------------------------------------------------------------------


def test_a_file_is_stored_until_eof_and_reported_as_read(harness: SinkHarness) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    stored: list[StoredFile] = []
    reader = harness.capture(lambda sink: stored.append(sink.add_file("dump.bin", Trickle(data))))
    assert stored == [StoredFile("dump.bin", len(data), sha256(data))]
    entry = entries(reader)["dump.bin"]
    assert (entry.kind, entry.size, entry.sha256) == ("file", len(data), sha256(data))
    assert reader.open("dump.bin").read() == data


def test_small_files_bytes_json_and_empty(harness: SinkHarness) -> None:
    stored: dict[str, StoredFile] = {}

    def script(sink: ArtifactSink) -> None:
        stored["b"] = sink.add_bytes("globals.sql", b"CREATE ROLE app;\n")
        stored["j"] = sink.add_json("manifest.json", {"z": 1, "a": [1, "two"], "é": None})
        stored["j2"] = sink.add_json("again.json", {"é": None, "a": [1, "two"], "z": 1})
        stored["e"] = sink.add_bytes("empty", b"")

    reader = harness.capture(script)
    assert stored["b"] == StoredFile("globals.sql", 17, sha256(b"CREATE ROLE app;\n"))
    assert stored["e"] == StoredFile("empty", 0, sha256(b""))
    assert reader.read_json("manifest.json") == {"z": 1, "a": [1, "two"], "é": None}
    # sorted keys: the same value is the same bytes, whatever the order it was built in
    assert stored["j"].sha256 == stored["j2"].sha256
    assert reader.open("again.json").read() == reader.open("manifest.json").read()
    assert reader.open("empty").read() == b""
    assert entries(reader)["empty"].size == 0


def test_metadata_of_every_kind_is_kept(harness: SinkHarness) -> None:
    def script(sink: ArtifactSink) -> None:
        sink.add_dir("d", EntryMeta(mode=0o750, uid=7, gid=8, mtime_ns=123_000_000_001))
        sink.add_bytes("d/f", b"x", META)
        sink.add_symlink("d/l", "f", EntryMeta(mode=0o777, uid=9, gid=10, mtime_ns=5))

    got = entries(harness.capture(script))
    assert got["d"].kind == "dir"
    assert got["d"].meta == EntryMeta(mode=0o750, uid=7, gid=8, mtime_ns=123_000_000_001)
    assert got["d/f"].meta == META
    assert got["d/f"].xattr("user.k") == b"v" and got["d/f"].xattr("user.none") is None
    assert got["d/l"].meta == EntryMeta(mode=0o777, uid=9, gid=10, mtime_ns=5)


def test_defaults_without_metadata(harness: SinkHarness) -> None:
    def script(sink: ArtifactSink) -> None:
        sink.add_bytes("f", b"x")
        sink.add_dir("d")
        sink.add_symlink("l", "f")

    got = entries(harness.capture(script))
    assert got["f"].meta == EntryMeta(mode=0o600)
    assert got["d"].meta == EntryMeta(mode=0o700)
    assert got["l"].meta == EntryMeta(mode=0o777)


def test_a_stream_that_fails_raises_and_stores_nothing_for_that_path(
    harness: SinkHarness,
) -> None:
    def script(sink: ArtifactSink) -> None:
        with pytest.raises(SourceError, match="the dump tool died"):
            sink.add_file("broken.sql", Breaking(os.urandom(500_000), after=200_000))
        sink.add_bytes("after.txt", b"the capture goes on")

    reader = harness.capture(script)
    assert "broken.sql" not in entries(reader)
    assert reader.open("after.txt").read() == b"the capture goes on"


# --- directories, links, paths ----------------------------------------------------------------


def test_parents_are_made_implicitly_and_listed_before_what_they_hold(
    harness: SinkHarness,
) -> None:
    def script(sink: ArtifactSink) -> None:
        sink.add_bytes("a/b/c.txt", b"deep")
        sink.add_bytes("a/top.txt", b"top")
        sink.add_dir("a/b", EntryMeta(mode=0o755))  # made implicitly first: now its own meta
        sink.add_dir("z/empty")

    reader = harness.capture(script)
    listed = [e.path for e in reader.entries()]
    got = entries(reader)
    assert set(listed) == {"a", "a/b", "a/b/c.txt", "a/top.txt", "z", "z/empty"}
    assert len(listed) == len(set(listed))
    for path in listed:
        if "/" in path:
            parent = path.rsplit("/", 1)[0]
            assert listed.index(parent) < listed.index(path), listed
    assert got["a"].kind == "dir" and got["a"].meta == EntryMeta(mode=0o700)
    assert got["a/b"].meta == EntryMeta(mode=0o755)
    assert got["z/empty"].kind == "dir"
    assert reader.open("a/b/c.txt").read() == b"deep"


def test_a_tree_deeper_than_the_recursion_limit(harness: SinkHarness) -> None:
    depth = sys.getrecursionlimit() + 100
    path = "/".join(["d"] * depth) + "/leaf.txt"
    reader = harness.capture(lambda sink: sink.add_bytes(path, b"at the bottom"))
    listed = [e.path for e in reader.entries()]
    assert len(listed) == depth + 1 and listed[-1] == path
    assert reader.open(path).read() == b"at the bottom"


def test_symlinks_keep_their_target_as_given(harness: SinkHarness) -> None:
    def script(sink: ArtifactSink) -> None:
        sink.add_symlink("rel", "../../outside/target")
        sink.add_symlink("abs", "/etc/passwd")
        sink.add_symlink("dangling", "nothing-here")

    got = entries(harness.capture(script))
    assert {p: (e.kind, e.target) for p, e in got.items()} == {
        "rel": ("symlink", "../../outside/target"),
        "abs": ("symlink", "/etc/passwd"),
        "dangling": ("symlink", "nothing-here"),
    }


def test_a_hard_link_has_the_content_of_its_file(harness: SinkHarness) -> None:
    def script(sink: ArtifactSink) -> None:
        sink.add_bytes("data/first", b"shared content", META)
        sink.add_hardlink("data/second", "data/first")
        sink.add_hardlink("third", "data/first", EntryMeta(mode=0o444))
        with pytest.raises(SourceError):
            sink.add_hardlink("to-nothing", "missing")
        sink.add_dir("dir")
        with pytest.raises(SourceError):
            sink.add_hardlink("to-dir", "dir")

    reader = harness.capture(script)
    got = entries(reader)
    for path in ("data/second", "third"):
        assert got[path].kind == "file"
        assert (got[path].size, got[path].sha256) == (14, sha256(b"shared content"))
        assert reader.open(path).read() == b"shared content"
    assert got["data/second"].meta == META
    assert got["third"].meta.mode == 0o444
    assert "to-nothing" not in got and "to-dir" not in got


@pytest.mark.parametrize(
    "path", ["", "/abs", "..", "a/../b", "a//b", "a/", ".", "./a", "a/./b", "nul\0byte"]
)
def test_unsafe_paths_are_refused(harness: SinkHarness, path: str) -> None:
    adders: list[Callable[[ArtifactSink], object]] = [
        lambda sink: sink.add_bytes(path, b"x"),
        lambda sink: sink.add_dir(path),
        lambda sink: sink.add_symlink(path, "t"),
    ]

    def script(sink: ArtifactSink) -> None:
        for add in adders:
            with pytest.raises(SourceError):
                add(sink)
        sink.add_bytes("ok", b"")

    assert [e.path for e in harness.capture(script).entries()] == ["ok"]


def test_the_same_path_twice_is_an_error(harness: SinkHarness) -> None:
    def script(sink: ArtifactSink) -> None:
        sink.add_bytes("f", b"first")
        with pytest.raises(SourceError):
            sink.add_bytes("f", b"second")
        with pytest.raises(SourceError):
            sink.add_symlink("f", "elsewhere")
        with pytest.raises(SourceError):
            sink.add_dir("f")
        sink.add_dir("d")
        with pytest.raises(SourceError):
            sink.add_bytes("d", b"over a directory")
        with pytest.raises(SourceError):
            sink.add_bytes("f/below", b"below a file")

    reader = harness.capture(script)
    got = entries(reader)
    assert set(got) == {"f", "d"}
    assert got["f"].kind == "file" and reader.open("f").read() == b"first"
    assert got["d"].kind == "dir"


# --- the parent capture -----------------------------------------------------------------------


def test_unchanged_files_are_reused_from_the_previous_capture(harness: SinkHarness) -> None:
    data = os.urandom(300_000)
    first_previous: list[ArtifactEntry | None] = []

    def first(sink: ArtifactSink) -> None:
        first_previous.append(sink.previous("big"))
        sink.add_bytes("big", data, META)
        sink.add_bytes("sub/small", b"small")
        sink.add_symlink("link", "big")

    harness.capture(first)
    assert first_previous == [None]  # no parent yet

    seen: dict[str, Any] = {}

    def second(sink: ArtifactSink) -> None:
        prev = sink.previous("big")
        seen["big"] = prev
        seen["missing"] = sink.previous("missing")
        seen["dir"] = sink.previous("sub")
        seen["link"] = sink.previous("link")
        seen["unsafe"] = sink.previous("../big")
        assert prev is not None
        seen["stored"] = sink.reuse("big-again", prev, EntryMeta(mode=0o400))
        small = sink.previous("sub/small")
        assert small is not None
        seen["small"] = sink.reuse("sub/small", small)

    reader = harness.capture(second)
    prev = seen["big"]
    assert isinstance(prev, ArtifactEntry)
    assert (prev.path, prev.kind, prev.size, prev.sha256) == (
        "big",
        "file",
        len(data),
        sha256(data),
    )
    assert prev.meta == META
    assert seen["missing"] is None and seen["dir"] is None and seen["link"] is None
    assert seen["unsafe"] is None
    assert seen["stored"] == StoredFile("big-again", len(data), sha256(data))
    assert seen["small"] == StoredFile("sub/small", 5, sha256(b"small"))
    got = entries(reader)
    assert set(got) == {"big-again", "sub", "sub/small"}
    assert got["big-again"].meta.mode == 0o400
    assert got["sub/small"].meta == EntryMeta()  # the previous entry's metadata
    assert reader.open("big-again").read() == data
    assert reader.open("sub/small").read() == b"small"


# --- notices, interruption, reading back ------------------------------------------------------


def test_notices_reach_the_user(harness: SinkHarness) -> None:
    harness.capture(lambda sink: sink.notice("waiting for the table lock (3 s)"))
    assert "waiting for the table lock (3 s)" in harness.notices


def test_a_stopped_run_interrupts_the_capture(harness: SinkHarness) -> None:
    checks: list[str] = []

    def script(sink: ArtifactSink) -> None:
        sink.check_interrupted()
        sink.add_bytes("before", b"x")
        checks.append("running")
        harness.stop()
        with pytest.raises(Interrupted):
            sink.check_interrupted()
        checks.append("stopped")
        sink.add_bytes("after", b"y")  # raises Interrupted: the capture ends here
        checks.append("went on")

    with pytest.raises(Interrupted):
        harness.capture(script)
    assert checks == ["running", "stopped"]


def test_a_reader_refuses_what_the_artifact_does_not_hold(harness: SinkHarness) -> None:
    def script(sink: ArtifactSink) -> None:
        sink.add_bytes("d/f", b"x")
        sink.add_symlink("l", "d/f")

    reader = harness.capture(script)
    assert reader.entry("d/f").size == 1
    with pytest.raises(SourceError):
        reader.entry("nothing")
    for path in ("nothing", "d", "l"):
        with pytest.raises(SourceError):
            reader.open(path).read()
