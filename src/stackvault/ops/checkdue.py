"""When a job's repository is checked, and which packs a partial check reads (ops layer).

**Due.** A repository is checked by a run when the newest ``check`` step that the job's run
records in *that* repository hold for it (`stackvault.ops.history.last_check`) started
``check.every`` or longer ago, when there is none, or when it did not finish (``interrupted``
or ``skipped``). A check that ran and found damage counts as done: its record says so.

**Rotation.** With ``read_data_subset`` written as a fraction ``n/t`` (``1/7``), the packs are
split into ``t`` slices by their id (slice of a pack = the first 8 bytes of its id, big-endian,
modulo ``t``; a pack never changes slice), and time into periods of ``check.every`` counted
from the Unix epoch (``period = seconds since epoch // every``; for ``every: 1d`` the days
since 1970-01-01 UTC). A check in period ``p`` reads the ``n`` slices ``(p·n + i) mod t``,
``i = 0 … n-1``. When the checks run once per period, every pack is read once in ``t/n``
periods (``1/7`` with ``every: 1d``: each pack once a week). A share written as a percentage
(``10%``) reads a random sample of that share instead, as ``check --read-data-subset``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from stackvault.config.model import DataSubset
from stackvault.ops.history import LastCheck

T = TypeVar("T")

_FRACTION = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def check_due(last: LastCheck | None, every_s: int, now: datetime) -> bool:
    """True if a check is due (module docstring): none yet, an unfinished one, or the last
    one started at least ``every_s`` seconds before ``now``."""
    if last is None or last.result in ("interrupted", "skipped"):
        return True
    return (now - last.started).total_seconds() >= every_s


@dataclass(frozen=True)
class DataSlices:
    """The slices of the packs one check reads: ``chosen`` of ``total`` (period ``period``)."""

    chosen: tuple[int, ...]
    total: int
    period: int

    def holds(self, pack_id: bytes) -> bool:
        """True if the pack ``pack_id`` is in one of the chosen slices."""
        return int.from_bytes(pack_id[:8], "big") % self.total in self.chosen

    @property
    def text(self) -> str:
        """``slice 3/7`` or ``slices 2,3/7``, for the report."""
        word = "slice" if len(self.chosen) == 1 else "slices"
        return f"{word} {','.join(str(c + 1) for c in self.chosen)}/{self.total}"


def data_slices(subset: DataSubset, every_s: int, now: datetime) -> DataSlices | None:
    """The slices to read at ``now`` for a subset ``n/t`` (module docstring); None for a
    percentage (a random sample is read) or for ``n >= t`` (everything is read)."""
    match = _FRACTION.match(subset.text)
    if match is None:
        return None
    n, t = int(match[1]), int(match[2])
    if n >= t:
        return None
    period = int((now - _EPOCH).total_seconds()) // max(1, every_s)
    chosen = tuple(sorted({(period * n + i) % t for i in range(n)}))
    return DataSlices(chosen, t, period)
