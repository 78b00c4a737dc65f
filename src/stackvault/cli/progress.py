"""Terminal progress bars (cli layer): a rich implementation of the engine's `Progress`.

rich is imported only when a bar is drawn (an interactive terminal), never for `--help`,
`--version` or non-interactive runs."""

from __future__ import annotations

import threading

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.progress import Progress


class BarProgress:
    """Bytes done of total with rate and ETA; notices printed above the bar (on stderr)."""

    def __init__(self, label: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        console = Console(stderr=True, highlight=False, emoji=False, markup=False)
        self._bar: Progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[files]} files"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task = self._bar.add_task(label, total=None, files=0)
        self._files = 0
        self._lock = threading.Lock()
        self._bar.start()

    def set_total(self, *, files: int | None = None, bytes_: int | None = None) -> None:
        if bytes_ is not None:
            self._bar.update(self._task, total=bytes_)

    def advance(self, *, files: int = 0, bytes_: int = 0) -> None:
        with self._lock:
            self._files += files
            self._bar.update(self._task, advance=bytes_, files=self._files)

    def notice(self, message: str) -> None:
        self._bar.console.print(message, markup=False, highlight=False)

    def close(self) -> None:
        self._bar.stop()


class LineProgress:
    """Non-interactive runs: notices only, one line each, verbatim, no bars."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write

    def set_total(self, *, files: int | None = None, bytes_: int | None = None) -> None:
        pass

    def advance(self, *, files: int = 0, bytes_: int = 0) -> None:
        pass

    def notice(self, message: str) -> None:
        self._write(message)

    def close(self) -> None:
        pass
