"""The S3 bucket source (``s3://BUCKET/PREFIX``) against a real S3 server (SeaweedFS on
127.0.0.1): capture, restore into another bucket and prefix, probe, incremental capture, and
every failure with its message. Runs in about 20 s, ~3 s of it starting SeaweedFS.

SeaweedFS keeps keys as file paths, so it normalises ``a//b``, ``/a`` and ``\\``, refuses
``.``/``..`` parts and parts over 255 bytes; those keys are covered by the path-mapping tests.
"""

from __future__ import annotations

import hashlib
import io
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from stackvault.errors import RestoreRefused, SourceError, UsageError
from stackvault.sources.contract import (
    ArtifactRestoreOptions,
    EntryMeta,
    Readable,
    StoredFile,
    compare_facts,
)
from stackvault.sources.registry import open_source
from stackvault.sources.s3bucket import BucketSource, artifact_paths, key_from_path
from stackvault.sources.url import SourceURL
from support.artifacts import MemoryReader, MemorySink
from support.s3fixtures import FaultProxyFactory, purge_bucket, unique_bucket_name
from support.seaweed import S3Credentials, SeaweedServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1 << 20


@dataclass
class Obj:
    body: bytes
    content_type: str = "application/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)


def realistic_objects(seed: int = 7) -> dict[str, Obj]:
    """~200 objects as an application stores them: nested keys, CSV and JSON documents, images,
    a ``dir/`` marker, an empty object, a key with spaces and non-ASCII letters, a key that is
    also a "directory" of another, a 3 MiB and a 9 MiB object."""
    rng = random.Random(seed)
    objs: dict[str, Obj] = {}
    for month in range(1, 13):
        for day in range(1, 13):
            rows = "\n".join(
                f"{month:02}-{day:02},{rng.randint(1, 9999)},{rng.choice(['ok', 'late', 'void'])}"
                for _ in range(rng.randint(5, 200))
            )
            objs[f"invoices/2024/{month:02}/{day:02}.csv"] = Obj(
                rows.encode(), "text/csv", {"source": "billing", "rows": str(rows.count("\n"))}
            )
    for n in range(40):
        doc = f'{{"user": {n}, "name": "user-{n}", "tags": {rng.sample(range(99), 5)}}}'
        objs[f"users/{n:04}.json"] = Obj(doc.encode(), "application/json")
    for n in range(8):
        objs[f"media/photos/img_{n}.jpg"] = Obj(
            rng.randbytes(rng.randint(20_000, 200_000)), "image/jpeg", {"camera": f"cam{n % 3}"}
        )
    objs["media/"] = Obj(b"", "application/x-directory")  # a "directory marker"
    objs["empty.bin"] = Obj(b"")
    objs["reports/Q1 résumé/日本 notes.txt"] = Obj("Größe: 42 €\n".encode(), "text/plain")
    objs["reports/100%25 done.txt"] = Obj(b"percent\n", "text/plain")
    objs["tree"] = Obj(b"a key that is also a directory\n", "text/plain")
    objs["tree/leaf"] = Obj(b"below it\n", "text/plain")
    objs["backups/db.dump"] = Obj(rng.randbytes(3 * MiB), "application/octet-stream")
    objs["backups/big.tar"] = Obj(rng.randbytes(9 * MiB), "application/x-tar", {"k": "v"})
    return objs


def put_all(client: S3Client, bucket: str, prefix: str, objs: dict[str, Obj]) -> None:
    for key, obj in objs.items():
        client.put_object(
            Bucket=bucket,
            Key=prefix + key,
            Body=obj.body,
            ContentType=obj.content_type,
            Metadata=obj.metadata,
        )


def put_multipart(client: S3Client, bucket: str, key: str, body: bytes, part: int) -> str:
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, ContentType="video/mp4")
    parts = []
    for number, start in enumerate(range(0, len(body), part), 1):
        answer = client.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=body[start : start + part],
        )
        parts.append({"ETag": answer["ETag"], "PartNumber": number})
    done = client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    return done["ETag"].strip('"')


