"""``redis-cli`` run in a container through a `ContainerRunner` (sources layer)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from stackvault.errors import SourceError
from stackvault.sources.redis.resp import parse_info, reply_error

if TYPE_CHECKING:
    from stackvault.sources.docker.exec import ContainerRunner

_ERROR_REPLY = re.compile(
    r"^(ERR|WRONGPASS|NOAUTH|NOPERM|LOADING|BUSY|MISCONF|READONLY|MASTERDOWN|OOM|DENIED|"
    r"NOMASTERLINK|WRONGTYPE|EXECABORT)\b"
)


class RedisCli:
    """``redis-cli`` run in a container through a `ContainerRunner`."""

    def __init__(
        self,
        runner: ContainerRunner,
        port: int,
        user: str | None,
        location: str,
        env: Mapping[str, str] | None = None,
    ):
        self.runner = runner
        self.env = dict(env or {})
        """Added to redis-cli's environment (``REDISCLI_AUTH``: a password; never printed)."""
        self.location = location
        self.base = ["redis-cli", "-h", "127.0.0.1", "-p", str(port)]
        if user:
            self.base += ["--user", user]
        self._exit_codes = True  # redis-cli -e (Redis 7); older ones do not know it

    def call(self, *args: str, timeout: float = 120) -> str:
        """One command; its raw reply (without the final newline)."""
        while True:
            argv = [*self.base, *(["-e"] if self._exit_codes else []), *args]
            res = self.runner.run(argv, env=self.env, timeout=timeout)
            out = res.text.rstrip("\n")
            err = res.stderr.strip()
            if self._exit_codes and "Unrecognized option" in (err + out):
                self._exit_codes = False
                continue
            if res.code != 0 or _ERROR_REPLY.match(out) or _ERROR_REPLY.match(err):
                raise self.error(args[0], err or out)
            return out

    def script(self, commands: Sequence[str], timeout: float = 120) -> list[str]:
        """Commands (no spaces in arguments) sent through one connection, in order; their
        raw replies (error replies included: the caller checks them)."""
        marker = f"@@stackvault-{secrets.token_hex(6)}"
        lines = []
        for i, command in enumerate(commands):
            if i:
                lines.append(f"ECHO {marker}")
            lines.append(command)
        script = ("\n".join(lines) + "\n").encode()
        res = self.runner.run(self.base, stdin=script, env=self.env, timeout=timeout)
        if res.code != 0:
            raise self.error(commands[0].split()[0], res.stderr.strip() or res.text)
        parts = res.text.split(f"{marker}\n")
        if len(parts) != len(commands):
            raise self.error(commands[0].split()[0], res.stderr.strip() or res.text[-300:])
        return [p.rstrip("\n") for p in parts]

    def error(self, command: str, text: str) -> SourceError:
        text = text.replace("AUTH failed: ", "").strip()
        if "Could not connect" in text:
            return SourceError(
                f"redis-cli {self.runner.where} cannot reach the server ({text[:200]})",
                hint="give the port the server listens on in the container: "
                "redis+docker://CONTAINER:PORT",
            )
        lines = text.splitlines()
        replies = [line for line in lines if _ERROR_REPLY.match(line)]
        return reply_error(self.location, command, (replies or lines or [""])[0])

    def info(self, section: str) -> dict[str, str]:
        return parse_info(self.call("INFO", section))

    def config_get(self, name: str) -> str:
        out = self.call("CONFIG", "GET", name).split("\n")
        return out[1] if len(out) >= 2 else ""
