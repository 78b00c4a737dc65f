"""Side-by-side benchmark: stackvault, restic and borg on the same dataset.

For every run and every tool, on a fresh copy of the same generated dataset (see
:mod:`bench.dataset`) at the same path, five phases are measured::

    initial    first backup into a fresh, encrypted repository
    nochange   a second backup with nothing changed (the tools' caches are kept)
    mutated    a backup after bench.dataset.mutate (~5 % changed)
    restore    a full restore of the latest snapshot into an empty directory
    check      a full verification that reads every byte (borg: --verify-data)

and the repository size after the three backups. Each tool runs as a child process; wall time,
user+system CPU time and peak RSS come from ``os.wait4``. Copying the dataset, mutating it,
warming or dropping the page cache and verifying restores are never timed. Each figure is the
median of the runs; a failing phase is reported with its exit code and stderr tail.

Usage::

    python -m bench.compare --scale 0.1 --runs 1          # quick: ~100 MB
    python -m bench.compare                               # ~1 GB, 3 runs
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import dataset

BENCH_DIR = Path(__file__).resolve().parent
PASSWORD = "stackvault benchmark password, not a secret"
PHASES = ("initial", "nochange", "mutated", "restore", "check")
PHASE_TITLES = {
    "initial": "initial backup",
    "nochange": "no-change backup",
    "mutated": "backup after ~5% change",
    "restore": "full restore",
    "check": "check, read all data",
}
ALL_TOOLS = ("stackvault", "restic", "borg")
TAIL_LINES = 15
MB = 10**6


# --------------------------------------------------------------------------------------------
# measuring one child process
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One command line and the directory it runs in."""

    argv: list[str]
    cwd: Path | None = None

    def shell(self) -> str:
        """The command as one would type it (for the report)."""
        text = subprocess.list2cmdline(self.argv)
        return f"(cd {self.cwd} && {text})" if self.cwd else text


@dataclass
class Result:
    """Resource usage and outcome of one measured command."""

    phase: str
    command: str
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_kb: int
    source_bytes: int
    other_cpu_s: float = 0.0
    idle_wait_s: float = 0.0
    timed_out: bool = False
    problem: str = ""
    stdout_tail: str = ""
    stderr_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.problem

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body.update(ok=self.ok, cpu_s=round(self.cpu_s, 3), max_rss_mb=self.max_rss_kb * 1024 / MB)
        body["throughput_mb_s"] = self.source_bytes / MB / self.wall_s if self.wall_s else None
        return body


def _tail(path: Path) -> str:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 8192))
        lines = f.read().decode(errors="replace").splitlines()
    return "\n".join(lines[-TAIL_LINES:])


def _busy_cpu_s() -> float:
    """CPU seconds all processes of the machine have used (user, nice, system, irq)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = map(int, fields)
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def wait_for_idle(max_wait: float, threshold: float = 0.25, window: float = 1.0) -> float:
    """Wait up to ``max_wait`` s until the machine uses < ``threshold`` CPUs; return the wait."""
    start = time.perf_counter()
    while max_wait > 0:
        before = _busy_cpu_s()
        time.sleep(window)
        quiet = (_busy_cpu_s() - before) / window < threshold
        if quiet or time.perf_counter() - start >= max_wait:
            break
    return time.perf_counter() - start


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait(
    proc: subprocess.Popen[bytes], timeout: float
) -> tuple[int, resource.struct_rusage, bool]:
    """Reap the child with wait4 (its own rusage); kill its group after ``timeout``."""
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _kill_group(proc.pid)

    timer = threading.Timer(timeout, expire)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        _kill_group(proc.pid)
        raise
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage, expired.is_set()


def measure(
    phase: str, cmd: Command, env: dict[str, str], logs: Path, source_bytes: int, timeout: float
) -> Result:
    """Run ``cmd`` with output to log files and return what it cost."""
    out_path, err_path = logs / f"{phase}.out", logs / f"{phase}.err"
    busy_before = _busy_cpu_s()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd.argv,
            cwd=cmd.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        code, usage, timed_out = _wait(proc, timeout)
        wall = time.perf_counter() - start
    return Result(
        phase=phase,
        command=cmd.shell(),
        returncode=code,
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        max_rss_kb=usage.ru_maxrss,
        source_bytes=source_bytes,
        other_cpu_s=max(0.0, _busy_cpu_s() - busy_before - usage.ru_utime - usage.ru_stime),
        timed_out=timed_out,
        problem=f"timed out after {timeout:g} s" if timed_out else "",
        stdout_tail=_tail(out_path),
        stderr_tail=_tail(err_path),
    )


# --------------------------------------------------------------------------------------------
# page cache: drop it when allowed, otherwise make every tool start warm
# --------------------------------------------------------------------------------------------

DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def drop_page_cache() -> bool:
    """sync, then drop the page cache; False if not permitted (e.g. in a container)."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError:
        return False
    return True


