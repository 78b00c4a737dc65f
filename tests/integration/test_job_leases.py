"""Job leases (`stackvault.ops.lease`, FORMAT.md §15) on real local repositories: two
daemons, told apart by their `Holder`, claim the runs of one job. Each run is claimed once;
a daemon backs off while another runs the job; a holder killed with SIGKILL (a real child
process holding the lease and a repository lock) is taken over: its lease abandoned, its
run recorded as failed, its lock removed. The end-to-end test with two ``serve`` processes
is tests/e2e/test_cli_serve_leases.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stackvault.config import load_config
from stackvault.config.job import EffectiveJob
from stackvault.errors import ObjectNotFound
from stackvault.ops.lease import KEEP_LAST, JobLeases, LeaseOptions, new_run_id
from stackvault.ops.scheduler import DueRun
from stackvault.repo.leases import LEASES_PREFIX, Lease, job_leases, lease_name, write_lease
from stackvault.repo.lock import Holder, list_locks
from stackvault.store.base import Retention, is_mutable
from stackvault.store.local import LocalStore
from stackvault.store.memory import MemoryStore
from support.jobrepos import init_fast, opener

SLOT = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
ELSEWHERE = Holder("standby-host", 4242, "another-boot", "pid:[1]")
"""A daemon on another machine: judged by its heartbeat alone."""


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EffectiveJob:
    monkeypatch.setenv("SV_PW", "pw")
    for name in ("primary", "offsite"):
        init_fast(tmp_path / name, b"pw")
    (tmp_path / "data").mkdir()
    config = tmp_path / "stackvault.yaml"
    config.write_text(
        f"""\
repositories:
  primary: {{url: {tmp_path / "primary"}, password_env: SV_PW}}
  offsite: {{url: {tmp_path / "offsite"}, password_env: SV_PW}}
jobs:
  etc:
    paths: [{tmp_path / "data"}]
    policy: tier3
    repository: primary
    copies: [offsite]
