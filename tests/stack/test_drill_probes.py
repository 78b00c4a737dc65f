"""A stack drill's own probes on the real engine, with a small Compose project (host networking
only): PostgreSQL ``db`` and an ``api`` whose environment holds Dify's outbound settings (mail,
code execution) beside a model provider key; the plan says preset ``dify`` and has three
probe commands.

One drill, kept up for a few seconds (``--keep``):

- the outbound settings are emptied in the drilled ``api`` (a probe command inside it sees
  them empty and the provider key kept) and listed in the report;
- the database accepts connections from inside the sandbox, and a probe command given the
  service's address (``STACKVAULT_PROBE_HOST``/``PORT``) reaches it;
- a probe command that exits 3 fails the drill, with its output's tail in the report;
- the drilled project runs during the kept time, then everything is removed.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from conftest import FAST_INIT, PASSWORD, Result
from stackvault.stack.drill import LABEL, drill_resources
from support.appproject import (
    HOST_MOUNTS,
    IDLE,
    AppProject,
    make_postgres_dir,
    postgres_service,
    yaml_str,
)
from support.composeproject import started
from support.dbservers import free_port
from support.dockerd import HOST_IMAGE, DockerEngine

Cli = Callable[..., Result]
JOB = "app"
KEEP_S = 6


class MailingProject(AppProject):
    """``db`` (PostgreSQL, database ``app``) and ``api`` (idle, with outbound settings)."""

    def __init__(self, directory: Path, engine: DockerEngine) -> None:
        super().__init__(directory, engine, f"svmail{secrets.token_hex(3)}")
        self.pg_port = free_port()

    def write(self) -> MailingProject:
        make_postgres_dir(self.directory, "db")
        (self.directory / ".env").write_text(
            f"POSTGRES_PASSWORD={secrets.token_hex(8)}\nPG_PORT={self.pg_port}\n"
        )
        api = f"""  api:
    image: {HOST_IMAGE}
    network_mode: host
    user: "0:0"
    command: ["sh", "-c", {yaml_str(IDLE)}]
    environment:
      MAIL_TYPE: smtp
      SMTP_SERVER: smtp.example.com
      SMTP_PASSWORD: secret
      CODE_EXECUTION_ENDPOINT: http://sandbox:8194
      OPENAI_API_KEY: keep-me
    depends_on: [db]
    volumes:
{HOST_MOUNTS}"""
        (self.directory / "docker-compose.yaml").write_text(
            'version: "2.4"\nservices:\n' + postgres_service("db", "PG_PORT", "app") + api
        )
        return self

    def up(self) -> MailingProject:
        self.compose("up", "-d")
        self.wait_for(
            "the app database",
            lambda: "1" in self.exec("db", "psql", "-p", str(self.pg_port), "-U", "postgres",
                                     "-At", "-d", "app", "-c", "SELECT 1"),
        )  # fmt: skip
        return self


@pytest.fixture(scope="module")
def project(
    docker_engine: DockerEngine, host_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MailingProject]:
    with started(MailingProject(tmp_path_factory.mktemp("mail") / "stack", docker_engine)) as p:
        yield p


@pytest.fixture
def config(
    project: MailingProject, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The plan (preset dify, three probe commands), a repository with one stack snapshot of
    job ``app``, the configuration."""
    for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_HOST", project.engine.host)
    plan = tmp_path / "plan.yaml"
    res = cli("stack", "discover", "--project", project.name, "-o", plan)
    assert res.code == 0, res.err
    doc = yaml.safe_load(plan.read_text())
    doc["preset"] = "dify"
    doc["probe_commands"] = [
        {"service": "db", "command": 'pg_isready -h "$STACKVAULT_PROBE_HOST" -p '
         '"$STACKVAULT_PROBE_PORT" && [ "$STACKVAULT_PROBE_SERVICE" = db ]'},
        {"service": "api", "command": '[ -z "$MAIL_TYPE$SMTP_SERVER$SMTP_PASSWORD'
         '$CODE_EXECUTION_ENDPOINT" ] && [ "$OPENAI_API_KEY" = keep-me ]'},
        {"service": "api", "command": ["sh", "-c", "echo checking; echo boom >&2; exit 3"]},
    ]  # fmt: skip
    plan.write_text(json.dumps(doc))
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD)
    assert cli("--repo", tmp_path / "repo", *FAST_INIT).code == 0
    res = cli("--repo", tmp_path / "repo", "stack", "backup", "--config", plan, "--tag",
              f"job:{JOB}", "--consistency", "online")  # fmt: skip
    assert res.code == 0, res.err
    monkeypatch.delenv("STACKVAULT_PASSWORD")
    monkeypatch.setenv("SV_PW", PASSWORD)
    config = tmp_path / "stackvault.yaml"
    config.write_text(
        f"repositories:\n  primary: {{url: {tmp_path / 'repo'}, password_env: SV_PW}}\n"
        f"jobs:\n  {JOB}: {{stack_plan: {plan}, policy: tier2, repository: primary}}\n"
    )
    return config


