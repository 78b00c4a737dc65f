"""Artifacts in the engine: sources captured by `BackupJob` into ``/.stackvault/artifacts``,
read back by `RepoArtifactReader`, restored by `restore_artifact`, with the failure semantics
of FORMAT.md §8.2 (a failing only source saves nothing; with several, the snapshot is
incomplete and names it).

The sources here are small in-test `Source` subclasses (a scripted file tree, a failing one,
a directory-backed target); the real database, Docker and S3 sources have their own suites.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import pytest

from stackvault.crypto.kdf import KdfParams
from stackvault.engine.artifact_restore import restore_artifact
from stackvault.engine.artifacts import RepoArtifactReader, artifact_path, find_artifact
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.copy import CopyJob
from stackvault.engine.progress import NullProgress
from stackvault.engine.restore import FileRestoreOptions, RestoreJob
from stackvault.errors import (
    Interrupted,
    RestoreRefused,
    SourceChanged,
    SourceError,
    StackvaultError,
    UsageError,
)
from stackvault.records.artifact import ArtifactRecord
from stackvault.repo.check import Checker
from stackvault.repo.repository import Repository
from stackvault.sources import registry
from stackvault.sources.contract import (
    Source,
)
from stackvault.sources.url import SourceURL
from stackvault.store.local import LocalStore
from support.dirsource import DirSource, register_dir_sources

PW = b"artifact test password"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)


@pytest.fixture(autouse=True)
def _register(monkeypatch: pytest.MonkeyPatch) -> None:
    register_dir_sources(monkeypatch)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    store = LocalStore(str(tmp_path / "repo"))
    store.ensure_root()
    repo = Repository.init(store, PW, kdf=FAST_KDF)
    repo.load_index()
    return repo


def make_dir(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("hello\n")
    (root / "sub" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (root / "sub" / "deeper" / "empty").write_bytes(b"")
    os.chmod(root / "a.txt", 0o640)
    (root / "link").symlink_to("sub/big.bin")
    os.link(root / "a.txt", root / "sub" / "hard.txt")
    return root


def src(path: Path, **query: str) -> Source:
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return registry.open_source(f"testdir://{path}" + (f"?{q}" if q else ""))


def backup(repo: Repository, sources: list[Source], paths: list[str] | None = None) -> Any:
    return BackupJob(
        repo, BackupOptions(paths=paths or [], sources=sources, host="h"), progress=NullProgress()
    ).run()


def test_an_artifact_is_stored_listed_read_back_and_checked(
    repo: Repository, tmp_path: Path
) -> None:
    data = make_dir(tmp_path / "data")
    res = backup(repo, [src(data)])
    snap = res.snapshot
    assert snap.complete
    assert snap.paths == [artifact_path("dir-data")]
    [record] = snap.artifacts
    assert record.name == "dir-data" and record.kind == "testdir" and record.complete
    assert record.files == 4 and record.bytes == 6 + 3 * 1024 * 1024 + 0 + 6
    assert record.metadata["facts"] == DirSource(SourceURL.parse(f"testdir://{data}")).probe()

    reopened = Repository.open(repo.store, PW)
    reopened.load_index()
    snap2 = reopened.find_snapshot(snap.id[:8])
    reader = RepoArtifactReader(reopened, snap2, find_artifact(snap2, "dir-data"))
    entries = {e.path: e for e in reader.entries()}
    assert set(entries) == {
        "a.txt",
        "link",
        "sub",
        "sub/big.bin",
        "sub/deeper",
        "sub/deeper/empty",
        "sub/hard.txt",
    }
    assert entries["link"].kind == "symlink" and entries["link"].target == "sub/big.bin"
    assert entries["a.txt"].meta.mode == 0o640
    assert reader.open("sub/big.bin").read() == (data / "sub" / "big.bin").read_bytes()
    report = Checker(reopened, read_data=True).run()
    assert report.ok, report


def test_restore_artifact_files_into_a_directory(repo: Repository, tmp_path: Path) -> None:
    data = make_dir(tmp_path / "data")
    snap = backup(repo, [src(data)]).snapshot
    reader = RepoArtifactReader(repo, snap, find_artifact(snap, "dir-data"))
    out = tmp_path / "out"
    RestoreJob(repo, snap, FileRestoreOptions(target=str(out), root_tree=reader.node.subtree)).run()
    assert (out / "sub" / "big.bin").read_bytes() == (data / "sub" / "big.bin").read_bytes()
    assert os.readlink(out / "link") == "sub/big.bin"
    assert os.stat(out / "a.txt").st_ino == os.stat(out / "sub" / "hard.txt").st_ino
    assert (os.stat(out / "a.txt").st_mode & 0o777) == 0o640


def test_files_and_artifacts_in_one_snapshot(repo: Repository, tmp_path: Path) -> None:
    data = make_dir(tmp_path / "data")
    files = tmp_path / "files"
    files.mkdir()
    (files / "x").write_text("x")
    snap = backup(repo, [src(data)], [str(files)]).snapshot
    assert snap.paths == sorted([str(files), artifact_path("dir-data")])
    names = {n.name for n in repo.load_tree(snap.tree)}
    assert names == {".stackvault", files.parts[1]}


def test_unchanged_files_are_reused_from_the_parent_artifact(
    repo: Repository, tmp_path: Path
) -> None:
    data = make_dir(tmp_path / "data")
    first = backup(repo, [src(data)]).snapshot
    second = backup(repo, [src(data)]).snapshot
    assert second.parent == first.id
    [record] = second.artifacts
    assert record.reused == 3  # a.txt, big.bin, empty (the hard link is not a read)
    assert second.summary["data_added"] == 0
    (data / "sub" / "new.bin").write_bytes(b"n" * 1000)
    third = backup(repo, [src(data)]).snapshot
    assert third.artifacts[0].reused == 3 and third.artifacts[0].files == 5


def test_a_failing_only_source_saves_no_snapshot(repo: Repository, tmp_path: Path) -> None:
    data = make_dir(tmp_path / "data")
    with pytest.raises(SourceError, match="simulated failure after 1 files"):
        backup(repo, [src(data, **{"fail-after": "1"})])
    assert repo.list_snapshots() == []
    assert Checker(repo).run().ok


def test_with_several_sources_a_failure_makes_the_snapshot_incomplete(
    repo: Repository, tmp_path: Path
) -> None:
    good = make_dir(tmp_path / "good")
    bad = make_dir(tmp_path / "bad")
    snap = backup(repo, [src(good), src(bad, **{"fail-after": "2"})]).snapshot
    assert not snap.complete
    assert snap.problems == [
        {"path": "artifact:dir-bad", "message": "simulated failure after 2 files"}
    ]
    by_name = {a.name: a for a in snap.artifacts}
    assert by_name["dir-good"].complete and not by_name["dir-bad"].complete
    assert by_name["dir-bad"].error == "simulated failure after 2 files"
    artifacts_tree = [n for n in repo.load_tree(snap.tree) if n.name == ".stackvault"]
    assert artifacts_tree, "the good artifact is stored"
    with pytest.raises(SourceError, match="incomplete"):
        RepoArtifactReader(repo, snap, find_artifact(snap, "dir-bad"))
    assert Checker(repo).run().ok


def test_every_source_failing_saves_nothing(repo: Repository, tmp_path: Path) -> None:
    a = make_dir(tmp_path / "a")
    b = make_dir(tmp_path / "b")
    with pytest.raises(SourceError, match="no source could be captured"):
        backup(repo, [src(a, **{"fail-after": "0"}), src(b, **{"fail-after": "0"})])
    assert repo.list_snapshots() == []


def test_a_capture_whose_data_changed_is_taken_again(repo: Repository, tmp_path: Path) -> None:
    data = make_dir(tmp_path / "data")
    progress = NullProgress()
    job = BackupOptions(paths=[], sources=[src(data, changed="2")], host="h")
    snap = BackupJob(repo, job, progress=progress).run().snapshot
    assert snap.complete and snap.artifacts[0].complete
    again = [n for n in progress.notices if "capturing it again" in n]
    assert again == [
        "dir-data: simulated change under sub/big.bin; capturing it again (try 2 of 3)",
        "dir-data: simulated change under sub/big.bin; capturing it again (try 3 of 3)",
    ]
    reader = RepoArtifactReader(repo, snap, find_artifact(snap, "dir-data"))
    assert reader.open("sub/big.bin").read() == (data / "sub" / "big.bin").read_bytes()
    assert Checker(repo, read_data=True).run().ok  # the abandoned tries: unreferenced only


def test_a_capture_that_keeps_changing_fails_after_three_tries(
    repo: Repository, tmp_path: Path
) -> None:
    data = make_dir(tmp_path / "data")
    with pytest.raises(SourceChanged, match=r"simulated change under sub/big\.bin"):
        backup(repo, [src(data, changed="3")])
    assert repo.list_snapshots() == []
    assert Checker(repo).run().ok


def test_interrupting_a_capture_saves_nothing(repo: Repository, tmp_path: Path) -> None:
    a = make_dir(tmp_path / "a")
    with pytest.raises(Interrupted):
        backup(repo, [src(a, interrupt="1")])
    assert repo.list_snapshots() == []


def test_reserved_paths_and_duplicate_names_are_refused(repo: Repository, tmp_path: Path) -> None:
    a = make_dir(tmp_path / "a")
    with pytest.raises(UsageError, match="both be stored as artifact 'dir-a'"):
        backup(repo, [src(a), src(a)])
    with pytest.raises(UsageError, match=r"reserved|artifacts"):
        backup(repo, [], ["/.stackvault/x"])


def test_restore_to_a_live_target_refuses_then_takes_a_safety_snapshot(
    repo: Repository, tmp_path: Path
) -> None:
    data = make_dir(tmp_path / "data")
    snap = backup(repo, [src(data)]).snapshot
    target = tmp_path / "target"
    target.mkdir()
    (target / "precious.txt").write_text("do not lose me")
    kwargs: dict[str, Any] = {"progress": NullProgress(), "notice": lambda m: None}
    with pytest.raises(RestoreRefused, match="not empty"):
        restore_artifact(repo, snap, "dir-data", f"testdir://{target}", **kwargs)
    assert (target / "precious.txt").read_text() == "do not lose me"

    res = restore_artifact(repo, snap, "dir-data", f"testdir://{target}", overwrite=True, **kwargs)
    assert res.validated and res.differences == []
    assert res.safety_snapshot is not None
    assert not (target / "precious.txt").exists()
    safety = repo.find_snapshot(res.safety_snapshot)
    assert "pre-restore" in safety.tags
    # The safety snapshot really holds what was replaced: undo the restore with it.
    back = restore_artifact(
        repo, safety, "dir-target", f"testdir://{target}", overwrite=True, **kwargs
    )
    assert back.differences == []
    assert (target / "precious.txt").read_text() == "do not lose me"


def test_restore_reports_differences_from_the_recorded_facts(
    repo: Repository, tmp_path: Path
) -> None:
    data = make_dir(tmp_path / "data")
    snap = backup(repo, [src(data)]).snapshot
    # Tamper with the recorded facts in memory: the live result must now disagree.
    snap.artifacts[0].metadata["facts"]["files"]["a.txt"] = "0" * 64
    res = restore_artifact(
        repo,
        snap,
        "dir-data",
        f"testdir://{tmp_path / 'new'}",
        progress=NullProgress(),
        notice=lambda m: None,
    )
    live = hashlib.sha256(b"hello\n").hexdigest()
    assert res.differences == [f'files.a.txt: "{"0" * 64}" recorded, "{live}" now']


def test_a_kind_mismatch_is_refused(repo: Repository, tmp_path: Path) -> None:
    data = make_dir(tmp_path / "data")
    snap = backup(repo, [src(data)]).snapshot
    with pytest.raises(StackvaultError, match="testdir artifact"):
        restore_artifact(
            repo,
            snap,
            "dir-data",
            f"otherdir://{tmp_path}/other",
            progress=NullProgress(),
            notice=lambda m: None,
        )
    with pytest.raises(SourceError, match="has no artifact 'nope'"):
        restore_artifact(
            repo,
            snap,
            "nope",
            f"testdir://{tmp_path}",
            progress=NullProgress(),
            notice=lambda m: None,
        )


def test_blob_reader_is_a_stream(repo: Repository, tmp_path: Path) -> None:
    data = make_dir(tmp_path / "data")
    snap = backup(repo, [src(data)]).snapshot
    reader = RepoArtifactReader(repo, snap, find_artifact(snap, "dir-data"))
    stream = reader.open("sub/big.bin")
    buf = io.BytesIO()
    while chunk := stream.read(65536):
        buf.write(chunk)
    assert buf.getvalue() == (data / "sub" / "big.bin").read_bytes()


def test_artifact_records_round_trip_with_unknown_keys(repo: Repository, tmp_path: Path) -> None:
    data = make_dir(tmp_path / "data")
    snap = backup(repo, [src(data)]).snapshot
    stored = repo.load_snapshot(snap.id).to_json()["artifacts"][0]
    assert list(stored) == [
        "name", "kind", "location", "path", "started", "complete", "error",
        "files", "bytes", "reused", "metadata", "duration_s",
    ]  # fmt: skip
    newer = dict(stored, future={"x": [1]})
    record = ArtifactRecord.from_json(newer)
    assert record.unknown == {"future": {"x": [1]}}
    assert record.to_json() == newer and list(record.copy().to_json()) == list(newer)
    failed = {k: v for k, v in stored.items() if k not in ("files", "bytes", "reused", "metadata")}
    assert ArtifactRecord.from_json(failed | {"complete": False}).to_json() == failed | {
        "complete": False
    }
    with pytest.raises(ValueError, match="files is not a whole number"):
        ArtifactRecord.from_json(dict(stored, files="3"))


def test_copy_keeps_artifact_records_with_unknown_keys(repo: Repository, tmp_path: Path) -> None:
    data = make_dir(tmp_path / "data")
    snap = backup(repo, [src(data), src(data / "sub", **{"fail-after": "0"})]).snapshot
    snap.artifacts[0].unknown["future"] = {"x": [1]}
    original = repo.load_snapshot(repo.save_snapshot(snap))
    assert original.artifacts[0].unknown == {"future": {"x": [1]}}
    store = LocalStore(str(tmp_path / "dest"))
    store.ensure_root()
    dest = Repository.init(store, PW, kdf=FAST_KDF)
    dest.load_index()
    CopyJob(repo, dest, workers=2).run([original])
    [copied] = dest.list_snapshots()
    assert [a.to_json() for a in copied.artifacts] == [a.to_json() for a in original.artifacts]
    assert list(copied.artifacts[0].to_json())[-1] == "future"
    assert "files" not in copied.artifacts[1].to_json()  # a failed capture stays without them
