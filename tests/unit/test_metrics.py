"""The metrics of the jobs (ops/metrics): figures computed from repositories holding a
synthetic history (in memory, on a frozen clock), their families as prometheus-client writes
them (parsed back with its parser), counters after runs and carried over from a textfile, the
HTTP endpoint on 127.0.0.1."""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_stack_plan import manifest_json

from stackvault.clock import FrozenClock
from stackvault.config import Config, RepositorySettings, load_config
from stackvault.crypto.kdf import KdfParams
from stackvault.errors import RepositoryNotFound, UsageError
from stackvault.ops.metrics import Metrics, parse_listen
from stackvault.ops.metrics.families import DURATION_BUCKETS, carry_over
from stackvault.ops.metrics.figures import (
    ServiceCut,
    StackCut,
    copy_lag,
    job_figures,
    read_repository,
    stack_cut,
)
from stackvault.records.drill import DrillResult
from stackvault.records.run import RunRecord, RunResult, RunStep, Trigger, job_tag
from stackvault.repo.leases import Lease, claim_lease
from stackvault.repo.lock import Holder
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.store.memory import MemoryStore

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def write_config(tmp_path: Path) -> Config:
    """Job etc (tier2: RPO 2 h, hourly, check every 7 d) into local, copied to offsite and
    archive; job other into local only."""
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        f"""\
repositories:
  local: {{url: {tmp_path / "local"}, password_env: PW}}
  offsite: {{url: {tmp_path / "offsite"}, password_env: PW}}
  archive: {{url: {tmp_path / "archive"}, password_env: PW}}
jobs:
  etc:
    paths: [/etc]
    policy: tier2
    repository: local
    copies: [offsite, archive]
  other:
    paths: [/srv]
    policy: tier3
    repository: local
"""
    )
    return load_config(str(path), check_files=False)


def run(
    hours_ago: float,
    result: RunResult,
    *,
    job: str = "etc",
    minutes: float = 5,
    trigger: Trigger = "schedule",
    checks: tuple[tuple[str, str, int], ...] = (),
) -> RunRecord:
    started = NOW - hours_ago * HOUR
    steps = [RunStep("backup", "ok" if result != "failed" else "failed", started, 60.0, "local")]
    for repo, check_result, read in checks:
        steps.append(
            RunStep(
                "check",
                "ok" if check_result == "ok" else "failed",
                started + timedelta(minutes=2),
                30.0,
                repo,
                details={"packs": 3, "packs_read": 1, "bytes_read": read},
            )
        )
    return RunRecord(
        id=secrets.token_hex(16),
        job=job,
        host="h",
        started=started,
        ended=started + timedelta(minutes=minutes),
        result=result,
        trigger=trigger,
        program="stackvault 0.1.0",
        steps=steps,
    )


def snap(
    hours_ago: float,
    job: str = "etc",
    *,
    complete: bool = True,
    original: str | None = None,
    summary: dict[str, int] | None = None,
) -> Snapshot:
    return Snapshot(
        time=NOW - hours_ago * HOUR,
        tree=bytes(32),
        paths=["/etc"],
        hostname="h",
        username="u",
        tags=[job_tag(job)],
        complete=complete,
        summary=summary or {},
        original=original,
        id=secrets.token_hex(32),
    )


class Repos:
    """Repositories in memory by name; `open` is an `Opener` (a name it does not have cannot
    be opened)."""

    def __init__(self, clock: FrozenClock) -> None:
        self.clock = clock
        self.repos: dict[str, Repository] = {}
        self.opened: list[str] = []

    def add(self, name: str, runs: list[RunRecord], snaps: list[Snapshot]) -> None:
        store = MemoryStore()
        kdf = KdfParams(memory_kib=8 * 1024, iterations=1)
        Repository.init(store, b"pw", kdf=kdf, clock=self.clock)
        repo = Repository.open(store, b"pw", clock=self.clock)
        for r in runs:
            repo.save_run(r)
        for s in snaps:
            s.id = ""
            repo.save_snapshot(s)
        self.repos[name] = repo

    def open(self, settings: RepositorySettings) -> AbstractContextManager[Repository]:
        self.opened.append(settings.name)
        repo = self.repos.get(settings.name)
        if repo is None:
            raise RepositoryNotFound(f"repository {settings.name} is unreachable")
        return nullcontext(repo)


