"""Tar streams of the Docker Engine API → artifact sinks: reading them (sources layer).

The engine hands out a directory as a tar stream (``GET /containers/ID/archive?path=P``, what
``docker cp`` uses). `read_tree` turns such a stream into artifact entries without a temporary
copy: it parses the stream with `tarfile` in streaming mode (``r|``) and gives each member to
the sink as it arrives: directories, regular files (the member's own data stream), symlinks
(stored as they are, never followed) and hard links, each with its mode (permission bits incl.
setuid/setgid/sticky), uid, gid and mtime; extended attributes the engine sends
(``SCHILY.xattr.*``) are kept. Fifos, sockets and devices are skipped and listed. Without a
sink it only hashes (`Source.probe`). `count_entries` counts a stream's entries. Writing a
stored tree back as a tar stream is `stackvault.sources.docker.tarwriter`.

**Tree layout.** The stream's top-level member is the directory itself (its basename): its
own metadata becomes the artifact directory ``prefix`` (e.g. ``data``), so the ownership and
mode of a volume's root — which databases check — are restored too. Everything below it keeps
its relative path below ``prefix``.

**Completeness.** A member shorter than its header, a header that is not one, and a stream
that ends without the two zero blocks that close an archive all raise `SourceError`:
`tarfile` silently treats a cut at a member boundary or a damaged header as the end, so the
end is checked here (`_ChunkReader.verify_end`). The engine itself writes a cut-off archive
when a file shrinks while it is read (hot capture of a busy volume): that fails too.

**Facts** of a tree (`TreeFacts.as_dict`), relative to its root::

    {"root": {"mode": "0750", "uid": 999, "gid": 999}, "files": N, "dirs": N,
     "symlinks": N, "hardlinks": N, "bytes": B, "sha256": {"path": "hex", ...}}

``files`` counts every regular file path (a hard-linked file once per name, ``hardlinks``
counts the extra names), ``bytes`` sums their sizes, ``dirs`` excludes the root. The per-file
digests cost about (path length + 70) bytes each in the snapshot record: fine for the
thousands of files of a database or application volume. Above `LISTED_FILES` files the dict is
replaced by ``"sha256_tree"``, one SHA-256 over the sorted ``path NUL digest LF`` lines, so the
record stays small and a difference is still detected (but not located).

Hard links: `ArtifactReader` entries do not say which files were links of each other, so the
links are also returned by `read_tree` (``{path: first path}``) for the source to keep in its
metadata, and the writer turns them back into tar hard links.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import IO, Any, NotRequired, TypedDict, cast

from stackvault.errors import SourceChanged, SourceError
from stackvault.sources.contract import ArtifactSink, EntryMeta

BLOCK = 512
LISTED_FILES = 20_000
"""Above this many files, the facts hold one digest over all files instead of one per file."""
SKIPPED_LISTED = 100
_CHUNK = 1 << 20
_TAIL = 64 * 1024
XATTR_PREFIX = "SCHILY.xattr."
"""The PAX header prefix of extended attributes, as the engine writes them."""


def _clean(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterable of byte chunks (the engine's archive response).

    Failures of the underlying connection become `SourceError` naming ``what``. The reader
    counts what it delivered and keeps the last `_TAIL` bytes so that the archive's end can be
    verified (`verify_end`)."""

    def __init__(self, chunks: Iterable[bytes], what: str) -> None:
        super().__init__()
        self._it = iter(chunks)
        self._buf = b""
        self._pos_in_buf = 0
        self.what = what
        self.total = 0
        self.eof = False
        self._tail = bytearray()

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bool:
        while True:
            try:
                chunk = next(self._it)
            except StopIteration:
                self.eof = True
                return False
            except SourceError:
                raise
            except Exception as exc:  # requests/urllib3 errors of a broken response
                raise SourceError(
                    f"the archive stream of {self.what} broke after {self.total} bytes "
                    f"({_clean(exc)})",
                    hint="check the Docker engine and try again",
                ) from exc
            if chunk:
                self._buf = bytes(chunk)
                self._pos_in_buf = 0
                return True

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        if self._pos_in_buf >= len(self._buf) and (self.eof or not self._next_chunk()):
            return 0
        n = min(len(view), len(self._buf) - self._pos_in_buf)
        piece = self._buf[self._pos_in_buf : self._pos_in_buf + n]
        view[:n] = piece
        self._pos_in_buf += n
        self.total += n
        self._tail += piece
        if len(self._tail) > 2 * _TAIL:
            del self._tail[:-_TAIL]
        return n

    def verify_end(self, offset: int) -> None:
        """`SourceError` unless the archive's end-of-archive blocks start at ``offset`` (where
        `tarfile` stopped reading headers) and nothing but zeros follows."""
        drained = 0
        while not self.eof and drained <= 4 * _TAIL:
            piece = self.read(_CHUNK)
            if not piece:
                break
            drained += len(piece)
        if not self.eof:
            raise SourceError(f"the archive stream of {self.what} has data after its end")
        rest = self.total - offset
        start = len(self._tail) - rest
        if rest < 2 * BLOCK:
            raise SourceChanged(
                f"the archive stream of {self.what} ended early (at byte {self.total}, "
                "without the end-of-archive blocks)",
                hint="a file may have shrunk while it was read (a hot capture of a busy volume): "
                "try again, or capture with mode=cold",
            )
        if start < 0 or any(self._tail[start:]):
            raise SourceError(
                f"the archive stream of {self.what} is malformed (no valid tar header at byte "
                f"{offset})",
                hint="try again; if it persists, report the Docker engine version",
            )


