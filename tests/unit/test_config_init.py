"""``config init``'s file: what it writes reads back as the job it was given."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackvault.config import load_config
from stackvault.config.render import InitialJob, render_initial

PLAN = "version: 1\nproject: dify\npreset: generic\nconsistency: strict\n"


@pytest.mark.parametrize("policy", ["tier1", "tier2", "tier3"])
def test_the_written_file_passes_the_checks_and_reads_back(tmp_path: Path, policy: str) -> None:
    (tmp_path / "plan.yaml").write_text(PLAN)
    job = InitialJob(
        name="dify",
        repository=str(tmp_path / "repo"),
        copies=("s3://bucket/dify?endpoint=http://127.0.0.1:8333", "/srv/usb"),
        paths=(str(tmp_path / "extra"),),
        sources=("postgres://db.example/app",),
        stack_plan=str(tmp_path / "plan.yaml"),
        password_file="/etc/stackvault/password",
        policy=policy,
    )
    path = tmp_path / "stackvault.yaml"
    path.write_text(render_initial(job))
    config = load_config(str(path))
    effective = config.job("dify")
    assert effective.policy == policy
    assert effective.rpo.source == f"built-in {policy}"
    assert [r.name for r in effective.repositories] == ["primary", "copy1", "copy2"]
    assert [r.url for r in effective.repositories] == [
        str(tmp_path / "repo"),
        "s3://bucket/dify?endpoint=http://127.0.0.1:8333",
        "/srv/usb",
    ]
    assert {r.password_ref.file for r in effective.repositories} == {"/etc/stackvault/password"}
    assert effective.stack_plan == str(tmp_path / "plan.yaml")
    assert effective.sources == ("postgres://db.example/app",)
    assert effective.paths == (str(tmp_path / "extra"),)
    assert config.warnings == ()


def test_a_schedule_given_is_the_jobs_and_relative_paths_become_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = render_initial(
        InitialJob(name="files", repository="repo", paths=("data",), schedule="15 */6 * * *")
    )
    path = tmp_path / "conf" / "stackvault.yaml"
    path.parent.mkdir()
    path.write_text(text)
    job = load_config(str(path)).job("files")
    assert (job.schedule.value.cron, job.schedule.source) == ("15 */6 * * *", "job files")
    assert job.paths == (str(tmp_path / "data"),)
    assert job.repository.url == str(tmp_path / "repo")
    assert "# hooks:" in text and "# policies:" in text