"""
    )
    return load_config(str(config)).job("etc")


class Daemon:
    """A `JobLeases` gate and its event log."""

    def __init__(self, holder: Holder | None = None, lease_s: int = 60) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []
        self.gate = JobLeases(
            opener,
            lambda event, **fields: self.events.append((event, fields)),
            options=LeaseOptions(lease_s=lease_s, heartbeat_s=lease_s / 4),
        )
        if holder is not None:
            self.gate.me = holder

    def named(self, event: str) -> list[dict[str, object]]:
        return [fields for e, fields in self.events if e == event]


def due(slot: datetime = SLOT, attempt: int = 1) -> DueRun:
    return DueRun("etc", "schedule", slot, slot, attempt)


def leases(job: EffectiveJob) -> list[Lease]:
    with opener(job.repository) as repo:
        return job_leases(repo.store, repo.envelope, job.name, print)


def test_each_run_is_claimed_once_and_a_busy_job_makes_the_other_back_off(
    job: EffectiveJob,
) -> None:
    here, there = Daemon(), Daemon(ELSEWHERE)
    first = new_run_id()
    assert here.gate.admit(job, due(), first) is None

    refusal = there.gate.admit(job, due(), new_run_id())
    assert refusal is not None and "was claimed by PID" in refusal and "running" in refusal

    # The next slot while the first run still holds its lease: the other backs off.
    later = due(SLOT + timedelta(minutes=5))
    refusal = there.gate.admit(job, later, new_run_id())
    assert refusal is not None and "another run of job etc is in progress" in refusal
    (mine, backed_off) = leases(job)
    assert (mine.run_id, mine.state, mine.holder) == (first, "running", Holder.current())
    assert backed_off.state == "done" and backed_off.result is None
    assert "in progress" in backed_off.note

    here.gate.release(first, "ok")
    assert leases(job)[0].state == "done" and leases(job)[0].result == "ok"
    # A retry of the first slot is a new attempt: claimable, and the job is free now.
    retry = new_run_id()
    assert there.gate.admit(job, due(attempt=2), retry) is None
    there.gate.release(retry, "failed")
    assert [(lease.attempt, lease.state, lease.result) for lease in leases(job)] == [
        (1, "done", "ok"),
        (2, "done", "failed"),
        (1, "done", None),
    ]
    assert here.named("lease-takeover") == there.named("lease-takeover") == []


def test_the_heartbeat_keeps_a_long_run_alive_for_a_daemon_on_another_host(
    job: EffectiveJob,
) -> None:
    here, there = Daemon(lease_s=2), Daemon(ELSEWHERE, lease_s=2)
    run_id = new_run_id()
    assert here.gate.admit(job, due(), run_id) is None
    time.sleep(3.5)  # longer than the lease: only the heartbeat (every 0.5 s) keeps it live
    refusal = there.gate.admit(job, due(SLOT + timedelta(minutes=5)), new_run_id())
    assert refusal is not None and "in progress" in refusal, refusal
    held = leases(job)[0]
    assert held.refreshed > held.acquired + timedelta(seconds=2)
    here.gate.release(run_id, "ok")


def test_a_silent_holder_on_another_host_is_taken_over_after_its_lease(
    job: EffectiveJob,
) -> None:
    gone = Daemon(ELSEWHERE, lease_s=2)
    run_id = new_run_id()
    assert gone.gate.admit(job, due(), run_id) is None
    held = gone.gate._held[run_id]
    held.stop()  # the host froze: no more heartbeats, no release

    here = Daemon(lease_s=2)
    next_slot = due(SLOT + timedelta(minutes=5))
    refusal = here.gate.admit(job, next_slot, new_run_id())
    assert refusal is not None and "in progress" in refusal  # still live by the store's clock
    time.sleep(2.5)
    mine = new_run_id()
    assert here.gate.admit(job, due(SLOT + timedelta(minutes=10)), mine) is None
    (takeover,) = here.named("lease-takeover")
    assert takeover["holder"] == "PID 4242 on standby-host"
    assert "no heartbeat for" in str(takeover["reason"])
    here.gate.release(mine, "ok")

    abandoned = leases(job)[0]
    assert abandoned.state == "abandoned" and "taken over by" in abandoned.note
    with opener(job.repository) as repo:
        (record,) = repo.list_runs(job="etc")
    assert (record.id, record.result, record.host) == (run_id, "failed", "standby-host")
    assert record.steps[0].name == "lease" and "stopped without finishing" in str(
        record.steps[0].error
    )


HOLDER = """\
import sys, time
from datetime import datetime
sys.path[:0] = {paths!r}
from test_job_leases import due
from stackvault.config import load_config
from stackvault.ops.lease import JobLeases, LeaseOptions
from support.jobrepos import init_fast, opener
job = load_config({config!r}).job("etc")
gate = JobLeases(opener, lambda *a, **k: None, options=LeaseOptions(lease_s=600, heartbeat_s=60))
assert gate.admit(job, due(), {run_id!r}) is None
with opener(job.repository) as repo, repo.lock(exclusive=False, operation="backup"):
    with opener(job.copies[0]) as copy, copy.lock(exclusive=False, operation="copy"):
        print("holding", flush=True)
        time.sleep(600)
