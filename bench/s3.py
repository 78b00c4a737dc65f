"""stackvault and restic against an S3 server on this machine (SeaweedFS on 127.0.0.1).

    python -m bench.s3 [--scale F] [--runs N] [--tools stackvault,restic] [--json-out FILE]

The same dataset as `bench.compare` (reused if kept there), one SeaweedFS server started as
the tests start it (`tests/support/seaweed.py`; the `weed` binary comes with the dev extras)
and, per run and tool, a fresh bucket, repository and cache. Phases: initial backup,
no-change backup, full restore, ``check --read-data``, ``copy`` of the repository into a new
local one, and ``dump`` of the SQL dump to /dev/null. Each figure: wall time, our CPU time
(user + system of the child), the server's CPU time during the phase (the server shares the
machine's cores: it is part of what a phase costs here) and the child's peak RSS; medians
over the runs, ratios restic / stackvault. The page cache is warm (inputs pre-read): the
server's disk is this machine's. Not part of the targets of `bench.compare`, which measures
local repositories.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.compare import (
    Command,
    Result,
    Trash,
    measure,
    prepare_master,
    prewarm,
)

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench s3 password"
PHASES = ("initial", "nochange", "restore", "check", "copy", "dump")
DUMP_FILE = "db/app.sql"


@dataclass
class Measured:
    result: Result
    server_cpu_s: float


def server_cpu_s(pgid: int) -> float:
    """CPU seconds used so far by the processes of group ``pgid`` (the server)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def phases(
    tool: str, endpoint: str, bucket: str, src: Path, work: Path
) -> list[tuple[str, Command]]:
    """The commands of one run of ``tool``, in order (init first, not measured)."""
    restore_to, copy_to = work / "restored", work / "copy-repo"
    dump = str(src / DUMP_FILE)
    if tool == "stackvault":
        sv = [sys.executable, "-m", "stackvault"]
        repo = ["--repo", f"s3://{bucket}/repo"]
        return [
            ("init", Command([*sv, *repo, "init"])),
            ("initial", Command([*sv, *repo, "backup", str(src)])),
            ("nochange", Command([*sv, *repo, "backup", str(src)])),
            ("restore", Command([*sv, *repo, "restore", "latest", "--target", str(restore_to)])),
            ("check", Command([*sv, *repo, "check", "--read-data"])),
            ("copy-init", Command([*sv, "--repo", str(copy_to), "init"])),
            ("copy", Command([*sv, "copy", "--from", f"s3://{bucket}/repo", "--to", str(copy_to)])),
            ("dump", Command([*sv, *repo, "dump", "latest", dump])),
        ]
    repo = ["restic", "-q", "--repo", f"s3:{endpoint}/{bucket}/repo"]
    local = ["restic", "-q", "--repo", str(copy_to)]
    return [
        ("init", Command([*repo, "init", "--repository-version", "2"])),
        ("initial", Command([*repo, "backup", "--compression", "auto", str(src)])),
        ("nochange", Command([*repo, "backup", "--compression", "auto", str(src)])),
        ("restore", Command([*repo, "restore", "latest", "--target", str(restore_to)])),
        ("check", Command([*repo, "check", "--read-data"])),
        ("copy-init", Command([*local, "init", "--repository-version", "2"])),
        (
            "copy",
            Command(
                [
                    *local,
                    "copy",
                    "--from-repo",
                    f"s3:{endpoint}/{bucket}/repo",
                    "--compression",
                    "auto",
                ]
            ),
        ),
        ("dump", Command([*repo, "dump", "latest", dump])),
    ]


def run_tool(
    tool: str,
    server: Any,
    run: int,
    src: Path,
    size: int,
    workdir: Path,
    timeout: float,
    trash: Trash,
) -> dict[str, Measured]:
    work = workdir / f"s3-run-{run}" / tool
    trash.discard(work)
    (work / "logs").mkdir(parents=True)
    bucket = server.create_bucket(f"bench-{run}-{tool}")
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=server.admin.access_key,
        AWS_SECRET_ACCESS_KEY=server.admin.secret_key,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        NO_PROXY="127.0.0.1",
        STACKVAULT_S3_ENDPOINT=server.endpoint,
        STACKVAULT_PASSWORD=PASSWORD,
        STACKVAULT_FROM_PASSWORD=PASSWORD,
        RESTIC_PASSWORD=PASSWORD,
        RESTIC_FROM_PASSWORD=PASSWORD,
        XDG_CACHE_HOME=str(work / "cache"),
        RESTIC_CACHE_DIR=str(work / "cache"),
        HOME=str(work),
    )
    out: dict[str, Measured] = {}
    for phase, cmd in phases(tool, server.endpoint, bucket, src, work):
        if phase in ("initial", "nochange"):
            prewarm([src])
        before = server_cpu_s(server.pid)
        if phase == "dump":  # to /dev/null, not to the log file; exec keeps the rusage the tool's
            cmd = Command(["sh", "-c", 'exec "$0" "$@" > /dev/null', *cmd.argv])
        result = measure(phase, cmd, env, work / "logs", size, timeout)
        spent = server_cpu_s(server.pid) - before
        if not result.ok:
            raise SystemExit(f"{tool} {phase} failed ({result.returncode}): {result.stderr_tail}")
        if phase in PHASES:
            out[phase] = Measured(result, spent)
        if phase == "restore":
            trash.discard(work / "restored")
    trash.discard(work / "copy-repo")
    return out