class _MemberStream:
    """A member's data for the sink: counts and hashes what was read, and turns `tarfile`'s
    short-read errors into `SourceError`."""

    def __init__(self, fobj: IO[bytes] | None, path: str, what: str) -> None:
        self._f = fobj
        self.path = path
        self.what = what
        self.size = 0
        self._sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if self._f is None:
            return b""
        try:
            data = self._f.read(n if n is not None and n >= 0 else -1)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise SourceChanged(
                f"the archive stream of {self.what} ended inside {self.path!r} ({_clean(exc)})",
                hint="a file may have shrunk while it was read (a hot capture of a busy "
                "volume): try again, or capture with mode=cold",
            ) from exc
        self.size += len(data)
        self._sha.update(data)
        return data

    def readinto(self, buf: memoryview) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


class RootFacts(TypedDict):
    """The tree's root directory: mode (octal text), owner."""

    mode: str
    uid: int
    gid: int


class TreeFactsJSON(TypedDict):
    """The stored facts of a tree (`TreeFacts.as_dict`): per-file SHA-256 up to
    `LISTED_FILES` files, one digest over them all (``sha256_tree``) above."""

    root: RootFacts
    files: int
    dirs: int
    symlinks: int
    hardlinks: int
    bytes: int
    sha256: NotRequired[dict[str, str]]
    sha256_tree: NotRequired[str]


@dataclass
class TreeFacts:
    """What `read_tree` saw, in the shape of the recorded facts (see the module doc)."""

    root: RootFacts = field(default_factory=lambda: cast(RootFacts, {}))
    """Set from the archive's first member (a tree without it is refused)."""
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0
    sha256: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> TreeFactsJSON:
        """The stored form (`TreeFactsJSON`)."""
        out: TreeFactsJSON = {
            "root": self.root.copy(),
            "files": self.files,
            "dirs": self.dirs,
            "symlinks": self.symlinks,
            "hardlinks": self.hardlinks,
            "bytes": self.bytes,
        }
        if len(self.sha256) <= LISTED_FILES:
            out["sha256"] = dict(sorted(self.sha256.items()))
        else:
            h = hashlib.sha256()
            for path in sorted(self.sha256):
                h.update(f"{path}\0{self.sha256[path]}\n".encode("utf-8", "surrogateescape"))
            out["sha256_tree"] = h.hexdigest()
        return out


class TreeMetadata(TypedDict):
    """What a source keeps of a `TreeResult` in its metadata: the hard links (path → first
    path), and what was skipped (listed up to `SKIPPED_LISTED`) when anything was."""

    hardlinks: dict[str, str]
    skipped: NotRequired[list[str]]
    skipped_count: NotRequired[int]


@dataclass
class TreeResult:
    """The outcome of `read_tree`."""

    facts: TreeFacts
    hardlinks: dict[str, str] = field(default_factory=dict)
    """Hard links: path → the first path of the same file (relative to the tree's root)."""
    skipped: list[str] = field(default_factory=list)
    """Fifos, sockets and devices (``path (kind)``), at most `SKIPPED_LISTED`."""
    skipped_count: int = 0
    stream_bytes: int = 0

    def metadata(self) -> TreeMetadata:
        """The part a source keeps in its artifact metadata."""
        out: TreeMetadata = {"hardlinks": dict(sorted(self.hardlinks.items()))}
        if self.skipped_count:
            out["skipped"] = list(self.skipped)
            out["skipped_count"] = self.skipped_count
        return out