@pytest.fixture
def history(tmp_path: Path) -> tuple[Config, Repos, dict[str, object]]:
    """etc: an ok run 6 h ago (checks: local ok, offsite failed), a failed run 1 h ago; in
    local complete snapshots 6 h and 3 h old and an incomplete one 1 h old; offsite holds a
    copy of the 6 h one only; archive cannot be opened. other: one ok run 30 min ago (newer
    than etc's, must not count for etc)."""
    config = write_config(tmp_path)
    clock = FrozenClock(NOW)
    ok = run(6, "ok", checks=(("local", "ok", 4096), ("offsite", "failed", 0)))
    failed = run(1, "failed", minutes=20, trigger="retry")
    other = run(0.5, "ok", job="other")
    old = snap(6)
    mid = snap(3, summary={"bytes": 1000, "data_added": 300, "data_added_stored": 200})
    newest = snap(
        1,
        complete=False,
        summary={
            "bytes": 5000,
            "data_added": 700,
            "data_added_stored": 400,
            "files_new": 3,
            "files_changed": 2,
            "files_unmodified": 10,
        },
    )
    repos = Repos(clock)
    repos.add("local", [ok, failed, other], [old, mid, newest, snap(0.5, "other")])
    repos.add("offsite", [ok], [snap(5.9, original=old.id)])
    return config, repos, {"ok": ok, "failed": failed, "old": old, "mid": mid, "newest": newest}


def test_figures_of_a_job_from_its_repositories(
    history: tuple[Config, Repos, dict[str, object]],
) -> None:
    config, repos, h = history
    ok, failed, mid, newest = h["ok"], h["failed"], h["mid"], h["newest"]
    assert isinstance(ok, RunRecord) and isinstance(failed, RunRecord)
    assert isinstance(mid, Snapshot) and isinstance(newest, Snapshot)
    job = config.job("etc")
    reads = {s.name: read_repository(s, repos.open) for s in job.repositories}
    f = job_figures(job, reads, NOW)

    assert (f.rpo_s, f.interval_s, f.check_every_s) == (7200, 3600, 7 * 86400)
    assert f.last_success == ok.ended  # the newer failed run and the other job's do not count
    assert f.last_run is not None and f.last_run.id == failed.id
    assert f.last_run.result == "failed" and f.last_run.duration_s == 20 * 60
    assert f.verdict == "breached"  # the newest complete snapshot is 3 h old, the RPO 2 h

    b = f.last_backup
    assert b is not None and b.snapshot == newest.id and not b.complete
    assert (b.source_bytes, b.added_bytes, b.stored_bytes) == (5000, 700, 400)
    assert (b.files_new, b.files_changed, b.files_unmodified) == (3, 2, 10)
    assert f.stack_cut is None

    local, offsite, archive = f.repositories
    assert (local.role, offsite.role, archive.role) == ("primary", "copy", "copy")
    assert local.error is None and local.newest_snapshot == mid.time
    assert (local.job_snapshots, local.snapshots, local.copy_lag) == (2, 4, None)
    assert local.check is not None and local.check.ok and local.check.bytes_read == 4096
    assert local.size_bytes is not None and local.size_bytes > 0
    assert local.filesystem is None  # in memory, not a local directory
    assert offsite.newest_snapshot == NOW - 5.9 * HOUR
    assert offsite.copy_lag == 1  # the 3 h snapshot; the incomplete one does not count
    assert offsite.check is not None and not offsite.check.ok
    assert archive.error == "repository archive is unreachable"
    assert archive.newest_snapshot is None and archive.copy_lag is None


def lease(job: str, slot_hours_ago: float, attempt: int, host: str, state: str) -> Lease:
    slot = NOW - slot_hours_ago * HOUR
    return Lease(
        job=job,
        slot=slot,
        attempt=attempt,
        run_id=secrets.token_hex(16),
        trigger="schedule",
        holder=Holder(host, 4242),
        acquired=slot,
        refreshed=slot + timedelta(minutes=attempt),
        lease_s=60,
        state=state,  # type: ignore[arg-type]
    )


