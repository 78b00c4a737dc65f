"""Markers for the real servers a test needs (pytest plugin, registered in tests/conftest.py).

Every test carries the marker of each server it starts, so that ``pytest -m "not docker"``
(or ``make unit``: no server at all) selects exactly the tests that can run without it:

========== ==========================================================================
marker     the server (and the session fixtures that start it)
========== ==========================================================================
postgres   PostgreSQL on the host or in a container (``pg_server``, ``pg_container``)
mariadb    MariaDB on the host or in a container (``mariadb_server``, ``mariadb_container``)
redis      Redis on the host or in a container (``redis_server``, ``redis_container``)
docker     the private Docker engine (``docker_engine``)
s3         the SeaweedFS S3 server (``s3_server``)
========== ==========================================================================

A test that uses one of these fixtures, directly or through other fixtures, gets the marker
at collection (`SERVER_FIXTURES`, read from ``item.fixturenames``). A test that asks for
one at run time (``request.getfixturevalue``) or starts a server itself (``RedisServer()``)
carries the marker explicitly (``pytest.param(..., marks=pytest.mark.redis)``,
``@pytest.mark.redis``). A missing marker cannot go unnoticed: the servers' ``start``
methods call `require_server`, and every fixture set up for a test that is or directly
depends on a server fixture is checked (`pytest_fixture_setup`); either fails the test.

The terminal summary lists the servers the session started (``no test server was started``
when none was).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

import pytest

SERVER_MARKERS = ("postgres", "mariadb", "redis", "docker", "s3")
"""The server markers (declared with their meaning in pyproject's ``markers``)."""

SERVER_FIXTURES: dict[str, str] = {
    "pg_server": "postgres",
    "pg_container": "postgres",
    "mariadb_server": "mariadb",
    "mariadb_container": "mariadb",
    "redis_server": "redis",
    "redis_container": "redis",
    "docker_engine": "docker",
    "docker_client": "docker",
    "host_image": "docker",
    "s3_server": "s3",
}
"""The session fixtures that start a server (or stand for one) → the marker of the tests that
use them."""

NO_SERVERS = "not (" + " or ".join(SERVER_MARKERS) + ")"
"""The ``-m`` expression of the tests that need no server (``make unit``)."""

_current: pytest.Item | None = None
_started: collections.Counter[str] = collections.Counter()
_missing: dict[str, list[str]] = {}
"""Test id → what it did without the marker (reported as its failure)."""


_KINDS = {"postgresql": "postgres", "mariadb": "mariadb", "redis": "redis"}


def require_server(kind: str, what: str) -> None:
    """Called as a test server starts (``kind``: a marker, or a server class's ``kind`` such
    as ``PostgreSQL``): fail the running test unless it carries the marker (outside a test,
    e.g. in a script, do nothing)."""
    marker = _KINDS.get(kind.lower(), kind.lower())
    if marker not in SERVER_MARKERS:
        raise ValueError(f"no marker for {kind!r} servers")
    if _current is not None:
        problem = _unmarked(_current, marker, f"starts {what}")
        if problem:
            pytest.fail(problem, pytrace=False)  # before the server starts
        _started[what] += 1


def _unmarked(item: pytest.Item, marker: str, doing: str) -> str:
    """What is wrong if ``item`` does ``doing`` without ``marker``; empty if it has it."""
    if item.get_closest_marker(marker) is not None:
        return ""
    return (
        f"{item.nodeid} {doing} but has no {marker!r} marker; mark it "
        f"(@pytest.mark.{marker}, or pytest.param(..., marks=pytest.mark.{marker}) for a "
        f"parameter that asks for the server at run time) so that -m 'not {marker}' leaves "
        "it out"
    )


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in SERVER_FIXTURES.items():
            if fixture in names and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[object]) -> None:
    """A fixture set up for a test (also through ``request.getfixturevalue``) that is, or
    directly depends on, a server fixture: the test must carry its marker. This catches a
    test asking at run time for a server that an earlier test started (``pg_env``,
    ``s3_env``, ``docker_env`` are set up for every test). Raising here would leave the
    fixture half set up, so the test is failed in its report instead."""
    if _current is None:
        return
    for name in (fixturedef.argname, *fixturedef.argnames):
        marker = SERVER_FIXTURES.get(name)
        if marker is None:
            continue
        problem = _unmarked(_current, marker, f"uses the fixture {fixturedef.argname!r}")
        found = _missing.setdefault(_current.nodeid, [])
        if problem and problem not in found:
            found.append(problem)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    problems = _missing.get(item.nodeid)
    if problems and report.when in ("call", "teardown") and report.passed:
        report.outcome = "failed"
        report.longrepr = "\n".join(problems)
        del _missing[item.nodeid]
    elif problems and report.failed:
        report.sections.append(("server markers", "\n".join(problems)))
        del _missing[item.nodeid]
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    global _current
    _current = item
    try:
        return (yield)
    finally:
        _current = None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _started:
        terminalreporter.write_line("no test server was started")
        return
    started = ", ".join(f"{what} x{n}" for what, n in sorted(_started.items()))
    terminalreporter.write_line(f"test servers started: {started}")
