"""Loading a database dump from an artifact into a restore tool (sources layer): shared by the
PostgreSQL and MySQL sources, so that both fail alike."""

from __future__ import annotations

from collections.abc import Callable

from stackvault.errors import SourceError
from stackvault.sources.contract import ArtifactReader
from stackvault.sources.tools.runner import InputStream, pump


def load_dump(
    reader: ArtifactReader,
    path: str,
    stream: InputStream,
    *,
    db: str,
    address: str,
    translate: Callable[[SourceError], SourceError],
    edit: Callable[[memoryview], bytes] | None = None,
    finish: Callable[[], bytes] | None = None,
) -> int:
    """Feed the dump at ``path`` to ``stream`` (a running ``pg_restore`` / ``mariadb``) and
    finish it; the bytes read. A failing tool becomes "restoring database DB ADDRESS failed, so
    it is incomplete: …" (its error passed through ``translate``); fewer bytes than the
    artifact records is an error too."""
    size = reader.entry(path).size
    try:
        sent = pump(reader.open(path), stream, edit, finish)
    except SourceError as exc:
        err = translate(exc)
        raise SourceError(
            f"restoring database {db} {address} failed, so it is incomplete: {err.message}",
            hint=err.hint or "fix the cause and restore again with --overwrite",
        ) from exc
    if sent != size:
        raise SourceError(
            f"the dump of database {db} in the artifact is {size} bytes but {sent} were "
            "read; the restored database may be incomplete",
            hint="check the repository (stackvault check) and restore again with --overwrite",
        )
    return sent
