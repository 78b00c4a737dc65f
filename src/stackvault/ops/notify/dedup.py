"""When a notification is sent (ops layer): one on the first failure, reminders, one on
recovery — decided from the job's past runs, so a restart changes nothing.

`decide` is pure. The past comes from the run records of the job's repository (what every
host running the job wrote) merged with the outcomes this host remembers (`NotifyState`):
a run whose record could not be written (the repository is down: the usual reason runs
fail) is still known here. Interrupted runs are ignored: they neither fail nor recover.

A run whose result is ``failed`` or ``partial`` is told of when the run before it (by start
time) ended otherwise (``first``); while the same result repeats, once more each time
another ``remind_every`` has passed since the end of the first run of the streak
(``reminder``, counting from that end, so the times do not drift with the runs). An ``ok``
run after failed or partial ones is told of once (``recovered``).

`NotifyState` keeps, per job, the last outcomes and when each deduplicated event
(``rpo-breach``, ``at-risk``) was last sent, and when the digest was; in memory, or in a
small JSON file (``notify-state.json`` in the state directory, written atomically under an
exclusive lock, so ``run`` processes of several jobs may share it). It is a cache: losing it
costs at most one repeated message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, cast

from stackvault.records.run import RUN_RESULTS, RunRecord, RunResult, format_time

STATE_FILE = "notify-state.json"
"""The state file's name in the state directory."""
STATE_VERSION = 1
KEEP_OUTCOMES = 20
"""Outcomes remembered per job (the newest)."""

DecisionKind = Literal["first", "reminder", "recovered"]


@dataclass(frozen=True)
class Outcome:
    """How one run of a job ended (what dedup needs of its record)."""

    run_id: str
    result: RunResult
    started: datetime
    ended: datetime

    @classmethod
    def of(cls, record: RunRecord) -> Outcome:
        """The outcome of ``record``."""
        return cls(record.id, record.result, record.started, record.ended)

    def to_json(self) -> dict[str, str]:
        return {
            "id": self.run_id,
            "result": self.result,
            "started": format_time(self.started),
            "ended": format_time(self.ended),
        }

    @classmethod
    def from_json(cls, value: object) -> Outcome:
        """`ValueError` when ``value`` is not a stored outcome."""
        if not isinstance(value, dict) or value.get("result") not in RUN_RESULTS:
            raise ValueError("not an outcome")
        return cls(
            str(value["id"]),
            cast(RunResult, value["result"]),
            _time(value["started"]),
            _time(value["ended"]),
        )


@dataclass(frozen=True)
class Decision:
    """A run to tell of: ``first`` failure (or partial), ``reminder``, ``recovered``.
    ``since``: when the streak began (its first run's start); ``runs``: the runs of the
    streak (with this one for ``first``/``reminder``; the failed ones before it for
    ``recovered``)."""

    kind: DecisionKind
    since: datetime | None = None
    runs: int = 1


def decide(current: Outcome, previous: Iterable[Outcome], remind_every_s: float) -> Decision | None:
    """Whether (and how) the run ``current`` is told of, given the job's ``previous``
    outcomes (any order, duplicates and ``current`` itself allowed); None: not at all."""
    if current.result == "interrupted":
        return None
    by_id = {o.run_id: o for o in previous if o.run_id != current.run_id}
    past = sorted(
        (o for o in by_id.values() if o.result != "interrupted" and o.started <= current.started),
        key=lambda o: (o.started, o.run_id),
    )
    if current.result == "ok":
        bad = _trailing(past, lambda o: o.result != "ok")
        if not bad:
            return None
        return Decision("recovered", bad[0].started, len(bad))
    streak = _trailing(past, lambda o: o.result == current.result)
    if not streak:
        return Decision("first", current.started, 1)
    start = streak[0].ended
    step = max(float(remind_every_s), 1.0)
    before = (streak[-1].ended - start).total_seconds() // step
    now = (current.ended - start).total_seconds() // step
    if now > before:
        return Decision("reminder", streak[0].started, len(streak) + 1)
    return None


