"""`stackvault drill` of the Dify-shaped Compose project (`support.composeproject`, host
networking only) on the real engine, while "production" keeps running and writing: one
stack and one snapshot for the module.

- the drill passes: every probe (databases and Redis against the snapshot's facts, files,
  services, Dify's tenant keys, the plan's HTTP probe sent inside the sandbox) passes, every
  phase and the RTO are in the report, the HTML page and the run record in the repository;
  production's containers and its named volume are untouched; nothing with the drill label
  is left, nor the drill's directory;
- a probe that fails (the plan's HTTP probe expecting another status) fails the drill;
- a snapshot whose pack is missing fails the drill naming the artifact;
- SIGTERM during a drill: exit 130, everything it created removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from conftest import FAST_INIT, PASSWORD, Result
from stackvault.cli.main import main
from stackvault.records.drill import latest_drill
from stackvault.repo.repository import Repository
from stackvault.store.open import open_store
from support.composeproject import DifyLikeProject, started
from support.dockerd import DockerEngine

Cli = Callable[..., Result]
JOB = "dify"


@pytest.fixture(scope="module")
def env(docker_engine: DockerEngine) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
            mp.delenv(name, raising=False)
        mp.setenv("DOCKER_HOST", docker_engine.host)
        mp.setenv("SV_PW", PASSWORD)
        yield


@pytest.fixture(scope="module")
def project(
    env: None,
    docker_engine: DockerEngine,
    host_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DifyLikeProject]:
    proj = DifyLikeProject(tmp_path_factory.mktemp("dify-drill") / "docker", docker_engine)
    with started(proj):
        yield proj


@pytest.fixture(scope="module")
def setup(project: DifyLikeProject, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The plan (with an HTTP probe of ``web``), a repository, a configuration with job
    ``dify`` and one online stack snapshot of it (tagged ``job:dify``), made while the
    writers run."""
    base = tmp_path_factory.mktemp("drill-setup")
    plan = base / "dify-plan.yaml"
    repo = base / "repo"
    assert main(["stack", "discover", "--project", project.name, "-o", str(plan)]) == 0
    doc = yaml.safe_load(plan.read_text())
    doc["probes"] = [{"url": f"http://127.0.0.1:{project.web_port}/", "service": "web"}]
    plan.write_text(json.dumps(doc))
    os.environ["STACKVAULT_PASSWORD"] = PASSWORD
    try:
        assert main(["--repo", str(repo), *FAST_INIT]) == 0
        project.compose(
            "exec", "-T", "redis", "redis-cli", "-p", str(project.redis_port), "MSET", "a", "1"
        )
        code = main(
            [
                "--repo",
                str(repo),
                "stack",
                "backup",
                "--config",
                str(plan),
                "--consistency",
                "online",  # nothing stops: production keeps writing throughout
                "--tag",
                f"job:{JOB}",
            ]
        )
        assert code == 0
    finally:
        del os.environ["STACKVAULT_PASSWORD"]
    config = base / "stackvault.yaml"
    config.write_text(
        f"""\
repositories:
  primary: {{url: {repo}, password_env: SV_PW}}
jobs:
  {JOB}:
    stack_plan: {plan}
    policy: tier2
    repository: primary
"""
    )
    return {"plan": plan, "repo": repo, "config": config, "base": base}


def open_repo(location: Path) -> Repository:
    return Repository.open(open_store(str(location)), PASSWORD.encode())


def production(project: DifyLikeProject) -> dict[str, object]:
    client = project.engine.client()
    try:
        containers = {
            c.name: c.id
            for c in client.containers.list(
                all=True, filters={"label": f"com.docker.compose.project={project.name}"}
            )
        }
        volume = project.compose(
            "exec",
            "-T",
            "weaviate",
            "sh",
            "-c",
            "ls -la /var/lib/weaviate; cat /var/lib/weaviate/*",
        )
        volumes = sorted(str(v.name) for v in client.volumes.list())
    finally:
        client.close()
    return {"containers": containers, "volume": volume, "volumes": volumes}


def leftovers(project: DifyLikeProject, workdir: Path) -> list[str]:
    from stackvault.stack.drill import drill_resources

    client = project.engine.client()
    try:
        left = drill_resources(client)
    finally:
        client.close()
    if workdir.exists():
        left += [f"directory {p}" for p in workdir.iterdir()]
    return left


