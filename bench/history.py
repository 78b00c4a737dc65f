"""stackvault beside restic on a long history: thousands of snapshots, millions of blobs.

For each history size (``--sizes 200x500,1000x2000,5000x2000``: snapshots x files) one tree of
tiny files is backed up that many times by each tool; before every snapshot every file is
rewritten with new content (~200 bytes, one blob in either tool) and given that snapshot's
time as its mtime, so each snapshot adds ``files`` new blobs and the history holds
``snapshots x files`` of them. The snapshots' times are spread evenly over the ~14 months up to
the day the history was generated. stackvault has no option to date a snapshot, so its history
is written in this process through the engine (`BackupJob` on a repository whose clock gives
each snapshot's time). restic's history (``--restic-history``):

* ``synthetic`` (default): all snapshots but the last are written in restic's repository
  format by `bench.resticsynth` (the same files, contents, mtimes and times; one index file and
  a few packs per snapshot, as one ``restic backup`` writes), the last by ``restic backup
  --time`` of the tree itself, and ``restic check --with-cache`` verifies the whole history and
  fills restic's cache. restic reloads every index file and snapshot at each backup, so
  backing up 5,000 states takes about a day here;
* ``backup``: ``restic backup --time`` of every state, in lockstep with stackvault (restic in
  a child process while stackvault backs up here).

The repositories are kept in ``--workdir`` with a manifest and reused by later runs with the
same parameters.

Then, for each tool, on a copy of its repository (``cp -a --reflink=auto``, with restic's
cache; not timed), each phase is one child process measured as in ``bench/compare.py`` (wall
time, CPU time, peak RSS from ``wait4``; the page cache dropped before each phase where
permitted, else the repository read once):

* ``snapshots``: list every snapshot;
* ``forget-dry``: ``forget --keep-daily 7 --keep-monthly 12 --dry-run``;
* ``check``: the repository's structure (no data read);
* ``nochange``: a backup of the unchanged tree (its parent is the last snapshot);
* ``prune``: ``forget --keep-daily 7 --keep-monthly 12 --prune`` (stackvault with
  ``--safety-margin 0``: the packs were all written within the last hour or days, and restic
  has no such margin).

Printed: a table per size, and per tool how each phase's time and memory grow with the
history (per 1,000 snapshots and per million blobs, and the exponent of the growth in blobs
between consecutive sizes: 1 is linear).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.compare import (
    MB,
    PASSWORD,
    CacheMode,
    Command,
    Layout,
    Restic,
    Result,
    Stackvault,
    Tool,
    Trash,
    base_env,
    machine_info,
    measure,
    wait_for_idle,
)
from bench.resticsynth import ResticSynth, SynthFile, key_file

PHASES = ("snapshots", "forget-dry", "check", "nochange", "prune")
TOOLS: dict[str, type[Tool]] = {"stackvault": Stackvault, "restic": Restic}
HOST = "history-bench"
SPAN = timedelta(days=425)
"""How far back the first snapshot lies (~14 months)."""
PER_DIR = 100
FORMAT = 1
"""Version of the generated histories: a manifest of another version is not reused."""
KEEP = ["--keep-daily", "7", "--keep-monthly", "12"]


# --------------------------------------------------------------------------------------------
# the history: sizes, the tree at each snapshot, the snapshots' times
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    snapshots: int
    files: int

    @property
    def blobs(self) -> int:
        return self.snapshots * self.files

    @property
    def label(self) -> str:
        return f"{self.snapshots}x{self.files}"

    @classmethod
    def parse(cls, text: str) -> Size:
        snaps, _, files = text.lower().replace("_", "").partition("x")
        size = cls(int(snaps), int(files))
        if size.snapshots < 1 or size.files < 1:
            raise ValueError(f"bad size {text!r}")
        return size


def content(seed: int, snap: int, file: int) -> bytes:
    """File ``file``'s bytes at snapshot ``snap``: ~200 bytes, different every time."""
    digest = hashlib.blake2b(f"{seed}/{snap}/{file}".encode(), digest_size=32).hexdigest()
    return f'{{"snapshot": {snap}, "file": {file}, "v": "{digest * 2}"}}\n'.encode()


