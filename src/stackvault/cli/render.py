"""Human-readable rendering helpers (cli layer)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

    from stackvault.records.artifact import ArtifactRecord
    from stackvault.repo.snapshot import Snapshot


def human_bytes(n: float) -> str:
    """A size for a person, in binary units: ``512 B``, ``1.50 KiB``, ``12.00 MiB``, ``3.10
    GiB`` (the one way every size the command line prints is written)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def human_time(when: datetime | str, *, utc: bool = False, seconds: bool = True) -> str:
    """A moment for a person: ``2026-12-06 07:04:11 CET``, in the local time zone (``TZ``)
    with its name, or in UTC with ``utc`` (--utc). ``when`` is a datetime (one without a zone
    is taken as UTC, as the repository stores times) or an ISO 8601 string; a string that is
    none is returned as it is. JSON output keeps ISO 8601 in UTC and never passes here."""
    from datetime import UTC, datetime

    if isinstance(when, str):
        text = when
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return text
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    shown = when.astimezone(UTC) if utc else when.astimezone()
    zone = "UTC" if utc else (shown.strftime("%Z") or shown.strftime("%z"))
    return f"{shown:%Y-%m-%d %H:%M:%S} {zone}" if seconds else f"{shown:%Y-%m-%d %H:%M} {zone}"


def snapshot_json(s: Snapshot) -> dict[str, Any]:
    doc = s.to_json()
    doc["id"] = s.id
    doc["short_id"] = s.short_id
    doc.setdefault("artifacts", [])
    return doc


ARTIFACT_PREFIX = "/.stackvault/artifacts/"


def artifact_line(record: ArtifactRecord) -> str:
    """``Artifact pg-app (postgres, postgres://...): 3 files, 12.00 MiB in 1.20 s``."""
    head = f"Artifact {record.name} ({record.kind}, {record.location})"
    if not record.complete:
        return f"{head}: FAILED: {record.error}"
    return (
        f"{head}: {record.files or 0} file(s), {human_bytes(record.bytes or 0)} "
        f"in {record.duration_s:.2f} s"
    )


def _paths_column(s: Snapshot) -> str:
    failed = {a.name for a in s.artifacts if not a.complete}
    out = []
    for p in s.paths:
        if p.startswith(ARTIFACT_PREFIX):
            name = p[len(ARTIFACT_PREFIX) :]
            out.append(f"[{name}{' FAILED' if name in failed else ''}]")
        else:
            out.append(p)
    return ", ".join(out)


def snapshot_table(snaps: list[Snapshot], *, utc: bool = False) -> str:
    """The snapshots one a line (times by `human_time`), then their count."""
    rows = [("ID", "Time", "Host", "Tags", "Paths", "Size", "Status")]
    for s in snaps:
        rows.append(
            (
                s.short_id,
                human_time(s.time, utc=utc),
                s.hostname,
                ",".join(s.tags),
                _paths_column(s),
                human_bytes(s.summary.get("bytes", 0)),
                "complete" if s.complete else "INCOMPLETE",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"{len(snaps)} snapshot(s)")
    return "\n".join(lines)
