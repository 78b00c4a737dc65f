"""The loop of ``stackvault serve`` (`stackvault.ops.daemon`) on a frozen clock: its sleep
advances the clock, a fake runner stands in for `JobRun`, a fake opener serves the run
records the start state is read from; real signals (SIGHUP, SIGTERM) sent to this process.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stackvault.clock import FrozenClock
from stackvault.config import Config, load_config
from stackvault.config.job import EffectiveJob
from stackvault.errors import RepositoryNotFound
from stackvault.interrupts import keep_interrupts
from stackvault.ops.daemon import Daemon, DaemonOptions
from stackvault.ops.eventlog import EventLog
from stackvault.records.run import RunRecord, RunResult, Trigger

T0 = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)


def write_config(path: Path, jobs: dict[str, str]) -> None:
    body = "".join(
        f"""\
  {name}:
    paths: [/nonexistent]
    policy: tier3
    schedule: "{cron}"
    repository: primary
"""
        for name, cron in jobs.items()
    )
    path.write_text(
        f"""\
repositories:
  primary:
    url: {path.parent / "primary"}
    password_env: SV_TEST_PW
jobs:
{body}"""
    )


def record(job: str, started: datetime, result: RunResult = "ok") -> RunRecord:
    return RunRecord(
        id=f"{job}-{started.isoformat()}",
        job=job,
        host="h",
        started=started,
        ended=started + timedelta(seconds=10),
        result=result,
        trigger="schedule",
        program="stackvault test",
    )


class FakeRepo:
    """What `read_job_history` reads of a repository."""

    def __init__(self, runs: list[RunRecord], clock: FrozenClock) -> None:
        self.runs, self.clock = runs, clock

    def list_runs(self, job: str | None = None) -> list[RunRecord]:
        return [r for r in self.runs if job is None or r.job == job]

    def list_snapshots(self) -> list[object]:
        return []


class Harness:
    """A daemon on a frozen clock; ``at`` maps a time to an action done by the fake sleep
    when the clock reaches it (once)."""

    def __init__(
        self,
        tmp_path: Path,
        jobs: dict[str, str],
        history: list[RunRecord] | None = None,
        *,
        unreadable: bool = False,
        run: Callable[[Harness, EffectiveJob, Trigger], RunResult] | None = None,
        launcher: FakeLauncher | None = None,
        drill_launcher: FakeLauncher | None = None,
        concurrency: int = 2,
        stop_timeout_s: float = 30,
    ) -> None:
        self.config = tmp_path / "stackvault.yaml"
        write_config(self.config, jobs)
        self.clock = FrozenClock(T0)
        self.out = io.StringIO()
        self.runs: list[tuple[str, Trigger, datetime]] = []
        self.at: list[tuple[datetime, Callable[[], None]]] = []
        self.history = history or []
        self.unreadable = unreadable
        self.run = run
        self.daemon = Daemon(
            self.load,
            self.opener,
            EventLog("json", self.out, self.clock),
            options=DaemonOptions(
                jitter_s=0, seed=1, stop_timeout_s=stop_timeout_s, concurrency=concurrency
            ),
            clock=self.clock,
            run_job=self.run_job,
            launcher=launcher,
            drill_launcher=drill_launcher,
            sleep=self.sleep,
        )

    def load(self) -> Config:
        return load_config(str(self.config), check_files=False)

    @contextmanager
    def opener(self, settings: object) -> Iterator[FakeRepo]:
        if self.unreadable:
            raise RepositoryNotFound("there is no stackvault repository at /x; run init first")
        yield FakeRepo(self.history, self.clock)

    def run_job(self, job: EffectiveJob, trigger: Trigger, run_id: str) -> RunResult:
        self.runs.append((job.name, trigger, self.clock.now()))
        self.clock.advance(10)
        return self.run(self, job, trigger) if self.run else "ok"

    def sleep(self, seconds: float) -> None:
        assert 0 < seconds <= 0.5
        self.clock.advance(seconds)
        while self.at and self.at[0][0] <= self.clock.now():
            _, action = self.at.pop(0)
            action()

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]

    def kinds(self) -> list[str]:
        return [str(e["event"]) for e in self.events()]


class FakeRun:
    """A run in a "child" that ends ``seconds`` after it started, by the harness's clock."""

    def __init__(self, clock: FrozenClock, seconds: float, obeys: bool) -> None:
        self.clock, self.ends = clock, clock.now() + timedelta(seconds=seconds)
        self.obeys = obeys
        self.interrupted = self.killed = False
        self.record: RunRecord | None = None
        self.not_recorded: dict[str, str] = {}

    def poll(self) -> RunResult | None:
        if self.killed or (self.interrupted and self.obeys):
            return "interrupted" if self.obeys else "failed"
        return "ok" if self.clock.now() >= self.ends else None

    def interrupt(self) -> None:
        self.interrupted = True

    def kill(self) -> None:
        self.killed = True


