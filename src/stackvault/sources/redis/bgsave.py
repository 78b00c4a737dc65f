"""Waiting for an RDB save (``BGSAVE``) of a server, by its ``INFO persistence`` (sources layer)."""

from __future__ import annotations

import time
from collections.abc import Callable

from stackvault.errors import SourceError
from stackvault.sources.redis.resp import POLL


def save_counts(persistence: dict[str, str]) -> tuple[int, int]:
    """(successful saves since start or -1, time of the last one): they grow with a save."""
    return int(persistence.get("rdb_saves", "-1")), int(persistence.get("rdb_last_save_time", "0"))


def _newer(saves: tuple[int, int], previous: tuple[int, int]) -> bool:
    if saves[0] >= 0 and previous[0] >= 0:
        return saves[0] > previous[0]
    return saves[1] > previous[1]


def wait_saved(
    info: Callable[[str], dict[str, str]],
    deadline: float,
    previous: tuple[int, int] | None,
    check_interrupted: Callable[[], None] = lambda: None,
    *,
    location: str,
    timeout: float,
    container_name: str | None,
) -> tuple[int, int]:
    """Wait until no RDB save runs (and, given ``previous``, one newer than it has
    succeeded); return the save counters then. `SourceError` when that save failed or
    time ran out."""
    polls = 0
    while True:
        check_interrupted()
        persistence = info("persistence")
        saves = save_counts(persistence)
        if persistence.get("rdb_bgsave_in_progress") != "1":
            if previous is None:
                return saves
            failed = persistence.get("rdb_last_bgsave_status") == "err"
            if _newer(saves, previous) and not failed:
                return saves
            # rdb_saves counts failed saves too; without it (Redis < 7) only a success
            # moves LASTSAVE on, and a scheduled save starts once an AOF rewrite ends
            if failed and (
                _newer(saves, previous)
                or (persistence.get("aof_rewrite_in_progress", "0") == "0" and polls >= 3)
            ):
                raise SourceError(
                    f"BGSAVE of {location} failed (rdb_last_bgsave_status:err)",
                    hint="see the server's log"
                    + (f" (docker logs {container_name})" if container_name else "")
                    + ": often its data directory is not writable or the disk is full",
                )
        if time.monotonic() > deadline:
            raise SourceError(
                f"BGSAVE of {location} did not finish within {timeout:.0f} s",
                hint="raise ?timeout= for a large dataset",
            )
        polls += 1
        time.sleep(POLL)