"""


def test_a_holder_killed_with_sigkill_is_taken_over_at_once_and_leaves_no_lock(
    job: EffectiveJob, tmp_path: Path
) -> None:
    run_id = new_run_id()
    script = HOLDER.format(
        paths=[str(Path(__file__).parent), *sys.path],
        config=str(tmp_path / "stackvault.yaml"),
        run_id=run_id,
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SV_PW": "pw"},
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "holding", (
            child.stderr.read() if child.stderr else ""
        )
        with opener(job.repository) as repo:
            assert len(list_locks(repo.store, repo.envelope, print)) == 1
        here = Daemon()  # a lease of 60 s: the takeover must come from the dead PID alone
        refusal = here.gate.admit(job, due(SLOT + timedelta(minutes=5)), new_run_id())
        assert refusal is not None and "in progress" in refusal  # alive: never taken over
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    here = Daemon()
    told: list[tuple[str, str]] = []
    here.gate.on_takeover = lambda job, text: told.append((job, text))
    mine = new_run_id()
    assert here.gate.admit(job, due(SLOT + timedelta(minutes=10)), mine) is None
    (takeover,) = here.named("lease-takeover")
    assert f"process {child.pid} on this host no longer exists" in str(takeover["reason"])
    ((told_job, text),) = told
    assert told_job == "etc" and f"PID {child.pid}" in text and "took the job over" in text
    assert [e["repository"] for e in here.named("locks-removed")] == ["primary", "offsite"]
    here.gate.release(mine, "ok")
    for settings in job.repositories:
        with opener(settings) as repo:
            assert list_locks(repo.store, repo.envelope, print) == []
    with opener(job.repository) as repo:
        (record,) = repo.list_runs(job="etc")
    assert (record.id, record.result) == (run_id, "failed")
    assert [lease.state for lease in leases(job)] == ["abandoned", "done", "done"]


def test_an_unreachable_primary_admits_the_run_without_a_lease(
    job: EffectiveJob, tmp_path: Path
) -> None:
    (tmp_path / "primary").rename(tmp_path / "moved")
    here = Daemon()
    run_id = new_run_id()
    assert here.gate.admit(job, due(), run_id) is None
    (event,) = here.named("lease-unavailable")
    assert "running without a lease" in str(event["hint"])
    here.gate.release(run_id, "failed")  # nothing held: nothing to write


def test_old_finished_leases_are_deleted_but_the_newest_stay(job: EffectiveJob) -> None:
    old = SLOT - timedelta(days=10)
    with opener(job.repository) as repo:
        for n in range(KEEP_LAST + 3):
            write_lease(
                repo.store,
                repo.envelope,
                Lease(
                    job="etc",
                    slot=old + timedelta(hours=n),
                    attempt=1,
                    run_id=new_run_id(),
                    trigger="schedule",
                    holder=ELSEWHERE,
                    acquired=old,
                    refreshed=old,
                    lease_s=60,
                    state="done",
                    result="ok",
                ),
            )
    here = Daemon()
    run_id = new_run_id()
    assert here.gate.admit(job, due(), run_id) is None
    here.gate.release(run_id, "ok")
    kept = leases(job)
    assert len(kept) == KEEP_LAST + 1
    assert kept[0].slot == old + timedelta(hours=3) and kept[-1].slot == SLOT


def test_leases_are_coordination_objects_on_append_only_and_object_locked_stores(
    tmp_path: Path,
) -> None:
    name = lease_name("etc", SLOT, 1)
    assert name.startswith(LEASES_PREFIX) and is_mutable(name) and is_mutable("locks/x")
    assert not is_mutable("runs/x") and not is_mutable("snapshots/x")
    for store in (
        LocalStore(tmp_path / "ao", append_only=True),
        MemoryStore(append_only=True),
    ):
        store.ensure_root()
        store.put_new(name, b"one")
        store.put(name, b"two")  # a heartbeat replaces it
        assert store.get(name) == b"two"
        store.delete(name)
        with pytest.raises(ObjectNotFound):
            store.get(name)
    locked = MemoryStore(object_lock=True)
    locked.configure_retention(Retention("compliance", 30))
    locked.put(name, b"x")
    assert locked.retention(name) is None
    locked.delete(name)


def test_a_lease_round_trips_and_a_damaged_one_is_ignored(job: EffectiveJob) -> None:
    with opener(job.repository) as repo:
        lease = Lease(
            job="etc",
            slot=SLOT,
            attempt=2,
            run_id=new_run_id(),
            trigger="retry",
            holder=Holder.current(),
            acquired=SLOT,
            refreshed=SLOT + timedelta(seconds=5),
            lease_s=60,
        )
        stored = write_lease(repo.store, repo.envelope, lease)
        repo.store.put(lease_name("etc", SLOT, 3), b"not a lease")
        notices: list[str] = []
        (found,) = job_leases(repo.store, repo.envelope, "etc", notices.append)
        assert replace(found, stored=None) == replace(stored, stored=None)
        assert found.stored is not None
        assert len(notices) == 1 and notices[0].startswith("ignoring"), notices
