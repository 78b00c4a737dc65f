"""The terminal progress bar: counts events from many threads and draws what it counted."""

from __future__ import annotations

import io
import threading

from rich.console import Console

from stackvault.cli.progress import BarProgress


def _console(out: io.StringIO) -> Console:
    return Console(file=out, force_terminal=True, width=120, color_system=None)


def test_bar_counts_every_event_from_many_threads() -> None:
    out = io.StringIO()
    bar = BarProgress("backup", console=_console(out))
    per_thread, threads = 5_000, 4

    def work(k: int) -> None:
        for _ in range(per_thread):
            bar.advance(files=1, bytes_=k + 1)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    bar.set_total(files=per_thread * threads, bytes_=10 * per_thread)
    for w in workers:
        w.join()
    bar.close()
    expected_bytes = sum((k + 1) * per_thread for k in range(threads))
    assert bar.shown() == (per_thread * threads, expected_bytes, 10 * per_thread)


def test_bar_shows_the_latest_total_and_prints_notices_verbatim() -> None:
    out = io.StringIO()
    bar = BarProgress("restore", console=_console(out))
    bar.set_total(bytes_=100)
    bar.set_total(bytes_=250)
    bar.advance(bytes_=40)
    bar.notice("notice: [bold]not markup[/bold] kept as written")
    bar.close()
    assert bar.shown() == (0, 40, 250)
    assert "notice: [bold]not markup[/bold] kept as written" in out.getvalue()


def test_bar_without_total_has_none() -> None:
    bar = BarProgress("copy", console=_console(io.StringIO()))
    bar.advance(files=2, bytes_=7)
    bar.close()
    assert bar.shown() == (2, 7, None)
