"""stackvault beside restic on many small files: how time and memory grow with the file count.

For each file count (``--files 20000,200000,1000000``) a tree of ~4 kB JSON documents is
generated once (``bench/scaleset.py``; kept trees of the same count and seed are reused), then
each tool, in a fresh repository with fresh caches, runs three measured phases on it:

* ``initial``: the first backup of the tree;
* ``nochange``: a second backup, nothing changed;
* ``restore``: the latest snapshot into an empty directory (verified: file count, total size,
  the SHA-256 of 64 sampled files).

The tree is backed up where it was generated (both tools see the same absolute path), so no
copy of a million files is made between tools. Each phase is one child process measured as in
``bench/compare.py`` (wall time, CPU time and peak RSS from ``wait4``; the page cache dropped
before each phase where permitted, else the input read once). Printed: one table per count with
restic ÷ stackvault ratios, then how each tool's time per thousand files and peak RSS grow
from the smallest count to the largest.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import scaleset
from bench.compare import (
    MB,
    CacheMode,
    Layout,
    Restic,
    Result,
    Stackvault,
    Tool,
    Trash,
    base_env,
    measure,
    wait_for_idle,
)

PHASES = ("initial", "nochange", "restore")
TOOLS: dict[str, type[Tool]] = {"stackvault": Stackvault, "restic": Restic}


@dataclass
class ScaleRun:
    """What one tool cost at one file count."""

    tool: str
    files: int
    bytes: int
    phases: dict[str, Result] = field(default_factory=dict)
    restore_check: str = "not run"

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "files": self.files,
            "bytes": self.bytes,
            "phases": {name: r.to_json() for name, r in self.phases.items()},
            "restore_check": self.restore_check,
        }


@dataclass(frozen=True)
class Options:
    workdir: Path
    seed: int
    timeout: float
    idle_wait: float
    cache: CacheMode
    trash: Trash


def _phase(run: ScaleRun, name: str, tool: Tool, lay: Layout, opts: Options) -> Result:
    wait_for_idle(opts.idle_wait)
    inputs = [lay.repo] if name == "restore" else [lay.src]
    opts.cache.prepare(inputs)
    if name == "restore":
        cmd = tool.restore(lay, 2)
    else:
        cmd = tool.backup(lay, 1 if name == "initial" else 2)
    env = tool.env(lay)
    result = measure(name, cmd, env, lay.logs, run.bytes, opts.timeout)
    if result.returncode != 0 and not result.problem:
        result.problem = f"exit code {result.returncode}"
    run.phases[name] = result
    status = "ok" if result.ok else f"FAILED ({result.problem})"
    print(
        f"  {run.files:>9,} files {run.tool:<10} {name:<8} {result.wall_s:8.2f} s wall "
        f"{result.cpu_s:8.2f} s CPU {result.max_rss_kb * 1024 / MB:6.0f} MB RSS  {status}",
        flush=True,
    )
    return result


def run_tool(tool: Tool, src: Path, manifest: scaleset.ScaleManifest, opts: Options) -> ScaleRun:
    """Init, then the three phases; the run directory is discarded afterwards."""
    run = ScaleRun(tool.name, manifest.count, manifest.bytes)
    lay = Layout(opts.workdir / f"{manifest.count}" / tool.name, src)
    opts.trash.discard(lay.base)
    for path in (lay.logs, lay.cache, lay.home / "tmp"):
        path.mkdir(parents=True)
    env = {**base_env(lay), **tool.env(lay)}
    for cmd in tool.init(lay):
        if measure("init", cmd, env, lay.logs, 0, opts.timeout).returncode == 0:
            break
    else:
        run.restore_check = "init failed"
        return run
    try:
        for name in PHASES:
            if name == "restore":
                lay.restore.mkdir()
            if not _phase(run, name, tool, lay, opts).ok:
                return run
        problem = scaleset.verify(lay.restored_src(), manifest)
        run.restore_check = problem or "sampled"
        if problem:
            run.phases["restore"].problem = f"restored data wrong: {problem}"
            print(f"  restore of {tool.name} is wrong: {problem}", flush=True)
    finally:
        opts.trash.discard(lay.base)
    return run


def _ratio(ours: float | None, theirs: float | None) -> str:
    return f"{theirs / ours:5.2f}" if ours and theirs else "    -"


def count_table(runs: list[ScaleRun]) -> str:
    """One file count: each phase's wall, CPU, RSS for both tools, and restic ÷ stackvault."""
    by_tool = {r.tool: r for r in runs}
    ours, theirs = by_tool.get("stackvault"), by_tool.get("restic")
    first = runs[0]
    lines = [
        f"{first.files:,} files, {first.bytes / MB:,.0f} MB",
        f"{'phase':<10}{'stackvault wall/CPU/RSS':>28}{'restic wall/CPU/RSS':>28}"
        f"{'wall x':>8}{'CPU x':>7}{'RSS':>6}",
    ]
    for name in PHASES:
        a = ours.phases.get(name) if ours else None
        b = theirs.phases.get(name) if theirs else None

        def cell(r: Result | None) -> str:
            if r is None:
                return f"{'-':>28}"
            if not r.ok:
                return f"{'FAILED':>28}"
            return f"{r.wall_s:9.1f} s{r.cpu_s:8.1f} s{r.max_rss_kb * 1024 / MB:6.0f} MB"

        ok = a is not None and b is not None and a.ok and b.ok
        rss = f"{a.max_rss_kb / b.max_rss_kb:6.2f}" if ok and a and b and b.max_rss_kb else "     -"
        lines.append(
            f"{name:<10}{cell(a)}{cell(b)}"
            f"{_ratio(a.wall_s if ok and a else None, b.wall_s if ok and b else None):>8}"
            f"{_ratio(a.cpu_s if ok and a else None, b.cpu_s if ok and b else None):>7}{rss}"
        )
    return "\n".join(lines)


