"""Job leases (FORMAT.md §15) on the real S3 server (SeaweedFS) with Object Lock: the claim is
a conditional PUT the server refuses for a second claimant, the heartbeat replaces the lease,
Object Lock never retains it, and a finished lease can be deleted."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from stackvault.crypto.kdf import KdfParams
from stackvault.repo.leases import Lease, claim_lease, delete_lease, job_leases, write_lease
from stackvault.repo.lock import Holder
from stackvault.repo.repository import Repository
from stackvault.store.base import Retention
from stackvault.store.s3 import S3Store
from support.s3fixtures import purge_bucket, unique_bucket_name
from support.seaweed import SeaweedServer

SLOT = datetime(2026, 12, 6, 3, tzinfo=UTC)


@pytest.fixture
def locked_repo(s3_env: object, s3_server: SeaweedServer) -> Iterator[Repository]:
    bucket = s3_server.create_bucket(unique_bucket_name("leases", "ls"), object_lock=True)
    store = S3Store.from_url(f"s3://{bucket}/r-{secrets.token_hex(4)}?retries=3&retry-time=10")
    repo = Repository.init(
        store,
        b"pw",
        kdf=KdfParams(memory_kib=8 * 1024, iterations=1),
        object_lock=Retention("governance", 2),
    )
    yield repo
    store.close()
    purge_bucket(s3_server.client(), bucket, bypass_governance=True)


def lease(host: str) -> Lease:
    return Lease(
        job="etc",
        slot=SLOT,
        attempt=1,
        run_id=secrets.token_hex(16),
        trigger="schedule",
        holder=Holder(host, 1),
        acquired=SLOT,
        refreshed=SLOT,
        lease_s=60,
    )


def test_a_lease_is_claimed_once_beaten_and_deleted_on_an_object_locked_bucket(
    locked_repo: Repository,
) -> None:
    store, envelope = locked_repo.store, locked_repo.envelope
    mine = claim_lease(store, envelope, lease("one"))
    assert mine is not None and mine.stored is not None
    assert claim_lease(store, envelope, lease("two")) is None  # the server refused the PUT
    assert store.retention(mine.object_name) is None

    beat = write_lease(store, envelope, replace(mine, refreshed=SLOT + timedelta(seconds=20)))
    (found,) = job_leases(store, envelope, "etc", print)
    assert found.holder.host == "one" and found.refreshed == beat.refreshed

    write_lease(store, envelope, replace(beat, state="done", result="ok"))
    delete_lease(store, mine.object_name)
    assert job_leases(store, envelope, "etc", print) == []