def prewarm(roots: Iterable[Path]) -> None:
    """Read every file below ``roots`` (like ``cat > /dev/null``) so it sits in the page cache."""
    buf = bytearray(1 << 20)
    for root in roots:
        for path in dataset.iter_files(root):
            with path.open("rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


@dataclass(frozen=True)
class CacheMode:
    """How each measured phase starts: ``cold`` (caches dropped) or ``warm`` (inputs pre-read)."""

    name: str

    @classmethod
    def detect(cls, wanted: str = "auto") -> CacheMode:
        if wanted == "warm":
            return cls("warm-chosen")
        return cls("cold" if drop_page_cache() else "warm")

    def describe(self) -> str:
        if self.name == "cold":
            return "cold: page cache dropped (sync; echo 3 > drop_caches) before every phase"
        if self.name == "warm-chosen":
            return (
                "warm (--cache warm): before every phase the phase's input (dataset or "
                "repository) is read once, so every tool starts with it in the page cache"
            )
        return (
            "warm: dropping the page cache is not permitted here, so before every phase the "
            "phase's input (dataset or repository) is read once; every tool starts warm"
        )

    def prepare(self, inputs: Sequence[Path]) -> None:
        os.sync()  # the previous phase's write-back must not be billed to the next phase
        if self.name == "cold" and drop_page_cache():
            return
        prewarm(inputs)


# --------------------------------------------------------------------------------------------
# the tools
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where one tool keeps everything during one run."""

    base: Path
    src: Path

    @property
    def repo(self) -> Path:
        return self.base / "repo"

    @property
    def cache(self) -> Path:
        return self.base / "cache"

    @property
    def home(self) -> Path:
        return self.base / "home"

    @property
    def restore(self) -> Path:
        return self.base / "restore"

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    def restored_src(self) -> Path:
        """Where a restore of ``src`` lands: all three tools recreate the absolute path."""
        return self.restore / self.src.relative_to(self.src.anchor)


def base_env(lay: Layout) -> dict[str, str]:
    """The caller's environment without any tool settings, with HOME/XDG/TMP in the run dir."""
    prefixes = ("STACKVAULT_", "RESTIC_", "BORG_", "XDG_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        HOME=str(lay.home),
        TMPDIR=str(lay.home / "tmp"),
        XDG_CACHE_HOME=str(lay.cache),
        XDG_CONFIG_HOME=str(lay.home / "config"),
        XDG_DATA_HOME=str(lay.home / "data"),
        XDG_STATE_HOME=str(lay.home / "state"),
    )
    return env


class Tool(ABC):
    """Commands of one backup program; ``number`` counts the backups of a run (1, 2, 3)."""

    name: str
    program: str
    settings: str

    def executable(self) -> str | None:
        return shutil.which(self.program)

    def version(self) -> str:
        exe = self.executable() or self.program
        out = subprocess.run([exe, *self.version_args()], capture_output=True, text=True)
        return (out.stdout or out.stderr).strip().splitlines()[0]

    def version_args(self) -> list[str]:
        return ["--version"]

    def source_state(self) -> str:
        """A digest of the tool's code if it can change under the benchmark, else ''."""
        return ""

    @abstractmethod
    def env(self, lay: Layout) -> dict[str, str]: ...

    @abstractmethod
    def init(self, lay: Layout) -> list[Command]:
        """Alternatives, most preferred first; the first one that succeeds is used."""

    @abstractmethod
    def backup(self, lay: Layout, number: int) -> Command: ...

    @abstractmethod
    def restore(self, lay: Layout, number: int) -> Command: ...

    @abstractmethod
    def check(self, lay: Layout) -> Command: ...


class Stackvault(Tool):
    name = program = "stackvault"
    settings = "init defaults (zstd, AES-256-GCM, Argon2id 64 MiB, 16 MiB packs)"

    def executable(self) -> str | None:
        beside = Path(sys.executable).parent / "stackvault"
        return str(beside) if beside.exists() else shutil.which("stackvault")

    def _cmd(self, lay: Layout, *args: str) -> list[str]:
        return [self.executable() or "stackvault", "--repo", str(lay.repo), *args]

    def source_state(self) -> str:
        """SHA-256 over the package's .py files: an editable install changes when src/ does."""
        spec = importlib.util.find_spec("stackvault")
        if spec is None or spec.origin is None:
            return ""
        package = Path(spec.origin).parent
        h = hashlib.sha256()
        for path in sorted(package.rglob("*.py")):
            h.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
        return h.hexdigest()[:16]

    def env(self, lay: Layout) -> dict[str, str]:
        return {**base_env(lay), "STACKVAULT_PASSWORD": PASSWORD}

    def init(self, lay: Layout) -> list[Command]:
        return [Command(self._cmd(lay, "init"))]

    def backup(self, lay: Layout, number: int) -> Command:
        return Command(self._cmd(lay, "backup", str(lay.src)))

    def restore(self, lay: Layout, number: int) -> Command:
        return Command(self._cmd(lay, "restore", "latest", "--target", str(lay.restore)))

    def check(self, lay: Layout) -> Command:
        return Command(self._cmd(lay, "check", "--read-data"))


class Restic(Tool):
    name = program = "restic"
    settings = "repository v2, --compression auto, AES-256-CTR + Poly1305"

    def version_args(self) -> list[str]:
        return ["version"]

    def _cmd(self, lay: Layout, *args: str) -> list[str]:
        return [self.executable() or "restic", "--repo", str(lay.repo), *args]

    def env(self, lay: Layout) -> dict[str, str]:
        return {**base_env(lay), "RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(lay.cache)}

    def init(self, lay: Layout) -> list[Command]:
        return [
            Command(self._cmd(lay, "init", "--repository-version", "2")),
            Command(self._cmd(lay, "init")),  # restic < 0.14: no compression
        ]

    def backup(self, lay: Layout, number: int) -> Command:
        return Command(self._cmd(lay, "backup", "--compression", "auto", str(lay.src)))

    def restore(self, lay: Layout, number: int) -> Command:
        return Command(self._cmd(lay, "restore", "latest", "--target", str(lay.restore)))

    def check(self, lay: Layout) -> Command:
        return Command(self._cmd(lay, "check", "--read-data"))


class Borg(Tool):
    name = program = "borg"
    settings = "repokey-blake2 (else repokey), --compression zstd,3"

    def _exe(self) -> str:
        return self.executable() or "borg"

    def _archive(self, lay: Layout, number: int) -> str:
        return f"{lay.repo}::backup-{number}"

    def env(self, lay: Layout) -> dict[str, str]:
        return {
            **base_env(lay),
            "BORG_PASSPHRASE": PASSWORD,
            "BORG_BASE_DIR": str(lay.home),
            "BORG_CACHE_DIR": str(lay.cache),
        }

    def init(self, lay: Layout) -> list[Command]:
        return [
            Command([self._exe(), "init", "--encryption", mode, str(lay.repo)])
            for mode in ("repokey-blake2", "repokey")
        ]

    def backup(self, lay: Layout, number: int) -> Command:
        archive = self._archive(lay, number)
        return Command([self._exe(), "create", "--compression", "zstd,3", archive, str(lay.src)])

    def restore(self, lay: Layout, number: int) -> Command:
        return Command([self._exe(), "extract", self._archive(lay, number)], cwd=lay.restore)

    def check(self, lay: Layout) -> Command:
        return Command([self._exe(), "check", "--verify-data", str(lay.repo)])


TOOL_CLASSES: dict[str, type[Tool]] = {"stackvault": Stackvault, "restic": Restic, "borg": Borg}


# --------------------------------------------------------------------------------------------
# the dataset: one pristine master, a working copy per tool and run
# --------------------------------------------------------------------------------------------


@dataclass
class Data:
    """The master tree and what its mutated state must look like."""

    master: Path
    src: Path
    seed: int
    files: int
    bytes: int
    digest: str
    generate_s: float
    reused: bool
    mutated: dataset.Manifest | None = None
    mutation: dict[str, int] = field(default_factory=dict)

    @property
    def mutated_bytes(self) -> int:
        return sum(size for size, _ in (self.mutated or {}).values()) or self.bytes

    def summary(self) -> dict[str, Any]:
        mutated = self.mutated or {}
        return {
            "path": str(self.master),
            "seed": self.seed,
            "files": self.files,
            "bytes": self.bytes,
            "digest": self.digest,
            "generate_s": round(self.generate_s, 2),
            "reused_from_keep": self.reused,
            "mutated_files": len(mutated),
            "mutated_bytes": self.mutated_bytes,
            "mutated_digest": dataset.manifest_digest(mutated) if mutated else None,
            "mutation": self.mutation,
        }


def prepare_master(workdir: Path, scale: float, seed: int) -> Data:
    """Generate the master tree, or reuse one left by ``--keep`` with the same scale and seed."""
    master = workdir / "master"
    start = time.perf_counter()
    try:
        info, files = dataset.read_manifest(master)
        reusable = info.get("scale") == scale and info.get("seed") == seed
        reusable = reusable and dataset.tree_stats(master) == _stats(files)
    except (OSError, ValueError, KeyError):
        reusable = False
    if not reusable:
        _remove(master, dataset.manifest_path(master))
        dataset.generate(master, scale, seed)
        info, files = dataset.read_manifest(master)
    count, size = _stats(files)
    digest, took = str(info["digest"]), _since(start)
    return Data(master, workdir / "src", seed, count, size, digest, took, reusable)


def _stats(manifest: dataset.Manifest) -> tuple[int, int]:
    return len(manifest), sum(size for size, _ in manifest.values())


def _since(start: float) -> float:
    return time.perf_counter() - start


def _remove(*paths: Path) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


INODE_QUIET_S = 365
"""How long ext4 may avoid reusing a freshly deleted inode, plus a margin: 60 s, and 5 more
minutes while its inode table block is dirty, which creating a neighbour makes it again."""


class Trash:
    """Trees the benchmark is done with, moved aside instead of deleted until the end.

    ext4 will not reuse an inode within 60 s of its deletion (5 more minutes while its inode
    table block is dirty) and checks every candidate it skips: creating 20,000 files soon
    after deleting 40,000 cost 3-5x the system time of the same restore on a quiet file
    system (``recently_deleted`` under ``ext4_create`` in ``perf``), for every tool, and
    landed on whichever tool ran next. Renaming is free; the trash is emptied at the end.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._count = 0

    def discard(self, *paths: Path) -> None:
        for path in paths:
            if not (path.exists() or path.is_symlink()):
                continue
            self.root.mkdir(parents=True, exist_ok=True)
            self._count += 1
            path.rename(self.root / f"{os.getpid()}-{self._count}")

    def empty(self) -> bool:
        """Delete everything in the trash and write the deletions out (an inode whose table
        block is clean is avoided for 60 s, not 6 min); True if there was anything."""
        if not self.root.exists():
            return False
        _remove(self.root)
        os.sync()
        return True

    def settle(self) -> None:
        """Before measuring: empty a trash left by an earlier run and, if there was one,
        wait `INODE_QUIET_S` so that its deletions cost no tool anything."""
        if self.empty():
            print(
                f"emptied {self.root}; waiting {INODE_QUIET_S} s for ext4 to settle (see Trash)",
                flush=True,
            )
            time.sleep(INODE_QUIET_S)


def copy_master(data: Data, trash: Trash) -> None:
    """A fresh working copy of the master (times preserved) at the shared source path."""
    trash.discard(data.src)
    subprocess.run(["cp", "-a", "--reflink=auto", str(data.master), str(data.src)], check=True)


def mutate_src(data: Data) -> str:
    """Apply the mutation to the working copy; return a problem if it differs from the first."""
    change = dataset.mutate(data.src, data.seed)
    if data.mutated is None:
        data.mutated = dataset.build_manifest(data.src)
        data.mutation = asdict(change)
        return ""
    expected_dump = data.mutated[dataset.SQL_PATH][1]
    if dataset.tree_stats(data.src) != _stats(data.mutated) or expected_dump != _sha256(
        data.src / dataset.SQL_PATH
    ):
        return "mutated tree differs from the first run's"
    return ""


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_restore(restored: Path, expected: dataset.Manifest, full: bool, seed: int) -> str:
    """'' if the restored tree matches; otherwise what is wrong. Cheap unless ``full``."""
    if not restored.is_dir():
        return f"nothing restored at {restored}"
    if full:
        actual = dataset.build_manifest(restored)
        wrong = sorted({p for p, _ in set(actual.items()) ^ set(expected.items())})
        return f"{len(wrong)} files differ, e.g. {wrong[:3]}" if wrong else ""
    names = {p.relative_to(restored).as_posix(): p for p in dataset.iter_files(restored)}
    if names.keys() != expected.keys():
        return f"file lists differ: {len(names.keys() ^ expected.keys())} paths"
    for name, path in names.items():
        if path.lstat().st_size != expected[name][0]:
            return f"size differs: {name}"
    fixed = [dataset.SQL_PATH, dataset.LOG_PATH, dataset.DISK_PATH]
    for name in fixed + random.Random(seed).sample(sorted(expected), min(12, len(expected))):
        if _sha256(names[name]) != expected[name][1]:
            return f"content differs: {name}"
    return ""


def apparent_size(root: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of everything below ``root``."""
    apparent = allocated = 0
    for top, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(top, name))
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


# --------------------------------------------------------------------------------------------
# one tool, one run
# --------------------------------------------------------------------------------------------


@dataclass
class Settings:
    """Options that hold for the whole benchmark."""

    workdir: Path
    runs: int
    full_verify: bool
    keep: bool
    timeout: float
    idle_wait: float
    cache: CacheMode
    trash: Trash


@dataclass
class ToolRun:
    """Everything measured for one tool in one run."""

    tool: str
    run: int
    init: Result | None = None
    phases: dict[str, Result] = field(default_factory=dict)
    repo_bytes: int | None = None
    repo_allocated_bytes: int | None = None
    restore_check: str = "not run"
    source_state: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "run": self.run,
            "init": self.init.to_json() if self.init else None,
            "phases": {name: r.to_json() for name, r in self.phases.items()},
            "repo_bytes": self.repo_bytes,
            "repo_allocated_bytes": self.repo_allocated_bytes,
            "restore_check": self.restore_check,
            "source_state": self.source_state,
        }


