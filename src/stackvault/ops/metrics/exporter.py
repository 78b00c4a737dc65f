"""`Metrics`: the figures of the jobs held for export (ops layer) — recomputed from the
repositories (`Metrics.refresh`), updated after each run (`Metrics.observe_run`), exposed on
HTTP (`Metrics.serve_http`) or written as a node_exporter textfile (`Metrics.write_textfile`).

The registry is prometheus-client's `CollectorRegistry`, private to the object (not the
library's global one), holding one collector that yields the families of
`stackvault.ops.metrics.families` from the current figures on every collection.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from stackvault import __version__
from stackvault.clock import Clock, SystemClock
from stackvault.config import Config
from stackvault.ops.metrics.families import (
    RunTally,
    build_info,
    carry_over,
    job_families,
    notify_families,
)
from stackvault.ops.metrics.figures import JobFigures, read_jobs
from stackvault.ops.metrics.http import DEFAULT_LISTEN, MetricsServer
from stackvault.ops.run import RunReport
from stackvault.ops.session import Opener
from stackvault.records.run import RunRecord


class Metrics:
    """The figures of the configured jobs and the counters of the runs seen, for export.

    ``clock``: "now" of a refresh and of the current RPO (a snapshot's age when collected).
    ``with_build_info``: export ``stackvault_build_info`` (the daemon; a textfile per job
    leaves it out, so that two jobs' files never hold the same series). ``measure_size``:
    list every object of each repository for ``stackvault_repository_size_bytes``.

    Safe to use from several threads: a collection (a scrape) copies the figures under a
    lock that `refresh` holds only to swap them in, not while it reads repositories.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        with_build_info: bool = True,
        measure_size: bool = True,
    ) -> None:
        self.clock = clock or SystemClock()
        self.with_build_info = with_build_info
        self.measure_size = measure_size
        self._lock = threading.Lock()
        self._figures: dict[str, JobFigures] = {}
        self._tallies: dict[str, RunTally] = {}
        self._notify = [0, 0, 0]
        """Notification messages sent, not delivered, and pings failed (the daemon's)."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # --- updates ----------------------------------------------------------------------------

    def refresh(
        self, config: Config, opener: Opener, jobs: Iterable[str] | None = None
    ) -> list[JobFigures]:
        """Recompute the figures of ``jobs`` (default: every job of ``config``) from their
        repositories, each read once through ``opener`` (no lock). Without ``jobs``, jobs no
        longer in ``config`` are dropped (with their counters), and every job gets its
        counters at 0 so that ``rate()`` sees its first run. A repository that cannot be read
        does not raise: its figures say so (``stackvault_repository_up`` 0, the error in
        `RepositoryFigures.error`). A name of ``jobs`` the configuration lacks raises
        `ConfigError` (naming the known jobs) before anything is read. Returns the new
        figures."""
        names = list(config.jobs) if jobs is None else list(jobs)
        effective = [config.job(name) for name in names]
        fresh = read_jobs(effective, opener, self.clock.now, measure_size=self.measure_size)
        with self._lock:
            if jobs is None:
                self._figures = {}
                self._tallies = {k: v for k, v in self._tallies.items() if k in config.jobs}
            for figures in fresh:
                self._figures[figures.job] = figures
                self._tallies.setdefault(figures.job, RunTally())
        return fresh

    def observe_run(self, job: str, report: RunReport | RunRecord) -> None:
        """Count a run of ``job`` that just ended (attempts, result, retries, duration) and
        make it the job's last run (and last success if ``ok``) without reading a
        repository; `refresh` then brings the rest (snapshots, copies, checks)."""
        record = report.record if isinstance(report, RunReport) else report
        with self._lock:
            self._tallies.setdefault(job, RunTally()).add(record)
            figures = self._figures.get(job)
            if figures is not None:
                self._figures[job] = figures.observed(record)

    def add_notifications(self, sent: int, failed: int, pings_failed: int) -> None:
        """Count notifications (of the daemon, or of a run it started); exported with the
        build info, by the daemon only."""
        with self._lock:
            for i, n in enumerate((sent, failed, pings_failed)):
                self._notify[i] += max(0, n)

    def carry_over_from(self, path: str | Path) -> None:
        """Start the counters of the known jobs from the textfile at ``path`` (the one this
        process is about to replace), so they keep growing across runs; a missing or
        unreadable file leaves them as they are."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return
        with self._lock:
            self._tallies.update(carry_over(text, self._tallies.keys() | self._figures.keys()))

    # --- export -----------------------------------------------------------------------------

    def figures(self) -> dict[str, JobFigures]:
        """The current figures by job (a copy)."""
        with self._lock:
            return dict(self._figures)

    def collect(self) -> Iterator[Metric]:
        """Every family, from a copy of the current figures and counters."""
        with self._lock:
            figures = list(self._figures.values())
            tallies = {k: _copy(v) for k, v in self._tallies.items()}
            notify = tuple(self._notify)
        if self.with_build_info:
            yield build_info(__version__)
            yield from notify_families(*notify)
        yield from job_families(figures, tallies, self.clock.now())

    def write_textfile(self, path: str | Path) -> None:
        """Write every family to ``path`` in the text format node_exporter's textfile
        collector reads (name it ``*.prom``), atomically: a temporary file in the same
        directory renamed over it (`prometheus_client.write_to_textfile`). Raises `OSError`
        when it cannot be written."""
        write_to_textfile(str(path), self.registry)

    def serve_http(self, listen: str = DEFAULT_LISTEN) -> MetricsServer:
        """Serve ``/metrics`` and ``/healthz`` on ``listen`` (``HOST:PORT``) from a background
        thread until the returned server's `MetricsServer.stop`. Raises `UsageError` for a
        malformed address, `OSError` when it cannot bind."""
        return MetricsServer(self.registry, listen)


def _copy(tally: RunTally) -> RunTally:
    return RunTally(
        tally.attempt,
        tally.success,
        tally.partial_failure,
        tally.failure,
        tally.retry,
        list(tally.buckets),
        tally.duration_sum,
    )


class _Collector(Collector):
    """The registry's one collector: `Metrics.collect`."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics.collect()
