"""Run records on the real S3 server (SeaweedFS) with Object Lock: written create-only with the
repository's retention, listed back, not deletable early, and kept by expiry while locked
(FORMAT.md §14). The rules on simulated stores are in tests/unit/test_run_records.py."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from stackvault.clock import FrozenClock
from stackvault.crypto.kdf import KdfParams
from stackvault.errors import ObjectLocked
from stackvault.records.run import RunRecord, RunStep
from stackvault.repo.check import Checker
from stackvault.repo.repository import Repository
from stackvault.repo.runs import RUNS_PREFIX, RunKeep
from stackvault.store.base import Retention
from stackvault.store.s3 import S3Store
from support.s3fixtures import purge_bucket, unique_bucket_name
from support.seaweed import SeaweedServer

PW = b"pw"
DAYS = 2


@pytest.fixture
def locked_store(s3_env: object, s3_server: SeaweedServer) -> Iterator[S3Store]:
    bucket = s3_server.create_bucket(unique_bucket_name("run-records", "rr"), object_lock=True)
    store = S3Store.from_url(f"s3://{bucket}/r-{secrets.token_hex(4)}?retries=3&retry-time=10")
    yield store
    store.close()
    purge_bucket(s3_server.client(), bucket, bypass_governance=True)


def _run(started: datetime) -> RunRecord:
    return RunRecord(
        id=secrets.token_hex(16),
        job="nightly",
        host="h",
        started=started,
        ended=started + timedelta(seconds=30),
        result="ok",
        trigger="manual",
        program="stackvault test",
        steps=[RunStep("backup", "ok", started, 29.5, "offsite", "s3://bucket/prefix")],
    )


def test_run_records_carry_retention_and_stay_until_it_ends(locked_store: S3Store) -> None:
    Repository.init(
        locked_store, PW, kdf=KdfParams(memory_kib=8 * 1024, iterations=1),
        object_lock=Retention("governance", DAYS),
    )  # fmt: skip
    repo = Repository.open(locked_store, PW)
    now = datetime.now(UTC)
    runs = [_run(now - timedelta(hours=3 - i)) for i in range(3)]
    names = [repo.save_run(r) for r in runs]
    assert sorted(i.name for i in locked_store.list(RUNS_PREFIX)) == sorted(names)
    for name in names:
        until = locked_store.retention(name)
        assert until is not None and until > now + timedelta(days=DAYS) - timedelta(minutes=5)
    with pytest.raises(ObjectLocked):
        locked_store.delete(names[0])

    again = Repository.open(locked_store, PW)
    assert [r.id for r in again.list_runs(job="nightly")] == [r.id for r in runs]
    assert again.latest_runs("nightly")[0] == runs[-1]
    assert Checker(again).run().runs == 3

    # A week later by the repository's clock, the rule would drop two; the server holds them.
    later = Repository.open(locked_store, PW, clock=FrozenClock(now + timedelta(days=7)))
    result = later.expire_runs(RunKeep(last=1, within=timedelta(days=1)))
    assert result.removed == [] and set(result.locked) == set(names[:2])
    assert len(later.list_runs()) == 3