class Runner:
    """Runs the phases of one tool in one run, in a fresh directory with fresh caches."""

    def __init__(self, tool: Tool, run: int, data: Data, cfg: Settings) -> None:
        self.tool, self.data, self.cfg = tool, data, cfg
        self.lay = Layout(cfg.workdir / f"run-{run}" / tool.name, data.src)
        self.env = tool.env(self.lay)
        self.record = ToolRun(tool.name, run, source_state=tool.source_state())

    def _phase(self, phase: str, cmd: Command, inputs: list[Path], source_bytes: int) -> Result:
        waited = wait_for_idle(self.cfg.idle_wait)
        self.cfg.cache.prepare(inputs)
        result = measure(phase, cmd, self.env, self.lay.logs, source_bytes, self.cfg.timeout)
        result.idle_wait_s = waited
        if result.returncode != 0 and not result.problem:
            result.problem = f"exit code {result.returncode}"
        self.record.phases[phase] = result
        _progress(self.record, result)
        return result

    def _flag(self, result: Result, problem: str) -> None:
        """Mark a phase that exited 0 as failed after all (and say so)."""
        if problem and not result.problem:
            result.problem = problem
            print(f"  run {self.record.run} {self.record.tool:<10} {result.phase:<9} {problem}")

    def _setup(self) -> bool:
        self.cfg.trash.discard(self.lay.base)
        for path in (self.lay.logs, self.lay.cache, self.lay.home / "tmp"):
            path.mkdir(parents=True)
        copy_master(self.data, self.cfg.trash)
        for cmd in self.tool.init(self.lay):
            _remove(self.lay.repo)
            result = measure("init", cmd, self.env, self.lay.logs, 0, self.cfg.timeout)
            self.record.init = result
            if result.returncode == 0:
                return True
        _progress(self.record, self.record.init)
        return False

    def _backups(self) -> None:
        src, data = [self.lay.src], self.data
        self._phase("initial", self.tool.backup(self.lay, 1), src, data.bytes)
        self._phase("nochange", self.tool.backup(self.lay, 2), src, data.bytes)
        problem = mutate_src(data)
        result = self._phase("mutated", self.tool.backup(self.lay, 3), src, data.mutated_bytes)
        self._flag(result, problem)
        sizes = apparent_size(self.lay.repo)
        self.record.repo_bytes, self.record.repo_allocated_bytes = sizes

    def _restore_and_check(self) -> None:
        repo, size = [self.lay.repo], self.data.mutated_bytes
        self.lay.restore.mkdir()
        result = self._phase("restore", self.tool.restore(self.lay, 3), repo, size)
        expected = self.data.mutated or {}
        problem = verify_restore(
            self.lay.restored_src(), expected, self.cfg.full_verify, self.data.seed
        )
        self.record.restore_check = problem or ("full" if self.cfg.full_verify else "sampled")
        self._flag(result, problem and f"restored data wrong: {problem}")
        self.cfg.trash.discard(self.lay.restore)
        self._phase("check", self.tool.check(self.lay), repo, size)

    def run(self) -> ToolRun:
        try:
            if self._setup():
                self._backups()
                self._restore_and_check()
        finally:
            self.cfg.trash.discard(self.lay.restore, self.data.src)
            if not self.cfg.keep:
                self.cfg.trash.discard(self.lay.base)
        return self.record


