"""The metrics as a real Prometheus sees them: `stackvault run --metrics-file` after a job
that succeeds and one that fails, and the daemon's endpoint (`Metrics.serve_http`, refreshed
from the repositories as ``serve`` does at start), scraped every second by Prometheus
(Debian's package, on 127.0.0.1, started from deploy/prometheus/scrape-config.yml) with the
shipped alert rules; its HTTP API must show the series with the values of the run records
and snapshots, and the rules firing for the failing job only; a real Alertmanager (Debian's
package) must deliver those alerts to a webhook receiver of the test.

The rules are loaded without their ``for:`` durations so that they fire within the test's
seconds; their expressions are the shipped ones (the durations are promtool-tested in
test_prometheus_rules.py).

The same Prometheus runs every query of the Grafana dashboard (deploy/grafana/): each must
parse and return data, but those of the drill families (no drills yet), which must return
none.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import FAST_INIT, PASSWORD, Result, make_tree
from stackvault.config import RepositorySettings, load_config
from stackvault.ops.metrics import Metrics
from stackvault.records.run import RunRecord
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.store.open import open_store
from support.prometheus import (
    Prometheus,
    Webhook,
    running_alertmanager,
    running_prometheus,
    webhook_receiver,
)

Cli = Callable[..., Result]
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
DASHBOARD = DEPLOY.parent / "grafana" / "stackvault-dashboard.json"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s", "$job": ".*"}
"""What Grafana puts in place of the variables the dashboard's queries use."""
COPY_PASSWORD = "the copy's own password"


