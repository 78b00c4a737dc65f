"""Object Lock on the real S3 server (SeaweedFS): prune extends the retention of what the kept
snapshots need, read back from the server, and the server refuses to delete it early. The
repository-level rules, with a simulated store and a frozen clock, are in
tests/integration/test_object_lock.py."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from stackvault.clock import FrozenClock
from stackvault.crypto.kdf import KdfParams
from stackvault.errors import ObjectLocked
from stackvault.repo.blob import BlobType
from stackvault.repo.prune import execute_prune, plan_prune
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node, encode_tree
from stackvault.store.base import Retention
from stackvault.store.s3 import S3Store
from support.s3fixtures import purge_bucket, unique_bucket_name
from support.seaweed import SeaweedServer

PW = b"pw"
DAYS = 2
SLACK = timedelta(seconds=2)


@pytest.fixture
def locked_store(s3_env: object, s3_server: SeaweedServer) -> Iterator[S3Store]:
    bucket = s3_server.create_bucket(unique_bucket_name("prune-extends", "pe"), object_lock=True)
    store = S3Store.from_url(f"s3://{bucket}/r-{secrets.token_hex(4)}?retries=3&retry-time=10")
    yield store
    store.close()
    purge_bucket(s3_server.client(), bucket, bypass_governance=True)


def test_prune_extends_retention_on_the_server_and_early_deletes_are_refused(
    locked_store: S3Store,
) -> None:
    repo = Repository.init(
        locked_store,
        PW,
        kdf=KdfParams(memory_kib=8 * 1024, iterations=1),
        object_lock=Retention("governance", DAYS),
    )
    writer = repo.writer()
    blob, _ = writer.save(BlobType.DATA, secrets.token_bytes(50_000))
    tree, _ = writer.save(
        BlobType.TREE, encode_tree([Node(name="f", type="file", size=50_000, content=[blob])])
    )
    writer.flush()
    writer.close()
    snap_id = repo.save_snapshot(
        Snapshot(time=datetime.now(UTC), tree=tree, paths=["/"], hostname="h", username="u")
    )
    name = f"snapshots/{snap_id}"
    first = locked_store.retention(name)
    assert first is not None and first > datetime.now(UTC) + timedelta(days=DAYS) - timedelta(
        minutes=5
    )
    with pytest.raises(ObjectLocked):
        locked_store.delete(name)

    # More than half the period later, prune extends what the snapshot needs, on the server.
    later = FrozenClock(datetime.now(UTC) + timedelta(days=DAYS / 2, hours=1))
    again = Repository.open(locked_store, PW, clock=later)
    again.load_index()
    plan = plan_prune(again)
    assert name in plan.extend and "config" in plan.extend
    assert any(n.startswith("data/") for n in plan.extend)
    execute_prune(again, plan)
    assert plan.extend_until is not None
    for extended in plan.extend:
        until = locked_store.retention(extended)
        assert until is not None and abs(until - plan.extend_until) <= SLACK, extended
        assert until > first
    with pytest.raises(ObjectLocked):
        locked_store.delete(name)
    assert locked_store.exists(name)
