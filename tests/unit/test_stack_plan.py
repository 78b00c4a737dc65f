"""The stack plan and the stack manifest as records (`stackvault.records.plan`, `.stack`), without
Docker: the plan file is written exactly as before the records existed, the plan's JSON has the
same keys in the same order, a plan file's problems are all named at once, a manifest is read
from a snapshot and written back with the keys it had (unknown ones included), and a dry-run
stack restore lists its steps in their order."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from stackvault.errors import EXIT_USAGE, IntegrityError, UsageError
from stackvault.records.plan import Plan, plan_from_dict
from stackvault.records.stack import StackManifest, read_manifest
from stackvault.repo.snapshot import Snapshot
from stackvault.stack.plan import load_plan, render_plan
from stackvault.stack.restore import restore_stack

DOC: dict[str, Any] = {
    "version": 1,
    "project": "shop",
    "directory": "/srv/shop",
    "preset": "generic",
    "consistency": "strict",
    "compose_files": ["/srv/shop/compose.yaml"],
    "services": {
        "api": {
            "role": "app",
            "image": "shop/api:2",
            "digest": "shop/api@sha256:ab",
            "stop": True,
            "depends_on": ["db"],
        },
        "db": {"role": "postgres", "image": "postgres:16"},
    },
    "sources": [{"name": "db", "url": "postgres+docker://shop-db-1/?name=db", "service": "db"}],
    "paths": [{"path": "/srv/shop/data", "service": "api", "exclude": ["cache"]}],
    "config": ["/srv/shop/.env", "/srv/shop/compose.yaml"],
    "secrets": ["DB_PASSWORD"],
    "facts": {"databases": ["shop"]},
    "hooks": [{"service": "api", "before": "pause", "after": ["resume", "now"], "timeout": 2.5}],
    "probes": [{"url": "http://127.0.0.1:8080/health", "service": "api"}],
    "warnings": ['SECRET_KEY is the "default"'],
}

# Written by render_plan before the plan became a record; "#$" stands for "# " at the end of
# a line (a role's comment is written even when discovery gave no reason).
PLAN_FILE = """\
# stackvault plan for Compose project shop (discovered 2026-01-01 00:00 UTC)
# Review it, edit what is wrong, then: stackvault stack preflight --config FILE
version: 1
project: "shop"
directory: "/srv/shop"
preset: "generic"
# strict: the services marked stop: true are stopped for the cut (the report says for
# how long); online: nothing stops, each part is consistent on its own
consistency: "strict"
compose_files: ["/srv/shop/compose.yaml"]

# role decides the capture: postgres/mysql/redis by their tools inside the container,
# app/vector-store/object-store by their mounts, stateless not at all
# quiesce (for stop: true in a strict cut): stop - stopped, then started again: consistent for
#   any service; pause - frozen (docker pause) while it is read: no stop and start, down
#   for the capture time alone, but what it wrote is as after a crash, so only for stores
#   that survive one (a write-ahead log); refused for postgres/mysql/redis services
services:
  "api":
    role: "app"  # writes to 1 mount(s)
    image: "shop/api:2"
    digest: "shop/api@sha256:ab"
    stop: true
    quiesce: "stop"
    depends_on: ["db"]
  "db":
    role: "postgres"  #$
    image: "postgres:16"
    digest: null
    stop: false
    quiesce: "stop"
    depends_on: []

# captured by their own tools, each an artifact of the snapshot; for a database, how its
# server is reached in its container: port, socket (PostgreSQL: its directory; MySQL: the
# file) and password_from (where the password is read at each backup, never the value:
# env:NAME a variable of the container, arg the server's --requirepass, file:PATH its
# redis.conf, none) - correct them here if discovery got them wrong
sources:
  - name: "db"
    url: "postgres+docker://shop-db-1/?name=db"
    service: "db"  # every database

# data directories (bind mounts), captured as files
paths:
  - path: "/srv/shop/data"
    service: "api"  # mounted at /data
    exclude: ["cache"]

# configuration files and directories, captured as files
config:
  - "/srv/shop/.env"
  - "/srv/shop/compose.yaml"

# names of the secrets in the configuration (values are never written here)
secrets: ["DB_PASSWORD"]

# what the preset knows and checks
facts: {"databases": ["shop"]}

# commands around the cut, e.g. an application's pause/resume endpoint:
#   - service: api
#     before: ["curl", "-fsS", "-X", "POST", "http://127.0.0.1:5001/pause"]
#     after: ["curl", "-fsS", "-X", "POST", "http://127.0.0.1:5001/resume"]
#     where: container      # or host
#     timeout: 60           # seconds
#     mode: essential       # a failing before aborts the backup; optional: warn
hooks:
  - service: "api"
    before: ["sh", "-c", "pause"]
    after: ["resume", "now"]
    where: "container"
    timeout: 2.5
    mode: "essential"

