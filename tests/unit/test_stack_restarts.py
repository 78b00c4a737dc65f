"""Which data of a strict cut is whose (`cut_data`), the order the sources are read in
(`capture_order`) and when `EarlyRestarts` starts each stopped service again: only once every
dump no stopped service owns is read, its own data is read and the stopped services it depends
on run again."""

from __future__ import annotations

import queue

from stackvault.records.plan import Plan, plan_from_dict
from stackvault.stack.compose import Mount, Project, Service
from stackvault.stack.restarts import CutData, EarlyRestarts, capture_order, cut_data

D = "/srv/dify"


def _plan() -> Plan:
    services = {
        "db": ("postgres", False, []),
        "redis": ("redis", False, []),
        "weaviate": ("vector", True, []),
        "api": ("app", True, ["db", "redis", "weaviate"]),
        "worker": ("app", True, ["db", "redis"]),
        "web": ("app", True, ["api"]),
    }
    return plan_from_dict(
        {
            "version": 1,
            "project": "dify",
            "directory": D,
            "preset": "generic",
            "consistency": "strict",
            "compose_files": [f"{D}/compose.yaml"],
            "services": {
                name: {"role": "app", "image": "x:1", "stop": stop, "depends_on": deps}
                for name, (_role, stop, deps) in services.items()
            },
            "sources": [
                {"name": "db", "url": "postgres+docker://postgres@dify_db_1/", "service": "db"},
                {"name": "redis", "url": "redis+docker://dify_redis_1", "service": "redis"},
                {
                    "name": "volume-dify_weaviate",
                    "url": "docker-volume://dify_weaviate?mode=hot&name=volume-dify_weaviate",
                    "service": "weaviate",
                },
            ],
            "paths": [{"path": f"{D}/volumes/app/storage", "service": "api"}],
        }
    )


def _service(name: str, mounts: list[Mount]) -> Service:
    return Service(name, [f"dify_{name}_1"], "running", None, "x:1", "", [], [], "", mounts, [])


def _project() -> Project:
    storage = Mount("bind", f"{D}/volumes/app/storage", "/app/api/storage")
    conf = Mount("bind", f"{D}/nginx", "/etc/nginx", read_only=True)
    services = {
        "api": _service("api", [storage, conf]),
        "worker": _service("worker", [storage]),
        "weaviate": _service("weaviate", [Mount("volume", "dify_weaviate", "/var/lib/weaviate")]),
        "web": _service("web", [conf]),
    }
    return Project("dify", D, [f"{D}/compose.yaml"], services, None)


STOPPED = ["web", "api", "worker", "weaviate"]
PATHS = [f"{D}/.env", f"{D}/nginx", f"{D}/volumes/app"]


def test_each_stopped_service_owns_its_volumes_and_writable_bind_mounts() -> None:
    data = cut_data(_plan(), _project(), STOPPED, PATHS)
    assert data.gate == {"db", "redis"}
    assert data.owned == {
        "api": {f"{D}/volumes/app"},  # the walked path above its bind mount; nginx is read-only
        "worker": {f"{D}/volumes/app"},
        "weaviate": {"volume-dify_weaviate"},
        "web": set(),
    }
    assert data.depends_on == {
        "api": {"weaviate"},
        "worker": set(),
        "weaviate": set(),
        "web": {"api"},
    }


def test_the_dumps_are_read_first_then_the_volumes_in_start_order() -> None:
    plan = _plan()
    data = cut_data(plan, _project(), STOPPED, PATHS)
    order = capture_order(list(reversed(plan.sources)), data, ["weaviate", "api", "worker"])
    assert order == ["redis", "db", "volume-dify_weaviate"]


def _restarts(data: CutData) -> tuple[EarlyRestarts, queue.Queue[list[str]]]:
    batches: queue.Queue[list[str]] = queue.Queue()

    def start(services: list[str]) -> set[str]:
        batches.put(services)
        return {"worker"} & set(services)  # worker's start fails: left to the end

    return EarlyRestarts(data, start), batches


def _none(batches: queue.Queue[list[str]]) -> bool:
    try:
        batches.get(timeout=0.3)
    except queue.Empty:
        return True
    return False


def test_a_service_runs_again_once_the_dumps_its_data_and_its_dependencies_are_read() -> None:
    data = cut_data(_plan(), _project(), STOPPED, PATHS)
    restarts, batches = _restarts(data)
    restarts.begin()
    restarts.captured("volume-dify_weaviate")
    assert _none(batches)  # nothing before the dumps are read
    restarts.captured("db")
    assert _none(batches)
    restarts.captured("redis")
    assert batches.get(timeout=5) == ["weaviate"]  # api waits for its storage, web for api
    assert _none(batches)
    restarts.captured(f"{D}/volumes/app")
    assert batches.get(timeout=5) == ["api", "worker"]
    assert batches.get(timeout=5) == ["web"]  # after api runs again
    assert restarts.end() is False
    assert restarts.started == {"weaviate", "api", "web"}  # worker's failed start: the end's


def test_a_service_whose_dependency_failed_to_start_waits_for_the_end() -> None:
    data = CutData(
        gate=frozenset(),
        owned={"worker": frozenset(), "beat": frozenset()},
        depends_on={"worker": frozenset(), "beat": frozenset({"worker"})},
    )
    restarts, batches = _restarts(data)
    restarts.begin()
    assert batches.get(timeout=5) == ["worker"]
    assert _none(batches)
    assert restarts.end() is False
    assert restarts.started == set()
