"""The shipped alert rules and Grafana dashboard: promtool checks and structural checks.

The dashboard's queries are evaluated against a real Prometheus in test_e2e_prometheus.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
MONITORING = REPO / "dialplan" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "callback-ari.json"
ALERTS = MONITORING / "alerts.yml"
ALERTS_TEST = MONITORING / "alerts_test.yml"


def promtool() -> str:
    """promtool from Debian's ``prometheus`` package (``bash .ci/install --test`` installs it)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: bash .ci/install --test installs Debian's prometheus")
    return path


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query of every panel."""
    return [
        (panel["title"], target["refId"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


@pytest.mark.slow  # promtool in a subprocess
def test_promtool_check_rules_passes() -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 6 rules found" in proc.stdout


@pytest.mark.slow  # promtool in a subprocess
def test_promtool_unit_tests_pass_and_cover_every_alert() -> None:
    proc = subprocess.run(
        [promtool(), "test", "rules", ALERTS_TEST.name],
        cwd=MONITORING, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    alerts = set(re.findall(r"^\s+- alert: (\w+)$", ALERTS.read_text(), re.MULTILINE))
    tested = re.findall(r"^\s+alertname: (\w+)$", ALERTS_TEST.read_text(), re.MULTILINE)
    assert len(alerts) == 6
    assert alerts == set(tested)
    # every alert has a case where it fires and one where it stays quiet
    text = ALERTS_TEST.read_text()
    for alert in alerts:
        cases = re.findall(
            rf"alertname: {alert}\n\s+exp_alerts:(.*?)(?=\n\s+- eval_time|\n\s+- interval|\Z)",
            text, re.DOTALL,
        )  # fmt: skip
        assert any(c.strip() == "[]" for c in cases), f"{alert} has no quiet case"
        assert any("exp_labels" in c for c in cases), f"{alert} has no firing case"


@pytest.mark.slow  # promtool in a subprocess
def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A broken threshold is caught: the unit tests are not vacuous."""
    broken = ALERTS.read_text().replace("callback_link_up == 0", "callback_link_up == 2")
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    proc = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "CallbackLinkDown" in proc.stdout + proc.stderr


def test_dashboard_is_a_grafana_dashboard_with_unique_panels() -> None:
    doc = dashboard()
    assert doc["uid"] == "callback-ari" and doc["schemaVersion"] >= 36
    names = [v["name"] for v in doc["templating"]["list"]]
    assert names == ["datasource", "job", "queue"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]


def test_dashboard_has_the_tiles_and_trends_ops_asked_for() -> None:
    titles = {p["title"]: p for p in dashboard()["panels"]}
    today = [
        "Requested today", "Connected today", "Success today", "Expired today",
        "Median request → callback today",
    ]  # fmt: skip
    for title in today:
        assert titles[title]["type"] == "stat"
        assert titles[title]["timeFrom"] == "now/d"  # midnight to now
        assert "$__range" in titles[title]["targets"][0]["expr"]
    assert titles["Longest hold now"]["type"] == "stat"
    trends = ("Holding callers", "Pending callbacks", "Attempts by outcome", "Hold time at offer")
    for title in trends:
        assert titles[title]["type"] == "timeseries"


def test_every_alert_and_panel_uses_only_exported_metric_names() -> None:
    """A renamed metric must not leave a panel or alert silently empty."""
    exported = {
        line.split("`")[1].split("{")[0]
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("| `callback_")
    }
    exported |= {"up"}
    used = set()
    for _title, _ref, expr in dashboard_queries():
        used |= set(re.findall(r"\b(callback_[a-z_]+)", expr))
    used |= set(re.findall(r"\b(callback_[a-z_]+)\b", ALERTS.read_text()))
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    used -= {"callback_ari"}
    assert used <= exported, used - exported


@pytest.mark.slow  # docker-compose in a subprocess
def test_compose_monitoring_profile_provisions_prometheus_and_grafana_with_both() -> None:
    from tests.test_packaging import compose_command

    compose = [*compose_command(), "-f", str(REPO / "docker-compose.yml")]
    # optional: both services sit in the profile, so a plain `up` starts neither
    sections = (REPO / "docker-compose.yml").read_text().split("\n  prometheus:\n")[1]
    prometheus_part, grafana_part = sections.split("\n  grafana:\n")
    for part in (prometheus_part, grafana_part):
        assert 'profiles: ["monitoring"]' in part
    proc = subprocess.run(
        [*compose, "--profile", "monitoring", "config"], capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for shipped in (
        "dialplan/monitoring/prometheus.yml", "dialplan/monitoring/alerts.yml",
        "dialplan/monitoring/grafana/provisioning", "dialplan/monitoring/grafana/callback-ari.json",
    ):  # fmt: skip
        assert str(REPO / shipped) in text, shipped
        assert (REPO / shipped).exists(), shipped
    prometheus_yml = (MONITORING / "prometheus.yml").read_text()
    assert "rule_files:\n  - alerts.yml" in prometheus_yml
    dashboards = (MONITORING / "grafana/provisioning/dashboards/callback-ari.yml").read_text()
    assert "/var/lib/grafana/dashboards" in dashboards and "/var/lib/grafana/dashboards" in text