def table(medians: dict[str, dict[str, dict[str, float]]], tools: list[str]) -> str:
    head = f"{'phase':10}" + "".join(
        f"  {t[:10] + ' s':>12} {'CPU':>5} {'srv':>5} {'RSS':>5}" for t in tools
    )
    lines = [head + ("  restic/sv" if {"stackvault", "restic"} <= set(tools) else "")]
    for phase in PHASES:
        row = f"{phase:10}"
        for tool in tools:
            m = medians[tool][phase]
            row += (
                f"  {m['wall_s']:12.2f} {m['cpu_s']:5.2f} {m['server_cpu_s']:5.2f}"
                f" {m['max_rss_mb']:5.0f}"
            )
        if {"stackvault", "restic"} <= set(tools):
            theirs, ours = medians["restic"][phase], medians["stackvault"][phase]
            row += f"  {theirs['wall_s'] / ours['wall_s']:8.2f}"
        lines.append(row)
    lines.append(
        "s = wall seconds, CPU = the tool's CPU-s, srv = the server's CPU-s during the phase, "
        "RSS = the tool's peak MB; median of the runs"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.s3", description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--tools", default="stackvault,restic")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "work")
    parser.add_argument("--json-out", type=Path, default=ROOT / "bench" / "results" / "s3.json")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    unknown = set(tools) - {"stackvault", "restic"}
    if unknown:
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    if "restic" in tools and shutil.which("restic") is None:
        parser.error("restic is not installed (make bench installs it)")
    sys.path.insert(0, str(ROOT / "tests"))
    from support.seaweed import SeaweedServer, find_weed  # type: ignore[import-not-found]

    args.workdir.mkdir(parents=True, exist_ok=True)
    data = prepare_master(args.workdir, args.scale, args.seed)
    print(f"dataset: {data.files} files, {data.bytes / 1e6:.1f} MB", flush=True)
    # Finished trees are moved aside, not deleted, until the end: files created soon after
    # many were deleted cost ext4 several times the system time (see `bench.compare.Trash`).
    trash = Trash(args.workdir / "trash")
    server_dir = args.workdir / "s3-server"
    trash.discard(server_dir, *args.workdir.glob("s3-run-*"))
    trash.settle()
    server = SeaweedServer(server_dir, weed=find_weed()).start()
    raw: dict[str, list[dict[str, Measured]]] = {t: [] for t in tools}
    try:
        for run in range(1, args.runs + 1):
            order = tools if run % 2 else list(reversed(tools))
            for tool in order:
                got = run_tool(
                    tool, server, run, data.master, data.bytes, args.workdir, args.timeout, trash
                )
                raw[tool].append(got)
                print(
                    f"run {run} {tool:10} "
                    + " ".join(f"{p} {m.result.wall_s:.2f}s" for p, m in got.items()),
                    flush=True,
                )
    finally:
        server.stop()
        trash.discard(server_dir)
        trash.empty()
    medians = {
        tool: {
            phase: {
                "wall_s": statistics.median(r[phase].result.wall_s for r in runs),
                "cpu_s": statistics.median(r[phase].result.cpu_s for r in runs),
                "server_cpu_s": statistics.median(r[phase].server_cpu_s for r in runs),
                "max_rss_mb": statistics.median(r[phase].result.max_rss_kb / 1024 for r in runs),
            }
            for phase in PHASES
        }
        for tool, runs in raw.items()
    }
    printed = table(medians, tools)
    print(printed)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "dataset": {"files": data.files, "bytes": data.bytes, "digest": data.digest},
                "runs": {
                    tool: [
                        {
                            p: m.result.to_json() | {"server_cpu_s": m.server_cpu_s}
                            for p, m in r.items()
                        }
                        for r in runs
                    ]
                    for tool, runs in raw.items()
                },
                "medians": medians,
                "table": printed,
            },
            indent=2,
        )
    )
    print(f"results: {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