def _mtime_ns(member: tarfile.TarInfo) -> int:
    text = member.pax_headers.get("mtime")
    if text:
        try:
            return int(Decimal(text) * 1_000_000_000)
        except (InvalidOperation, ValueError):
            pass
    return int(Decimal(str(member.mtime)) * 1_000_000_000)


def _meta(member: tarfile.TarInfo) -> EntryMeta:
    xattrs = tuple(
        sorted(
            (key[len(XATTR_PREFIX) :], value.encode("utf-8", "surrogateescape"))
            for key, value in member.pax_headers.items()
            if key.startswith(XATTR_PREFIX)
        )
    )
    return EntryMeta(
        mode=member.mode & 0o7777,
        uid=member.uid,
        gid=member.gid,
        mtime_ns=_mtime_ns(member),
        xattrs=xattrs,
    )


def _special(member: tarfile.TarInfo) -> str:
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "fifo"
    return f"special file (tar type {member.type!r})"


def _relative(name: str, root: str, what: str) -> str:
    """The path of member ``name`` relative to the archive's top-level ``root`` ("" for the root
    itself); `SourceError` for a member outside it or with an unsafe part."""
    name = name.rstrip("/")
    if name == root:
        return ""
    if not name.startswith(root + "/"):
        raise SourceError(
            f"the archive stream of {what} is malformed (member {name!r} outside {root!r})"
        )
    rel = name[len(root) + 1 :]
    if any(part in ("", ".", "..") for part in rel.split("/")):
        raise SourceError(f"the archive stream of {what} has an unsafe member name {name!r}")
    return rel


def _excluded(rel: str, exclude: frozenset[str]) -> bool:
    return any(rel == e or rel.startswith(e + "/") for e in exclude)


def root_facts(meta: EntryMeta) -> RootFacts:
    return {"mode": f"{meta.mode:04o}", "uid": meta.uid, "gid": meta.gid}


def read_tree(
    chunks: Iterable[bytes],
    *,
    what: str,
    sink: ArtifactSink | None,
    prefix: str,
    exclude: frozenset[str] = frozenset(),
    notice: Callable[[str], None] | None = None,
) -> TreeResult:
    """Parse the engine's archive of one directory (``chunks``) into ``sink`` below
    ``prefix`` (hash only when ``sink`` is None); ``what`` names the directory in messages.
    Paths in ``exclude`` (relative; e.g. other mounts nested inside this one) are left out with
    everything below them. Returns the facts and what was skipped; `SourceError` if the stream
    is truncated or malformed, or if the sink stored a file other than what was read."""
    raw = _ChunkReader(chunks, what)
    stream = io.BufferedReader(raw, _CHUNK)
    tree = _TreeReader(what, sink, prefix, exclude, notice)
    try:
        tar = tarfile.open(fileobj=stream, mode="r|", bufsize=_CHUNK)  # noqa: SIM115
    except tarfile.TarError as exc:
        if raw.total == 0 and raw.eof:
            raise SourceError(f"the archive stream of {what} is empty") from exc
        raise SourceError(f"the archive stream of {what} is not a tar archive") from exc
    try:
        for member in tar:
            if sink is not None:
                sink.check_interrupted()
            tree.add(tar, member)
        if tree.root is None:
            raise SourceError(f"the archive stream of {what} holds no entries")
        raw.verify_end(tar.offset)
    except tarfile.TarError as exc:
        raise SourceError(
            f"the archive stream of {what} is truncated or malformed ({_clean(exc)})",
            hint="try again; a hot capture of a busy volume may need mode=cold",
        ) from exc
    result = tree.result
    if notice is not None and result.skipped_count > 10:
        notice(f"{what}: skipped {result.skipped_count} special files in all (not captured)")
    result.stream_bytes = raw.total
    return result


