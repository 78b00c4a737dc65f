"""The parts of `stack restore` that need no engine: the published ports of a resolved compose
project and the bind test on this host (`stack.portcheck`), the labels file
(`stack.restorelabels`), the plan of the restored stack (`stack.restoreplan`), what
``--replace`` may remove (`stack.replace`), and where ``stack backup`` / ``preflight`` find the
plan file (``--config``, ``STACKVAULT_STACK_CONFIG``, the current directory)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import Result
from stackvault.errors import RestoreRefused, UsageError
from stackvault.records.plan import plan_from_dict
from stackvault.stack.plan import locate_plan
from stackvault.stack.portcheck import Published, bind_test, port_problems, published_ports
from stackvault.stack.replace import Replacement, _refuse_unless_half_restored, _removable
from stackvault.stack.restorelabels import LABEL_RESTORE, alive, labels_document, owner
from stackvault.stack.restoreplan import plan_file_path, restored_plan
from stackvault.stack.restoretarget import RestoreTarget

Cli = Callable[..., Result]


def test_published_ports_as_compose_config_writes_them() -> None:
    services = {
        # Compose v1: a mapping without an address, strings with one (IPv6 unbracketed)
        "web": {
            "ports": [
                {"published": 8080, "target": 80},
                {"target": 81},  # the engine picks the host port: nothing to check
                "127.0.0.1:9000:9000/tcp",
                "::1:7000:7000/udp",
                "127.0.0.1:9100-9101:9100-9101",
            ]
        },
        # Compose v2: the long syntax, the published port as a string, ranges too
        "proxy": {
            "network_mode": "bridge",
            "ports": [
                {"mode": "ingress", "host_ip": "0.0.0.0", "target": 443, "published": "8443"},
                {"target": 53, "published": "5353-5354", "protocol": "udp"},
            ],
        },
        "host": {"network_mode": "host", "ports": ["8081:8081"]},  # the engine publishes none
        "none": {"network_mode": "none", "ports": ["8082:80"]},
        "joined": {"network_mode": "container:abc", "ports": ["8083:80"]},
        "tools": {"profiles": ["debug"], "ports": ["8084:80"]},
    }
    got = [str(p) + " " + p.service for p in published_ports(services)]
    assert got == [
        "0.0.0.0:8080/tcp web",
        "127.0.0.1:9000/tcp web",
        "[::1]:7000/udp web",
        "127.0.0.1:9100/tcp web",
        "127.0.0.1:9101/tcp web",
        "0.0.0.0:8443/tcp proxy",
        "0.0.0.0:5353/udp proxy",
        "0.0.0.0:5354/udp proxy",
    ]
    enabled = published_ports({"tools": services["tools"]}, frozenset({"debug"}))
    assert [str(p) for p in enabled] == ["0.0.0.0:8084/tcp"]


@pytest.fixture
def held() -> Iterator[tuple[int, int]]:
    """A TCP port listened on at 127.0.0.1 and a UDP port bound there."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        yield tcp.getsockname()[1], udp.getsockname()[1]
    finally:
        tcp.close()
        udp.close()


def test_a_held_port_cannot_be_bound_on_its_address_nor_on_every_address(
    held: tuple[int, int],
) -> None:
    tcp, udp = held
    assert bind_test(Published("web", "127.0.0.1", tcp, "tcp")) == "it is in use"
    assert bind_test(Published("web", "0.0.0.0", tcp, "tcp")) == "it is in use"
    assert bind_test(Published("dns", "127.0.0.1", udp, "udp")) == "it is in use"
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    assert bind_test(Published("web", "0.0.0.0", port, "tcp")) is None
    problems = port_problems(
        [
            Published("web", "127.0.0.1", tcp, "tcp"),
            Published("api", "0.0.0.0", port, "tcp"),
            Published("admin", "127.0.0.1", port, "tcp"),  # inside api's 0.0.0.0
            Published("dns", "0.0.0.0", port, "udp"),  # another protocol: no clash
        ]
    )
    assert [p.message for p in problems] == [
        f"port 127.0.0.1:{tcp}/tcp that service web publishes cannot be bound on this host: "
        "it is in use",
        f"port 127.0.0.1:{port}/tcp is published by service api and by service admin",
    ]
    assert f"ss -lntup 'sport = :{tcp}'" in problems[0].hint


