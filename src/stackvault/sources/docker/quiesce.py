"""Stopping containers for a cold capture, with a guaranteed start afterwards (sources layer).

``with Quiesce(client, containers, timeout=60, grace=30, notice=...) as q: capture()`` stops
each container as ``docker stop -t TIMEOUT`` does (the container's stop signal, then SIGKILL
after ``timeout`` seconds) and starts every container it stopped again when the block ends —
after success, after a failure, after ``KeyboardInterrupt`` (the CLI turns SIGTERM into one)
and after `Interrupted`.

**Levels.** ``containers`` are stopped one after another, in their order. Given ``levels``
instead (lists of containers, e.g. a stack's services by dependency depth, dependents first),
the containers of one level are stopped in parallel and the next level only once the whole
level is stopped; they are started again level by level in reverse order, each level in
parallel. So a level of containers that ignore their stop signal costs one stop timeout, not
one per container.

**Pause.** The containers named in ``pause`` are frozen (``docker pause``: the cgroup
freezer, no signal, nothing ends) instead of stopped, at their place among the levels, and
thawed (``docker unpause``) instead of started, with the same guarantees. What a frozen
container had written stays where it was (its files as after a crash: fit for stores that
survive one); it cannot be ``exec``'d into meanwhile. A container paused already by someone
else is left as it is (and not unpaused).

**Timeouts.** With ``own_timeouts`` a container that has its own stop timeout
(``Config.StopTimeout``: Compose's ``stop_grace_period``, ``docker run --stop-timeout``) is
given that one; the others get ``timeout``. A container whose stop took its whole timeout and
that ended with exit code 137 (SIGKILL) without being OOM-killed is recorded as *killed* (and
said in a notice).

**Unstoppable containers.** Every Engine API call here has a deadline: a stop may take
``timeout + grace`` seconds, anything else ``grace`` seconds. A container that is still not
stopped by then (a wedged runtime, a process in uninterruptible sleep that even SIGKILL cannot
end, an engine that does not answer) aborts the capture with a `SourceError` naming it, and the
containers stopped before it are started again. So is a container that runs again right after
its stop (someone else started it).

**Starting early.** `start` starts chosen containers again inside the block (a stack backup
starts each service as soon as its own data is read); the end of the block starts the others.

**Starting again** tries every container, in reverse order (reverse level order, each level
in parallel), even when some fail or a second Ctrl-C arrives; all failures are reported
together. A container whose stop was interrupted
is first given until its stop deadline to finish stopping (the engine goes on stopping it
after the client gave up), so that it is not left stopped. When starting fails after a
successful capture, the capture fails (`SourceError`: the service is down and someone must
know); after a failed capture the original error carries the start failures too; after an
interrupt they are sent as a notice and added as a note to the exception, which goes on.

`record` lists, per container, its level, its mode, the stop timeout it was given, how long it
took to stop (or pause), whether it was killed, and how long it was down (from the stop
request until it was running again), for the artifact's metadata and the stack manifest.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from stackvault.errors import Interrupted, SourceError, StackvaultError

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.api.client import APIClient
    from docker.models.containers import Container

DEFAULT_TIMEOUT = 60.0
DEFAULT_GRACE = 30.0
_POLL = 0.2
PAUSE_TRIES = 3
PAUSE_RETRY_S = 0.5


def _clean(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, str) and explanation:
        return explanation[:200]
    text = str(exc).strip()
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return "the engine did not answer in time"
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _timed_out(exc: BaseException) -> bool:
    import requests.exceptions

    if isinstance(exc, requests.exceptions.Timeout):
        return True
    return "timed out" in str(exc).lower()


def _is_interrupt(exc: BaseException) -> bool:
    return not isinstance(exc, Exception) or isinstance(exc, Interrupted)


KILLED_EXIT_CODE = 137
"""128 + SIGKILL: what a container that did not end on its stop signal exits with."""


@dataclass
class _Target:
    id: str
    name: str
    level: int
    order: int
    """Its place among every container given, for `Quiesce.record`."""
    timeout: float
    """The stop timeout it is given (seconds; 0 when paused)."""
    mode: str = "stop"
    """``stop`` or ``pause``."""
    requested: float = 0.0
    stopped: float | None = None
    started: float | None = None
    killed: bool = False
    pending: bool = True
    """The stop was requested but not confirmed (interrupted, timed out, failed)."""


@contextmanager
def _deadline(api: APIClient, seconds: float) -> Iterator[None]:
    """Engine calls inside the block time out after ``seconds`` (``stop`` adds its own stop
    timeout, as docker-py does)."""
    saved = api.timeout
    api.timeout = max(1, math.ceil(seconds))
    try:
        yield
    finally:
        api.timeout = saved


class StopRecord(TypedDict):
    """One container a `Quiesce` stopped or paused: its name, short id, level (0 for the first
    stopped), ``mode`` (``stop`` or ``pause``), the stop timeout it was given, the seconds it
    took to stop (or pause) and whether it was killed after that timeout, and the seconds it
    was down (each once known)."""

    container: str
    id: str
    level: int
    mode: str
    timeout_s: float
    stop_s: NotRequired[float]
    killed: NotRequired[bool]
    downtime_s: NotRequired[float]


def _in_parallel(
    work: Callable[[_Target], None], targets: Sequence[_Target]
) -> tuple[list[tuple[_Target, Exception]], KeyboardInterrupt | None]:
    """``work(target)`` for every target at once (one thread each; a single one in this
    thread); the failures, and a Ctrl-C that arrived meanwhile. Every call is waited for,
    even after a Ctrl-C: each is bounded by its own deadline, and what it changed must be known
    before anything is started again."""
    failures: list[tuple[_Target, Exception]] = []
    if len(targets) == 1:
        try:
            work(targets[0])
        except Exception as exc:
            failures.append((targets[0], exc))
        return failures, None

    def run(target: _Target) -> None:
        try:
            work(target)
        except Exception as exc:
            failures.append((target, exc))

    threads = [
        threading.Thread(target=run, args=(t,), name=f"quiesce-{t.name}", daemon=True)
        for t in targets
    ]
    for thread in threads:
        thread.start()
    interrupted: KeyboardInterrupt | None = None
    for thread in threads:
        while thread.is_alive():
            try:
                thread.join()
            except KeyboardInterrupt as exc:
                interrupted = exc
    failures.sort(key=lambda f: f[0].order)
    return failures, interrupted


class Quiesce:
    """Stops ``containers`` on entry and starts them again on exit (see the module doc)."""

    def __init__(
        self,
        client: DockerClient,
        containers: Sequence[Container] = (),
        *,
        levels: Sequence[Sequence[Container]] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        own_timeouts: bool = False,
        pause: Collection[str] = (),
        grace: float = DEFAULT_GRACE,
        notice: Callable[[str], None] = lambda _m: None,
        action: str = "capture",
    ) -> None:
        self.api = client.api
        self.action = action
        """What the containers are stopped for, in messages: ``capture`` or ``restore``."""
        self.levels: list[list[Container]] = (
            [list(level) for level in levels if level]
            if levels is not None
            else [[c] for c in containers]
        )
        self.timeout = timeout
        self.own_timeouts = own_timeouts
        self.pause = frozenset(pause)
        """Names of the containers to pause instead of stopping them."""
        self.grace = grace
        self.notice = notice
        self._targets: list[_Target] = []
        self._lock = threading.Lock()

    # --- stop -------------------------------------------------------------------------------

    def __enter__(self) -> Quiesce:
        try:
            with _deadline(self.api, self.grace):  # the stops add their own timeouts
                order = 0
                for number, level in enumerate(self.levels):
                    targets = []
                    for container in level:
                        name = str(container.name)
                        mode = "pause" if name in self.pause else "stop"
                        targets.append(
                            _Target(str(container.id), name, number, order, 0.0, mode=mode)
                        )
                        order += 1
                    failures, interrupted = _in_parallel(self._stop, targets)
                    if interrupted is not None:
                        raise interrupted
                    for target, exc in failures[1:]:
                        self.notice(f"container {target.name} could not be stopped either: {exc}")
                    if failures:
                        raise failures[0][1]
        except BaseException as exc:
            self._finish(exc, *self._start_all())
            raise
        return self

    def _inspect(self, cid: str) -> dict[str, Any]:
        """The container's inspect data (the caller set the engine's deadline)."""
        data: dict[str, Any] = self.api.inspect_container(cid)
        return data

    def _state(self, cid: str) -> dict[str, Any]:
        state: dict[str, Any] = self._inspect(cid).get("State") or {}
        return state

    def _stop_timeout(self, data: dict[str, Any]) -> float:
        """The container's own stop timeout when it has one and ``own_timeouts``, else ours."""
        own = (data.get("Config") or {}).get("StopTimeout")
        if self.own_timeouts and isinstance(own, int) and own >= 0:
            return float(own)
        return self.timeout

    def _stop(self, target: _Target) -> None:
        import docker.errors

        name, cid = target.name, target.id
        try:
            data = self._inspect(cid)
        except docker.errors.NotFound:
            self.notice(f"container {name} is gone; it is not stopped")
            return
        except Exception as exc:
            raise SourceError(
                f"container {name} could not be inspected before stopping it ({_clean(exc)}); "
                f"the {self.action} was aborted"
            ) from exc
        state: dict[str, Any] = data.get("State") or {}
        if not (state.get("Running") or state.get("Restarting")):
            self.notice(f"container {name} is not running any more; it is not stopped")
            return
        if target.mode == "pause":
            self._pause(target, state)
            return
        target.timeout = self._stop_timeout(data)
        target.requested = time.monotonic()
        with self._lock:
            self._targets.append(target)
        self.notice(f"stopping container {name} for the {self.action}")
        try:
            self.api.stop(cid, timeout=max(0, math.ceil(target.timeout)))
        except docker.errors.NotFound:
            with self._lock:
                self._targets.remove(target)
            self.notice(f"container {name} disappeared while it was being stopped")
            return
        except Exception as exc:
            if _timed_out(exc):
                raise SourceError(
                    f"container {name} did not stop within {target.timeout:g} s plus "
                    f"{self.grace:g} s for the engine; the {self.action} was aborted",
                    hint=f"check it with `docker inspect {name}` (a wedged runtime or a process "
                    "that cannot be killed); containers stopped before it were started again",
                ) from exc
            raise SourceError(
                f"container {name} could not be stopped ({_clean(exc)}); "
                f"the {self.action} was aborted",
                hint="containers stopped before it were started again",
            ) from exc
        stopped = time.monotonic()
        state = self._state(cid)
        if state.get("Running") or state.get("Restarting"):
            raise SourceError(
                f"container {name} runs again right after it was stopped; "
                f"the {self.action} was aborted",
                hint="another client or an orchestrator restarts it: pause that during the backup",
            )
        target.pending = False
        target.stopped = stopped
        # SIGKILL after the timeout: exit 137, not by the OOM killer, and the whole timeout
        # spent (a stop signal of SIGKILL ends it at once with 137 as well).
        target.killed = (
            state.get("ExitCode") == KILLED_EXIT_CODE
            and not state.get("OOMKilled")
            and stopped - target.requested >= target.timeout - 0.5
        )
        if target.killed:
            self.notice(
                f"container {name} did not end within {target.timeout:g} s of its stop signal "
                "and was killed"
            )

    def _pause(self, target: _Target, state: dict[str, Any]) -> None:
        """Freeze a running container (``docker pause``) and check that it is paused."""
        name, cid = target.name, target.id
        if state.get("Paused"):
            self.notice(f"container {name} is paused already; it is left as it is")
            return
        target.requested = time.monotonic()
        with self._lock:
            self._targets.append(target)
        self.notice(f"pausing container {name} for the {self.action}")
        try:
            self._pause_call(cid, name)
        except Exception as exc:
            raise SourceError(
                f"container {name} could not be paused ({_clean(exc)}); "
                f"the {self.action} was aborted",
                hint="containers stopped or paused before it were started again",
            ) from exc
        paused = time.monotonic()
        if not self._state(cid).get("Paused"):
            raise SourceError(
                f"container {name} is not paused right after it was paused; "
                f"the {self.action} was aborted",
                hint="another client unpauses it: pause that during the backup",
            )
        target.pending = False
        target.stopped = paused

    def _pause_call(self, cid: str, name: str) -> None:
        """``docker pause``, tried again (`PAUSE_TRIES` in all, `PAUSE_RETRY_S` apart) when the
        kernel's freezer could not freeze every process of the container in time ("unable to
        freeze": a process was in an uninterruptible wait, frequent on a loaded host); any
        other failure is raised at once."""
        for attempt in range(1, PAUSE_TRIES + 1):
            try:
                self.api.pause(cid)
                return
            except Exception as exc:
                if attempt == PAUSE_TRIES or "unable to freeze" not in str(exc):
                    raise
                self.notice(f"container {name} could not be frozen yet ({_clean(exc)}); again")
                time.sleep(PAUSE_RETRY_S * attempt)

    # --- start ------------------------------------------------------------------------------

    def _wait_stopped(self, target: _Target) -> None:
        """For a stop whose outcome is unknown: wait (until its deadline) for it to end."""
        deadline = target.requested + target.timeout + self.grace
        while time.monotonic() < deadline:
            state = self._state(target.id)
            if not (state.get("Running") or state.get("Restarting")):
                return
            time.sleep(_POLL)

    def _start_one(self, target: _Target) -> None:
        if target.mode == "pause":
            self._unpause(target)
            return
        if target.pending:
            self._wait_stopped(target)
        self.api.start(target.id)
        started = time.monotonic()
        state = self._state(target.id)
        if not (state.get("Running") or state.get("Restarting")):
            raise SourceError(
                f"it exited right after its start (exit code {state.get('ExitCode')})"
            )
        target.started = started
        self.notice(f"container {target.name} is running again")

    def _unpause(self, target: _Target) -> None:
        """Thaw a container this paused (one whose pause was cut short may not be paused)."""
        if not target.pending or self._state(target.id).get("Paused"):
            self.api.unpause(target.id)
        unpaused = time.monotonic()
        state = self._state(target.id)
        if state.get("Paused") or not state.get("Running"):
            raise SourceError(f"it is {state.get('Status')} right after its unpause")
        target.started = unpaused
        self.notice(f"container {target.name} runs again (unpaused)")

    def start(self, names: Collection[str]) -> list[str]:
        """Start again now, in parallel, the containers among ``names`` that this stopped or
        paused and that do not run yet (a caller whose own data of them is read; it keeps
        dependencies before their dependents). Only inside the block, never at the same time
        as its end. The failures, as messages: those containers are tried again at the end of
        the block, which reports them if they still fail."""
        with self._lock:
            targets = [
                t for t in self._targets if t.name in names and t.started is None and not t.pending
            ]
        if not targets:
            return []
        with _deadline(self.api, self.grace):
            failures, _ = _in_parallel(self._start_one, targets)
        for target, exc in failures:
            self.notice(f"container {target.name} could not be started again yet: {_clean(exc)}")
        return [f"{t.name} ({_clean(exc)})" for t, exc in failures]

    def _start_all(self) -> tuple[list[str], KeyboardInterrupt | None]:
        """Start every stopped container again: levels in reverse order, each in parallel."""
        errors: list[str] = []
        interrupted: KeyboardInterrupt | None = None
        with self._lock:
            targets = [t for t in self._targets if t.started is None]
        with _deadline(self.api, self.grace):
            for number in sorted({t.level for t in targets}, reverse=True):
                level = sorted((t for t in targets if t.level == number), key=lambda t: -t.order)
                try:
                    failures, stopped_by = _in_parallel(self._start_one, level)
                except KeyboardInterrupt as exc:  # only a single one runs in this thread
                    failures, stopped_by = [], exc
                    errors.append(f"{level[0].name} (interrupted while starting it)")
                if stopped_by is not None:
                    interrupted = stopped_by
                errors += [f"{t.name} ({_clean(exc)})" for t, exc in failures]
        return errors, interrupted

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(exc, *self._start_all())

    def _finish(
        self,
        original: BaseException | None,
        errors: list[str],
        interrupted: KeyboardInterrupt | None,
    ) -> None:
        """Raise what the caller must see after the containers were started again."""
        if not errors:
            if interrupted is not None and original is None:
                raise interrupted
            return
        failed = [e.split(" ", 1)[0] for e in errors]
        paused = {t.name for t in self._targets if t.mode == "pause"}
        to_start = " ".join(n for n in failed if n not in paused)
        to_unpause = " ".join(n for n in failed if n in paused)
        message = f"container(s) could not be started again: {'; '.join(errors)}"
        hint = "; ".join(
            f"{what} them by hand: docker {what} {names}"
            for what, names in (("start", to_start), ("unpause", to_unpause))
            if names
        )
        if original is not None and _is_interrupt(original):
            self.notice(f"{message}; {hint}")
            original.add_note(f"{message}; {hint}")
            return
        if interrupted is not None:
            self.notice(f"{message}; {hint}")
            interrupted.add_note(f"{message}; {hint}")
            raise interrupted
        if original is None:
            raise SourceError(message, hint=hint)
        first = original.message if isinstance(original, StackvaultError) else str(original)
        raise SourceError(f"{first}; also, {message}", hint=hint) from original

    # --- record -----------------------------------------------------------------------------

    def record(self) -> list[StopRecord]:
        """Per stopped container, in the order given: name, short id, level, stop timeout,
        seconds to stop, killed or not, seconds down."""
        out: list[StopRecord] = []
        with self._lock:
            targets = sorted(self._targets, key=lambda t: t.order)
        for t in targets:
            item: StopRecord = {
                "container": t.name,
                "id": t.id[:12],
                "level": t.level,
                "mode": t.mode,
                "timeout_s": t.timeout,
            }
            if t.stopped is not None:
                item["stop_s"] = round(t.stopped - t.requested, 3)
                item["killed"] = t.killed
            if t.started is not None:
                item["downtime_s"] = round(t.started - t.requested, 3)
            out.append(item)
        return out