class FakeLauncher:
    """Starts `FakeRun`s: ``seconds`` per job (default 10); ``obeys``: whether they stop on
    an interrupt."""

    def __init__(
        self, clock: FrozenClock, seconds: dict[str, float], *, obeys: bool = True
    ) -> None:
        self.clock, self.seconds, self.obeys = clock, seconds, obeys
        self.started: list[tuple[str, str, datetime]] = []
        self.handles: list[FakeRun] = []

    def start(self, job: str, trigger: str, run_id: str) -> FakeRun:
        self.started.append((job, trigger, self.clock.now()))
        handle = FakeRun(self.clock, self.seconds.get(job, 10), self.obeys)
        self.handles.append(handle)
        return handle


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SV_TEST_PW", "secret-password-never-logged")


def signal_self(sig: signal.Signals) -> Callable[[], None]:
    return lambda: os.kill(os.getpid(), sig)


def serve(h: Harness) -> int:
    restore = h.daemon.install_signals()
    try:
        return h.daemon.serve()
    finally:
        restore()


def test_catch_up_at_start_then_the_schedule(tmp_path: Path) -> None:
    history = [record("fast", T0 - timedelta(hours=1)), record("daily", T0 - timedelta(hours=22))]
    h = Harness(tmp_path, {"fast": "*/5 * * * *", "daily": "0 2 * * *"}, history)
    h.at = [(T0.replace(minute=31), signal_self(signal.SIGTERM))]
    assert serve(h) == 0
    assert h.runs == [
        ("fast", "catch-up", T0),
        *(("fast", "schedule", T0.replace(minute=m)) for m in (5, 10, 15, 20, 25, 30)),
    ]
    kinds = h.kinds()
    assert kinds.index("started") < kinds.index("run-start")
    assert kinds[-2:] == ["stopping", "stopped"]
    assert kinds.count("run-start") == kinds.count("run-end") == 7
    assert "secret-password" not in h.out.getvalue()


def test_jobs_run_one_at_a_time_and_a_late_one_catches_up(tmp_path: Path) -> None:
    def slow(h: Harness, job: EffectiveJob, trigger: Trigger) -> RunResult:
        if job.name == "slow":
            h.clock.advance(20 * 60)  # 20 minutes: "fast" misses 4 slots meanwhile
        return "ok"

    h = Harness(tmp_path, {"fast": "*/5 * * * *", "slow": "0 * * * *"}, run=slow)
    h.at = [(T0 + timedelta(hours=1, minutes=30), signal_self(signal.SIGTERM))]
    assert serve(h) == 0
    one = T0.replace(hour=1, minute=0)
    after = [(n, t, w) for n, t, w in h.runs if w >= one]
    assert after[:4] == [
        ("fast", "schedule", one),  # same slot: by name
        ("slow", "schedule", one + timedelta(seconds=10)),  # runs 20 minutes
        # fast's 01:05 to 01:20 slots: one run, after slow, more than 5 minutes late
        ("fast", "catch-up", one + timedelta(minutes=20, seconds=20)),
        ("fast", "schedule", one + timedelta(minutes=25)),
    ]
    starts = [w for _, _, w in h.runs]
    assert starts == sorted(starts)


def test_sighup_reloads_and_an_invalid_file_keeps_the_old_one(tmp_path: Path) -> None:
    h = Harness(tmp_path, {"fast": "*/5 * * * *"})

    def break_it() -> None:
        h.config.write_text("jobs: [not a mapping\n")
        os.kill(os.getpid(), signal.SIGHUP)

    def add_job() -> None:
        write_config(h.config, {"fast": "*/5 * * * *", "other": "*/10 * * * *"})
        os.kill(os.getpid(), signal.SIGHUP)

    h.at = [
        (T0.replace(minute=7), break_it),
        (T0.replace(minute=17), add_job),
        (T0.replace(minute=21), signal_self(signal.SIGTERM)),
    ]
    assert serve(h) == 0
    events = h.events()
    failed = [e for e in events if e["event"] == "reload-failed"]
    assert len(failed) == 1 and "kept" in str(failed[0]["hint"])
    assert [e["jobs"] for e in events if e["event"] == "reloaded"] == ["fast,other"]
    assert [(n, w.minute) for n, _, w in h.runs] == [
        ("fast", 5),
        ("fast", 10),  # the invalid file changed nothing
        ("fast", 15),
        ("fast", 20),
        ("other", 20),
    ]


