"""``stack restore --replace`` (stack layer): removing a half-restored project that an earlier
``stack restore`` created - and nothing else - before restoring again.

What an earlier restore created is recognised by its marks (`stackvault.stack.restorelabels`):

- every container of the project must carry `LABEL_RESTORE`; one without it (the project is
  not a restore's, or someone started a service of it since) refuses the replacement, and
  nothing is changed;
- the restore's record (`RECORD_FILE`, in the restored directory and in the containers'
  working directory) must not say that the restore completed (``ok``: the stack may hold
  data written since) nor that it is still under way in a live process of this host;
- then its containers (with their anonymous volumes), the named volumes and networks carrying
  its id, and the files and directories its record lists as created are removed.

`find_replacement` decides without changing anything (``--dry-run --replace`` lists it);
`remove_replacement` removes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stackvault.errors import RestoreRefused, SourceError
from stackvault.stack.compose import LABEL_PROJECT, LABEL_WORKDIR
from stackvault.stack.restorelabels import LABEL_RESTORE, alive, read_record
from stackvault.stack.restorereport import OK, RUNNING

if TYPE_CHECKING:
    from docker import DockerClient


@dataclass
class Replacement:
    """What ``--replace`` removes of the earlier restore(s) of a project."""

    project: str
    restore_ids: list[str] = field(default_factory=list)
    containers: dict[str, str] = field(default_factory=dict)
    """Id → name."""
    volumes: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        return [
            *(f"container {n}" for n in self.containers.values()),
            *(f"volume {v}" for v in self.volumes),
            *(f"network {n}" for n in self.networks),
            *self.paths,
        ]

    def covers(self, path: str) -> bool:
        """Whether removing it removes ``path``."""
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.paths)


def find_replacement(client: DockerClient, project: str, directory: str) -> Replacement:
    """What an earlier restore of ``project`` (into ``directory``) left; `RestoreRefused` when
    the project is not only a restore's or that restore is complete or still running."""
    import docker.errors

    out = Replacement(project)
    try:
        listed = client.api.containers(all=True, filters={"label": f"{LABEL_PROJECT}={project}"})
    except docker.errors.DockerException as exc:
        raise SourceError(f"cannot list the containers of the Docker engine: {exc}") from exc
    foreign = [_name(c) for c in listed if LABEL_RESTORE not in (c.get("Labels") or {})]
    if foreign:
        raise RestoreRefused(
            f"Compose project {project} has {len(foreign)} container(s) that no stack restore "
            f"created ({', '.join(sorted(foreign)[:5])}); --replace removes only what an "
            "earlier stack restore created, and nothing was changed",
            hint="remove that project yourself (docker compose down, after making sure it "
            "holds nothing you need) or restore under another --project",
        )
    directories = [directory]
    for c in listed:
        labels = c.get("Labels") or {}
        out.containers[str(c.get("Id"))] = _name(c)
        _add(out.restore_ids, labels[LABEL_RESTORE])
        _add(directories, str(labels.get(LABEL_WORKDIR) or directory))
    for where in directories:
        record = read_record(where)
        if record is None or (out.containers and record["restore_id"] not in out.restore_ids):
            continue  # another restore's record: not what the containers are
        _refuse_unless_half_restored(project, record)
        _add(out.restore_ids, record["restore_id"])
        for path in record.get("created") or []:
            if _removable(path):
                _add(out.paths, os.path.normpath(path))
    if out.restore_ids:
        try:
            for v in client.volumes.list(filters={"label": LABEL_RESTORE}):
                if (v.attrs.get("Labels") or {}).get(LABEL_RESTORE) in out.restore_ids:
                    out.volumes.append(str(v.name))
            for n in client.networks.list(filters={"label": LABEL_RESTORE}):
                if (n.attrs.get("Labels") or {}).get(LABEL_RESTORE) in out.restore_ids:
                    out.networks.append(str(n.name))
        except docker.errors.DockerException as exc:
            raise SourceError(f"cannot list the volumes and networks of the engine: {exc}") from exc
    return out


def _refuse_unless_half_restored(project: str, record: dict[str, Any]) -> None:
    status, rid = record.get("status"), record["restore_id"]
    when = f" (snapshot {str(record.get('snapshot') or '?')[:8]}, {record.get('started')})"
    keep = "; --replace removes only a half-restored project, and nothing was changed"
    if status == OK:
        raise RestoreRefused(
            f"project {project} was restored completely by stack restore {rid}{when}: it may "
            "hold data written since" + keep,
            hint=f"remove it yourself if it holds nothing you need (docker compose -p {project} "
            "down -v, then its files), or restore under another --project",
        )
    who = str(record.get("owner") or "")
    if status == RUNNING and alive(who):
        raise RestoreRefused(
            f"stack restore {rid} of project {project} is still under way (process {who})" + keep,
            hint="wait for it to end",
        )


def remove_replacement(client: DockerClient, r: Replacement) -> list[str]:
    """Remove what ``r`` lists; what was removed (``container NAME``, ..., paths).
    `SourceError` naming what could not be removed, after trying everything."""
    import docker.errors

    done: list[str] = []
    errors: list[str] = []
    for cid, name in r.containers.items():
        try:
            client.api.remove_container(cid, force=True, v=True)
            done.append(f"container {name}")
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            errors.append(f"container {name}: {exc}")
    for kind, names, get in (
        ("network", r.networks, client.networks.get),
        ("volume", r.volumes, client.volumes.get),
    ):
        for name in names:
            try:
                get(name).remove()
                done.append(f"{kind} {name}")
            except docker.errors.NotFound:
                pass
            except docker.errors.DockerException as exc:
                errors.append(f"{kind} {name}: {exc}")
    for path in sorted(r.paths, key=len):
        try:
            if _remove_path(path):
                done.append(path)
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror or exc}")
    if errors:
        raise SourceError(
            f"--replace could not remove {'; '.join(errors)[:800]}",
            hint="remove it yourself, then restore again",
        )
    return done


def _remove_path(path: str) -> bool:
    """Remove ``path`` (a directory with its content, never following a symlink); a directory
    that cannot go (a mount point) is emptied. Whether anything was there."""
    if not os.path.lexists(path):
        return False
    if os.path.isdir(path) and not os.path.islink(path):
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        try:
            os.rmdir(path)
        except OSError:
            pass
    else:
        os.unlink(path)
    return True


def _removable(path: object) -> bool:
    """A path a record may name for removal: absolute, normalised, not ``/``."""
    return (
        isinstance(path, str)
        and os.path.isabs(path)
        and os.path.normpath(path) == path.rstrip("/")
        and os.path.normpath(path) != "/"
    )


def _name(c: dict[str, Any]) -> str:
    names = c.get("Names") or [str(c.get("Id", ""))[:12]]
    return str(names[0]).lstrip("/")


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)