def growth_table(runs: list[ScaleRun], tool: str) -> str:
    """How one tool's wall time per 1,000 files and peak RSS change with the file count."""
    mine = sorted((r for r in runs if r.tool == tool), key=lambda r: r.files)
    if len(mine) < 2:
        return ""
    header = f"{tool}: wall ms per 1,000 files / peak RSS MB"
    lines = [header, f"{'phase':<10}" + "".join(f"{r.files:>18,}" for r in mine)]
    for name in PHASES:
        cells = []
        for r in mine:
            res = r.phases.get(name)
            if res is None or not res.ok:
                cells.append(f"{'-':>18}")
            else:
                per_k = res.wall_s * 1000 / (r.files / 1000)
                cells.append(f"{per_k:9.0f} / {res.max_rss_kb * 1024 / MB:5.0f}")
        lines.append(f"{name:<10}" + "".join(cells))
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {"platform": platform.platform(), "python": platform.python_version(), "commit": commit}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--files", default="20000,200000", help="comma-separated file counts")
    parser.add_argument("--tools", default="stackvault,restic")
    parser.add_argument("--workdir", type=Path, default=Path("bench/work-scale"))
    parser.add_argument("--json-out", type=Path, default=Path("bench/results/scale.json"))
    parser.add_argument("--cache", choices=("auto", "warm"), default="auto")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timeout", type=float, default=7200)
    parser.add_argument("--idle-wait", type=float, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the generated trees")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.scale``: 0 when every phase of every tool succeeded."""
    args = parse_args(argv)
    counts = [int(c.replace("_", "")) for c in args.files.split(",") if c]
    tools = [TOOLS[name]() for name in args.tools.split(",") if name in TOOLS]
    tools = [t for t in tools if t.executable()]
    cache = CacheMode.detect(args.cache)
    print(f"page cache: {cache.describe()}", flush=True)
    workdir = args.workdir.resolve()
    opts = Options(
        workdir, args.seed, args.timeout, args.idle_wait, cache, Trash(workdir / "trash")
    )
    runs: list[ScaleRun] = []
    tables: list[str] = []
    for count in counts:
        src = workdir / f"files-{count}"
        started = time.perf_counter()
        manifest = scaleset.generate(src, count, args.seed)
        print(f"{count:,} files ready in {time.perf_counter() - started:.0f} s", flush=True)
        mine = [run_tool(tool, src, manifest, opts) for tool in tools]
        runs += mine
        tables.append(count_table(mine))
        if not args.keep:
            opts.trash.discard(src, scaleset.manifest_path(src))
    tables += [t for t in (growth_table(runs, tool.name) for tool in tools) if t]
    legend = (
        "wall x, CPU x = restic / stackvault (>1: stackvault faster); RSS = stackvault / restic"
    )
    text = "\n\n".join([*tables, legend, f"page cache: {cache.describe()}"])
    print("\n" + text)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": _machine(), "runs": [r.to_json() for r in runs], "printed": text}
    args.json_out.write_text(json.dumps(report, indent=1))
    opts.trash.empty()
    failed = [r for r in runs if r.restore_check != "sampled"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
