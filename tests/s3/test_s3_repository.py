"""Repositories on a real S3 server (SeaweedFS on 127.0.0.1) through the CLI: the full cycle,
errors that explain themselves, a flaky network, a network cut for good, Object Lock, copies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import FAST_INIT, PASSWORD, Result, describe, inside, make_tree
from support.s3fixtures import FaultProxyFactory, unique_bucket_name
from support.seaweed import S3Credentials, SeaweedServer

Cli = Callable[..., Result]


def tail(res: Result, lines: int = 3) -> str:
    return "\n".join((res.out + res.err).strip().splitlines()[-lines:])


def one_error_line(res: Result) -> str:
    """The run failed with one ``stackvault: error:`` line and no traceback."""
    assert res.code != 0
    assert "Traceback" not in res.err, res.err
    errors = [line for line in res.err.splitlines() if line.startswith("stackvault: error:")]
    assert len(errors) == 1, res.err
    return errors[0]


@pytest.fixture
def s3_repo(
    s3_env: S3Credentials, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The location of a not yet initialised repository in a bucket that does not exist."""
    location = f"s3://{unique_bucket_name(request.node.name)}/backups/host1"
    monkeypatch.setenv("STACKVAULT_REPOSITORY", location)
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD)
    monkeypatch.delenv("STACKVAULT_PASSWORD_FILE", raising=False)
    return location


def snapshot_ids(cli: Cli) -> list[str]:
    res = cli("snapshots", "--json")
    assert res.code == 0, res.err
    return [s["id"] for s in res.json()]


