"""The alert rules of deploy/prometheus/: valid for promtool, their unit tests pass, every rule
is shown firing and not firing there, every rule is needed by those tests (removing it makes
them fail), and every stackvault metric a rule names is one the exporter writes.

promtool comes with Debian's ``prometheus`` package (scripts/install-test-deps.sh); without
it these tests fail, they are never skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from stackvault.ops.metrics import Metrics
from support.prometheus import require_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = DEPLOY / "stackvault-rules.yml"
TESTS = DEPLOY / "tests" / "stackvault-rules.test.yml"


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_the_rules_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_rule_has_severity_summary_description_and_is_tested_both_ways() -> None:
    cases: dict[str, list[list[Any]]] = {}
    for test in yaml.safe_load(TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)) >= 15
    for rule in rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        got = cases.get(name, [])
        assert any(alerts for alerts in got), f"{name}: no test where it fires"
        assert any(not alerts for alerts in got), f"{name}: no test where it does not fire"


@pytest.mark.parametrize("name", [rule["alert"] for rule in rules()])
def test_the_unit_tests_fail_without_the_rule(name: str, tmp_path: Path) -> None:
    """Each rule is what makes its tests pass: its own test cases (the groups that test it,
    with only its cases) pass with the rules file as shipped and fail with the rule removed."""
    tests = yaml.safe_load(TESTS.read_text())
    mine = []
    for group in tests["tests"]:
        cases = [c for c in group["alert_rule_test"] if c["alertname"] == name]
        if cases:
            mine.append({**group, "alert_rule_test": cases})
    assert mine, f"{name} is not tested"
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / TESTS.name).write_text(yaml.safe_dump({**tests, "tests": mine}))
    shutil.copy(RULES, tmp_path / RULES.name)
    done = promtool("test", "rules", TESTS.name, cwd=tmp_path / "tests")
    assert done.returncode == 0, done.stdout + done.stderr

    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        group["rules"] = [r for r in group["rules"] if r["alert"] != name]
    (tmp_path / RULES.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    done = promtool("test", "rules", TESTS.name, cwd=tmp_path / "tests")
    assert done.returncode != 0, done.stdout
    assert f"alertname: {name}," in done.stdout + done.stderr


def exported_names() -> set[str]:
    """Every sample name the exporter can write (a family with no jobs still names itself)."""
    names: set[str] = set()
    for family in Metrics().collect():
        if isinstance(family, CounterMetricFamily):
            names.add(family.name + "_total")
        elif isinstance(family, HistogramMetricFamily):
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def test_the_rules_name_only_metrics_the_exporter_writes() -> None:
    exported = exported_names()
    named = {m for rule in rules() for m in re.findall(r"\bstackvault_\w+", rule["expr"])}
    assert named, "no rule names a stackvault metric"
    assert named <= exported, f"not exported: {sorted(named - exported)}"
    tested = set(re.findall(r"\bstackvault_\w+", TESTS.read_text()))
    assert tested <= exported, f"the unit tests feed unknown metrics: {sorted(tested - exported)}"
