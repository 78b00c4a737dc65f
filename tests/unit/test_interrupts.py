"""An interrupt (SIGINT, SIGTERM) that lands in a finalizer is delivered again, not dropped.

Real signals sent to this process, real finalizers (`weakref.finalize`, ``__del__``)."""

from __future__ import annotations

import signal
import sys
import threading
import time
import weakref
from collections.abc import Iterator

import pytest

from stackvault.cli import app, main
from stackvault.errors import EXIT_INTERRUPTED
from stackvault.interrupts import keep_interrupts, take_lost


class _Thing:
    pass


def interrupted_in_a_finalizer(signum: int = signal.SIGINT) -> None:
    """Drop the last reference to an object whose finalizer receives ``signum`` and goes on
    running Python code, so that the handler's `KeyboardInterrupt` is raised inside it."""

    def finalizer() -> None:
        signal.raise_signal(signum)
        for _ in range(1000):  # the handler runs at one of these
            pass

    thing = _Thing()
    weakref.finalize(thing, finalizer)
    del thing


def wait_for_interrupt() -> None:
    """Run Python code for up to 2 s; fails if no interrupt ended it."""
    end = time.monotonic() + 2
    while time.monotonic() < end:
        pass
    raise AssertionError("the interrupt was lost")


@pytest.fixture
def kept() -> Iterator[None]:
    restore = keep_interrupts()
    try:
        yield
    finally:
        restore()


def test_an_interrupt_dropped_by_a_finalizer_is_raised_once_it_returns(kept: None) -> None:
    with pytest.raises(KeyboardInterrupt):
        interrupted_in_a_finalizer()
        wait_for_interrupt()
    assert take_lost() and not take_lost()  # told once


def test_one_dropped_in_a_del_method_and_then_in_another_finalizer_still_arrives(
    kept: None,
) -> None:
    class Dies:
        def __del__(self) -> None:
            signal.raise_signal(signal.SIGINT)
            for _ in range(1000):
                pass

    def spin() -> None:  # long enough for the interrupt delivered again to land in it
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            pass

    with pytest.raises(KeyboardInterrupt):
        a, b = Dies(), _Thing()
        weakref.finalize(b, spin)
        del a, b
        wait_for_interrupt()
    assert take_lost() and take_lost() and not take_lost()  # dropped twice


def test_sigterm_is_used_where_sigint_is_ignored(kept: None) -> None:
    seen: list[int] = []

    def on_term(signum: int, frame: object) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        with pytest.raises(KeyboardInterrupt):
            interrupted_in_a_finalizer(signal.SIGTERM)
            wait_for_interrupt()
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    assert seen == [signal.SIGTERM, signal.SIGTERM]  # the signal, then its delivery again


def test_other_unraisable_exceptions_go_to_the_previous_hook() -> None:
    seen: list[type[BaseException] | None] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append(u.exc_type)
    restore = keep_interrupts()
    try:

        def fails() -> None:
            raise ValueError("not an interrupt")

        thing = _Thing()
        weakref.finalize(thing, fails)
        del thing

        # A KeyboardInterrupt dropped in another thread did not come from a signal handler.
        def in_thread() -> None:
            other = _Thing()
            weakref.finalize(other, _raise_interrupt)
            del other

        t = threading.Thread(target=in_thread)
        t.start()
        t.join()
    finally:
        restore()
        assert sys.unraisablehook is not previous  # the test's own hook is back
        sys.unraisablehook = previous
    assert seen == [ValueError, KeyboardInterrupt]
    assert not take_lost()


def _raise_interrupt() -> None:
    raise KeyboardInterrupt


def test_the_cli_exits_130_when_ctrl_c_lands_in_a_finalizer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def command(parser: object, argv: list[str]) -> int:
        interrupted_in_a_finalizer()
        wait_for_interrupt()
        return 0

    monkeypatch.setattr(app, "run_command", command)
    before = sys.unraisablehook
    assert main.main(["snapshots"]) == EXIT_INTERRUPTED
    assert "interrupted; nothing unfinished was recorded" in capsys.readouterr().err
    assert sys.unraisablehook is before  # put back
