"""Throwaway database servers for drills of jobs without a stack (stack layer): a temporary
PostgreSQL cluster or MariaDB server made with this host's own server programs, listening on
127.0.0.1 at a free port, with its data in the drill's directory (for a PostgreSQL artifact
captured in a container, `stackvault.stack.drill.containerserver` runs one in a container of
that image instead); stopped and removed after the drill (see `stackvault.stack.drill.source`).

Contract: `start` returns once the server answers, or raises `SourceError` saying what is
missing (the programs, the user they run as) or why it did not start (its log's tail); `url`
is the URL a restore loads the artifact through (the whole server: every database of the
artifact); `stop` ends the server (SIGKILL after a grace period) and never raises. A server
runs as this host's ``postgres`` / ``mysql`` user when stackvault runs as root (their own
programs refuse root), and is killed by the kernel if the drill's process dies, so no server
outlives its drill.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import quote

from stackvault.errors import SourceError

START_TIMEOUT_S = 90.0
STOP_GRACE_S = 30.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn``: the kernel kills the server when the drill's process dies (Python
    calls it after dropping to the server's user, so the setting survives that)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return preexec


class DrillServer(Protocol):
    """What a drill asks of a throwaway server (on this host or in a container)."""

    family: str
    port: int

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def url(self, database: str | None = None) -> str: ...

    def describe(self) -> str: ...

    @property
    def running(self) -> bool: ...


class ThrowawayServer(ABC):
    """One server of a drill (see the module docstring)."""

    family: str
    """``PostgreSQL`` or ``MariaDB``, for messages."""
    user: str
    """The host user the server runs as when stackvault runs as root."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        """Where its data, socket and log live (made by `start`)."""
        self.port = 0
        self.version = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._owner: tuple[int, int] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def describe(self) -> str:
        """``PostgreSQL 15.10 on 127.0.0.1:PORT``."""
        return f"{self.family} {self.version} on {self.address}".replace("  ", " ")

    def start(self) -> None:
        """Make the server's directory and data, start it, wait until it answers."""
        os.makedirs(self.directory, mode=0o700)
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(self.user)
            except KeyError:
                raise SourceError(
                    f"this host has no {self.user} user to run a throwaway {self.family} "
                    "server as (its programs refuse root)",
                    hint=f"install the {self.family} server package, which creates it",
                ) from None
            self._owner = (entry.pw_uid, entry.pw_gid)
            os.chown(self.directory, *self._owner)
        self.prepare()
        self.port = free_port()
        log = open(os.path.join(self.directory, "server.log"), "wb")  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=self.environment(),
                user=self._owner[0] if self._owner else None,
                group=self._owner[1] if self._owner else None,
                preexec_fn=_die_with_parent(),
            )
        except OSError as exc:
            raise SourceError(f"the throwaway {self.family} server did not start: {exc}") from exc
        finally:
            log.close()
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise SourceError(
                    f"the throwaway {self.family} server exited with status "
                    f"{self._process.returncode}: {self.log_tail()}"
                )
            if self.ready():
                return
            time.sleep(0.2)
        raise SourceError(
            f"the throwaway {self.family} server did not answer within "
            f"{START_TIMEOUT_S:.0f} s: {self.log_tail()}"
        )

    def stop(self) -> None:
        """End the server: its own clean shutdown, SIGKILL after `STOP_GRACE_S`."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(OSError):
            process.send_signal(self.stop_signal)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                process.kill()
            process.wait(10)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, size: int = 400) -> str:
        try:
            with open(os.path.join(self.directory, "server.log"), "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "no log"
        return " / ".join(text[-size:].strip().splitlines()) or "no output"

    def _run(self, argv: Sequence[str], what: str, *, as_owner: bool = True) -> str:
        """A setup program, run to its end; `SourceError` with its output when it fails."""
        owner = self._owner if as_owner else None
        try:
            done = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                cwd=self.directory,
                env=self.environment(),
                user=owner[0] if owner else None,
                group=owner[1] if owner else None,
                timeout=300,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SourceError(f"{what} failed: {exc}") from exc
        out = (done.stdout + done.stderr).decode("utf-8", "replace")
        if done.returncode != 0:
            tail = " / ".join(out.strip()[-400:].splitlines())
            raise SourceError(f"{what} exited with status {done.returncode}: {tail}")
        return out

    def environment(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "HOME": self.directory,
        }

    stop_signal: int = signal.SIGTERM

    @abstractmethod
    def prepare(self) -> None:
        """Make the server's data (``initdb``, ``mariadb-install-db``)."""

    @abstractmethod
    def command(self) -> list[str]:
        """The server's command line."""

    @abstractmethod
    def ready(self) -> bool:
        """Whether it answers now."""

    @abstractmethod
    def url(self, database: str | None = None) -> str:
        """The restore target, reached as its superuser: ``database`` (made by the
        restore), or the whole server."""


