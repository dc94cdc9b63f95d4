"""The dashboard's and the alert rules' PromQL, read the way Grafana and Prometheus read it (for the tests).

`panel_queries` yields every panel target with Grafana's variables replaced by values that select everything
(a variable's "All" value, a wide rate window); `alert_rules` the rules of deploy/prometheus/alerts.yaml;
`selectors` the vector selectors an expression reads; `sample_names` every series name pipeline/metrics.py exports.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase

from pipeline import metrics

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy" / "grafana" / "minnow.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
ALERT_TESTS = REPO / "deploy" / "prometheus" / "alerts_test.yaml"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"

# Grafana's built-in interval variables, as wide as a short test run: every sample taken counts.
BUILTINS = {"$__rate_interval": "5m", "$__interval": "15s", "$__range": "10m"}
# A metric name in PromQL: `minnow_…` (label values here use dashes, never `minnow_`), or Prometheus' own `up`.
_SELECTOR = re.compile(r"\b(minnow_[a-z0-9_]+|up)\b(\{[^}]*\})?")


@dataclass(frozen=True)
class Query:
    panel: str
    ref: str
    expr: str

    def __str__(self) -> str:
        return f"panel {self.panel!r} query {self.ref}: {self.expr}"


def dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variable_values(board: dict[str, Any]) -> dict[str, str]:
    """`$name` -> what selects everything: the variable's All value, else its current value."""
    values: dict[str, str] = {}
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "datasource":
            continue  # names the data source, never appears in an expression
        if var.get("includeAll") and var.get("allValue"):
            values[f"${var['name']}"] = str(var["allValue"])
        else:
            current = var.get("current", {}).get("value", "")
            values[f"${var['name']}"] = current[0] if isinstance(current, list) else str(current)
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's interpolation of `$name` and `${name}`, longest names first so `$__range` is not `$__r…`."""
    every = {**BUILTINS, **values}
    for name in sorted(every, key=len, reverse=True):
        expr = expr.replace("${" + name[1:] + "}", every[name]).replace(name, every[name])
    return expr


def panel_queries(board: dict[str, Any]) -> list[Query]:
    values = variable_values(board)
    return [
        Query(panel["title"], target.get("refId", "?"), substitute(target["expr"], values))
        for panel in panels(board)
        if panel.get("type") != "row"
        for target in panel.get("targets", [])
    ]


def alert_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def selectors(expr: str) -> list[str]:
    """The vector selectors of an expression (metric name and matchers), each once, in order."""
    seen: dict[str, None] = {}
    for name, matchers in _SELECTOR.findall(expr):
        seen[name + matchers] = None
    return list(seen)


def metric_names(expr: str) -> set[str]:
    return {name for name, _ in _SELECTOR.findall(expr)}


def sample_names() -> set[str]:
    """Every series name the instruments of pipeline/metrics.py export."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    names: set[str] = set()
    for instrument in vars(metrics).values():
        if isinstance(instrument, MetricWrapperBase):
            names.update(instrument._name + suffix for suffix in suffixes[str(instrument._type)])
    return names