@pytest.fixture
def config(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Job etc (paths, into primary, copied to offsite) and job broken (its before hook
    fails, so it never makes a snapshot), both into the primary."""
    monkeypatch.delenv("STACKVAULT_PASSWORD_FILE", raising=False)
    for name, password in (("primary", PASSWORD), ("offsite", COPY_PASSWORD)):
        monkeypatch.setenv("STACKVAULT_PASSWORD", password)
        res = cli("--repo", tmp_path / name, *FAST_INIT)
        assert res.code == 0, res.err
    monkeypatch.delenv("STACKVAULT_PASSWORD")
    monkeypatch.setenv("SV_PRIMARY_PW", PASSWORD)
    monkeypatch.setenv("SV_COPY_PW", COPY_PASSWORD)
    make_tree(tmp_path / "data", files=5)
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        f"""\
repositories:
  primary: {{url: {tmp_path / "primary"}, password_env: SV_PRIMARY_PW}}
  offsite: {{url: {tmp_path / "offsite"}, password_env: SV_COPY_PW}}
jobs:
  etc:
    paths: [{tmp_path / "data"}]
    policy: tier2
    repository: primary
    copies: [offsite]
  broken:
    paths: [{tmp_path / "data"}]
    policy: tier2
    repository: primary
    hooks:
      before: "echo cannot prepare >&2; exit 4"
"""
    )
    return path


@contextmanager
def opened(settings: RepositorySettings) -> Iterator[Repository]:
    """An `Opener` as the daemon's: the repository of ``settings`` with its password."""
    store = open_store(settings.location)
    try:
        yield Repository.open(store, settings.password())
    finally:
        store.close()


@contextmanager
def file_server(directory: Path) -> Iterator[str]:
    """The files of ``directory`` over HTTP on 127.0.0.1 (standing in for node_exporter's
    textfile collector, which serves such files' samples); yields ``HOST:PORT``."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def prometheus_config(workdir: Path, daemon: str, files: str, alertmanager: str) -> str:
    """The shipped scrape configuration with the test's targets, a 1 s scrape and evaluation
    interval, the shipped rules without their ``for:``, alerts sent to ``alertmanager``."""
    doc = yaml.safe_load((DEPLOY / "scrape-config.yml").read_text())
    daemon_job, node_job = doc["scrape_configs"]
    assert daemon_job["job_name"] == "stackvault" and daemon_job["honor_labels"] is True
    daemon_job["static_configs"] = [{"targets": [daemon]}]
    textfiles = [
        {**node_job, "job_name": f"textfile-{job}", "metrics_path": f"/{job}.prom"}
        for job in ("etc", "broken")
    ]
    for scrape in textfiles:
        scrape["static_configs"] = [{"targets": [files]}]
    rules = yaml.safe_load((DEPLOY / "stackvault-rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    (workdir / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    doc["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    doc["rule_files"] = ["rules.yml"]
    doc["scrape_configs"] = [daemon_job, *textfiles]
    doc["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return yaml.safe_dump(doc, sort_keys=False)


def by_instance(prom: Prometheus, expr: str, count: int) -> dict[str, float]:
    """``expr``'s samples by the target they were scraped from (the last of a target's
    several), once ``count`` of them are there."""
    got = prom.wait_for(f"{count} series of {expr}", lambda: _at_least(prom.query(expr), count))
    return {s["metric"]["instance"]: float(s["value"][1]) for s in got}


def _at_least(result: list[dict[str, Any]], count: int) -> list[dict[str, Any]] | None:
    return result if len(result) >= count else None


def records(path: Path, password: str, job: str) -> list[RunRecord]:
    return Repository.open(open_store(str(path)), password.encode()).list_runs(job=job)


def job_snapshots(path: Path, password: str, job: str) -> list[Snapshot]:
    snaps = Repository.open(open_store(str(path)), password.encode()).list_snapshots()
    return [s for s in snaps if f"job:{job}" in s.tags]


def test_prometheus_scrapes_the_metrics_and_the_rules_fire_for_the_failing_job(
    config: Path, tmp_path: Path, cli: Cli
) -> None:
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    res = cli("run", "etc", "--config", config, "--metrics-file", textfiles / "etc.prom")
    assert res.code == 0, res.err
    res = cli("run", "broken", "--config", config, "--metrics-file", textfiles / "broken.prom")
    assert res.code == 1, res.err
    (etc_run,) = records(tmp_path / "primary", PASSWORD, "etc")
    (broken_run,) = records(tmp_path / "primary", PASSWORD, "broken")
    assert broken_run.result == "failed"
    (snapshot,) = job_snapshots(tmp_path / "primary", PASSWORD, "etc")

    metrics = Metrics()
    metrics.refresh(load_config(str(config)), opened)  # what serve does at start
    server = metrics.serve_http("127.0.0.1:0")
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    daemon = f"127.0.0.1:{server.port}"
    try:
        with (
            file_server(textfiles) as files,
            webhook_receiver() as hook,
            running_alertmanager(workdir, hook.url) as alertmanager,
            running_prometheus(
                workdir, prometheus_config(workdir, daemon, files, alertmanager)
            ) as p,
        ):
            assert by_instance(p, 'up{job="stackvault"}', 1) == {daemon: 1.0}

            # Both exports (the daemon's, the textfile of run) say when etc last succeeded:
            # the end of its run record; the failing job has never succeeded.
            success = by_instance(p, "stackvault_backup_last_success_timestamp_seconds", 2)
            assert set(success) == {daemon, files}
            for value in success.values():
                assert abs(value - etc_run.ended.timestamp()) < 0.001
            failed = by_instance(
                p, 'stackvault_backup_last_result{job="broken",result="failed"}', 2
            )
            assert failed == {daemon: 1.0, files: 1.0}
            ended = by_instance(
                p, 'stackvault_backup_last_attempt_timestamp_seconds{job="broken"}', 2
            )
            assert all(abs(v - broken_run.ended.timestamp()) < 0.001 for v in ended.values())

            # Counters: the textfile counts the run that wrote it; the daemon counts from its
            # start (none yet).
            attempts = by_instance(p, 'stackvault_backup_attempt_total{job="etc"}', 2)
            assert attempts == {daemon: 0.0, files: 1.0}
            hist = by_instance(p, 'stackvault_backup_duration_seconds_count{job="broken"}', 2)
            assert hist == {daemon: 0.0, files: 1.0}

            # Per repository: the newest snapshot, the copy, the check of the first run.
            newest = by_instance(
                p,
                'stackvault_newest_snapshot_timestamp_seconds{job="etc",repository="offsite"}',
                2,
            )
            assert all(abs(v - snapshot.time.timestamp()) < 0.001 for v in newest.values())
            lag = by_instance(p, 'stackvault_copy_lag_snapshots{job="etc"}', 2)
            assert lag == {daemon: 0.0, files: 0.0}
            checked = by_instance(p, 'stackvault_check_last_success{job="etc"}', 4)
            assert set(checked.values()) == {1.0}
            interval = by_instance(p, 'stackvault_job_expected_interval_seconds{job="etc"}', 2)
            assert set(interval.values()) == {3600.0}  # tier2: hourly
            assert p.query("stackvault_drill_last_timestamp_seconds") == []  # no drills yet

            # The rules: the failing job's alerts fire, the healthy job's do not.
            def firing() -> set[tuple[str, str]] | None:
                doc = p.api("alerts")
                alerts = {
                    (a["labels"]["alertname"], a["labels"].get("job", ""))
                    for a in doc["data"]["alerts"]
                    if a["state"] == "firing"
                }
                return alerts if ("StackvaultRPOBreached", "broken") in alerts else None

            alerts = p.wait_for("firing alerts", firing)
            assert {
                ("StackvaultBackupFailing", "broken"),
                ("StackvaultBackupNeverSucceeded", "broken"),
                ("StackvaultRPOBreached", "broken"),
            } <= alerts
            assert not [a for a in alerts if a[1] == "etc"]

            check_dashboard(p)
            check_delivered(hook, p)
            assert ("StackvaultDaemonDown", "stackvault") not in alerts
    finally:
        server.stop()


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, query) of every target of every panel."""
    doc = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


