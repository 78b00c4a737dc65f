"""A mistyped S3 endpoint host fails at once (`store/s3errors.py`): the resolver's "not
known" is permanent, while its "try again" stays a transient error that is retried. No
network is used: the exceptions are built as botocore raises them."""

from __future__ import annotations

import socket

import botocore.exceptions as bx
import pytest
from urllib3.exceptions import NameResolutionError

from stackvault.errors import StoreUnreachable, TransientStoreError
from stackvault.store.retry import Retrier, RetryPolicy
from stackvault.store.s3errors import translate


def _endpoint_error(errno: int, words: str) -> bx.EndpointConnectionError:
    try:
        try:
            raise socket.gaierror(errno, words)
        except socket.gaierror as reason:
            raise NameResolutionError("s3.exmaple.com", None, reason) from reason  # type: ignore[arg-type]
    except NameResolutionError as wrapped:
        return bx.EndpointConnectionError(endpoint_url="https://s3.exmaple.com/b", error=wrapped)


def _translate(exc: Exception) -> Exception:
    return translate(exc, what="get config", where="s3://b (s3.exmaple.com)", bucket="b")


def test_a_host_that_does_not_exist_is_not_retried() -> None:
    error = _translate(_endpoint_error(socket.EAI_NONAME, "Name or service not known"))
    assert isinstance(error, StoreUnreachable)
    assert "is not known (Name or service not known)" in str(error)
    calls = []

    def request() -> None:
        calls.append(1)
        raise error

    with pytest.raises(StoreUnreachable):
        Retrier(RetryPolicy(), sleep=lambda _s: None).call("get config", request)
    assert len(calls) == 1


def test_a_resolver_that_may_answer_later_is_retried() -> None:
    error = _translate(_endpoint_error(socket.EAI_AGAIN, "Temporary failure in name resolution"))
    assert isinstance(error, TransientStoreError)
    refused = _translate(bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b"))
    assert isinstance(refused, TransientStoreError)
