"""The test suite's own rules (tests/support/servermarks.py, tests/support/skipguard.py): every
server marker is declared and left out by ``make unit``; every fixture that starts a server
exists and maps to one; the skip allowlist parses and matches whole reasons only."""

from __future__ import annotations

import re
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