def _newest(paths: Sequence[str]) -> str | None:
    """The path with the highest version number in it."""

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)

    return max(paths, key=version) if paths else None


class PostgresServer(ThrowawayServer):
    """A PostgreSQL cluster of this host's newest PostgreSQL (``initdb`` with trust
    authentication, which only this host's loopback and the socket in its directory reach)."""

    family = "PostgreSQL"
    user = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        found = _newest(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        found = found or _newest(glob.glob("/usr/pgsql-*/bin/initdb")) or shutil.which("initdb")
        if found is None:
            raise SourceError(
                "this host has no PostgreSQL server programs (initdb, postgres) for a "
                "throwaway server",
                hint="install the PostgreSQL server package (same or newer major version)",
            )
        self.bindir = os.path.dirname(found)

    def prepare(self) -> None:
        said = self._run([self._bin("postgres"), "--version"], "postgres --version")
        found = re.search(r"\(PostgreSQL\) (\S+)", said)
        self.version = found.group(1) if found else ""
        self._run(
            [
                self._bin("initdb"),
                "-D",
                os.path.join(self.directory, "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb of the throwaway PostgreSQL cluster",
        )

    def command(self) -> list[str]:
        return [
            self._bin("postgres"),
            "-D",
            os.path.join(self.directory, "data"),
            "-p",
            str(self.port),
            "-k",
            self.directory,
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "logging_collector=off",
        ]

    def ready(self) -> bool:
        argv = [self._bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(argv, capture_output=True, check=False, timeout=10).returncode == 0

    def url(self, database: str | None = None) -> str:
        path = quote(database or "", safe="")
        return f"postgres://postgres@127.0.0.1:{self.port}/{path}?sslmode=disable"

    def _bin(self, name: str) -> str:
        return os.path.join(self.bindir, name)


class MariaDBServer(ThrowawayServer):
    """A MariaDB server of this host's ``mariadbd`` (``--no-defaults``: nothing of
    ``/etc/mysql`` is read); ``root@localhost`` gets a random password at start, which the
    restore reads from an option file of the drill's directory."""

    family = "MariaDB"
    user = "mysql"

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        server = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin")
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if server is None or install is None:
            raise SourceError(
                "this host has no MariaDB server programs (mariadbd, mariadb-install-db) for a "
                "throwaway server",
                hint="install the MariaDB server package",
            )
        self.server, self.install = server, install
        self.password = secrets.token_hex(16)

    def prepare(self) -> None:
        d = self.directory
        self.version = self._run([self.server, "--version"], "mariadbd --version")
        found = re.search(r"Ver (\S+)", self.version)
        self.version = found.group(1) if found else ""
        os.mkdir(os.path.join(d, "tmp"), 0o700)
        init = os.path.join(d, "init.sql")
        with open(init, "w", encoding="utf-8") as f:
            f.write(f"ALTER USER root@localhost IDENTIFIED BY '{self.password}';\n")
        os.chmod(init, 0o600)
        client = os.path.join(d, "client.cnf")
        with open(os.open(client, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(f"[client]\nuser=root\npassword={self.password}\n")
        if self._owner is not None:
            for path in (os.path.join(d, "tmp"), init):
                os.chown(path, *self._owner)
        argv = [self.install, "--no-defaults", f"--datadir={d}/data", "--skip-test-db"]
        if self._owner is not None:
            argv.append(f"--user={self.user}")
        self._run(argv, "mariadb-install-db of the throwaway MariaDB server", as_owner=False)

    def command(self) -> list[str]:
        d = self.directory
        return [
            self.server,
            "--no-defaults",
            f"--datadir={d}/data",
            f"--socket={d}/mysqld.sock",
            f"--pid-file={d}/mariadbd.pid",
            f"--tmpdir={d}/tmp",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-networking=0",
            f"--init-file={d}/init.sql",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
        ]

    def ready(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            try:
                s.connect(("127.0.0.1", self.port))
                return bool(s.recv(4))  # the server's greeting: it takes clients
            except OSError:
                return False

    def url(self, database: str | None = None) -> str:
        cnf = quote(os.path.join(self.directory, "client.cnf"), safe="/")
        path = quote(database or "", safe="")
        return f"mysql://root@127.0.0.1:{self.port}/{path}?defaults_file={cnf}"
