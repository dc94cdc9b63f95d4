"""The dashboard and the alert rules name only metrics the worker and escalator export, every alert has a promtool
unit test that makes it fire, and Grafana's provisioning points the dashboard at its data source. (Evaluating
them against a real Prometheus is tests/integration/test_dashboard.py; running promtool, test_alerts.py.)"""

from __future__ import annotations

from typing import Any

import yaml

from tests.observability import (
    ALERT_TESTS,
    PROVISIONING,
    alert_rules,
    dashboard,
    metric_names,
    panel_queries,
    panels,
    sample_names,
)

# What on-call asks first (issue 12): each must have a panel.
WANTED_PANELS = (
    "Events in per family",
    "Events out per family and destination",
    "Settled by the mini model vs escalated vs dead-lettered",
    "Lag per partition",
    "Batch size",
    "Queue wait vs inference time (p95)",
    "Produce-to-sink latency p50 / p95 / p99",
    "Escalation spend against budget",
    "Circuit breaker",
    "Money saved: counterfactual vs spent",
)
WANTED_ALERTS = {
    "MinnowTargetDown",
    "MinnowNoPartitionsAssigned",
    "MinnowConsumerLagGrowing",
    "MinnowDeadLetterRateHigh",
    "MinnowEscalationRateJump",
    "MinnowEscalatorBreakerOpen",
    "MinnowEscalationBudgetSoftCap",
    "MinnowEscalationBudgetHardCap",
}


def test_every_metric_the_dashboard_and_alerts_query_is_exported() -> None:
    """A misspelt or renamed metric shows as an empty panel or an alert that never fires: caught here by name."""
    exported = sample_names() | {"up"}
    used = {name for query in panel_queries(dashboard()) for name in metric_names(query.expr)}
    used |= {name for rule in alert_rules() for name in metric_names(rule["expr"])}
    assert used - exported == set()
    assert {"minnow_counterfactual_cost_usd_total", "minnow_consumer_lag", "minnow_escalator_budget_cap_usd"} <= used


def test_the_dashboard_has_the_panels_on_call_asks_for_each_with_a_query() -> None:
    """Every panel has a title, a unique id, the `datasource` variable as its data source and at least one query."""
    board = dashboard()
    shown = [p for p in panels(board) if p.get("type") != "row"]
    titles = [p["title"] for p in shown]
    assert [title for title in WANTED_PANELS if title not in titles] == []
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in shown:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]


def test_the_provisioned_data_source_is_the_dashboards_default() -> None:
    """Grafana, provisioned from deploy/grafana/provisioning, opens the dashboard on the Prometheus it provisions."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    (source,) = yaml.safe_load((PROVISIONING / "datasources" / "minnow.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and variables["datasource"]["current"]["value"] == source["uid"]
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "minnow.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_every_alert_has_a_promtool_test_in_which_it_fires() -> None:
    """alerts_test.yaml expects each rule of alerts.yaml to fire at least once (and the ones asked for exist)."""
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= WANTED_ALERTS
    cases: list[dict[str, Any]] = [
        case for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for case in test.get("alert_rule_test", [])
    ]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert names - fired == set(), "rules never expected to fire"
    assert names - quiet == set(), "rules never checked to stay quiet"
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["runbook"].startswith("docs/deploy.md#"), rule["alert"]