def test_the_newest_lease_of_a_job_names_its_holder(
    history: tuple[Config, Repos, dict[str, object]],
) -> None:
    config, repos, _ = history
    local = repos.repos["local"]
    for held in (
        lease("etc", 2, 1, "node-a", "done"),
        lease("etc", 1, 1, "node-a", "abandoned"),
        lease("etc", 1, 2, "node-b", "running"),  # the retry of the same slot: newest
        lease("other", 0.5, 1, "node-c", "done"),
    ):
        assert claim_lease(local.store, local.envelope, held) is not None
    metrics = Metrics(clock=FrozenClock(NOW))
    metrics.refresh(config, repos.open)
    figures = metrics.figures()
    assert figures["etc"].lease is not None and figures["other"].lease is not None
    assert (figures["etc"].lease.host, figures["etc"].lease.state) == ("node-b", "running")
    assert figures["other"].lease.host == "node-c"
    got = samples(metrics)
    holder = {"job": "etc", "host": "node-b", "pid": "4242", "state": "running"}
    assert value(got, "lease_holder_info", **holder) == 1
    assert [k for k in got if k[0] == "stackvault_lease_holder_info"] == [
        ("stackvault_lease_holder_info", tuple(sorted(holder.items()))),
        (
            "stackvault_lease_holder_info",
            (("host", "node-c"), ("job", "other"), ("pid", "4242"), ("state", "done")),
        ),
    ]
    beat = (NOW - HOUR + timedelta(minutes=2)).timestamp()
    assert value(got, "lease_heartbeat_timestamp_seconds", job="etc") == beat


def test_copy_lag_counts_primary_snapshots_newer_than_the_newest_copied() -> None:
    a, b, c = snap(3), snap(2), snap(1)
    other = snap(0.5, "other")
    primary = [c, other, a, b]
    assert copy_lag(primary, frozenset(), "etc") == 3
    assert copy_lag(primary, frozenset({a.id}), "etc") == 2
    assert copy_lag(primary, frozenset({a.id, b.id}), "etc") == 1
    assert copy_lag(primary, frozenset({b.id}), "etc") == 1  # a was forgotten in the copy
    assert copy_lag(primary, frozenset({c.id}), "etc") == 0


