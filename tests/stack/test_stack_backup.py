"""`stack preflight` and `stack backup` on the Dify-shaped Compose project of
`support.composeproject`, running on the real engine with two writers that keep saving
uploads and recording them in the ``dify`` database.

Covered: preflight passes on the running stack and fails, naming the service and the fix,
when the database is stopped; a strict backup stops exactly the writers, captures both
databases, Redis, the named volume, the data directories and the configuration, starts the
writers again and records how long they were down; the cut is consistent (every upload row
has its file and at most one file per writer lacks its row); the manifest has images with
digests, versions, ``alembic_version``, secret names without values; an online backup stops
nothing and records its skew; SIGINT in the middle of a strict cut saves nothing and every
stopped service runs again.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Result
from support.composeproject import DifyLikeProject, started
from support.dockerd import DockerEngine

Cli = Callable[..., Result]
WRITERS = ("api", "worker", "plugin_daemon", "weaviate")


@pytest.fixture(scope="module")
def project(
    docker_engine: DockerEngine, host_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DifyLikeProject]:
    proj = DifyLikeProject(tmp_path_factory.mktemp("dify") / "docker", docker_engine)
    with started(proj):
        yield proj


@pytest.fixture
def plan_file(cli: Cli, project: DifyLikeProject, docker_env: str, tmp_path: Path) -> Path:
    out = tmp_path / "stackvault.yaml"
    res = cli("stack", "discover", "--project", project.name, "--output", str(out))
    assert res.code == 0, res.err
    return out


def states(project: DifyLikeProject) -> dict[str, str]:
    out = project.compose("ps", "--services", "--filter", "status=running")
    running = set(out.split())
    return {s: ("running" if s in running else "stopped") for s in (*WRITERS, "db", "redis")}


def test_preflight_passes_and_names_a_stopped_database(
    cli: Cli, project: DifyLikeProject, plan_file: Path, initialised: Path
) -> None:
    res = cli("stack", "preflight", "--config", str(plan_file), "--json")
    assert res.code == 0, res.out + res.err
    checks = res.json()["checks"]
    assert all(c["status"] != "error" for c in checks), checks
    subjects = {c["subject"] for c in checks}
    assert {"service db", "source db", "source redis", "repository"} <= subjects
    assert any(c["subject"] == "source db" and "credentials work" in c["message"] for c in checks)

    project.compose("stop", "db")
    try:
        res = cli("stack", "preflight", "--config", str(plan_file))
        assert res.code == 1
        assert (
            f"FAIL  service db: is exited -> start it: docker start {project.container('db')}"
            in res.out
        ), res.out
        assert "the backup would fail or be incomplete" in res.err
        res = cli("stack", "backup", "--config", str(plan_file))
        assert res.code == 1 and "preflight: service db is exited" in res.err, res.err
        assert "nothing was stopped or saved" in res.err
        assert cli("snapshots", "--json").json() == []
    finally:
        project.compose("start", "db")
        project.wait_for_databases()


def test_strict_backup_is_one_consistent_cut_and_restarts_the_writers(
    cli: Cli, project: DifyLikeProject, plan_file: Path, initialised: Path
) -> None:
    time.sleep(1.5)  # let the writers write
    res = cli("stack", "backup", "--config", str(plan_file), "--json")
    assert res.code == 0, res.err
    doc = res.json()
    m = doc["manifest"]
    assert states(project) == dict.fromkeys((*WRITERS, "db", "redis"), "running")

    # Exactly the writers were stopped, and for how long is recorded.
    down = m["downtime"]
    assert sorted(down["containers"]) == sorted(project.container(s) for s in WRITERS)
    assert all(0 < s < 120 for s in down["containers"].values()), down
    assert 0 < down["seconds"] < 120
    assert {n for n, s in m["services"].items() if s["stopped"]} == set(WRITERS)

    snap = cli("snapshots", "--json").json()[-1]
    assert snap["id"] == doc["snapshot"] and f"stack:{project.name}" in snap["tags"]
    arts = {a["name"]: a for a in snap["artifacts"]}
    assert set(arts) == {"db", "redis", f"volume-{project.name}_weaviate_data"}
    assert all(a["complete"] for a in arts.values())
    dbs = arts["db"]["metadata"]["facts"]["databases"]
    assert {"dify", "dify_plugin"} <= set(dbs)
    rows = dbs["dify"]["tables"]["public.upload_files"]
    assert rows > 0

    # The cut: a row for every file, and at most one file per writer without its row.
    d = project.directory
    storage = f"{d}/volumes/app/storage/upload_files"
    res = cli("ls", doc["snapshot"], storage, "--json")
    assert res.code == 0, res.err
    files = [e for e in res.json() if e["type"] == "file" and e["path"].endswith(".bin")]
    print(f"rows {rows}, files {len(files)}, downtime {down['seconds']} s")
    assert rows <= len(files) <= rows + 2, (rows, len(files))
    res = cli("ls", doc["snapshot"], f"{d}/volumes/app/storage/privkeys", "--json")
    assert sum(1 for e in res.json() if e["path"].endswith("private.pem")) == 3
    res = cli("ls", doc["snapshot"], f"{d}/volumes/plugin_daemon", "--json")
    assert any(e["type"] == "symlink" and e["path"].endswith("/current") for e in res.json())

    # The manifest: images with digests/ids, versions, schema, secret names only.
    assert m["project"] == project.name and m["consistency"] == "strict"
    assert m["services"]["db"]["image_id"].startswith("sha256:")
    assert m["versions"]["db"]["server_version"].startswith("15.")
    assert m["app"] == {"alembic_version": "4f3a2b1c9d8e"}
    assert m["secrets"] == ["DB_PASSWORD", "SECRET_KEY"]
    assert project.secret_key not in res.out and project.secret_key not in str(doc)
    assert set(m["artifacts"]["db"]["checksums"]) >= {"databases/dify.pgc", "globals.sql"}
    assert f"{d}/.env" in snap["paths"] and f"{d}/docker-compose.yaml" in snap["paths"]


def test_online_backup_stops_nothing(
    cli: Cli, project: DifyLikeProject, plan_file: Path, initialised: Path
) -> None:
    res = cli("stack", "backup", "--config", str(plan_file), "--consistency", "online")
    assert res.code == 0, res.err
    assert "online: parts captured over" in res.out
    sizes = re.findall(r"^artifact \S+ \(\S+\): (.+), ok$", res.out, re.M)
    assert sizes and all(re.fullmatch(r"\d+ B|\d+\.\d\d [KMG]iB", s) for s in sizes), res.out
    assert "stopping" not in res.err
    res = cli("snapshots", "--json")
    m = res.json()[-1]
    assert f"stack:{project.name}" in m["tags"]
    assert states(project) == dict.fromkeys((*WRITERS, "db", "redis"), "running")


def test_sigint_mid_cut_saves_nothing_and_restarts_every_writer(
    project: DifyLikeProject, plan_file: Path, initialised: Path, docker_env: str
) -> None:
    before = len(snapshot_list())
    # Enough data that the cut lasts a few seconds.
    big = project.directory / "volumes/app/storage/big"
    big.mkdir(exist_ok=True)
    for i in range(6):
        (big / f"blob{i}").write_bytes(os.urandom(40 << 20))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stackvault", "stack", "backup", "--config", str(plan_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "capturing db" in line:
                break
        time.sleep(0.3)
        assert states(project)["api"] == "stopped", seen
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
        err = "".join(seen) + err
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "no snapshot was saved" in err, err
        assert states(project) == dict.fromkeys((*WRITERS, "db", "redis"), "running"), err
    finally:
        for f in big.iterdir():
            f.unlink()
        big.rmdir()
    assert len(snapshot_list()) == before


def snapshot_list() -> list[dict[str, object]]:
    import json

    res = subprocess.run(
        [sys.executable, "-m", "stackvault", "snapshots", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(res.stdout)
    assert isinstance(doc, list)
    return doc


def with_hooks(plan_file: Path, hooks: str) -> Path:
    text = plan_file.read_text()
    assert text.count("hooks:\n  []\n") == 1
    out = plan_file.with_name("hooked.yaml")
    out.write_text(text.replace("hooks:\n  []\n", "hooks:" + hooks))
    return out


def test_hooks_run_around_the_cut_and_an_essential_failure_undoes(
    cli: Cli, project: DifyLikeProject, plan_file: Path, initialised: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "paused"
    log = tmp_path / "hook.log"
    good = f"""
  - service: api
    before: "echo pause >> {log}; touch {marker}"
    after: "echo resume >> {log}; rm {marker}"
    where: host
  - service: db
    before: ["sh", "-c", "echo before > /tmp/hook-marker"]
    after: ["rm", "/tmp/hook-marker"]
    timeout: 10
