"""Prometheus metrics of the jobs (ops layer): what ``serve --metrics-listen`` exposes and
``run --metrics-file`` writes.

- ``figures``: what the metrics say of a job, read from its repositories (run records,
  snapshots, sizes) and computed with the history and verdict ``status`` uses;
- ``families``: the metric names, help and buckets, and the collector's families
  (prometheus-client writes the exposition format); the counters of the runs seen and their
  carry-over from a previous textfile;
- ``http``: the ``/metrics`` and ``/healthz`` endpoint;
- ``exporter``: `Metrics`, which holds the figures and ties the three together.
"""

from __future__ import annotations

from stackvault.ops.metrics.exporter import Metrics
from stackvault.ops.metrics.http import DEFAULT_LISTEN, MetricsServer, parse_listen

__all__ = ["DEFAULT_LISTEN", "Metrics", "MetricsServer", "parse_listen"]
