"""Known answers for the repository format: a version-1 repository written once by
scripts/make_format_fixture.py and checked in (tests/fixtures/repo-v1/) must stay readable,
restorable byte for byte and clean under `check --read-data` by every later version.

If one of these fails, the change broke repositories that exist out there: fix the code, or
bump the format version with a migration (FORMAT.md). Never regenerate the fixture to make
them pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Result
from stackvault.repo.blob import BlobType
from stackvault.repo.repository import Repository
from stackvault.store.local import LocalStore

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "repo-v1"
MANIFEST: dict[str, Any] = json.loads((FIXTURE / "manifest.json").read_text())
SNAPSHOTS: list[dict[str, Any]] = MANIFEST["snapshots"]
PASSWORD_FILE = FIXTURE / str(MANIFEST["password_file"])


@pytest.fixture
def fixture_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the fixture repository (commands write locks: never open the original),
    with the environment pointing at it."""
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURE / "repo", repo)
    monkeypatch.setenv("STACKVAULT_REPOSITORY", str(repo))
    monkeypatch.setenv("STACKVAULT_PASSWORD_FILE", str(PASSWORD_FILE))
    monkeypatch.delenv("STACKVAULT_PASSWORD", raising=False)
    return repo


def _password() -> bytes:
    return PASSWORD_FILE.read_bytes().split(b"\n")[0]


def describe(root: Path) -> list[dict[str, Any]]:
    """The entries below ``root`` as the manifest lists them (see the generator)."""
    out: list[dict[str, Any]] = []
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            entry: dict[str, Any] = {"path": str(path.relative_to(root))}
            if stat.S_ISLNK(st.st_mode):
                entry |= {"type": "symlink", "target": os.readlink(path)}
            elif stat.S_ISDIR(st.st_mode):
                entry |= {"type": "dir", "mode": stat.S_IMODE(st.st_mode)}
            else:
                data = path.read_bytes()
                entry |= {
                    "type": "file",
                    "mode": stat.S_IMODE(st.st_mode),
                    "mtime_ns": st.st_mtime_ns,
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
                if st.st_nlink > 1:
                    entry["hardlink_of"] = inodes.setdefault(st.st_ino, entry["path"])
            out.append(entry)
    return sorted(out, key=lambda e: e["path"])


def test_the_fixture_is_what_the_manifest_says(fixture_repo: Path) -> None:
    counts = {p: 0 for p in MANIFEST["objects"]}
    for path in fixture_repo.rglob("*"):
        if path.is_file():
            counts[path.relative_to(fixture_repo).parts[0]] += 1
    assert counts == MANIFEST["objects"]
    assert MANIFEST["objects"]["data"] >= 4 and MANIFEST["objects"]["index"] >= 2
    names = {e["path"] for s in SNAPSHOTS for e in s["files"]}
    # What the fixture must cover for the tests below to mean something.
    assert {"empty.dat", "emptydir", "link-to-readme", "sub/naïve-日本語.txt"} <= names
    assert os.fsdecode(b"caf\xe9-latin1.bin") in names
    big = next(e for e in SNAPSHOTS[0]["files"] if e["path"] == "big.log")
    assert big["size"] > 4 * MANIFEST["config"]["chunker"]["max"]  # several chunks


def test_the_repository_opens_with_the_recorded_config_and_key(fixture_repo: Path) -> None:
    repo = Repository.open(LocalStore(fixture_repo), _password())
    config = MANIFEST["config"]
    assert repo.config.version == MANIFEST["format_version"] == 1
    assert repo.config.chunker.to_json() == config["chunker"]
    assert repo.config.pack_size == config["pack_size"]
    assert repo.config.compression == config["compression"]
    assert repo.config.created == config["created"]
    assert repo.config.object_lock is None
    [key] = repo.list_keys()
    assert (key.host, key.username) == (MANIFEST["key"]["host"], MANIFEST["key"]["username"])


def test_snapshots_lists_exactly_the_recorded_ones(
    fixture_repo: Path, cli: Callable[..., Result]
) -> None:
    res = cli("--json", "snapshots")
    assert res.code == 0, res.err
    listed = [
        {k: s[k] for k in ("id", "time", "paths", "hostname", "username", "tags", "parent", "tree")}
        for s in res.json()
    ]
    expected = [{k: v for k, v in s.items() if k != "files"} for s in SNAPSHOTS]
    assert listed == expected
    assert all(s["complete"] and s["version"] == 1 for s in res.json())


@pytest.mark.parametrize("which", range(len(SNAPSHOTS)), ids=["first", "second"])
def test_restore_gives_the_recorded_files(
    fixture_repo: Path, cli: Callable[..., Result], tmp_path: Path, which: int
) -> None:
    snap = SNAPSHOTS[which]
    target = tmp_path / "out"
    res = cli("restore", snap["id"][:8], "--target", target, "--verify")
    assert res.code == 0, res.err
    [path] = snap["paths"]
    assert describe(target / path.lstrip("/")) == snap["files"]


def test_check_read_data_is_clean(fixture_repo: Path, cli: Callable[..., Result]) -> None:
    res = cli("--json", "check", "--read-data")
    assert res.code == 0, res.out + res.err
    report = res.json()
    assert report["ok"] and report["errors"] == [] and report["notices"] == []
    assert report["snapshots"] == len(SNAPSHOTS)
    assert report["packs_read"] == report["packs"] == MANIFEST["objects"]["data"]


def test_backing_up_the_same_content_today_adds_no_data(
    fixture_repo: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    """Today's chunker and keyed ids cut and name the fixture's files as they were cut and
    named then: every chunk of a new backup of the same bytes is already in the repository.
    A change of cut points (e.g. a pyfastcdc upgrade) or of blob ids shows up here as data
    stored twice."""
    snap = SNAPSHOTS[-1]
    target = tmp_path / "out"
    assert cli("restore", snap["id"], "--target", target).code == 0
    before = _data_blob_ids(fixture_repo)
    res = cli("--json", "backup", target / snap["paths"][0].lstrip("/"))
    assert res.code == 0, res.err
    assert res.json()["summary"]["files_new"] == sum(
        1 for e in snap["files"] if e["type"] == "file"
    )
    assert _data_blob_ids(fixture_repo) == before


def _data_blob_ids(path: Path) -> set[bytes]:
    repo = Repository.open(LocalStore(path), _password())
    repo.load_index()
    return {blob_id for blob_id, entry in repo.index.items() if entry.type == BlobType.DATA}
