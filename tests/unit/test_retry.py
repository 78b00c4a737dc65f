"""Retries with backoff and full jitter; token-bucket rate limits (store layer)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stackvault.errors import ObjectNotFound, StoreError, TransientStoreError
from stackvault.store.ratelimit import RateLimiter, parse_rate
from stackvault.store.retry import Retrier, RetryPolicy


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def flaky(failures: int, result: str = "ok") -> tuple[list[int], Callable[[], str]]:
    calls = [0]

    def request() -> str:
        calls[0] += 1
        if calls[0] <= failures:
            raise TransientStoreError(f"reset #{calls[0]}")
        return result

    return calls, request


def test_transient_errors_are_retried_until_success_and_counted() -> None:
    t = FakeTime()
    notices: list[str] = []
    retrier = Retrier(
        RetryPolicy(attempts=5, base=1.0, cap=100.0),
        notice=notices.append,
        sleep=t.sleep,
        clock=t.clock,
        rng=lambda: 1.0,  # the upper bound of every jitter interval
    )
    calls, request = flaky(3)
    assert retrier.call("upload of x", request) == "ok"
    assert calls[0] == 4
    assert retrier.retries == 3 and retrier.gave_up == 0
    assert t.sleeps == [1.0, 2.0, 4.0]  # exponential bound, doubling
    assert (
        len(notices) == 3 and "retrying in 1.0 s" in notices[0] and "attempt 2 of 5" in notices[0]
    )
    assert "reset #1" in notices[0]


def test_full_jitter_draws_below_the_exponential_bound() -> None:
    t = FakeTime()
    draws = iter([0.5, 0.25, 0.0])
    retrier = Retrier(
        RetryPolicy(attempts=4, base=2.0, cap=5.0),
        sleep=t.sleep,
        clock=t.clock,
        rng=lambda: next(draws),
    )
    _calls, request = flaky(3)
    retrier.call("x", request)
    assert t.sleeps == [0.5 * 2.0, 0.25 * 4.0, 0.0 * 5.0]  # third bound capped at 5


def test_gives_up_after_the_attempts_with_the_last_error_and_a_hint() -> None:
    t = FakeTime()
    retrier = Retrier(RetryPolicy(attempts=3, base=0.1), sleep=t.sleep, clock=t.clock)
    calls, request = flaky(10)
    with pytest.raises(TransientStoreError) as info:
        retrier.call("x", request)
    assert calls[0] == 3
    assert "reset #3" in str(info.value) and "gave up after 3 tries" in str(info.value)
    assert "run the command again" in str(info.value)
    assert retrier.gave_up == 1 and retrier.retries == 2


def test_gives_up_when_the_next_wait_would_pass_the_deadline() -> None:
    t = FakeTime()
    retrier = Retrier(
        RetryPolicy(attempts=100, base=4.0, cap=4.0, deadline=10.0),
        sleep=t.sleep,
        clock=t.clock,
        rng=lambda: 1.0,
    )
    calls, request = flaky(100)
    with pytest.raises(TransientStoreError):
        retrier.call("x", request)
    assert t.sleeps == [4.0, 4.0]  # a third wait would end at 12 s > 10 s
    assert calls[0] == 3


@pytest.mark.parametrize("error", [ObjectNotFound("gone"), StoreError("denied"), ValueError("x")])
def test_permanent_errors_are_raised_at_once(error: Exception) -> None:
    t = FakeTime()
    retrier = Retrier(RetryPolicy(), sleep=t.sleep, clock=t.clock)
    calls = [0]

    def request() -> None:
        calls[0] += 1
        raise error

    with pytest.raises(type(error)):
        retrier.call("x", request)
    assert calls[0] == 1 and t.sleeps == [] and retrier.retries == 0


def test_invalid_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_rate_limiter_keeps_the_average_rate() -> None:
    t = FakeTime()
    limiter = RateLimiter(1000, burst=1000, clock=t.clock, sleep=t.sleep)
    limiter.take(1000)  # the burst: no wait
    assert t.sleeps == []
    for _ in range(10):
        limiter.take(500)
    # 5000 bytes beyond the burst at 1000 B/s: 5 s of waiting in total.
    assert sum(t.sleeps) == pytest.approx(5.0)
    assert t.now == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("text", "value"),
    [("500K", 500 * 1024), ("10M", 10 << 20), ("1G", 1 << 30), ("2MiB", 2 << 20), ("123", 123)],
)
def test_parse_rate(text: str, value: int) -> None:
    assert parse_rate(text) == value


@pytest.mark.parametrize("text", ["", "fast", "-1M", "0"])
def test_parse_rate_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)
