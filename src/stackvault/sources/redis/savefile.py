"""What a Redis capture needs of the server's save file, checked before a backup (sources
layer).

A capture in a container asks the server for a ``BGSAVE``, then reads the file ``CONFIG GET
dir`` + ``dbfilename`` names with ``cat`` as the container's user (`container`); a capture on a
host asks for ``SYNC``, for which the server saves too. So, before anything is stopped, a
backup's preflight asks (`save_problems`): did the server's last save succeed
(``rdb_last_bgsave_status`` of ``INFO persistence``: ``err`` after an unwritable directory or a
full disk, and the backup's own save would fail the same way); in a container, does ``CONFIG
GET dir`` answer (it is often renamed away), can the server's own user write that directory,
and can the container's user read the save file if there is one. Each problem is one sentence
and a fix; nothing is saved or changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from stackvault.sources.redis.container import SERVERS, join
from stackvault.sources.redis.rdb import RDB
from stackvault.sources.redis.resp import parse_info

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

    from stackvault.sources.redis.rediscli import RedisCli


@dataclass(frozen=True)
class SaveProblem:
    """Why a capture of the server would fail: what was found, and what to do."""

    message: str
    fix: str


def last_save_problem(persistence: dict[str, str], container: str | None) -> SaveProblem | None:
    """The server's last save failed (``rdb_last_bgsave_status:err``), if it did."""
    if persistence.get("rdb_last_bgsave_status") != "err":
        return None
    log = f" (docker logs {container})" if container else ""
    return SaveProblem(
        "its last save failed (rdb_last_bgsave_status:err), so the backup's save would fail too",
        f"see the server's log{log}: often its data directory is not writable or the disk is "
        "full; once that is fixed, a BGSAVE that succeeds clears this",
    )


_SERVER_USER = r"""
test ! -e "$1" || test -r "$1" || echo unreadable
for p in /proc/[0-9]*; do
  c=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
  set -- $c
  case " $PROGRAMS " in *" ${1##*/} "*) ;; *) continue;; esac
  u=$(sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/\1/p' "$p/status")
  g=$(sed -n 's/^Gid:[[:space:]]*\([0-9]*\).*/\1/p' "$p/status")
  echo "$u:$g"
  exit 0
done
"""
"""Prints ``unreadable`` when the save file ``$1`` exists but cannot be read, then ``UID:GID``
of the server process in the container (its effective ids)."""

_WRITABLE = 'test -d "$1" && test -w "$1"'


def _config_value(reply: str) -> str:
    """The value of a ``CONFIG GET NAME`` reply (``NAME\\nVALUE``); empty for an error."""
    parts = reply.split("\n")
    return parts[1].strip() if len(parts) >= 2 and not reply.startswith("ERR") else ""


def container_save_problems(
    cli: RedisCli, client: DockerClient, container: Container
) -> list[SaveProblem]:
    """Every `SaveProblem` of the server ``cli`` reaches in ``container`` (see the module
    docstring)."""
    from stackvault.sources.docker.exec import ContainerRunner

    name = str(container.name)
    info, directory, filename = cli.script(
        ["INFO persistence", "CONFIG GET dir", "CONFIG GET dbfilename"]
    )
    out = [p for p in [last_save_problem(parse_info(info), name)] if p is not None]
    directory = _config_value(directory)
    if not directory:
        out.append(
            SaveProblem(
                "CONFIG GET dir does not answer, but the capture reads the save file where it says",
                "allow CONFIG GET for the backup's connection (rename-command, ACL)",
            )
        )
        return out
    path = join(directory, _config_value(filename) or RDB)
    found = cli.runner.run(
        ["sh", "-c", _SERVER_USER, "sh", path],
        env={"PROGRAMS": " ".join(sorted(SERVERS))},
        timeout=30,
    )
    lines = found.text.split() if found.code == 0 else []
    user = next((line for line in lines if ":" in line), "")
    server = ContainerRunner(client, container, user=user) if user else cli.runner
    if server.run(["sh", "-c", _WRITABLE, "sh", directory], timeout=30).code != 0:
        who = f"user {user}" if user else "its user"
        out.append(
            SaveProblem(
                f"the server's save directory {directory} in container {name} is not writable "
                f"for the server ({who}), so its save would fail",
                "make the directory (its volume) writable for the server's user, or point "
                "`dir` at one that is",
            )
        )
    if "unreadable" in lines:
        out.append(
            SaveProblem(
                f"the save file {path} in container {name} is not readable for the "
                "container's user, who reads it for the capture",
                "make it readable for that user (the container's `user:`)",
            )
        )
    return out