def test_sigterm_during_a_run_interrupts_it_and_exits_0(tmp_path: Path) -> None:
    def interrupted(h: Harness, job: EffectiveJob, trigger: Trigger) -> RunResult:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler's KeyboardInterrupt ends this at once
        raise AssertionError("the run was not interrupted")

    h = Harness(tmp_path, {"fast": "*/5 * * * *"}, run=interrupted)
    began = time.monotonic()
    assert serve(h) == 0
    assert time.monotonic() - began < 3
    assert len(h.runs) == 1
    end = next(e for e in h.events() if e["event"] == "run-end")
    assert end["result"] == "interrupted"
    stopping = next(e for e in h.events() if e["event"] == "stopping")
    assert stopping["signal"] == "SIGTERM" and stopping["run_in_progress"] is True
    timer = h.daemon._stop_timer  # cancelled once the run stopped: it never fires
    assert timer is not None
    timer.join(2)
    assert not timer.is_alive()


def test_an_interrupt_a_finalizer_drops_during_a_run_is_raised_again(tmp_path: Path) -> None:
    class Thing:
        pass

    def interrupted(h: Harness, job: EffectiveJob, trigger: Trigger) -> RunResult:
        def finalizer() -> None:  # the handler's KeyboardInterrupt is raised in here, dropped
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass

        thing = Thing()
        weakref.finalize(thing, finalizer)
        del thing
        time.sleep(5)  # the interrupt sent again ends this at once
        raise AssertionError("the run was not interrupted")

    h = Harness(tmp_path, {"fast": "*/5 * * * *"}, run=interrupted)
    restore = keep_interrupts()
    try:
        began = time.monotonic()
        assert serve(h) == 0
    finally:
        restore()
    assert time.monotonic() - began < 3
    end = next(e for e in h.events() if e["event"] == "run-end")
    assert end["result"] == "interrupted"
    assert [e["event"] for e in h.events()].count("stopping") == 1


def test_failed_run_is_retried_with_backoff(tmp_path: Path) -> None:
    results: list[RunResult] = ["failed", "failed", "ok"]

    def flaky(h: Harness, job: EffectiveJob, trigger: Trigger) -> RunResult:
        return results.pop(0) if results else "ok"

    h = Harness(tmp_path, {"hourly": "0 * * * *"}, run=flaky)
    h.at = [(T0.replace(hour=1, minute=30), signal_self(signal.SIGTERM))]
    assert serve(h) == 0
    one = T0.replace(hour=1, minute=0)
    triggers = [(t, round((w - one).total_seconds())) for _, t, w in h.runs]
    # failed at +10 s; retry after 60-66 s; failed at +10 s; retry after 120-132 s
    assert [t for t, _ in triggers] == ["schedule", "retry", "retry"]
    assert 70 <= triggers[1][1] <= 77 and 200 <= triggers[2][1] <= 220
    assert [e["delay_s"] is not None for e in h.events() if e["event"] == "retry"] == [True] * 2


def test_unreadable_history_is_logged_and_the_job_waits(tmp_path: Path) -> None:
    h = Harness(tmp_path, {"fast": "*/5 * * * *"}, unreadable=True)
    h.at = [(T0.replace(minute=6), signal_self(signal.SIGTERM))]
    assert serve(h) == 0
    (unreadable,) = [e for e in h.events() if e["event"] == "history-unreadable"]
    assert unreadable["repository"] == "primary" and "run init" in str(unreadable["error"])
    assert h.runs == [("fast", "schedule", T0.replace(minute=5))]


def test_text_log_is_one_line_per_event() -> None:
    out = io.StringIO()
    log = EventLog("text", out, FrozenClock(T0))
    log("run-end", job="etc", result="ok", error=None, detail="s3://key:secret@host/b failed")
    (line,) = out.getvalue().splitlines()
    assert line.startswith("2026-01-01T00:01:00Z run-end job=etc result=ok detail=")
    assert "secret" not in line and "error" not in line


def test_runs_in_children_overlap_across_jobs_but_never_within_one(tmp_path: Path) -> None:
    launcher = FakeLauncher(FrozenClock(T0), {"slow": 20 * 60, "fast": 7 * 60})
    h = Harness(tmp_path, {"fast": "*/5 * * * *", "slow": "0 * * * *"}, launcher=launcher)
    launcher.clock = h.clock
    h.at = [(T0 + timedelta(hours=1, minutes=30), signal_self(signal.SIGTERM))]
    assert serve(h) == 0
    assert h.runs == []  # nothing ran in the main thread
    one = T0.replace(hour=1, minute=0)
    after = [(n, t, w.replace(microsecond=0)) for n, t, w in launcher.started if w >= one]
    # fast takes 7 minutes: it runs at :05, :15, :25 ... (the slot in between comes while it
    # runs and is skipped), and goes on so while slow runs 01:00-01:20.
    assert after[:4] == [
        ("slow", "schedule", one),
        ("fast", "schedule", one + timedelta(minutes=5)),
        ("fast", "schedule", one + timedelta(minutes=15)),
        ("fast", "schedule", one + timedelta(minutes=25)),
    ]
    events = h.events()
    assert sum(e["event"] == "run-end" for e in events) == len(launcher.started)
    assert any(e["event"] == "skipped" and e["job"] == "fast" for e in events)


