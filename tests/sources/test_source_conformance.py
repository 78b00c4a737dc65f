"""The contract every source keeps, on real servers, through the engine and a real repository:

1. data is put into the source; ``backup --source URL`` stores it as a complete artifact whose
   metadata has ``facts``;
2. the source is damaged (rows deleted, keys removed, a file or object deleted);
3. restoring into it without ``overwrite`` is refused (`RestoreRefused`) and changes nothing;
4. restoring with ``overwrite`` first takes a safety snapshot (tagged ``pre-restore``) holding
   the damaged state, then loads the artifact; probing the source then gives exactly the facts
   recorded at capture.

Each source also has its own suite (tests/sources/test_<kind>.py) for its formats and
failures; this one shows they all behave alike.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stackvault.crypto.kdf import KdfParams
from stackvault.engine.artifact_restore import SAFETY_TAG, restore_artifact
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.progress import NullProgress
from stackvault.errors import RestoreRefused
from stackvault.repo.repository import Repository
from stackvault.sources.registry import open_source
from stackvault.store.local import LocalStore
from support.dockerd import run_oneshot

PW = b"conformance"
POPULATE = "for i = 0, 19999 do redis.call('SET', 'k:' .. i, 'value ' .. i) end"


@dataclass
class Case:
    url: str
    damage: Callable[[], None]
    still_damaged: Callable[[], bool]
    """True while the damage is visible (so a refused restore can be shown to change nothing)."""


def _sqlite(tmp_path: Path) -> Case:
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    con.executemany("INSERT INTO t (body) VALUES (?)", [(f"row {i}",) for i in range(20000)])
    con.commit()
    con.close()

    def count() -> int:
        with sqlite3.connect(db) as c:
            return int(c.execute("SELECT count(*) FROM t").fetchone()[0])

    def damage() -> None:
        with sqlite3.connect(db) as c:
            c.execute("DELETE FROM t WHERE id > 100")

    return Case(f"sqlite://{db}", damage, lambda: count() == 100)


@pytest.fixture
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    kind = request.param
    suffix = uuid.uuid4().hex[:8]
    if kind == "sqlite":
        yield _sqlite(tmp_path)
    elif kind in ("postgres", "postgres+docker"):
        if kind == "postgres":
            pg = request.getfixturevalue("pg_env")
            run = pg.psql
            db = f"conf_{suffix}"
            pg.psql(f"CREATE DATABASE {db}")
            url = pg.url(db)
        else:
            request.getfixturevalue("docker_env")
            pgc = request.getfixturevalue("pg_container")
            run = pgc.psql
            db = f"conf_{suffix}"
            pgc.psql(f"CREATE DATABASE {db}")
            url = f"postgres+docker://{pgc.name}/{db}"
        run(
            "CREATE TABLE t (id int PRIMARY KEY, body text);"
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 50000) g",
            db=db,
        )
        yield Case(
            url,
            lambda: run("DELETE FROM t WHERE id > 10", db=db) and None,
            lambda: run("SELECT count(*) FROM t", db=db).strip() == "10",
        )
    elif kind in ("mysql", "mysql+docker"):
        db = f"conf_{suffix}"
        if kind == "mysql":
            my = request.getfixturevalue("mariadb_env")
            url = my.url(db)
        else:
            request.getfixturevalue("docker_env")
            my = request.getfixturevalue("mariadb_container")
            url = f"mysql+docker://{my.name}/{db}"
        my.sql(f"CREATE DATABASE {db}")
        my.sql(
            "CREATE TABLE t (id INT PRIMARY KEY, body TEXT);"
            "INSERT INTO t SELECT seq, md5(seq) FROM seq_1_to_50000",
            db=db,
        )
        yield Case(
            url,
            lambda: my.sql("DELETE FROM t WHERE id > 10", db=db) and None,
            lambda: my.sql("SELECT COUNT(*) FROM t", db=db).strip() == "10",
        )
        my.sql(f"DROP DATABASE IF EXISTS {db}")
    elif kind == "redis":
        from support.dbservers import RedisServer

        server = RedisServer().start()
        try:
            server.cli("EVAL", POPULATE, "0")
            yield Case(
                server.url(),
                lambda: server.cli("DEL", *[f"k:{i}" for i in range(1000)]) and None,
                lambda: server.cli("DBSIZE").strip() == "19000",
            )
        finally:
            server.stop()
    elif kind == "redis+docker":
        request.getfixturevalue("docker_env")
        rc = request.getfixturevalue("redis_container")
        rc.cli("FLUSHALL")
        rc.cli("EVAL", POPULATE, "0")
        yield Case(
            f"redis+docker://{rc.name}:{rc.port}",
            lambda: rc.cli("DEL", *[f"k:{i}" for i in range(1000)]) and None,
            lambda: rc.cli("DBSIZE").strip() == "19000",
        )
        rc.cli("FLUSHALL")
    elif kind == "docker-volume":
        request.getfixturevalue("docker_env")
        client = request.getfixturevalue("docker_client")
        image = request.getfixturevalue("host_image")
        name = f"conf-{suffix}"
        client.volumes.create(name)
        vol = {name: {"bind": "/v", "mode": "rw"}}
        run_oneshot(
            client,
            image,
            [
                "sh",
                "-c",
                "mkdir -p /v/a/b && head -c 3000000 /dev/urandom > /v/a/b/big && "
                "echo hi > /v/a/small && ln -s a/small /v/link && chown -R 1001:1001 /v/a",
            ],
            user="0:0",
            volumes=vol,
        )

        def exists() -> bool:
            out = run_oneshot(client, image, ["sh", "-c", "ls /v/a/b"], user="0:0", volumes=vol)
            return "big" not in out

        yield Case(
            f"docker-volume://{name}",
            lambda: (
                run_oneshot(client, image, ["rm", "/v/a/b/big"], user="0:0", volumes=vol) and None
            ),
            exists,
        )
        client.volumes.get(name).remove(force=True)
    elif kind == "s3":
        request.getfixturevalue("s3_env")
        bucket = request.getfixturevalue("s3_bucket")
        server = request.getfixturevalue("s3_server")
        s3 = server.client()
        for i in range(30):
            s3.put_object(Bucket=bucket, Key=f"app/f{i}.txt", Body=f"object {i}".encode() * 100)

        def listed() -> int:
            return len(s3.list_objects_v2(Bucket=bucket, Prefix="app/").get("Contents", []))

        yield Case(
            f"s3://{bucket}/app",
            lambda: s3.delete_object(Bucket=bucket, Key="app/f0.txt") and None,
            lambda: listed() == 29,
        )
    else:  # pragma: no cover - a typo in the parameter list
        raise AssertionError(kind)


KINDS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("postgres+docker", marks=[pytest.mark.postgres, pytest.mark.docker]),
    pytest.param("mysql", marks=pytest.mark.mariadb),
    pytest.param("mysql+docker", marks=[pytest.mark.mariadb, pytest.mark.docker]),
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis+docker", marks=[pytest.mark.redis, pytest.mark.docker]),
    pytest.param("docker-volume", marks=pytest.mark.docker),
    pytest.param("s3", marks=pytest.mark.s3),
]
"""The cases; each carries the markers of the servers it starts (tests/support/servermarks.py)."""


@pytest.mark.parametrize("case", KINDS, indirect=True)
def test_capture_damage_refuse_overwrite_validate(case: Case, tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "repo"))
    store.ensure_root()
    repo = Repository.init(store, PW, kdf=KdfParams(memory_kib=8 * 1024, iterations=1))
    repo.load_index()
    source = open_source(case.url)
    snap = BackupJob(repo, BackupOptions(sources=[source]), progress=NullProgress()).run().snapshot
    [record] = snap.artifacts
    assert record.complete and isinstance(record.metadata["facts"], dict)
    assert record.metadata["facts"], "facts must say something to validate against"

    case.damage()
    assert case.still_damaged()
    kwargs: dict[str, Any] = {"progress": NullProgress(), "notice": lambda _m: None}
    with pytest.raises(RestoreRefused):
        restore_artifact(repo, snap, record.name, case.url, **kwargs)
    assert case.still_damaged(), "a refused restore changed the target"

    result = restore_artifact(repo, snap, record.name, case.url, overwrite=True, **kwargs)
    assert result.validated and result.differences == []
    assert not case.still_damaged()
    assert result.safety_snapshot is not None
    safety = repo.find_snapshot(result.safety_snapshot)
    assert SAFETY_TAG in safety.tags
    [saved] = safety.artifacts
    assert saved.complete
    assert saved.metadata["facts"] != record.metadata["facts"], "it holds the damage"
