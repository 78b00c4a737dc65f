"""Which source a preset's expected databases (``facts.databases``) are checked on: the one
``facts.databases_source`` names (`name_databases_source` records the first source of the
preset's database server), so a stack with both PostgreSQL and MySQL checks each on its own;
a plan without the name (written before it was recorded) checks its PostgreSQL sources."""

from __future__ import annotations

from stackvault.records.plan import MYSQL, POSTGRES, Plan, plan_from_dict
from stackvault.stack.preflight import wanted_databases
from stackvault.stack.presets import name_databases_source


def _plan(facts: dict[str, object]) -> Plan:
    return plan_from_dict(
        {
            "version": 1,
            "project": "rag",
            "directory": "/srv/rag",
            "preset": "ragflow",
            "consistency": "strict",
            "compose_files": ["/srv/rag/compose.yaml"],
            "services": {
                "db": {"role": POSTGRES, "image": "postgres:16"},
                "mysql": {"role": MYSQL, "image": "mysql:8"},
            },
            "sources": [
                {"name": "db", "url": "postgres+docker://rag_db_1/", "service": "db"},
                {"name": "mysql", "url": "mysql+docker://rag_mysql_1/", "service": "mysql"},
            ],
            "facts": facts,
        }
    )


def test_the_preset_names_the_source_of_its_databases_and_only_that_one_is_checked() -> None:
    plan = _plan({"databases": ["rag_flow"]})
    name_databases_source(plan, MYSQL)
    assert plan.facts["databases_source"] == "mysql"
    db, mysql = plan.sources
    assert wanted_databases(plan, mysql, MYSQL) == ["rag_flow"]
    assert wanted_databases(plan, db, POSTGRES) is None

    name_databases_source(plan, POSTGRES)  # a name given (or corrected by hand) stays
    assert plan.facts["databases_source"] == "mysql"


def test_a_plan_without_the_name_checks_its_postgresql_sources() -> None:
    plan = _plan({"databases": ["dify"]})
    db, mysql = plan.sources
    assert wanted_databases(plan, db, POSTGRES) == ["dify"]
    assert wanted_databases(plan, mysql, MYSQL) is None
    name_databases_source(plan, "nothing-of-this-role")
    assert "databases_source" not in plan.facts
    assert wanted_databases(_plan({}), db, POSTGRES) is None
