"""Damage a real repository on disk and check what stackvault says and does about it.

Each case starts from a repository with two snapshots that share most of their data
(``shared/``) and each hold one big file of their own (``only1.bin`` / ``only2.bin``), then flips,
truncates or deletes real files below ``repo/`` and runs the CLI in-process: `check` must exit 20
naming what is damaged and which snapshots and files it affects, `restore` must never write
wrong bytes and must still restore what is intact. Hostile trees (``..``, ``a/b``, absolute and
symlink tricks) are built through the repository API, as an attacker holding the key would.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import FAST_INIT, PASSWORD, Result, describe, inside, make_tree
from stackvault.errors import EXIT_INTEGRITY
from stackvault.repo.blob import BlobType
from stackvault.repo.index import decode_index
from stackvault.repo.pack import pack_name, storage_id
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import SNAPSHOT_AAD, Snapshot
from stackvault.repo.tree import Node, encode_tree
from stackvault.store.local import LocalStore

Cli = Callable[..., Result]
MIB = 1024 * 1024


# --- helpers -----------------------------------------------------------------------------------


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def open_repo(repo: Path) -> Repository:
    r = Repository.open(LocalStore(repo), PASSWORD.encode())
    r.load_index()
    return r


@dataclass
class Located:
    pack: Path
    pack_id: str
    blob_id: str
    offset: int
    length: int


def locate_blob(repo: Path, snapshot_id: str, file_path: str) -> Located:
    """The pack file and byte range holding the first blob of ``file_path`` in a snapshot."""
    r = open_repo(repo)
    snap = r.find_snapshot(snapshot_id)
    node = next(n for p, n in r.iter_tree(snap.tree) if p == file_path)
    blob_id = node.content[0]
    entry = r.index.get(blob_id)
    assert entry is not None
    return Located(
        repo / pack_name(entry.pack_id),
        entry.pack_id.hex(),
        blob_id.hex(),
        entry.offset,
        entry.length,
    )


def blobs_of_pack(repo: Path, pack_id: str) -> set[bytes]:
    r = open_repo(repo)
    return {b.blob_id for b in r.index.packs()[bytes.fromhex(pack_id)]}


def files_using(repo: Path, blob_ids: set[bytes]) -> set[tuple[str, str]]:
    """(snapshot id, path) of every file in any snapshot that uses one of ``blob_ids``."""
    r = open_repo(repo)
    out = set()
    for snap in r.list_snapshots():
        for p, n in r.iter_tree(snap.tree):
            if n.type == "file" and blob_ids & set(n.content):
                out.add((snap.id, p))
    return out


def leftovers(root: Path) -> list[str]:
    """Temporary files a restore may have left behind."""
    return [str(p) for p in root.rglob("*") if ".svtmp-" in p.name or p.name.startswith(".tmp-")]


@dataclass
class TwoSnapshots:
    repo: Path
    src: Path
    snap1: str
    snap2: str
    state1: dict[str, tuple[Any, ...]]
    state2: dict[str, tuple[Any, ...]]
    only1: str
    only2: str


@pytest.fixture
def two_snapshots(initialised: Path, tmp_path: Path, cli: Cli) -> TwoSnapshots:
    src = tmp_path / "src"
    make_tree(src / "shared", seed=3, files=12)
    rnd = random.Random(42)
    (src / "only1.bin").write_bytes(rnd.randbytes(3 * MIB))
    res = cli("--json", "backup", src)
    assert res.code == 0, res.err
    snap1 = res.json()["id"]
    state1 = describe(src)

    (src / "only1.bin").unlink()
    (src / "only2.bin").write_bytes(rnd.randbytes(3 * MIB))
    res = cli("--json", "backup", src)
    assert res.code == 0, res.err
    snap2 = res.json()["id"]
    state2 = describe(src)
    assert snap1 != snap2

    res = cli("check", "--read-data")
    assert res.code == 0, res.out + res.err
    return TwoSnapshots(
        initialised,
        src,
        snap1,
        snap2,
        state1,
        state2,
        str(src / "only1.bin"),
        str(src / "only2.bin"),
    )


def restored_state(target: Path, src: Path) -> dict[str, tuple[Any, ...]]:
    return describe(inside(target, src))


# --- a flipped byte in a data pack ---------------------------------------------------------------


def test_flipped_byte_in_data_pack(two_snapshots: TwoSnapshots, cli: Cli, tmp_path: Path) -> None:
    t = two_snapshots
    loc = locate_blob(t.repo, t.snap2, t.only2)
    # The pack written by the second backup holds only data of only2.bin.
    users = files_using(t.repo, blobs_of_pack(t.repo, loc.pack_id))
    assert users == {(t.snap2, t.only2)}, users
    flip_byte(loc.pack, loc.offset + loc.length // 2)

    # Without --read-data, check looks at structure (sizes), not content.
    res = cli("check")
    assert res.code == 0, res.out + res.err

    res = cli("check", "--read-data")
    assert res.code == 20, res.out + res.err
    assert loc.pack_id[:12] in res.out
    assert loc.blob_id[:12] in res.out
    assert t.snap2[:8] in res.out and "only2.bin" in res.out
    assert t.snap1[:8] not in res.out

    res = cli("--json", "check", "--read-data")
    assert res.code == 20
    doc = res.json()
    assert doc["ok"] is False
    assert doc["affected"] == {t.snap2: [t.only2]}
    kinds = {(e["kind"], e["name"]) for e in doc["errors"]}
    assert ("blob", loc.blob_id) in kinds
    assert ("pack", f"data/{loc.pack_id[:2]}/{loc.pack_id}") in kinds

    # Restoring the damaged snapshot: exit 20, the damaged file absent, the rest exact.
    target = tmp_path / "restore2"
    res = cli("restore", t.snap2, "--target", target)
    assert res.code == 20, res.out + res.err
    assert "only2.bin" in res.err and "check" in res.err
    got = restored_state(target, t.src)
    assert "only2.bin" not in got
    expected = {k: v for k, v in t.state2.items() if k != "only2.bin"}
    assert got == expected
    assert leftovers(target) == []

    # Only the intact files: success.
    target = tmp_path / "restore2-shared"
    res = cli("restore", t.snap2, "--target", target, "--include", str(t.src / "shared"))
    assert res.code == 0, res.out + res.err
    got = restored_state(target, t.src)
    assert got == {k: v for k, v in t.state2.items() if k.startswith("shared")}

    # The snapshot that does not use the damaged blob restores completely.
    target = tmp_path / "restore1"
    res = cli("restore", t.snap1, "--target", target, "--verify")
    assert res.code == 0, res.out + res.err
    assert restored_state(target, t.src) == t.state1

    # dump of the damaged file fails too, and says why.
    res = cli("dump", t.snap2, t.only2)
    assert res.code == 20
    assert loc.blob_id[:12] in res.err or loc.pack_id[:12] in res.err


def test_flipped_byte_in_shared_data_affects_both_snapshots(
    two_snapshots: TwoSnapshots, cli: Cli
) -> None:
    t = two_snapshots
    big = str(t.src / "shared" / "docs" / "deep" / "er" / "big.bin")
    loc = locate_blob(t.repo, t.snap1, big)
    flip_byte(loc.pack, loc.offset + 100)
    res = cli("--json", "check", "--read-data")
    assert res.code == 20
    affected = res.json()["affected"]
    assert set(affected) == {t.snap1, t.snap2}
    for paths in affected.values():
        assert big in paths


# --- truncated and missing packs -----------------------------------------------------------------


def test_truncated_pack(two_snapshots: TwoSnapshots, cli: Cli, tmp_path: Path) -> None:
    t = two_snapshots
    loc = locate_blob(t.repo, t.snap2, t.only2)
    os.truncate(loc.pack, loc.offset + loc.length // 2)
    name = f"data/{loc.pack_id[:2]}/{loc.pack_id}"

    res = cli("check")  # no --read-data: the size alone gives it away
    assert res.code == 20, res.out + res.err
    assert name in res.out and "truncated" in res.out

    res = cli("--json", "check")
    assert res.code == 20
    doc = res.json()
    assert any(e["kind"] == "pack" and e["name"] == name for e in doc["errors"])
    assert doc["affected"] == {t.snap2: [t.only2]}

    res = cli("check", "--read-data")
    assert res.code == 20 and name in res.out

    target = tmp_path / "r2"
    res = cli("restore", t.snap2, "--target", target)
    assert res.code == 20, res.out + res.err
    got = restored_state(target, t.src)
    assert got == {k: v for k, v in t.state2.items() if k != "only2.bin"}
    assert leftovers(target) == []


def test_missing_pack(two_snapshots: TwoSnapshots, cli: Cli, tmp_path: Path) -> None:
    t = two_snapshots
    loc = locate_blob(t.repo, t.snap2, t.only2)
    loc.pack.unlink()
    name = f"data/{loc.pack_id[:2]}/{loc.pack_id}"

    for args in (("check",), ("check", "--read-data")):
        res = cli("--json", *args)
        assert res.code == 20, res.out + res.err
        doc = res.json()
        assert any(
            e["kind"] == "pack" and e["name"] == name and "missing" in e["message"]
            for e in doc["errors"]
        ), doc["errors"]
        assert doc["affected"] == {t.snap2: [t.only2]}

    res = cli("check")
    assert res.code == 20
    assert name in res.out and "only2.bin" in res.out and t.snap2[:8] in res.out

    target = tmp_path / "r2"
    res = cli("restore", t.snap2, "--target", target)
    assert res.code == 20, res.out + res.err
    assert "missing" in res.err
    assert "only2.bin" not in restored_state(target, t.src)

    target = tmp_path / "r1"
    res = cli("restore", t.snap1, "--target", target)
    assert res.code == 0, res.out + res.err
    assert restored_state(target, t.src) == t.state1


def test_missing_tree_pack_names_whole_directories(two_snapshots: TwoSnapshots, cli: Cli) -> None:
    """Losing the pack of the second backup's trees: snapshot 2 cannot be walked."""
    t = two_snapshots
    r = open_repo(t.repo)
    snap2 = r.find_snapshot(t.snap2)
    entry = r.index.get(snap2.tree)
    assert entry is not None and entry.type == BlobType.TREE
    (t.repo / pack_name(entry.pack_id)).unlink()
    res = cli("--json", "check")
    assert res.code == 20
    doc = res.json()
    assert t.snap2 in doc["affected"]
    assert any(e["kind"] == "tree" for e in doc["errors"]), doc["errors"]


