"""`stackvault run JOB` end to end: a path job of a configuration file into a local primary
and a local copy — snapshots tagged ``job:NAME``, copies, run records in both, retention,
a copy that fails and is completed by the next run, a failing before hook, the check when due.

Real files and repositories in ``tmp_path``, the real CLI in-process (``cli`` fixture).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import PASSWORD, Result, make_tree
from stackvault.errors import EXIT_ERROR, EXIT_INCOMPLETE
from stackvault.records.run import RunRecord
from support.jobrepos import COPY_PASSWORD, open_local, primary_and_copy

Cli = Callable[..., Result]


def write_config(
    tmp_path: Path, *, hooks: str = "", every: str = "1d", copy_env: str = "SV_COPY_PW"
) -> Path:
    """A path job ``etc`` into ``primary`` (keep-last 1) with the copy ``offsite`` (keep-last 5)."""
    config = tmp_path / "stackvault.yaml"
    config.write_text(
        f"""\
repositories:
  primary:
    url: {tmp_path / "primary"}
    password_env: SV_PRIMARY_PW
  offsite:
    url: {tmp_path / "offsite"}
    password_env: {copy_env}
jobs:
  etc:
    paths: [{tmp_path / "data"}]
    policy: tier3
    repository: primary
    copies: [offsite]
    retention:
      primary: {{keep-last: 1}}
      default: {{keep-last: 5}}
    check: {{every: {every}, read_data_subset: 1/2}}
{hooks}"""
    )
    return config


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Both repositories initialised (their own passwords), the data, the configuration."""
    primary_and_copy(tmp_path, PASSWORD.encode(), monkeypatch)
    make_tree(tmp_path / "data", files=5)
    return write_config(tmp_path)


def job_snapshots(path: Path, password: str) -> list[Any]:
    return [s for s in open_local(path, password).list_snapshots() if "job:etc" in s.tags]


def runs(path: Path, password: str) -> list[RunRecord]:
    return open_local(path, password).list_runs(job="etc")


def steps(record: RunRecord) -> list[tuple[str, str | None, str]]:
    return [(s.name, s.repository, s.result) for s in record.steps]