def _progress(record: ToolRun, result: Result | None) -> None:
    if result is None:
        return
    status = "ok" if result.ok else f"FAILED ({result.problem})"
    print(
        f"  run {record.run} {record.tool:<10} {result.phase:<9} {result.wall_s:8.2f} s wall "
        f"{result.cpu_s:8.2f} s CPU {result.max_rss_kb * 1024 / MB:7.0f} MB RSS  {status}",
        flush=True,
    )


# --------------------------------------------------------------------------------------------
# medians, ratios, table
# --------------------------------------------------------------------------------------------


@dataclass
class Median:
    """Median figures of one tool and phase over the successful runs."""

    ok_runs: int
    failed_runs: int
    wall_s: float | None = None
    cpu_s: float | None = None
    max_rss_mb: float | None = None
    throughput_mb_s: float | None = None


def _median_of(results: list[Result]) -> Median:
    good = [r for r in results if r.ok]
    bad = [r for r in results if not r.ok]
    med = Median(len(good), len(bad))
    if good:
        med.wall_s = statistics.median(r.wall_s for r in good)
        med.cpu_s = statistics.median(r.cpu_s for r in good)
        med.max_rss_mb = statistics.median(r.max_rss_kb * 1024 / MB for r in good)
        med.throughput_mb_s = statistics.median(r.source_bytes / MB / r.wall_s for r in good)
    return med


