"""When each service a strict cut stopped may run again: as soon as its own data is read (stack
layer).

A stopped (or frozen) service's **own data** is what it can write while it runs: the sources of
its named volumes and containers (``SourcePlan.service``, or a volume it mounts) and the
backed-up paths that overlap a directory it bind-mounts writable. Everything else a strict cut
reads that no stopped service owns - the databases' dumps, Redis - is the **gate**: the writers
reach those over the network, so none of them may run again before every gate source is read
(a dump is one snapshot taken while every writer is down). So the capture reads the gate
first, then the stopped services' sources in the order they start again (dependencies first),
then the paths; `EarlyRestarts` starts a service again once the gate and its own data are read
and every stopped service it depends on runs again. Whatever it did not start, the end of the
cut starts (`stackvault.sources.docker.quiesce.Quiesce`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass

from stackvault.records.plan import Plan, SourcePlan
from stackvault.stack.compose import Project

VOLUME_SCHEME = "docker-volume://"


@dataclass(frozen=True)
class CutData:
    """What a strict cut reads, by whom it may be written."""

    gate: frozenset[str]
    """Source names no stopped service owns: read before any service runs again."""
    owned: dict[str, frozenset[str]]
    """Per stopped service: the source names and backed-up paths holding its own data."""
    depends_on: dict[str, frozenset[str]]
    """Per stopped service: the stopped services it depends on (started again before it)."""


def _overlap(a: str, b: str) -> bool:
    """Whether one of two absolute paths is the other or below it."""
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def _volume(source: SourcePlan) -> str | None:
    if not source.url.startswith(VOLUME_SCHEME):
        return None
    return source.url[len(VOLUME_SCHEME) :].split("?", 1)[0]


def cut_data(plan: Plan, project: Project, stopped: Collection[str], paths: list[str]) -> CutData:
    """The `CutData` of a cut that stops ``stopped`` and walks ``paths`` (normalised, as the
    backup walks them)."""
    owned: dict[str, set[str]] = {name: set() for name in stopped}
    claimed: set[str] = set()
    for name in stopped:
        live = project.services.get(name)
        mounts = [m for m in (live.mounts if live else []) if not m.read_only]
        binds = [m.source for m in mounts if m.type == "bind"]
        volumes = {m.source for m in mounts if m.type == "volume"}
        for src in plan.sources:
            if src.service == name or _volume(src) in volumes:
                owned[name].add(src.name)
                claimed.add(src.name)
        for path in paths:
            mine = any(_overlap(path, b) for b in binds) or any(
                p.service == name and _overlap(path, p.path) for p in plan.paths
            )
            if mine:
                owned[name].add(path)
    stopped_set = set(stopped)
    return CutData(
        gate=frozenset(s.name for s in plan.sources if s.name not in claimed),
        owned={name: frozenset(names) for name, names in owned.items()},
        depends_on={
            name: frozenset(d for d in plan.services[name].depends_on if d in stopped_set)
            for name in stopped
            if name in plan.services
        },
    )


def capture_order(sources: list[SourcePlan], data: CutData, start_order: list[str]) -> list[str]:
    """The names of ``sources`` in the order a strict cut reads them: the gate first (as
    given), then each stopped service's own, in ``start_order`` (the order they start
    again)."""
    rank = {name: i for i, name in enumerate(start_order)}
    first = [s.name for s in sources if s.name in data.gate]

    def owner_rank(name: str) -> int:
        return min((rank.get(svc, len(rank)) for svc, own in data.owned.items() if name in own))

    rest = sorted((s.name for s in sources if s.name not in data.gate), key=owner_rank)
    return first + rest


class EarlyRestarts:
    """Starts each stopped service again as soon as it may (see the module docstring), on a
    thread of its own between `begin` and `end`. ``start(services)`` starts them and returns
    those that failed (left to the end of the cut); ``captured`` is called, from any thread,
    with each source name and path once it is read."""

    def __init__(
        self, data: CutData, start: Callable[[list[str]], set[str]], *, enabled: bool = True
    ) -> None:
        self.data = data
        self._start = start
        self._enabled = enabled
        self._read: set[str] = set()
        self.started: set[str] = set()
        """The services started again early."""
        self._done: set[str] = set()
        self._ending = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def captured(self, name: str) -> None:
        with self._cond:
            self._read.add(name)
            self._cond.notify_all()

    def _ready(self) -> list[str]:
        if not self.data.gate <= self._read:
            return []
        return sorted(
            name
            for name, own in self.data.owned.items()
            if name not in self._done
            and own <= self._read
            and self.data.depends_on.get(name, frozenset()) <= self.started
        )

    def _run(self) -> None:
        while True:
            with self._cond:
                ready = self._ready()
                while not self._ending and not ready:
                    self._cond.wait()
                    ready = self._ready()
                if self._ending:
                    return
                self._done.update(ready)
            failed = self._start(ready)
            with self._cond:
                self.started.update(set(ready) - failed)
                self._cond.notify_all()

    def begin(self) -> None:
        """Every service to start is stopped: start them as they become ready."""
        if self._enabled and self.data.owned:
            self._thread = threading.Thread(target=self._run, name="early-restarts", daemon=True)
            self._thread.start()

    def end(self) -> bool:
        """Start no more; wait for the starts under way (each bounded by the engine's
        deadlines). Whether a Ctrl-C arrived meanwhile (it was held back)."""
        with self._cond:
            self._ending = True
            self._cond.notify_all()
        interrupted = False
        thread, self._thread = self._thread, None
        while thread is not None and thread.is_alive():
            try:
                thread.join()
            except KeyboardInterrupt:
                interrupted = True
        return interrupted
