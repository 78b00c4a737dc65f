"""Real database servers on 127.0.0.1 for tests, run from the Debian packages on this machine.

- `PostgresServer` - PostgreSQL 15 (``postgresql-15``: ``/usr/lib/postgresql/15/bin``);
- `MariaDBServer` - MariaDB (``mariadb-server``: ``mariadbd``, ``mariadb-install-db``);
- `RedisServer` - Redis (``redis-server``).

Each ``start()`` creates a fresh data directory ``/tmp/sv{pg,my,rd}-XXXXXXXX`` (under ``/tmp``
and not pytest's base temp, which is mode 0700 and owned by root: the ``postgres`` and ``mysql``
users must be able to reach their data directory, and unix socket paths must stay short), picks
a free port of 127.0.0.1, starts the server in its own session with its output appended to
``DIRECTORY/server.log``, and polls readiness with the client tool until ``start_timeout``
(``RuntimeError`` with the log tail otherwise; a port taken between choosing and binding it is
retried with another port). ``stop()`` stops the server (SIGTERM, then SIGKILL after a grace),
reaps it and deletes the directory; it is idempotent and also registered with `atexit`. The
kernel SIGKILLs a server whose test process dies (``PR_SET_PDEATHSIG``).

Every server listens on 127.0.0.1 only and reads no configuration of the machine
(``--no-defaults`` for MariaDB, only command-line options for Redis, a fresh ``initdb`` cluster
for PostgreSQL). Clients are the packages' command-line tools run with `subprocess`; their
environment drops the caller's ``PG*`` / ``MYSQL*`` / ``REDISCLI*`` variables so a developer's
settings cannot redirect them.

When the tests run as root (as here), PostgreSQL runs as the OS user ``postgres`` (``initdb``
and ``postgres`` refuse root) and MariaDB as ``mysql``; their directories belong to those
users. As another user, all three run as that user.

`ServerProcess` (one logged child process, used here and by `support.dockerd`) and
`free_port` are shared helpers.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from .seaweed import free_ports
from .servermarks import require_server

INSTALL_HINT = (
    "run  scripts/install-test-deps.sh  (Debian packages postgresql, mariadb-server, "
    "redis-server, docker.io)"
)
PG_MAJOR = 15
STOP_GRACE_SECONDS = 15.0
# Variables a developer may have set that would redirect or configure the client tools.
_CLIENT_ENV_PREFIXES = ("PG", "MYSQL", "MARIADB", "REDISCLI")


class ServerBinaryNotFoundError(RuntimeError):
    """A server or client binary these fixtures need is not installed."""


# -- processes -----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel SIGKILL the child if the test process dies.
    Python calls it after dropping to ``user``/``group``, so the setting survives that."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: nothing is imported after fork
    prctl = libc.prctl
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return preexec


def _exited(pid: int) -> bool:
    """Whether the child ``pid`` has exited, without reaping it (its process group id stays
    ours, so signalling the group afterwards cannot hit a stranger)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class ServerProcess:
    """One long-running child process in a session of its own, its stdout and stderr appended
    to ``log_path``. `stop` sends ``stop_signal`` to the process, waits up to ``grace`` seconds,
    then SIGKILLs its whole process group and reaps it."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and not _exited(self._proc.pid)

    def exit_status(self) -> int | None:
        """The exit status once the process has exited (reaping it), else None."""
        if self._proc is None or not _exited(self._proc.pid):
            return None
        return self._proc.wait()

    def start(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: int | None = None,
        group: int | None = None,
    ) -> None:
        """Spawn ``args`` (as ``user``:``group`` with no supplementary groups when given)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        self._log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(args)}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            list(args),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
            preexec_fn=_die_with_parent(),  # only prctl() runs after fork
        )

    def stop(self, grace: float = STOP_GRACE_SECONDS, stop_signal: int = signal.SIGTERM) -> None:
        """Stop and reap the process (idempotent); close the log."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.returncode is None:
                pgid = proc.pid  # start_new_session: it leads its own group
                if not _exited(pgid):
                    try:
                        os.kill(pgid, stop_signal)
                    except ProcessLookupError:
                        pass
                    deadline = time.monotonic() + grace
                    while not _exited(pgid) and time.monotonic() < deadline:
                        time.sleep(0.02)
                # The leader is alive or a zombie, so the group id still belongs to us.
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait(timeout=30)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log of {self.name}: {exc})"
        return "\n".join(text.splitlines()[-lines:])


# -- binaries and users --------------------------------------------------------------------


def find_binary(name: str, *candidates: str | Path) -> Path:
    """``name`` on ``PATH``, in ``/usr/sbin`` / ``/usr/bin``, or one of ``candidates`` (tried
    first); `ServerBinaryNotFoundError` with an install hint otherwise."""
    for candidate in candidates:
        path = Path(candidate)
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found:
        return Path(found)
    raise ServerBinaryNotFoundError(f"{name!r} not found (PATH, /usr/sbin); {INSTALL_HINT}")


def pg_bindir(major: int = PG_MAJOR) -> Path:
    """``/usr/lib/postgresql/MAJOR/bin`` (Debian's layout) or the directory of ``pg_ctl`` on
    ``PATH``, checked to hold ``initdb``, ``postgres``, ``psql``, ``pg_isready``, ``pgbench``."""
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin")]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "postgres", "psql", "pgbench")):
            return bindir
    raise ServerBinaryNotFoundError(
        f"PostgreSQL {major} binaries not found in {', '.join(map(str, candidates))}; "
        f"{INSTALL_HINT}"
    )


def service_user(name: str) -> tuple[int, int]:
    """(uid, gid) of the OS user ``name`` (e.g. ``postgres``, created by its package)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ServerBinaryNotFoundError(f"no OS user {name!r}; {INSTALL_HINT}") from None
    return entry.pw_uid, entry.pw_gid


def client_env(extra: Mapping[str, str]) -> dict[str, str]:
    """``os.environ`` without the client tools' own variables, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_CLIENT_ENV_PREFIXES)}
    return {**base, **extra}


class CommandError(RuntimeError):
    """A client command failed; the message has its exit status and stderr."""


def run_tool(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    input: str | None = None,
    timeout: float = 120.0,
    user: int | None = None,
    group: int | None = None,
) -> str:
    """Run a client tool; its stdout, or `CommandError` with its stderr."""
    proc = subprocess.run(
        list(args),
        input=input,
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout,
        check=False,
        user=user,
        group=group,
        extra_groups=[] if user is not None else None,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise CommandError(
            f"{Path(args[0]).name} exited with status {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
        )
    return proc.stdout


# -- servers -------------------------------------------------------------------------------


class _PortClashError(Exception):
    pass


class LoopbackServer:
    """Common life cycle: data directory, port, process, readiness polling, clean stop."""

    kind = "server"
    prefix = "svsrv-"
    stop_signal: int = signal.SIGTERM

    def __init__(self, *, start_timeout: float = 60.0) -> None:
        self.start_timeout = start_timeout
        self.startup_seconds: float | None = None
        """Seconds from the first spawn until the server answered (last successful start)."""
        self._directory: Path | None = None
        self._port: int | None = None
        self._process: ServerProcess | None = None

    # -- information ---------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The server's temporary directory (data, socket, log); deleted by `stop`."""
        if self._directory is None:
            raise RuntimeError(f"the {self.kind} server has not been started")
        return self._directory

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1."""
        if self._port is None:
            raise RuntimeError(f"the {self.kind} server has not been started")
        return self._port

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log (for error messages)."""
        if self._process is None:
            return f"(the {self.kind} server has not been started)"
        return self._process.log_tail(lines)

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> LoopbackServer:
        """Create the directory, initialise the data, start the server and wait until it
        answers; `RuntimeError` with the log tail if it exits or does not answer in time."""
        require_server(self.kind, f"a {self.kind} server")
        if self._directory is not None:
            raise RuntimeError(f"the {self.kind} server is already running")
        self._directory = Path(tempfile.mkdtemp(prefix=self.prefix, dir="/tmp"))
        self._process = ServerProcess(self.kind, self._directory / "server.log")
        atexit.register(self.stop)
        started = time.monotonic()
        try:
            self._prepare()
            for _attempt in range(3):
                self._port = free_port()
                self._spawn(self._process)
                try:
                    self._wait_until_ready(time.monotonic() + self.start_timeout)
                except _PortClashError:
                    self._process.stop(grace=2.0)
                    continue
                self.startup_seconds = time.monotonic() - started
                return self
            raise RuntimeError(
                f"the {self.kind} server could not bind a port in 3 attempts; "
                f"log tail:\n{self.log_tail()}"
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server, reap it and delete its directory. Idempotent."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        directory, self._directory = self._directory, None
        try:
            if process is not None:
                process.stop(stop_signal=self.stop_signal)
        finally:
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- for subclasses ------------------------------------------------------------------

    def _prepare(self) -> None:
        """Initialise the data directory (before the first spawn)."""

    def _spawn(self, process: ServerProcess) -> None:
        raise NotImplementedError

    def _ready(self) -> bool:
        """Whether the server answers (one cheap probe)."""
        raise NotImplementedError

    def _wait_until_ready(self, deadline: float) -> None:
        process = self._process
        assert process is not None
        while True:
            status = process.exit_status()
            if status is not None:
                tail = self.log_tail()
                if "already in use" in tail.lower():
                    raise _PortClashError
                raise RuntimeError(
                    f"the {self.kind} server exited with status {status} before it answered; "
                    f"log tail:\n{tail}"
                )
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the {self.kind} server on 127.0.0.1:{self.port} did not answer within "
                    f"{self.start_timeout:.0f} s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _probe(self, args: Sequence[str], env: Mapping[str, str]) -> bool:
        try:
            proc = subprocess.run(
                list(args),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=5,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0

    def _hand_over(self, owner: tuple[int, int] | None, *paths: Path) -> None:
        """chown ``paths`` to ``owner`` (uid, gid) when running as root."""
        if owner is not None:
            for path in paths:
                os.chown(path, *owner)


def _run_as(owner: tuple[int, int] | None) -> tuple[int | None, int | None]:
    """(user, group) for `subprocess`: ``owner``, or (None, None) for "as we are"."""
    return (None, None) if owner is None else owner


class PostgresServer(LoopbackServer):
    """PostgreSQL 15 on 127.0.0.1 (``listen_addresses=127.0.0.1``; socket in `directory`).

    Cluster: ``initdb --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C``,
    superuser ``postgres`` with the random `password` (hex). Clients over TCP need the
    password (`env`); `url` has no password in it."""

    kind = "PostgreSQL"
    prefix = "svpg-"
    stop_signal = signal.SIGINT  # "fast" shutdown: disconnects clients, as the official image

    def __init__(self, *, start_timeout: float = 60.0, bindir: Path | None = None) -> None:
        super().__init__(start_timeout=start_timeout)
        self.bindir = bindir or pg_bindir()
        self.user = "postgres"
        self.password = secrets.token_hex(16)
        self._owner = service_user("postgres") if os.geteuid() == 0 else None

    def env(self) -> dict[str, str]:
        """``PGHOST=127.0.0.1``, ``PGPORT``, ``PGUSER=postgres``, ``PGPASSWORD`` for clients."""
        return {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
        }

    def url(self, db: str = "postgres") -> str:
        """``postgres://postgres@127.0.0.1:PORT/DB`` (no password: it is in `env`)."""
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run ``sql`` (one or more statements, fed on stdin) with ``psql -X -A -t -q -v
        ON_ERROR_STOP=1`` over TCP with the password; return stdout without the final newline
        (rows as ``a|b``, one per line). `CommandError` on any SQL error."""
        args = [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        out = run_tool([*args, "-d", db, "-f", "-"], env=client_env(self.env()), input=sql)
        return out.rstrip("\n")

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name``; returns ``name``."""
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def pgbench_init(self, db: str, scale: int = 1) -> None:
        """``pgbench -i -s SCALE -q DB``: the pgbench tables with 100 000 x SCALE accounts
        (the database must exist). Output is kept out of the test log."""
        args = [str(self.bindir / "pgbench"), "-i", "-s", str(scale), "-q", db]
        run_tool(args, env=client_env(self.env()), timeout=600)

    def _prepare(self) -> None:
        d = self.directory
        self._hand_over(self._owner, d)
        pwfile = d / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._hand_over(self._owner, pwfile)
        args = [
            str(self.bindir / "initdb"),
            "-D",
            str(d / "data"),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]
        env = client_env({"HOME": str(d), "LC_ALL": "C"})
        try:
            user, group = _run_as(self._owner)
            run_tool(args, env=env, user=user, group=group)
        except CommandError as exc:
            raise RuntimeError(f"initdb failed: {exc}") from None
        finally:
            pwfile.unlink()

    def _spawn(self, process: ServerProcess) -> None:
        d = self.directory
        args = [
            str(self.bindir / "postgres"),
            "-D",
            str(d / "data"),
            "-p",
            str(self.port),
            "-k",
            str(d),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "logging_collector=off",
        ]
        env = client_env({"HOME": str(d), "LC_ALL": "C"})
        user, group = _run_as(self._owner)
        process.start(args, env=env, cwd=d, user=user, group=group)

    def _ready(self) -> bool:
        args = [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return self._probe(args, client_env({}))


def mariadb_init_sql(password: str) -> str:
    """The ``--init-file`` that gives ``root@localhost`` (the only root account
    ``mariadb-install-db`` creates; TCP clients from 127.0.0.1 are ``localhost`` to MariaDB)
    the password ``password`` instead of unix-socket authentication."""
    if not password.isalnum():
        raise ValueError("the generated password must be alphanumeric")
    return f"ALTER USER root@localhost IDENTIFIED BY '{password}';\n"


class MariaDBServer(LoopbackServer):
    """MariaDB on 127.0.0.1 (``--bind-address=127.0.0.1 --skip-networking=0``, socket in
    `directory`, ``--no-defaults``: nothing of /etc/mysql is read).

    ``root@localhost`` gets the random `password` (hex) through ``--init-file`` at every start
    (so the server never answers before it is set); clients pass it as ``MYSQL_PWD`` (`env`).
    Character set ``utf8mb4`` (Debian's packaged default)."""

    kind = "MariaDB"
    prefix = "svmy-"

    def __init__(self, *, start_timeout: float = 60.0) -> None:
        super().__init__(start_timeout=start_timeout)
        self.mariadbd = find_binary("mariadbd", "/usr/sbin/mariadbd")
        self.install_db = find_binary("mariadb-install-db")
        self.client = find_binary("mariadb")
        self.user = "root"
        self.password = secrets.token_hex(16)
        self._owner = service_user("mysql") if os.geteuid() == 0 else None

    @property
    def socket(self) -> Path:
        return self.directory / "mysqld.sock"

    def env(self) -> dict[str, str]:
        """``MYSQL_HOST=127.0.0.1``, ``MYSQL_TCP_PORT``, ``MYSQL_PWD`` for the client tools
        (which take the user from ``-u root``)."""
        return {
            "MYSQL_HOST": "127.0.0.1",
            "MYSQL_TCP_PORT": str(self.port),
            "MYSQL_PWD": self.password,
        }

    def url(self, db: str = "") -> str:
        """``mysql://root@127.0.0.1:PORT/DB`` (no password: it is in `env`)."""
        return f"mysql://{self.user}@127.0.0.1:{self.port}/{db}"

    def sql(self, sql: str, db: str | None = None) -> str:
        """Run ``sql`` (fed on stdin) with ``mariadb --batch --skip-column-names`` over TCP as
        root with the password; return stdout without the final newline (tab-separated rows).
        `CommandError` on any error."""
        args = [
            str(self.client),
            "--no-defaults",
            "--protocol=tcp",
            "-h",
            "127.0.0.1",
            "-P",
            str(self.port),
            "-u",
            self.user,
            "--batch",
            "--skip-column-names",
        ]
        if db:
            args.append(db)
        return run_tool(args, env=client_env(self.env()), input=sql).rstrip("\n")

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name``; returns ``name``."""
        self.sql(f"CREATE DATABASE `{name}`")
        return name

    def _prepare(self) -> None:
        d = self.directory
        (d / "tmp").mkdir()
        init = d / "init.sql"
        init.write_text(mariadb_init_sql(self.password))
        init.chmod(0o600)
        self._hand_over(self._owner, d, d / "tmp", init)
        args = [
            str(self.install_db),
            "--no-defaults",
            f"--datadir={d / 'data'}",
            "--skip-test-db",
        ]
        if self._owner is not None:
            args.append("--user=mysql")
        try:
            run_tool(args, env=client_env({"HOME": str(d)}), timeout=300)
        except CommandError as exc:
            raise RuntimeError(f"mariadb-install-db failed: {exc}") from None

    def _spawn(self, process: ServerProcess) -> None:
        d = self.directory
        args = [
            str(self.mariadbd),
            "--no-defaults",
            f"--datadir={d / 'data'}",
            f"--socket={self.socket}",
            f"--pid-file={d / 'mariadbd.pid'}",
            f"--tmpdir={d / 'tmp'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-networking=0",
            f"--init-file={d / 'init.sql'}",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
        ]
        if self._owner is not None:
            args.append("--user=mysql")  # mariadbd drops root itself
        process.start(args, env=client_env({"HOME": str(d)}), cwd=d)

    def _ready(self) -> bool:
        args = [
            str(self.client),
            "--no-defaults",
            "--protocol=tcp",
            "-h",
            "127.0.0.1",
            "-P",
            str(self.port),
            "-u",
            self.user,
            "-e",
            "SELECT 1",
        ]
        return self._probe(args, client_env(self.env()))


class RedisServer(LoopbackServer):
    """Redis on 127.0.0.1 with its directory (RDB target) in `directory`: ``--save ""
    --appendonly no`` (no automatic snapshots; ``SAVE`` / ``BGSAVE`` still write
    ``dump.rdb`` there), ``requirepass`` when ``password`` is given."""

    kind = "Redis"
    prefix = "svrd-"

    def __init__(self, *, start_timeout: float = 60.0, password: str | None = None) -> None:
        super().__init__(start_timeout=start_timeout)
        self.server = find_binary("redis-server")
        self.client = find_binary("redis-cli")
        self.password = password

    def env(self) -> dict[str, str]:
        """``REDISCLI_AUTH`` when a password is set (redis-cli reads it), else nothing."""
        return {"REDISCLI_AUTH": self.password} if self.password else {}

    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` (no password in it)."""
        return f"redis://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        """``redis-cli -e -h 127.0.0.1 -p PORT ARGS...`` (raw replies); stdout without the final
        newline. An error reply raises `CommandError` (``-e``: exit status 1)."""
        cmd = [str(self.client), "-e", "-h", "127.0.0.1", "-p", str(self.port), *args]
        return run_tool(cmd, env=client_env(self.env())).rstrip("\n")

    def _spawn(self, process: ServerProcess) -> None:
        args = [
            str(self.server),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        process.start(args, env=client_env({}), cwd=self.directory)

    def _ready(self) -> bool:
        try:
            return self.cli("PING") == "PONG"
        except (CommandError, subprocess.TimeoutExpired):
            return False