# --- damaged index ---------------------------------------------------------------------------


def index_file_listing(repo: Path, pack_id: str) -> Path:
    """The index file that lists the pack ``pack_id``."""
    r = Repository.open(LocalStore(repo), PASSWORD.encode())
    for path in sorted((repo / "index").iterdir()):
        packs = decode_index(r.envelope, path.read_bytes())
        if any(p.hex() == pack_id for p, _ in packs):
            return path
    raise AssertionError(f"no index file lists pack {pack_id}")


def test_flipped_byte_in_index_file(two_snapshots: TwoSnapshots, cli: Cli, tmp_path: Path) -> None:
    """One damaged index file blocks nothing: check names it and the repair, restores of
    what other index files list work, a backup stores again what only the damaged file
    listed, and `repair index` brings every snapshot back from the packs' headers."""
    t = two_snapshots
    loc = locate_blob(t.repo, t.snap2, t.only2)
    damaged = index_file_listing(t.repo, loc.pack_id)
    assert len(list((t.repo / "index").iterdir())) >= 2
    flip_byte(damaged, damaged.stat().st_size // 2)

    res = cli("check")
    assert res.code == 20, res.out + res.err
    assert f"index/{damaged.name}" in res.out
    assert "stackvault repair index" in res.out
    res = cli("--json", "check")
    assert res.code == 20
    doc = res.json()
    assert any(e["kind"] == "index" and e["name"] == f"index/{damaged.name}" for e in doc["errors"])
    assert doc["repairs"][0] == "stackvault repair index"

    # The first snapshot's data is listed by the intact index file: it restores.
    res = cli("restore", t.snap1, "--target", tmp_path / "r1")
    assert res.code == 0, res.out + res.err
    assert damaged.name[:12] in res.err and "repair index" in res.err
    assert restored_state(tmp_path / "r1", t.src) == t.state1

    # A backup heals: what only the damaged file listed is stored again, the new snapshot is
    # whole.
    res = cli("--json", "backup", t.src)
    assert res.code == 0, res.out + res.err
    healed = res.json()["id"]
    assert res.json()["summary"]["data_added"] >= 3 * MIB
    res = cli("restore", healed, "--target", tmp_path / "r2", "--verify")
    assert res.code == 0, res.out + res.err
    assert restored_state(tmp_path / "r2", t.src) == t.state2

    res = cli("--json", "repair", "index")
    assert res.code == 0, res.out + res.err
    doc = res.json()
    assert doc["damaged_index"] == [f"index/{damaged.name}"]
    assert doc["headers_read"] >= 1 and doc["unreadable"] == {} and doc["blobs_lost"] == 0
    assert not damaged.exists()
    res = cli("check", "--read-data")
    assert res.code == 0, res.out + res.err
    res = cli("restore", t.snap2, "--target", tmp_path / "r3", "--verify")
    assert res.code == 0, res.out + res.err
    assert restored_state(tmp_path / "r3", t.src) == t.state2


@pytest.mark.parametrize("damage", ["kept-snapshot", "forgotten-snapshot"])
def test_prune_with_a_damaged_index_file(
    two_snapshots: TwoSnapshots, cli: Cli, tmp_path: Path, damage: str
) -> None:
    """Following the old advice (forget, prune) with an index file damaged: prune reads the
    headers of the packs the index does not list, indexes again those a kept snapshot uses,
    and deletes only packs whose headers show nothing used — reporting their bytes."""
    t = two_snapshots
    victim = t.snap2 if damage == "kept-snapshot" else t.snap1
    only = t.only2 if damage == "kept-snapshot" else t.only1
    loc = locate_blob(t.repo, victim, only)
    flip_byte(index_file_listing(t.repo, loc.pack_id), 100)
    assert cli("forget", t.snap1).code == 0
    res = cli("--json", "prune", "--safety-margin", "0")
    assert res.code == 0, res.out + res.err
    doc = res.json()
    if damage == "kept-snapshot":
        assert doc["packs_reindexed"] >= 1 and loc.pack.exists()
    else:
        # The pack also holds shared data: indexed again, then repacked without only1.bin.
        assert not loc.pack.exists()
        assert doc["packs_reindexed"] + doc["unindexed_packs_deleted"] >= 1
        assert doc["bytes_freed"] >= 3 * MIB
    assert doc["damaged_index_replaced"] == 1
    res = cli("check", "--read-data")
    assert res.code == 0, res.out + res.err
    res = cli("restore", t.snap2, "--target", tmp_path / "r", "--verify")
    assert res.code == 0, res.out + res.err
    assert restored_state(tmp_path / "r", t.src) == t.state2


def test_prune_never_deletes_an_unindexed_pack_it_cannot_read(
    two_snapshots: TwoSnapshots, cli: Cli
) -> None:
    """A pack the index does not list and whose header cannot be read may hold anything:
    prune refuses when snapshots need blobs it cannot find, and otherwise keeps such a
    pack, saying how to salvage it."""
    t = two_snapshots
    loc = locate_blob(t.repo, t.snap1, t.only1)
    listing = index_file_listing(t.repo, loc.pack_id)
    saved = listing.read_bytes()
    listing.unlink()
    header_at = loc.pack.stat().st_size - 10  # inside the sealed header
    flip_byte(loc.pack, header_at)
    res = cli("prune", "--safety-margin", "0")
    assert res.code == EXIT_INTEGRITY, res.out + res.err
    assert "repair index" in res.err and loc.pack.exists()

    # Unused and unreadable: kept, with a warning that names it.
    flip_byte(loc.pack, header_at)
    listing.write_bytes(saved)
    stray = t.repo / "data" / "ab" / ("ab" + "5" * 62)
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(random.Random(5).randbytes(200_000))
    res = cli("--json", "prune", "--safety-margin", "0")
    assert res.code == 0, res.out + res.err
    assert stray.exists()
    assert res.json()["unreadable_packs_kept"] == [f"data/ab/{stray.name}"]
    assert "repair packs" in res.err and stray.name in res.err


# --- repairs -----------------------------------------------------------------------------------


def test_repair_packs_salvages_and_a_backup_heals(
    two_snapshots: TwoSnapshots, cli: Cli, tmp_path: Path
) -> None:
    """A damaged blob: `check --read-data` names `repair packs`; it copies the pack's good
    blobs and drops the pack; the next backup of the same data stores the lost blob again,
    which makes the old snapshot whole."""
    t = two_snapshots
    loc = locate_blob(t.repo, t.snap2, t.only2)
    flip_byte(loc.pack, loc.offset + loc.length // 2)
    res = cli("--json", "check", "--read-data")
    assert res.code == 20
    repairs = res.json()["repairs"]
    assert repairs[0].startswith("stackvault repair packs ") and loc.pack_id[:16] in repairs[0]

    in_pack = blobs_of_pack(t.repo, loc.pack_id)
    res = cli("--json", "repair", "packs", loc.pack_id[:16])
    assert res.code == 0, res.out + res.err
    doc = res.json()
    assert doc["blobs_lost"] == [loc.blob_id]
    assert doc["blobs_saved"] == len(in_pack) - 1
    assert not loc.pack.exists()

    # The lost blob is no longer indexed: check says which file, backups do not reuse it.
    res = cli("--json", "check")
    assert res.code == 20
    assert res.json()["affected"] == {t.snap2: ["/" + t.only2.lstrip("/")]}
    res = cli("--json", "backup", "--force", t.src)
    assert res.code == 0, res.out + res.err
    assert res.json()["summary"]["data_added"] >= 1
    res = cli("check", "--read-data")
    assert res.code == 0, res.out + res.err
    res = cli("restore", t.snap2, "--target", tmp_path / "r", "--verify")
    assert res.code == 0, res.out + res.err
    assert restored_state(tmp_path / "r", t.src) == t.state2


def test_missing_pack_then_repair_index_then_a_backup_heals(
    two_snapshots: TwoSnapshots, cli: Cli, tmp_path: Path
) -> None:
    """A deleted pack: a backup before any repair must not claim the lost blobs; after
    `repair index` the next backup stores them again."""
    t = two_snapshots
    loc = locate_blob(t.repo, t.snap2, t.only2)
    loc.pack.unlink()
    res = cli("--json", "check")
    assert res.code == 20
    assert res.json()["repairs"][0] == "stackvault repair index"
    res = cli("--json", "repair", "index")
    assert res.code == 0, res.out + res.err
    assert res.json()["missing_packs"] == [f"data/{loc.pack_id[:2]}/{loc.pack_id}"]
    assert res.json()["blobs_lost"] >= 1
    res = cli("--json", "backup", t.src)
    assert res.code == 0, res.out + res.err
    new = res.json()["id"]
    assert res.json()["summary"]["data_added"] >= 3 * MIB
    for snap in (new, t.snap2):  # the new snapshot, and the old one healed by it
        target = tmp_path / snap
        res = cli("restore", snap, "--target", target, "--verify")
        assert res.code == 0, res.out + res.err
        assert restored_state(target, t.src) == t.state2
    res = cli("check", "--read-data")
    assert res.code == 0, res.out + res.err


def test_repair_snapshots_keeps_what_is_left(
    two_snapshots: TwoSnapshots, cli: Cli, tmp_path: Path
) -> None:
    """Data lost for good (a pack deleted, the files gone from the source): `repair
    snapshots` saves a copy of each affected snapshot, tagged `repaired`, without what is
    lost and with everything else; with --forget the damaged originals go."""
    t = two_snapshots
    loc = locate_blob(t.repo, t.snap1, t.only1)
    loc.pack.unlink()
    assert cli("repair", "index").code == 0
    res = cli("--json", "check")
    assert res.code == 20
    affected = res.json()["affected"]
    assert t.snap1 in affected
    res = cli("--json", "repair", "snapshots", "--dry-run")
    assert res.code == 0, res.out + res.err
    planned = {d["snapshot"]: set(d["lost"]) for d in res.json()["snapshots"]}
    assert planned == {snap: set(paths) for snap, paths in affected.items()}
    assert len(list((t.repo / "snapshots").iterdir())) == 2

    res = cli("--json", "repair", "snapshots", "--forget")
    assert res.code == 0, res.out + res.err
    done = res.json()["snapshots"]
    assert {d["snapshot"] for d in done} == set(affected)
    assert all(d["forgotten"] and d["new_id"] for d in done)
    snaps = {s["id"]: s for s in cli("--json", "snapshots").json()}
    assert not set(affected) & set(snaps)
    res = cli("check", "--read-data")
    assert res.code == 0, res.out + res.err
    states = {t.snap1: t.state1, t.snap2: t.state2}
    for d in done:
        assert "repaired" in snaps[d["new_id"]]["tags"]
        target = tmp_path / d["new_id"]
        res = cli("restore", d["new_id"], "--target", target)
        assert res.code == 0, res.out + res.err
        restored = restored_state(target, t.src)
        lost = {Path(p).name for p in d["lost"]}
        original = states[d["snapshot"]]
        kept = {k: v for k, v in original.items() if Path(k).name not in lost}
        assert kept and {k: restored[k] for k in kept} == kept
    assert any(Path(t.only1).name in {Path(p).name for p in d["lost"]} for d in done)


# --- damaged snapshot -----------------------------------------------------------------------


def test_flipped_byte_in_snapshot_file(two_snapshots: TwoSnapshots, cli: Cli) -> None:
    t = two_snapshots
    path = t.repo / "snapshots" / t.snap1
    flip_byte(path, 40)

    res = cli("check")
    assert res.code == 20, res.out + res.err
    assert f"snapshots/{t.snap1}" in res.out

    res = cli("--json", "check")
    assert res.code == 20
    errors = res.json()["errors"]
    assert any(e["kind"] == "snapshot" and e["name"] == f"snapshots/{t.snap1}" for e in errors)

    res = cli("snapshots")
    assert res.code == 20, res.out + res.err
    assert t.snap1[:8] in res.err
    assert "Traceback" not in res.err


def test_damaged_snapshot_does_not_block_restoring_another(
    two_snapshots: TwoSnapshots, cli: Cli, tmp_path: Path
) -> None:
    """One damaged snapshot file must not make every other snapshot unrestorable: the
    intact snapshot named by its id restores."""
    t = two_snapshots
    flip_byte(t.repo / "snapshots" / t.snap1, 40)
    target = tmp_path / "r2"
    res = cli("restore", t.snap2, "--target", target)
    assert res.code == 0, res.out + res.err
    assert restored_state(target, t.src) == t.state2


def test_damaged_snapshot_does_not_block_new_backups(two_snapshots: TwoSnapshots, cli: Cli) -> None:
    """Unattended backups must keep working when an old snapshot file is damaged: the new
    snapshot is saved (the damaged one may be reported, and check keeps failing on it)."""
    t = two_snapshots
    flip_byte(t.repo / "snapshots" / t.snap1, 40)
    (t.src / "new.txt").write_text("new\n")
    res = cli("backup", t.src)
    assert res.code == 0, res.out + res.err
    assert len(list((t.repo / "snapshots").iterdir())) == 3


def test_damaged_snapshot_can_be_forgotten(two_snapshots: TwoSnapshots, cli: Cli) -> None:
    """The way out of a damaged snapshot file is to forget it by its id (its file name);
    afterwards check passes."""
    t = two_snapshots
    flip_byte(t.repo / "snapshots" / t.snap1, 40)
    res = cli("forget", t.snap1)
    assert res.code == 0, res.out + res.err
    assert not (t.repo / "snapshots" / t.snap1).exists()
    res = cli("check")
    assert res.code == 0, res.out + res.err


# --- hostile trees ------------------------------------------------------------------------------


def hostile_snapshot(repo: Path, build: Callable[[Callable[[bytes], Node]], list[Node]]) -> str:
    """Save a snapshot whose root tree is ``build(file_node_factory)``; return its id."""
    r = open_repo(repo)
    writer = r.writer()

    def file_node(name_and_data: bytes) -> Node:
        name, _, data = name_and_data.partition(b"=")
        blob_id, _ = writer.save(BlobType.DATA, data)
        return Node(
            name=os.fsdecode(name),
            type="file",
            mode=0o644,
            size=len(data),
            content=[blob_id],
            sha256=hashlib.sha256(data).hexdigest(),
        )

    def save_tree(nodes: list[Node]) -> bytes:
        tree_id, _ = writer.save(BlobType.TREE, encode_tree(nodes))
        return tree_id

    nodes = build(file_node)
    # `_dir` puts a directory's children (a list of nodes) in `subtree`; save them as a tree.
    for n in nodes:
        if n.type == "dir" and isinstance(n.subtree, list):
            n.subtree = save_tree(n.subtree)
    root = save_tree(nodes)
    writer.flush()
    writer.close()
    snap = Snapshot(time=r.clock.now(), tree=root, paths=["/"], hostname="evil", username="evil")
    return r.save_snapshot(snap)


def _dir(name: str, children: list[Node]) -> Node:
    return Node(name=name, type="dir", mode=0o755, subtree=children)  # type: ignore[arg-type]


HOSTILE: dict[str, Callable[[Callable[[bytes], Node]], list[Node]]] = {
    "dotdot dir": lambda f: [_dir("..", [f(b"escaped.txt=PWNED-1")])],
    "dotdot file": lambda f: [f(b"..=PWNED-2")],
    "slash in name": lambda f: [f(b"../escaped.txt=PWNED-3")],
    "a/b": lambda f: [_dir("a", []), f(b"a/b=PWNED-4")],
    "dot": lambda f: [f(b".=PWNED-5")],
    "nul": lambda f: [f(b"nul\0byte=PWNED-6")],
    "empty name": lambda f: [f(b"=PWNED-7")],
}
# What the error message must quote for each case.
HOSTILE_NAMES = {
    "dotdot dir": "'..'",
    "dotdot file": "'..'",
    "slash in name": "'../escaped.txt'",
    "a/b": "'a/b'",
    "dot": "'.'",
    "nul": "nul\\x00byte",
    "empty name": "''",
}


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path, Path]:
    """An outer directory holding the restore target and a sentinel directory beside it."""
    outer = tmp_path / "outer"
    sentinel = outer / "sentinel"
    sentinel.mkdir(parents=True)
    (sentinel / "keep.txt").write_text("keep")
    return outer, outer / "target", sentinel


def outside_target(outer: Path) -> dict[str, tuple[Any, ...]]:
    return {k: v for k, v in describe(outer).items() if not k.startswith("target")}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tree_is_refused(
    initialised: Path, cli: Cli, arena: tuple[Path, Path, Path], case: str
) -> None:
    outer, target, _ = arena
    before = outside_target(outer)
    snap_id = hostile_snapshot(initialised, HOSTILE[case])
    res = cli("restore", snap_id, "--target", target)
    assert res.code != 0, res.out + res.err
    assert "Traceback" not in res.err and "internal error" not in res.err, res.err
    assert "refusing" in res.err or "unsafe" in res.err, res.err
    assert HOSTILE_NAMES[case] in res.err, res.err
    assert outside_target(outer) == before
    for p in outer.rglob("*"):
        if p.is_file():
            assert b"PWNED" not in p.read_bytes() or p.is_relative_to(target), p


def test_symlink_then_directory_of_the_same_name_is_refused(
    initialised: Path, cli: Cli, arena: tuple[Path, Path, Path]
) -> None:
    """A tree with a symlink ``d`` → the sentinel directory and a directory ``d`` holding a file:
    restoring the file must not follow the symlink out of the target."""
    outer, target, sentinel = arena
    before = outside_target(outer)

    def build(f: Callable[[bytes], Node]) -> list[Node]:
        link = Node(name="d", type="symlink", mode=0o777, target=str(sentinel))
        return [link, _dir("d", [f(b"pwned.txt=PWNED-8")])]

    snap_id = hostile_snapshot(initialised, build)
    res = cli("restore", snap_id, "--target", target)
    assert res.code != 0, res.out + res.err
    assert "Traceback" not in res.err and "internal error" not in res.err, res.err
    assert not (sentinel / "pwned.txt").exists()
    assert outside_target(outer) == before


def test_absolute_symlink_in_snapshot_is_restored_as_a_link_only(
    initialised: Path, cli: Cli, arena: tuple[Path, Path, Path]
) -> None:
    """A symlink pointing outside is legitimate content: it is created verbatim and nothing is
    written through it (a later file of another name stays inside)."""
    outer, target, sentinel = arena
    before = outside_target(outer)

    def build(f: Callable[[bytes], Node]) -> list[Node]:
        return [
            Node(name="link", type="symlink", mode=0o777, target=str(sentinel)),
            f(b"normal.txt=fine"),
        ]

    snap_id = hostile_snapshot(initialised, build)
    res = cli("restore", snap_id, "--target", target)
    assert res.code == 0, res.out + res.err
    assert os.readlink(target / "link") == str(sentinel)
    assert (target / "normal.txt").read_text() == "fine"
    assert outside_target(outer) == before


def test_a_blob_stored_under_another_id_never_restores_wrong_content(
    initialised: Path, cli: Cli, tmp_path: Path
) -> None:
    """A faulty writer that sealed one chunk under another chunk's id: authentication passes,
    the content is wrong. A file with a SHA-256 is checked against it (restore does not hash
    the blob ids again), one without against the ids: neither is left behind, the others
    are restored, and the exit code says repository data is damaged."""
    r = open_repo(initialised)
    writer = r.writer()
    rnd = random.Random(5)
    meant, stored = rnd.randbytes(3000), rnd.randbytes(3000)
    big_head, big_meant, big_stored = (rnd.randbytes(MIB) for _ in range(3))
    liar = r.master.blob_id(meant)
    writer.save(BlobType.DATA, stored, liar)  # `stored` sealed under the id of `meant`
    big_liar = r.master.blob_id(big_meant)
    writer.save(BlobType.DATA, big_stored, big_liar)
    head_id, _ = writer.save(BlobType.DATA, big_head)
    good = b"fine\n"
    good_id, _ = writer.save(BlobType.DATA, good)

    def file(name: str, content: list[bytes], data: bytes, sha: bool = True) -> Node:
        return Node(
            name=name,
            type="file",
            mode=0o644,
            size=len(data),
            content=content,
            sha256=hashlib.sha256(data).hexdigest() if sha else "",
        )

    nodes = [
        file("small", [liar], meant),
        file("big", [head_id, big_liar], big_head + big_meant),  # the large-file path
        file("no-digest", [liar], meant, sha=False),
        file("ok", [good_id], good),
    ]
    root, _ = writer.save(BlobType.TREE, encode_tree(nodes))
    writer.flush()
    writer.close()
    snap_id = r.save_snapshot(
        Snapshot(time=r.clock.now(), tree=root, paths=["/"], hostname="h", username="u")
    )
    target = tmp_path / "out"
    res = cli("restore", snap_id, "--target", target)
    assert res.code == EXIT_INTEGRITY, res.out + res.err
    assert "Traceback" not in res.err, res.err
    assert sorted(p.name for p in target.iterdir()) == ["ok"]
    assert (target / "ok").read_bytes() == good
    assert "small" in res.err and "big" in res.err and "SHA-256" in res.err, res.err
    assert "no-digest" in res.err and "wrong content" in res.err, res.err


# --- prune keeps what is kept ---------------------------------------------------------------


def test_prune_never_breaks_a_kept_snapshot(repo_env: Path, cli: Cli, tmp_path: Path) -> None:
    res = cli(*FAST_INIT, "--pack-size", "1")
    assert res.code == 0, res.err
    src = tmp_path / "src"
    make_tree(src / "base", seed=5, files=8)
    rnd = random.Random(7)
    snaps: list[str] = []
    states: list[dict[str, tuple[Any, ...]]] = []

    def backup() -> None:
        r = cli("--json", "backup", src)
        assert r.code == 0, r.err
        snaps.append(r.json()["id"])
        states.append(describe(src))

    for i in range(5):
        # New data every time, some of it outliving the next snapshots, some not.
        (src / f"gen{i}-keep.bin").write_bytes(rnd.randbytes(700 * 1024))
        (src / f"gen{i}-temp.bin").write_bytes(rnd.randbytes(900 * 1024))
        (src / f"gen{i}.txt").write_text(f"generation {i}\n" * (1000 * (i + 1)))
        if i >= 1:
            (src / f"gen{i - 1}-temp.bin").unlink()
        if i == 3:
            shutil.rmtree(src / "base" / "docs" / "deep")
        backup()

    keep = {snaps[1], snaps[4]}
    before = sum(p.stat().st_size for p in (repo_env / "data").rglob("*") if p.is_file())
    res = cli("forget", snaps[0], snaps[2], snaps[3])
    assert res.code == 0, res.out + res.err
    res = cli("--json", "prune", "--safety-margin", "0")
    assert res.code == 0, res.out + res.err
    pruned = res.json()
    assert pruned["packs_deleted"] >= 1
    assert pruned["packs_repacked"] >= 1, pruned
    after = sum(p.stat().st_size for p in (repo_env / "data").rglob("*") if p.is_file())
    assert after < before

    res = cli("--json", "check", "--read-data")
    assert res.code == 0, res.out + res.err
    doc = res.json()
    assert doc["ok"] and doc["snapshots"] == 2 and doc["notices"] == []

    res = cli("--json", "snapshots")
    assert {s["id"] for s in res.json()} == keep
    for idx in (1, 4):
        target = tmp_path / f"restore{idx}"
        res = cli("restore", snaps[idx], "--target", target, "--verify")
        assert res.code == 0, res.out + res.err
        assert restored_state(target, src) == states[idx]

    # A second prune has nothing left to do.
    res = cli("--json", "prune", "--safety-margin", "0")
    assert res.code == 0
    assert res.json()["packs_deleted"] == 0 and res.json()["packs_repacked"] == 0


def test_check_reports_json_counts(two_snapshots: TwoSnapshots, cli: Cli) -> None:
    res = cli("--json", "check", "--read-data")
    assert res.code == 0
    doc = res.json()
    assert doc["ok"] is True and doc["errors"] == [] and doc["affected"] == {}
    assert doc["snapshots"] == 2
    packs = [p for p in (two_snapshots.repo / "data").rglob("*") if p.is_file()]
    assert doc["packs"] == doc["packs_read"] == len(packs)
    assert doc["bytes_read"] == sum(p.stat().st_size for p in packs)
    json.dumps(doc)


# --- snapshots this version did not write -------------------------------------------------------


def plant_snapshot(repo: Path, edit: Callable[[dict[str, Any]], None]) -> str:
    """Store a copy of the newest snapshot's document, changed by ``edit``, as a snapshot
    (sealed with the repository's key, as another program holding it would)."""
    r = open_repo(repo)
    doc = r.list_snapshots()[-1].to_json()
    edit(doc)
    data = r.envelope.seal(json.dumps(doc).encode(), SNAPSHOT_AAD)
    snap_id = storage_id(data).hex()
    r.store.put(f"snapshots/{snap_id}", data)
    return snap_id


def test_snapshot_of_a_newer_format_is_skipped_with_a_notice(
    two_snapshots: TwoSnapshots, cli: Cli, tmp_path: Path
) -> None:
    t = two_snapshots
    newer = plant_snapshot(t.repo, lambda d: d.update(version=2))
    res = cli("--json", "snapshots")
    assert res.code == 0, res.out + res.err
    assert {s["id"] for s in res.json()} == {t.snap1, t.snap2}
    assert newer[:8] in res.err and "newer version" in res.err
    res = cli("restore", "latest", "--target", tmp_path / "r")
    assert res.code == 0, res.out + res.err
    # Prune cannot know what such a snapshot needs: it refuses, naming it.
    res = cli("prune", "--safety-margin", "0")
    assert res.code != 0 and newer[:8] in res.err and "Traceback" not in res.err


def test_snapshot_time_without_zone_is_taken_as_utc(two_snapshots: TwoSnapshots, cli: Cli) -> None:
    t = two_snapshots

    def naive(doc: dict[str, Any]) -> None:
        doc["time"] = "2031-01-02T03:04:05"

    planted = plant_snapshot(t.repo, naive)
    res = cli("--json", "snapshots")
    assert res.code == 0, res.out + res.err
    listed = {s["id"]: s for s in res.json()}
    assert set(listed) == {t.snap1, t.snap2, planted}
    assert listed[planted]["time"].startswith("2031-01-02T03:04:05")
    assert list(listed)[-1] == planted  # sorted with the others, newest last
    res = cli("forget", "--keep-last", "1", "--dry-run")
    assert res.code == 0, res.out + res.err


# --- a damaged tree blob ------------------------------------------------------------------------


def test_damaged_directory_listing_loses_only_that_directory(
    two_snapshots: TwoSnapshots, cli: Cli, tmp_path: Path
) -> None:
    """The tree of ``shared/`` is damaged: restore, ls and export do everything else, name
    the directory and exit 20 at the end; a restore that does not need it succeeds."""
    t = two_snapshots
    r = open_repo(t.repo)
    snap = r.find_snapshot(t.snap2)
    shared = str(t.src / "shared")
    node = next(n for p, n in r.iter_tree(snap.tree) if p == shared)
    assert node.subtree is not None
    entry = r.index.get(node.subtree)
    assert entry is not None
    flip_byte(t.repo / pack_name(entry.pack_id), entry.offset + entry.length // 2)

    target = tmp_path / "r"
    res = cli("restore", t.snap2, "--target", target)
    assert res.code == EXIT_INTEGRITY, res.out + res.err
    assert "shared/" in res.err and "Traceback" not in res.err
    only2 = inside(target, t.src) / "only2.bin"
    assert only2.read_bytes() == Path(t.only2).read_bytes()
    assert (inside(target, t.src) / "shared").is_dir()
    assert not any((inside(target, t.src) / "shared").iterdir())

    res = cli("restore", t.snap2, "--target", tmp_path / "one", "--include", t.only2)
    assert res.code == 0, res.out + res.err
    assert (inside(tmp_path / "one", t.src) / "only2.bin").read_bytes() == only2.read_bytes()

    res = cli("--json", "ls", t.snap2)
    assert res.code == EXIT_INTEGRITY, res.err
    listed = {e["path"] for e in res.json()}
    assert t.only2 in listed and shared in listed
    assert not any(p.startswith(shared + "/") for p in listed)
    assert shared in res.err

    tar = tmp_path / "out.tar"
    res = cli("export", t.snap2, "--output", tar)
    assert res.code == EXIT_INTEGRITY, res.out + res.err
    import tarfile

    with tarfile.open(tar) as archive:
        names = archive.getnames()
    assert t.only2.lstrip("/") in names and shared.lstrip("/") in names


def test_owner_beyond_this_systems_range_is_a_notice(
    initialised: Path, cli: Cli, tmp_path: Path
) -> None:
    """A tree from another system may hold a uid or gid this platform cannot represent: the
    entries are restored (owned by the restoring user) with a notice each, not a crash."""

    def build(f: Callable[[bytes], Node]) -> list[Node]:
        big = f(b"big-owner.txt=data of a file owned by uid 2**40")
        big.uid, big.gid = 2**40, 2**33
        negative = f(b"negative.txt=negative owner")
        negative.uid = -7
        link = Node(name="link", type="symlink", target="big-owner.txt", uid=2**40)
        sub = _dir("sub", [f(b"inner.txt=inner")])
        sub.uid = 2**35
        return [big, negative, link, sub]

    snap = hostile_snapshot(initialised, build)
    target = tmp_path / "r"
    res = cli("restore", snap, "--target", target, "--verify")
    assert res.code == 0, res.out + res.err
    assert "Traceback" not in res.err and "internal error" not in res.err
    assert (target / "big-owner.txt").read_text() == "data of a file owned by uid 2**40"
    assert (target / "sub" / "inner.txt").read_text() == "inner"
    assert os.readlink(target / "link") == "big-owner.txt"
    for name in ("big-owner.txt", "negative.txt", "link", "sub"):
        assert f"'{name}': cannot restore owner" in res.err, res.err
    assert (target / "big-owner.txt").stat().st_uid == os.getuid()
    res = cli("ls", "-l", snap)
    assert res.code == 0 and "big-owner.txt" in res.out, res.err


def test_a_backup_after_a_pack_vanished_stores_its_data_again(
    two_snapshots: TwoSnapshots, cli: Cli, tmp_path: Path
) -> None:
    """No repair run yet: the backup must not reuse blobs of the missing pack (nor the
    parent's files that need them); its snapshot restores whole, and so does the old one
    whose data it stored again."""
    t = two_snapshots
    loc = locate_blob(t.repo, t.snap2, t.only2)
    loc.pack.unlink()
    for args in (("backup", t.src), ("backup", "--force", t.src)):
        res = cli("--json", *args)
        assert res.code == 0, res.out + res.err
        assert "pack(s) the index lists are missing" in res.err and "repair index" in res.err
        target = tmp_path / res.json()["id"]
        res = cli("restore", res.json()["id"], "--target", target, "--verify")
        assert res.code == 0, res.out + res.err
        assert restored_state(target, t.src) == t.state2
    res = cli("restore", t.snap2, "--target", tmp_path / "old", "--verify")
    assert res.code == 0, res.out + res.err
    assert restored_state(tmp_path / "old", t.src) == t.state2
