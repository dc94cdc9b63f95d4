"""`minnow demo`: broker, topics, a worker and the bundled sample, end to end, then everything stopped again."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition

from pipeline.errors import DeliveryError
from pipeline.models import FAMILIES
from pipeline.ops import devkafka
from pipeline.ops.tools import produce
from pipeline.ops.topics import apply
from pipeline.present import describe
from pipeline.settings import KafkaSettings, Settings
from pipeline.stream import clients, names
from pipeline.stream.clients import partitions
from pipeline.topic_specs import load_specs

# One bundled sample per family that has an input topic, named after it: feeds.in -> data/demo/feeds.jsonl.
SAMPLES = tuple(
    (kind, f"{family.input_topic.removesuffix('.in')}.jsonl")
    for kind, family in sorted(FAMILIES.items())
    if family.input_topic is not None
)
OUTPUT_WAIT_S = 180.0


@dataclass
class Tally:
    """What came out for one family."""

    sent: int = 0
    sink: list[dict[str, Any]] = field(default_factory=list)
    escalated: list[dict[str, Any]] = field(default_factory=list)
    dead: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    # Outputs that stand for no single input: conversation records (sink or escalation) and IoT windows.
    assembled: list[dict[str, Any]] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)
    conversations: set[str] = field(default_factory=set)  # ids of the conversations sent as segments
    expected_assembled: int = 0

    @property
    def accounted(self) -> int:
        return len(self.sink) + len(self.escalated) + len(self.dead)

    @property
    def done(self) -> bool:
        return self.accounted >= self.sent and len(self.assembled) >= self.expected_assembled


def sample_path(name: str) -> Path:
    return Path(str(resources.files("pipeline") / "data" / "demo" / name))


def count_records(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())


def segment_conversations(path: Path) -> tuple[set[str], set[str]]:
    """(every conversation id in a transcript sample, those with a `final` segment - each becomes one record)."""
    seen: set[str] = set()
    finished: set[str] = set()
    for line in path.read_bytes().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # the sample's deliberately malformed lines
        if isinstance(event, dict) and isinstance(event.get("conversation_id"), str):
            seen.add(event["conversation_id"])
            if event.get("final") is True:
                finished.add(event["conversation_id"])
    return seen, finished


def start_worker(settings: Settings, kafka: KafkaSettings, prefix: str, log: Path) -> subprocess.Popen[bytes]:
    """`minnow worker` as a subprocess on `prefix`'s topics, with its own group, logging to `log`."""
    env = {
        **os.environ,
        **kafka.environment(),  # the cluster and its security, as this process connects
        "MINNOW_KAFKA__TOPIC_PREFIX": prefix,
        "MINNOW_KAFKA__GROUP_ID": f"{prefix}worker",
        "MINNOW_WORKER__METRICS_PORT": "0",
        # The worker runs the model the caller configured, whatever the caller's environment says.
        "MINNOW_ENGINE__CACHE_DIR": str(settings.engine.cache_dir),
        "MINNOW_ENGINE__PRECISION": settings.engine.precision,
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def feed(kafka: KafkaSettings, prefix: str) -> dict[str, Tally]:
    """Send the bundled samples to `prefix`'s input topics; per family, what was sent and what must come out."""
    families: dict[str, Tally] = defaultdict(Tally)
    for family, name in SAMPLES:
        path = sample_path(name)
        families[family].sent = count_records(path)
        if family == "transcript":
            conversations, finished = segment_conversations(path)
            families[family].conversations = conversations
            families[family].expected_assembled = len(finished)
        await produce(kafka, prefix + names.INPUT_TOPICS[family], str(path), show_progress=False)
    return families


async def collect(kafka: KafkaSettings, prefix: str, families: dict[str, Tally], proc: Any) -> None:
    """Read sinks, escalations and dead letters from the start until every sent record is accounted for; `proc`
    (a Popen, or anything with `poll()` and `returncode`: a container) must not exit meanwhile."""
    topics = sorted(
        {*names.SINK_TOPICS.values(), names.ESCALATION_TOPIC, names.DEADLETTER_TOPIC, names.IOT_WINDOWS_TOPIC}
    )
    consumer = await clients.started(clients.consumer(kafka, enable_auto_commit=False), kafka)
    try:
        parts = [TopicPartition(prefix + t, p) for t in topics for p in await partitions(kafka, prefix + t)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + OUTPUT_WAIT_S
        while not all(t.done for t in families.values()) and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DeliveryError(f"the worker exited early with code {proc.returncode}; see its log")
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for rec in records:
                    _file(families, tp.topic[len(prefix) :], rec)
    finally:
        await consumer.stop()


def _file(families: dict[str, Tally], topic: str, rec: Any) -> None:
    if topic == names.DEADLETTER_TOPIC:
        headers = {k: v.decode(errors="replace") for k, v in rec.headers or ()}
        source = headers.get(names.DLQ_SOURCE_TOPIC, "")
        family = next((f for f, t in names.INPUT_TOPICS.items() if source.endswith(t)), "feed")
        families[family].dead.append((headers, rec.value))
        return
    value = orjson.loads(rec.value)
    if topic == names.IOT_WINDOWS_TOPIC:
        families["iot"].windows.append(value)
    elif value["kind"] == "conversation" and value["id"] in families["transcript"].conversations:
        families["transcript"].assembled.append(value)  # assembled from segments, not sent whole
    elif topic == names.ESCALATION_TOPIC:
        families[_family(value["kind"])].escalated.append(value)
    else:
        families[_family(value["kind"])].sink.append(value)


def _family(kind: str) -> str:
    return "transcript" if kind == "conversation" else kind


def report(families: dict[str, Tally]) -> str:
    lines = []
    for family, t in families.items():
        lines.append(
            f"\n== {family}: sent {t.sent} -> {len(t.sink)} enriched, {len(t.escalated)} escalated, "
            f"{len(t.dead)} dead letters ({t.accounted} accounted for)"
        )
        for r in sorted(t.sink, key=lambda r: str(r["id"])):
            lines.append(f"  sink      {r['id']:14} {describe(r)}")
        for e in sorted(t.escalated, key=lambda e: str(e["id"])):
            lines.append(f"  escalate  {e['id']:14} {describe(e['result'])}  why: {', '.join(e['reasons'])}")
        for headers, value in t.dead:
            lines.append(
                f"  dead      {headers.get(names.DLQ_ERROR_CLASS, '?'):14} "
                f"{headers.get(names.DLQ_ERROR_MESSAGE, '')[:60]}  (original {len(value)} bytes kept)"
            )
        if t.assembled:
            lines.append(f"  + {len(t.assembled)} conversation records, assembled from the segments above:")
        for c in sorted(t.assembled, key=lambda c: str(c["id"])):
            result = c.get("result", c)
            where = "escalate" if "result" in c else "sink"
            why = f"  why: {', '.join(c['reasons'])}" if "result" in c else ""
            lines.append(
                f"  {where:9} {c['id']:14} {result['input'].get('segments')} segments; {describe(result)}{why}"
            )
        if t.windows:
            devices = len({w["device_id"] for w in t.windows})
            lines.append(f"  + {len(t.windows)} per-device window summaries (iot.windows) for {devices} devices")
    sent = sum(t.sent for t in families.values())
    done = sum(t.accounted for t in families.values())
    lines.append(f"\n{sent} records sent, {done} accounted for" + ("" if sent == done else "  <-- MISSING"))
    return "\n".join(lines)


async def _run(settings: Settings, kafka: KafkaSettings, workdir: Path) -> dict[str, Tally]:
    prefix = f"demo{int(time.time())}."
    print(f"applying topics with prefix {prefix!r} …", file=sys.stderr)
    await apply(kafka, name_of=lambda n: prefix + n, specs=load_specs())
    log = workdir / "worker.log"
    print(f"starting a worker (log: {log}) …", file=sys.stderr)
    proc = start_worker(settings, kafka, prefix, log)
    try:
        families = await feed(kafka, prefix)
        total = sum(t.sent for t in families.values())
        print(f"sent {total} records; waiting for the worker …", file=sys.stderr)
        await collect(kafka, prefix, families, proc)
        return dict(families)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run(settings: Settings) -> int:
    # Fresh topics answer "not leader" for a moment and aiokafka retries on its own; its warnings would only
    # alarm a newcomer watching the demo.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    workdir = Path(settings.engine.cache_dir) / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    started = False
    kafka = settings.kafka
    if "MINNOW_KAFKA__BOOTSTRAP_SERVERS" not in os.environ:
        cache = devkafka.default_cache_dir()
        running = devkafka.status(cache)
        if running is None:  # only what the demo starts, the demo stops
            print("starting a local Kafka (minnow dev kafka) …", file=sys.stderr)
            running = devkafka.start(cache)
            started = True
        kafka = kafka.model_copy(update={"bootstrap_servers": running.bootstrap_servers})
    try:
        families = asyncio.run(_run(settings, kafka, workdir))
    finally:
        if started:
            devkafka.stop(devkafka.default_cache_dir())
    print(report(families))
    return 0 if all(t.sent == t.accounted for t in families.values()) else 1