def test_drill_passes_while_production_writes(
    cli: Cli, project: DifyLikeProject, setup: dict[str, Path], tmp_path: Path
) -> None:
    before = production(project)
    rows_before = int(project.psql("SELECT count(*) FROM upload_files", db="dify"))
    workdir = tmp_path / "drills"
    page = tmp_path / "drill.html"
    res = cli(
        "drill",
        JOB,
        "--config",
        str(setup["config"]),
        "--workdir",
        str(workdir),
        "--wait",
        "60",
        "--html",
        str(page),
        "--json",
    )
    report = res.json()
    print(json.dumps({p["name"]: p["end_s"] - p["start_s"] for p in report["phases"]}))
    print(f"RTO {report['rto_s']} s")
    assert res.code == 0, res.err + json.dumps(report, indent=1)
    assert report["passed"] and report["result"] == "ok"
    names = [p["name"] for p in report["phases"]]
    for phase in (
        "read snapshot",
        "configuration",
        "isolate",
        "database services",
        "databases",
        "volumes",
        "data directories",
        "other services",
        "first healthy",
        "validation",
        "probes",
        "cleanup",
    ):
        assert phase in names, names
    assert 0 < report["rto_s"] < report["rto_target_s"] == 7200
    assert report["rto_met"] is True and report["rpo_achieved_s"] > 0
    probes = {p["name"]: p for p in report["probes"]}
    assert all(p["status"] != "fail" for p in report["probes"]), report["probes"]
    http = probes[f"http http://127.0.0.1:{project.web_port}/"]
    assert http == {
        "name": f"http http://127.0.0.1:{project.web_port}/",
        "status": "pass",
        "message": "answered 200 inside the drill",
    }
    assert probes["dify tenant keys"]["status"] == "pass"
    kinds = " ".join(probes)
    assert "database db" in kinds and "redis " in kinds and "volume " in kinds, kinds
    assert probes["files: data directories (SHA-256)"]["status"] == "pass"
    connected = {n: p["status"] for n, p in probes.items() if n.endswith(": accepts connections")}
    assert len(connected) == 2 and set(connected.values()) == {"pass"}, connected  # db, redis
    assert report["blanked"] == []  # the project has no outbound settings
    assert report["cleanup"]["ok"] and any(
        r.startswith("container ") for r in report["cleanup"]["removed"]
    )
    assert report["drill_project"].startswith(f"{project.name}-drill-")
    # production untouched, and still writing
    after = production(project)
    assert after["containers"] == before["containers"]
    assert after["volume"] == before["volume"]
    assert after["volumes"] == before["volumes"]
    assert int(project.psql("SELECT count(*) FROM upload_files", db="dify")) > rows_before
    # nothing left
    assert leftovers(project, workdir) == []
    # the record in the repository, and the page
    repo = open_repo(setup["repo"])
    try:
        drill = latest_drill(repo.list_runs(job=JOB))
    finally:
        repo.store.close()
    assert drill is not None and drill.passed and drill.drill_id == report["drill_id"]
    assert drill.rto_s == report["rto_s"] and [p.name for p in drill.phases] == names
    html = page.read_text()
    assert "<svg" in html and "PASSED" in html and "http://" not in html.split("<body>")[0]
    assert "src=" not in html and "<script" not in html


def test_a_failing_probe_fails_the_drill_which_reaches_nothing_outside_and_clears_leftovers(
    project: DifyLikeProject, setup: dict[str, Path], tmp_path: Path, host_image: str
) -> None:
    """Two probes fail: the web service answers 200, not the 418 asked for; a server on
    this host's loopback is out of the drill's reach (its namespace has only its own
    loopback). Leftovers of an earlier drill (a labelled container, a volume, a directory)
    are removed first."""
    import functools
    import http.server
    import threading

    from stackvault.sources.docker.engine import connect
    from stackvault.stack.drill import (
        LABEL,
        LABEL_DRILL_PROJECT,
        DrillOptions,
        pick_drill_snapshot,
        run_drill,
    )

    workdir = tmp_path / "drills"
    old = "svold-drill-20200101-000000"
    (workdir / old / "docker").mkdir(parents=True)
    running = workdir / "svlive-drill-20200101-000001"  # another drill, still running
    running.mkdir()
    (running / ".stackvault-drill-owner").write_text(f"{socket.gethostname()}:{os.getppid()}")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    outside = f"http://127.0.0.1:{server.server_address[1]}/"
    repo = open_repo(setup["repo"])
    client = connect()
    try:
        client.containers.create(
            host_image,
            ["true"],
            name=f"{old}-sandbox",
            labels={LABEL: "0" * 32, LABEL_DRILL_PROJECT: old},
        )
        client.volumes.create(f"{old}_weaviate_data")
        repo.load_index()
        snap = pick_drill_snapshot(repo.list_snapshots(), JOB, "latest", snap_now())
        stack = dict(snap.stack or {})
        plan = dict(stack["plan"])
        plan["probes"] = [
            {"url": f"http://127.0.0.1:{project.web_port}/", "status": 418, "service": "web"},
            {"url": outside, "status": 200, "service": "web"},
        ]
        stack["plan"] = plan
        result = run_drill(
            repo,
            replace(snap, stack=stack),
            client,
            DrillOptions(job=JOB, workdir=str(workdir), wait=10),
        )
    finally:
        client.close()
        repo.store.close()
        server.shutdown()
        server.server_close()
    assert result.result == "failed"
    sent = [p for p in result.probes if p.name.startswith("http ")]
    assert len(sent) == 2, (result.error, result.phases)
    web, out = sent
    assert web.status == "fail" and "answered 200, not 418" in web.message, web
    assert out.status == "fail" and out.message.startswith("no answer, not 200"), out
    assert (result.summary_error() or "").startswith("probe http http://127.0.0.1:")
    assert leftovers(project, workdir) == [f"directory {running}"]
    shutil.rmtree(running)
    assert result.cleanup.ok and leftovers(project, workdir) == []
    [removed] = [n for n in result.notices if n.startswith("removed leftovers")]
    for thing in (
        f"container {old}-sandbox",
        f"volume {old}_weaviate_data",
        f"directory {workdir / old}",
    ):
        assert thing in removed, removed