def check_dashboard(prom: Prometheus) -> None:
    """Every query of the dashboard parses and returns data (none for the drills); the job
    variable lists the configured jobs."""
    for title, expr in dashboard_queries():
        for name, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, f"{title}: a variable the test does not know: {expr}"
        doc = prom.api("query", query=expr)
        assert doc["_status"] == 200 and doc["status"] == "success", (title, expr, doc)
        if "stackvault_drill_" in expr:
            assert doc["data"]["result"] == [], (title, expr)
        else:  # a rate needs two scrapes in its range: wait for them
            prom.wait_for(f"data for {title}: {expr}", functools.partial(prom.query, expr))
    jobs = prom.api("label/job/values", **{"match[]": "stackvault_job_expected_interval_seconds"})
    assert sorted(jobs["data"]) == ["broken", "etc"]


def test_the_dashboard_is_well_formed() -> None:
    doc = json.loads(DASHBOARD.read_text())
    panels = doc["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["job"]["allValue"] == ".*"
    titles = {p["title"] for p in panels if p["type"] != "row"}
    for needed in ("Verdict per job", "RPO against objective", "Run durations", "Copy lag"):
        assert needed in titles
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["targets"] and p["description"], p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert {t["refId"] for t in p["targets"]} == {chr(65 + i) for i in range(len(p["targets"]))}
    names = {
        re.sub(r"_(bucket|sum|count)$", "", m)
        for _, e in dashboard_queries()
        for m in re.findall(r"stackvault_\w+", e)
    }
    assert any(n.startswith("stackvault_drill_") for n in names)
    assert "stackvault_copy_lag_snapshots" in names


def check_delivered(hook: Webhook, prom: Prometheus) -> None:
    """Alertmanager posted the failing job's alerts, firing, with their annotations; nothing
    about the healthy job."""

    def delivered() -> list[dict[str, Any]] | None:
        alerts = hook.alerts()
        names = {a["labels"]["alertname"] for a in alerts if a["labels"].get("job") == "broken"}
        return alerts if "StackvaultBackupFailing" in names else None

    alerts = prom.wait_for("alerts delivered to the webhook", delivered)
    failing = [a for a in alerts if a["labels"]["alertname"] == "StackvaultBackupFailing"]
    assert failing[0]["status"] == "firing"
    assert failing[0]["labels"]["severity"] == "critical"
    assert failing[0]["labels"]["result"] == "failed"
    assert (
        failing[0]["annotations"]["summary"] == "stackvault job broken: the last run ended failed"
    )
    assert "stackvault run broken" in failing[0]["annotations"]["description"]
    assert not [a for a in alerts if a["labels"].get("job") == "etc"]
