"""Terminal progress bars (cli layer): a rich implementation of the engine's `Progress`.

rich is imported only when a bar is drawn (an interactive terminal), never for `--help`,
`--version` or non-interactive runs."""

from __future__ import annotations

import threading

from stackvault.engine.progress import NEEDS_ATTENTION

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from rich.console import Console, RenderableType
    from rich.progress import Progress


class BarProgress:
    """Bytes done of total with rate and ETA; notices printed above the bar (on stderr).

    Cheap from any thread, as `Progress` requires: `advance` and `set_total` only add to
    counters under a lock, and the bar reads them when it redraws (rich's refresh thread,
    ten times a second). Handing every event to rich instead costs a rich `update` each
    (locks, a speed sample, field bookkeeping) on the threads doing the work: a backup of
    20,000 small files makes ~60,000 such calls.
    """

    def __init__(self, label: str, *, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            ProgressColumn,
            Task,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        from stackvault.cli.render import human_bytes

        sync = self._sync

        class _Size(ProgressColumn):
            """``12.00 MiB/1.50 GiB``: binary units, as every size the CLI prints."""

            def render(self, task: Task) -> Text:
                done = human_bytes(task.completed)
                return Text(done if task.total is None else f"{done}/{human_bytes(task.total)}")

        class _Rate(ProgressColumn):
            """``3.20 MiB/s`` (nothing until rich has measured a speed)."""

            def render(self, task: Task) -> Text:
                speed = task.finished_speed or task.speed
                return Text("" if speed is None else f"{human_bytes(speed)}/s")

        class _Bar(Progress):
            def get_renderables(self) -> Iterable[RenderableType]:
                sync()
                return super().get_renderables()

        if console is None:
            console = Console(stderr=True, highlight=False, emoji=False, markup=False)
        self._files = 0
        self._bytes = 0
        self._total: int | None = None
        self._lock = threading.Lock()
        self._ready = False  # rich may draw before the task exists
        self._bar: Progress = _Bar(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            _Size(),
            _Rate(),
            TextColumn("{task.fields[files]} files"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task = self._bar.add_task(label, total=None, files=0)
        self._ready = True
        self._bar.start()

    def set_total(self, *, files: int | None = None, bytes_: int | None = None) -> None:
        if bytes_ is not None:
            with self._lock:
                self._total = bytes_

    def advance(self, *, files: int = 0, bytes_: int = 0) -> None:
        with self._lock:
            self._files += files
            self._bytes += bytes_

    def _sync(self) -> None:
        """Hand the counters to the bar (called by rich before each redraw)."""
        if not self._ready:
            return
        with self._lock:
            files, done, total = self._files, self._bytes, self._total
        self._bar.update(self._task, completed=done, total=total, files=files)

    def shown(self) -> tuple[int, int, float | None]:
        """(files, bytes done, bytes in all) as the bar last drew them."""
        task = self._bar.tasks[0]
        return int(task.fields["files"]), int(task.completed), task.total

    def notice(self, message: str) -> None:
        self._bar.console.print(message, markup=False, highlight=False)

    def close(self) -> None:
        self._bar.refresh()  # the last figures, drawn once more
        self._bar.stop()


class LineProgress:
    """Non-interactive runs (a log, cron, ``docker logs``): notices one line each, verbatim,
    and every ``interval`` seconds (when it is > 0) a line with what is done so far, so a
    long run shows it is alive. A notice that needs attention (``error:``, ``warning:``)
    goes to ``warn`` (shown even with --quiet: a cron job mails it), the others, and the
    progress lines, to ``write``."""

    def __init__(
        self,
        write: Callable[[str], None],
        warn: Callable[[str], None] | None = None,
        *,
        label: str = "progress",
        interval: float = 0.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self._write = write
        self._warn = warn or write
        self._label = label
        self._interval = interval
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._files = 0
        self._bytes = 0
        self._total_files: int | None = None
        self._total_bytes: int | None = None
        self._started = self._clock()
        self._last = self._started

    def set_total(self, *, files: int | None = None, bytes_: int | None = None) -> None:
        with self._lock:
            if files is not None:
                self._total_files = files
            if bytes_ is not None:
                self._total_bytes = bytes_

    def advance(self, *, files: int = 0, bytes_: int = 0) -> None:
        if self._interval <= 0:
            return
        with self._lock:
            self._files += files
            self._bytes += bytes_
            now = self._clock()
            if now - self._last < self._interval:
                return
            self._last = now
            line = self._line(now)
        self._write(line)

    def _line(self, now: float) -> str:
        from stackvault.cli.render import human_bytes

        done = f"{self._files} files, {human_bytes(self._bytes)}"
        if self._total_bytes:
            share = min(100.0, 100.0 * self._bytes / self._total_bytes)
            done += f" of {human_bytes(self._total_bytes)} ({share:.0f} %)"
        return f"{self._label}: {done} in {now - self._started:.0f} s"

    def notice(self, message: str) -> None:
        if message.startswith(NEEDS_ATTENTION):
            self._warn(message)
        else:
            self._write(message)

    def close(self) -> None:
        pass
