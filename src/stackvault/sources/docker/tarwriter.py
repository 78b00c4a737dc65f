"""Stored trees → tar streams for the Docker Engine API: writing them (sources layer).

The engine unpacks a tar stream into a container (``PUT /containers/ID/archive``).
`tree_entries` picks and checks the entries of a stored tree (nothing unsafe is written);
`tar_stream` produces their tar stream for ``put_archive``: a generator of blocks, so that files
of any size go through one buffer, each file's content checked against its recorded size and
SHA-256 as it is read. The hard links `stackvault.sources.docker.tarreader.read_tree` recorded
become tar hard links again where both files are restored with the same content.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal

from stackvault.errors import RestoreRefused, SourceError
from stackvault.sources.contract import ArtifactEntry, ArtifactReader, EntryMeta
from stackvault.sources.docker.tarreader import BLOCK, XATTR_PREFIX

_CHUNK = 1 << 20
"""How much of a file's content is read at a time."""


def tree_entries(reader: ArtifactReader, prefix: str) -> list[ArtifactEntry]:
    """The entries of ``reader`` at and below ``prefix`` (the tree's root first), checked:
    `RestoreRefused` for a path that is absolute, has an empty, ``.`` or ``..`` part, or for a
    tree without its root directory. Nothing is written before this passed."""
    out: list[ArtifactEntry] = []
    for entry in reader.entries():
        path = entry.path
        if path.startswith("/") or any(p in ("", ".", "..") for p in path.split("/")):
            raise RestoreRefused(
                f"artifact {reader.name!r} holds the unsafe path {path!r}; nothing was restored",
                hint="the repository may have been tampered with: run `stackvault check`",
            )
        if path == prefix or path.startswith(prefix + "/"):
            out.append(entry)
    roots = [e for e in out if e.path == prefix]
    if not roots or roots[0].kind != "dir":
        raise SourceError(
            f"artifact {reader.name!r} has no directory {prefix!r}; is it the right artifact?"
        )
    out.sort(key=lambda e: (e.path != prefix, e.path.split("/")))
    return out


def _header(name: str, kind: bytes, meta: EntryMeta, *, size: int = 0, link: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = meta.mode & 0o7777
    info.uid = meta.uid
    info.gid = meta.gid
    seconds, rest = divmod(meta.mtime_ns, 1_000_000_000)
    info.mtime = seconds if rest == 0 else float(Decimal(meta.mtime_ns) / 1_000_000_000)
    info.size = size
    info.linkname = link
    info.uname = info.gname = ""
    if meta.xattrs:
        info.pax_headers = {
            XATTR_PREFIX + key: value.decode("utf-8", "surrogateescape")
            for key, value in meta.xattrs
        }
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def tar_stream(
    reader: ArtifactReader,
    entries: list[ArtifactEntry],
    *,
    prefix: str,
    root: str,
    hardlinks: Mapping[str, str],
    check_interrupted: Callable[[], None] | None = None,
) -> Iterator[bytes]:
    """The tar stream of the tree ``entries`` (from `tree_entries`), named ``root/…``, for
    ``put_archive`` at ``/``. File contents are read from ``reader`` in 1 MiB blocks and checked
    against the entry's size and SHA-256 (`SourceError` if they differ, which also aborts the
    upload). ``hardlinks`` (relative path → first path) become tar hard links where the first
    path was written with the same content."""
    anchors: dict[str, tuple[str, str, int]] = {}  # group -> (tar name, sha256, size)
    groups = set(hardlinks.values())
    for entry in entries:
        if check_interrupted is not None:
            check_interrupted()
        rel = "" if entry.path == prefix else entry.path[len(prefix) + 1 :]
        name = root if rel == "" else f"{root}/{rel}"
        if entry.kind == "dir":
            yield _header(name, tarfile.DIRTYPE, entry.meta)
        elif entry.kind == "symlink":
            yield _header(name, tarfile.SYMTYPE, entry.meta, link=entry.target)
        else:
            group = hardlinks.get(rel, rel)
            anchor = anchors.get(group)
            if anchor is not None and anchor[1:] == (entry.sha256, entry.size):
                yield _header(name, tarfile.LNKTYPE, entry.meta, link=anchor[0])
                continue
            yield _header(name, tarfile.REGTYPE, entry.meta, size=entry.size)
            yield from _content(reader, entry)
            pad = -entry.size % BLOCK
            if pad:
                yield bytes(pad)
            if group != rel or rel in groups:
                anchors.setdefault(group, (name, entry.sha256, entry.size))
    yield bytes(2 * BLOCK)


def _content(reader: ArtifactReader, entry: ArtifactEntry) -> Iterator[bytes]:
    stream = reader.open(entry.path)
    sha = hashlib.sha256()
    n = 0
    while True:
        block = stream.read(_CHUNK)
        if not block:
            break
        n += len(block)
        if n > entry.size:
            break
        sha.update(block)
        yield block
    if n != entry.size or (entry.sha256 and sha.hexdigest() != entry.sha256):
        what = (
            f"{n if n <= entry.size else 'more than'} bytes, {entry.size} recorded"
            if n != entry.size
            else "another SHA-256 than recorded"
        )
        raise SourceError(
            f"{entry.path!r} of artifact {reader.name!r} read back with {what}; the restore "
            "was aborted",
            hint="run `stackvault check --read-data`",
        )
