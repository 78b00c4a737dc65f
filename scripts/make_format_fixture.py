"""Write the format fixture: a small version-1 repository made by today's code, with its
password and a manifest of what it holds (tests/fixtures/repo-v1/, read by
tests/unit/test_known_answers.py).

Run once, and again only on purpose: the repository's bytes differ on every run (keys, salts
and nonces are random), so a new fixture replaces the old one in git; its content (files,
metadata, snapshot times, hosts, paths) is the same every time. The tests never run this.

    .venv/bin/python scripts/make_format_fixture.py [--force] [OUT_DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

from stackvault.chunking.cdc import ChunkerParams
from stackvault.clock import FrozenClock
from stackvault.crypto.kdf import KdfParams
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.store.local import LocalStore

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "repo-v1"
SOURCE = Path("/tmp/stackvault-format-fixture/app")
"""Where the tree is built: a fixed absolute path, because snapshots record it."""
PASSWORD = "format fixture v1"
HOST = "fixture-host"
USER = "fixture"
KDF = KdfParams(memory_kib=8 * 1024, iterations=1, lanes=1)
CHUNKER = ChunkerParams(min=16 * 1024, avg=64 * 1024, max=256 * 1024)
PACK_SIZE = 512 * 1024
FIRST = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
SECOND_AFTER_S = 86400 + 1.5
MTIME_NS = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
UNICODE_NAME = "naïve-日本語.txt"
UNDECODABLE_NAME = os.fsdecode(b"caf\xe9-latin1.bin")
"""A name that is not UTF-8: stored with surrogate escapes (FORMAT.md conventions)."""


def log_lines(seed: int, size: int) -> bytes:
    """``size`` bytes of a deterministic, compressible (~20x with zstd) access log."""
    rnd = random.Random(seed)
    out: list[str] = []
    n = i = 0
    while n < size:
        line = (
            f"2026-01-02T03:{i // 60 % 60:02d}:{i % 60:02d} worker-{rnd.randint(1, 2)} "
            f"GET /api/items/{i} status={rnd.choice([200] * 7 + [404])}\n"
        )
        out.append(line)
        n += len(line)
        i += 1
    return "".join(out).encode()[:size]


def _write(path: Path, data: bytes, mode: int, mtime_ns: int = MTIME_NS) -> None:
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def build_first(root: Path) -> None:
    """The tree of the first snapshot."""
    if root.parent.exists():
        shutil.rmtree(root.parent)
    (root / "sub").mkdir(parents=True)
    (root / "emptydir").mkdir()
    _write(root / "README.txt", b"stackvault format fixture, version 1\n", 0o644)
    _write(root / "empty.dat", b"", 0o600)
    _write(root / "big.log", log_lines(1, 2 * 1024 * 1024), 0o640)
    _write(root / "sub" / "nested.txt", b"nested file\n" * 100, 0o644)
    _write(root / "sub" / UNICODE_NAME, "unicode name, unicode text: ✓\n".encode(), 0o644)
    _write(root / UNDECODABLE_NAME, bytes(range(256)), 0o644)
    _write(root / "hard-1.txt", b"one inode, two names\n", 0o644)
    os.link(root / "hard-1.txt", root / "sub" / "hard-2.txt")
    os.symlink("README.txt", root / "link-to-readme")
    os.symlink("../nowhere/at/all", root / "sub" / "dangling")
    for d in (root / "sub", root / "emptydir", root):
        os.chmod(d, 0o750 if d.name == "emptydir" else 0o755)


def change_for_second(root: Path) -> None:
    """What changes between the two snapshots: a line in the middle of the large file (so
    most of its chunks are shared), a file removed, one added, a mode changed."""
    big = bytearray((root / "big.log").read_bytes())
    middle = len(big) // 2
    big[middle : middle + 12] = b"CHANGED-LINE"
    _write(root / "big.log", bytes(big) + log_lines(2, 4096), 0o640, MTIME_NS + 10**9)
    (root / "sub" / "nested.txt").unlink()
    _write(root / "added.txt", b"added in the second snapshot\n", 0o644, MTIME_NS + 2 * 10**9)
    os.chmod(root / "empty.dat", 0o644)
    for d in (root / "sub", root):
        os.utime(d, ns=(MTIME_NS, MTIME_NS))


def describe(root: Path) -> list[dict[str, Any]]:
    """Every entry below ``root``: path, type, mode, mtime, and the SHA-256 and size of files
    or the target of symlinks; hard links are named by the first path of their inode."""
    out: list[dict[str, Any]] = []
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
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


def snapshot_record(snap: Snapshot, files: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": snap.id,
        "time": snap.time.isoformat(timespec="microseconds"),
        "paths": snap.paths,
        "hostname": snap.hostname,
        "username": snap.username,
        "tags": snap.tags,
        "parent": snap.parent,
        "tree": snap.tree.hex(),
        "files": files,
    }


def generate(out: Path) -> dict[str, Any]:
    repo_dir = out / "repo"
    store = LocalStore(repo_dir)
    store.ensure_root()
    clock = FrozenClock(current=FIRST)
    snapshots: list[dict[str, Any]] = []
    # Key files and snapshots record the host and user: fixed ones, not this machine's.
    with (
        mock.patch("socket.gethostname", return_value=HOST),
        mock.patch("getpass.getuser", return_value=USER),
    ):
        Repository.init(
            store, PASSWORD.encode(), chunker=CHUNKER, pack_size=PACK_SIZE, kdf=KDF, clock=clock
        )
        build_first(SOURCE)
        for step, tags in ((1, ["first"]), (2, ["second", "v1"])):
            if step == 2:
                clock.advance(SECOND_AFTER_S)
                change_for_second(SOURCE)
            repo = Repository.open(store, PASSWORD.encode(), clock=clock)
            repo.load_index()
            options = BackupOptions(paths=[str(SOURCE)], host=HOST, tags=tags, workers=2)
            with repo.lock(exclusive=False, operation="backup"):
                result = BackupJob(repo, options).run()
            assert result.snapshot.complete, result.problems
            snapshots.append(snapshot_record(result.snapshot, describe(SOURCE)))
    shutil.rmtree(SOURCE.parent)
    # git keeps no empty directories (locks/): leave none, so this copy is what git holds.
    for dirpath, _dirs, _files in sorted(os.walk(repo_dir), reverse=True):
        if not os.listdir(dirpath):
            os.rmdir(dirpath)
    objects = sorted(info.name for info in store.list())
    assert not any(n.startswith("locks/") for n in objects)
    return {
        "format_version": 1,
        "generated_by": "scripts/make_format_fixture.py",
        "password_file": "password",
        "source": str(SOURCE),
        "config": {
            "chunker": CHUNKER.to_json(),
            "pack_size": PACK_SIZE,
            "compression": "zstd",
            "created": FIRST.isoformat(),
        },
        "key": {"host": HOST, "username": USER, "kdf_params": KDF.to_json()},
        "objects": {
            prefix: sum(1 for n in objects if n.split("/")[0] == prefix)
            for prefix in ("config", "keys", "data", "index", "snapshots")
        },
        "snapshots": snapshots,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--force", action="store_true", help="replace an existing fixture")
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.exists():
        if not args.force:
            print(f"{out} exists; --force replaces it (and changes every byte)", file=sys.stderr)
            return 1
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "password").write_text(PASSWORD + "\n")
    manifest = generate(out)
    text = json.dumps(manifest, indent=1, ensure_ascii=True, sort_keys=False)
    (out / "manifest.json").write_text(text + "\n")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
