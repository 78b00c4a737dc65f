"""`JobRun` (ops layer) with an injected clock: the check runs when due and reads the slice of
its period, and an interrupt is recorded as ``interrupted``. The command line is tested in
tests/e2e/test_cli_run.py."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stackvault.clock import FrozenClock
from stackvault.config import load_config
from stackvault.config.model import DataSubset
from stackvault.config.repository import RepositorySettings
from stackvault.ops.checkdue import DataSlices, check_due, data_slices
from stackvault.ops.history import LastCheck
from stackvault.ops.run import EXIT_INTERRUPTED, JobRun
from stackvault.repo.repository import Repository
from support.jobrepos import init_fast, opener

DAY = 86_400


def subset(text: str) -> DataSubset:
    n, t = text.split("/")
    return DataSubset(text=text, fraction=int(n) / int(t))


def test_the_slice_rotates_once_per_period_and_covers_every_pack() -> None:
    day = datetime(2026, 12, 6, 12, tzinfo=UTC)  # day 20_793 since the epoch
    assert (day - datetime(1970, 1, 1, tzinfo=UTC)).days == 20_793
    one = data_slices(subset("1/7"), DAY, day)
    assert one == DataSlices(chosen=(20_793 % 7,), total=7, period=20_793)
    seen = set()
    for n in range(7):
        s = data_slices(subset("1/7"), DAY, day + timedelta(days=n))
        assert s is not None
        seen.update(s.chosen)
    assert seen == set(range(7))
    two = data_slices(subset("2/6"), DAY, day)
    assert two is not None and two.chosen == tuple(sorted({(20_793 * 2) % 6, (20_793 * 2 + 1) % 6}))
    assert data_slices(subset("7/7"), DAY, day) is None  # everything
    assert data_slices(DataSubset(text="10%", fraction=0.1), DAY, day) is None  # random
    # every 7d: periods of a week
    week = data_slices(subset("1/4"), 7 * DAY, day)
    assert week is not None and week.period == 20_793 // 7


def test_check_due() -> None:
    now = datetime(2026, 12, 6, tzinfo=UTC)

    def last(age_s: float, result: str = "ok") -> LastCheck:
        return LastCheck("0" * 32, now - timedelta(seconds=age_s), result, "p", None)  # type: ignore[arg-type]

    assert check_due(None, DAY, now)
    assert not check_due(last(DAY - 1), DAY, now)
    assert check_due(last(DAY), DAY, now)
    assert not check_due(last(10, "failed"), DAY, now)  # it ran: its record says what it found
    assert check_due(last(10, "interrupted"), DAY, now)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SV_PW", "pw")
    for name in ("primary", "offsite"):
        init_fast(tmp_path / name, b"pw", pack_size=512 * 1024)
    data = tmp_path / "data"
    data.mkdir()
    rnd = random.Random(7)
    for i in range(12):  # 6 MiB that does not compress: about a dozen packs
        (data / f"f{i}").write_bytes(rnd.randbytes(512 * 1024))
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        f"""\
repositories:
  primary: {{url: {tmp_path / "primary"}, password_env: SV_PW}}
  offsite: {{url: {tmp_path / "offsite"}, password_env: SV_PW}}
jobs:
  etc:
    paths: [{data}]
    policy: tier3
    repository: primary
    copies: [offsite]
    check: {{every: 1d, read_data_subset: 1/2}}
"""
    )
    return path


def check_steps(job_run: JobRun) -> list[tuple[str | None, object]]:
    return [
        (s.repository, (s.details or {}).get("data")) for s in job_run.steps if s.name == "check"
    ]


def test_check_runs_when_due_and_reads_the_slice_of_its_period(config: Path) -> None:
    job = load_config(str(config)).job("etc")
    clock = FrozenClock(datetime(2026, 12, 6, 1, tzinfo=UTC))  # day 20_793: slice 2/2
    first = JobRun(job, opener, clock=clock)
    assert first.run().exit_code == 0
    assert check_steps(first) == [("primary", "slice 2/2"), ("offsite", "slice 2/2")]

    clock.advance(12 * 3600)  # same period, not due
    second = JobRun(job, opener, clock=clock)
    assert second.run().exit_code == 0
    assert check_steps(second) == []

    clock.advance(12 * 3600)  # a day after the first check: due, the other slice
    third = JobRun(job, opener, clock=clock)
    assert third.run().exit_code == 0
    assert check_steps(third) == [("primary", "slice 1/2"), ("offsite", "slice 1/2")]

    # What was read is exactly the packs of the slice.
    with opener(job.repository) as repo:
        repo.load_index()
        packs = list(repo.index.packs())
    slice_1 = DataSlices(chosen=(0,), total=2, period=0)
    expected = sum(1 for p in packs if slice_1.holds(p))
    step = next(s for s in third.steps if s.name == "check" and s.repository == "primary")
    assert step.details is not None
    assert len(packs) >= 8 and 0 < expected < len(packs)
    assert step.details["packs_read"] == expected
    assert step.details["packs"] == len(packs)


def test_an_interrupt_is_recorded_as_interrupted(config: Path) -> None:
    job = load_config(str(config)).job("etc")

    @contextmanager
    def interrupted_at_copy(settings: RepositorySettings) -> Iterator[Repository]:
        if settings.name == "offsite":
            raise KeyboardInterrupt
        with opener(settings) as repo:
            yield repo

    report = JobRun(job, interrupted_at_copy).run()
    assert report.exit_code == EXIT_INTERRUPTED
    assert report.record.result == "interrupted"
    assert [(s.name, s.result) for s in report.record.steps] == [
        ("backup", "ok"),
        ("copy", "interrupted"),
    ]
    assert report.recorded_in == ["primary"]
    with opener(job.repository) as repo:
        (stored,) = repo.list_runs(job="etc")
    assert stored.result == "interrupted"
