"""Exclude patterns (sources layer tests): restic-like matching and exclude files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stackvault.errors import UsageError
from stackvault.fs.exclude import ExcludeMatcher, load_exclude_file


def excluded(patterns: list[str], path: str, is_dir: bool = False) -> bool:
    return ExcludeMatcher(patterns).excluded(path, is_dir)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.log", "/var/log/app.log", True),
        ("*.log", "/app.log", True),
        ("*.log", "/var/log/app.log.1", False),
        ("*.log", "/var/log/applog", False),
        ("node_modules", "/srv/web/node_modules", True),
        ("node_modules", "/srv/web/node_modules2", False),
        ("node_modules", "/srv/web/my_node_modules", False),
        ("cache*", "/home/u/cache", True),
        ("cache*", "/home/u/cache-v2", True),
        ("cache*", "/home/u/mycache", False),
        ("?.tmp", "/x/a.tmp", True),
        ("?.tmp", "/x/ab.tmp", False),
        ("[ab].txt", "/x/a.txt", True),
        ("[ab].txt", "/x/c.txt", False),
        ("[!ab].txt", "/x/c.txt", True),
        ("[!ab].txt", "/x/a.txt", False),
        ("[a-c]x", "/bx", True),
        ("[a-c]x", "/dx", False),
    ],
)
def test_component_patterns_match_any_path_component(
    pattern: str, path: str, expected: bool
) -> None:
    assert excluded([pattern], path) is expected


def test_component_pattern_excludes_everything_below_a_matching_directory() -> None:
    assert excluded(["node_modules"], "/srv/web/node_modules/react/index.js")
    assert excluded(["*.d"], "/etc/conf.d/file")


def test_star_never_crosses_a_slash() -> None:
    m = ExcludeMatcher(["/srv/*/tmp"])
    assert m.excluded("/srv/a/tmp", True)
    assert not m.excluded("/srv/a/b/tmp", True)
    assert not ExcludeMatcher(["a*b"]).excluded("/a/x/b", False)
    # A character class never matches "/" either, even through a range that spans it.
    assert not ExcludeMatcher(["/x[+-0]y"]).excluded("/x/y", False)
    assert ExcludeMatcher(["/x[+-0]y"]).excluded("/x+y", False)


def test_anchored_patterns_match_the_absolute_path_from_the_start() -> None:
    m = ExcludeMatcher(["/srv/app/data"])
    assert m.excluded("/srv/app/data", True)
    assert m.excluded("/srv/app/data/db/file", False)
    assert not m.excluded("/x/srv/app/data", True)
    assert not m.excluded("/srv/app/data2", True)
    assert not m.excluded("/srv/app", True)


def test_double_star_matches_any_number_of_directories() -> None:
    m = ExcludeMatcher(["/srv/app/**/tmp"])
    assert m.excluded("/srv/app/tmp", True)
    assert m.excluded("/srv/app/a/tmp", True)
    assert m.excluded("/srv/app/a/b/c/tmp", True)
    assert m.excluded("/srv/app/a/b/c/tmp/inside", False)
    assert not m.excluded("/srv/app/a/tmpx", True)
    assert not m.excluded("/srv/other/tmp", True)
    assert ExcludeMatcher(["/srv/**"]).excluded("/srv/deep/er/file", False)


def test_relative_pattern_with_slash_matches_at_any_depth() -> None:
    m = ExcludeMatcher([".git/objects"])
    assert m.excluded("/repo/.git/objects", True)
    assert m.excluded("/a/b/.git/objects/ab/cdef", False)
    assert not m.excluded("/repo/.git/objectsx", True)
    assert not m.excluded("/repo/.git", True)


def test_trailing_slash_matches_directories_only() -> None:
    m = ExcludeMatcher(["cache/", "/srv/tmp/"])
    assert m.excluded("/home/u/cache", True)
    assert not m.excluded("/home/u/cache", False)  # a file (or a symlink) named cache
    assert m.excluded("/home/u/cache/x", False)  # below an excluded directory
    assert m.excluded("/srv/tmp", True)
    assert not m.excluded("/srv/tmp", False)


def test_no_patterns_exclude_nothing() -> None:
    m = ExcludeMatcher([])
    assert not m
    assert not m.excluded("/anything", True)
    assert ExcludeMatcher(["x"])


def test_several_patterns_combine() -> None:
    m = ExcludeMatcher(["*.log", "/srv/cache/", "tmp"])
    assert m.excluded("/a/b.log", False)
    assert m.excluded("/srv/cache", True)
    assert m.excluded("/x/tmp/y", False)
    assert not m.excluded("/srv/data", True)


def test_undecodable_names_match() -> None:
    name = os.fsdecode(b"\xffbad")
    assert ExcludeMatcher([name]).excluded(f"/x/{name}", False)
    assert ExcludeMatcher(["*bad"]).excluded(f"/x/{name}", False)


def test_special_regex_characters_are_literal() -> None:
    m = ExcludeMatcher(["a+b(c).{d}$", "x|y", "[[]z"])
    assert m.excluded("/a+b(c).{d}$", False)
    assert not m.excluded("/aab(c).{d}$", False)
    assert m.excluded("/x|y", False)
    assert not m.excluded("/x", False)
    assert m.excluded("/[z", False)


@pytest.mark.parametrize("pattern", ["", "   ", "/", "//"])
def test_empty_or_everything_patterns_are_usage_errors(pattern: str) -> None:
    with pytest.raises(UsageError):
        ExcludeMatcher([pattern])


def test_invalid_character_range_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not valid"):
        ExcludeMatcher(["[z-a]"])


def test_unclosed_bracket_is_literal() -> None:
    assert excluded(["a[b"], "/a[b")


def test_load_exclude_file(tmp_path: Path) -> None:
    f = tmp_path / "excludes"
    f.write_bytes(
        b"# caches\n\n*.log\n  /srv/app/**/tmp  \r\n   # indented comment\ncache/\n\xffraw\n"
    )
    patterns = load_exclude_file(f)
    assert patterns == ["*.log", "/srv/app/**/tmp", "cache/", os.fsdecode(b"\xffraw")]
    m = ExcludeMatcher(patterns)
    assert m.excluded("/srv/app/x/tmp", True)
    assert m.excluded("/d/" + os.fsdecode(b"\xffraw"), False)


def test_load_exclude_file_missing_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_exclude_file(tmp_path / "nope")
    with pytest.raises(UsageError, match="cannot read"):
        load_exclude_file(tmp_path)  # a directory


def test_negation_re_includes_what_an_earlier_pattern_excluded() -> None:
    m = ExcludeMatcher(["*.log", "!keep.log"])
    assert m.excluded("/var/app.log", False)
    assert not m.excluded("/var/keep.log", False)
    # the last match decides
    assert ExcludeMatcher(["!keep.log", "*.log"]).excluded("/var/keep.log", False)
    # never below an excluded directory (as in git); the directory's contents may be
    inner = ExcludeMatcher(["/srv/cache", "!/srv/cache/keep"])
    assert inner.excluded("/srv/cache/keep", False)
    contents = ExcludeMatcher(["/srv/cache/*", "!/srv/cache/keep"])
    assert not contents.excluded("/srv/cache", True)
    assert not contents.excluded("/srv/cache/keep", False)
    assert not contents.excluded("/srv/cache/keep/below", False)
    assert contents.excluded("/srv/cache/other", False)
    with pytest.raises(UsageError, match="is empty"):
        ExcludeMatcher(["!"])


def test_ignore_case_patterns() -> None:
    m = ExcludeMatcher([], ["*.JPG", "/srv/Cache/"])
    assert m.excluded("/x/photo.jpg", False)
    assert m.excluded("/x/PHOTO.Jpg", False)
    assert m.excluded("/SRV/cache", True)
    assert not m.excluded("/SRV/cache", False)
    assert not ExcludeMatcher(["*.JPG"]).excluded("/x/photo.jpg", False)
    both = ExcludeMatcher(["*.tmp"], ["*.BAK"])
    assert both.excluded("/a.tmp", False) and both.excluded("/a.bak", False)
    assert not both.excluded("/a.TMP", False)


def test_backslash_escapes_and_a_trailing_double_star() -> None:
    assert ExcludeMatcher(["\\!important"]).excluded("/x/!important", False)
    assert ExcludeMatcher(["a\\*b"]).excluded("/a*b", False)
    assert not ExcludeMatcher(["a\\*b"]).excluded("/axb", False)
    assert ExcludeMatcher(["/srv/cache/**"]).excluded("/srv/cache", True)
    assert ExcludeMatcher(["[x"]).excluded("/a/[x", False)  # an unclosed class is literal
    with pytest.raises(UsageError, match="not valid"):
        ExcludeMatcher(["[z-a]"])
