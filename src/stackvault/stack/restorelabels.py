"""The marks a stack restore leaves on what it creates (stack layer): the labels on its
containers, volumes and networks, the Compose file that puts them there, and its record in the
restored directory - by which ``stack restore --replace`` recognises a half-restored project
(`stackvault.stack.replace`) and never anything else.

- Every container, named volume and network the restore creates carries `LABEL_RESTORE` (the
  restore's id) and `LABEL_RESTORE_SNAPSHOT` (the snapshot's id). Compose puts them on what it
  creates from `LABELS_FILE`, a file of the restored directory given after the project's own
  compose files (``-f``): labels only, for every service, every named volume and network the
  project declares (not the external ones). It stays there: the containers' Compose labels
  name it among their files.
- `RECORD_FILE`, in the restored directory, is the restore's report (`StackRestore.to_dict`),
  written when the first thing is created and again at the end, whatever the end: its status
  (``running``, ``ok``, ``invalid``, ``failed``, ``interrupted``), the files and directories it
  created, the process (``HOST:PID``) that restores.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Mapping
from datetime import datetime
from typing import Any

LABEL_RESTORE = "io.stackvault.restore"
"""On everything a stack restore creates; its value is the restore's id."""
LABEL_RESTORE_SNAPSHOT = "io.stackvault.restore.snapshot"
"""On everything a stack restore creates; its value is the id of the snapshot restored."""
RECORD_FILE = ".stackvault-restore.json"
"""In the restored directory: the restore's report, its record."""
LABELS_FILE = ".stackvault-restore.compose.yaml"
"""In the restored directory: the Compose file that labels what Compose creates."""


def new_restore_id(now: datetime) -> str:
    """``YYYYMMDD-HHMMSS-XXXXXX``: when, and six random hex digits."""
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def owner() -> str:
    """``HOST:PID`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def alive(who: str) -> bool:
    """Whether ``HOST:PID`` names a process of this host, other than this one, that exists
    (a restore still under way there)."""
    host, _, pid = who.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def restore_labels(restore_id: str, snapshot: str) -> dict[str, str]:
    return {LABEL_RESTORE: restore_id, LABEL_RESTORE_SNAPSHOT: snapshot}


def labels_document(
    resolved: Mapping[str, Any], version: object, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The Compose file that adds ``labels`` to every service, named volume and network of
    the project ``resolved`` (as ``docker compose config`` prints it); ``version`` is the
    ``version`` of the project's first compose file (Compose v1 refuses files of different
    versions; None: it has none). Volumes and networks carry labels from file format 2.1 on."""
    doc: dict[str, Any] = {} if version is None else {"version": str(version)}
    services = resolved.get("services")
    doc["services"] = {
        str(name): {"labels": dict(labels)}
        for name in (services if isinstance(services, dict) else {})
    }
    if not _labelled_volumes(version):
        return doc
    for key in ("volumes", "networks"):
        declared = resolved.get(key)
        declared = declared if isinstance(declared, dict) else {}
        names = [n for n, spec in declared.items() if not (spec or {}).get("external")]
        if key == "networks" and "default" not in declared:
            names.append("default")  # created only when a service uses it
        if names:
            doc[key] = {str(n): {"labels": dict(labels)} for n in names}
    return doc


def _labelled_volumes(version: object) -> bool:
    if version is None:
        return True
    try:
        major, minor = (int(x) for x in f"{version}.0".split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= (2, 1)


def write_labels_file(directory: str, doc: Mapping[str, Any]) -> str:
    """`LABELS_FILE` in ``directory`` (replaced if there: it is the restore's own)."""
    import yaml

    path = os.path.join(directory, LABELS_FILE)
    text = (
        "# written by stackvault stack restore: the labels of what the restore created "
        "(see stack restore --replace)\n" + yaml.safe_dump(dict(doc), sort_keys=False)
    )
    _write(path, text)
    return path


def write_record(directory: str, doc: Mapping[str, Any]) -> str:
    """`RECORD_FILE` in ``directory``, replaced atomically (mode 0600)."""
    path = os.path.join(directory, RECORD_FILE)
    _write(path, json.dumps(doc, indent=2) + "\n")
    return path


def read_record(directory: str) -> dict[str, Any] | None:
    """The record of the restore into ``directory``; None when there is none (or it is not a
    record)."""
    try:
        with open(os.path.join(directory, RECORD_FILE), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("restore_id"), str) else None


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