def _trailing(past: list[Outcome], keep: Callable[[Outcome], bool]) -> list[Outcome]:
    """The longest run of outcomes at the end of ``past`` for which ``keep`` holds."""
    out: list[Outcome] = []
    for outcome in reversed(past):
        if not keep(outcome):
            break
        out.append(outcome)
    return out[::-1]


@dataclass
class JobState:
    """What this host remembers of one job."""

    outcomes: list[Outcome] = field(default_factory=list)
    events: dict[str, datetime] = field(default_factory=dict)
    """Deduplicated event → when it was last sent."""


@dataclass
class StateData:
    """The state file's content."""

    jobs: dict[str, JobState] = field(default_factory=dict)
    digest: datetime | None = None
    """When the digest was last sent."""

    def to_json(self) -> dict[str, object]:
        return {
            "version": STATE_VERSION,
            "digest": format_time(self.digest) if self.digest else None,
            "jobs": {
                name: {
                    "outcomes": [o.to_json() for o in job.outcomes],
                    "events": {k: format_time(v) for k, v in job.events.items()},
                }
                for name, job in self.jobs.items()
            },
        }

    @classmethod
    def from_json(cls, value: object) -> StateData:
        """`ValueError` (or `KeyError`, `TypeError`) when ``value`` is not a state."""
        if not isinstance(value, dict) or value.get("version") != STATE_VERSION:
            raise ValueError("not a notification state of this version")
        jobs: dict[str, JobState] = {}
        for name, job in dict(value["jobs"]).items():
            jobs[str(name)] = JobState(
                [Outcome.from_json(o) for o in job["outcomes"]],
                {str(k): _time(v) for k, v in dict(job["events"]).items()},
            )
        digest = value.get("digest")
        return cls(jobs, _time(digest) if digest is not None else None)


class NotifyState:
    """The notifier's memory: in this process only (``path`` None) or in the JSON file at
    ``path`` (read at each use, so several processes see each other's updates). A file that
    cannot be read is taken as empty (`problem` says why); one that cannot be written keeps
    the memory of this process (`problem` again)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.data = StateData()
        self.problem: str | None = None

    @classmethod
    def in_dir(cls, state_dir: str | None) -> NotifyState:
        """The state of ``state_dir`` (`STATE_FILE` in it), or in memory for None."""
        return cls(os.path.join(state_dir, STATE_FILE) if state_dir else None)

    @contextlib.contextmanager
    def update(self) -> Iterator[StateData]:
        """Read the state (under an exclusive lock when it is a file), let the caller change
        it, then write it back atomically."""
        if self.path is None:
            yield self.data
            return
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            lock = open(self.path + ".lock", "a")  # noqa: SIM115 (held for the block)
        except OSError as exc:
            self.problem = f"cannot open {self.path}.lock: {exc.strerror or exc}"
            yield self.data
            return
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.data = self._read()
            yield self.data
            self._write()

    def snapshot(self) -> StateData:
        """The state as it is now (read from the file, without a lock)."""
        if self.path is not None:
            self.data = self._read()
        return self.data

    def _read(self) -> StateData:
        assert self.path is not None
        try:
            with open(self.path, encoding="utf-8") as f:
                return StateData.from_json(json.load(f))
        except FileNotFoundError:
            return StateData()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.problem = f"{self.path} cannot be read, starting afresh ({exc})"
            return StateData()

    def _write(self) -> None:
        assert self.path is not None
        tmp = f"{self.path}.tmp{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.data.to_json(), f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            self.problem = f"{self.path} cannot be written: {exc.strerror or exc}"
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def remember(data: StateData, job: str, outcome: Outcome) -> None:
    """Add ``outcome`` to ``job``'s outcomes (keeping the newest `KEEP_OUTCOMES`)."""
    state = data.jobs.setdefault(job, JobState())
    kept = {o.run_id: o for o in state.outcomes}
    kept[outcome.run_id] = outcome
    state.outcomes = sorted(kept.values(), key=lambda o: (o.started, o.run_id))[-KEEP_OUTCOMES:]


def _time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("not a time")
    when = datetime.fromisoformat(value)
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
