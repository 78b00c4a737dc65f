"""The metric families (ops layer): names, help, buckets, and the collector that yields them
from `JobFigures` and the run counters, through prometheus-client's family classes (the
library writes the exposition format).

Names follow Prometheus conventions (base units, ``_seconds``, ``_bytes``, ``_total``,
``_timestamp_seconds`` for Unix times) and, where they mean the same, Velero's
(``..._attempt_total``, ``..._success_total``, ``..._partial_failure_total``,
``..._failure_total``, ``..._duration_seconds``). Every family of a job carries the label
``job``; those of a repository also ``repository`` and ``role`` (``primary`` / ``copy``), so
one exporter's samples never collide with another's in a node_exporter textfile directory
(one file per job). A scrape must keep these labels: ``honor_labels: true`` (Prometheus
would otherwise rename ``job`` to ``exported_job``).

Counters (`RunTally`) count the runs this process saw end (`Metrics.observe_run`); a
``run --metrics-file`` carries them over from the file it replaces (`carry_over`), so they
grow across cron runs too. A family whose figures do not exist yet (drills) is exported with
help and type and no samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families

from stackvault.ops.metrics.figures import JobFigures, RepositoryFigures
from stackvault.ops.status import VERDICTS
from stackvault.records.run import RUN_RESULTS, RunRecord

PREFIX = "stackvault_"

DURATION_BUCKETS: tuple[float, ...] = (
    1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 43200, 86400,
)  # fmt: skip
"""Upper bounds (seconds) of the run duration histogram: from seconds (a 5-minute job that
found nothing new) to a day (a nightly job of a large stack); +Inf is added."""

COUNTERS: tuple[tuple[str, str], ...] = (
    ("backup_attempt", "Runs of the job that ended, whatever their result."),
    ("backup_success", "Runs that ended ok."),
    (
        "backup_partial_failure",
        "Runs that ended partial (a snapshot was made, a later step failed).",
    ),
    ("backup_failure", "Runs that ended failed or interrupted (no usable snapshot)."),
    ("backup_retry", "Runs started as a retry of a failed run."),
)
"""The counters (without ``stackvault_`` and ``_total``) and their help."""

_REPO_LABELS = ["job", "repository", "role"]


@dataclass
class RunTally:
    """The counters and the duration histogram of one job."""

    attempt: float = 0
    success: float = 0
    partial_failure: float = 0
    failure: float = 0
    retry: float = 0
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(DURATION_BUCKETS))
    """Per bound of `DURATION_BUCKETS`: runs that took at most that long (cumulative)."""
    duration_sum: float = 0.0

    def add(self, record: RunRecord) -> None:
        """Count a run that ended."""
        self.attempt += 1
        if record.result == "ok":
            self.success += 1
        elif record.result == "partial":
            self.partial_failure += 1
        else:
            self.failure += 1
        if record.trigger == "retry":
            self.retry += 1
        seconds = max(0.0, record.duration_s)
        self.duration_sum += seconds
        for i, bound in enumerate(DURATION_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1

    def counter(self, name: str) -> float:
        """The value of the counter ``name`` (a name of `COUNTERS`)."""
        value: float = getattr(self, name.removeprefix("backup_"))
        return value


def _ts(when: datetime) -> float:
    return when.timestamp()


def _gauge(name: str, doc: str, labels: list[str], unit: str = "") -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=labels, unit=unit)


def job_families(
    figures: Iterable[JobFigures], tallies: Mapping[str, RunTally], now: datetime
) -> Iterator[Metric]:
    """Every family of these jobs; ``now`` is when the current RPO (a snapshot's age) is
    measured — the scrape, or the writing of a textfile."""
    jobs = list(figures)
    job = ["job"]
    objectives = {
        "rpo_objective_seconds": ("The job's recovery point objective.", "rpo_s"),
        "rto_objective_seconds": ("The job's recovery time objective.", "rto_s"),
        "job_expected_interval_seconds": (
            "Longest gap between two scheduled runs: how often a success is expected.",
            "interval_s",
        ),
        "job_window_seconds": ("How long a run may take before it counts as late.", "window_s"),
        "check_interval_seconds": ("How often each repository is to be checked.", "check_every_s"),
    }
    for name, (doc, attr) in objectives.items():
        fam = _gauge(name, doc, job)
        for f in jobs:
            fam.add_metric([f.job], float(getattr(f, attr)))
        yield fam

    verdict = _gauge(
        "job_verdict",
        "1 for the job's status verdict (ok, at-risk, breached, unverified) as of the last "
        "refresh, 0 for the others.",
        ["job", "verdict"],
    )
    refreshed = _gauge(
        "metrics_refresh_timestamp_seconds",
        "When the job's figures were last read from its repositories.",
        job,
    )
    for f in jobs:
        for v in VERDICTS:
            verdict.add_metric([f.job, v], 1.0 if f.verdict == v else 0.0)
        refreshed.add_metric([f.job], _ts(f.refreshed))
    yield verdict
    yield refreshed

    yield from _run_families(jobs)
    yield from _tally_families(jobs, tallies)
    yield from _backup_families(jobs)
    yield from _repository_families(jobs, now)
    yield from _lease_families(jobs)
    yield from drill_families(jobs)


def _run_families(jobs: list[JobFigures]) -> Iterator[Metric]:
    job = ["job"]
    success = _gauge(
        "backup_last_success_timestamp_seconds",
        "When the job's newest run with result ok ended (from the run records).",
        job,
    )
    attempt = _gauge(
        "backup_last_attempt_timestamp_seconds",
        "When the job's newest run ended, whatever its result.",
        job,
    )
    duration = _gauge("backup_last_duration_seconds", "How long the newest run took.", job)
    result = _gauge(
        "backup_last_result",
        "1 for the newest run's result (ok, partial, failed, interrupted), 0 for the others.",
        ["job", "result"],
    )
    for f in jobs:
        if f.last_success is not None:
            success.add_metric([f.job], _ts(f.last_success))
        if f.last_run is not None:
            attempt.add_metric([f.job], _ts(f.last_run.ended))
            duration.add_metric([f.job], max(0.0, f.last_run.duration_s))
            for r in RUN_RESULTS:
                result.add_metric([f.job, r], 1.0 if f.last_run.result == r else 0.0)
    yield from (success, attempt, duration, result)


def _tally_families(jobs: list[JobFigures], tallies: Mapping[str, RunTally]) -> Iterator[Metric]:
    names = [f.job for f in jobs] + sorted(set(tallies) - {f.job for f in jobs})
    for counter, doc in COUNTERS:
        fam = CounterMetricFamily(PREFIX + counter, doc, labels=["job"])
        for name in names:
            fam.add_metric([name], tallies.get(name, RunTally()).counter(counter))
        yield fam
    hist = HistogramMetricFamily(
        PREFIX + "backup_duration_seconds",
        "How long the job's runs took, from start to end.",
        labels=["job"],
    )
    for name in names:
        tally = tallies.get(name, RunTally())
        buckets = [(_le(b), n) for b, n in zip(DURATION_BUCKETS, tally.buckets, strict=True)]
        buckets.append(("+Inf", tally.attempt))
        hist.add_metric([name], buckets, tally.duration_sum)
    yield hist


def _le(bound: float) -> str:
    return str(float(bound))


def _backup_families(jobs: list[JobFigures]) -> Iterator[Metric]:
    job = ["job"]
    source = _gauge(
        "backup_last_source_bytes",
        "Bytes of the files and artifacts the newest backup covers (read or found unchanged).",
        job,
    )
    added = _gauge(
        "backup_last_added_bytes", "New data the newest backup added, before compression.", job
    )
    stored = _gauge(
        "backup_last_stored_bytes",
        "New data the newest backup stored (compressed and encrypted).",
        job,
    )
    files = _gauge(
        "backup_last_files",
        "Files of the newest backup by state: new, changed, unmodified.",
        ["job", "state"],
    )
    complete = _gauge(
        "backup_last_complete", "1 if the newest backup's snapshot is complete, else 0.", job
    )
    stopped = _gauge(
        "stack_last_stopped_services",
        "Services the newest stack backup stopped for its cut.",
        job,
    )
    downtime = _gauge(
        "stack_last_downtime_seconds",
        "The newest strict stack cut: from the first stop until every stopped service ran.",
        job,
    )
    service_downtime = _gauge(
        "stack_last_service_downtime_seconds",
        "The newest strict stack cut, per service stopped (mode stop) or frozen (mode pause): "
        "from its stop request until it ran again.",
        ["job", "service", "mode"],
    )
    for f in jobs:
        b = f.last_backup
        if b is not None:
            complete.add_metric([f.job], 1.0 if b.complete else 0.0)
            for fam, value in ((source, b.source_bytes), (added, b.added_bytes)):
                if value is not None:
                    fam.add_metric([f.job], float(value))
            if b.stored_bytes is not None:
                stored.add_metric([f.job], float(b.stored_bytes))
            for state, count in (
                ("new", b.files_new),
                ("changed", b.files_changed),
                ("unmodified", b.files_unmodified),
            ):
                if count is not None:
                    files.add_metric([f.job, state], float(count))
        cut = f.stack_cut
        if cut is not None:
            stopped.add_metric([f.job], float(cut.stopped_services))
            if cut.downtime_s is not None:
                downtime.add_metric([f.job], cut.downtime_s)
            for service in cut.services:
                if service.downtime_s is not None:
                    key = [f.job, service.name, service.mode]
                    service_downtime.add_metric(key, service.downtime_s)
    yield from (source, added, stored, files, complete, stopped, downtime, service_downtime)


def _repository_families(jobs: list[JobFigures], now: datetime) -> Iterator[Metric]:
    labels = _REPO_LABELS
    up = _gauge(
        "repository_up", "1 if the repository could be read at the last refresh, else 0.", labels
    )
    newest = _gauge(
        "newest_snapshot_timestamp_seconds",
        "Time of the newest complete snapshot of the job in the repository.",
        labels,
    )
    rpo = _gauge(
        "rpo_current_seconds",
        "Age of the newest complete snapshot of the job in the repository, when collected.",
        labels,
    )
    job_snaps = _gauge("job_snapshots", "Complete snapshots of the job in the repository.", labels)
    snaps = _gauge("repository_snapshots", "Snapshots in the repository, of any job.", labels)
    size = _gauge("repository_size_bytes", "Bytes of every object of the repository.", labels)
    fs_avail = _gauge(
        "repository_filesystem_avail_bytes",
        "Free bytes (for unprivileged writers) on a local repository's file system.",
        labels,
    )
    fs_size = _gauge(
        "repository_filesystem_size_bytes", "Size of a local repository's file system.", labels
    )
    lag = _gauge(
        "copy_lag_snapshots",
        "The primary's job snapshots newer than the newest one this copy holds.",
        labels,
    )
    check_time = _gauge(
        "check_last_timestamp_seconds",
        "When the newest check of the repository by the job's runs started.",
        labels,
    )
    check_ok = _gauge("check_last_success", "1 if the newest check ended ok, else 0.", labels)
    check_bytes = _gauge(
        "check_last_verified_bytes", "Pack bytes the newest check read and verified.", labels
    )
    for f in jobs:
        for r in f.repositories:
            key = [f.job, r.name, r.role]
            up.add_metric(key, 0.0 if r.error is not None else 1.0)
            _repository_samples(
                r, key, now, newest, rpo, job_snaps, snaps, size, fs_avail, fs_size, lag
            )
            if r.check is not None:
                check_time.add_metric(key, _ts(r.check.started))
                check_ok.add_metric(key, 1.0 if r.check.ok else 0.0)
                if r.check.bytes_read is not None:
                    check_bytes.add_metric(key, float(r.check.bytes_read))
    yield from (up, newest, rpo, job_snaps, snaps, size, fs_avail, fs_size, lag)
    yield from (check_time, check_ok, check_bytes)


def _repository_samples(
    r: RepositoryFigures,
    key: list[str],
    now: datetime,
    newest: GaugeMetricFamily,
    rpo: GaugeMetricFamily,
    job_snaps: GaugeMetricFamily,
    snaps: GaugeMetricFamily,
    size: GaugeMetricFamily,
    fs_avail: GaugeMetricFamily,
    fs_size: GaugeMetricFamily,
    lag: GaugeMetricFamily,
) -> None:
    if r.newest_snapshot is not None:
        newest.add_metric(key, _ts(r.newest_snapshot))
        rpo.add_metric(key, max(0.0, (now - r.newest_snapshot).total_seconds()))
    for fam, value in (
        (job_snaps, r.job_snapshots),
        (snaps, r.snapshots),
        (size, r.size_bytes),
        (lag, r.copy_lag),
    ):
        if value is not None:
            fam.add_metric(key, float(value))
    if r.filesystem is not None:
        fs_avail.add_metric(key, float(r.filesystem.avail_bytes))
        fs_size.add_metric(key, float(r.filesystem.size_bytes))


def _lease_families(jobs: list[JobFigures]) -> Iterator[Metric]:
    info = _gauge(
        "lease_holder_info",
        "The daemon (host, PID) that holds or last held the job's newest lease, with the "
        "lease's state (running, done, abandoned); always 1.",
        ["job", "host", "pid", "state"],
    )
    beat = _gauge(
        "lease_heartbeat_timestamp_seconds",
        "The newest lease's last heartbeat (or the end of its run).",
        ["job"],
    )
    for f in jobs:
        if f.lease is not None:
            info.add_metric([f.job, f.lease.host, str(f.lease.pid), f.lease.state], 1.0)
            beat.add_metric([f.job], _ts(f.lease.refreshed))
    yield info
    yield beat


def drill_families(jobs: Sequence[JobFigures] = ()) -> Iterator[Metric]:
    """The restore drill families: per job, its newest drill (labelled with the repository
    it restored from) and how often it is to be drilled (only for jobs drilled by
    schedule)."""
    labels = _REPO_LABELS
    when = _gauge("drill_last_timestamp_seconds", "When the newest restore drill ended.", labels)
    success = _gauge(
        "drill_last_success", "1 if the newest restore drill ended ok, else 0.", labels
    )
    rto = _gauge(
        "drill_last_rto_seconds",
        "The newest restore drill's measured recovery time (to compare with the RTO).",
        labels,
    )
    interval = _gauge("drill_interval_seconds", "How often the job is to be drilled.", ["job"])
    for f in jobs:
        if f.drill_every_s is not None:
            interval.add_metric([f.job], float(f.drill_every_s))
        d = f.drill
        if d is None:
            continue
        repository = d.repository or ""
        role = next((r.role for r in f.repositories if r.name == repository), "primary")
        key = [f.job, repository, role]
        when.add_metric(key, _ts(d.ended))
        success.add_metric(key, 1.0 if d.result == "ok" else 0.0)
        if d.rto_s is not None:
            rto.add_metric(key, float(d.rto_s))
    yield when
    yield success
    yield rto
    yield interval


def notify_families(sent: int, failed: int, pings_failed: int) -> Iterator[Metric]:
    """The daemon's notification counters (its own messages and its runs')."""
    for name, doc, value in (
        ("notifications_sent", "Notification messages delivered (one per target).", sent),
        (
            "notifications_failed",
            "Notification messages a target did not get after every try.",
            failed,
        ),
        ("notify_pings_failed", "Dead-man pings that failed after every try.", pings_failed),
    ):
        fam = CounterMetricFamily(PREFIX + name, doc)
        fam.add_metric([], float(value))
        yield fam


def build_info(version: str) -> Metric:
    """``stackvault_build_info{version=...} 1``."""
    fam = _gauge("build_info", "The running stackvault's version (always 1).", ["version"])
    fam.add_metric([version], 1.0)
    return fam


def carry_over(text: str, jobs: Iterable[str]) -> dict[str, RunTally]:
    """The counters and histogram of ``jobs`` as a textfile this module wrote holds them
    (`text`, the exposition format); jobs the text does not have are left out. Samples
    that do not parse as this module writes them (another bucket layout, a negative or
    non-finite value) are ignored."""
    wanted = set(jobs)
    tallies: dict[str, RunTally] = {}
    counters = {PREFIX + name + "_total": name for name, _ in COUNTERS}
    bounds = {_le(b): i for i, b in enumerate(DURATION_BUCKETS)}
    hist = PREFIX + "backup_duration_seconds"
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return {}
    for family in families:
        for sample in family.samples:
            job = sample.labels.get("job")
            value = sample.value
            if job not in wanted or not math.isfinite(value) or value < 0:
                continue
            tally = tallies.setdefault(job, RunTally())
            if sample.name in counters:
                setattr(tally, counters[sample.name].removeprefix("backup_"), value)
            elif sample.name == hist + "_bucket" and sample.labels.get("le") in bounds:
                tally.buckets[bounds[sample.labels["le"]]] = value
            elif sample.name == hist + "_sum":
                tally.duration_sum = value
    return tallies
