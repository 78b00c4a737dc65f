"""Exclude patterns (fs layer): gitignore-style patterns matched against absolute paths,
through `pathspec` (its `GitIgnoreSpec`), in this one place for `backup --exclude`,
`--iexclude`, the exclude files, a plan's excludes and `restore --include/--exclude`.

Pattern language (git's, except where a pattern containing ``/`` may match):

* ``*`` matches any run of characters within one path component (never ``/``); ``?`` one
  character; ``[...]`` / ``[!...]`` a character class. ``\\`` escapes the next character
  (``\\*`` is a literal star, ``\\!`` a literal leading ``!``).
* ``**`` as a whole component matches any number of components, including none
  (``/srv/app/**/tmp`` matches ``/srv/app/tmp`` and ``/srv/app/a/b/tmp``); at the end
  too: ``/srv/cache/**`` excludes ``/srv/cache`` itself (git's would not).
* A pattern without ``/`` matches the name of any component (``*.log``, ``node_modules``).
* A pattern starting with ``/`` is anchored: it must match the absolute path from the start.
  A pattern containing ``/`` elsewhere only (``.git/objects``) matches at any depth, as if
  written ``**/.git/objects`` (restic does the same; git would anchor it).
* A trailing ``/`` restricts the pattern to directories (``cache/``).
* A path is excluded when it, or any of its ancestors, matches: excluding a directory
  excludes everything below it.
* ``!pattern`` re-includes what an earlier pattern excluded; the last pattern that matches
  decides. As in git, a file cannot be re-included when a directory above it is excluded:
  write ``/srv/app/cache/*`` and ``!/srv/app/cache/keep``, not ``/srv/app/cache`` (or
  ``/srv/app/cache/**``, which excludes the directory itself).
* Case-insensitive patterns (``--iexclude``) are matched on their own, against the lowercased
  path; a path is excluded when either set excludes it.

Patterns that use none of ``\\``, a leading ``!`` or an unclosed ``[`` (taken literally, as
before) mean what they meant before `pathspec`: backups of a tree stay the same.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from pathspec import GitIgnoreSpec
from pathspec.patterns.gitignore.base import GitIgnorePatternError
from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

from stackvault.errors import UsageError


def _no_slash_in_classes(regex: str) -> str:
    """``regex`` with ``(?!/)`` before each character class: a class never matches ``/``
    (git's does not either), not even a negated one or a range that spans it (``[+-0]``).
    ``[``, ``&``, ``~``, ``|`` in a class are escaped: members, not what `re` may one day
    read as a nested set or a set operation."""
    out: list[str] = []
    i, n = 0, len(regex)
    in_class = False
    while i < n:
        c = regex[i]
        if c == "\\":
            out.append(regex[i : i + 2])
            i += 2
            continue
        if not in_class and regex.startswith("[^/]", i):
            out.append("[^/]")  # pathspec's own, for * and ?
            i += 4
            continue
        if not in_class and c == "[":
            out.append("(?!/)[")
            i += 1
            if regex.startswith("^", i):
                out.append("^")
                i += 1
            if regex.startswith("]", i):  # a leading "]" is a member
                out.append("]")
                i += 1
            in_class = True
            continue
        if in_class and c == "]":
            in_class = False
        elif in_class and c in "[&~|":
            c = "\\" + c  # a member, never a nested set or a set operation
        out.append(c)
        i += 1
    return "".join(out)


class _Pattern(GitIgnoreSpecPattern):
    """git's pattern, whose character classes never match ``/``."""

    @classmethod
    def pattern_to_regex(cls, pattern: str) -> tuple[str | None, bool | None]:  # type: ignore[override]
        regex, include = super().pattern_to_regex(pattern)
        return (None if regex is None else _no_slash_in_classes(regex)), include


def _literal_unclosed_class(body: str) -> str:
    """``[`` without a ``]`` after it in its component is literal (git would drop the
    pattern): escape it."""
    out: list[str] = []
    for segment in body.split("/"):
        start = segment.rfind("[")
        while start >= 0:
            if "]" not in segment[start + 1 :] and (start == 0 or segment[start - 1] != "\\"):
                segment = segment[:start] + "\\" + segment[start:]
            start = segment.rfind("[", 0, start)
        out.append(segment)
    return "/".join(out)


def _gitignore_line(pattern: str) -> tuple[str, bool]:
    """The gitignore line of one pattern, matched against a path without its leading ``/``,
    and whether it is a negation. `UsageError` for an empty pattern or one that would
    exclude everything."""
    body = pattern.strip()
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    dir_only = body.endswith("/")
    body = body.rstrip("/")
    while body.endswith("/**"):  # "**" matches no component too: the directory itself
        body = body[:-3].rstrip("/")
    if not body:
        what = "is empty" if not pattern.strip().lstrip("!") else "would exclude everything"
        raise UsageError(f"exclude pattern {pattern!r} {what}")
    body = _literal_unclosed_class(body)
    if body.startswith("/"):
        line = "/" + body.lstrip("/")  # anchored at the root
    elif "/" in body and not body.startswith("**/"):
        line = "**/" + body  # at any depth (git would anchor it)
    else:
        line = body  # a name, at any depth
    return ("!" if negate else "") + line + ("/" if dir_only else ""), negate


class _Spec:
    """One set of patterns (the exact or the case-insensitive ones), in order. A directory is
    matched twice: by every pattern as ``a/b`` and by the directory-only ones (``cache/``) as
    ``a/b/`` (as ``a/b/`` a pattern such as ``/a/b/**`` would match the directory itself);
    the later pattern of the two results decides, as git's last match does."""

    def __init__(self, patterns: Sequence[str], *, lower: bool) -> None:
        lines: list[str] = []
        self.negations = False
        self._dir_index: list[int] = []  # the index in `lines` of each directory-only line
        for pattern in patterns:
            line, negate = _gitignore_line(pattern.lower() if lower else pattern)
            self.negations = self.negations or negate
            try:
                _Pattern(line)
            except (GitIgnorePatternError, re.error, ValueError) as exc:
                raise UsageError(f"exclude pattern {pattern!r} is not valid: {exc}") from exc
            if line.endswith("/"):
                self._dir_index.append(len(lines))
            lines.append(line)
        self.lower = lower
        self._all = GitIgnoreSpec.from_lines(lines, _Pattern)
        self._dirs = (
            GitIgnoreSpec.from_lines([lines[i] for i in self._dir_index], _Pattern)
            if self._dir_index
            else None
        )

    def excludes(self, relative: str, is_dir: bool) -> bool:
        if self.lower:
            relative = relative.lower()
        got = self._all.check_file(relative)
        if is_dir and self._dirs is not None:
            as_dir = self._dirs.check_file(relative + "/")
            if as_dir.index is not None and (
                got.index is None or self._dir_index[as_dir.index] > got.index
            ):
                return bool(as_dir.include)
        return bool(got.include)


class ExcludeMatcher:
    """Decides whether a path is excluded; all patterns are compiled once, at construction.

    ``patterns`` match as written, ``ignore_case`` patterns whatever the case. Raises
    `UsageError` for an empty pattern, one that would exclude everything (``/``) or one that
    is not valid (a character class such as ``[z-a]``).
    """

    def __init__(self, patterns: Sequence[str], ignore_case: Sequence[str] = ()) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        self.ignore_case: tuple[str, ...] = tuple(ignore_case)
        self._specs = [
            _Spec(p, lower=lower)
            for p, lower in ((self.patterns, False), (self.ignore_case, True))
            if p
        ]
        # Without a negation a pattern that matches a directory matches all below it, so
        # an ancestor needs no look of its own.
        self._negations = any(s.negations for s in self._specs)

    def __bool__(self) -> bool:
        return bool(self._specs)

    def _matches(self, relative: str, is_dir: bool) -> bool:
        return any(s.excludes(relative, is_dir) for s in self._specs)

    def excluded(self, path: str, is_dir: bool) -> bool:
        """True if the absolute, normalised ``path`` (or an ancestor of it) is excluded.

        ``is_dir`` says whether ``path`` itself is a directory (a symlink to a directory is
        not one); it matters for patterns ending in ``/``.
        """
        if not self._specs:
            return False
        relative = path.lstrip("/")
        if self._matches(relative, is_dir):
            return True
        if not self._negations:
            return False
        parts = relative.split("/")
        return any(self._matches("/".join(parts[:i]), True) for i in range(1, len(parts)))


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
