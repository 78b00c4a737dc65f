"""`stackvault drill` of jobs without a stack, end to end through the CLI, against the real
PostgreSQL and MariaDB of this host: the job's database artifact is loaded into a throwaway
server (a cluster of this host's own server programs on 127.0.0.1), compared with the facts of
the snapshot, and the server removed; the job's paths are restored into the drill's directory
and read back against their SHA-256.

- a PostgreSQL job with paths passes: loaded, row counts as recorded, every file; the
  record in the repository, the phases, nothing left in the work directory, the throwaway
  server gone;
- a MariaDB job passes the same way, and a whole PostgreSQL server with its roles;
- a damaged file of the snapshot fails the drill, naming the file;
- ``--keep``: the throwaway server answers during the kept time, and is gone afterwards;
- SIGTERM during the drill: exit 130, recorded as interrupted, the server stopped and the
  directory removed.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import FAST_INIT, PASSWORD, Result, make_tree
from stackvault.records.drill import latest_drill
from stackvault.repo.repository import Repository
from stackvault.store.open import open_store
from support.dbservers import MariaDBServer, PostgresServer

Cli = Callable[..., Result]
JOB = "db"


def setup_job(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, source: str) -> Path:
    """A repository, some files and a job ``db`` of ``source`` and those files, run once."""
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD)
    assert cli("--repo", tmp_path / "repo", *FAST_INIT).code == 0
    monkeypatch.delenv("STACKVAULT_PASSWORD")
    monkeypatch.setenv("SV_PW", PASSWORD)
    make_tree(tmp_path / "data", files=12)
    config = tmp_path / "stackvault.yaml"
    config.write_text(
        f"""\
repositories:
  primary: {{url: {tmp_path / "repo"}, password_env: SV_PW}}
jobs:
  {JOB}:
    sources: ["{source}"]
    paths: [{tmp_path / "data"}]
    policy: tier3
    repository: primary
    drill: {{every: 7d}}
"""
    )
    res = cli("run", JOB, "--config", config)
    assert res.code == 0, res.err
    return config


def open_repo(path: Path) -> Repository:
    return Repository.open(open_store(str(path)), PASSWORD.encode())


def answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def server_port(report: dict[str, object]) -> int:
    loaded = [p for p in report["probes"] if p["name"].endswith(": loaded")]  # type: ignore[attr-defined]
    found = re.search(r"on 127\.0\.0\.1:(\d+)", loaded[0]["message"])
    assert found, loaded
    return int(found.group(1))


def test_a_postgres_job_is_drilled_into_a_throwaway_cluster(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pg_env: PostgresServer,
    pg_database: str,
) -> None:
    pg_env.psql(
        "CREATE TABLE orders (id int PRIMARY KEY, what text);"
        "INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 500) g;"
        "CREATE TABLE notes (n text); INSERT INTO notes VALUES ('a'), ('b');",
        db=pg_database,
    )
    config = setup_job(tmp_path, cli, monkeypatch, pg_env.url(pg_database) + "?name=pg")
    workdir = tmp_path / "drills"
    res = cli("drill", JOB, "--config", config, "--workdir", workdir, "--json")
    report = res.json()
    assert res.code == 0, res.err + str(report)
    probes = {p["name"]: p for p in report["probes"]}
    assert probes["database pg: loaded"]["status"] == "pass"
    assert "PostgreSQL 15" in probes["database pg: loaded"]["message"]
    assert probes["database pg: row counts as recorded"]["status"] == "pass"
    files = probes["files: every restored file's SHA-256"]
    count = sum(1 for p in (tmp_path / "data").rglob("*") if p.is_file() and not p.is_symlink())
    assert files["status"] == "pass" and files["message"].startswith(f"{count} files"), files
    names = [p["name"] for p in report["phases"]]
    assert names == [
        "leftovers",
        "read snapshot",
        "server pg",
        "database pg",
        "files",
        "cleanup",
    ]
    assert 0 < report["rto_s"] <= report["phases"][-1]["start_s"]
    assert report["cleanup"]["ok"] and any(
        r.startswith("server PostgreSQL") for r in report["cleanup"]["removed"]
    )
    assert not answers(server_port(report))
    assert list(workdir.iterdir()) == []
    # production untouched: the source still has its rows
    assert pg_env.psql("SELECT count(*) FROM orders", db=pg_database) == "500"
    repo = open_repo(tmp_path / "repo")
    try:
        drill = latest_drill(repo.list_runs(job=JOB))
    finally:
        repo.store.close()
    assert drill is not None and drill.passed and drill.drill_id == report["drill_id"]
    assert [p.name for p in drill.phases] == names


def test_a_mariadb_job_is_drilled_into_a_throwaway_server(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mariadb_env: MariaDBServer,
    mariadb_database: str,
) -> None:
    mariadb_env.sql(
        "CREATE TABLE items (id int PRIMARY KEY, v varchar(20));"
        "INSERT INTO items VALUES (1, 'x'), (2, 'y'), (3, 'z');",
        db=mariadb_database,
    )
    config = setup_job(tmp_path, cli, monkeypatch, mariadb_env.url(mariadb_database) + "?name=my")
    workdir = tmp_path / "drills"
    res = cli("drill", JOB, "--config", config, "--workdir", workdir, "--json")
    report = res.json()
    assert res.code == 0, res.err + str(report)
    probes = {p["name"]: p for p in report["probes"]}
    assert probes["database my: loaded"]["status"] == "pass"
    assert "MariaDB" in probes["database my: loaded"]["message"]
    assert probes["database my: row counts as recorded"]["status"] == "pass"
    assert not answers(server_port(report))
    assert list(workdir.iterdir()) == []
    res = cli("drill", JOB, "--config", config, "--workdir", workdir)  # as a person reads it
    assert res.code == 0, res.err
    assert "pass     database my: row counts as recorded: every table of a throwaway " in res.out
    assert re.search(r"drill [0-9a-f]{8} of job db: passed, RTO [0-9.]+ s \(target", res.out)


def test_a_damaged_file_fails_the_drill_naming_it(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pg_env: PostgresServer,
    pg_database: str,
) -> None:
    from stackvault.engine.filedata import find_node
    from stackvault.repo.pack import pack_name

    pg_env.psql("CREATE TABLE t (a int); INSERT INTO t VALUES (1)", db=pg_database)
    config = setup_job(tmp_path, cli, monkeypatch, pg_env.url(pg_database) + "?name=pg")
    repo = open_repo(tmp_path / "repo")
    try:
        repo.load_index()
        [snap] = repo.list_snapshots()
        path = f"{tmp_path / 'data'}"
        stack = [find_node(repo, snap, path)]
        victim = None
        while stack and victim is None:
            node = stack.pop()
            if node.type == "file" and node.content:
                victim = node
            elif node.subtree is not None:
                stack += repo.load_tree(node.subtree)
        assert victim is not None
        entry = repo.index.get(victim.content[0])
        assert entry is not None
    finally:
        repo.store.close()
    pack = tmp_path / "repo" / pack_name(entry.pack_id)
    data = bytearray(pack.read_bytes())
    data[entry.offset + entry.length // 2] ^= 0xFF  # one byte of that blob only
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))
    workdir = tmp_path / "drills"
    res = cli("drill", JOB, "--config", config, "--workdir", workdir, "--json")
    report = res.json()
    assert res.code == 1, report
    probes = {p["name"]: p for p in report["probes"]}
    files = probes["files: every restored file's SHA-256"]
    assert files["status"] == "fail" and victim.name in files["message"], files
    assert report["error"].startswith("probe files: every restored file's SHA-256 failed: ")
    assert probes["database pg: row counts as recorded"]["status"] == "pass"
    assert list(workdir.iterdir()) == []


def test_keep_holds_the_throwaway_server_up_then_removes_it(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pg_env: PostgresServer,
    pg_database: str,
) -> None:
    pg_env.psql("CREATE TABLE t (a int); INSERT INTO t VALUES (1)", db=pg_database)
    config = setup_job(tmp_path, cli, monkeypatch, pg_env.url(pg_database) + "?name=pg")
    workdir = tmp_path / "drills"
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:  # the drill's postgres process appears, then it answers
        while not done.is_set():
            seen.extend(p for p in postgres_ports() if answers(p))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        res = cli("drill", JOB, "--config", config, "--workdir", workdir, "--keep", "4s", "--json")
    finally:
        done.set()
        watcher.join()
    report = res.json()
    assert res.code == 0, res.err + str(report)
    kept = [p for p in report["phases"] if p["name"] == "kept"]
    assert len(kept) == 1 and kept[0]["end_s"] - kept[0]["start_s"] >= 3.99
    assert time.monotonic() - started >= 4
    assert any(n.startswith("keeping PostgreSQL 15") for n in report["notices"]), report
    port = server_port(report)
    assert port in seen  # it answered while kept
    assert not answers(port) and list(workdir.iterdir()) == []


def postgres_ports() -> list[int]:
    """The ports of the drills' throwaway PostgreSQL servers running now."""
    ports = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"/postgres") and any(b"-drill-" in a for a in argv):
            ports.append(int(argv[argv.index(b"-p") + 1]))
    return ports