def test_the_labels_file_labels_what_compose_creates() -> None:
    resolved = {
        "services": {"db": {"image": "x"}, "api": {"image": "y"}},
        "volumes": {"data": {}, "shared": {"external": True, "name": "shared"}},
        "networks": {"front": None, "outside": {"external": True}},
    }
    labels = {LABEL_RESTORE: "r1"}
    doc = labels_document(resolved, "2.4", labels)
    assert doc == {
        "version": "2.4",
        "services": {"db": {"labels": labels}, "api": {"labels": labels}},
        "volumes": {"data": {"labels": labels}},
        "networks": {"front": {"labels": labels}, "default": {"labels": labels}},
    }
    assert set(labels_document(resolved, None, labels)) == {"services", "volumes", "networks"}
    assert labels_document(resolved, "2", labels) == {  # labels on volumes from 2.1 on
        "version": "2",
        "services": {"db": {"labels": labels}, "api": {"labels": labels}},
    }


PLAN = {
    "version": 1,
    "project": "shop",
    "directory": "/srv/shop",
    "compose_files": ["/srv/shop/compose.yaml"],
    "preset": "generic",
    "consistency": "strict",
    "services": {
        "db": {"role": "postgres", "image": "db:16"},
        "cache": {"role": "redis", "image": "redis:7"},
        "api": {"role": "app", "image": "shop/api:2", "stop": True},
    },
    "sources": [
        {
            "name": "db",
            "url": "postgres+docker://shop-db-1/?name=db",
            "service": "db",
            "port": 5432,
        },
        {
            "name": "cache",
            "url": "redis+docker://admin@shop_cache_1:6380?name=cache",
            "service": "cache",
        },
        {
            "name": "volume-shop_files",
            "url": "docker-volume://shop_files?mode=hot&name=volume-shop_files",
            "service": "api",
        },
    ],
    "paths": [{"path": "/srv/shop/data", "service": "api", "exclude": ["cache"]}],
    "config": ["/srv/shop/.env", "/srv/shop/compose.yaml", "/etc/shop.conf"],
    "facts": {
        "storage": "/srv/shop/data/storage",
        "capture": ["volume shop_files"],
        "inside": "/app/storage",
    },
}


def _target(new_project: str, new_dir: str) -> RestoreTarget:
    plan = plan_from_dict(PLAN)
    manifest = SimpleNamespace(
        plan=plan, services={}, project="shop", directory="/srv/shop", mount_dirs={}
    )
    snapshot = SimpleNamespace(paths=[], short_id="abcd1234")
    return RestoreTarget(snapshot, manifest, new_project, new_dir)  # type: ignore[arg-type]


def test_the_restored_plan_names_the_restored_project() -> None:
    target = _target("moved", "/opt/moved")
    assert plan_file_path(target) == "/opt/moved/stackvault.yaml"
    plan = restored_plan(target, {"db": "moved-db-1"}).to_dict()
    assert plan["project"] == "moved" and plan["directory"] == "/opt/moved"
    assert plan["compose_files"] == ["/opt/moved/compose.yaml"]
    assert [s["url"] for s in plan["sources"]] == [
        "postgres+docker://moved-db-1/?name=db",  # the restored container
        "redis+docker://admin@moved_cache_1:6380?name=cache",  # the name Compose gives it
        "docker-volume://moved_files?mode=hot&name=volume-moved_files",
    ]
    assert [s["name"] for s in plan["sources"]] == ["db", "cache", "volume-moved_files"]
    assert plan["sources"][0]["port"] == 5432
    assert [(p["path"], p["exclude"]) for p in plan["paths"]] == [("/opt/moved/data", ["cache"])]
    assert plan["config"] == ["/opt/moved/.env", "/opt/moved/compose.yaml", "/etc/shop.conf"]
    assert plan["facts"] == {
        "storage": "/opt/moved/data/storage",
        "capture": ["volume moved_files"],
        "inside": "/app/storage",  # a path inside the container: as it was
    }
    same = restored_plan(_target("shop", "/srv/shop"), {}).to_dict()
    assert same == plan_from_dict(PLAN).to_dict()  # restored as it was: the plan as it was


