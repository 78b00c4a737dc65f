"""The drill's connection probes (stack layer): once every service of the drilled stack is up,
each restored database and Redis server is connected to from inside the drill's network
namespace - through its own container, as the backup reached it - and asked a trivial query
(see `stackvault.stack.drill`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stackvault.errors import SourceError
from stackvault.records.drill import DrillProbe
from stackvault.records.plan import MYSQL, POSTGRES, REDIS, SourcePlan
from stackvault.records.stack import StackManifest
from stackvault.stack.compose import LABEL_SERVICE
from stackvault.stack.drill.probes import drill_containers
from stackvault.stack.reach import source_url

if TYPE_CHECKING:
    from docker import DockerClient

_TIMEOUT = 30.0


def connection_probes(client: DockerClient, project: str, m: StackManifest) -> list[DrillProbe]:
    """One probe per database or Redis source of the plan: pass when its server answers a
    trivial query (``SELECT 1``; MySQL's version; Redis' key counts), fail with the reason
    otherwise (no running container, refused, wrong password...); one skipped probe when the
    plan has no such source."""
    probes: list[DrillProbe] = []
    for src in m.plan.sources:
        service = m.plan.services.get(src.service)
        role = service.role if service is not None else ""
        if role not in (POSTGRES, MYSQL, REDIS):
            continue
        what = "redis" if role == REDIS else "database"
        name = f"{what} {src.name}: accepts connections"
        running = [
            c
            for c in drill_containers(client, project, src.service)
            if c.labels.get(LABEL_SERVICE) == src.service
        ]
        if not running:
            probes.append(DrillProbe(name, "fail", f"service {src.service} is not running"))
            continue
        probes.append(_connect(name, role, src, running[0].name))
    if not probes:
        probes.append(
            DrillProbe("databases accept connections", "skipped", "the plan has no database")
        )
    return probes


def _connect(name: str, role: str, src: SourcePlan, container: str) -> DrillProbe:
    """Connect to ``src`` in ``container`` as its capture does, and ask a trivial query."""
    from stackvault.sources.mysql.source import MySQLSource
    from stackvault.sources.mysql.tools import server_info
    from stackvault.sources.postgres.source import PostgresSource
    from stackvault.sources.registry import open_source

    try:
        source = open_source(source_url(src, container, restore=True))
    except SourceError as exc:
        return DrillProbe(name, "fail", exc.message)
    try:
        if isinstance(source, PostgresSource):
            ep = source.endpoint()
            argv = ep.argv("psql", "postgres", "-X", "-At", "-c", "SELECT 1")
            res = ep.runner.run(argv, env=ep.env, timeout=_TIMEOUT)
            if res.code != 0 or res.text.strip() != "1":
                why = (res.stderr or res.text).strip().splitlines()
                return DrillProbe(name, "fail", f"SELECT 1 failed: {why[-1] if why else res.code}")
            return DrillProbe(name, "pass", f"answered SELECT 1 in {container}")
        if isinstance(source, MySQLSource):
            info = server_info(source.endpoint(), timeout=_TIMEOUT)
            return DrillProbe(name, "pass", f"answered as {info['version']} in {container}")
        source.probe()
        return DrillProbe(name, "pass", f"answered in {container}")
    except SourceError as exc:
        return DrillProbe(name, "fail", exc.message)
    finally:
        source.close()
