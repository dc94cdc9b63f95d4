"""A real Prometheus scrapes a real worker and escalator while they process the demo sample; every dashboard panel
query and every alert expression is evaluated through Prometheus' HTTP API and must return series.

A panel whose metric name is wrong would show nothing in Grafana and an alert on it would never fire: here it fails
the test (checked in the test itself with a deliberately misspelt query). Prometheus is Debian's `prometheus`
binary, started as a subprocess on a free 127.0.0.1 port with a generated configuration (scrape and evaluation
every second, deploy/prometheus/alerts.yaml loaded), and stopped by its pid. The large model is tests/openai_server.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import yaml
from aiohttp import ClientSession

from pipeline.ops import demo
from pipeline.ops.tools import produce
from pipeline.ops.topics import apply
from pipeline.settings import KafkaSettings
from pipeline.stream import names
from pipeline.topic_specs import load_specs
from tests.observability import ALERTS, Query, alert_rules, dashboard, panel_queries, selectors
from tests.openai_server import OpenAIServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

READY_TIMEOUT_S = 300.0  # worker start (model load) and the whole demo sample, on a busy 2-core machine
STOP_TIMEOUT_S = 60.0
POLL_S = 1.0
JOBS = ("minnow-worker", "minnow-escalator")  # what MinnowTargetDown selects: jobs with "minnow" in their name


@dataclass
class Child:
    """A subprocess started by this test, its output in a log file; stopped by its own pid."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT_S)
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.name} log ---\n" + "\n".join(text.splitlines()[-lines:])


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install Prometheus (Debian: apt-get install prometheus)", pytrace=False)
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prometheus_config(path: Path, targets: dict[str, int]) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]} for job, port in targets.items()
        ],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class Prometheus:
    """Prometheus' HTTP API: instant queries and the rules' state."""

    def __init__(self, session: ClientSession, port: int) -> None:
        self._session = session
        self._base = f"http://127.0.0.1:{port}/api/v1"

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        async with self._session.get(f"{self._base}/{path}", params=params) as reply:
            body: dict[str, Any] = await reply.json()
        return body

    async def query(self, expr: str) -> tuple[list[dict[str, Any]], str | None]:
        """The series an instant query returns, or the error Prometheus gives (a parse error, say)."""
        try:
            body = await self.get("query", query=expr)
        except (OSError, ValueError) as exc:
            return [], f"{type(exc).__name__}: {exc}"
        if body.get("status") != "success":
            return [], f"{body.get('errorType')}: {body.get('error')}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result, None

    async def value(self, expr: str) -> float:
        """A scalar-like query's value, 0 while it has no series yet."""
        series, _ = await self.query(expr)
        return float(series[0]["value"][1]) if series else 0.0

    async def rules(self) -> list[dict[str, Any]]:
        body = await self.get("rules", type="alert")
        if body.get("status") != "success":
            return []
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]


