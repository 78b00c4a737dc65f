"""Stopping containers for a cold capture, with a guaranteed start afterwards (sources layer).

``with Quiesce(client, containers, timeout=60, grace=30, notice=...) as q: capture()`` stops
each container as ``docker stop -t TIMEOUT`` does (the container's stop signal, then SIGKILL
after ``timeout`` seconds) and starts every container it stopped again when the block ends —
after success, after a failure, after ``KeyboardInterrupt`` (the CLI turns SIGTERM into one)
and after `Interrupted`.

**Unstoppable containers.** Every Engine API call here has a deadline: a stop may take
``timeout + grace`` seconds, anything else ``grace`` seconds. A container that is still not
stopped by then (a wedged runtime, a process in uninterruptible sleep that even SIGKILL cannot
end, an engine that does not answer) aborts the capture with a `SourceError` naming it, and the
containers stopped before it are started again. So is a container that runs again right after
its stop (someone else started it).

**Starting again** tries every container, in reverse order, even when some fail or a second
Ctrl-C arrives; all failures are reported together. A container whose stop was interrupted
is first given until its stop deadline to finish stopping (the engine goes on stopping it
after the client gave up), so that it is not left stopped. When starting fails after a
successful capture, the capture fails (`SourceError`: the service is down and someone must
know); after a failed capture the original error carries the start failures too; after an
interrupt they are sent as a notice and added as a note to the exception, which goes on.

`record` lists, per container, how long it took to stop and how long it was down (from the
stop request until it was running again), for the artifact's metadata.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
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


@dataclass
class _Target:
    id: str
    name: str
    requested: float = 0.0
    stopped: float | None = None
    started: float | None = None
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
    """One container a `Quiesce` stopped: its name, short id, the seconds it took to stop
    and the seconds it was down (each once known)."""

    container: str
    id: str
    stop_s: NotRequired[float]
    downtime_s: NotRequired[float]


class Quiesce:
    """Stops ``containers`` on entry and starts them again on exit (see the module doc)."""

    def __init__(
        self,
        client: DockerClient,
        containers: Sequence[Container],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        grace: float = DEFAULT_GRACE,
        notice: Callable[[str], None] = lambda _m: None,
        action: str = "capture",
    ) -> None:
        self.api = client.api
        self.action = action
        """What the containers are stopped for, in messages: ``capture`` or ``restore``."""
        self.containers = list(containers)
        self.timeout = timeout
        self.grace = grace
        self.notice = notice
        self._targets: list[_Target] = []

    # --- stop -------------------------------------------------------------------------------

    def __enter__(self) -> Quiesce:
        try:
            for container in self.containers:
                self._stop(container)
        except BaseException as exc:
            self._finish(exc, *self._start_all())
            raise
        return self

    def _state(self, cid: str) -> dict[str, Any]:
        with _deadline(self.api, self.grace):
            state: dict[str, Any] = self.api.inspect_container(cid).get("State") or {}
        return state

    def _stop(self, container: Container) -> None:
        import docker.errors

        name = str(container.name)
        cid = str(container.id)
        try:
            state = self._state(cid)
        except docker.errors.NotFound:
            self.notice(f"container {name} is gone; it is not stopped")
            return
        except Exception as exc:
            raise SourceError(
                f"container {name} could not be inspected before stopping it ({_clean(exc)}); "
                f"the {self.action} was aborted"
            ) from exc
        if not (state.get("Running") or state.get("Restarting")):
            self.notice(f"container {name} is not running any more; it is not stopped")
            return
        target = _Target(cid, name, requested=time.monotonic())
        self._targets.append(target)
        self.notice(f"stopping container {name} for the {self.action}")
        try:
            with _deadline(self.api, self.grace):
                self.api.stop(cid, timeout=max(0, math.ceil(self.timeout)))
        except docker.errors.NotFound:
            self._targets.remove(target)
            self.notice(f"container {name} disappeared while it was being stopped")
            return
        except Exception as exc:
            if _timed_out(exc):
                raise SourceError(
                    f"container {name} did not stop within {self.timeout:g} s plus "
                    f"{self.grace:g} s for the engine; the {self.action} was aborted",
                    hint=f"check it with `docker inspect {name}` (a wedged runtime or a process "
                    "that cannot be killed); containers stopped before it were started again",
                ) from exc
            raise SourceError(
                f"container {name} could not be stopped ({_clean(exc)}); "
                f"the {self.action} was aborted",
                hint="containers stopped before it were started again",
            ) from exc
        state = self._state(cid)
        if state.get("Running") or state.get("Restarting"):
            raise SourceError(
                f"container {name} runs again right after it was stopped; "
                f"the {self.action} was aborted",
                hint="another client or an orchestrator restarts it: pause that during the backup",
            )
        target.pending = False
        target.stopped = time.monotonic()

    # --- start ------------------------------------------------------------------------------

    def _wait_stopped(self, target: _Target) -> None:
        """For a stop whose outcome is unknown: wait (until its deadline) for it to end."""
        deadline = target.requested + self.timeout + self.grace
        while time.monotonic() < deadline:
            state = self._state(target.id)
            if not (state.get("Running") or state.get("Restarting")):
                return
            time.sleep(_POLL)

    def _start_one(self, target: _Target) -> None:
        if target.pending:
            self._wait_stopped(target)
        with _deadline(self.api, self.grace):
            self.api.start(target.id)
        state = self._state(target.id)
        if not (state.get("Running") or state.get("Restarting")):
            raise SourceError(
                f"it exited right after its start (exit code {state.get('ExitCode')})"
            )
        target.started = time.monotonic()

    def _start_all(self) -> tuple[list[str], KeyboardInterrupt | None]:
        errors: list[str] = []
        interrupted: KeyboardInterrupt | None = None
        for target in reversed(self._targets):
            if target.started is not None:
                continue
            try:
                self._start_one(target)
            except KeyboardInterrupt as exc:
                interrupted = exc
                errors.append(f"{target.name} (interrupted while starting it)")
            except Exception as exc:
                errors.append(f"{target.name} ({_clean(exc)})")
            else:
                self.notice(f"container {target.name} is running again")
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
        names = " ".join(e.split(" ", 1)[0] for e in errors)
        message = f"container(s) could not be started again: {'; '.join(errors)}"
        hint = f"start them by hand: docker start {names}"
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
        """Per stopped container: name, short id, seconds to stop, seconds down."""
        out: list[StopRecord] = []
        for t in self._targets:
            item: StopRecord = {"container": t.name, "id": t.id[:12]}
            if t.stopped is not None:
                item["stop_s"] = round(t.stopped - t.requested, 3)
            if t.started is not None:
                item["downtime_s"] = round(t.started - t.requested, 3)
            out.append(item)
        return out
