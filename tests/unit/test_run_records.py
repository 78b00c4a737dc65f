"""Run records (records/run.py, repo/runs.py, FORMAT.md §14): the record's one reader and one
writer, its storage as ``runs/<id>`` on a memory store and a local directory (append-only
too), expiry by rule (and under simulated Object Lock), what check makes of them and that
copy leaves them behind."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stackvault.clock import FrozenClock
from stackvault.crypto.envelope import Envelope
from stackvault.crypto.kdf import KdfParams
from stackvault.engine.copy import CopyJob, select_snapshots
from stackvault.errors import AppendOnlyRefused, IntegrityError, UsageError
from stackvault.records.run import RunRecord, RunStep, UnsupportedRunFormat, job_tag
from stackvault.repo.blob import BlobType
from stackvault.repo.check import Checker
from stackvault.repo.repository import Repository
from stackvault.repo.runs import RUN_AAD, RUNS_PREFIX, RunKeep, load_run, open_run
from stackvault.repo.snapshot import SNAPSHOT_AAD, Snapshot
from stackvault.repo.tree import Node, encode_tree
from stackvault.store.base import Retention, Store
from stackvault.store.local import LocalStore
from stackvault.store.memory import MemoryStore
from support.countingstore import CountingStore

PW = b"pw"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)
T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def _repo(store: Store, clock: FrozenClock, retention: Retention | None = None) -> Repository:
    Repository.init(store, PW, kdf=FAST_KDF, clock=clock, object_lock=retention)
    return Repository.open(store, PW, clock=clock)


def _run(
    job: str = "nightly",
    started: datetime = T0,
    result: str = "ok",
    *,
    steps: list[RunStep] | None = None,
) -> RunRecord:
    return RunRecord(
        id=secrets.token_hex(16),
        job=job,
        host="db1",
        started=started,
        ended=started + timedelta(minutes=5),
        result=result,  # type: ignore[arg-type]
        trigger="schedule",
        program="stackvault 0.1.0",
        steps=steps
        if steps is not None
        else [
            RunStep(
                name="backup",
                result="ok",
                started=started,
                duration_s=240.5,
                repository="local",
                location="/srv/backups/repo",
                snapshot="ab" * 32,
                bytes_added=123_456,
            )
        ],
    )


# --- the record -------------------------------------------------------------------------------


def test_the_stored_form_is_the_documented_one() -> None:
    started = datetime(2026, 3, 1, 2, 0, 0, 1234, tzinfo=UTC)
    record = RunRecord(
        id="0123456789abcdef0123456789abcdef",
        job="dify-nightly",
        host="h",
        started=started,
        ended=started + timedelta(seconds=61),
        result="partial",
        trigger="catch-up",
        program="stackvault 0.1.0",
        steps=[
            RunStep("preflight", "ok", started, 0.25),
            RunStep(
                "copy",
                "failed",
                started,
                3.0,
                repository="offsite",
                location="s3://bucket/prefix",
                error="the bucket could not be reached",
                details={"attempts": 3},
            ),
        ],
    )
    assert record.to_json() == {
        "version": 1,
        "id": "0123456789abcdef0123456789abcdef",
        "job": "dify-nightly",
        "host": "h",
        "started": "2026-03-01T02:00:00.001234+00:00",
        "ended": "2026-03-01T02:01:01.001234+00:00",
        "result": "partial",
        "trigger": "catch-up",
        "program": "stackvault 0.1.0",
        "steps": [
            {
                "name": "preflight",
                "repository": None,
                "location": None,
                "result": "ok",
                "started": "2026-03-01T02:00:00.001234+00:00",
                "duration_s": 0.25,
                "snapshot": None,
                "bytes_added": None,
                "error": None,
            },
            {
                "name": "copy",
                "repository": "offsite",
                "location": "s3://bucket/prefix",
                "result": "failed",
                "started": "2026-03-01T02:00:00.001234+00:00",
                "duration_s": 3.0,
                "snapshot": None,
                "bytes_added": None,
                "error": "the bucket could not be reached",
                "details": {"attempts": 3},
            },
        ],
    }
    assert RunRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_unknown_keys_of_a_newer_writer_survive_a_round_trip() -> None:
    stored = _run().to_json()
    stored["lease"] = {"holder": "daemon"}
    stored["steps"][0]["retries"] = 2
    record = RunRecord.from_json(stored)
    assert record.unknown == {"lease": {"holder": "daemon"}}
    assert record.steps[0].unknown == {"retries": 2}
    assert record.to_json() == stored
    assert list(record.to_json())[-1] == "lease"  # unknown keys after the known ones


def test_a_step_name_this_version_does_not_write_is_read() -> None:
    stored = _run().to_json()
    stored["steps"][0]["name"] = "verify-restore"
    assert RunRecord.from_json(stored).steps[0].name == "verify-restore"


def _broken(change: Any) -> dict[str, Any]:
    stored = _run().to_json()
    change(stored)
    return stored


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("job"), "job is not a job name"),
        (lambda d: d.update(job="../etc"), "job is not a job name"),
        (lambda d: d.update(id="xyz"), "id is not 32 hex digits"),
        (lambda d: d.update(result="running"), "result 'running' is not one of"),
        (lambda d: d.update(trigger="cron"), "trigger 'cron' is not one of"),
        (lambda d: d.update(started="yesterday"), "started is not an ISO 8601 time"),
        (lambda d: d.update(ended=1700000000), "ended is not an ISO 8601 time"),
        (lambda d: d.update(host=None), "host is not a string"),
        (lambda d: d.update(steps={}), "steps is not a list"),
        (lambda d: d["steps"][0].update(duration_s="5"), "step 1 (backup): duration_s"),
        (lambda d: d["steps"][0].update(duration_s=True), "step 1 (backup): duration_s"),
        (lambda d: d["steps"][0].update(snapshot="XYZ"), "step 1 (backup): snapshot"),
        (lambda d: d["steps"][0].update(bytes_added=-1), "step 1 (backup): bytes_added"),
        (lambda d: d["steps"][0].update(result="great"), "step 1 (backup): result 'great'"),
        (lambda d: d["steps"][0].update(name="Backup!"), "step 1 has no valid name"),
        (lambda d: d["steps"][0].update(details=[1]), "step 1 (backup): details"),
    ],
)
def test_a_malformed_record_is_refused_naming_what_is_wrong(change: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunRecord.from_json(_broken(change))


def test_a_record_of_a_newer_version_is_not_taken_for_damage() -> None:
    with pytest.raises(UnsupportedRunFormat, match="unsupported version 2"):
        RunRecord.from_json(_broken(lambda d: d.update(version=2)))


def test_a_time_without_zone_is_utc_and_other_zones_become_utc() -> None:
    stored = _run().to_json()
    stored["started"] = "2026-03-01T02:00:00"
    stored["ended"] = "2026-03-01T04:05:00+02:00"
    record = RunRecord.from_json(stored)
    assert record.started == T0 and record.started.tzinfo is not None
    assert record.ended == T0 + timedelta(minutes=5)
    assert record.to_json()["ended"] == "2026-03-01T02:05:00.000000+00:00"


def test_a_run_across_a_clock_step_back_is_still_recorded() -> None:
    repo = _repo(MemoryStore(), FrozenClock(T0))
    run = _run()
    run.ended = run.started - timedelta(seconds=3)
    repo.save_run(run)
    [back] = repo.list_runs()
    assert back.ended == run.ended and back.duration_s == -3.0


def test_job_tag() -> None:
    assert job_tag("dify-nightly") == "job:dify-nightly"


# --- in the repository --------------------------------------------------------------------------


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return MemoryStore()
    local = LocalStore(tmp_path / "repo")
    local.ensure_root()
    return local


def test_records_are_stored_encrypted_listed_oldest_first_and_filtered_by_job(
    store: Store,
) -> None:
    clock = FrozenClock(T0)
    repo = _repo(store, clock)
    second = _run("nightly", T0 + timedelta(days=1))
    first = _run("nightly", T0)
    other = _run("hourly", T0 + timedelta(hours=1), "failed")
    names = [repo.save_run(r) for r in (second, first, other)]
    assert all(n.startswith(RUNS_PREFIX) for n in names)
    assert sorted(i.name for i in store.list(RUNS_PREFIX)) == sorted(names)
    raw = b"".join(store.get(n) for n in names)
    assert b"nightly" not in raw and b"db1" not in raw  # sealed, not plain JSON

    again = Repository.open(store, PW, clock=clock)
    assert [r.id for r in again.list_runs()] == [first.id, other.id, second.id]
    assert [r.id for r in again.list_runs(job="nightly")] == [first.id, second.id]
    assert again.list_runs(job="nightly")[0] == first  # every field read back
    assert [r.id for r in again.latest_runs("nightly")] == [second.id]
    assert [r.id for r in again.latest_runs("nightly", 5)] == [second.id, first.id]
    assert again.latest_runs("weekly") == []
    assert again.list_snapshots() == []  # runs are not snapshots


# A run record sealed (FORMAT.md §14) under the key bytes(range(32)) with the nonce
# bytes(range(100, 112)): AES-256-GCM with associated data b"sv1:run", named by its BLAKE3.
KNOWN_RUN = bytes.fromhex(
    "6465666768696a6b6c6d6e6f3339a8030b9a3ff1504065d9f647039960f8243abb5dc24095e29f7ccf96907e"
    "a2de77f8742ba2659c911a5c9e26aeaa7e3dfec50c682b4798d396f481e8c2e27ce0a22cfa69536af81bcf79"
    "33e213ca460b6b55d5b1e8a2fdcb14f64b21787cbe42bf4e5a19884c89caeeff923d96d8121bb02ff1528904"
    "8849a393f6966da956fafc8a5310701bfb7f7b35baad6cb3c2f7cf7c607ebca201bf4e7dd02195cabb011766"
    "a0ecc3cc492ac4849918d7ecacd3a2c2159f70bb0a68762fa7f23df4e85c6582cd71016d275d474135489d6f"
    "3229fb20bd7a7fc9937b69a28d907d9f6e178cca8cb5091238df28b4d826a2eb0bad25c592a988e9fdd2780a"
    "41558feb555fa8f21859fba5d47cb9f681842432c4e42e4bc91d5c47b52c25331b132b1df1ce37440b17cbc7"
    "12ba7abe8192a5de6b6579d36b6a25fa36fb1d6eb7a2184cc473d7d3293823daafe83018aa48331585d23b0f"
    "bf32ddf684e69bb61f86e526eabee6ae4a3b1a9cc4e3d591336a872775eb9e65a6ffc1822a358cd659ba9183"
    "126b6d7096f2a203a1e05cb739a5cef0a5636769b51ffcdd936c0a41cb7b4c43197043469c50904afc17ed1c"
    "d2e3f45be0f2fd8507ea929438b7b3"
)
KNOWN_RUN_NAME = "runs/347f786073692cbca9ab8c7fe93843e65b6f346c1242cfad699f4213736d244a"


def test_the_known_run_record_opens_to_the_known_record() -> None:
    record = open_run(Envelope(bytes(range(32))), KNOWN_RUN_NAME, KNOWN_RUN)
    assert record.id == "00112233445566778899aabbccddeeff" and record.job == "nightly"
    assert record.started == datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    assert record.result == "ok" and record.trigger == "schedule"
    [step] = record.steps
    assert (step.name, step.repository, step.location) == ("backup", "local", "/srv/r")
    assert (step.duration_s, step.snapshot, step.bytes_added) == (299.5, "ab12", 42)
    with pytest.raises(IntegrityError, match="does not match its name"):
        open_run(Envelope(bytes(range(32))), "runs/" + "0" * 64, KNOWN_RUN)


def test_a_record_is_bound_to_its_role_and_name(store: Store) -> None:
    repo = _repo(store, FrozenClock(T0))
    name = repo.save_run(_run())
    assert load_run(store, repo.envelope, name).job == "nightly"
    # The same plaintext sealed as a snapshot does not pass as a run record.
    plain = repo.envelope.open(store.get(name), RUN_AAD)
    with pytest.raises(IntegrityError):
        repo.envelope.open(store.get(name), SNAPSHOT_AAD)
    from stackvault.repo.pack import storage_id

    forged = repo.envelope.seal(plain, SNAPSHOT_AAD)
    forged_name = f"{RUNS_PREFIX}{storage_id(forged).hex()}"
    store.put(forged_name, forged)
    with pytest.raises(IntegrityError, match="failed authentication"):
        load_run(store, repo.envelope, forged_name)


class _Writes(CountingStore):
    """Records which names were written with `put` and which with `put_new`."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.puts: list[str] = []
        self.creates: list[str] = []

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self.puts.append(name)
        super().put(name, data)

    def put_new(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self.creates.append(name)
        super().put_new(name, data)


def test_records_are_created_never_replaced() -> None:
    store = _Writes(MemoryStore())
    repo = _repo(store, FrozenClock(T0))
    name = repo.save_run(_run())
    assert name in store.creates and name not in store.puts
    store.put_new(name, store.get(name))  # the same bytes again: a retry meeting itself


def test_a_location_with_credentials_is_never_written() -> None:
    repo = _repo(MemoryStore(), FrozenClock(T0))
    run = _run()
    run.steps[0].location = "s3://AKIAIOSFODNN7EXAMPLE:secret@bucket/x"
    with pytest.raises(UsageError, match="location with credentials"):
        repo.save_run(run)
    assert list(repo.store.list(RUNS_PREFIX)) == []


def test_an_append_only_store_accepts_records_and_refuses_their_expiry(tmp_path: Path) -> None:
    clock = FrozenClock(T0)
    full = LocalStore(tmp_path / "repo")
    full.ensure_root()
    Repository.init(full, PW, kdf=FAST_KDF, clock=clock)
    limited = Repository.open(LocalStore(tmp_path / "repo", append_only=True), PW, clock=clock)
    runs = [_run(started=T0 + timedelta(days=i)) for i in range(3)]
    for run in runs:
        limited.save_run(run)
    assert [r.id for r in limited.list_runs()] == [r.id for r in runs]
    clock.advance(365 * 86400)
    with pytest.raises(AppendOnlyRefused, match="`forget` deletes old run records"):
        limited.expire_runs(RunKeep(last=1, within=timedelta(0)))
    assert len(limited.list_runs()) == 3
    # The same rule from a client with full access.
    result = Repository.open(full, PW, clock=clock).expire_runs(
        RunKeep(last=1, within=timedelta(0))
    )
    assert len(result.removed) == 2 and result.kept == 1
    assert [r.id for r in limited.list_runs()] == [runs[2].id]


def test_expiry_keeps_the_last_n_of_each_job_and_everything_younger(store: Store) -> None:
    clock = FrozenClock(T0)
    repo = _repo(store, clock)
    daily = [_run("daily", T0 + timedelta(days=i)) for i in range(10)]
    weekly = [_run("weekly", T0 + timedelta(days=7 * i)) for i in range(2)]
    for run in daily + weekly:
        repo.save_run(run)
    clock.current = T0 + timedelta(days=12)
    keep = RunKeep(last=3, within=timedelta(days=5))

    planned = repo.expire_runs(keep, dry_run=True)
    assert len(repo.list_runs()) == 12  # a dry run deletes nothing
    result = repo.expire_runs(keep)
    assert result.removed == planned.removed and result.locked == {}
    # daily: started on days 0..9; younger than 5 days at day 12 = days 8, 9; last 3 = 7, 8, 9.
    assert [r.id for r in repo.list_runs(job="daily")] == [r.id for r in daily[7:]]
    # weekly: both are among its last 3, however old.
    assert [r.id for r in repo.list_runs(job="weekly")] == [r.id for r in weekly]
    assert result.kept == 5 and len(result.removed) == 7
    assert repo.expire_runs(keep).removed == []


def test_expiry_counts_nothing_it_cannot_read(store: Store) -> None:
    clock = FrozenClock(T0)
    repo = _repo(store, clock)
    names = [repo.save_run(_run(started=T0 + timedelta(days=i))) for i in range(3)]
    store.put(names[0], store.get(names[0])[:-1] + b"\x00")  # damage the oldest
    warnings: list[str] = []
    repo.notice = warnings.append
    clock.advance(400 * 86400)
    result = repo.expire_runs(RunKeep(last=1, within=timedelta(0)))
    assert result.removed == [names[1]] and result.kept == 1
    assert names[0] in {i.name for i in store.list(RUNS_PREFIX)}  # left for check to report
    assert any("damaged run record" in w for w in warnings)


def test_records_under_object_lock_stay_until_their_retention_ends() -> None:
    clock = FrozenClock(T0)
    store = MemoryStore(object_lock=True, clock=clock)
    repo = _repo(store, clock, Retention("governance", 30))
    names = [repo.save_run(_run(started=T0 + timedelta(hours=i))) for i in range(3)]
    assert all(store.retention(n) == T0 + timedelta(days=30) for n in names)
    clock.advance(10 * 86400)
    notices: list[str] = []
    repo.notice = notices.append
    held = repo.expire_runs(RunKeep(last=1, within=timedelta(days=1)))
    assert held.removed == [] and set(held.locked) == set(names[:2])
    assert held.locked[names[0]].startswith("2026-03-31")
    assert len(notices) == 2 and "under Object Lock retention until 2026-03-31" in notices[0]
    clock.advance(21 * 86400)
    later = repo.expire_runs(RunKeep(last=1, within=timedelta(days=1)))
    assert later.removed == names[:2] and later.locked == {}


def test_keep_rule_refuses_negative_values() -> None:
    with pytest.raises(UsageError):
        RunKeep(last=-1)


# --- check and copy ----------------------------------------------------------------------------


def _snapshot_with_data(repo: Repository, tags: list[str]) -> str:
    writer = repo.writer()
    blob, _ = writer.save(BlobType.DATA, secrets.token_bytes(5000))
    tree, _ = writer.save(
        BlobType.TREE, encode_tree([Node(name="f", type="file", size=5000, content=[blob])])
    )
    writer.flush()
    writer.close()
    return repo.save_snapshot(
        Snapshot(
            time=repo.clock.now(), tree=tree, paths=["/"], hostname="h", username="u", tags=tags
        )
    )


def test_check_reads_every_record_and_reports_a_damaged_one(store: Store) -> None:
    repo = _repo(store, FrozenClock(T0))
    _snapshot_with_data(repo, [job_tag("nightly")])
    names = [repo.save_run(_run(started=T0 + timedelta(days=i))) for i in range(3)]
    report = Checker(Repository.open(store, PW)).run()
    assert report.ok and report.runs == 3 and report.snapshots == 1

    store.put(names[1], store.get(names[1])[:-1] + b"\x00")  # bit rot
    report = Checker(Repository.open(store, PW)).run()
    assert not report.ok and report.runs == 2
    [problem] = report.errors
    assert problem.kind == "run" and problem.name == names[1]
    assert "does not match its name" in problem.message
    assert "delete the object" in problem.message
    assert report.repairs() == []  # nothing depends on a run record
    assert report.affected == {}


def test_check_reports_a_record_that_authenticates_but_is_malformed() -> None:
    store = MemoryStore()
    repo = _repo(store, FrozenClock(T0))
    from stackvault.repo.pack import storage_id

    sealed = repo.envelope.seal(b'{"version": 1, "id": "nope"}', RUN_AAD)
    name = f"{RUNS_PREFIX}{storage_id(sealed).hex()}"
    store.put(name, sealed)
    report = Checker(Repository.open(store, PW)).run()
    [problem] = report.errors
    assert problem.kind == "run"
    assert "is malformed: run record: id is not 32 hex digits" in problem.message


def test_a_repository_without_records_checks_as_before() -> None:
    store = MemoryStore()
    repo = _repo(store, FrozenClock(T0))
    _snapshot_with_data(repo, [])
    report = Checker(Repository.open(store, PW)).run()
    assert report.ok and report.runs == 0 and report.notices == []


def test_copy_leaves_run_records_behind() -> None:
    clock = FrozenClock(T0)
    source, dest = MemoryStore(), MemoryStore()
    src = _repo(source, clock)
    dst = _repo(dest, clock)
    snap = _snapshot_with_data(src, [job_tag("nightly")])
    src.save_run(_run())
    result = CopyJob(src, dst, workers=2).run(select_snapshots(src))
    assert len(result.copied) == 1
    assert [s.original for s in dst.list_snapshots()] == [snap]
    assert list(dest.list(RUNS_PREFIX)) == [] and dst.list_runs() == []
    assert len(src.list_runs()) == 1