async def wait_until(what: str, check: Callable[[], Any], children: list[Child]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not await check():
        dead = [child for child in children if not child.alive()]
        if dead:
            pytest.fail(f"{dead[0].name} exited while waiting for {what}\n" + dead[0].tail())
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {READY_TIMEOUT_S:.0f}s\n" + "\n".join(c.tail() for c in children))
        await asyncio.sleep(POLL_S)


async def unanswered(prometheus: Prometheus, queries: list[Query]) -> list[str]:
    """Each query that fails to parse or returns no series, as one line."""
    failures = []
    for query in queries:
        series, error = await prometheus.query(query.expr)
        if error is not None:
            failures.append(f"{query}: {error}")
        elif not series:
            failures.append(f"{query}: no series")
    return failures


async def unhealthy_alerts(prometheus: Prometheus) -> list[str]:
    """Each alert rule that Prometheus did not load, evaluates with an error, or reads a selector without series.

    An alert's own expression returns nothing while it is not firing (that is the point of a threshold), so what
    must return series is every vector selector it reads, and its evaluation must be healthy.
    """
    failures = []
    loaded = {rule["name"]: rule for rule in await prometheus.rules()}
    for rule in alert_rules():
        state = loaded.get(rule["alert"])
        if state is None:
            failures.append(f"alert {rule['alert']}: not loaded by Prometheus")
            continue
        if state.get("health") != "ok":
            failures.append(f"alert {rule['alert']}: health {state.get('health')}: {state.get('lastError')}")
        for selector in selectors(rule["expr"]):
            series, error = await prometheus.query(selector)
            if error is not None or not series:
                failures.append(f"alert {rule['alert']} reads {selector}: {error or 'no series'}")
    return failures


def test_every_dashboard_query_and_alert_expression_returns_series(
    kafka_bootstrap: str, random_name: Callable[[str], str], model_cache: Path, tmp_path: Path
) -> None:
    prometheus_bin = binary("prometheus")
    prefix = random_name("dash") + "."
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    asyncio.run(apply(kafka, load_specs(), name_of=lambda name: prefix + name))
    ports = {job: free_port() for job in JOBS}
    prometheus_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINNOW_")}
    env.update(
        MINNOW_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
        MINNOW_KAFKA__TOPIC_PREFIX=prefix,
        MINNOW_KAFKA__GROUP_ID=random_name("group"),
        MINNOW_ENGINE__CACHE_DIR=str(model_cache),
    )
    cli = [sys.executable, "-m", "pipeline.cli"]
    config = prometheus_config(tmp_path / "prometheus.yml", ports)
    prometheus = Child(
        "prometheus",
        [
            prometheus_bin,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            "--log.level=warn",
        ],
        dict(os.environ),
        tmp_path / "prometheus.log",
    )

    async def scenario() -> list[str]:
        async with OpenAIServer() as large_model, ClientSession() as session:
            worker = Child(
                "worker",
                [*cli, "worker"],
                {**env, "MINNOW_WORKER__METRICS_PORT": str(ports["minnow-worker"])},
                tmp_path / "worker.log",
            )
            escalator = Child(
                "escalator",
                [*cli, "escalator"],
                {
                    **env,
                    "MINNOW_ESCALATION__BASE_URL": large_model.base_url,
                    "MINNOW_ESCALATION__CACHE_FILE": "none",
                    "MINNOW_ESCALATION__METRICS_PORT": str(ports["minnow-escalator"]),
                },
                tmp_path / "escalator.log",
            )
            children = [prometheus, worker, escalator]
            try:
                for child in children:
                    child.start()
                return await measure(Prometheus(session, prometheus_port), children)
            finally:
                for child in reversed(children):
                    child.stop()

    async def measure(api: Prometheus, children: list[Child]) -> list[str]:
        sent = 0
        for family, name in demo.SAMPLES:
            path = demo.sample_path(name)
            sent += demo.count_records(path)
            await produce(kafka, prefix + names.INPUT_TOPICS[family], str(path), show_progress=False)

        async def everything_scraped() -> bool:
            return (
                await api.value('sum(minnow_events_in_total{family!=""})') >= sent
                and await api.value("count(minnow_consumer_lag)") > 0  # the trackers' first rounds (every 15 s)
                and await api.value("sum(minnow_escalator_spend_usd_total)") > 0
                and await api.value('count(up{job=~".*minnow.*"} == 1)') == len(JOBS)
            )

        await wait_until(f"all {sent} demo records consumed, lag and spend scraped", everything_scraped, children)
        await asyncio.sleep(3)  # a few more scrapes and rule evaluations past the last record
        queries = panel_queries(dashboard())
        failures = await unanswered(api, queries)
        failures += await unhealthy_alerts(api)
        # The check itself must catch a misspelt metric: a panel's query, one letter off, returns nothing.
        good = next(q for q in queries if "minnow_events_in_total" in q.expr)
        misspelt = Query(good.panel, good.ref, good.expr.replace("minnow_events_in_total", "minnow_event_in_total"))
        assert await unanswered(api, [misspelt]) == [f"{misspelt}: no series"]
        return failures

    failures = asyncio.run(scenario())
    assert failures == [], "\n".join(failures)
