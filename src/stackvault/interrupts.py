"""Interrupts that are never lost.

SIGINT and SIGTERM reach the program as `KeyboardInterrupt`, raised by the signal handler in
the main thread at whatever Python code runs there when the signal arrives. When that code
is a finalizer (a ``__del__`` method, a `weakref.finalize` callback, any weakref callback or
a garbage-collector callback), Python cannot pass the exception on: it prints "Exception
ignored in …" and drops it, and the interrupted command would carry on to its end as if
nothing had happened.

`keep_interrupts` closes that gap: while it is in force, an interrupt dropped that way is
sent again, as a real signal to the main thread from another thread, a moment after the
finalizer returns (to the handler then set for SIGINT; for SIGTERM where SIGINT is ignored),
and nothing is printed for it. `take_lost` tells that handler that the interrupt it gets is
one sent again, so that a handler that interrupts only once (the daemon's) raises it again.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

_lock = threading.Lock()
_AGAIN_AFTER_S = 0.002
_lost = 0
_timers: list[threading.Timer] = []


def keep_interrupts() -> Callable[[], None]:
    """Deliver again every `KeyboardInterrupt` a finalizer drops in the main thread; returns
    the function that puts the previous `sys.unraisablehook` back."""
    previous = sys.unraisablehook
    pid = os.getpid()

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        try:
            if (
                unraisable.exc_type is not None
                and issubclass(unraisable.exc_type, KeyboardInterrupt)
                and threading.current_thread() is threading.main_thread()
                and os.getpid() == pid  # not in a forked child
                and _deliver_again()
            ):
                return
        except KeyboardInterrupt:  # a new signal, handled while in here: deliver it too
            if _deliver_again():
                return
        previous(unraisable)

    sys.unraisablehook = hook

    def restore() -> None:
        global _lost
        sys.unraisablehook = previous
        with _lock:
            _lost = 0
            timers = _timers[:]
            _timers.clear()
        for timer in timers:
            timer.cancel()

    return restore


def _deliver_again() -> bool:
    """Have the interrupt delivered again in the main thread once this hook and the finalizer
    have returned; False if it cannot be."""
    global _lost
    signum = _handled_signal()
    if signum is None:
        return False
    # From another thread, a moment later: a signal sent from here would be handled at once,
    # inside this hook, and dropped again. If it still lands in a finalizer (a long one, or
    # one of many), it comes back here. A real signal, so that a system call the main thread
    # waits in is interrupted as by the first.
    timer = threading.Timer(_AGAIN_AFTER_S, _send, (signum,))
    timer.daemon = True
    with _lock:
        _lost += 1  # before the signal can be handled
        _timers[:] = [t for t in _timers if t.is_alive()]
        _timers.append(timer)
    try:
        timer.start()
    except RuntimeError:  # the interpreter is shutting down
        with _lock:
            _lost -= 1
        return False
    return True


def _send(signum: int) -> None:
    if callable(signal.getsignal(signum)):  # still handled: never the default (ending)
        signal.pthread_kill(threading.main_thread().ident or 0, signum)


def _handled_signal() -> int | None:
    """SIGINT, or SIGTERM where SIGINT is ignored (a process started in the background),
    whichever has a Python handler; None if neither has."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        if callable(signal.getsignal(signum)):
            return signum
    return None


def take_lost() -> bool:
    """Whether an interrupt was dropped by a finalizer and delivered again since the last
    call (each such delivery is told once)."""
    global _lost
    with _lock:
        if _lost:
            _lost -= 1
            return True
        return False
