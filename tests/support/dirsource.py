"""Directory-backed `Source` classes for engine and CLI tests of artifacts.

``testdir:///abs/path`` captures a directory (files with modes, symlinks, hard links, reuse of
unchanged files through ``sink.previous``) and restores into a missing or emptied directory;
facts are path → SHA-256. ``?fail-after=N`` raises `SourceError` before the N-th file,
``?interrupt=1`` raises KeyboardInterrupt mid-capture, ``?changed=N`` makes the first N captures
raise `SourceChanged` after one file. ``otherdir://`` is the same as another
kind. `register_dir_sources` adds both schemes to the registry for one test.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, ClassVar

import pytest

from stackvault.errors import SourceChanged, SourceError
from stackvault.sources import registry
from stackvault.sources.contract import (
    ArtifactReader,
    ArtifactRestoreOptions,
    ArtifactSink,
    EntryMeta,
    Source,
)
from stackvault.sources.url import SourceURL


class DirSource(Source):
    """A directory as a source (``testdir:///abs/path``): files with their modes, symlinks,
    a hard link; facts = path → SHA-256. Restores into an empty or missing directory."""

    kind: ClassVar[str] = "testdir"
    schemes: ClassVar[tuple[str, ...]] = ("testdir",)
    captures = 0

    def __init__(self, url: SourceURL) -> None:
        super().__init__(url.artifact_name("dir-" + os.path.basename(url.path)), url.redacted)
        self.root = Path(url.path)
        self.fail_after = int(url.query.get("fail-after", "-1"))
        self.interrupt = url.flag("interrupt")
        self.changes = int(url.query.get("changed", "0"))
        """Captures left that fail with `SourceChanged` after the first file."""

    @classmethod
    def from_url(cls, url: SourceURL) -> Source:
        url.require_options({"fail-after", "interrupt", "changed"})
        return cls(url)

    def _facts(self, root: Path) -> dict[str, Any]:
        out: dict[str, str] = {}
        for p in sorted(root.rglob("*")):
            if p.is_file() and not p.is_symlink():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        return {"files": out}

    def capture(self, sink: ArtifactSink) -> dict[str, Any]:
        DirSource.captures += 1
        if not self.root.is_dir():
            raise SourceError(f"{self.root} is not a directory")
        seen: dict[int, str] = {}
        done = 0
        for p in sorted(self.root.rglob("*")):
            rel = str(p.relative_to(self.root))
            st = p.lstat()
            meta = EntryMeta(
                mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid, mtime_ns=st.st_mtime_ns
            )
            if p.is_symlink():
                sink.add_symlink(rel, os.readlink(p), meta)
            elif p.is_dir():
                sink.add_dir(rel, meta)
            elif st.st_ino in seen:
                sink.add_hardlink(rel, seen[st.st_ino], meta)
            else:
                if done == self.fail_after:
                    raise SourceError(f"simulated failure after {done} files")
                if self.changes and done == 1:
                    self.changes -= 1
                    raise SourceChanged(f"simulated change under {rel}")
                if self.interrupt and done == 1:
                    raise KeyboardInterrupt
                prev = sink.previous(rel)
                if (
                    prev is not None
                    and prev.size == st.st_size
                    and prev.meta.mtime_ns == st.st_mtime_ns
                ):
                    sink.reuse(rel, prev, meta)
                else:
                    with open(p, "rb") as f:
                        sink.add_file(rel, f, meta)
                seen[st.st_ino] = rel
                done += 1
        return {"facts": self._facts(self.root), "root": str(self.root)}

    def describe_target(self) -> str | None:
        if self.root.exists() and any(self.root.iterdir()):
            return f"{self.root} holds {len(list(self.root.iterdir()))} entries"
        return None

    def restore(self, reader: ArtifactReader, options: ArtifactRestoreOptions) -> dict[str, Any]:
        import shutil

        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        n = 0
        for e in reader.entries():
            dest = self.root / e.path
            if e.kind == "dir":
                dest.mkdir(exist_ok=True)
                dest.chmod(e.meta.mode)
            elif e.kind == "symlink":
                dest.symlink_to(e.target)
            else:
                stream = reader.open(e.path)
                dest.write_bytes(stream.read())
                dest.chmod(e.meta.mode)
                n += 1
        return {"files": n}

    def probe(self) -> dict[str, Any]:
        return self._facts(self.root)


class OtherDirSource(DirSource):
    """The same, as another kind of artifact."""

    kind: ClassVar[str] = "otherdir"


def register_dir_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._SCHEMES, "testdir", f"{__name__}:DirSource")
    monkeypatch.setitem(registry._SCHEMES, "otherdir", f"{__name__}:OtherDirSource")
