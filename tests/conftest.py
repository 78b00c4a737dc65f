"""Shared fixtures: a CLI runner (in-process and as a subprocess) and sample data trees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stackvault.cli.main import main

# see tests/support/: the server fixtures, the server markers, the allowlist of skips
pytest_plugins = [
    "support.servermarks",
    "support.skipguard",
    "support.s3fixtures",
    "support.servicefixtures",
]

PASSWORD = "correct horse battery staple"
# Cheap key derivation keeps each repository open at a few milliseconds in tests.
FAST_INIT = ["init", "--kdf-memory", "8", "--kdf-iterations", "1"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def assert_one_line_error(res: Result) -> str:
    """The run failed with exactly one ``stackvault: error:`` line and no traceback."""
    assert res.code != 0
    assert "Traceback" not in res.err
    lines = res.err.strip().splitlines()
    assert len(lines) == 1, res.err
    assert lines[0].startswith("stackvault: error: "), res.err
    return lines[0]


@pytest.fixture
def repo_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Environment pointing at a fresh (not yet initialised) repository path."""
    repo = tmp_path / "repo"
    monkeypatch.setenv("STACKVAULT_REPOSITORY", str(repo))
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD)
    monkeypatch.delenv("STACKVAULT_PASSWORD_FILE", raising=False)
    return repo


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run the CLI in-process: ``cli("backup", path)`` → `Result` (exit code, stdout, stderr)."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture
def initialised(repo_env: Path, cli: Callable[..., Result]) -> Path:
    """A fresh repository, initialised with `PASSWORD`."""
    res = cli(*FAST_INIT)
    assert res.code == 0, res.err
    return repo_env


def run_subprocess(*args: str, env: dict[str, str] | None = None, **kw: Any) -> Result:
    """Run ``python -m stackvault`` as a separate process (for signals and kill -9)."""
    proc = subprocess.run(
        [sys.executable, "-m", "stackvault", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
        **kw,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def make_tree(root: Path, seed: int = 1, files: int = 30) -> Path:
    """A small tree with text, binary, empty files, a symlink, a hard link and an empty dir."""
    import random

    rnd = random.Random(seed)
    (root / "docs" / "deep" / "er").mkdir(parents=True, exist_ok=True)
    (root / "empty").mkdir(exist_ok=True)
    for i in range(files):
        (root / "docs" / f"note-{i}.txt").write_text(f"note {i}\n" * rnd.randint(1, 500))
    (root / "docs" / "deep" / "er" / "big.bin").write_bytes(rnd.randbytes(3 * 1024 * 1024))
    (root / "zero.bin").write_bytes(b"")
    link = root / "link-to-docs"
    if not link.is_symlink():
        link.symlink_to("docs")
    hard = root / "docs" / "hard.txt"
    if not hard.exists():
        os.link(root / "docs" / "note-0.txt", hard)
    os.chmod(root / "docs" / "note-1.txt", 0o640)
    return root


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def describe(root: Path) -> dict[str, tuple[Any, ...]]:
    """Relative path → (kind, mode, sha256 or link text) for everything below ``root``."""
    import stat

    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), sha256_file(p))
    return out


def inside(target: Path, src: Path) -> Path:
    """Where an absolute source path lands below a restore target."""
    return target / str(src).lstrip("/")


@pytest.fixture
def tmpfs_below(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    mounted: list[Path] = []

    def mount(where: Path) -> None:
        where.mkdir(parents=True)
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root and mount(8)")
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip()}")
        mounted.append(where)

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=True)