def medians(records: list[ToolRun], tools: list[str]) -> dict[str, dict[str, Median]]:
    """tool -> phase -> Median (phases with no result at all are left out)."""
    out: dict[str, dict[str, Median]] = {}
    for tool in tools:
        mine = [r for r in records if r.tool == tool]
        out[tool] = {}
        for phase in ("init", *PHASES):
            found = [r.init if phase == "init" else r.phases.get(phase) for r in mine]
            results = [r for r in found if r is not None]
            if results:
                out[tool][phase] = _median_of(results)
    return out


def median_repo_bytes(records: list[ToolRun], tool: str) -> float | None:
    """Median repository size over the runs whose three backups all succeeded."""
    backups = ("initial", "nochange", "mutated")
    sizes = [
        r.repo_bytes
        for r in records
        if r.tool == tool
        and r.repo_bytes is not None
        and all(p in r.phases and r.phases[p].ok for p in backups)
    ]
    return statistics.median(sizes) if sizes else None


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def ratios(meds: dict[str, dict[str, Median]], repo: dict[str, float | None]) -> dict[str, Any]:
    """restic/stackvault for times (>1: stackvault faster), stackvault/restic for sizes."""
    sv, rs = meds.get("stackvault", {}), meds.get("restic", {})
    out: dict[str, Any] = {}
    for phase in PHASES:
        a, b = sv.get(phase) or Median(0, 0), rs.get(phase) or Median(0, 0)
        out[phase] = {
            "wall_restic_over_stackvault": _ratio(b.wall_s, a.wall_s),
            "cpu_restic_over_stackvault": _ratio(b.cpu_s, a.cpu_s),
            "rss_stackvault_over_restic": _ratio(a.max_rss_mb, b.max_rss_mb),
        }
    out["repo_size_stackvault_over_restic"] = _ratio(repo.get("stackvault"), repo.get("restic"))
    return out


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cells(med: Median | None) -> list[str]:
    if med is None:
        return ["-"] * 4
    if med.wall_s is None:
        return ["FAILED", "", "", ""]
    mark = f" ({med.failed_runs} failed)" if med.failed_runs else ""
    return [
        _num(med.wall_s) + mark,
        _num(med.cpu_s),
        _num(med.max_rss_mb, 0),
        _num(med.throughput_mb_s, 1),
    ]


