"""Progress without a terminal (`cli/progress.py`, `LineProgress`): a line every interval with
what is done, trouble to the warning channel, nothing periodic when the interval is 0."""

from __future__ import annotations

from stackvault.cli.progress import LineProgress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_line_per_interval_with_what_is_done() -> None:
    lines: list[str] = []
    clock = Clock()
    progress = LineProgress(lines.append, label="backup", interval=60, clock=clock)
    progress.set_total(bytes_=4 * 1024 * 1024)
    progress.advance(files=3, bytes_=1024 * 1024)
    clock.now += 59
    progress.advance(files=1)
    assert lines == []  # not yet a minute
    clock.now += 1
    progress.advance(bytes_=1024 * 1024)
    assert lines == ["backup: 4 files, 2.00 MiB of 4.00 MiB (50 %) in 60 s"]
    clock.now += 30
    progress.advance(files=1)
    assert len(lines) == 1
    clock.now += 31
    progress.advance(files=1)
    assert lines[-1] == "backup: 6 files, 2.00 MiB of 4.00 MiB (50 %) in 121 s"


def test_no_periodic_lines_with_interval_zero_and_trouble_goes_to_warn() -> None:
    lines: list[str] = []
    warnings: list[str] = []
    clock = Clock()
    progress = LineProgress(lines.append, warnings.append, interval=0, clock=clock)
    for _ in range(5):
        clock.now += 3600
        progress.advance(files=1, bytes_=10)
    progress.notice("notice: a stale lock was removed")
    progress.notice("error: /srv/a: permission denied")
    progress.notice("warning: the after hook failed")
    assert lines == ["notice: a stale lock was removed"]
    assert warnings == ["error: /srv/a: permission denied", "warning: the after hook failed"]
