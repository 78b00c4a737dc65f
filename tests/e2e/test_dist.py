"""`make dist` builds a wheel and an sdist that install as they are: the wheel, installed into
a new virtual environment (with its dependencies from the package index), gives a
``stackvault`` that runs and names its version, its repository format and its libraries."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from stackvault import __version__
from stackvault.cli.commands.version import LIBRARIES
from stackvault.repo.config import FORMAT_VERSION

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    # the new environment must not see this one: no inherited venv or import path
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_wheel_installs_into_a_clean_virtualenv_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = _run("make", "-C", ROOT, "dist", f"DIST_DIR={dist}")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("stackvault-*.whl")
    (sdist,) = dist.glob("stackvault-*.tar.gz")
    assert wheel.name == f"stackvault-{__version__}-py3-none-any.whl"
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
    top = f"stackvault-{__version__}"
    assert {f"{top}/pyproject.toml", f"{top}/src/stackvault/cli/main.py"} <= names
    assert not any("__pycache__" in n for n in names)

    venv = tmp_path / "venv"
    made = _run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    pip = _run(venv / "bin/pip", "install", "--quiet", "--find-links", dist, wheel, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]

    where = _run(venv / "bin/python", "-c", "import stackvault; print(stackvault.__file__)")
    assert where.stdout.startswith(str(venv)), "the installed copy, not this work tree"
    shown = _run(venv / "bin/stackvault", "version")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:2] == [f"stackvault {__version__}", f"repository format {FORMAT_VERSION}"]
    # the new environment's own versions (the index may hold newer ones than this one has)
    versions = dict(line.split(" ", 1) for line in lines[3:])
    assert set(versions) == set(LIBRARIES), shown.stdout
    assert all(re.fullmatch(r"\d+(\.\d+)+\S*", v) for v in versions.values()), shown.stdout
    short = _run(venv / "bin/stackvault", "--version")
    assert short.stdout == f"stackvault {__version__}\n"