def _render(header: list[list[str]], rows: list[list[str]], groups: list[tuple[str, int]]) -> str:
    widths = [max(len(r[i]) for r in header + rows) for i in range(len(rows[0]))]
    lines, col = [], 0
    spans = []
    for title, span in groups:
        width = sum(widths[col : col + span]) + 2 * (span - 1)
        spans.append(title.center(width, "-") if title else " " * width)
        col += span
    lines.append("  ".join(spans))
    for row in header + rows:
        cells = [c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def table(meds: dict[str, dict[str, Median]], repo: dict[str, float | None]) -> str:
    """Rows = phases; per tool wall s, CPU s, RSS MB, MB/s; then stackvault vs restic."""
    tools = list(meds)
    rat = ratios(meds, repo)
    header = [["phase"] + ["wall s", "CPU s", "RSS MB", "MB/s"] * len(tools)]
    header[0] += ["wall", "CPU", "RSS"]
    rows = []
    for phase in PHASES:
        row = [PHASE_TITLES[phase]]
        for tool in tools:
            row += _cells(meds[tool].get(phase))
        r = rat[phase]
        row += [
            _num(r["wall_restic_over_stackvault"]),
            _num(r["cpu_restic_over_stackvault"]),
            _num(r["rss_stackvault_over_restic"]),
        ]
        rows.append(row)
    size_row = ["repository size (MB)"]
    for tool in tools:
        size_row += [_num(_div(repo.get(tool), MB), 1), "", "", ""]
    size_row += ["", "", _num(rat["repo_size_stackvault_over_restic"])]
    rows.append(size_row)
    groups = [("", 1)] + [(f" {t} ", 4) for t in tools] + [(" stackvault vs restic ", 3)]
    return _render(header, rows, groups)


def _div(value: float | None, by: float) -> float | None:
    return None if value is None else value / by


def code_changes(records: list[ToolRun]) -> dict[str, list[str]]:
    """Tools whose code differed between runs (e.g. src/ edited during the benchmark)."""
    states: dict[str, list[str]] = {}
    for rec in records:
        seen = states.setdefault(rec.tool, [])
        if rec.source_state and rec.source_state not in seen:
            seen.append(rec.source_state)
    return {tool: seen for tool, seen in states.items() if len(seen) > 1}


def interference(records: list[ToolRun]) -> dict[str, float]:
    """CPU time other processes used while the tools were measured (noise indicator)."""
    results = [r for rec in records for r in rec.phases.values()]
    own = sum(r.cpu_s for r in results)
    other = sum(r.other_cpu_s for r in results)
    return {
        "measured_cpu_s": round(own, 2),
        "other_cpu_s": round(other, 2),
        "other_over_measured": round(other / own, 4) if own else 0.0,
        "worst_phase_other_cpu_s": round(max((r.other_cpu_s for r in results), default=0), 2),
    }


def failures_text(records: list[ToolRun]) -> str:
    """Each failed command with its run, problem and output tail."""
    lines = []
    for rec in records:
        results = [rec.init] if rec.init and not rec.init.ok else []
        for result in results + [r for r in rec.phases.values() if not r.ok]:
            tail = (result.stderr_tail or result.stdout_tail).replace("\n", "\n    ")
            lines.append(f"{rec.tool} run {rec.run} {result.phase}: {result.problem}")
            lines.append(f"    $ {result.command}")
            lines += [f"    {tail}"] if tail else []
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# machine info, JSON, main
# --------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem(path: Path) -> str:
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _dev, mount, fstype, *_ = line.split()
            if str(path).startswith(mount) and len(mount) >= len(best):
                best, kind = mount, fstype
    except (OSError, ValueError):
        pass
    return kind


def machine_info(workdir: Path) -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "workdir_filesystem": _filesystem(workdir.resolve()),
        "load_average_at_start": os.getloadavg(),
        "stackvault_source": _git_state(),
    }