"""
    res = cli("stack", "backup", "--config", str(with_hooks(plan_file, good)), "--json")
    assert res.code == 0, res.err
    hooks = res.json()["manifest"]["hooks"]
    assert [(h["service"], h["phase"], h["ok"]) for h in hooks] == [
        ("api", "before", True),
        ("db", "before", True),
        ("db", "after", True),
        ("api", "after", True),
    ]
    assert log.read_text() == "pause\nresume\n" and not marker.exists()
    assert "hook-marker" not in project.compose("exec", "-T", "db", "ls", "/tmp")
    count = len(cli("snapshots", "--json").json())

    failing = (
        good
        + """
  - service: redis
    before: "echo asking for a pause; echo no pause endpoint >&2; exit 7"
    mode: essential
"""
    )
    res = cli("stack", "backup", "--config", str(with_hooks(plan_file, failing)))
    assert res.code == 1
    assert (
        "the before hook of service redis (container) exited with status 7: no pause endpoint; "
        "the backup was aborted before anything was stopped or saved"
    ) in res.err, res.err
    assert "stopping" not in res.err
    shown = "[hook redis before] asking for a pause\n[hook redis before] no pause endpoint\n"
    assert shown in res.err, "the hook's own output, prefixed"
    assert log.read_text() == "pause\nresume\n" * 2 and not marker.exists(), "the undo ran"
    assert len(cli("snapshots", "--json").json()) == count
    assert states(project) == dict.fromkeys((*WRITERS, "db", "redis"), "running")

    optional = failing.replace("mode: essential", "mode: optional")
    res = cli("stack", "backup", "--config", str(with_hooks(plan_file, optional)), "--json")
    assert res.code == 0, res.err
    assert "warning: the before hook of service redis (container) exited with status 7" in res.err
    assert [h["ok"] for h in res.json()["manifest"]["hooks"]].count(False) == 1
    redis = next(h for h in res.json()["manifest"]["hooks"] if h["service"] == "redis")
    assert redis["output"] == "asking for a pause\nno pause endpoint\n"
