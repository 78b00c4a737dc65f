"""Where a stack snapshot is restored, and what it restores there (stack layer): the mapping of
the snapshot's project, directory and volumes to the restored ones, the entries of each kind
the steps of ``stack restore`` restore, and `restore_files`, which restores captured paths to
their mapped places (or, for the checks, below a directory of their own).

Read from the snapshot's manifest (`StackManifest`, with its `Plan`) alone: nothing here
changes anything but `restore_files`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from stackvault.engine.filedata import find_node
from stackvault.engine.progress import NullProgress, Progress
from stackvault.engine.restore import FileRestoreOptions, RestoreJob
from stackvault.errors import PathNotFound
from stackvault.records.plan import SourcePlan
from stackvault.records.stack import StackManifest
from stackvault.repo.snapshot import Snapshot
from stackvault.stack.classify import DATABASE_ROLES

if TYPE_CHECKING:
    from stackvault.repo.repository import Repository


class RestoreTarget:
    """The snapshot's stack restored as project ``new_project`` into ``new_dir``."""

    def __init__(
        self, snapshot: Snapshot, manifest: StackManifest, new_project: str, new_dir: str
    ) -> None:
        self.snapshot = snapshot
        self.m = manifest
        self.plan = manifest.plan
        self.services = manifest.services
        self.old_project = manifest.project
        self.old_dir = (manifest.directory or "").rstrip("/")
        self.new_project = new_project
        self.new_dir = new_dir.rstrip("/")

    # --- mapping ----------------------------------------------------------------------------

    def map_path(self, path: str) -> str:
        if self.old_dir and (path == self.old_dir or path.startswith(self.old_dir + "/")):
            return self.new_dir + path[len(self.old_dir) :]
        return path

    def map_volume(self, name: str) -> str:
        prefix = f"{self.old_project}_"
        return f"{self.new_project}_{name[len(prefix) :]}" if name.startswith(prefix) else name

    def in_directory(self, path: str) -> bool:
        """Whether the snapshot's ``path`` lies in the project directory."""
        return bool(self.old_dir) and (path == self.old_dir or path.startswith(self.old_dir + "/"))

    def compose_files(self) -> list[str]:
        return [self.map_path(f) for f in self.plan.compose_files]

    def role(self, service: str) -> str:
        found = self.services.get(service)
        return found.role if found is not None else ""

    # --- what the steps restore -------------------------------------------------------------

    def file_entries(self) -> list[str]:
        entries: list[str] = []
        for p in [*self.plan.config, *(x.path for x in self.plan.paths)]:
            if p in self.snapshot.paths and p not in entries:
                entries.append(p)
        return entries

    def config_entries(self) -> list[str]:
        return [p for p in self.file_entries() if p in self.plan.config]

    def data_entries(self) -> list[str]:
        return [p for p in self.file_entries() if p not in self.plan.config]

    def volume_targets(self) -> dict[str, str]:
        """Artifact name → target volume for the named volumes of the stack."""
        out: dict[str, str] = {}
        for s in self.plan.sources:
            if s.url.startswith("docker-volume://"):
                out[s.name] = self.map_volume(s.url[len("docker-volume://") :].split("?")[0])
        return out

    def database_services(self) -> list[str]:
        return [n for n in self.services if self.role(n) in DATABASE_ROLES]

    def database_sources(self) -> list[SourcePlan]:
        return [s for s in self.plan.sources if self.role(s.service) in DATABASE_ROLES]


def restore_files(
    repo: Repository,
    target: RestoreTarget,
    entries: list[str],
    *,
    into: str | None = None,
    progress: Progress | None = None,
    notice: Callable[[str], None] = lambda _m: None,
) -> int:
    """Restore captured paths to their mapped places (checked against their SHA-256); the
    number of files. ``into``: below that directory instead, as if it were the project
    directory (entries outside the project directory are left out)."""
    if into is not None:
        entries = [p for p in entries if target.in_directory(p)]
    if not entries:
        return 0
    groups: dict[str, list[str]] = {}
    for p in entries:
        root = target.old_dir if target.in_directory(p) else os.path.dirname(p)
        groups.setdefault(root, []).append(p)
    files = 0
    for root, paths in groups.items():
        node = find_node(repo, target.snapshot, root)
        if node.type != "dir" or node.subtree is None:
            raise PathNotFound(f"{root} is not a directory in snapshot {target.snapshot.short_id}")
        include = ["/" + os.path.relpath(p, root) for p in paths]
        job = RestoreJob(
            repo,
            target.snapshot,
            # the checks made sure every restored path was absent or an empty directory;
            # what exists now are the parents this restore made itself.
            FileRestoreOptions(
                target=into if into is not None else target.map_path(root),
                include=include,
                overwrite=True,
                verify=True,
                root_tree=node.subtree,
            ),
            progress=progress or NullProgress(),
        )
        result = job.run()
        files += result.files
        for n in result.notices:
            notice(n)
    return files