def _git_state() -> dict[str, str]:
    """Commit and uncommitted changes of the stackvault checkout (read-only git commands)."""
    root = BENCH_DIR.parent
    git = ["git", "--no-optional-locks", "-C", str(root)]
    try:
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
        diff = subprocess.run(
            [*git, "diff", "--stat", "HEAD", "--", "src"], capture_output=True, text=True
        )
    except OSError:
        return {}
    lines = diff.stdout.strip().splitlines()
    return {
        "commit": head.stdout.strip(),
        "uncommitted_src_changes": lines[-1] if lines else "none",
    }


def choose_tools(names: list[str]) -> list[Tool]:
    """The requested tools that are installed; the others are skipped with a message."""
    tools = []
    for name in names:
        tool = TOOL_CLASSES[name]()
        if tool.executable() is None:
            print(f"skipping {name}: not installed (no '{tool.program}' found)", flush=True)
        else:
            tools.append(tool)
    return tools


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--scale", type=float, default=1.0, help="1 = ~1 GB dataset (default)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool (default 3)")
    parser.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated")
    parser.add_argument("--workdir", type=Path, default=BENCH_DIR / "work")
    parser.add_argument("--json-out", type=Path, default=BENCH_DIR / "results" / "latest.json")
    parser.add_argument("--keep", action="store_true", help="keep dataset, repos and logs")
    parser.add_argument("--seed", type=int, default=42, help="dataset seed (default 42)")
    parser.add_argument(
        "--full-verify", action="store_true", help="hash every restored file (default: sample)"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per phase")
    parser.add_argument(
        "--cache",
        choices=("auto", "warm"),
        default="auto",
        help="auto: drop the page cache before every phase where permitted (cold disk); "
        "warm: pre-read each phase's input instead (CPU-bound comparison)",
    )
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each phase wait up to this long for the machine to be idle (default 0)",
    )
    args = parser.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(args.tools) - set(ALL_TOOLS))
    if unknown or args.runs < 1 or args.scale <= 0:
        parser.error(f"bad --tools/--runs/--scale (unknown tools: {unknown}; known: {ALL_TOOLS})")
    return args


