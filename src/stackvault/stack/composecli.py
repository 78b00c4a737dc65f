"""Running Docker Compose itself (stack layer), for what only Compose can do: create a
project's containers, networks and volumes from its files (``up``).

Compose v2 (``docker compose``) is preferred, then v1 (``docker-compose``). Both talk to the
engine ``DOCKER_HOST`` names, like the rest of stackvault.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from stackvault.errors import SourceError
from stackvault.sources.tools.childenv import child_environment


class Compose:
    """``docker compose -p PROJECT -f FILE… --project-directory DIR`` for one project."""

    def __init__(self, project: str, directory: str, files: Sequence[str]) -> None:
        self.project = project
        self.directory = directory
        self.files = list(files)
        self._base = self._find()

    @staticmethod
    def _find() -> list[str]:
        docker = shutil.which("docker")
        if docker is not None:
            probe = subprocess.run(
                [docker, "compose", "version"], capture_output=True, text=True, check=False
            )
            if probe.returncode == 0:
                return [docker, "compose"]
        legacy = shutil.which("docker-compose")
        if legacy is not None:
            return [legacy]
        raise SourceError(
            "Docker Compose is not installed on this host (neither `docker compose` nor "
            "`docker-compose`)",
            hint="install docker-compose-plugin (or docker-compose) and restore again",
        )

    def run(self, *args: str, timeout: float = 600) -> str:
        argv = [*self._base, "-p", self.project]
        for f in self.files:
            argv += ["-f", f]
        argv += ["--project-directory", self.directory, *args]
        env = child_environment({"COMPOSE_INTERACTIVE_NO_CLI": "1"})
        try:
            proc = subprocess.run(
                argv,
                cwd=self.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SourceError(
                f"docker compose {' '.join(args)} did not finish in {timeout:.0f} s"
            ) from exc
        if proc.returncode != 0:
            tail = " | ".join(line for line in proc.stderr.strip().splitlines()[-6:] if line)
            raise SourceError(
                f"docker compose {' '.join(args)} for project {self.project} exited with "
                f"status {proc.returncode}: {tail}"
            )
        return proc.stdout

    def shown(self, *args: str) -> str:
        """The command line of ``args`` for a person to type: ``docker compose -p PROJECT
        ARGS`` (Compose v2 finds the project by its labels), or with v1 ``docker-compose``
        also its files and directory."""
        import os
        import shlex

        if len(self._base) == 2:
            return shlex.join(["docker", "compose", "-p", self.project, *args])
        files = [x for f in self.files for x in ("-f", f)]
        argv = [os.path.basename(self._base[0]), "-p", self.project, *files]
        return shlex.join([*argv, "--project-directory", self.directory, *args])

    def up(self, services: Sequence[str] = ()) -> None:
        """Create and start ``services`` (all when empty), detached, without their dependencies
        when services are named (the restore starts them in its own order)."""
        extra = ["--no-deps", *services] if services else []
        self.run("up", "-d", *extra)
