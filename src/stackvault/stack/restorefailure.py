"""What a stack restore that failed says and leaves (stack layer): the files and directories it
created (its record lists them, for ``--replace``), the logs to read - of the services that
never became ready and of those not running or not healthy - and how to clean up.

Nothing here raises: a report of a failure says what it can.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from stackvault.errors import EXIT_ERROR, EXIT_INTERRUPTED, Interrupted, StackvaultError
from stackvault.stack.compose import LABEL_PROJECT, LABEL_SERVICE
from stackvault.stack.readiness import not_running
from stackvault.stack.restorelabels import LABELS_FILE, RECORD_FILE
from stackvault.stack.restoreplan import plan_file_path
from stackvault.stack.restorereport import FAILED, INTERRUPTED, LogHint, StackRestore
from stackvault.stack.restoretarget import RestoreTarget

if TYPE_CHECKING:
    from docker import DockerClient

Shown = Callable[..., str]
"""A Compose command line for a person (`Compose.shown`)."""


def created_paths(target: RestoreTarget) -> list[str]:
    """What the restore is about to create: each restored entry, bind-mount directory, the
    plan file, its labels file and record - those absent now (or empty directories)."""
    mapped = [target.map_path(p) for p in target.file_entries()]
    mapped += [target.map_path(p) for p in target.m.mount_dirs]
    mapped.append(plan_file_path(target))
    mapped += [os.path.join(target.new_dir, f) for f in (LABELS_FILE, RECORD_FILE)]
    return [p for p in dict.fromkeys(mapped) if _new_or_empty(p)]


def failed(report: StackRestore, exc: BaseException) -> None:
    """The status, error, failed step and exit code of a restore that ``exc`` ended."""
    interrupted = isinstance(exc, KeyboardInterrupt | Interrupted)
    report.status = INTERRUPTED if interrupted else FAILED
    report.failed_step = next((s.name for s in report.steps if s.status == "failed"), None)
    if isinstance(exc, StackvaultError):
        report.error, report.exit_code = str(exc), exc.exit_code
    else:
        report.error = "interrupted" if interrupted else f"{type(exc).__name__}: {exc}"
        report.exit_code = EXIT_INTERRUPTED if interrupted else EXIT_ERROR


def cleanup_commands(target: RestoreTarget, shown: Shown, record: str) -> list[str]:
    """How to remove the half-restored project: ``--replace``, or Compose and the record."""
    again = f"stackvault stack restore {target.snapshot.short_id}"
    if target.new_project != target.old_project:
        again += f" --project {target.new_project}"
    if target.new_dir != target.old_dir:
        again += f" --directory {target.new_dir}"
    return [
        f"{again} --replace  # removes only what this restore created, then restores again",
        f"{shown('down', '-v')}  # by hand: the containers, networks and volumes; then remove "
        f'the paths listed under "created" in {record}',
    ]


def logs_to_read(
    client: DockerClient, project: str, unready: Mapping[str, str], shown: Shown
) -> list[LogHint]:
    """The services that did not become ready (``unready``: service → what it was last), and
    those whose container is not running or not healthy, with the commands that show their
    logs. Empty when the engine cannot be asked."""
    import docker.errors

    try:
        found = client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={project}"})
    except docker.errors.DockerException:
        found = []
    out: dict[str, LogHint] = {}
    for c in sorted(found, key=lambda c: str(c.name)):
        service = str(c.labels.get(LABEL_SERVICE) or c.name)
        problem = not_running(c.attrs.get("State") or {})
        why = unready.get(service) or (f"it is {problem}" if problem else "")
        if why and service not in out:
            out[service] = LogHint(service, why, [f"docker logs {c.name}", shown("logs", service)])
    for service, why in unready.items():
        out.setdefault(service, LogHint(service, why, [shown("logs", service)]))
    return list(out.values())


def _new_or_empty(path: str) -> bool:
    """Absent, or an empty directory: what the restore fills is its own."""
    try:
        return not os.path.lexists(path) or (os.path.isdir(path) and not os.listdir(path))
    except OSError:
        return False