class Benchmark:
    """The whole comparison: runs, report and table."""

    def __init__(self, args: argparse.Namespace, tools: list[Tool], cache: CacheMode) -> None:
        self.args, self.tools = args, tools
        workdir = args.workdir.resolve()
        self.cfg = Settings(
            workdir,
            args.runs,
            args.full_verify,
            args.keep,
            args.timeout,
            args.idle_wait,
            cache,
            Trash(workdir / "trash"),
        )
        self.records: list[ToolRun] = []
        self.report: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": {
                "scale": args.scale,
                "runs": args.runs,
                "seed": args.seed,
                "tools": [t.name for t in tools],
                "workdir": str(workdir),
                "cache_mode": cache.name,
                "cache_mode_description": cache.describe(),
                "full_verify": args.full_verify,
                "timeout_s": args.timeout,
                "idle_wait_s": args.idle_wait,
                "tool_order": "rotated each run",
            },
            "machine": machine_info(workdir),
            "tools": {
                t.name: {"path": t.executable(), "version": t.version(), "settings": t.settings}
                for t in tools
            },
        }

    def run(self) -> str:
        workdir = self.cfg.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.cfg.trash.settle()
            print(f"dataset: scale {self.args.scale} in {workdir / 'master'} ...", flush=True)
            data = prepare_master(workdir, self.args.scale, self.args.seed)
            print(f"dataset: {data.files} files, {data.bytes / MB:.1f} MB, digest {data.digest}")
            for run in range(1, self.cfg.runs + 1):
                print(f"run {run}/{self.cfg.runs}", flush=True)
                for tool in _rotate(self.tools, run - 1):
                    self.records.append(Runner(tool, run, data, self.cfg).run())
                    self.save(data)
            return self.save(data)
        finally:
            self.cfg.trash.empty()
            if not self.cfg.keep:
                self.cleanup()

    def save(self, data: Data) -> str:
        names = [t.name for t in self.tools]
        meds = medians(self.records, names)
        repo = {name: median_repo_bytes(self.records, name) for name in names}
        text = table(meds, repo)
        self.report.update(
            dataset=data.summary(),
            commands=self.commands(),
            runs=[r.to_json() for r in self.records],
            medians={t: {p: asdict(m) for p, m in ph.items()} for t, ph in meds.items()},
            median_repo_bytes=repo,
            ratios_vs_restic=ratios(meds, repo),
            table=text,
            failures=failures_text(self.records),
            interference=interference(self.records),
            code_changed=code_changes(self.records),
        )
        write_report(self.args.json_out, self.report)
        return text

    def commands(self) -> dict[str, dict[str, list[str]]]:
        out = {}
        for tool in self.tools:
            lay = Layout(self.cfg.workdir / "run-N" / tool.name, self.cfg.workdir / "src")
            out[tool.name] = {
                "init": [c.shell() for c in tool.init(lay)],
                "initial": [tool.backup(lay, 1).shell()],
                "nochange": [tool.backup(lay, 2).shell()],
                "mutated": [tool.backup(lay, 3).shell()],
                "restore": [tool.restore(lay, 3).shell()],
                "check": [tool.check(lay).shell()],
            }
        return out

    def cleanup(self) -> None:
        workdir = self.cfg.workdir
        master = workdir / "master"
        _remove(master, dataset.manifest_path(master), workdir / "src")
        _remove(*workdir.glob("run-*"))
        if workdir.is_dir() and not any(workdir.iterdir()):
            workdir.rmdir()


def _rotate(tools: list[Tool], by: int) -> list[Tool]:
    if not tools:
        return tools
    by %= len(tools)
    return tools[by:] + tools[:by]


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.compare``."""
    args = parse_args(argv)
    tools = choose_tools(args.tools)
    if not tools:
        print("no tools to benchmark", file=sys.stderr)
        return 1
    cache = CacheMode.detect(args.cache)
    print(f"page cache: {cache.describe()}", flush=True)
    bench = Benchmark(args, tools, cache)
    bench.run()
    text = summary(bench.report)
    print("\n" + text)
    write_report(args.json_out, {**bench.report, "printed": text})
    print(f"\nresults: {args.json_out}")
    return 1 if bench.report["failures"] else 0


LEGEND = """\
stackvault vs restic: wall, CPU = restic / stackvault (>1: stackvault faster);
                      RSS, repository size = stackvault / restic (<1: stackvault smaller).
MB/s = source bytes / wall time (restore and check: bytes of the changed tree).
RSS = peak resident set size of the process. MB = 10^6 bytes."""


def _interference_text(noise: dict[str, float]) -> str:
    share = noise["other_over_measured"]
    text = (
        f"Other processes used {noise['other_cpu_s']:.1f} CPU-s during the measured phases "
        f"({share:.1%} of the tools' own {noise['measured_cpu_s']:.1f} CPU-s)"
    )
    return text + ("; WARNING: the figures may be noisy." if share > 0.05 else ".")


def summary(report: dict[str, Any]) -> str:
    """The printed result: what was measured, the table, the legend and any failures."""
    data, cfg = report["dataset"], report["config"]
    versions = ", ".join(t["version"] for t in report["tools"].values())
    lines = [
        f"dataset: scale {cfg['scale']}, {data['files']} files, {data['bytes'] / MB:.1f} MB "
        f"({data['mutated_bytes'] / MB:.1f} MB after the change), seed {cfg['seed']}",
        f"median of {cfg['runs']} run(s); page cache {cfg['cache_mode_description']}",
        f"machine: {report['machine']['nproc']} CPUs ({report['machine']['cpu_model']}), "
        f"{versions}",
        "",
        report["table"],
        "",
        LEGEND,
        _interference_text(report["interference"]),
    ]
    for tool, states in report["code_changed"].items():
        lines.append(
            f"WARNING: {tool}'s code changed during the benchmark ({len(states)} versions)."
        )
    if report["failures"]:
        lines += ["", "FAILURES:", report["failures"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
