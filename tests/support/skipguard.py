"""An unexpected skip fails the run (pytest plugin, registered in tests/conftest.py).

``tests/skips_allowed.txt`` lists the skips that depend on the machine (not root, no
``O_DIRECT``, no time zone database...): one regular expression a line, matched against the
whole skip reason. At the end of the run the terminal summary prints each allowed reason
that occurred with its count, and one line per skip whose reason matches none of them; any
such skip makes the session fail (exit status 1) even when every test passed. A skip is an
untested feature: a new one is either made a failure or added to the allowlist with the
reason it depends on the environment.

Expected failures (``xfail``) are not skips and are left alone.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ALLOWLIST = Path(__file__).resolve().parent.parent / "skips_allowed.txt"


@dataclass(frozen=True)
class Allowed:
    pattern: re.Pattern[str]
    line: int


def load_allowlist(path: Path = ALLOWLIST) -> list[Allowed]:
    """The patterns of ``path`` (blank lines and ``#`` comments ignored)."""
    allowed: list[Allowed] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            allowed.append(Allowed(re.compile(text), number))
        except re.error as exc:
            raise pytest.UsageError(f"{path}:{number}: not a regular expression: {exc}") from None
    return allowed


def skip_reason(longrepr: object) -> str:
    """The reason of a skip report (pytest's ``(path, line, "Skipped: reason")``)."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ")


def allowing(allowed: list[Allowed], reason: str) -> Allowed | None:
    """The first allowlist entry that matches all of ``reason``."""
    return next((a for a in allowed if a.pattern.fullmatch(reason)), None)


def _is_skip(report: pytest.TestReport | pytest.CollectReport) -> bool:
    return report.skipped and not hasattr(report, "wasxfail")


class SkipGuard:
    """Counts the skips of a session against the allowlist; fails the session on the
    others."""

    def __init__(self, allowed: list[Allowed]) -> None:
        self.allowed = allowed
        self.counts: collections.Counter[str] = collections.Counter()
        self.unexpected: list[tuple[str, str]] = []

    def record(self, nodeid: str, longrepr: object) -> None:
        reason = skip_reason(longrepr)
        entry = allowing(self.allowed, reason)
        if entry is None:
            self.unexpected.append((nodeid, reason))
        else:
            self.counts[entry.pattern.pattern] += 1

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if _is_skip(report):
            self.record(report.nodeid, report.longrepr)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if _is_skip(report):
            self.record(report.nodeid, report.longrepr)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.unexpected and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        tr = terminalreporter
        if not self.counts and not self.unexpected:
            tr.write_line("no test was skipped")
            return
        tr.section("skips")
        for pattern, n in sorted(self.counts.items()):
            tr.write_line(f"allowed skip x{n}: {pattern}")
        for nodeid, reason in self.unexpected:
            tr.write_line(f"UNEXPECTED SKIP {nodeid}: {reason}", red=True, bold=True)
        if self.unexpected:
            tr.write_line(
                f"{len(self.unexpected)} skip(s) not allowed by "
                f"{ALLOWLIST.relative_to(ALLOWLIST.parent.parent)} fail this run",
                red=True,
                bold=True,
            )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipGuard(load_allowlist()), "skipguard")