def test_the_last_stack_cut_of_a_job() -> None:
    strict, online, damaged = snap(3), snap(2), snap(1)
    strict.stack = manifest_json()  # api stopped, 4.5 s of downtime
    online.stack = {**manifest_json(), "consistency": "online"}
    del online.stack["downtime"]
    for service in online.stack["services"].values():
        service["stopped"] = False
    damaged.stack = {**manifest_json(), "services": "not a mapping"}
    files_only = snap(0.5)
    assert stack_cut([strict, files_only], "etc") == StackCut("strict", 1, 4.5)
    per_service = snap(3)  # a manifest that records each service's downtime
    per_service.stack = manifest_json()
    per_service.stack["downtime"]["services"] = {
        name: {
            "containers": [f"shop-{name}-1"],
            "level": level,
            "mode": mode,
            "timeout_s": 10.0,
            "stop_s": 0.5,
            "killed": False,
            "downtime_s": seconds,
        }
        for name, level, mode, seconds in (("api", 0, "stop", 4.5), ("web", 1, "pause", None))
    }
    services = (ServiceCut("api", "stop", 4.5), ServiceCut("web", "pause", None))
    assert stack_cut([per_service], "etc") == StackCut("strict", 2, 4.5, services)
    assert stack_cut([strict, online, files_only], "etc") == StackCut("online", 0, None)
    assert stack_cut([strict, online, damaged], "etc") is None  # check reports the damage
    assert stack_cut([strict], "other") is None


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry as prometheus-client writes it, parsed back."""
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    got: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return got[(f"stackvault_{name}", tuple(sorted(labels.items())))]


def test_refresh_reads_each_repository_once_and_exports_the_families(
    history: tuple[Config, Repos, dict[str, object]],
) -> None:
    config, repos, h = history
    ok = h["ok"]
    assert isinstance(ok, RunRecord)
    clock = FrozenClock(NOW + 10 * timedelta(minutes=1))
    metrics = Metrics(clock=clock)
    metrics.refresh(config, repos.open)
    assert sorted(repos.opened) == ["archive", "local", "offsite"]  # local once for both jobs

    got = samples(metrics)
    assert value(got, "build_info", version="0.1.0") == 1
    assert value(got, "backup_last_success_timestamp_seconds", job="etc") == ok.ended.timestamp()
    assert value(got, "backup_last_result", job="etc", result="failed") == 1
    assert value(got, "backup_last_result", job="etc", result="ok") == 0
    assert value(got, "job_verdict", job="etc", verdict="breached") == 1
    assert value(got, "rpo_objective_seconds", job="other") == 86400
    assert value(got, "job_expected_interval_seconds", job="etc") == 3600
    primary = {"job": "etc", "repository": "local", "role": "primary"}
    # measured when collected: 3 h + the 10 min the clock moved since the snapshot was read
    assert value(got, "rpo_current_seconds", **primary) == 3 * 3600 + 600
    assert value(got, "copy_lag_snapshots", job="etc", repository="offsite", role="copy") == 1
    assert value(got, "repository_up", job="etc", repository="archive", role="copy") == 0
    assert value(got, "check_last_success", job="etc", repository="offsite", role="copy") == 0
    assert value(got, "check_last_verified_bytes", **primary) == 4096
    assert value(got, "backup_last_files", job="etc", state="changed") == 2
    assert value(got, "backup_attempt_total", job="etc") == 0  # counted from here on
    assert not [k for k in got if k[0].startswith("stackvault_drill_")]  # no drills yet
    text = generate_latest(metrics.registry).decode()
    for family in ("drill_last_timestamp_seconds", "drill_last_rto_seconds"):
        assert f"# TYPE stackvault_{family} gauge" in text

    clock.advance(3600)
    assert value(samples(metrics), "rpo_current_seconds", **primary) == 4 * 3600 + 600


def test_a_run_observed_counts_and_becomes_the_last_run(
    history: tuple[Config, Repos, dict[str, object]],
) -> None:
    config, repos, _ = history
    metrics = Metrics(clock=FrozenClock(NOW))
    metrics.refresh(config, repos.open)
    metrics.observe_run("etc", run(-0.1, "ok", minutes=2))  # took 120 s
    metrics.observe_run("etc", run(-0.2, "partial", minutes=50, trigger="retry"))
    got = samples(metrics)
    assert value(got, "backup_attempt_total", job="etc") == 2
    assert value(got, "backup_success_total", job="etc") == 1
    assert value(got, "backup_partial_failure_total", job="etc") == 1
    assert value(got, "backup_failure_total", job="etc") == 0
    assert value(got, "backup_retry_total", job="etc") == 1
    assert value(got, "backup_duration_seconds_bucket", job="etc", le="60.0") == 0
    assert value(got, "backup_duration_seconds_bucket", job="etc", le="120.0") == 1
    assert value(got, "backup_duration_seconds_bucket", job="etc", le="3600.0") == 2
    assert value(got, "backup_duration_seconds_count", job="etc") == 2
    assert value(got, "backup_duration_seconds_sum", job="etc") == 120 + 3000
    assert value(got, "backup_last_result", job="etc", result="partial") == 1
    last_ok = (NOW + 0.1 * HOUR + timedelta(minutes=2)).timestamp()
    assert value(got, "backup_last_success_timestamp_seconds", job="etc") == last_ok
    # an older run reported late changes the counters, not the last run
    metrics.observe_run("etc", run(30, "failed"))
    got = samples(metrics)
    assert value(got, "backup_last_result", job="etc", result="partial") == 1
    assert value(got, "backup_failure_total", job="etc") == 1


def test_counters_carry_over_from_the_textfile_they_replace(
    history: tuple[Config, Repos, dict[str, object]], tmp_path: Path
) -> None:
    config, repos, _ = history
    path = tmp_path / "etc.prom"
    for n in range(3):
        metrics = Metrics(clock=FrozenClock(NOW), with_build_info=False)
        metrics.refresh(config, repos.open, jobs=["etc"])
        metrics.carry_over_from(path)
        metrics.observe_run("etc", run(-n, "ok" if n < 2 else "failed", minutes=1 + n))
        metrics.write_textfile(path)
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }
    assert value(got, "backup_attempt_total", job="etc") == 3
    assert value(got, "backup_success_total", job="etc") == 2
    assert value(got, "backup_failure_total", job="etc") == 1
    assert value(got, "backup_duration_seconds_sum", job="etc") == 60 + 120 + 180
    assert value(got, "backup_duration_seconds_bucket", job="etc", le="120.0") == 2
    assert not [k for k in got if k[0] == "stackvault_build_info"]
    assert not [k for k in got if dict(k[1]).get("job") == "other"]  # only the job asked for
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("etc.prom")] == ["etc.prom"]


def test_carry_over_ignores_other_jobs_and_foreign_samples() -> None:
    text = (
        "# TYPE stackvault_backup_attempt counter\n"
        'stackvault_backup_attempt_total{job="etc"} 7\n'
        'stackvault_backup_attempt_total{job="web"} 9\n'
        "# TYPE stackvault_backup_duration_seconds histogram\n"
        'stackvault_backup_duration_seconds_bucket{job="etc",le="1.0"} 2\n'
        'stackvault_backup_duration_seconds_bucket{job="etc",le="2.5"} 5\n'
        'stackvault_backup_duration_seconds_bucket{job="etc",le="+Inf"} 7\n'
        'stackvault_backup_duration_seconds_sum{job="etc"} -4\n'
    )
    tallies = carry_over(text, ["etc"])
    assert list(tallies) == ["etc"]
    etc = tallies["etc"]
    assert etc.attempt == 7 and etc.buckets[0] == 2 and etc.duration_sum == 0
    assert sum(etc.buckets[1:]) == 0 and len(etc.buckets) == len(DURATION_BUCKETS)
    assert carry_over("not { the format", ["etc"]) == {}


def test_jobs_removed_from_the_configuration_are_dropped(
    history: tuple[Config, Repos, dict[str, object]], tmp_path: Path
) -> None:
    config, repos, _ = history
    metrics = Metrics(clock=FrozenClock(NOW))
    metrics.refresh(config, repos.open)
    metrics.observe_run("other", run(0, "ok", job="other"))
    smaller = Config(config.path, config.repositories, config.policies, {"etc": config.jobs["etc"]})
    metrics.refresh(smaller, repos.open)
    assert set(metrics.figures()) == {"etc"}
    assert not [k for k in samples(metrics) if dict(k[1]).get("job") == "other"]


@contextmanager
def served(metrics: Metrics) -> Iterator[str]:
    server = metrics.serve_http("127.0.0.1:0")
    try:
        yield server.url
    finally:
        server.stop()


def test_the_http_endpoint(history: tuple[Config, Repos, dict[str, object]]) -> None:
    config, repos, _ = history
    metrics = Metrics(clock=FrozenClock(NOW))
    metrics.refresh(config, repos.open)
    with served(metrics) as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
            assert resp.status == 200 and resp.read() == b"ok\n"
        with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
            body = resp.read().decode()
        assert 'stackvault_backup_last_result{job="etc",result="failed"} 1.0' in body
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url + "/other", timeout=5)
        assert err.value.code == 404
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthz", timeout=2)  # stopped: nothing listens


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:9598") == ("127.0.0.1", 9598)
    assert parse_listen("[::1]:9598") == ("::1", 9598)
    assert parse_listen(":9598") == ("", 9598)
    for bad in ("9598", "localhost:", "host:http", "127.0.0.1:70000"):
        with pytest.raises(UsageError):
            parse_listen(bad)


def test_the_newest_drill_is_exported_and_is_not_the_last_run(
    history: tuple[Config, Repos, dict[str, object]],
) -> None:
    config, repos, h = history
    failed = h["failed"]
    assert isinstance(failed, RunRecord)
    ended = NOW - timedelta(minutes=30)
    drill = DrillResult(
        drill_id=secrets.token_hex(16),
        job="etc",
        project="etc",
        drill_project="etc-drill",
        snapshot=None,
        snapshot_time=None,
        started=ended - timedelta(minutes=12),
        ended=ended,
        result="ok",
        rto_s=540.0,
        rto_target_s=7200.0,
    ).to_run_record(host="h", program="stackvault 0.1.0", repository="local", location="/l")
    repos.repos["local"].save_run(drill)
    metrics = Metrics(clock=FrozenClock(NOW))
    metrics.refresh(config, repos.open)
    got = samples(metrics)
    primary = {"job": "etc", "repository": "local", "role": "primary"}
    assert value(got, "drill_last_timestamp_seconds", **primary) == ended.timestamp()
    assert value(got, "drill_last_success", **primary) == 1
    assert value(got, "drill_last_rto_seconds", **primary) == 540
    # the drill is newer than the failed run, but it is not a run of the job
    assert value(got, "backup_last_result", job="etc", result="failed") == 1
    assert value(got, "backup_last_attempt_timestamp_seconds", job="etc") == (
        failed.ended.timestamp()
    )
