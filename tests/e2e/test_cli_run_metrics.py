"""`stackvault run JOB --metrics-file PATH`: the job's metrics written after the run, whatever
its result, atomically, with counters that continue from the file replaced; a file that
cannot be written is a warning that leaves the exit status alone.

Real local repositories in ``tmp_path``, the CLI in-process; the file is parsed back with
prometheus-client's parser.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import FAST_INIT, PASSWORD, Result, make_tree

Cli = Callable[..., Result]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def config(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Job etc into primary, copied to offsite (whose password comes from SV_COPY_PW)."""
    monkeypatch.delenv("STACKVAULT_PASSWORD_FILE", raising=False)
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD)
    for name in ("primary", "offsite"):
        res = cli("--repo", tmp_path / name, *FAST_INIT)
        assert res.code == 0, res.err
    monkeypatch.delenv("STACKVAULT_PASSWORD")
    monkeypatch.setenv("SV_PW", PASSWORD)
    monkeypatch.setenv("SV_COPY_PW", PASSWORD)
    make_tree(tmp_path / "data", files=3)
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        f"""\
repositories:
  primary: {{url: {tmp_path / "primary"}, password_env: SV_PW}}
  offsite: {{url: {tmp_path / "offsite"}, password_env: SV_COPY_PW}}
jobs:
  etc:
    paths: [{tmp_path / "data"}]
    policy: tier3
    repository: primary
    copies: [offsite]
"""
    )
    return path


def read(path: Path) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples[(f"stackvault_{name}", tuple(sorted(labels.items())))]


def test_the_metrics_file_after_good_and_partial_runs(
    config: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    prom = tmp_path / "textfile" / "etc.prom"
    prom.parent.mkdir()
    res = cli("run", "etc", "--config", config, "--metrics-file", prom, "--json")
    assert res.code == 0, res.err
    first = res.json()
    got = read(prom)
    assert get(got, "backup_attempt_total", job="etc") == 1
    assert get(got, "backup_success_total", job="etc") == 1
    assert get(got, "backup_last_result", job="etc", result="ok") == 1
    copy = {"job": "etc", "repository": "offsite", "role": "copy"}
    assert get(got, "repository_up", **copy) == 1
    assert get(got, "copy_lag_snapshots", **copy) == 0
    assert get(got, "job_snapshots", **copy) == 1
    stored = first["steps"][0]["bytes_added"]
    assert get(got, "backup_last_stored_bytes", job="etc") == stored

    # The copy cannot be opened now: the run is partial, the copy falls behind.
    monkeypatch.setenv("SV_COPY_PW", "not the password")
    (tmp_path / "data" / "new.txt").write_text("new\n")
    res = cli("run", "etc", "--config", config, "--metrics-file", prom)
    assert res.code == 3, res.err
    got = read(prom)
    assert get(got, "backup_attempt_total", job="etc") == 2  # carried over, plus this run
    assert get(got, "backup_success_total", job="etc") == 1
    assert get(got, "backup_partial_failure_total", job="etc") == 1
    assert get(got, "backup_last_result", job="etc", result="partial") == 1
    assert get(got, "repository_up", **copy) == 0
    primary = {"job": "etc", "repository": "primary", "role": "primary"}
    assert get(got, "job_snapshots", **primary) == 2
    assert get(got, "backup_last_files", job="etc", state="new") == 1
    assert sorted(p.name for p in prom.parent.iterdir()) == ["etc.prom"]  # no temporary left


def test_a_metrics_file_that_cannot_be_written_is_a_warning(
    config: Path, tmp_path: Path, cli: Cli
) -> None:
    prom = tmp_path / "missing-directory" / "etc.prom"
    res = cli("run", "etc", "--config", config, "--metrics-file", prom)
    assert res.code == 0
    assert f"warning: the metrics file {prom} could not be written" in res.err
    assert not prom.parent.exists()
