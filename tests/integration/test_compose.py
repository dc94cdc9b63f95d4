"""The compose stack (deploy/compose) comes up here, settles the demo sample by id, is scraped, and comes down.

Run through the host-network override (docker-compose.hostnet.yml: every address 127.0.0.1, free ports picked
now) with the stand-in images under the official tags (../shared/tools/standin-images.sh). Grafana is left out
(no image here). Wall time on the 2-core development VM: 100-210 s with the image's layers cached (by load), most
of it the four workers loading the model; a cold build (dependencies, the model) adds 5-10 minutes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import TopicPartition

from pipeline.ops import demo
from pipeline.ops.tools import produce
from pipeline.settings import KafkaSettings
from pipeline.stream import clients, names
from pipeline.stream.clients import partitions

pytestmark = [pytest.mark.integration, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
IMAGES = ("apache/kafka:4.1.0", "prom/prometheus", "debian:bookworm-slim")
IMAGE_WAIT_S = 600.0  # CI may still be making the stand-ins when this test starts
UP_TIMEOUT_S = 1500.0  # a cold build installs the dependencies and builds the model
OUTPUT_WAIT_S = 300.0
SCRAPE_WAIT_S = 90.0
PORTS = (
    "MINNOW_KAFKA_PORT",
    "MINNOW_KAFKA_CONTROLLER_PORT",
    "MINNOW_PROMETHEUS_PORT",
    "MINNOW_METRICS_PORT_FEED",
    "MINNOW_METRICS_PORT_TRANSCRIPT",
    "MINNOW_METRICS_PORT_IOT",
    "MINNOW_METRICS_PORT_TICKET",
    "MINNOW_METRICS_PORT_ESCALATOR",
)
TARGETS = 5  # four workers and the escalator


@dataclass
class Outputs:
    """What the stack wrote, by family: ids of sink and escalation records, dead-letter bytes, review records."""

    ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    conversations: set[str] = field(default_factory=set)
    escalated: set[str] = field(default_factory=set)
    dead: set[bytes] = field(default_factory=set)
    review: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """The demo mix as sent: per family, the ids of its JSON lines and the bytes of every line."""

    lines: dict[str, list[bytes]]
    conversations: set[str]  # transcript conversations with a final segment: each becomes one assembled record

    def missing(self, out: Outputs) -> list[str]:
        """Sent lines that reached neither a sink, the escalation topic (by id) nor the dead letters (by bytes)."""
        gone = [
            f"{family}: {line[:60]!r}"
            for family, lines in self.lines.items()
            for line in lines
            if _id(line) not in out.ids[family] and line not in out.dead
        ]
        return gone + [f"conversation {c}" for c in sorted(self.conversations - out.conversations)]


@pytest.mark.timeout(UP_TIMEOUT_S + IMAGE_WAIT_S + 600)
def test_compose_stack_settles_the_demo_sample_and_is_scraped_then_leaves_nothing() -> None:
    """Up with --build: every demo line is in a sink, the escalation topic or the dead letters (by id or bytes);
    the escalator, with no key, says it is review-only and sends every escalation to review; Prometheus has all
    five targets up and the alert rules loaded; down -v leaves no container or volume of the project."""
    compose = _compose_command()
    _wait_for_images()
    project = f"minnow-compose-it-{uuid.uuid4().hex[:8]}"
    env = _environment()
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{env['MINNOW_KAFKA_PORT']}")
    run = _runner(compose, project, env)
    try:
        run("up", "-d", "--build", timeout=UP_TIMEOUT_S)
        sample = _sample()
        asyncio.run(_send(kafka, sample))
        out = asyncio.run(_collect(kafka, sample))
        assert not sample.missing(out), f"not accounted for: {sample.missing(out)}"
        assert out.escalated and set(out.review) == out.escalated  # review-only: each escalation to review
        assert {tuple(reasons) for reasons in out.review.values()} == {("escalation.review_only",)}
        assert "review-only mode (no API key is set)" in run("logs", "--no-color", "escalator")
        prometheus = f"http://127.0.0.1:{env['MINNOW_PROMETHEUS_PORT']}"
        targets = _targets_when_up(prometheus)
        assert len(targets) == TARGETS and all(t["health"] == "up" for t in targets), targets
        assert _rule_groups(prometheus) == _expected_rule_groups()
    except BaseException:
        print(run("logs", "--no-color", "--tail", "40", check=False), file=sys.stderr)
        raise
    finally:
        run("down", "-v", "--remove-orphans", "--timeout", "20", timeout=180.0, check=False)
    label = f"label=com.docker.compose.project={project}"
    assert _docker("ps", "-a", "-q", "--filter", label) == ""
    assert _docker("volume", "ls", "-q", "--filter", label) == ""


# ---------------------------------------------------------------------------------------------- the stack
def _compose_command() -> list[str]:
    """docker-compose (1.29 here), else the `docker compose` plugin; fails with one line when no engine answers."""
    if shutil.which("docker") is None or _status("docker", "info"):
        pytest.fail("no Docker engine answers (`docker info` failed): start one (../shared/tools/standin-images.sh)")
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if _status("docker", "compose", "version") == 0:
        return ["docker", "compose"]
    pytest.fail("neither docker-compose nor the `docker compose` plugin is installed")


def _status(*command: str) -> int:
    return subprocess.run(command, check=False, capture_output=True, timeout=60).returncode


def _wait_for_images() -> None:
    deadline = time.monotonic() + IMAGE_WAIT_S
    for image in IMAGES:
        while _status("docker", "image", "inspect", image):
            if time.monotonic() > deadline:
                pytest.fail(f"image {image} is not here: make the stand-ins with ../shared/tools/standin-images.sh")
            time.sleep(5)


def _environment() -> dict[str, str]:
    """The caller's environment, free ports, and no key: whatever a developer's .env says, nothing is paid for."""
    ports = _free_ports(len(PORTS))
    return {
        **os.environ,
        **dict(zip(PORTS, map(str, ports), strict=True)),
        "MINNOW_ESCALATION__API_KEY": "",
        "MINNOW_ESCALATION__MODE": "auto",
        # The tag tests/integration/test_image.py builds too: one build's layers serve both.
        "MINNOW_IMAGE": os.environ.get("MINNOW_TEST_IMAGE", "minnow:test"),
    }


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _runner(compose: list[str], project: str, env: dict[str, str]) -> Any:
    files = ["-f", str(COMPOSE_DIR / "docker-compose.yml"), "-f", str(COMPOSE_DIR / "docker-compose.hostnet.yml")]

    def run(*args: str, timeout: float = 300.0, check: bool = True) -> str:
        done = subprocess.run(
            [*compose, "-p", project, *files, *args],
            check=False,
            cwd=COMPOSE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode:
            raise AssertionError(
                f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        return done.stdout + done.stderr

    return run


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout.strip()


# ---------------------------------------------------------------------------------------------- the data
def _sample() -> Sample:
    lines = {
        family: [line.strip() for line in demo.sample_path(name).read_bytes().splitlines() if line.strip()]
        for family, name in demo.SAMPLES
    }
    transcripts = dict(demo.SAMPLES)["transcript"]
    _, finished = demo.segment_conversations(demo.sample_path(transcripts))
    return Sample(lines, finished)


def _id(line: bytes) -> str | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value.get("id") if isinstance(value, dict) and isinstance(value.get("id"), str) else None


async def _send(kafka: KafkaSettings, sample: Sample) -> None:
    for family, name in demo.SAMPLES:
        await produce(kafka, f"minnow.{names.INPUT_TOPICS[family]}", str(demo.sample_path(name)), show_progress=False)


async def _collect(kafka: KafkaSettings, sample: Sample) -> Outputs:
    """Read sinks, escalations, dead letters and review from the start until everything is there, or time is up."""
    topics = [*names.SINK_TOPICS.values(), names.ESCALATION_TOPIC, names.DEADLETTER_TOPIC, names.REVIEW_TOPIC]
    consumer = await clients.started(clients.consumer(kafka, enable_auto_commit=False), kafka)
    out = Outputs()
    try:
        parts = [TopicPartition(f"minnow.{t}", p) for t in topics for p in await partitions(kafka, f"minnow.{t}")]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + OUTPUT_WAIT_S
        while time.monotonic() < deadline and (sample.missing(out) or set(out.review) != out.escalated):
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                for record in records:
                    _file(out, tp.topic.removeprefix("minnow."), record.value)
    finally:
        await consumer.stop()
    return out


def _file(out: Outputs, topic: str, raw: bytes) -> None:
    if topic == names.DEADLETTER_TOPIC:
        out.dead.add(raw.strip())
        return
    value = orjson.loads(raw)
    if topic == names.REVIEW_TOPIC:
        out.review[value["id"]] = value["review_reasons"]
        return
    if topic == names.ESCALATION_TOPIC:
        out.escalated.add(value["id"])
    if value["kind"] == "conversation":
        out.conversations.add(value["id"])
    out.ids["transcript" if value["kind"] == "conversation" else value["kind"]].add(value["id"])


# ---------------------------------------------------------------------------------------------- Prometheus
def _api(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.load(reply)["data"]


def _targets_when_up(prometheus: str) -> list[dict[str, Any]]:
    """The active targets once all are up (each is scraped every 5 s), or as they are when time is up."""
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while True:
        targets: list[dict[str, Any]] = _api(f"{prometheus}/api/v1/targets")["activeTargets"]
        if (len(targets) == TARGETS and all(t["health"] == "up" for t in targets)) or time.monotonic() > deadline:
            return targets
        time.sleep(2)


def _rule_groups(prometheus: str) -> list[str]:
    return sorted(group["name"] for group in _api(f"{prometheus}/api/v1/rules")["groups"])


def _expected_rule_groups() -> list[str]:
    assert ALERTS.is_file(), f"{ALERTS.relative_to(ROOT)} is missing: the stack loads its alert rules from it"
    return sorted(group["name"] for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"])