class _TreeReader:
    """The members of one directory's archive, in order, into a sink (`read_tree`)."""

    def __init__(
        self,
        what: str,
        sink: ArtifactSink | None,
        prefix: str,
        exclude: frozenset[str],
        notice: Callable[[str], None] | None,
    ) -> None:
        self.what = what
        self.sink = sink
        self.prefix = prefix
        self.exclude = exclude
        self.notice = notice
        self.facts = TreeFacts()
        self.result = TreeResult(self.facts)
        self.stored: dict[str, tuple[str, int]] = {}
        """Relative file path -> (sha256, size)."""
        self.root: str | None = None
        """The archive's top-level directory; None until its first member."""

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        """Take the next member: the root first, then anything below it."""
        if self.root is None:
            self._add_root(member)
            return
        rel = _relative(member.name, self.root, self.what)
        if rel == "":
            raise SourceError(f"the archive stream of {self.what} holds its directory twice")
        if _excluded(rel, self.exclude):
            return
        path = f"{self.prefix}/{rel}"
        meta = _meta(member)
        sink = self.sink
        if member.isdir():
            self.facts.dirs += 1
            if sink is not None:
                sink.add_dir(path, meta)
        elif member.issym():
            self.facts.symlinks += 1
            if sink is not None:
                sink.add_symlink(path, member.linkname, meta)
        elif member.islnk():
            self._add_hardlink(member, rel, path, meta)
        elif member.isreg():
            self._add_file(tar, member, rel, path, meta)
        else:
            self._skip(member, rel)

    def _add_root(self, member: tarfile.TarInfo) -> None:
        root = member.name.rstrip("/")
        if not member.isdir() or "/" in root or root in ("", ".", ".."):
            raise SourceError(
                f"the archive stream of {self.what} does not start with its directory"
            )
        self.root = root
        meta = _meta(member)
        self.facts.root = root_facts(meta)
        if self.sink is not None:
            self.sink.add_dir(self.prefix, meta)

    def _add_hardlink(self, member: tarfile.TarInfo, rel: str, path: str, meta: EntryMeta) -> None:
        assert self.root is not None
        result, facts = self.result, self.facts
        first = _relative(member.linkname, self.root, self.what)
        if first not in self.stored:
            result.skipped_count += 1
            if len(result.skipped) < SKIPPED_LISTED:
                result.skipped.append(f"{rel} (hard link to a skipped entry)")
            return
        if self.sink is not None:
            self.sink.add_hardlink(path, f"{self.prefix}/{first}", meta)
        self.stored[rel] = self.stored[first]
        result.hardlinks[rel] = result.hardlinks.get(first, first)
        facts.hardlinks += 1
        facts.files += 1
        facts.bytes += self.stored[first][1]
        facts.sha256[rel] = self.stored[first][0]

    def _add_file(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, rel: str, path: str, meta: EntryMeta
    ) -> None:
        what = self.what
        data = _MemberStream(tar.extractfile(member), rel, what)
        if self.sink is not None:
            got = self.sink.add_file(path, data, meta)
            data.drain()  # a sink must read to EOF; make sure the member is consumed
            if got.size != data.size or got.sha256 != data.sha256:
                raise SourceError(
                    f"{path!r} of {what} was stored as {got.size} bytes, but "
                    f"{data.size} bytes were read"
                )
        else:
            data.drain()
        if data.size != member.size:
            raise SourceError(
                f"the archive stream of {what} ended inside {rel!r} "
                f"({data.size} of {member.size} bytes)"
            )
        self.stored[rel] = (data.sha256, data.size)
        self.facts.files += 1
        self.facts.bytes += data.size
        self.facts.sha256[rel] = data.sha256

    def _skip(self, member: tarfile.TarInfo, rel: str) -> None:
        """A fifo, socket or device: counted, listed and told, not captured."""
        result = self.result
        result.skipped_count += 1
        kind = _special(member)
        if len(result.skipped) < SKIPPED_LISTED:
            result.skipped.append(f"{rel} ({kind})")
        if self.notice is not None and result.skipped_count <= 10:
            self.notice(f"{self.what}: skipped {rel!r}, a {kind} (not captured)")


def count_entries(
    chunks: Iterable[bytes], *, what: str, limit: int = 1000, exclude: frozenset[str] = frozenset()
) -> tuple[int, bool]:
    """How many entries the archive of a directory holds below its root, leaving out the
    relative paths in ``exclude`` (and what is below them), counting at most ``limit`` (then
    ``(limit, True)``); reading stops there."""
    raw = _ChunkReader(chunks, what)
    n = 0
    root: str | None = None
    try:
        with tarfile.open(fileobj=io.BufferedReader(raw, _CHUNK), mode="r|", bufsize=_CHUNK) as tar:
            for member in tar:
                if root is None:
                    root = member.name.rstrip("/")
                    continue
                if _excluded(_relative(member.name, root, what), exclude):
                    continue
                n += 1
                if n >= limit:
                    return n, True
    except tarfile.TarError as exc:
        raise SourceError(f"the archive stream of {what} is malformed ({_clean(exc)})") from exc
    return n, False