def test_concurrency_1_runs_children_one_after_the_other(tmp_path: Path) -> None:
    launcher = FakeLauncher(FrozenClock(T0), {"slow": 20 * 60})
    h = Harness(
        tmp_path, {"fast": "*/5 * * * *", "slow": "0 * * * *"}, launcher=launcher, concurrency=1
    )
    launcher.clock = h.clock
    h.at = [(T0 + timedelta(hours=1, minutes=30), signal_self(signal.SIGTERM))]
    assert serve(h) == 0
    one = T0.replace(hour=1, minute=0)
    after = [(n, t) for n, t, w in launcher.started if w >= one][:3]
    assert after == [("fast", "schedule"), ("slow", "schedule"), ("fast", "catch-up")]


def test_sigterm_interrupts_every_child_and_kills_one_that_does_not_stop(tmp_path: Path) -> None:
    launcher = FakeLauncher(FrozenClock(T0), {"a": 3600, "b": 3600})
    h = Harness(tmp_path, {"a": "*/5 * * * *", "b": "*/5 * * * *"}, launcher=launcher)
    launcher.clock = h.clock
    h.at = [(T0.replace(minute=6), signal_self(signal.SIGTERM))]
    assert serve(h) == 0
    assert [x.interrupted for x in launcher.handles] == [True, True]
    ends = {e["job"]: e["result"] for e in h.events() if e["event"] == "run-end"}
    assert ends == {"a": "interrupted", "b": "interrupted"}

    stubborn = FakeLauncher(FrozenClock(T0), {"a": 3600}, obeys=False)
    h = Harness(tmp_path, {"a": "*/5 * * * *"}, launcher=stubborn, stop_timeout_s=0.3)
    stubborn.clock = h.clock
    h.at = [(T0.replace(minute=6), signal_self(signal.SIGTERM))]
    assert serve(h) == 1
    assert stubborn.handles[0].killed
    assert "stop-timeout" in h.kinds()


@pytest.mark.parametrize(
    "what",
    ["stack_plan: /nonexistent/plan.yaml", "sources: ['postgres://u@127.0.0.1/app']"],
    ids=["stack", "database"],
)
def test_drills_run_by_policy_beside_the_runs_and_are_retried_sooner_after_a_failure(
    tmp_path: Path, what: str
) -> None:
    class Flaky(FakeLauncher):
        """Drills that fail the first time, pass after."""

        def start(self, job: str, trigger: str, run_id: str) -> FakeRun:
            handle = super().start(job, trigger, run_id)
            if len(self.started) == 1:
                handle.obeys = True
                handle.interrupted = True  # ends at once, as interrupted: not a pass
            return handle

    runs = FakeLauncher(FrozenClock(T0), {})
    drills = Flaky(FrozenClock(T0), {"dify": 90 * 60})
    h = Harness(tmp_path, {"dify": "0 * * * *"}, launcher=runs, drill_launcher=drills)
    h.config.write_text(
        h.config.read_text().replace(
            "    paths: [/nonexistent]\n",
            f"    {what}\n    drill: {{every: 1d}}\n",
        )
    )
    runs.clock = drills.clock = h.clock
    h.at = [(T0 + timedelta(days=2, hours=1), signal_self(signal.SIGTERM))]
    assert serve(h) == 0
    starts = [w for _, _, w in drills.started]
    # never drilled: at once; it failed: again 6 h later; then it passed: a day later
    assert starts[0] == T0
    assert starts[1] - starts[0] == timedelta(hours=6)
    assert starts[2] - starts[1] == timedelta(days=1, minutes=90)
    assert len(starts) == 3
    # the hourly runs went on while the 90-minute drills ran
    run_starts = [w for _, _, w in runs.started]
    assert any(starts[1] < w < starts[1] + timedelta(minutes=90) for w in run_starts)
    assert len(run_starts) == 49  # 01:00 on the first day to 01:00 two days later
    events = h.events()
    ends = [e["result"] for e in events if e["event"] == "drill-end"]
    assert ends == ["interrupted", "ok", "ok"]
