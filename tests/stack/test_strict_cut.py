"""The strict cut of `stack backup` on a Compose project (docker-compose 1.29 on the test
engine) whose writers ignore SIGTERM: ``w1``..``w4`` (no dependencies; ``stop_grace_period:
3s``, ``w4`` 1 s) and ``front``, which depends on ``w1`` and ``w2`` (``stop_grace_period:
2s``); each writes into its own bind-mounted directory.

Covered: the services of one dependency level are stopped together (``front`` first, then the
four others at once), so the writers are down for about one stop timeout per level, not one
per service; each container is given its own ``stop_grace_period``; the report
(``downtime.services``) names each stopped service with its level, timeout, downtime and
that it was killed; every service runs again afterwards; and after a capture that fails and
after SIGINT in the middle of the cut every stopped service runs again too; services named
in ``pause`` are frozen and thawed (the same process runs on), not stopped and killed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conftest import Result
from support.dockerd import CONTAINER_PATH, HOST_IMAGE, DockerEngine

if TYPE_CHECKING:
    from docker import DockerClient

Cli = Callable[..., Result]
WRITERS = ("w1", "w2", "w3", "w4", "front")
GRACE = {"w1": 3, "w2": 3, "w3": 3, "w4": 1, "front": 2}
STUBBORN = "trap '' TERM; i=0; while :; do i=$((i+1)); echo $i > /data/count; sleep 0.2; done"
"""A writer that ignores SIGTERM (a shell as PID 1 with the signal ignored): only SIGKILL,
after its stop timeout, ends it."""


class StubbornProject:
    """The Compose project described in the module docstring."""

    def __init__(self, directory: Path, engine: DockerEngine) -> None:
        self.directory = directory
        self.engine = engine
        self.name = f"svcut{secrets.token_hex(3)}"

    def write(self) -> StubbornProject:
        services = []
        for name in WRITERS:
            (self.directory / "data" / name).mkdir(parents=True, exist_ok=True)
            depends = "    depends_on: [w1, w2]\n" if name == "front" else ""
            services.append(
                f"  {name}:\n"
                f"    image: {HOST_IMAGE}\n"
                "    network_mode: host\n"
                '    user: "0:0"\n'
                f"    stop_grace_period: {GRACE[name]}s\n"
                f"    environment:\n      PATH: {CONTAINER_PATH}\n"
                f'    command: ["sh", "-c", "{STUBBORN.replace("$", "$$")}"]\n'
                f"{depends}"
                "    volumes:\n"
                "      - /usr:/usr:ro\n      - /etc:/etc:ro\n"
                f"      - ./data/{name}:/data\n"
            )
        (self.directory / "docker-compose.yaml").write_text(
            'version: "2.4"\nservices:\n' + "".join(services)
        )
        return self

    def compose(self, *args: str) -> str:
        exe = shutil.which("docker-compose")
        if exe is None:
            raise RuntimeError("docker-compose is not installed; run scripts/install-test-deps.sh")
        proc = subprocess.run(
            [exe, "-p", self.name, "-f", str(self.directory / "docker-compose.yaml"), *args],
            cwd=self.directory,
            env={**os.environ, **self.engine.env(), "COMPOSE_INTERACTIVE_NO_CLI": "1"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"docker-compose {' '.join(args)}: {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def container(self, service: str) -> str:
        return f"{self.name}_{service}_1"

    def running(self) -> set[str]:
        return set(self.compose("ps", "--services", "--filter", "status=running").split())


@pytest.fixture(scope="module")
def project(
    docker_engine: DockerEngine, host_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StubbornProject]:
    proj = StubbornProject(tmp_path_factory.mktemp("cut") / "stack", docker_engine)
    proj.directory.mkdir()
    proj.write().compose("up", "-d")
    try:
        yield proj
    finally:
        try:
            proj.compose("down", "-v", "-t", "0")
        except RuntimeError:
            pass


@pytest.fixture
def plan_file(cli: Cli, project: StubbornProject, docker_env: str, tmp_path: Path) -> Path:
    out = tmp_path / "stackvault.yaml"
    res = cli("stack", "discover", "--project", project.name, "--output", str(out))
    assert res.code == 0, res.err
    return out


def test_one_level_costs_one_timeout_and_the_report_names_the_killed(
    cli: Cli,
    project: StubbornProject,
    plan_file: Path,
    initialised: Path,
    docker_client: DockerClient,
) -> None:
    for name in WRITERS:  # Compose 1.29 gives the container its stop_grace_period
        config = docker_client.api.inspect_container(project.container(name))["Config"]
        assert config.get("StopTimeout") == GRACE[name], (name, config.get("StopTimeout"))
    t0 = time.monotonic()
    res = cli("stack", "backup", "--config", str(plan_file), "--json")
    took = time.monotonic() - t0
    assert res.code == 0, res.err
    assert project.running() == set(WRITERS)
    down = res.json()["manifest"]["downtime"]
    services = down["services"]
    print(f"5 writers ignoring SIGTERM: down {down['seconds']:.2f} s, backup {took:.2f} s")
    for n, s in services.items():
        print(n, s["level"], s["timeout_s"], s["stop_s"], s["downtime_s"])
    assert set(services) == set(WRITERS)
    assert services["front"]["level"] == 0
    assert {services[n]["level"] for n in ("w1", "w2", "w3", "w4")} == {1}
    for name, s in services.items():
        assert s["containers"] == [project.container(name)]
        assert s["timeout_s"] == GRACE[name] and s["killed"] is True, (name, s)
        assert GRACE[name] - 0.5 <= s["stop_s"] < GRACE[name] + 2, (name, s)
        assert s["stop_s"] < s["downtime_s"] <= down["seconds"], (name, s)
    # Sequentially: 2 + 3 + 3 + 3 + 1 = 12 s of stopping alone. By level: 2 + 3 = 5 s.
    slowest = GRACE["front"] + max(GRACE[n] for n in ("w1", "w2", "w3", "w4"))
    assert slowest <= down["seconds"] < 1.6 * slowest + 2, down
    assert sorted(down["containers"]) == sorted(project.container(n) for n in WRITERS)


def test_a_failed_capture_starts_every_stopped_service_again(
    cli: Cli,
    project: StubbornProject,
    plan_file: Path,
    initialised: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stackvault.engine.backup import BackupJob
    from stackvault.errors import StackvaultError

    seen: list[set[str]] = []

    def fail(*_args: object, **_kw: object) -> str:
        seen.append(project.running())
        raise StackvaultError("the data directories could not be read")

    monkeypatch.setattr(BackupJob, "_backup_paths", fail)
    res = cli("stack", "backup", "--config", str(plan_file))
    assert res.code != 0 and "could not be read" in res.err, res.err
    assert seen == [set()], "every writer was stopped during the capture"
    assert project.running() == set(WRITERS)
    assert cli("snapshots", "--json").json() == []


def test_sigint_while_a_level_stops_starts_every_service_again(
    project: StubbornProject, plan_file: Path, initialised: Path, docker_env: str
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stackvault", "stack", "backup", "--config", str(plan_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # the second level (w1..w4) is being stopped, in parallel
        seen.append(line)
        if f"stopping container {project.container('w1')}" in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    err = "".join(seen) + err
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "no snapshot was saved" in err, err
    assert project.running() == set(WRITERS), err


def test_a_paused_service_is_frozen_for_the_capture_not_stopped(
    project: StubbornProject,
    plan_file: Path,
    initialised: Path,
    docker_client: DockerClient,
    docker_env: str,
) -> None:
    from conftest import PASSWORD
    from stackvault.errors import UsageError
    from stackvault.repo.repository import Repository
    from stackvault.stack.backup import backup_stack
    from stackvault.stack.plan import load_plan
    from stackvault.store.local import LocalStore

    def started_at() -> dict[str, str]:
        return {
            n: docker_client.api.inspect_container(project.container(n))["State"]["StartedAt"]
            for n in WRITERS
        }

    repo = Repository.open(LocalStore(str(initialised)), PASSWORD.encode())
    repo.load_index()
    plan = load_plan(str(plan_file))
    with pytest.raises(UsageError, match="service nope cannot be paused"):
        backup_stack(repo, plan, docker_client, pause=["nope"])
    before = started_at()
    done = backup_stack(repo, plan, docker_client, pause=["w1", "w2", "w3"])
    after = started_at()
    assert project.running() == set(WRITERS)
    assert done.snapshot.complete
    assert done.manifest.downtime is not None and done.manifest.downtime.services is not None
    services = done.manifest.downtime.services
    for name in ("w1", "w2", "w3"):  # frozen and thawed: the same process runs on
        s = services[name]
        assert s.mode == "pause" and not s.killed and s.stop_s is not None and s.stop_s < 1
        assert after[name] == before[name]
    for name in ("w4", "front"):
        assert services[name].mode == "stop" and services[name].killed
        assert after[name] > before[name]
    # Down for its own level's stop (w4: 1 s) and the capture, not the 3 s of a stop timeout.
    down = {n: s.downtime_s for n, s in services.items()}
    print(f"pause mode: downtime per service {down}")
    front = services["front"].downtime_s
    assert front is not None
    assert all(d is not None and d < front for n, d in down.items() if n != "front"), down
    assert done.manifest.to_dict()["downtime"]["services"]["w1"]["mode"] == "pause"


def test_each_service_runs_again_as_soon_as_its_own_data_is_read(
    cli: Cli, project: StubbornProject, plan_file: Path, initialised: Path
) -> None:
    big = project.directory / "data" / "w3" / "big.bin"
    with big.open("wb") as f:  # w3 alone has much data: reading it takes seconds
        for _ in range(96):
            f.write(os.urandom(8 << 20))
    try:
        res = cli("stack", "backup", "--config", str(plan_file), "--json")
    finally:
        big.unlink()
    assert res.code == 0, res.err
    assert project.running() == set(WRITERS)
    m = res.json()["manifest"]
    capture_s, stop_s = m["timings"]["capture_s"], m["timings"]["stop_s"]
    services = m["downtime"]["services"]
    down = {n: s["downtime_s"] for n, s in services.items()}
    print(f"stop {stop_s} s, capture {capture_s} s, downtime per service {down}")
    assert capture_s > 1.0, m["timings"]
    # w4's own data is a few bytes: it runs again long before w3's 768 MiB are read. (front
    # waits for w1 and w2 to start first: a fixed half second more, whatever the capture.)
    for name in ("w1", "w2", "w4", "front"):
        assert down[name] < stop_s + 0.5 * capture_s + 0.5, (name, down, m["timings"])
    assert down["w3"] > down["w4"] + 0.5 * capture_s, down
    # front depends on w1 and w2: started again after both.
    assert services["front"]["level"] == 0


@pytest.mark.parametrize("mode", ["stop", "pause"])
def test_sigint_after_early_restarts_starts_every_service_again(
    project: StubbornProject, plan_file: Path, initialised: Path, docker_env: str, mode: str
) -> None:
    from stackvault.stack.plan import load_plan, render_plan

    if mode == "pause":
        plan = load_plan(str(plan_file))
        for name in WRITERS:
            plan.services[name].quiesce = "pause"
        plan_file.write_text(render_plan(plan))
    big = project.directory / "data" / "w3" / "big.bin"
    with big.open("wb") as f:  # w3's data is read for seconds after the others run again
        for _ in range(48):
            f.write(os.urandom(8 << 20))
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
            if "again: their own data is read" in line and "w4" in line:
                break
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
    finally:
        big.unlink()
    err = "".join(seen) + err
    assert any("w4" in s and "own data is read" in s for s in seen), err
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "no snapshot was saved" in err, err
    assert project.running() == set(WRITERS), err