def test_sigterm_stops_the_drill_and_its_throwaway_server(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pg_env: PostgresServer,
    pg_database: str,
) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys

    pg_env.psql("CREATE TABLE t (a int); INSERT INTO t VALUES (1)", db=pg_database)
    config = setup_job(tmp_path, cli, monkeypatch, pg_env.url(pg_database) + "?name=pg")
    workdir = tmp_path / "drills"
    before = set(postgres_ports())
    proc = subprocess.Popen(
        [sys.executable, "-m", "stackvault", "drill", JOB, "--config", str(config),
         "--workdir", str(workdir), "--keep", "10min", "--json"],
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            new = [p for p in postgres_ports() if p not in before and answers(p)]
            port = new[0] if new else None
            time.sleep(0.2)
        assert port is not None, proc.communicate(timeout=30)
        time.sleep(1.0)  # into the kept time
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    report = json.loads(out)
    assert report["result"] == "interrupted" and report["cleanup"]["ok"], report
    assert not answers(port) and port not in postgres_ports()
    assert list(workdir.iterdir()) == []


def test_a_whole_server_is_drilled_with_its_roles(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pg_env: PostgresServer,
    pg_database: str,
) -> None:
    role = f"r_{pg_database[-8:]}"
    pg_env.psql(
        f'CREATE ROLE "{role}"; CREATE TABLE t (a int); INSERT INTO t VALUES (1), (2);'
        f'ALTER TABLE t OWNER TO "{role}"',
        db=pg_database,
    )
    url = f"postgres://postgres@127.0.0.1:{pg_env.port}/?name=pg"
    config = setup_job(tmp_path, cli, monkeypatch, url)
    res = cli("drill", JOB, "--config", config, "--workdir", tmp_path / "drills", "--json")
    report = res.json()
    assert res.code == 0, res.err + str(report)
    probes = {p["name"]: p["status"] for p in report["probes"]}
    assert probes["database pg: loaded"] == probes["database pg: row counts as recorded"] == "pass"
    pg_env.psql(f'DROP TABLE t; DROP ROLE "{role}"', db=pg_database)
