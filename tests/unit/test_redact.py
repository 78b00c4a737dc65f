"""`stackvault.redact`: the one rule that hides credentials in every kind of location."""

from __future__ import annotations

import pytest

from stackvault.redact import is_secret_key, redact


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("postgres://backup@db:5432/app?password=S", "postgres://backup@db:5432/app?password=***"),
        ("postgres://backup:S@db/app", "postgres://***@db/app"),
        ("mysql://u@h/db?sslpassword=S&timeout=5", "mysql://u@h/db?sslpassword=***&timeout=5"),
        ("redis://:S@h:6379/0", "redis://***@h:6379/0"),
        ("redis+docker://cache?requirepass=S", "redis+docker://cache?requirepass=***"),
        ("s3://AKIAIOSFODNN7EXAMPLE:S@bucket/p", "s3://***@bucket/p"),
        ("s3://anything@bucket/p", "s3://***@bucket/p"),
        ("https://AKIAIOSFODNN7EXAMPLE@host/p", "https://***@host/p"),
        (
            "s3://b/p?AWS_Secret_Access_Key=S&region=eu",
            "s3://b/p?AWS_Secret_Access_Key=***&region=eu",
        ),
        ("s3://b/p?endpoint=http://u:S@h:1", "s3://b/p?endpoint=http://***@h:1"),
        ("s3://b/p?endpoint=http%3A%2F%2Fu%3AS%40h%3A1", "s3://b/p?endpoint=http://***@h:1"),
        ("sqlite:///srv/app.db?token=S#frag", "sqlite:///srv/app.db?token=***#***"),
        ("db.example/app?pwd=S", "db.example/app?pwd=***"),
        ("/srv/backup", "/srv/backup"),
        ("file:///srv/backup", "file:///srv/backup"),
    ],
)
def test_redact(location: str, shown: str) -> None:
    assert redact(location) == shown


@pytest.mark.parametrize(
    "key",
    [
        "password", "PASSWD", "pwd", "sslpassword", "secret", "token", "key",
        "aws_secret_access_key", "aws_access_key_id", "access_key", "secret_key",
        "session_token", "auth", "requirepass", "api-key", "X-Amz-Signature", "sig",
    ],
)  # fmt: skip
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["name", "timeout", "sslmode", "endpoint", "region", "mode"])
def test_ordinary_keys_stay_visible(key: str) -> None:
    assert not is_secret_key(key)


def test_unparsable_urls_are_hidden_whole() -> None:
    assert redact("http://[::1/x?password=S") == "<unparsable URL>"
