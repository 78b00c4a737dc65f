"""S3 locations: parsing, validation and redaction (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackvault.errors import UsageError
from stackvault.redact import redact
from stackvault.store.local import LocalStore
from stackvault.store.open import open_store, scheme_of
from stackvault.store.s3 import S3Store
from stackvault.store.s3options import ENV_ENDPOINT, S3Options


def test_bucket_prefix_and_every_option_are_parsed(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    opts = S3Options.from_url(
        "s3://my-bucket/backups/host1/?endpoint=https://s3.example.com:9000&region=eu-west-1"
        f"&path-style=false&storage-class=standard_ia&ca-bundle={ca}&profile=ops"
        "&connections=4&timeout=7.5&retries=3&retry-time=20&limit-upload=10M"
        "&limit-download=512K",
        environ={},
    )
    assert opts.bucket == "my-bucket" and opts.prefix == "backups/host1/"
    assert opts.endpoint == "https://s3.example.com:9000" and opts.region == "eu-west-1"
    assert opts.path_style is False and opts.storage_class == "STANDARD_IA"
    assert opts.verify == str(ca) and opts.profile == "ops"
    assert opts.connections == 4 and opts.timeout == 7.5
    assert opts.retry.attempts == 3 and opts.retry.deadline == 20.0
    assert opts.limit_upload == 10 << 20 and opts.limit_download == 512 << 10


def test_defaults_and_the_endpoint_from_the_environment() -> None:
    opts = S3Options.from_url("s3://b", environ={ENV_ENDPOINT: "http://127.0.0.1:8333"})
    assert opts.prefix == "" and opts.endpoint == "http://127.0.0.1:8333"
    assert opts.verify is True and opts.path_style is None and opts.limit_upload is None
    # An endpoint in the URL wins over the environment.
    url = "s3://b/p?endpoint=http://127.0.0.1:9000"
    assert S3Options.from_url(url, environ={ENV_ENDPOINT: "http://x:1"}).endpoint.endswith("9000")  # type: ignore[union-attr]


def test_tls_verification_can_be_switched_off() -> None:
    assert S3Options.from_url("s3://b?tls-verify=false", environ={}).verify is False


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("s3://", "names no bucket"),
        ("s3://b?colour=red", "unknown S3 option 'colour'"),
        ("s3://b?connections=0", "bad value for S3 option 'connections'"),
        ("s3://b?timeout=soon", "bad value for S3 option 'timeout'"),
        ("s3://b?path-style=maybe", "bad value for S3 option 'path-style'"),
        ("s3://b?limit-upload=fast", "bad value for S3 option 'limit-upload'"),
        ("s3://b?ca-bundle=/nonexistent/ca.pem", "no such file"),
        ("s3://b?endpoint=ftp://host", "bad S3 endpoint"),
        ("s3://AKIA:secret@bucket/p", "contains credentials"),
    ],
)
def test_bad_locations_are_refused_with_what_is_wrong(url: str, words: str) -> None:
    with pytest.raises(UsageError) as info:
        S3Options.from_url(url, environ={})
    assert words in str(info.value)
    assert "secret" not in str(info.value)


def test_describe_never_shows_credentials() -> None:
    opts = S3Options.from_url("s3://b/p?endpoint=http://user:pw@127.0.0.1:9000", environ={})
    shown = opts.describe()
    assert "pw" not in shown and "user" not in shown and "127.0.0.1:9000" in shown


@pytest.mark.parametrize(
    ("location", "hidden", "kept"),
    [
        ("s3://b/p?endpoint=http://u:topsecret@h:1", "topsecret", "h:1"),
        ("s3://b/p?secret_key=topsecret&region=x", "topsecret", "region=x"),
        ("https://u:topsecret@host/path", "topsecret", "host/path"),
    ],
)
def test_redact(location: str, hidden: str, kept: str) -> None:
    shown = redact(location)
    assert hidden not in shown and kept in shown


def test_plain_paths_are_left_alone() -> None:
    assert redact("/srv/backup") == "/srv/backup"


def test_open_store_dispatches_on_the_scheme(tmp_path: Path) -> None:
    assert scheme_of(str(tmp_path)) == "file" and scheme_of("S3://b") == "s3"
    local = open_store(f"file://{tmp_path}/r")
    assert isinstance(local, LocalStore) and local.root == tmp_path / "r"
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    s3 = open_store("s3://bucket/prefix?endpoint=http://127.0.0.1:1")
    assert isinstance(s3, S3Store) and s3.capabilities().remote
    with pytest.raises(UsageError, match="unsupported repository location"):
        open_store("ftp://u:pw@host/x")


@pytest.mark.parametrize("cls", ["glacier", "DEEP_ARCHIVE"])
def test_archive_storage_classes_that_need_manual_restores_are_refused(cls: str) -> None:
    with pytest.raises(UsageError, match="GLACIER_IR"):
        S3Options.from_url(f"s3://b?storage-class={cls}", environ={})