def test_what_replace_may_remove() -> None:
    for path, ok in (
        ("/srv/shop/.env", True),
        ("/srv/shop/data/", True),
        ("/", False),
        ("relative/path", False),
        ("/srv/shop/../etc", False),
        (None, False),
    ):
        assert _removable(path) is ok, path
    r = Replacement("shop", paths=["/srv/shop/data", "/srv/shop/.env"])
    assert r.covers("/srv/shop/data/storage/x") and r.covers("/srv/shop/.env")
    assert not r.covers("/srv/shop/data2") and not r.covers("/srv/shop")
    for status in ("failed", "interrupted", "invalid", "running"):
        _refuse_unless_half_restored("shop", {"restore_id": "r1", "status": status})
    with pytest.raises(RestoreRefused, match="was restored completely by stack restore r1"):
        _refuse_unless_half_restored("shop", {"restore_id": "r1", "status": "ok"})
    assert not alive(owner())  # this process is not "another restore"
    parent = f"{socket.gethostname()}:{os.getppid()}"
    assert alive(parent)
    with pytest.raises(RestoreRefused, match="is still under way"):
        _refuse_unless_half_restored(
            "shop", {"restore_id": "r1", "status": "running", "owner": parent}
        )


def test_the_plan_file_is_found_by_config_then_the_environment_then_here(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STACKVAULT_STACK_CONFIG", raising=False)
    assert locate_plan("a.yaml", {"STACKVAULT_STACK_CONFIG": "b.yaml"}) == ("a.yaml", "--config")
    assert locate_plan(None, {"STACKVAULT_STACK_CONFIG": "b.yaml"})[0] == "b.yaml"
    assert locate_plan(None, {})[0] == "stackvault.yaml"
    for command in ("backup", "preflight"):
        res = cli("stack", command)
        assert res.code == 2 and "Traceback" not in res.err, res.err
        assert (
            f"there is no plan file stackvault.yaml (from the current directory {tmp_path}; "
            "the plan file is --config FILE, else $STACKVAULT_STACK_CONFIG, else "
            "stackvault.yaml in the current directory)" in res.err
        ), res.err
    named = tmp_path / "named.yaml"
    monkeypatch.setenv("STACKVAULT_STACK_CONFIG", str(named))
    res = cli("stack", "backup")
    assert res.code == 2
    assert f"there is no plan file {named} (from STACKVAULT_STACK_CONFIG;" in res.err, res.err
    named.write_text("version: [")
    res = cli("stack", "backup")
    assert res.code == 2 and f"the plan file {named} is not valid YAML" in res.err, res.err
    res = cli("stack", "backup", "--config", "other.yaml")
    assert "there is no plan file other.yaml (from --config;" in res.err, res.err
    monkeypatch.delenv("STACKVAULT_STACK_CONFIG")
    (tmp_path / "stackvault.yaml").write_text(yaml.safe_dump({"version": 1}))
    res = cli("stack", "preflight")
    assert res.code == 2 and "stackvault.yaml: project must be a non-empty string" in res.err, (
        res.err
    )


def test_a_missing_plan_named_by_a_job_says_nothing_of_the_lookup(tmp_path: Path) -> None:
    from stackvault.stack.plan import load_plan

    with pytest.raises(UsageError) as failed:
        load_plan(str(tmp_path / "job-plan.yaml"))
    assert str(failed.value).startswith(f"there is no plan file {tmp_path}/job-plan.yaml; ")
    assert "STACKVAULT_STACK_CONFIG" not in failed.value.message