def test_probe_commands_connections_outbound_settings_and_keep(
    cli: Cli, project: MailingProject, config: Path, tmp_path: Path
) -> None:
    seen: list[tuple[datetime, int]] = []
    done = threading.Event()

    def watch() -> None:  # the drill's running containers, over time
        client = project.engine.client()
        try:
            while not done.is_set():
                running = client.api.containers(filters={"label": LABEL})
                seen.append((datetime.now().astimezone(), len(running)))
                time.sleep(0.3)
        finally:
            client.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    workdir = tmp_path / "drills"
    try:
        res = cli("drill", JOB, "--config", config, "--workdir", workdir, "--wait", "60",
                  "--keep", f"{KEEP_S}s", "--json")  # fmt: skip
    finally:
        done.set()
        watcher.join()
    report = res.json()
    assert res.code == 1, res.err + json.dumps(report, indent=1)
    probes = {p["name"]: p for p in report["probes"]}
    # outbound settings emptied, listed, seen empty inside the drilled api
    assert sorted(report["blanked"]) == [
        "api: CODE_EXECUTION_ENDPOINT",
        "api: MAIL_TYPE",
        "api: SMTP_PASSWORD",
        "api: SMTP_SERVER",
    ]
    assert any(n.startswith("outbound settings emptied: api: ") for n in report["notices"])
    inside = [p for n, p in probes.items() if n.startswith("command api: [ -z")]
    assert [p["status"] for p in inside] == ["pass"], inside
    # the database from inside the sandbox: connections and a probe command given its address
    [connected] = [p for n, p in probes.items() if n.endswith(": accepts connections")]
    assert connected["status"] == "pass" and "SELECT 1" in connected["message"], connected
    [ready] = [p for n, p in probes.items() if n.startswith("command db: pg_isready")]
    assert ready["status"] == "pass", ready
    # a failing command fails the drill, with its output
    failed = probes["command api: echo checking; echo boom >&2; exit 3"]
    assert failed["status"] == "fail"
    # stdout and stderr reach the report in the order they arrive, which either may win
    assert failed["message"].startswith("exited 3 in ")
    assert failed["message"].endswith((": checking / boom", ": boom / checking")), failed
    assert report["error"].startswith("probe command api: echo checking"), report["error"]
    # kept up for the duration, then removed
    [kept] = [p for p in report["phases"] if p["name"] == "kept"]
    assert kept["end_s"] - kept["start_s"] >= KEEP_S - 0.01
    start = datetime.fromisoformat(report["started"])
    during = [
        n
        for at, n in seen
        if start + timedelta(seconds=kept["start_s"] + 0.5)
        <= at
        <= start + timedelta(seconds=kept["end_s"] - 0.5)
    ]
    assert during and min(during) >= 3, seen  # the sandbox, db and api, all running
    assert report["cleanup"]["ok"]
    client = project.engine.client()
    try:
        assert drill_resources(client) == []
    finally:
        client.close()
    assert list(workdir.iterdir()) == []
