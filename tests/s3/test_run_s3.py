"""`stackvault run JOB` with its copy on the real S3 server (SeaweedFS): the job's snapshot is
copied there, retention and the check run there, and the run's record is stored there."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import FAST_INIT, PASSWORD, Result, make_tree
from stackvault.repo.repository import Repository
from stackvault.store.open import open_store

Cli = Callable[..., Result]


def test_run_copies_into_s3_and_records_there(
    s3_env: object, s3_bucket: str, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    offsite = f"s3://{s3_bucket}/offsite"
    monkeypatch.delenv("STACKVAULT_PASSWORD_FILE", raising=False)
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD)
    for location in (str(tmp_path / "primary"), offsite):
        res = cli("--repo", location, *FAST_INIT)
        assert res.code == 0, res.err
    monkeypatch.delenv("STACKVAULT_PASSWORD")
    monkeypatch.setenv("SV_PW", PASSWORD)
    make_tree(tmp_path / "data", files=5)
    config = tmp_path / "stackvault.yaml"
    config.write_text(
        f"""\
repositories:
  primary: {{url: {tmp_path / "primary"}, password_env: SV_PW}}
  offsite: {{url: "{offsite}", password_env: SV_PW}}
jobs:
  etc:
    paths: [{tmp_path / "data"}]
    policy: tier3
    repository: primary
    copies: [offsite]
"""
    )
    res = cli("run", "etc", "--config", config, "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["recorded_in"] == ["primary", "offsite"]
    steps = {(s["name"], s["repository"]): s for s in doc["steps"]}
    assert set(steps) >= {("copy", "offsite"), ("prune", "offsite"), ("check", "offsite")}
    assert all(s["result"] == "ok" for s in doc["steps"])
    copy = steps[("copy", "offsite")]
    assert copy["location"] == offsite and copy["bytes_added"] > 0

    store = open_store(offsite)
    try:
        repo = Repository.open(store, PASSWORD.encode())
        (snap,) = repo.list_snapshots()
        assert snap.id == copy["snapshot"] and "job:etc" in snap.tags
        (record,) = repo.list_runs(job="etc")
        assert record.id == doc["id"] and record.result == "ok"
    finally:
        store.close()