def listing(client: S3Client, bucket: str, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Key (relative to ``prefix``) → HEAD of every object below ``prefix``."""
    out: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            head = client.head_object(Bucket=bucket, Key=item["Key"])
            out[item["Key"][len(prefix) :]] = dict(head)
    return out


def body(client: S3Client, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def source(url: str) -> BucketSource:
    opened = open_source(url)
    assert isinstance(opened, BucketSource)
    return opened


def capture(url: str, previous: MemoryReader | None = None) -> tuple[MemorySink, dict[str, Any]]:
    sink = MemorySink(previous=previous)
    src = source(url)
    try:
        meta = src.capture(sink)
    finally:
        src.close()
    return sink, meta


def restore(
    url: str, reader: MemoryReader, overwrite: bool = False
) -> tuple[dict[str, Any], list[str]]:
    notices: list[str] = []
    target = source(url)
    try:
        done = target.restore(
            reader, ArtifactRestoreOptions(overwrite=overwrite, notice=notices.append)
        )
    finally:
        target.close()
    return done, notices


def probe(url: str) -> dict[str, Any]:
    src = source(url)
    try:
        return src.probe()
    finally:
        src.close()


@pytest.fixture
def other_bucket(s3_server: SeaweedServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second fresh bucket (restore target), deleted afterwards."""
    name = s3_server.create_bucket(unique_bucket_name(request.node.name, "o"))
    yield name
    purge_bucket(s3_server.client(), name)


# --- URLs and the key → path mapping (no server) ------------------------------------------------


def test_url_options_prefix_and_name() -> None:
    src = source("s3://photos/app%20data/2024/?endpoint=http://127.0.0.1:9&region=eu-1&retries=2")
    assert (src.options.bucket, src.prefix, src.name) == ("photos", "app data/2024/", "s3-photos")
    assert src.options.endpoint == "http://127.0.0.1:9" and src.options.retry.attempts == 2
    assert (src.kind, src.create_bucket, src.delete_extra) == ("s3", False, False)
    named = source("s3://photos?name=pics&create-bucket=yes&delete-extra=1&tls-verify=false")
    assert (named.prefix, named.name, named.create_bucket, named.delete_extra) == (
        "",
        "pics",
        True,
        True,
    )
    assert named.options.verify is False


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://b/p?storage-class=GLACIER", "unknown option"),
        ("s3://b/p?overwrite=yes", "unknown option"),
        ("s3://key:secret@b/p", "contains a password"),
        ("s3://key@b/p", "contains credentials"),
        ("s3://b:9000/p", "gives a port"),
        ("s3://b/p?tls-verify=maybe", "tls-verify"),
        ("s3://b/p?endpoint=ftp://x", "bad S3 endpoint"),
        ("s3://b/p?name=../x", "not valid"),
    ],
)
def test_bad_urls_are_usage_errors(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        source(url)
    assert "secret" not in str(caught.value)


def test_the_endpoint_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACKVAULT_S3_ENDPOINT", "http://127.0.0.1:8333")
    src = BucketSource.from_url(SourceURL.parse("s3://b"))
    assert src.options.endpoint == "http://127.0.0.1:8333" and src.options.path_style is None


HOSTILE_KEYS = [
    "",
    "a",
    "a/b",
    "a/b/c",
    "dir/",
    "dir/x",
    "a//b",
    "/lead",
    "//",
    ".",
    "..",
    "x/./y",
    "x/../y",
    "...",
    "%41",
    "%_",
    "%~",
    "%=",
    "a%=",
    "tab\tkey\n",
    "back\\slash",
    "\x7fdel\x85",
    "y" * 300,
    "z/" + "ü" * 200 + "/w",
    "z/" + "ü" * 200 + "/v",
    "q/" + "%" * 150,
    "sp ace/ü€/日本",
]


def test_artifact_paths_are_safe_distinct_stable_and_reversible() -> None:
    paths = artifact_paths(HOSTILE_KEYS)
    assert len(set(paths.values())) == len(HOSTILE_KEYS)
    assert artifact_paths(reversed(HOSTILE_KEYS)) == paths
    dirs = {p.rsplit("/", 1)[0] for p in paths.values()}
    for key, path in paths.items():
        parts = path.split("/")
        assert parts[0] == "objects" and all(parts), (key, path)
        assert not any(p in (".", "..") for p in parts), (key, path)
        assert all(len(p.encode()) <= 200 for p in parts), (key, path)
        assert not any(ord(c) < 0x20 or c == "\\" for c in path), (key, path)
        assert path not in dirs, f"{path} is a file and a directory"
        decoded = key_from_path(path)
        assert decoded == key or (decoded is None and "%~" in path), (key, path, decoded)
    assert paths["a"] == "objects/a%=" and paths["a/b"] == "objects/a/b%="
    assert paths["dir/"] == "objects/dir/%_" and paths["sp ace/ü€/日本"] == "objects/sp ace/ü€/日本"
    sink = MemorySink()  # every path is one the sink accepts
    for path in paths.values():
        sink.add_bytes(path, b"")


# --- capture, restore, probe --------------------------------------------------------------------


def test_capture_restore_into_another_bucket_and_probe(
    s3_env: S3Credentials, s3_server: SeaweedServer, s3_bucket: str, other_bucket: str
) -> None:
    client = s3_server.client()
    objs = realistic_objects()
    put_all(client, s3_bucket, "app/", objs)
    video = random.Random(3).randbytes(11 * MiB + 5)
    multipart_etag = put_multipart(client, s3_bucket, "app/media/clip.mp4", video, 5 * MiB)
    assert multipart_etag.endswith("-3")
    put_all(client, s3_bucket, "", {"app2/outside": Obj(b"x"), "apple": Obj(b"y")})
    expected = {k: o.body for k, o in objs.items()} | {"media/clip.mp4": video}

    sink, meta = capture(f"s3://{s3_bucket}/app")

    facts = meta["facts"]
    assert facts == {
        "objects": len(expected),
        "bytes": sum(len(b) for b in expected.values()),
        "etags": {k: md5(b) for k, b in expected.items()},
    }
    assert len(expected) > 200
    manifest = sink.reader("s3", "s3", meta).read_json("manifest.json")
    assert manifest["format"] == 1 and manifest["bucket"] == s3_bucket
    records = {r["key"]: r for r in manifest["objects"]}
    assert set(records) == set(expected)
    for key, data in expected.items():
        rec = records[key]
        assert sink.data[rec["path"]] == data, key
        assert rec["size"] == len(data) and rec["md5"] == md5(data)
        assert rec["storage_class"] == "STANDARD" and rec["last_modified"].endswith("Z")
        if key in objs:
            assert rec["etag"] == md5(data) and rec["check"] == "md5=etag"
            assert rec["content_type"] == objs[key].content_type, key
            assert rec["metadata"] == objs[key].metadata, key
    assert records["media/clip.mp4"]["etag"] == multipart_etag
    assert records["media/clip.mp4"]["check"] == "size"
    assert records["media/"]["path"] == "objects/media/%_" and records["empty.bin"]["size"] == 0
    assert records["tree"]["path"] == "objects/tree%="
    entry = sink.entries[records["users/0001.json"]["path"]]
    assert entry.xattr("s3.etag") == md5(objs["users/0001.json"].body).encode()
    assert entry.meta.mtime_ns > 0
    assert meta["downloaded"] == {"objects": len(expected), "bytes": facts["bytes"]}
    assert meta["reused"] == {"objects": 0, "bytes": 0} and meta["retries"] == 0
    assert (meta["bucket"], meta["prefix"], meta["endpoint"]) == (
        s3_bucket,
        "app/",
        s3_server.endpoint,
    )
    assert compare_facts(facts, probe(f"s3://{s3_bucket}/app")) == []  # hashes clip.mp4

    target = f"s3://{other_bucket}/restored/here"
    assert source(target).describe_target() is None
    reader = sink.reader("s3-data", "s3", meta)
    done, notices = restore(target, reader)
    assert (done["objects"], done["bytes"], done["extra_kept"], notices) == (
        len(expected),
        facts["bytes"],
        0,
        [],
    )

    assert compare_facts(facts, probe(target)) == []
    restored = listing(client, other_bucket, "restored/here/")
    assert set(restored) == set(expected)
    for key, data in expected.items():
        assert body(client, other_bucket, f"restored/here/{key}") == data, key
        assert restored[key]["ETag"].strip('"') == md5(data)  # single PUTs: ETag = MD5 again
        if key in objs:
            assert restored[key]["ContentType"] == objs[key].content_type, key
            assert restored[key]["Metadata"] == objs[key].metadata, key
    assert source(target).describe_target() == (
        f"s3://{other_bucket}/restored/here/ holds {len(expected)} objects "
        f"({facts['bytes'] / MiB:.1f} MiB)"
    )


def test_large_objects_restore_in_parts_and_probe_hashes_them(
    s3_env: S3Credentials, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    data = random.Random(5).randbytes(12 * MiB + 1)
    put_all(s3_server.client(), s3_bucket, "in/", {"big.bin": Obj(data, "application/zip")})
    sink, meta = capture(f"s3://{s3_bucket}/in")
    target = source(f"s3://{s3_bucket}/out")
    target.single_put_limit = target.part_size = 5 * MiB
    target.restore(sink.reader("s3", "s3", meta), ArtifactRestoreOptions())
    head = s3_server.client().head_object(Bucket=s3_bucket, Key="out/big.bin")
    assert head["ETag"].strip('"').endswith("-3") and head["ContentType"] == "application/zip"
    assert body(s3_server.client(), s3_bucket, "out/big.bin") == data
    assert compare_facts(meta["facts"], target.probe()) == []
    target.close()


def test_a_second_capture_downloads_only_what_changed(
    s3_env: S3Credentials, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    client = s3_server.client()
    objs = realistic_objects()
    put_all(client, s3_bucket, "", objs)
    clip = random.Random(9).randbytes(6 * MiB)
    put_multipart(client, s3_bucket, "clip.mp4", clip, 5 * MiB)
    url = f"s3://{s3_bucket}"
    first, meta1 = capture(url)
    reader1 = first.reader("s3", "s3", meta1)
    assert "md5/clip.mp4" in first.entries  # its MD5 was only known after the download

    time.sleep(1.1)  # a new last-modified second for the copy below
    changed = {
        "users/0003.json": Obj(b'{"user": 3, "name": "renamed"}', "application/json"),
        "backups/db.dump": Obj(random.Random(1).randbytes(3 * MiB + 7)),
        "new/one.txt": Obj(b"new\n", "text/plain"),
        "new/two.txt": Obj(b"newer\n", "text/plain", {"x": "y"}),
    }
    put_all(client, s3_bucket, "", changed)
    client.delete_object(Bucket=s3_bucket, Key="users/0004.json")
    client.copy_object(  # same content and ETag, new headers
        Bucket=s3_bucket,
        Key="users/0005.json",
        CopySource={"Bucket": s3_bucket, "Key": "users/0005.json"},
        MetadataDirective="REPLACE",
        ContentType="application/vnd.user+json",
        Metadata={"reviewed": "yes"},
    )

    second, meta2 = capture(url, previous=reader1)

    manifest = second.data["manifest.json"]
    assert second.reads == sum(len(o.body) for o in changed.values()) + len(manifest)
    assert meta2["downloaded"]["objects"] == 4 and meta2["headers_refreshed"] == 1
    total = len(objs) + 1 + 2 - 1
    assert meta2["reused"]["objects"] == total - 4 and meta2["facts"]["objects"] == total
    records = {
        r["key"]: r for r in second.reader("s3", "s3", meta2).read_json("manifest.json")["objects"]
    }
    assert "users/0004.json" not in records and records["clip.mp4"]["md5"] == md5(clip)
    assert records["users/0005.json"]["metadata"] == {"reviewed": "yes"}
    assert records["users/0005.json"]["content_type"] == "application/vnd.user+json"
    for key, obj in changed.items():
        assert second.data[records[key]["path"]] == obj.body
    assert second.entries["objects/clip.mp4"].xattr("s3.md5") == md5(clip).encode()
    assert compare_facts(meta2["facts"], probe(url)) == []

    third, meta3 = capture(url, previous=second.reader("s3", "s3", meta2))
    assert third.reads == len(third.data["manifest.json"])  # nothing downloaded at all
    assert meta3["facts"] == meta2["facts"] and meta3["headers_refreshed"] == 0

    restore_url = f"s3://{s3_bucket}/copy"
    restore(restore_url, third.reader("s3", "s3", meta3))
    assert body(client, s3_bucket, "copy/users/0005.json") == objs["users/0005.json"].body
    head = client.head_object(Bucket=s3_bucket, Key="copy/users/0005.json")
    assert head["Metadata"] == {"reviewed": "yes"}


class RacingSink(MemorySink):
    """A sink that runs ``race`` (once) when the first object is stored: another client
    changes the bucket between the listing and the downloads."""

    def __init__(self, race: Callable[[], None]) -> None:
        super().__init__()
        self.race: Callable[[], None] | None = race

    def add_file(self, path: str, stream: Readable, meta: EntryMeta | None = None) -> StoredFile:
        if self.race is not None:
            race, self.race = self.race, None
            race()
        return super().add_file(path, stream, meta)


def test_objects_replaced_or_deleted_after_the_listing(
    s3_env: S3Credentials, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    client = s3_server.client()
    put_all(client, s3_bucket, "", {"a": Obj(b"1"), "b": Obj(b"2"), "c": Obj(b"3")})

    def race() -> None:
        client.put_object(Bucket=s3_bucket, Key="b", Body=b"two, longer")
        client.delete_object(Bucket=s3_bucket, Key="c")

    sink = RacingSink(race)
    meta = source(f"s3://{s3_bucket}").capture(sink)
    assert meta["facts"]["etags"] == {"a": md5(b"1"), "b": md5(b"two, longer")}
    assert meta["changed_during_capture"] == ["b"] and meta["vanished_during_capture"] == ["c"]
    assert sink.data["objects/b"] == b"two, longer"
    assert any("replaced" in n and "deleted after the listing" in n for n in sink.notices)


def test_transient_resets_are_retried_and_transfers_resume(
    s3_env: S3Credentials,
    s3_server: SeaweedServer,
    s3_bucket: str,
    fault_proxy: FaultProxyFactory,
) -> None:
    """Through a proxy that resets 30 % of the connections (and of each 2 MiB of traffic):
    downloads resume where they broke off, uploads start again from the artifact."""
    objs = realistic_objects()
    objs = {k: o for k, o in objs.items() if k.startswith(("backups/db", "users/000"))}
    put_all(s3_server.client(), s3_bucket, "", objs)
    proxy = fault_proxy(reset_rate=0.3, seed=3, fault_window=2 * MiB)
    faulty = f"endpoint={proxy.endpoint}&retries=20&timeout=5"

    sink, meta = capture(f"s3://{s3_bucket}?{faulty}")

    assert meta["retries"] > 0 and meta["resumed"] > 0, (meta, proxy.resets)
    assert any("retrying" in n for n in sink.notices)
    assert meta["facts"]["etags"] == {k: md5(o.body) for k, o in objs.items()}
    target = source(f"s3://{s3_bucket}/again?{faulty}")
    target.memory_limit = 0  # stream every upload from the artifact, reopened for each try
    notices: list[str] = []
    done = target.restore(
        sink.reader("s3", "s3", meta), ArtifactRestoreOptions(notice=notices.append)
    )
    target.close()
    assert done["objects"] == len(objs) and any("retrying" in n for n in notices)
    assert compare_facts(meta["facts"], probe(f"s3://{s3_bucket}/again")) == []


# --- restore targets ----------------------------------------------------------------------------


def test_restore_is_refused_without_overwrite_and_keeps_extra_objects(
    s3_env: S3Credentials, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    client = s3_server.client()
    put_all(client, s3_bucket, "src/", {"a.txt": Obj(b"A"), "b/c.txt": Obj(b"C")})
    sink, meta = capture(f"s3://{s3_bucket}/src")
    reader = sink.reader("s3", "s3", meta)
    put_all(client, s3_bucket, "dst/", {"a.txt": Obj(b"old A"), "extra.txt": Obj(b"E")})
    target = f"s3://{s3_bucket}/dst"
    assert source(target).describe_target() == f"s3://{s3_bucket}/dst/ holds 2 objects (6 bytes)"

    with pytest.raises(RestoreRefused, match=r"dst/ holds 2 objects; nothing was changed"):
        restore(target, reader)
    assert body(client, s3_bucket, "dst/a.txt") == b"old A"
    assert set(listing(client, s3_bucket, "dst/")) == {"a.txt", "extra.txt"}

    done, notices = restore(target, reader, overwrite=True)
    assert (done["replaced"], done["extra_kept"], done["extra_sample"]) == (1, 1, ["extra.txt"])
    assert notices and "kept 1 object(s)" in notices[0] and "delete-extra=yes" in notices[0]
    assert body(client, s3_bucket, "dst/a.txt") == b"A"
    assert compare_facts(meta["facts"], probe(target)) == [
        "bytes: 2 recorded, 3 now",
        "etags.extra.txt: not recorded, present now",
        "objects: 2 recorded, 3 now",
    ]

    done, notices = restore(f"{target}?delete-extra=yes", reader, overwrite=True)
    assert done["extra_deleted"] == 1 and "deleted 1 object(s)" in notices[0]
    assert compare_facts(meta["facts"], probe(target)) == []


def test_a_missing_bucket_is_created_only_when_asked(
    s3_env: S3Credentials, s3_server: SeaweedServer, s3_bucket: str, request: pytest.FixtureRequest
) -> None:
    put_all(s3_server.client(), s3_bucket, "", {"k": Obj(b"v")})
    sink, meta = capture(f"s3://{s3_bucket}")
    missing = unique_bucket_name(request.node.name, "m")
    assert source(f"s3://{missing}/p").describe_target() is None
    with pytest.raises(SourceError, match=rf"bucket {missing} does not exist at http://127") as e:
        restore(f"s3://{missing}/p", sink.reader("s3", "s3", meta))
    assert "create-bucket=yes" in str(e.value)
    try:
        done, notices = restore(
            f"s3://{missing}/p?create-bucket=yes", sink.reader("s3", "s3", meta)
        )
        assert done["bucket_created"] and done["objects"] == 1 and "created bucket" in notices[0]
        assert body(s3_server.client(), missing, "p/k") == b"v"
    finally:
        purge_bucket(s3_server.client(), missing)


# --- failures -----------------------------------------------------------------------------------


def test_capturing_a_missing_bucket_says_so(
    s3_env: S3Credentials, s3_server: SeaweedServer
) -> None:
    with pytest.raises(SourceError) as caught:
        capture("s3://no-such-bucket-here/x")
    assert str(caught.value) == (
        f"bucket no-such-bucket-here does not exist at {s3_server.endpoint}; "
        "check the bucket name, the endpoint and the region"
    )


def test_wrong_credentials_are_named_without_the_secret(
    s3_env: S3Credentials, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    with pytest.raises(SourceError, match="rejected the credentials") as caught:
        capture(f"s3://{s3_bucket}")
    assert "AWS_ACCESS_KEY_ID" in str(caught.value)
    assert "not-the-secret" not in str(caught.value) and s3_env.secret_key not in str(caught.value)


def test_a_key_that_may_not_read_or_write_gets_a_403_sentence(
    s3_env: S3Credentials,
    s3_server: SeaweedServer,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put_all(s3_server.client(), s3_bucket, "", {"k": Obj(b"v")})
    sink, meta = capture(f"s3://{s3_bucket}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.writer.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.writer.secret_key)
    with pytest.raises(SourceError, match=rf"cannot read from bucket {s3_bucket} \(listing"):
        capture(f"s3://{s3_bucket}")

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.reader.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.reader.secret_key)
    with pytest.raises(SourceError) as caught:
        restore(f"s3://{s3_bucket}/copy", sink.reader("s3", "s3", meta))
    assert str(caught.value).startswith(
        f"the restore into s3://{s3_bucket}/copy at {s3_server.endpoint} stopped after 0 of 1 "
        f"objects: the access key cannot write to bucket {s3_bucket} (upload of copy/k denied)"
    )


def test_an_unreachable_endpoint_fails_after_its_retries(s3_env: S3Credentials) -> None:
    started = time.monotonic()
    with pytest.raises(SourceError, match="cannot connect to the S3 endpoint") as caught:
        capture("s3://bucket/p?endpoint=http://127.0.0.1:9&retries=2&retry-time=5")
    assert "gave up after 2 tries" in str(caught.value)
    assert time.monotonic() - started < 10


def test_a_damaged_manifest_is_refused_before_anything_is_written(
    s3_env: S3Credentials, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    put_all(s3_server.client(), s3_bucket, "", {"k": Obj(b"v")})
    sink, meta = capture(f"s3://{s3_bucket}")
    del sink.data["objects/k"], sink.entries["objects/k"]
    with pytest.raises(SourceError, match="has no file objects/k of 1 bytes"):
        restore(f"s3://{s3_bucket}/copy", sink.reader("s3", "s3", meta))
    assert listing(s3_server.client(), s3_bucket, "copy/") == {}


class ReplacingSink(MemorySink):
    """A sink that, after the first MiB of an object, lets ``meanwhile`` run (which replaces the
    object and breaks the connection) before it reads on."""

    def __init__(self, meanwhile: Callable[[], None]) -> None:
        super().__init__()
        self.meanwhile = meanwhile

    def add_file(self, path: str, stream: Readable, meta: EntryMeta | None = None) -> StoredFile:
        head = stream.read(MiB)
        self.meanwhile()
        rest = b"".join(iter(lambda: stream.read(MiB), b""))
        return super().add_file(path, io.BytesIO(head + rest), meta)


def test_an_object_replaced_while_it_is_read_fails_the_capture(
    s3_env: S3Credentials,
    s3_server: SeaweedServer,
    s3_bucket: str,
    fault_proxy: FaultProxyFactory,
) -> None:
    client = s3_server.client()
    put_all(client, s3_bucket, "", {"big": Obj(random.Random(2).randbytes(9 * MiB))})
    proxy = fault_proxy()

    def meanwhile() -> None:
        client.put_object(Bucket=s3_bucket, Key="big", Body=b"replaced")
        proxy.cut()
        time.sleep(0.2)
        proxy.heal()

    src = source(f"s3://{s3_bucket}?endpoint={proxy.endpoint}&retries=3")
    with pytest.raises(SourceError) as caught:
        src.capture(ReplacingSink(meanwhile))
    assert str(caught.value) == (
        f"object big of s3://{s3_bucket} at {proxy.endpoint} was replaced while it was being "
        "read; run the capture again"
    )


def test_bytes_that_do_not_match_their_etag_fail_the_capture(
    s3_env: S3Credentials, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    # SeaweedFS stores a key ending in "/" as a directory: it keeps the ETag of the body it was
    # given but serves no bytes - exactly what the MD5 check exists for.
    s3_server.client().put_object(Bucket=s3_bucket, Key="dir/", Body=b"lost")
    with pytest.raises(SourceError) as caught:
        capture(f"s3://{s3_bucket}")
    assert str(caught.value) == (
        f"object dir/ of s3://{s3_bucket} at {s3_server.endpoint} was read with MD5 "
        f"{md5(b'')}, but its ETag is {md5(b'lost')}: the download was damaged; "
        "run the capture again"
    )