def test_full_cycle_on_s3_creates_the_bucket_and_restores_byte_identical(
    cli: Cli, s3_repo: str, s3_server: SeaweedServer, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src")
    res = cli(*FAST_INIT, "--json")
    assert res.code == 0, res.err
    assert res.json()["location"].startswith("s3://") and s3_server.endpoint in res.out
    bucket = s3_repo.split("/")[2]
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert "backups/host1/config" in keys and all(k.startswith("backups/host1/") for k in keys)

    assert cli("backup", src).code == 0
    (src / "docs" / "note-3.txt").write_text("changed\n")
    (src / "new.bin").write_bytes(os.urandom(300_000))
    assert cli("backup", src).code == 0
    first, second = snapshot_ids(cli)

    out = tmp_path / "out"
    assert cli("restore", second, "--target", out, "--verify").code == 0
    assert describe(inside(out, src)) == describe(src)

    res = cli("check", "--read-data")
    assert res.code == 0, res.out + res.err
    res = cli("forget", first, "--prune", "--safety-margin", "0")
    assert res.code == 0, res.err
    assert snapshot_ids(cli) == [second]
    assert cli("check", "--read-data").code == 0


def test_a_key_that_cannot_write_is_told_so(
    cli: Cli,
    s3_repo: str,
    s3_server: SeaweedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cli(*FAST_INIT).code == 0
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.reader.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.reader.secret_key)
    assert cli("snapshots").code == 0  # reading is allowed
    res = cli("backup", make_tree(tmp_path / "src"))
    line = one_error_line(res)
    assert res.code == 1
    assert "cannot write to bucket" in line and "bucket policy" in line
    assert s3_server.reader.secret_key not in res.err + res.out


def test_wrong_credentials_are_named_without_showing_them(
    cli: Cli, s3_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli(*FAST_INIT).code == 0
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    res = cli("snapshots")
    line = one_error_line(res)
    assert "rejected the credentials" in line and "AWS_SECRET_ACCESS_KEY" in line
    assert "not-the-secret-at-all" not in res.err + res.out


def test_a_missing_bucket_is_no_repository(cli: Cli, s3_repo: str) -> None:
    res = cli("snapshots")
    line = one_error_line(res)
    assert res.code == 10 and "does not exist" in line


def test_an_endpoint_nobody_listens_on_fails_after_bounded_retries(
    cli: Cli, s3_env: S3Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD)
    started = time.monotonic()
    res = cli("-r", "s3://nobody/x?endpoint=http://127.0.0.1:9&retries=3&retry-time=5", "snapshots")
    line = one_error_line(res)
    assert res.code == 1 and "cannot connect to the S3 endpoint" in line
    assert "gave up after 3 tries" in line
    assert res.err.count("retrying") == 2
    assert time.monotonic() - started < 10


def test_backup_check_and_restore_through_a_flaky_network(
    cli: Cli,
    s3_repo: str,
    s3_server: SeaweedServer,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """10 % of connections (and of every further 8 MiB a kept-alive connection carries) are
    reset at a random byte, mid-request or mid-response, and 3 % stall; every command still
    succeeds, byte-identical, and says that it retried.

    The window is one pack (8 MiB): a fresh decision every 2 MiB made a pack upload fail about
    half of the time, and ten failed tries in a row of one pack happened in about one run of
    five (the seeded draws come in streaks), which is a harsher network than the one the
    test is about."""
    assert cli(*FAST_INIT).code == 0
    proxy = fault_proxy(
        reset_rate=0.10,
        stall_rate=0.03,
        stall_seconds=14,
        seed=7,
        fault_window=8 << 20,
        reset_first=1,  # a reset even when the draws strike only beyond the traffic
    )
    monkeypatch.setenv(
        "STACKVAULT_REPOSITORY", f"{s3_repo}?endpoint={proxy.endpoint}&timeout=10&retry-time=180"
    )
    src = make_tree(tmp_path / "src", files=60)
    (src / "big").mkdir()
    for i in range(4):
        (src / "big" / f"blob-{i}.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    stderr = ""
    res = cli("backup", src)
    assert res.code == 0, tail(res) + "\n--- server log:\n" + s3_server.log_tail(60)
    stderr += res.err
    res = cli("check", "--read-data")
    assert res.code == 0, tail(res)
    stderr += res.err
    out = tmp_path / "out"
    res = cli("restore", "latest", "--target", out)
    assert res.code == 0, tail(res)
    stderr += res.err
    assert describe(inside(out, src)) == describe(src)
    assert proxy.resets > 0
    assert "retrying in" in stderr and "failed at first and were retried" in stderr


def test_a_network_cut_for_good_fails_the_backup_cleanly_and_the_next_one_succeeds(
    s3_repo: str,
    cli: Cli,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
) -> None:
    assert cli(*FAST_INIT).code == 0
    proxy = fault_proxy()
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"upload-{i}.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    env = {
        **os.environ,
        # 2 MiB/s: the backup of 24 MiB takes ~12 s, so the cut lands in the middle.
        "STACKVAULT_REPOSITORY": f"{s3_repo}?endpoint={proxy.endpoint}&retries=4"
        "&retry-time=4&timeout=2&limit-upload=2M",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "stackvault", "backup", str(src)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    time.sleep(4)
    assert proc.poll() is None, "the backup ended before the cut"
    proxy.cut()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("stackvault: error:") and "gave up after" in last

    proxy.heal()
    assert snapshot_ids(cli) == []  # nothing passed off as a snapshot
    res = cli("check", "--read-data")
    assert res.code == 0, res.out + res.err  # consistent; leftovers are only notices
    res = cli("backup", src, "--json")
    assert res.code == 0, res.err
    restored = tmp_path / "out"
    assert cli("restore", "latest", "--target", restored).code == 0
    assert describe(inside(restored, src)) == describe(src)
    assert cli("check").code == 0


def test_object_lock_protects_snapshots_from_deletion_prune_and_keeps_restores_working(
    cli: Cli, s3_repo: str, s3_server: SeaweedServer, tmp_path: Path
) -> None:
    res = cli(*FAST_INIT, "--object-lock", "compliance", "--lock-days", "1")
    assert res.code == 0, res.err
    src = make_tree(tmp_path / "src")
    assert cli("backup", src).code == 0
    (src / "docs" / "deep" / "er" / "big.bin").write_bytes(os.urandom(1024 * 1024))
    assert cli("backup", src).code == 0
    old, new = snapshot_ids(cli)

    bucket, prefix = s3_repo.split("/", 3)[2], s3_repo.split("/", 3)[3]
    client = s3_server.client()
    key = f"{prefix}/snapshots/{old}"
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"]
    # Someone with the repository's own S3 key tries to destroy the snapshot and its data.
    version = head["VersionId"]
    with pytest.raises(Exception, match="AccessDenied"):
        client.delete_object(Bucket=bucket, Key=key, VersionId=version)

    res = cli("forget", old, "--prune", "--json", "--safety-margin", "0")
    assert res.code == 0, res.err
    doc: dict[str, Any] = res.json()
    assert old in doc["locked"] and doc["removed"] == []
    assert "under Object Lock retention" in res.err
    assert snapshot_ids(cli) == [old, new]  # still there, still listed

    # Locks are not retained: no lock object is left behind by all these commands.
    leftovers = client.list_object_versions(Bucket=bucket, Prefix=f"{prefix}/locks/")
    assert not leftovers.get("Versions") and not leftovers.get("DeleteMarkers")

    for snap in (old, new):
        out = tmp_path / f"out-{snap}"
        assert cli("restore", snap, "--target", out).code == 0
    assert describe(inside(tmp_path / f"out-{new}", src)) == describe(src)
    assert cli("check", "--read-data").code == 0


def test_init_with_object_lock_on_a_local_directory_is_refused(cli: Cli, repo_env: Path) -> None:
    res = cli(*FAST_INIT, "--object-lock", "governance", "--lock-days", "3")
    line = one_error_line(res)
    assert "cannot hold Object Lock" in line and not repo_env.exists()


def test_copy_from_a_local_repository_to_s3_and_back(
    cli: Cli, s3_repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "local-repo"
    assert cli("-r", local, *FAST_INIT).code == 0
    src = make_tree(tmp_path / "src")
    assert cli("-r", local, "backup", src).code == 0
    assert cli(*FAST_INIT).code == 0  # the S3 repository, same password here
    monkeypatch.setenv("STACKVAULT_FROM_PASSWORD", PASSWORD)
    res = cli("copy", "--from", local, "--to", s3_repo, "--json")
    assert res.code == 0, res.err
    assert res.json()["copied"] == 1 and res.json()["totals"]
    again = cli("copy", "--from", local, "--to", s3_repo, "--json")
    assert again.code == 0, again.err
    assert again.json()["copied"] == 0 and again.json()["skipped"] == 1
    ids = snapshot_ids(cli)
    assert len(ids) == 1  # the second copy copied nothing
    out = tmp_path / "out"
    assert cli("restore", ids[0], "--target", out).code == 0
    assert describe(inside(out, src)) == describe(src)
    # and back from S3 into a new local repository: blobs read a span of a pack per request
    back = tmp_path / "back-repo"
    assert cli("-r", back, *FAST_INIT).code == 0
    res = cli("copy", "--from", s3_repo, "--to", back, "--json")
    assert res.code == 0, res.err
    assert res.json()["copied"] == 1
    out_back = tmp_path / "out-back"
    assert cli("-r", back, "restore", "latest", "--target", out_back).code == 0
    assert describe(inside(out_back, src)) == describe(src)
    assert cli("-r", back, "check", "--read-data").code == 0


def test_children_do_not_see_the_repository_s3_secret(
    cli: Cli, s3_repo: str, s3_env: S3Credentials, tmp_path: Path
) -> None:
    """A command's output stored in an S3 repository must not hold the repository's own
    credentials: children get no AWS secret variables (the key id alone is no credential)."""
    assert cli(*FAST_INIT).code == 0
    res = cli("backup", "--stdin-from-command", "env", "--stdin-filename", "env.txt")
    assert res.code == 0, res.err
    out = tmp_path / "r"
    assert cli("restore", "latest", "--target", out).code == 0
    shown = (out / "env.txt").read_text()
    assert "PATH=" in shown
    assert s3_env.secret_key not in shown and "AWS_SECRET_ACCESS_KEY" not in shown
    # A local repository in the next command leaves a child's AWS variables alone.
    local = tmp_path / "local"
    assert cli("-r", local, *FAST_INIT).code == 0
    res = cli("-r", local, "backup", "--stdin-from-command", "env", "--stdin-filename", "e")
    assert res.code == 0, res.err
    assert cli("-r", local, "restore", "latest", "--target", tmp_path / "l").code == 0
    assert s3_env.secret_key in (tmp_path / "l" / "e").read_text()
