"""The strict cut's stop levels (`stop_levels`: the stopped services by dependency depth,
deepest first) and the per-service downtime of the stack manifest (`ServiceDowntime`), read
back and written as it was stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from stackvault.records.plan import Plan, plan_from_dict
from stackvault.records.stack import read_manifest
from stackvault.repo.snapshot import Snapshot
from stackvault.stack.backup import stop_levels


def plan(services: dict[str, tuple[bool, list[str]]]) -> Plan:
    """A plan whose services are ``name: (stop, depends_on)``."""
    return plan_from_dict(
        {
            "version": 1,
            "project": "shop",
            "directory": "/srv/shop",
            "preset": "generic",
            "consistency": "strict",
            "compose_files": ["/srv/shop/compose.yaml"],
            "services": {
                name: {"role": "app", "image": "x:1", "stop": stop, "depends_on": deps}
                for name, (stop, deps) in services.items()
            },
        }
    )


def test_dependents_are_a_level_before_what_they_depend_on() -> None:
    # Dify's shape: nginx -> api, web; web -> api; api, worker -> db (not stopped), redis.
    levels = stop_levels(
        plan(
            {
                "db": (False, []),
                "redis": (False, []),
                "api": (True, ["db", "redis"]),
                "worker": (True, ["db", "redis"]),
                "plugin_daemon": (True, ["db"]),
                "weaviate": (True, []),
                "web": (True, ["api"]),
                "nginx": (True, ["api", "web"]),
                "sandbox": (False, []),
            }
        )
    )
    assert levels == [["nginx"], ["web"], ["api", "plugin_daemon", "worker"], ["weaviate"]]


def test_unknown_dependencies_and_cycles_do_not_stop_the_levels() -> None:
    levels = stop_levels(
        plan({"a": (True, ["b"]), "b": (True, ["a"]), "c": (True, ["gone"]), "d": (True, [])})
    )
    # The cycle is cut where it closes (a is met first, so it depends on b, not b on a).
    assert levels == [["a"], ["b", "c", "d"]]
    assert stop_levels(plan({"a": (False, [])})) == []


def test_the_per_service_downtime_is_read_back_and_written_as_stored() -> None:
    services = {
        "api": {
            "containers": ["shop-api-1"],
            "level": 0,
            "mode": "stop",
            "timeout_s": 3.0,
            "stop_s": 3.1,
            "killed": True,
            "downtime_s": 4.5,
        }
    }
    stack: dict[str, Any] = {
        "format": 1,
        "project": "shop",
        "directory": "/srv/shop",
        "preset": "generic",
        "consistency": "strict",
        "plan": plan({"api": (True, [])}).to_dict(),
        "services": {},
        "versions": {},
        "artifacts": {},
        "secrets": [],
        "facts": {},
        "mount_dirs": {},
        "profiles": [],
        "app": {},
        "images": None,
        "timings": {"stop_s": 3.1, "capture_s": 1.0, "start_s": 0.4},
        "downtime": {"seconds": 4.5, "containers": {"shop-api-1": 4.5}, "services": services},
        "hooks": [],
    }
    snap = Snapshot(
        time=datetime(2026, 1, 1, tzinfo=UTC),
        tree=bytes(32),
        paths=["/srv/shop"],
        hostname="h",
        username="u",
        tags=["stack:shop"],
        stack=stack,
        id="ab" * 32,
    )
    m = read_manifest(snap)
    assert m is not None and m.downtime is not None and m.downtime.services is not None
    assert m.downtime.services["api"].killed and m.downtime.services["api"].timeout_s == 3.0
    assert json.dumps(m.to_dict()) == json.dumps(stack)
    # Without a mode (written before pause existed): stopped, and written back without it.
    del services["api"]["mode"]
    m = read_manifest(snap)
    assert m is not None and m.downtime is not None and m.downtime.services is not None
    assert m.downtime.services["api"].mode == "stop"
    assert json.dumps(m.to_dict()) == json.dumps(stack)
    # A manifest written before the per-service record: no services, and none written.
    del stack["downtime"]["services"]
    m = read_manifest(snap)
    assert m is not None and m.downtime is not None and m.downtime.services is None
    assert json.dumps(m.to_dict()) == json.dumps(stack)
