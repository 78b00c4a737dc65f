"""The test suite's own rules (tests/support/servermarks.py, tests/support/skipguard.py): every
server marker is declared and left out by ``make unit``; every fixture that starts a server
exists and maps to one; the skip allowlist parses and matches whole reasons only."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from support import s3fixtures, servicefixtures
from support.servermarks import NO_SERVERS, SERVER_FIXTURES, SERVER_MARKERS
from support.skipguard import ALLOWLIST, Allowed, allowing, load_allowlist, skip_reason

ROOT = Path(__file__).resolve().parents[2]


def test_every_server_marker_is_declared_in_pyproject() -> None:
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    declared = {line.split(":", 1)[0].strip() for line in ini["markers"]}
    assert set(SERVER_MARKERS) <= declared
    assert "--strict-markers" in ini["addopts"]


def test_make_unit_leaves_out_every_server_marker() -> None:
    makefile = (ROOT / "Makefile").read_text()
    [expression] = re.findall(r"^NO_SERVERS := (.+)$", makefile, re.MULTILINE)
    assert expression == NO_SERVERS
    assert set(re.findall(r"\w+", expression)) == {"not", "or", *SERVER_MARKERS}
    assert re.search(r'^unit: .*\n\t.*pytest -m "\$\(NO_SERVERS\)"', makefile, re.MULTILINE)


def test_every_server_fixture_exists_and_has_a_marker() -> None:
    for fixture, marker in SERVER_FIXTURES.items():
        assert marker in SERVER_MARKERS
        assert hasattr(s3fixtures, fixture) or hasattr(servicefixtures, fixture), fixture
    assert set(SERVER_FIXTURES.values()) == set(SERVER_MARKERS)


def test_the_allowlist_parses_and_matches_whole_reasons() -> None:
    allowed = load_allowlist()
    assert allowed, f"{ALLOWLIST} allows nothing"
    reason = "no O_NOATIME on this platform"
    assert allowing(allowed, reason) is not None
    assert allowing(allowed, reason + " (and more)") is None
    assert allowing(allowed, "cannot mount a tmpfs here: mount: permission denied") is not None
    assert allowing(allowed, "because it is late") is None


def test_skip_reasons_are_read_from_pytest_reports() -> None:
    assert skip_reason(("t.py", 3, "Skipped: no time zone database")) == "no time zone database"
    assert skip_reason("Skipped: odd shape") == "odd shape"


def test_a_bad_allowlist_line_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "allowed.txt"
    bad.write_text("# comment\n\nfine\nbroken (\n")
    with pytest.raises(pytest.UsageError, match=":4: not a regular expression"):
        load_allowlist(bad)
    bad.write_text("# comment\n\nfine\n")
    assert [a.pattern.pattern for a in load_allowlist(bad)] == ["fine"]
    assert isinstance(load_allowlist(bad)[0], Allowed)


# --- the plugins in a pytest run of their own ---------------------------------------------------

INNER = """
import pytest
from support.servermarks import require_server

@pytest.fixture
def redis_server():
    return "a stand-in: the marker comes from the fixture's name"

@pytest.fixture
def redis_env(redis_server):
    return redis_server

def test_plain():
    pass

def test_asks_unmarked(request):
    request.getfixturevalue("redis_env")

@pytest.mark.redis
def test_asks_marked(request):
    request.getfixturevalue("redis_env")

def test_uses_the_fixture(redis_server):
    assert redis_server

def test_starts_unmarked():
    require_server("Redis", "a Redis server")

@pytest.mark.redis
def test_starts_marked():
    require_server("redis", "a Redis server")

def test_allowed_skip():
    pytest.skip("no O_NOATIME on this platform")

def test_unexpected_skip():
    pytest.skip("because it is late")

@pytest.mark.xfail(reason="known", strict=True)
def test_known_failure():
    raise AssertionError
"""


def run_inner(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(INNER)
    argv = [sys.executable, "-m", "pytest", "-p", "support.servermarks", "-p", "support.skipguard"]
    argv += ["-p", "no:cacheprovider", "-q", "-W", "ignore::pytest.PytestUnknownMarkWarning"]
    return subprocess.run(
        [*argv, *args, "test_inner.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_a_fixture_marks_its_tests_and_an_unmarked_start_fails(tmp_path: Path) -> None:
    res = run_inner(tmp_path, "-k", "not skip and not known")
    assert res.returncode == 1, res.stdout + res.stderr
    unmarked = "test_inner.py::test_starts_unmarked starts a Redis server but has no 'redis' marker"
    assert unmarked in res.stdout
    assert "test_inner.py::test_asks_unmarked uses the fixture 'redis_env' but has no 'redis'" in (
        res.stdout
    )
    assert "2 failed, 4 passed" in res.stdout
    assert "test servers started: a Redis server x1" in res.stdout
    res = run_inner(tmp_path, "-m", "not redis", "-k", "plain or fixture or starts_marked")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 passed, 8 deselected" in res.stdout  # the fixture's and the marked test are out
    assert "no test server was started" in res.stdout


def test_an_unexpected_skip_fails_the_run_and_allowed_ones_are_counted(tmp_path: Path) -> None:
    res = run_inner(tmp_path, "-k", "skip or known or plain")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "allowed skip x1: no O_NOATIME on this platform" in res.stdout
    assert "UNEXPECTED SKIP test_inner.py::test_unexpected_skip: because it is late" in res.stdout
    assert "1 passed, 2 skipped" in res.stdout and "1 xfailed" in res.stdout
    res = run_inner(tmp_path, "-k", "allowed_skip or known or plain")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "allowed skip x1: no O_NOATIME on this platform" in res.stdout
    assert "UNEXPECTED" not in res.stdout
    res = run_inner(tmp_path, "-k", "plain")
    assert res.returncode == 0 and "no test was skipped" in res.stdout