def test_run_backs_up_copies_records_and_applies_retention(
    setup: Path, tmp_path: Path, cli: Cli
) -> None:
    res = cli("run", "etc", "--config", setup, "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["result"] == "ok" and doc["trigger"] == "manual"
    assert doc["recorded_in"] == ["primary", "offsite"]
    assert [(s["name"], s["repository"], s["result"]) for s in doc["steps"]] == [
        ("backup", "primary", "ok"),
        ("copy", "offsite", "ok"),
        ("forget", "primary", "ok"),
        ("prune", "primary", "ok"),
        ("forget", "offsite", "ok"),
        ("prune", "offsite", "ok"),
        ("check", "primary", "ok"),
        ("check", "offsite", "ok"),
    ]
    backup, copy = doc["steps"][0], doc["steps"][1]
    assert backup["location"] == str(tmp_path / "primary")
    assert backup["bytes_added"] > 0 and copy["bytes_added"] > 0
    (primary_snap,) = job_snapshots(tmp_path / "primary", PASSWORD)
    (copied,) = job_snapshots(tmp_path / "offsite", COPY_PASSWORD)
    assert backup["snapshot"] == primary_snap.id
    assert copy["snapshot"] == copied.id and copied.original == primary_snap.id
    for path, password in ((tmp_path / "primary", PASSWORD), (tmp_path / "offsite", COPY_PASSWORD)):
        (record,) = runs(path, password)
        assert record.id == doc["id"] and record.result == "ok"

    # The second run: retention keeps 1 in the primary, 5 in the copy; the check is not due.
    (tmp_path / "data" / "new.txt").write_text("changed\n")
    res = cli("run", "etc", "--config", setup, "--trigger", "schedule")
    assert res.code == 0, res.err
    assert "check primary: not due" in res.err
    lines = res.out.splitlines()
    assert lines[0].startswith("backup primary: ok, snapshot ")
    assert lines[-1].endswith("of job etc: ok")
    (kept,) = job_snapshots(tmp_path / "primary", PASSWORD)
    assert kept.id != primary_snap.id
    assert len(job_snapshots(tmp_path / "offsite", COPY_PASSWORD)) == 2
    second = runs(tmp_path / "primary", PASSWORD)[-1]
    assert second.trigger == "schedule"
    assert [s for s in second.steps if s.name == "check"] == []
    forget = [s for s in second.steps if s.name == "forget" and s.repository == "primary"]
    assert forget[0].details is not None and forget[0].details["removed"] == 1


def test_failed_copy_is_partial_and_the_next_run_completes_it(
    setup: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SV_COPY_PW", "not the copy's password")
    res = cli("run", "etc", "--config", setup)
    assert res.code == EXIT_INCOMPLETE, res.err
    assert "Traceback" not in res.err
    assert "error: copy offsite: failed" in res.err
    assert "wrong password for the 'offsite' repository" in res.err
    assert "check repositories.offsite in the configuration file" in res.err
    assert res.out.splitlines()[-1].endswith("of job etc: partial")
    assert len(job_snapshots(tmp_path / "primary", PASSWORD)) == 1
    (record,) = runs(tmp_path / "primary", PASSWORD)
    assert record.result == "partial"
    assert steps(record)[:2] == [("backup", "primary", "ok"), ("copy", "offsite", "failed")]
    assert "wrong password" in (record.steps[1].error or "")

    monkeypatch.setenv("SV_COPY_PW", COPY_PASSWORD)
    res = cli("run", "etc", "--config", setup, "--json")
    assert res.code == 0, res.err
    copy = next(s for s in res.json()["steps"] if s["name"] == "copy")
    # Both job snapshots were copied: the one the failed run left and the new one; then the
    # primary's retention (keep-last 1) removed the older one there, not in the copy.
    assert copy["result"] == "ok" and copy["details"] == {"copied": 2, "already_there": 0}
    assert len(job_snapshots(tmp_path / "offsite", COPY_PASSWORD)) == 2
    assert len(job_snapshots(tmp_path / "primary", PASSWORD)) == 1


def test_missing_copy_repository_is_named(setup: Path, tmp_path: Path, cli: Cli) -> None:
    import shutil

    shutil.rmtree(tmp_path / "offsite")
    res = cli("run", "etc", "--config", setup, "--json")
    assert res.code == EXIT_INCOMPLETE
    doc = res.json()
    failed = [s for s in doc["steps"] if s["result"] != "ok"]
    assert [(s["name"], s["repository"]) for s in failed] == [("copy", "offsite")]
    assert failed[0]["error"].startswith("'offsite' repository: ")
    assert doc["recorded_in"] == ["primary"]


def test_failing_before_hook_fails_the_run_and_runs_on_failure(
    tmp_path: Path, setup: Path, cli: Cli
) -> None:
    marker = tmp_path / "on-failure-ran"
    config = write_config(
        tmp_path,
        hooks=f"""\
    hooks:
      before: "echo preparing; echo cannot prepare >&2; exit 4"
      after: "touch {tmp_path / "after-ran"}"
      on_failure: "touch {marker}"
""",
    )
    res = cli("run", "etc", "--config", config)
    assert res.code == EXIT_ERROR
    assert "Traceback" not in res.err
    assert "preflight: failed" in res.err and "exited with status 4" in res.err
    assert "[hook before] preparing\n" in res.err
    assert "[hook before] cannot prepare\n" in res.err
    assert marker.exists() and not (tmp_path / "after-ran").exists()
    assert job_snapshots(tmp_path / "primary", PASSWORD) == []
    (record,) = runs(tmp_path / "primary", PASSWORD)
    assert record.result == "failed"
    assert steps(record) == [("preflight", None, "failed")]
    assert record.steps[0].details == {"hook": "before", "output": "cannot prepare"}
    assert runs(tmp_path / "offsite", COPY_PASSWORD) == []


def test_after_hook_runs_on_success(tmp_path: Path, setup: Path, cli: Cli) -> None:
    config = write_config(
        tmp_path, hooks=f'    hooks:\n      after: "touch {tmp_path / "after-ran"}"\n'
    )
    res = cli("run", "etc", "--config", config)
    assert res.code == 0, res.err
    assert (tmp_path / "after-ran").exists()
    assert "hook after: ok" in res.out


def test_hook_output_is_shown_prefixed_and_kept_in_the_report(
    tmp_path: Path, setup: Path, cli: Cli
) -> None:
    """Every line a hook prints reaches stderr as ``[hook KIND] line``, and the --json report
    keeps it (``log``): both its last 64 KiB when it printed more."""
    config = write_config(
        tmp_path,
        hooks="""\
    hooks:
      before: "echo dumping; echo slow disk >&2"
      after: "seq 1 20000"
""",
    )
    res = cli("run", "etc", "--config", config, "--json")
    assert res.code == 0, res.err
    assert "[hook before] dumping\n[hook before] slow disk\n" in res.err
    assert "[hook after] [...]\n" in res.err and res.err.endswith("[hook after] 20000\n")
    assert "[hook after] 1\n" not in res.err
    before, after = res.json()["hooks"]
    assert before["log"] == "dumping\nslow disk\n"
    assert before["output"] == "slow disk"
    assert after["log"].startswith("[...]\n") and after["log"].endswith("\n19999\n20000\n")
    assert len(after["log"]) <= 64 * 1024 + len("[...]\n")
    kept = after["log"].splitlines()[1:]
    assert kept == [str(n) for n in range(int(kept[0]), 20001)], "whole lines, the last ones"


def test_unknown_job_is_one_line(setup: Path, cli: Cli) -> None:
    res = cli("run", "nope", "--config", setup)
    assert res.code != 0
    assert res.err.count("\n") == 1 and res.err.startswith("stackvault: error: ")


def test_sigterm_stops_the_run_and_records_it_interrupted(tmp_path: Path, setup: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    started = tmp_path / "hook-started"
    config = write_config(
        tmp_path, hooks=f'    hooks:\n      before: "touch {started}; sleep 30"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "stackvault", "run", "etc", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 20
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "preflight: interrupted" in err
    assert out.splitlines()[-1].endswith("of job etc: interrupted")
    (record,) = runs(tmp_path / "primary", PASSWORD)
    assert record.result == "interrupted"
    assert steps(record) == [("preflight", None, "interrupted")]
    assert job_snapshots(tmp_path / "primary", PASSWORD) == []


def test_missing_primary_fails_the_run_and_says_it_is_not_recorded(
    setup: Path, tmp_path: Path, cli: Cli
) -> None:
    import shutil

    shutil.rmtree(tmp_path / "primary")
    res = cli("run", "etc", "--config", setup)
    assert res.code == EXIT_ERROR
    assert "Traceback" not in res.err
    assert "error: backup primary: failed" in res.err
    assert "there is no stackvault repository at" in res.err
    assert "could not be recorded in primary: it could not be opened" in res.err
    assert runs(tmp_path / "offsite", COPY_PASSWORD) == []  # the copy was not touched