# HTTP checks after a restore, e.g. - {url: http://127.0.0.1/console/api/setup,
#                                      status: 200, service: api}
probes:
  - {url: "http://127.0.0.1:8080/health", status: 200, service: "api"}

# warnings found while discovering
warnings:
  - "SECRET_KEY is the \\"default\\""
""".replace("#$\n", "# \n")

EMPTY_SECTIONS = """\
# role decides the capture: postgres/mysql/redis by their tools inside the container,
# app/vector-store/object-store by their mounts, stateless not at all
# quiesce (for stop: true in a strict cut): stop - stopped, then started again: consistent for
#   any service; pause - frozen (docker pause) while it is read: no stop and start, down
#   for the capture time alone, but what it wrote is as after a crash, so only for stores
#   that survive one (a write-ahead log); refused for postgres/mysql/redis services
services:

# captured by their own tools, each an artifact of the snapshot; for a database, how its
# server is reached in its container: port, socket (PostgreSQL: its directory; MySQL: the
# file) and password_from (where the password is read at each backup, never the value:
# env:NAME a variable of the container, arg the server's --requirepass, file:PATH its
# redis.conf, none) - correct them here if discovery got them wrong
sources:
  []

# data directories (bind mounts), captured as files
paths:
  []
"""

PLAN_JSON = (
    '{"version": 1, "project": "shop", "directory": "/srv/shop", "compose_files": '
    '["/srv/shop/compose.yaml"], "preset": "generic", "consistency": "strict", "services": '
    '{"api": {"role": "app", "reason": "writes to 1 mount(s)", "image": "shop/api:2", '
    '"digest": "shop/api@sha256:ab", "stop": true, "quiesce": "stop", "depends_on": ["db"]}, '
    '"db": {"role": "postgres", "reason": "", "image": "postgres:16", "digest": null, "stop": '
    'false, "quiesce": "stop", "depends_on": []}}, "sources": [{"name": "db", "url": '
    '"postgres+docker://shop-db-1/?name=db", "service": "db", "note": "every database", '
    '"port": null, "socket": null, "password_from": null, "found": ""}], '
    '"paths": [{"path": "/srv/shop/data", "service": "api", "exclude": ["cache"], "note": '
    '"mounted at /data"}], "config": ["/srv/shop/.env", "/srv/shop/compose.yaml"], '
    '"secrets": ["DB_PASSWORD"], "warnings": ["SECRET_KEY is the \\"default\\""], "hooks": '
    '[{"service": "api", "before": ["sh", "-c", "pause"], "after": ["resume", "now"], '
    '"where": "container", "timeout": 2.5, "mode": "essential"}], "probes": [{"url": '
    '"http://127.0.0.1:8080/health", "status": 200, "service": "api"}], "facts": '
    '{"databases": ["shop"]}}'
)


def discovered() -> Plan:
    """The plan of `DOC` with what discovery derives (shown as comments in the file)."""
    plan = plan_from_dict(copy.deepcopy(DOC))
    plan.services["api"].reason = "writes to 1 mount(s)"
    plan.sources[0].note = "every database"
    plan.paths[0].note = "mounted at /data"
    return plan


def test_the_plan_file_is_written_as_before_and_reads_back(tmp_path: Path) -> None:
    plan = discovered()
    assert render_plan(plan, discovered_at="2026-01-01 00:00 UTC") == PLAN_FILE
    least = plan_from_dict({k: DOC[k] for k in ("version", "project", "preset", "consistency")})
    text = render_plan(least)
    assert EMPTY_SECTIONS in text and "directory: null\n" in text
    assert "warnings" not in text and text.endswith("probes:\n  []\n")

    f = tmp_path / "stackvault.yaml"
    f.write_text(PLAN_FILE)
    back = load_plan(str(f))
    # What discovery derived is a comment in the file: not read back.
    assert back.services["api"].reason == "" and back.sources[0].note == ""
    assert back.services["api"].name == "api"
    for record in (*back.services.values(), back.sources[0], back.paths[0]):
        assert record.model_extra == {}
    plan.services["api"].reason, plan.sources[0].note, plan.paths[0].note = "", "", ""
    assert back == plan
    assert back.start_order() == ["db", "api"] and back.stop_order() == ["api"]


def test_the_plan_as_json_has_its_keys_in_their_order() -> None:
    assert json.dumps(discovered().to_dict()) == PLAN_JSON
    assert json.dumps(plan_from_dict(json.loads(PLAN_JSON)).to_dict()) == (
        PLAN_JSON.replace('"writes to 1 mount(s)"', '""')
        .replace('"every database"', '""')
        .replace('"mounted at /data"', '""')
    )


def test_a_plan_file_ignores_unknown_keys() -> None:
    doc = copy.deepcopy(DOC)
    doc["x-mine"] = 1
    doc["services"]["db"]["x-mine"] = 2
    doc["hooks"][0]["x-mine"] = 3
    assert plan_from_dict(doc).to_dict() == plan_from_dict(DOC).to_dict()


def test_every_problem_of_a_plan_file_is_named_at_once() -> None:
    doc = copy.deepcopy(DOC)
    doc["project"] = ""
    doc["consistency"] = "sometimes"
    doc["services"]["api"].update(role="oracle", stop="yes")
    doc["sources"].append({"name": "db", "url": "u", "service": "cache"})
    doc["paths"][0]["path"] = "relative"
    doc["hooks"] = [{"service": "web"}, "not a hook"]
    doc["probes"][0]["status"] = 99
    with pytest.raises(UsageError) as failed:
        plan_from_dict(doc, "plan.yaml")
    assert failed.value.exit_code == EXIT_USAGE
    assert str(failed.value).splitlines() == [
        "plan.yaml: project must be a non-empty string",
        "plan.yaml: consistency must be strict or online",
        "plan.yaml: services.api.role must be one of postgres, mysql, redis, vector-store, "
        "object-store, app, stateless",
        "plan.yaml: services.api.stop must be true or false",
        "plan.yaml: source db names service 'cache', which is not under services",
        "plan.yaml: paths[0].path must be absolute",
        "plan.yaml: hooks[0] names service 'web', which is not under services",
        "plan.yaml: hooks[0] has neither before nor after",
        "plan.yaml: hooks[1] must be a mapping",
        "plan.yaml: probes[0].status must be an HTTP status code",
    ]
    # One problem: the one line it always was.
    with pytest.raises(UsageError) as failed:
        plan_from_dict({**DOC, "version": 2}, "plan.yaml")
    assert str(failed.value) == "plan.yaml: version must be 1"
    with pytest.raises(UsageError, match=r"^the plan is not a mapping of fields$"):
        plan_from_dict(["version", 1])


def manifest_json() -> dict[str, Any]:
    """A manifest as stack backup stores it (strict cut; no total_s)."""
    return {
        "format": 1,
        "project": "shop",
        "directory": "/srv/shop",
        "preset": "generic",
        "consistency": "strict",
        "plan": json.loads(PLAN_JSON),
        "services": {
            name: {
                "role": role,
                "image": image,
                "image_id": f"sha256:{name}",
                "digests": [],
                "containers": [f"shop-{name}-1"],
                "state": "running",
                "stopped": name == "api",
                "depends_on": ["db"] if name == "api" else [],
                "created": "2026-01-01T00:00:00Z",
            }
            for name, role, image in (("api", "app", "shop/api:2"), ("db", "postgres", "db:16"))
        },
        "versions": {"db": {"server_version": "16.1", "dump_tool": "pg_dump 16.1"}},
        "artifacts": {
            "db": {
                "kind": "postgres",
                "complete": True,
                "bytes": 10,
                "files": 2,
                "started": "2026-01-01T00:00:01.000000+00:00",
                "duration_s": 1.5,
                "checksums": {"globals.sql": "ab" * 32},
            }
        },
        "secrets": ["DB_PASSWORD"],
        "facts": {"databases": ["shop"]},
        "mount_dirs": {"/srv/shop/data": {"uid": 1001, "gid": 1001, "mode": 0o750}},
        "profiles": [],
        "app": {},
        "images": None,
        "timings": {"stop_s": 0.5, "capture_s": 3.25, "start_s": 0.75},
        "downtime": {"seconds": 4.5, "containers": {"shop-api-1": 4.5}},
        "hooks": [
            {
                "service": "api",
                "phase": "before",
                "where": "container",
                "mode": "essential",
                "ok": True,
                "exit": 0,
                "error": None,
                "seconds": 0.1,
            }
        ],
    }


def snapshot(stack: dict[str, Any] | None) -> Snapshot:
    return Snapshot(
        time=datetime(2026, 1, 1, tzinfo=UTC),
        tree=bytes(32),
        paths=["/srv/shop/.env", "/srv/shop/compose.yaml", "/srv/shop/data"],
        hostname="h",
        username="u",
        tags=["stack:shop"],
        stack=stack,
        id="ab" * 32,
    )


def test_a_manifest_is_written_back_with_the_keys_it_was_read_with() -> None:
    stored = manifest_json()
    m = read_manifest(snapshot(stored))
    assert isinstance(m, StackManifest)
    assert m.plan.services["api"].reason == "writes to 1 mount(s)"  # a stored plan keeps it
    assert m.services["api"].stopped and m.mount_dirs["/srv/shop/data"].mode == 0o750
    assert m.skew_s is None and m.timings.total_s is None and m.app.alembic_version is None
    assert json.dumps(m.to_dict()) == json.dumps(stored)
    m.timings.total_s = 9.5  # stack backup's report: known once the snapshot is saved
    assert list(m.to_dict()["timings"].items())[-1] == ("total_s", 9.5)

    # An online cut has skew_s and captured_between, and no downtime.
    online = manifest_json()
    del online["downtime"]
    hooks = online.pop("hooks")
    online |= {"skew_s": 3.25, "captured_between": ["a", "b"], "hooks": hooks}
    online["app"] = {"alembic_version": None}
    assert json.dumps(read_manifest(snapshot(online)).to_dict()) == json.dumps(online)  # type: ignore[union-attr]

    # Keys of a newer version are kept, at every level, after the known ones.
    newer = manifest_json()
    newer["x-top"] = {"a": 1}
    newer["plan"]["x-plan"] = [1]
    newer["plan"]["services"]["db"]["x-service"] = True
    newer["services"]["db"]["x-running"] = "yes"
    newer["timings"]["x-timing"] = 1.0
    newer["hooks"][0]["x-hook"] = None
    assert json.dumps(read_manifest(snapshot(newer)).to_dict()) == json.dumps(newer)  # type: ignore[union-attr]


def test_a_malformed_manifest_names_its_keys_and_other_snapshots_have_none() -> None:
    assert read_manifest(snapshot(None)) is None
    bad = manifest_json()
    bad["services"]["api"]["stopped"] = "yes"
    bad["plan"]["services"]["api"]["role"] = "oracle"
    del bad["timings"]["stop_s"]
    bad["mount_dirs"]["/srv/shop/data"]["uid"] = "1001"
    with pytest.raises(IntegrityError) as failed:
        read_manifest(snapshot(bad))
    message = str(failed.value)
    assert message.startswith("the stack manifest of snapshot abababab is malformed: ")
    for problem in (
        "plan.services.api.role must be one of postgres",
        "services.api.stopped must be true or false",
        "mount_dirs./srv/shop/data.uid must be a whole number",
        "timings.stop_s must be a number",
    ):
        assert problem in message, message


class _NotFound:
    def get(self, name: str) -> None:
        raise docker.errors.NotFound(name)


class _Images:
    def get(self, tag: str) -> Any:
        class Image:
            id = f"sha256:{tag.split('/')[-1].split(':')[0]}"
            attrs = {"Created": "2026-01-01T00:00:00Z"}

        return Image()


class _Containers:
    def list(self, **_filters: Any) -> list[Any]:
        return []


class _Engine:
    """An engine that has no container and no volume, and every image."""

    containers = _Containers()
    volumes = _NotFound()
    images = _Images()


def test_a_dry_run_restore_lists_its_steps_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the published ports are read from the compose files in the repository (there is none)
    monkeypatch.setattr("stackvault.stack.restore.resolve_project", lambda *_a: None)
    snap = snapshot(manifest_json())
    notices: list[str] = []
    report = restore_stack(
        None,  # type: ignore[arg-type]  # a dry run reads nothing from the repository
        snap,
        _Engine(),  # type: ignore[arg-type]
        project="moved",
        directory=str(tmp_path / "moved"),
        dry_run=True,
        notice=notices.append,
    )
    new = str(tmp_path / "moved")
    assert [(s.name, s.detail, s.status) for s in report.steps] == [
        ("configuration", f"2 entries into {new}", "planned"),
        ("directories", "1 bind-mount directories with their owners", "planned"),
        ("database services", "db", "planned"),
        ("databases", "db", "planned"),
        ("volumes", "none", "planned"),
        ("data directories", f"{new}/data", "planned"),
        ("other services", "api", "planned"),
        ("validation", "preset generic: health, facts, files", "planned"),
    ]
    doc = report.to_dict()
    assert list(doc) == [
        "snapshot",
        "project",
        "directory",
        "dry_run",
        "ok",
        "rto_s",
        "steps",
        "validation",
        "notices",
        "status",
        "restore_id",
        "started",
        "owner",
        "problems",
        "error",
        "failed_step",
        "exit_code",
        "logs",
        "cleanup",
        "created",
        "replaced",
        "plan_file",
        "record",
    ]
    assert doc["status"] == "planned" and doc["problems"] == [] and doc["restore_id"] is None
    assert doc["steps"][0] == {
        "name": "configuration",
        "detail": f"2 entries into {new}",
        "seconds": None,
        "status": "planned",
    }
    assert doc["ok"] and doc["rto_s"] is None and doc["notices"] == notices == []
    with pytest.raises(UsageError, match="is not a stack snapshot"):
        restore_stack(None, snapshot(None), _Engine(), dry_run=True)  # type: ignore[arg-type]
