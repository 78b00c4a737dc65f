"""`backup --dry-run` (engine layer): what a backup of some paths would read, by the very
walk a backup makes (same excludes and `WalkRules`), with nothing written and no repository
opened."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from stackvault.engine.backup import BackupOptions, normalise_paths
from stackvault.fs.exclude import ExcludeMatcher
from stackvault.fs.walk import FileWalker, Problem


@dataclass
class DryRun:
    """What a backup would store: counts, the bytes of its regular files, the problems met."""

    paths: list[str]
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    others: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "dry_run": True,
            "paths": self.paths,
            "files": self.files,
            "dirs": self.dirs,
            "symlinks": self.symlinks,
            "others": self.others,
            "bytes": self.bytes,
            "problems": [
                {"path": p.path, "message": p.message, "incomplete": p.incomplete}
                for p in self.problems
            ],
        }


def dry_run(opts: BackupOptions, on_problem: Callable[[Problem], None]) -> DryRun:
    """Walk ``opts.paths`` as a backup would and count what it would store."""
    result = DryRun(normalise_paths(opts))

    def problem(p: Problem) -> None:
        result.problems.append(p)
        on_problem(p)

    walker = FileWalker(
        ExcludeMatcher(opts.excludes, opts.iexcludes), opts.one_file_system, problem, opts.rules
    )
    stack = [e for e in (walker.stat_root(p) for p in reversed(result.paths)) if e is not None]
    while stack:
        entry = stack.pop()
        if entry.kind == "dir":
            result.dirs += 1
            stack.extend(reversed(walker.scan_dir(entry)))
        elif entry.kind == "file":
            result.files += 1
            result.bytes += entry.size
        elif entry.kind == "symlink":
            result.symlinks += 1
        else:
            result.others += 1
    return result
