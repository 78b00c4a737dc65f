"""Pytest fixtures for tests against a real S3 server (SeaweedFS) and a fault-injecting proxy.

Registered for the whole suite in ``tests/conftest.py`` with
``pytest_plugins = ["support.s3fixtures"]``: ``tests/`` has no ``__init__.py``, so pytest puts
``tests/`` itself on ``sys.path`` (that is how ``from conftest import ...`` works in the existing
tests) and ``tests.support`` is not importable when pytest runs as ``.venv/bin/pytest``. Test
modules import these helpers the same way: ``from support.seaweed import SeaweedServer``.

Fixtures:

- ``s3_server`` (session) - a running `SeaweedServer`; started on first use (~3 s), stopped at
  the end of the session. A missing ``weed`` binary fails (never skips) every test that uses it.
- ``s3_bucket`` / ``s3_lock_bucket`` (function) - the name of a fresh bucket (the latter with
  Object Lock enabled, no default retention); emptied and deleted afterwards, best effort.
- ``s3_env`` (function) - environment for code that builds its own boto3 client (the store):
  admin keys, region, ``STACKVAULT_S3_ENDPOINT``; ``~/.aws`` and proxies are out of the picture.
- ``fault_proxy`` (function) - ``make(reset_rate=, stall_rate=, stall_seconds=, seed=)`` ->
  `FaultProxy` in front of the server; every proxy made is closed at the end of the test.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from .faultproxy import FaultProxy
from .seaweed import S3Credentials, SeaweedServer, WeedNotFoundError, find_weed
from .servermarks import require_server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

DEFAULT_FAULT_WINDOW = 256 * 1024

# Variables that would make boto3 read other credentials or configuration, talk to another
# endpoint or through a proxy, or behave differently from its defaults.
_CLEARED_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_CA_BUNDLE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_REQUEST_CHECKSUM_CALCULATION",
    "AWS_RESPONSE_CHECKSUM_VALIDATION",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


class FaultProxyFactory(Protocol):
    """The ``fault_proxy`` fixture: makes a `FaultProxy` in front of the S3 server."""

    def __call__(
        self,
        reset_rate: float = 0.0,
        stall_rate: float = 0.0,
        stall_seconds: float = 5.0,
        seed: int = 0,
        fault_window: int = DEFAULT_FAULT_WINDOW,
        reset_first: int = 0,
    ) -> FaultProxy: ...


def unique_bucket_name(hint: str, prefix: str = "t") -> str:
    """A valid, unique bucket name (lowercase, 3-63 characters) that mentions ``hint``."""
    slug = re.sub(r"[^a-z0-9]+", "-", hint.lower()).strip("-")[:30].strip("-")
    return "-".join(part for part in (prefix, slug, secrets.token_hex(4)) if part)


def purge_bucket(client: S3Client, bucket: str, *, bypass_governance: bool = False) -> bool:
    """Best effort: abort uploads, delete every version and delete marker, delete the bucket.
    Versions under COMPLIANCE retention or legal hold cannot be deleted and stay (so does the
    bucket then). Never raises; returns whether the bucket is gone."""
    try:
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        for upload in uploads:
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
    except (BotoCoreError, ClientError):
        pass
    doomed: list[ObjectIdentifierTypeDef] = []
    try:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                doomed.append({"Key": entry["Key"], "VersionId": entry["VersionId"]})
    except (BotoCoreError, ClientError):
        doomed.clear()
        try:  # no version listing: plain keys (never on a versioned bucket: new markers)
            for listing in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                doomed.extend({"Key": entry["Key"]} for entry in listing.get("Contents", []))
        except (BotoCoreError, ClientError):
            pass
    for start in range(0, len(doomed), 1000):
        try:
            client.delete_objects(
                Bucket=bucket,
                Delete={"Objects": doomed[start : start + 1000], "Quiet": True},
                BypassGovernanceRetention=bypass_governance,
            )
        except (BotoCoreError, ClientError):
            pass
    try:
        client.delete_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError):
        return False
    return True


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A running SeaweedFS S3 server (127.0.0.1, free ports, identities ``admin``, ``reader``,
    ``writer``) shared by the whole session; started when a test first needs it, stopped at
    session end. Fails - never skips - when ``weed`` is missing or does not start."""
    require_server("s3", "the SeaweedFS S3 server")
    try:
        weed = find_weed()
    except WeedNotFoundError as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"), weed=weed)
    try:
        server.start()
    except RuntimeError as exc:
        message = f"the SeaweedFS test server did not start: {exc}"
        raise pytest.fail.Exception(message, pytrace=False) from None
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: SeaweedServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """The name of a fresh, empty, unversioned bucket; afterwards its objects and the bucket
    are deleted (best effort)."""
    name = s3_server.create_bucket(unique_bucket_name(request.node.name))
    yield name
    purge_bucket(s3_server.client(), name)


@pytest.fixture
def s3_lock_bucket(s3_server: SeaweedServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """The name of a fresh bucket with Object Lock enabled (hence versioning) and no default
    retention; afterwards everything deletable is deleted (GOVERNANCE locks are bypassed);
    versions under COMPLIANCE retention are left in place, and with them the bucket."""
    name = s3_server.create_bucket(unique_bucket_name(request.node.name, "tl"), object_lock=True)
    yield name
    purge_bucket(s3_server.client(), name, bypass_governance=True)


@pytest.fixture
def s3_env(
    s3_server: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> S3Credentials:
    """Point boto3's default chain at the test server: ``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY`` (admin), ``AWS_DEFAULT_REGION=us-east-1``,
    ``STACKVAULT_S3_ENDPOINT``; profiles, session tokens, endpoint overrides and proxies are
    cleared, ``AWS_CONFIG_FILE`` / ``AWS_SHARED_CREDENTIALS_FILE`` name files that do not exist
    (``~/.aws`` is never read) and the instance metadata service is disabled. Returns the admin
    credentials."""
    for name in _CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    absent = tmp_path / ".no-aws"
    creds = s3_server.admin
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(absent / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(absent / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("STACKVAULT_S3_ENDPOINT", s3_server.endpoint)
    return creds


@pytest.fixture
def fault_proxy(s3_server: SeaweedServer) -> Iterator[FaultProxyFactory]:
    """A factory ``make(reset_rate=0.0, stall_rate=0.0, stall_seconds=5.0, seed=0,
    fault_window=256 KiB) -> FaultProxy`` for proxies in front of the S3 server (use
    ``proxy.endpoint`` as the endpoint URL). All of them are closed at the end of the test; a
    proxy thread that does not stop within a second fails the test."""
    made: list[FaultProxy] = []

    def make(
        reset_rate: float = 0.0,
        stall_rate: float = 0.0,
        stall_seconds: float = 5.0,
        seed: int = 0,
        fault_window: int = DEFAULT_FAULT_WINDOW,
        reset_first: int = 0,
    ) -> FaultProxy:
        proxy = FaultProxy(
            ("127.0.0.1", s3_server.port),
            reset_rate=reset_rate,
            stall_rate=stall_rate,
            stall_seconds=stall_seconds,
            seed=seed,
            fault_window=fault_window,
            reset_first=reset_first,
        )
        made.append(proxy)
        return proxy

    yield make
    problems: list[str] = []
    for proxy in made:
        try:
            proxy.close()
        except RuntimeError as exc:
            problems.append(str(exc))
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
