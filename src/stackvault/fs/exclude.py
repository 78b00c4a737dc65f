"""Exclude patterns (fs layer): restic-like glob patterns matched against absolute paths.

Pattern language:

* ``*`` matches any run of characters within one path component (never ``/``); ``?`` one
  character; ``[...]`` / ``[!...]`` a character class, as in `fnmatch`. There is no escape
  character and no negation (a leading ``!`` is literal).
* ``**`` as a whole component matches any number of components, including none
  (``/srv/app/**/tmp`` matches ``/srv/app/tmp`` and ``/srv/app/a/b/tmp``).
* A pattern without ``/`` matches the name of any component (``*.log``, ``node_modules``).
* A pattern starting with ``/`` is anchored: it must match the absolute path from the start.
  A pattern containing ``/`` elsewhere only (``.git/objects``) matches at any depth, as if
  written ``**/.git/objects`` (restic does the same).
* A trailing ``/`` restricts the pattern to directories (``cache/``).
* A path is excluded when it, or any of its ancestors, matches: excluding a directory
  excludes everything below it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from stackvault.errors import UsageError

# One component of a path; components are never empty in a normalised absolute path.
_COMPONENT = "[^/]+"


def _translate_segment(segment: str) -> str:
    """Regex for one pattern component; nothing it matches contains ``/``."""
    out: list[str] = []
    i, n = 0, len(segment)
    while i < n:
        c = segment[i]
        i += 1
        if c == "*":
            # Runs of stars are one star; within a component they cannot cross "/" anyway.
            while i < n and segment[i] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i
            if j < n and segment[j] == "!":
                j += 1
            if j < n and segment[j] == "]":
                j += 1
            while j < n and segment[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))  # unclosed "[" is literal, as in fnmatch
                continue
            # Escape what `re` would read as set operations or a nested set (as fnmatch does).
            body = re.sub(r"([&~|\[])", r"\\\1", segment[i:j].replace("\\", "\\\\"))
            i = j + 1
            if body.startswith("!"):
                body = "^" + body[1:]
            elif body.startswith("^"):
                body = "\\" + body
            # A class never matches "/", not even through a range such as "+-0".
            out.append(f"(?!/)[{body}]")
        else:
            out.append(re.escape(c))
    return "".join(out)


def _translate(body: str) -> str:
    """Regex (without anchors) matching the absolute paths that ``body`` names."""
    segments = body.split("/")
    # Anchored patterns start with an empty segment; the others may match at any depth.
    segments = segments[1:] if segments[0] == "" else ["**", *segments]
    parts: list[str] = []
    for segment in segments:
        if segment == "**":
            parts.append(f"(?:/{_COMPONENT})*")
        elif segment:
            parts.append("/" + _translate_segment(segment))
        # An empty segment ("a//b") adds nothing: paths are normalised.
    return "".join(parts)


class ExcludeMatcher:
    """Decides whether a path is excluded; all patterns are compiled once, at construction.

    Raises `UsageError` for an empty pattern, one that would exclude everything (``/``) or
    one whose character class is not valid.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        any_kind: list[str] = []
        dirs_only: list[str] = []
        for pattern in self.patterns:
            body = pattern.strip()
            dir_only = body.endswith("/")
            body = body.rstrip("/")
            if not body:
                what = "is empty" if not pattern.strip() else "would exclude everything"
                raise UsageError(f"exclude pattern {pattern!r} {what}")
            regex = _translate(body)
            try:
                re.compile(regex)
            except re.error as exc:
                raise UsageError(f"exclude pattern {pattern!r} is not valid: {exc}") from exc
            (dirs_only if dir_only else any_kind).append(regex)
        # Ancestors are always directories, so every pattern may match one.
        self._ancestor = _alternation(any_kind + dirs_only, suffix="/")
        self._any_kind = _alternation(any_kind, suffix=r"\Z")
        self._dirs_only = _alternation(dirs_only, suffix=r"\Z")

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, path: str, is_dir: bool) -> bool:
        """True if the absolute, normalised ``path`` (or an ancestor of it) is excluded.

        ``is_dir`` says whether ``path`` itself is a directory (a symlink to a directory is
        not one); it matters for patterns ending in ``/``.
        """
        if self._ancestor is None:
            return False
        if self._ancestor.match(path):
            return True
        if self._any_kind is not None and self._any_kind.match(path):
            return True
        return is_dir and self._dirs_only is not None and bool(self._dirs_only.match(path))


def _alternation(regexes: list[str], *, suffix: str) -> re.Pattern[str] | None:
    if not regexes:
        return None
    return re.compile("(?:" + "|".join(f"(?:{r})" for r in regexes) + ")" + suffix, re.DOTALL)


def load_exclude_file(path: str | os.PathLike[str]) -> list[str]:
    """The patterns of an exclude file: one per line, blank lines and ``#`` comments skipped.

    Surrounding whitespace is stripped. Bytes that are not UTF-8 are kept as surrogate escapes
    so patterns can name any file. A missing or unreadable file raises `UsageError`.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError as exc:
        raise UsageError(f"exclude file {os.fspath(path)} does not exist") from exc
    except OSError as exc:
        raise UsageError(f"cannot read exclude file {os.fspath(path)}: {exc.strerror}") from exc
    patterns: list[str] = []
    for line in raw.decode("utf-8", "surrogateescape").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line)
    return patterns