def file_name(file: int) -> str:
    """File ``file``'s path below the tree."""
    return f"d{file // PER_DIR:04d}/f{file:06d}.json"


def file_path(tree: Path, file: int) -> Path:
    return tree / file_name(file)


def write_tree(tree: Path, size: Size, seed: int, snap: int, when: datetime) -> None:
    """The tree as it is at snapshot ``snap``: every file rewritten, its mtime ``when``."""
    ns = int(when.timestamp()) * 10**9 + snap  # never equal for two snapshots
    for d in range(math.ceil(size.files / PER_DIR)):
        (tree / f"d{d:04d}").mkdir(parents=True, exist_ok=True)
    for file in range(size.files):
        path = file_path(tree, file)
        path.write_bytes(content(seed, snap, file))
        os.utime(path, ns=(ns, ns))


def snapshot_times(anchor: datetime, count: int) -> list[datetime]:
    """``count`` times spread evenly over `SPAN`, the last one ``anchor``."""
    step = SPAN / max(1, count - 1)
    return [anchor - SPAN + step * i if count > 1 else anchor for i in range(count)]


# --------------------------------------------------------------------------------------------
# generating one history for each tool, in lockstep
# --------------------------------------------------------------------------------------------


class TimeClock:
    """The repository's clock during generation: ``now`` is the snapshot's time (set per
    snapshot), the monotonic clock is the real one."""

    def __init__(self) -> None:
        self.current = datetime.now(UTC)

    def now(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        return time.monotonic()


class StackvaultHistory:
    """Backs up the tree into one open, locked stackvault repository, each snapshot at a
    given time. The snapshots written are remembered, so finding the parent does not read
    all the earlier ones again (which would make generating n snapshots cost n^2)."""

    def __init__(self, repo_path: Path) -> None:
        from stackvault.repo.repository import Repository
        from stackvault.store.open import open_store

        self.store = open_store(str(repo_path))
        self.repo = Repository.open(self.store, PASSWORD.encode())
        self.lock = self.repo.lock(exclusive=False, operation="backup")
        self.lock.acquire()
        self.repo.load_index()
        self.clock = TimeClock()
        self.repo.clock = self.clock
        self.snaps = self.repo.list_snapshots()
        self.repo.list_snapshots = lambda *_a, **_k: list(self.snaps)  # type: ignore[method-assign]

    def backup(self, tree: Path, when: datetime) -> None:
        from stackvault.engine.backup import BackupJob, BackupOptions

        self.clock.current = when
        result = BackupJob(self.repo, BackupOptions(paths=[str(tree)], host=HOST)).run()
        if result.problems:
            raise RuntimeError(f"stackvault backup had problems: {result.problems[:3]}")
        self.snaps.append(result.snapshot)

    def close(self) -> None:
        self.lock.release()


class ResticHistory:
    """Runs ``restic backup --time`` for each snapshot, one child process at a time."""

    def __init__(self, tool: Tool, lay: Layout) -> None:
        self.tool, self.lay = tool, lay
        self.env = {**tool.env(lay), "TZ": "UTC"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, tree: Path, when: datetime) -> None:
        cmd = self.tool.backup(self.lay, 2).argv
        cmd[cmd.index("backup") + 1 : cmd.index("backup") + 1] = [
            "--quiet",
            "--host",
            HOST,
            "--time",
            when.strftime("%Y-%m-%d %H:%M:%S"),
        ]
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def wait(self) -> None:
        if self.proc is None:
            return
        _, err = self.proc.communicate()
        if self.proc.returncode != 0:
            raise RuntimeError(f"restic backup failed: {err.decode(errors='replace')[-2000:]}")
        self.proc = None


@dataclass
class History:
    """One size's generated repositories, tree and manifest in ``<workdir>/<size>/``."""

    root: Path
    size: Size
    seed: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def tree(self) -> Path:
        return self.root / "tree"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def layout(self, tool: str) -> Layout:
        return Layout(self.root / tool, self.tree)

    def params(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "snapshots": self.size.snapshots,
            "files": self.size.files,
            "seed": self.seed,
        }

    def load(self, trash: Trash) -> None:
        """Read the manifest; start afresh (the old one discarded) if it is not of these
        parameters."""
        try:
            info = json.loads(self.manifest.read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("params") != self.params():
            trash.discard(self.root)
            info = {
                "params": self.params(),
                "anchor": datetime.now(UTC)
                .replace(hour=0, minute=0, second=0, microsecond=0)
                .isoformat(),
                "tools": {},
            }
        self.info = info

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.info, indent=1))
        tmp.replace(self.manifest)

    def ready(self, tool: str) -> bool:
        return bool(self.info["tools"].get(tool, {}).get("complete"))

    def times(self) -> list[datetime]:
        return snapshot_times(datetime.fromisoformat(self.info["anchor"]), self.size.snapshots)

    def generate(
        self, tools: list[Tool], trash: Trash, timeout: float, synthetic: bool = True
    ) -> None:
        """Generate the histories of the tools not ready yet.

        With ``synthetic`` restic's snapshots but the last are written by `bench.resticsynth`
        (restic itself takes about a day for 5,000), after stackvault's history where both are
        missing; restic then backs up the last state of the tree itself (``backup --time``), so
        its last snapshot, the parent of the measured no-change backup, is restic's own, and
        ``restic check --with-cache`` verifies the whole repository and fills restic's cache as
        its own backups would have. Without ``synthetic`` both tools back up every state of the
        tree in lockstep."""
        missing = [t for t in tools if not self.ready(t.name)]
        times = self.times()
        if not missing:
            if not self.info.get("tree_final"):
                # Rewriting changes the files' ctime: both tools then re-read the tree once.
                write_tree(self.tree, self.size, self.seed, len(times) - 1, times[-1])
                self.info["tree_final"] = True
                self.save()
            return
        restic = next((t for t in missing if t.name == "restic"), None)
        synth = restic if synthetic else None
        lockstep = [t for t in missing if t is not synth]
        if lockstep or not self.info.get("tree_final"):
            trash.discard(self.tree)
            self.info["tree_final"] = False
        for tool in missing:
            lay = self.layout(tool.name)
            trash.discard(lay.base)
            for path in (lay.logs, lay.cache, lay.home / "tmp"):
                path.mkdir(parents=True)
            env = {**base_env(lay), **tool.env(lay)}
            for cmd in tool.init(lay):
                if measure("init", cmd, env, lay.logs, 0, timeout).returncode == 0:
                    break
            else:
                raise RuntimeError(f"{tool.name} init failed; see {lay.logs}")
            self.info["tools"][tool.name] = {"complete": False}
        self.save()
        if lockstep:
            self._lockstep(lockstep, times)
        if synth is not None:
            self._synthetic(synth, times, timeout)

    def _lockstep(self, tools: list[Tool], times: list[datetime]) -> None:
        """Every tool backs up every state of the tree (restic in a child process while
        stackvault backs up in this one)."""
        names = [t.name for t in tools]
        print(f"  generating {self.size.label} for {', '.join(names)} ...", flush=True)
        restic = next((t for t in tools if t.name == "restic"), None)
        ours = any(t.name == "stackvault" for t in tools)
        rgen = ResticHistory(restic, self.layout("restic")) if restic else None
        sgen = StackvaultHistory(self.layout("stackvault").repo) if ours else None
        spent = {name: 0.0 for name in names}
        cpu_start = os.times()
        started = last = time.perf_counter()
        try:
            for snap, when in enumerate(times):
                write_tree(self.tree, self.size, self.seed, snap, when)
                begin = time.perf_counter()
                if rgen:
                    rgen.start(self.tree, when)
                if sgen:
                    sgen.backup(self.tree, when)
                    spent["stackvault"] += time.perf_counter() - begin
                if rgen:
                    rgen.wait()
                    spent["restic"] += time.perf_counter() - begin
                if time.perf_counter() - last >= 30:
                    last = time.perf_counter()
                    _progress(snap + 1, len(times), started, spent)
        finally:
            if sgen:
                sgen.close()
        self.info["tree_final"] = True
        total = time.perf_counter() - started
        cpu = os.times()
        for name in names:
            self.info["tools"][name] = {
                "complete": True,
                "history": "backup",
                "generate_wall_s": round(total, 1),
                "backups_wall_s": round(spent[name], 1),
                "generated": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            if name == "restic":
                self.info["tools"][name]["kdf"] = restic_kdf(self.layout(name).repo)
        self.info["generate_cpu_s"] = {
            "this_process": round(cpu.user + cpu.system - cpu_start.user - cpu_start.system, 1),
            "children": round(
                cpu.children_user
                + cpu.children_system
                - cpu_start.children_user
                - cpu_start.children_system,
                1,
            ),
        }
        self.save()
        print(
            f"  {self.size.label} generated in {total:.0f} s ("
            + ", ".join(f"{n}'s backups {spent[n]:.0f} s" for n in names)
            + ")",
            flush=True,
        )

    def _synthetic(self, restic: Tool, times: list[datetime], timeout: float) -> None:
        """restic's history: all snapshots but the last written by `bench.resticsynth`, the
        last by ``restic backup --time``, then ``restic check``."""
        lay = self.layout("restic")
        print(f"  generating {self.size.label} for restic (synthetic) ...", flush=True)
        written = self.write_synthetic(lay.repo, times[:-1])
        if not self.info.get("tree_final"):
            write_tree(self.tree, self.size, self.seed, len(times) - 1, times[-1])
            self.info["tree_final"] = True
        begin = time.perf_counter()
        rgen = ResticHistory(restic, lay)
        rgen.start(self.tree, times[-1])
        rgen.wait()
        last_backup = time.perf_counter() - begin
        begin = time.perf_counter()
        env = {**base_env(lay), **restic.env(lay)}
        exe = restic.executable() or "restic"
        cmd = Command([exe, "--repo", str(lay.repo), "check", "--with-cache"])
        result = measure("generate-check", cmd, env, lay.logs, 0, timeout)
        if result.returncode != 0:
            tail = result.stderr_tail or result.stdout_tail
            raise RuntimeError(f"restic check of the synthetic history failed: {tail}")
        checked = time.perf_counter() - begin
        self.info["tools"]["restic"] = {
            "complete": True,
            "history": "synthetic",
            "synthetic_wall_s": round(written, 1),
            "last_backup_wall_s": round(last_backup, 1),
            "check_wall_s": round(checked, 1),
            "kdf": restic_kdf(lay.repo),
            "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.save()
        print(
            f"  {self.size.label} restic history written in {written:.0f} s, its last backup "
            f"{last_backup:.0f} s, restic check {checked:.0f} s",
            flush=True,
        )

    def write_synthetic(self, repo: Path, times: list[datetime]) -> float:
        """Write snapshots ``0 .. len(times) - 1`` of this history into the restic repository
        ``repo`` (made by ``restic init --repository-version 2``): their packs and index files
        on one worker process per core, their snapshot files in order here. Returns the
        seconds it took."""
        started = last = time.perf_counter()
        jobs = [(self.tree, snap, when, self.size, self.seed) for snap, when in enumerate(times)]
        parent: str | None = None
        synth = ResticSynth(repo, PASSWORD, HOST)
        with multiprocessing.get_context("fork").Pool(
            os.cpu_count() or 1, _synth_start, (repo,)
        ) as pool:
            for snap, tree_id in enumerate(pool.imap(_synth_trees, jobs, chunksize=4)):
                parent = synth.snapshot(self.tree, times[snap], tree_id, parent)
                if time.perf_counter() - last >= 30:
                    last = time.perf_counter()
                    took = last - started
                    print(
                        f"    {snap + 1}/{len(times)} snapshots, {took:.0f} s,"
                        f" ~{took / (snap + 1) * (len(times) - snap - 1):.0f} s left",
                        flush=True,
                    )
        return time.perf_counter() - started


_SYNTH: ResticSynth | None = None


def _synth_start(repo: Path) -> None:
    global _SYNTH
    _SYNTH = ResticSynth(repo, PASSWORD, HOST)


def _synth_trees(job: tuple[Path, int, datetime, Size, int]) -> str:
    """One synthetic restic snapshot's packs and index file (in a pool worker): the tree as
    `write_tree` leaves it at snapshot ``snap``."""
    tree, snap, when, size, seed = job
    assert _SYNTH is not None
    ns = int(when.timestamp()) * 10**9 + snap
    files = [SynthFile(file_name(f), content(seed, snap, f), ns) for f in range(size.files)]
    return _SYNTH.trees(tree, when, files, inode=(1 << 40) + snap * (size.files + 1000))


def restic_kdf(repo: Path) -> str:
    """The scrypt parameters of the repository's key: ``restic init`` calibrates them to the
    machine, and every restic command pays them at start-up (p 3 against 5: ~0.15 s)."""
    key = key_file(repo)
    return f"{key.get('kdf')} N={key.get('N')} r={key.get('r')} p={key.get('p')}"


def _progress(done: int, total: int, started: float, spent: dict[str, float]) -> None:
    took = time.perf_counter() - started
    left = took / done * (total - done)
    parts = ", ".join(f"{n} {s / done:.2f} s/backup" for n, s in spent.items())
    print(f"    {done}/{total} snapshots, {took:.0f} s, ~{left:.0f} s left ({parts})", flush=True)


# --------------------------------------------------------------------------------------------
# the measured phases
# --------------------------------------------------------------------------------------------


def phase_command(tool: Tool, lay: Layout, phase: str) -> Command:
    exe = tool.executable() or tool.program
    base = [exe, "--repo", str(lay.repo)]
    ours = tool.name == "stackvault"
    if phase == "snapshots":
        return Command([*base, "snapshots"])
    if phase == "forget-dry":
        return Command([*base, "forget", *KEEP, "--dry-run"])
    if phase == "check":
        return Command([*base, "check"])
    if phase == "nochange":
        extra = [] if ours else ["--compression", "auto"]
        return Command([*base, "backup", *extra, "--host", HOST, str(lay.src)])
    if phase == "prune":
        margin = ["--safety-margin", "0"] if ours else []
        return Command([*base, "forget", *KEEP, "--prune", *margin])
    raise ValueError(phase)


@dataclass
class HistoryRun:
    """What one tool cost on one history."""

    tool: str
    size: Size
    generate: dict[str, Any]
    phases: dict[str, Result] = field(default_factory=dict)
    repo_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "snapshots": self.size.snapshots,
            "files_per_snapshot": self.size.files,
            "blobs": self.size.blobs,
            "generate": self.generate,
            "repo_bytes": self.repo_bytes,
            "phases": {name: r.to_json() for name, r in self.phases.items()},
        }


def read_runs(path: Path) -> list[HistoryRun]:
    """The runs of an earlier report (``--merge``)."""
    fields = set(Result.__dataclass_fields__)
    runs = []
    for body in json.loads(path.read_text())["runs"]:
        size = Size(body["snapshots"], body["files_per_snapshot"])
        run = HistoryRun(body["tool"], size, body["generate"], repo_bytes=body["repo_bytes"])
        for name, r in body["phases"].items():
            run.phases[name] = Result(**{k: v for k, v in r.items() if k in fields})
        runs.append(run)
    return runs


@dataclass(frozen=True)
class Options:
    workdir: Path
    timeout: float
    idle_wait: float
    cache: CacheMode
    trash: Trash
    phases: tuple[str, ...]


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        total += sum(os.lstat(os.path.join(dirpath, n)).st_size for n in names)
    return total


def run_tool(tool: Tool, hist: History, opts: Options) -> HistoryRun:
    """The phases on a copy of the tool's repository (and cache); the copy is discarded."""
    gen = hist.layout(tool.name)
    run = HistoryRun(tool.name, hist.size, hist.info["tools"].get(tool.name, {}))
    lay = Layout(opts.workdir / "runs" / hist.size.label / tool.name, hist.tree)
    opts.trash.discard(lay.base)
    lay.base.mkdir(parents=True)
    for part in ("repo", "cache", "home"):
        subprocess.run(
            ["cp", "-a", "--reflink=auto", str(gen.base / part), str(lay.base / part)],
            check=True,
        )
    lay.logs.mkdir()
    run.repo_bytes = _tree_bytes(lay.repo)
    try:
        for phase in opts.phases:
            wait_for_idle(opts.idle_wait)
            opts.cache.prepare([lay.repo, lay.src] if phase == "nochange" else [lay.repo])
            result = measure(
                phase,
                phase_command(tool, lay, phase),
                {**tool.env(lay), "TZ": "UTC"},
                lay.logs,
                0,
                opts.timeout,
            )
            if result.returncode != 0 and not result.problem:
                result.problem = f"exit code {result.returncode}"
            run.phases[phase] = result
            status = "ok" if result.ok else f"FAILED ({result.problem})"
            print(
                f"  {hist.size.label:>10} {tool.name:<10} {phase:<10} {result.wall_s:8.2f} s wall "
                f"{result.cpu_s:8.2f} s CPU {result.max_rss_kb * 1024 / MB:6.0f} MB RSS  {status}",
                flush=True,
            )
            if not result.ok:
                tail = (result.stderr_tail or result.stdout_tail).replace("\n", "\n    ")
                print(f"    $ {result.command}\n    {tail}", flush=True)
    finally:
        opts.trash.discard(lay.base)
    return run


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


def _cell(r: Result | None) -> str:
    if r is None:
        return f"{'-':>28}"
    if not r.ok:
        return f"{'FAILED':>28}"
    return f"{r.wall_s:9.2f} s{r.cpu_s:8.2f} s{r.max_rss_kb * 1024 / MB:6.0f} MB"


def size_table(runs: list[HistoryRun]) -> str:
    """One history: each phase's wall, CPU, RSS for both tools, and restic / stackvault."""
    by_tool = {r.tool: r for r in runs}
    ours, theirs = by_tool.get("stackvault"), by_tool.get("restic")
    size = runs[0].size
    lines = [
        f"{size.snapshots:,} snapshots x {size.files:,} files = {size.blobs / 1e6:.2f} M blobs",
        f"{'phase':<11}{'stackvault wall/CPU/RSS':>28}{'restic wall/CPU/RSS':>28}"
        f"{'wall x':>8}{'CPU x':>7}{'RSS':>6}",
    ]
    for name in PHASES:
        a = ours.phases.get(name) if ours else None
        b = theirs.phases.get(name) if theirs else None
        if a is None and b is None:
            continue
        if a is not None and b is not None and a.ok and b.ok:
            ratios = (
                f"{b.wall_s / a.wall_s:8.2f}{b.cpu_s / max(a.cpu_s, 1e-3):7.2f}"
                f"{a.max_rss_kb / b.max_rss_kb:6.2f}"
            )
        else:
            ratios = f"{'-':>8}{'-':>7}{'-':>6}"
        lines.append(f"{name:<11}{_cell(a)}{_cell(b)}{ratios}")
    return "\n".join(lines)


def growth_table(runs: list[HistoryRun], tool: str) -> str:
    """Per phase and size: CPU s and peak RSS, CPU s per 1,000 snapshots and per million
    blobs, RSS MB per million blobs, and the growth exponent in blobs from the previous
    size (time ~ blobs^k; k = 1 is linear)."""
    mine = sorted((r for r in runs if r.tool == tool), key=lambda r: r.size.blobs)
    if len(mine) < 2:
        return ""
    lines = [
        f"{tool}: per size - CPU s, peak RSS MB | CPU s per 1k snapshots, per M blobs; "
        "RSS MB per M blobs | growth exponent from the previous size (CPU, wall)",
    ]
    for name in PHASES:
        lines.append(f"  {name}")
        prev: tuple[HistoryRun, Result] | None = None
        for r in mine:
            res = r.phases.get(name)
            if res is None or not res.ok:
                lines.append(f"    {r.size.label:>10}  -")
                continue
            mblobs = r.size.blobs / 1e6
            rss = res.max_rss_kb * 1024 / MB
            text = (
                f"    {r.size.label:>10} {res.cpu_s:8.2f} s {res.wall_s:8.2f} s wall {rss:6.0f} MB"
                f" | {res.cpu_s / (r.size.snapshots / 1000):8.2f} s/1k snaps"
                f" {res.cpu_s / mblobs:8.2f} s/M blobs {rss / mblobs:7.0f} MB/M blobs"
            )
            if prev is not None:
                before, old = prev
                k = math.log(r.size.blobs / before.size.blobs)
                if k > 0:
                    cpu_k = math.log(max(res.cpu_s, 1e-3) / max(old.cpu_s, 1e-3)) / k
                    wall_k = math.log(res.wall_s / old.wall_s) / k
                    text += f" | k {cpu_k:5.2f} {wall_k:5.2f}"
            lines.append(text)
            prev = (r, res)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__)
    parser.add_argument(
        "--sizes",
        default="200x500,1000x2000,5000x2000",
        help="comma-separated histories, SNAPSHOTSxFILES (files per snapshot = new blobs each)",
    )
    parser.add_argument("--snapshots", type=int, help="one history of this many snapshots")
    parser.add_argument("--files-per-snapshot", type=int, default=2000)
    parser.add_argument("--tools", default="stackvault,restic")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--workdir", type=Path, default=Path("bench/work-history"))
    parser.add_argument("--json-out", type=Path, default=Path("bench/results/history.json"))
    parser.add_argument("--cache", choices=("auto", "warm"), default="auto")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per phase")
    parser.add_argument("--idle-wait", type=float, default=0)
    parser.add_argument(
        "--generate-only", action="store_true", help="generate (or reuse) the histories only"
    )
    parser.add_argument(
        "--restic-history",
        choices=("synthetic", "backup"),
        default="synthetic",
        help="how restic's history is generated: written directly in its format but the last "
        "snapshot (bench/resticsynth.py), or one restic backup per snapshot (~a day for 5,000)",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="an earlier report whose runs of other sizes join the growth tables",
    )
    parser.add_argument("--discard", action="store_true", help="delete each history once measured")
    args = parser.parse_args(argv)
    if args.snapshots:
        args.sizes = f"{args.snapshots}x{args.files_per_snapshot}"
    try:
        args.sizes = [Size.parse(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    args.phases = tuple(p for p in args.phases.split(",") if p)
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; known: {PHASES}")
    return args


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.history``: 0 when every phase of every tool succeeded."""
    args = parse_args(argv)
    tools = [TOOLS[name]() for name in args.tools.split(",") if name in TOOLS]
    tools = [t for t in tools if t.executable()]
    # Generating alone leaves the page cache alone (detecting drops it where permitted).
    cache = CacheMode("warm-chosen") if args.generate_only else CacheMode.detect(args.cache)
    if not args.generate_only:
        print(f"page cache: {cache.describe()}", flush=True)
    workdir = args.workdir.resolve()
    trash = Trash(workdir / "trash")
    opts = Options(workdir, args.timeout, args.idle_wait, cache, trash, args.phases)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(workdir),
        "tools": {t.name: t.version() for t in tools},
        "runs": [],
    }
    runs: list[HistoryRun] = []
    tables: list[str] = []

    def save(text: str) -> None:
        _write(args.json_out, {**report, "runs": [r.to_json() for r in runs], "printed": text})

    for size in args.sizes:
        hist = History(workdir / size.label, size, args.seed)
        hist.load(trash)
        if args.generate_only:
            hist.generate(tools, trash, args.timeout, args.restic_history == "synthetic")
            continue
        if not all(hist.ready(t.name) for t in tools) or not hist.info.get("tree_final"):
            # In a child process: a measured command's peak RSS counts this process's (the
            # child starts as a copy of it), and generating holds the whole index here.
            generator = [sys.executable, "-m", "bench.history", "--generate-only"]
            options = ["--sizes", size.label, "--tools", ",".join(t.name for t in tools)]
            options += ["--workdir", str(workdir), "--seed", str(args.seed)]
            options += ["--restic-history", args.restic_history]
            subprocess.run([*generator, *options], check=True)
            hist.load(trash)
        mine = [run_tool(tool, hist, opts) for tool in tools]
        runs += mine
        tables.append(size_table(mine))
        save("\n\n".join(tables))
        if args.discard:
            trash.discard(hist.root)
    if args.generate_only:
        return 0
    measured = {(r.tool, r.size) for r in runs}
    for path in args.merge:
        earlier = [r for r in read_runs(path) if (r.tool, r.size) not in measured]
        measured |= {(r.tool, r.size) for r in earlier}
        runs += earlier
        report.setdefault("merged_from", []).append(str(path))
    tables += [t for t in (growth_table(runs, tool.name) for tool in tools) if t]
    legend = (
        "wall x, CPU x = restic / stackvault (>1: stackvault faster); RSS = stackvault / restic"
    )
    text = "\n\n".join([*tables, legend, f"page cache: {cache.describe()}"])
    print("\n" + text)
    save(text)
    trash.empty()
    failed = [p for r in runs for p in r.phases.values() if not p.ok]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
