"""The Prometheus alert rules in ops/prometheus/alerts.yml: structure, runbooks, metric names.

Metric names are checked against a real scrape of the health exporter on a
migrated SQLite database that has loop, outbox and settlement rows, so a
rule cannot name a series that the exporter does not export.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.db import get_engine
from health import freshness
from health.config import load_health_config
from health.database import connect
from health.loops import build_loop_specs
from health.metrics import build_registry
from settlement import demo
from settlement.runner import run_settlement

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ALERTS_FILE = PROJECT_ROOT / "ops" / "prometheus" / "alerts.yml"
ALERTS_TEST_FILE = PROJECT_ROOT / "ops" / "prometheus" / "alerts_test.yml"

RULE_KEYS = {"alert", "expr", "for", "labels", "annotations"}
ANNOTATION_KEYS = {"summary", "description", "runbook_url"}
SEVERITIES = {"critical", "warning"}
DURATION = re.compile(r"^\d+[smhdw]$")

#: PromQL words that are neither metric names nor functions.
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right"}
#: A label list after a vector-matching or aggregation keyword, such as ``on (loop)``.
LABEL_LIST = re.compile(r"\b(on|ignoring|by|without|group_left|group_right)\s*\([^)]*\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
MATCHERS = re.compile(r"\{[^}]*\}")
RANGE = re.compile(r"\[[^\]]*\]")
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def load_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS_FILE.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """Return the metric names an expression selects; function names and keywords are left out."""
    text = STRING.sub('""', expr)
    text = MATCHERS.sub("", text)
    text = RANGE.sub("", text)
    text = LABEL_LIST.sub("", text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        is_function = rest.startswith("(")
        if is_function or match.group() in PROMQL_KEYWORDS:
            continue
        names.add(match.group())
    return names


def heading_slugs(markdown: str) -> set[str]:
    """Return the anchors that GitHub gives the Markdown headings of ``markdown``."""
    slugs = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slug = re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-")
            slugs.add(slug)
    return slugs


@pytest.fixture
def exported_names(sqlite_database_url: str) -> set[str]:
    """Return the sample names of one scrape of a database with loop, outbox and run rows."""
    demo.generate(seed=1, players=40, bets=400, days=3, outbox_backlog=3)
    freshness.record_start("outbox.wallet", "task-1")
    freshness.record_success("outbox.wallet", {}, "celery@test", "task-1")
    freshness.record_failure("outbox.agent", RuntimeError("broker down"), None, "task-2")
    run_settlement("rebate", None, engine=get_engine())
    with get_engine().begin() as connection:
        connection.exec_driver_sql(
            "UPDATE rolling_outbox SET parked_at = created_at, attempts = 10"
            " WHERE id = (SELECT min(id) FROM rolling_outbox)"
        )

    registry = build_registry(lambda: connect(sqlite_database_url, 5), load_health_config())
    text = generate_latest(registry).decode()
    names = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.add(sample.name)
    return names


def test_metric_names_parser() -> None:
    expr = (
        "label_replace(outbox_oldest_publishable_age_seconds,"
        ' "loop", "outbox.$1", "stream", "(.+)")'
        ' > on (loop) group_left loop_max_age_seconds and on () (health_database_up{x="y"} == 1)'
        " unless sum by (kind) (rate(settlement_last_run_items[5m]))"
    )

    assert metric_names(expr) == {
        "outbox_oldest_publishable_age_seconds",
        "loop_max_age_seconds",
        "health_database_up",
        "settlement_last_run_items",
    }


def test_alerts_file_structure() -> None:
    document = yaml.safe_load(ALERTS_FILE.read_text())

    assert set(document) == {"groups"}
    group_names = [group["name"] for group in document["groups"]]
    assert len(group_names) == len(set(group_names))
    for group in document["groups"]:
        assert set(group) == {"name", "rules"}, group["name"]
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert set(rule) == RULE_KEYS, rule.get("alert")
            assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"]), rule["alert"]
            assert isinstance(rule["expr"], str), rule["alert"]
            assert rule["expr"].strip(), rule["alert"]
            assert DURATION.match(rule["for"]), rule["alert"]
            assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
            assert set(rule["annotations"]) == ANNOTATION_KEYS, rule["alert"]


def test_alerts_runbooks_exist() -> None:
    for rule in load_rules():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        runbook = PROJECT_ROOT / path

        assert path.startswith("docs/runbooks/"), url
        assert runbook.is_file(), url
        if anchor:
            assert anchor in heading_slugs(runbook.read_text()), url


def test_alerts_cover_required_signals() -> None:
    exprs = " ".join(rule["expr"] for rule in load_rules())

    assert "time() - loop_last_success_timestamp_seconds" in exprs
    assert "loop_status{" in exprs
    assert "outbox_parked_rows > 0" in exprs
    assert 'settlement_last_run_status{status=~"failed|partial|inconsistent"}' in exprs
    assert "absent(health_database_up)" in exprs
    assert "health_database_up == 0" in exprs


def test_alerts_absent_rule_per_loop() -> None:
    loops = set(build_loop_specs(load_health_config({})))
    absent_loops = set()
    for rule in load_rules():
        match = re.search(r'absent\(loop_status\{loop="([^"]+)"\}\)', rule["expr"])
        if match:
            absent_loops.add(match.group(1))
            assert rule["labels"]["loop"] == match.group(1)

    assert absent_loops == loops


def test_alerts_loop_names_declared() -> None:
    loops = set(build_loop_specs(load_health_config({})))
    for rule in load_rules():
        for name in re.findall(r'loop="([^"]+)"', rule["expr"]):
            assert name in loops, (rule["alert"], name)
        for pattern in re.findall(r'loop=~"([^"]+)"', rule["expr"]):
            regex = pattern.replace("\\\\", "\\")
            assert any(re.fullmatch(regex, loop) for loop in loops), (rule["alert"], pattern)


def test_alerts_metrics_are_exported(exported_names: set[str]) -> None:
    used = set()
    for rule in load_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        used |= names

    assert "loop_last_success_timestamp_seconds" in exported_names
    assert "settlement_last_run_status" in exported_names
    assert used - exported_names == set()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not on the PATH")
def test_alerts_promtool_check() -> None:
    checked = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not on the PATH")
def test_alerts_promtool_unit_tests() -> None:
    tested = subprocess.run(
        ["promtool", "test", "rules", ALERTS_TEST_FILE.name],
        cwd=ALERTS_TEST_FILE.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert tested.returncode == 0, tested.stdout + tested.stderr