def snap_now() -> object:
    import datetime

    return datetime.datetime.now(datetime.UTC)


def test_a_missing_pack_fails_the_drill_naming_the_artifact(
    cli: Cli, project: DifyLikeProject, setup: dict[str, Path], tmp_path: Path
) -> None:
    from stackvault.engine.filedata import find_node
    from stackvault.repo.pack import pack_name

    broken = tmp_path / "repo"
    shutil.copytree(setup["repo"], broken)
    repo = open_repo(broken)
    try:
        repo.load_index()
        [snap] = [s for s in repo.list_snapshots() if f"job:{JOB}" in s.tags]
        [volume] = [a for a in snap.artifacts if a.kind == "docker-volume"]
        node = find_node(repo, snap, volume.path)
        stack = [node]
        blob = None
        while stack and blob is None:
            n = stack.pop()
            if n.type == "file" and n.content:
                blob = n.content[0]
            elif n.subtree is not None:
                stack += repo.load_tree(n.subtree)
        assert blob is not None
        entry = repo.index.get(blob)
        assert entry is not None
        (broken / pack_name(entry.pack_id)).unlink()
    finally:
        repo.store.close()
    config = tmp_path / "stackvault.yaml"
    config.write_text(setup["config"].read_text().replace(str(setup["repo"]), str(broken)))
    workdir = tmp_path / "drills"
    res = cli("drill", JOB, "--config", str(config), "--workdir", str(workdir), "--json")
    assert res.code == 1, res.err
    report = res.json()
    assert report["result"] == "failed"
    # the first part whose data is gone is named (small files of several parts share packs)
    found = re.match(
        r"read snapshot: artifact (\S+): file \S+ needs pack [0-9a-f]{12}, which", report["error"]
    )
    assert found and found.group(1) in {a.name for a in snap.artifacts}, report["error"]
    assert [p["name"] for p in report["phases"]] == ["leftovers", "read snapshot", "cleanup"]
    res = cli("drill", JOB, "--config", str(config), "--workdir", str(workdir))
    assert res.code == 1
    assert f"of job {JOB}: failed, RTO not reached: read snapshot: artifact " in res.err, res.err
    assert "FAIL read snapshot" in res.out, res.out
    assert leftovers(project, workdir) == []


def test_sigterm_during_a_drill_cleans_up(
    project: DifyLikeProject, setup: dict[str, Path], tmp_path: Path
) -> None:
    from stackvault.stack.drill import LABEL

    workdir = tmp_path / "drills"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # docker-compose's own
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stackvault",
            "drill",
            JOB,
            "--config",
            str(setup["config"]),
            "--workdir",
            str(workdir),
            "--json",
            "--trigger",
            "schedule",
            "--run-id",
            "5e" * 16,  # as serve passes them
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = project.engine.client()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            found = client.api.containers(all=True, filters={"label": LABEL})
            if len(found) >= 2:  # the sandbox and a database service
                break
            time.sleep(0.2)
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the drill ended before the signal: {out}\n{err}")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert json.loads(out)["result"] == "interrupted"
    repo = open_repo(setup["repo"])
    try:
        [record] = [r for r in repo.list_runs(job=JOB) if r.id == "5e" * 16]
    finally:
        repo.store.close()
    assert record.result == "interrupted" and record.trigger == "schedule"
    assert leftovers(project, workdir) == []


def test_a_drill_without_an_engine_is_recorded_as_failed(
    cli: Cli, setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    res = cli("drill", JOB, "--config", str(setup["config"]), "--workdir", str(tmp_path), "--json")
    assert res.code == 1
    report = res.json()
    assert report["error"].startswith("the drill could not run: cannot reach the Docker engine")
    repo = open_repo(setup["repo"])
    try:
        drill = latest_drill(repo.list_runs(job=JOB))
    finally:
        repo.store.close()
    assert drill is not None and drill.drill_id == report["drill_id"] and not drill.passed
