"""Writer downtime of the strict cut of ``stack backup`` on the Dify-shaped test stack.

    python -m bench.strictcut [--runs N] [--json-out FILE]

Starts a private Docker engine and the Dify-shaped Compose project of the tests
(`tests/support/composeproject.py`: PostgreSQL, Redis, a named Weaviate volume and four writers
- ``api``, ``worker``, ``plugin_daemon``, ``weaviate`` - that end on SIGTERM), discovers its
plan, and per mode (``stop``: the writers stopped and started again; ``pause``: the writers
frozen with ``docker pause``) backs it up into a fresh repository twice: the first backup and
an incremental one after the writers wrote for a few seconds more. Each figure comes from the
manifest the backup stores: ``downtime.seconds`` (from the first stop request until the last
writer runs again), the longest and shortest per-service downtime, the capture time and the
share of it the database dumps took (every writer waits for them: they are the cut).
Medians over ``--runs``. Needs root, ``dockerd``, ``docker-compose`` and PostgreSQL/Redis
installed on the host, as the stack tests do. ``stackvault`` runs as ``python -m stackvault``
from this interpreter; ``--baseline OTHER/src`` measures another checkout's code too, in turn
on the same stack (e.g. ``git archive COMMIT src | tar -x -C /tmp/base``), for a before/after
that both see the same machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench strict cut password"
WRITERS = ("api", "worker", "plugin_daemon", "weaviate")
MODES = ("stop", "pause")
BACKUPS = ("first", "incremental")
WRITE_FOR_S = 3.0
"""How long the writers write before each backup."""


@dataclass
class Figure:
    code: str
    """``this`` (the checkout the bench runs from) or ``baseline`` (``--baseline``)."""
    mode: str
    backup: str
    """``first`` or ``incremental``."""
    downtime_s: float
    longest_service_s: float
    shortest_service_s: float
    capture_s: float
    dumps_s: float
    """The database dumps' share of the capture (every writer waits for them)."""
    total_s: float


class Failed(Exception):
    """A command of the bench failed (its error output)."""


def _run(env: dict[str, str], *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "stackvault", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise Failed(f"stackvault {' '.join(args)} failed: {proc.stderr.strip()[-500:]}")
    out: dict[str, Any] = json.loads(proc.stdout) if "--json" in args else {}
    return out


def _pause_plan(plan_file: Path, out: Path) -> None:
    """The plan with ``quiesce: pause`` for every writer."""
    from stackvault.stack.plan import load_plan, render_plan

    plan = load_plan(str(plan_file))
    for name in WRITERS:
        plan.services[name].quiesce = "pause"
    out.write_text(render_plan(plan))


def _figure(code: str, mode: str, backup: str, doc: dict[str, Any]) -> Figure:
    m = doc["manifest"]
    per_service = [s["downtime_s"] for s in m["downtime"]["services"].values()]
    return Figure(
        code=code,
        mode=mode,
        backup=backup,
        downtime_s=m["downtime"]["seconds"],
        longest_service_s=max(per_service),
        shortest_service_s=min(per_service),
        capture_s=m["timings"]["capture_s"],
        dumps_s=round(
            sum(
                a["duration_s"]
                for a in m["artifacts"].values()
                if a["kind"] in ("postgres", "mysql", "redis")
            ),
            3,
        ),
        total_s=m["timings"]["total_s"],
    )


def measure(runs: int, baseline: str | None = None) -> list[Figure]:
    """Every figure of every run (see the module docstring); with ``baseline`` (another
    checkout's ``src``) each run measures that code too, on the same stack, the two taking turns
    to go first, so that both see the same machine."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.composeproject import DifyLikeProject, started
    from support.dockerd import DockerEngine, build_host_image

    figures: list[Figure] = []
    with DockerEngine() as engine, tempfile.TemporaryDirectory(prefix="sv-cut-") as tmp:
        build_host_image(engine.client())
        work = Path(tmp)
        env = {**os.environ, "DOCKER_HOST": engine.host, "STACKVAULT_PASSWORD": PASSWORD}
        for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
            env.pop(name, None)
        with started(DifyLikeProject(work / "docker", engine)) as project:
            plans = {"stop": work / "plan.yaml", "pause": work / "plan-pause.yaml"}
            _run(
                env, "stack", "discover", "--project", project.name, "--output", str(plans["stop"])
            )
            _pause_plan(plans["stop"], plans["pause"])
            codes = {"this": env}
            if baseline is not None:
                codes["baseline"] = {**env, "PYTHONPATH": baseline}
            for run in range(runs):
                for mode in MODES:
                    order = list(codes) if run % 2 == 0 else list(reversed(codes))
                    for code in order:
                        repo = work / f"repo-{code}-{mode}-{run}"
                        cenv = {**codes[code], "STACKVAULT_REPOSITORY": str(repo)}
                        _run(cenv, "init")
                        for backup in BACKUPS:
                            time.sleep(WRITE_FOR_S)
                            try:
                                doc = _run(
                                    cenv, "stack", "backup", "-c", str(plans[mode]), "--json"
                                )
                            except Failed as exc:  # said, and left out of the medians
                                print(
                                    f"run {run + 1}: {code} {mode} {backup}: {exc}", file=sys.stderr
                                )
                                continue
                            figures.append(_figure(code, mode, backup, doc))
                            print(f"run {run + 1}: {figures[-1]}", file=sys.stderr)
    return figures


def table(figures: list[Figure]) -> str:
    """Medians per mode and backup, as a Markdown table."""
    lines = [
        "| code | mode | backup | writers down (s) | longest service (s) | shortest service (s) "
        "| capture (s) | of it dumps (s) | whole backup (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for code, mode, backup in itertools.product(("baseline", "this"), MODES, BACKUPS):
        group = [f for f in figures if (f.code, f.mode, f.backup) == (code, mode, backup)]
        if group:

            def med(attr: str, group: list[Figure] = group) -> str:
                return f"{statistics.median(getattr(f, attr) for f in group):.2f}"

            lines.append(
                f"| {code} | {mode} | {backup} | {med('downtime_s')} "
                f"| {med('longest_service_s')} | {med('shortest_service_s')} "
                f"| {med('capture_s')} | {med('dumps_s')} | {med('total_s')} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.strictcut", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--json-out", help="also write every figure to this file")
    parser.add_argument(
        "--baseline",
        metavar="SRC",
        help="another checkout's src directory, measured in turn on the same stack",
    )
    args = parser.parse_args(argv)
    try:
        figures = measure(args.runs, args.baseline)
    except Failed as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([asdict(f) for f in figures], indent=2))
    print(table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
