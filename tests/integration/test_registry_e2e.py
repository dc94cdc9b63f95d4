"""`minnow worker` with a real schema registry (Apicurio, from Maven Central) on the real broker.

Feed posts framed for the registry — JSON Schema and Avro, with their schemas registered by the test as a
producer's serializer would — go through the worker next to plain JSON ones; sinks are written as registered
Avro. Every input is accounted for exactly once; a record of an unknown schema id, a corrupted Avro payload and
a JSON payload that breaks its schema are dead letters with their original bytes and their reasons.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord

from pipeline.avro import from_avro
from pipeline.errors import DevKafkaError
from pipeline.models import Result
from pipeline.ops import devregistry
from pipeline.settings import RegistrySettings
from pipeline.stream import names
from pipeline.stream.registry import RegistryClient, subject_for
from pipeline.wire import Schema, frame, unframe
from tests.integration.test_worker_e2e import (  # noqa: F401  # worker_env, workers: fixtures used by name
    FEED_TEXTS,
    START,
    OutputReader,
    Planned,
    Sent,
    create_topics,
    dead_letter_source,
    produce,
    worker_env,
    workers,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FEED_JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "source": {"type": "string"},
        "text": {"type": "string"},
        "created_at": {"type": "string"},
    },
    "required": ["id", "source", "text", "created_at"],
}
FEED_AVRO_SCHEMA = {
    "type": "record",
    "name": "Post",
    "namespace": "com.example.feeds",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "source", "type": "string"},
        {"name": "text", "type": "string"},
        {"name": "created_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}
UNKNOWN_ID = 987_654


@pytest.fixture(scope="module")
def registry_url() -> Iterator[str]:
    """A running Apicurio Registry: a developer's (`python -m pipeline.ops.devregistry start`), else one of this
    session's own, stopped after (never another session's). Skipped only when no Java 21+ is installed (Apicurio 3
    needs it)."""
    cache_dir = devregistry.default_cache_dir()
    running = devregistry.status(cache_dir)
    if running is not None:
        yield running.url
        return
    try:
        devregistry.find_java()
    except DevKafkaError as exc:
        if os.environ.get("CI"):  # CI provides Java 21+ (.ci/run): a missing one is a failure there, not a skip
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    instance = f"pytest-{os.getpid()}"
    info = devregistry.start(cache_dir, instance=instance)
    try:
        yield info.url
    finally:
        devregistry.stop(cache_dir, instance=instance)


async def _producer_schemas(url: str, prefix: str) -> tuple[Schema, Schema]:
    """Register the producers' schemas, as their serializers would (auto-register), and return them."""
    client = RegistryClient(RegistrySettings(url=url))
    try:
        json_id = await client.register(f"{prefix}feeds.in-value", "JSON", json.dumps(FEED_JSON_SCHEMA))
        avro_id = await client.register(f"{prefix}feeds.in-avro-value", "AVRO", json.dumps(FEED_AVRO_SCHEMA))
        return await client.schema(json_id), await client.schema(avro_id)
    finally:
        await client.close()


def _inputs(json_schema: Schema, avro_schema: Schema, n: int) -> list[Planned]:
    planned: list[Planned] = []
    for i in range(n):
        created = START + timedelta(seconds=i)
        text = FEED_TEXTS[i % len(FEED_TEXTS)]
        for how in ("json", "avro", "plain"):
            event_id = f"feed-{how}{i:03d}"
            body: dict[str, Any] = {"id": event_id, "source": "wire", "text": text, "created_at": created.isoformat()}
            if how == "json":
                value = frame(json_schema.schema_id, json_schema.encode(body))
            elif how == "avro":
                millis = int(created.timestamp() * 1000)
                value = frame(avro_schema.schema_id, avro_schema.encode({**body, "created_at": millis}))
            else:
                value = orjson.dumps(body)
            planned.append(Planned("feeds.in", event_id.encode(), value, event_id, out_key=event_id.encode()))
    good = avro_schema.encode({"id": "bad-avro", "source": "wire", "text": "x", "created_at": 0})
    bad_json = json_schema.encode({"id": 7, "source": "wire", "text": "x", "created_at": "2026-11-20T09:00:00Z"})
    planned += [
        Planned("feeds.in", b"u", frame(UNKNOWN_ID, b'{"id": "lost"}'), None, error="unknown_schema_id"),
        Planned("feeds.in", b"c", frame(avro_schema.schema_id, good[:-3]), None, error="registry_payload_error"),
        Planned("feeds.in", b"j", frame(json_schema.schema_id, bad_json), None, error="registry_payload_error"),
    ]
    return planned


def test_registry_framed_events_go_through_the_worker_and_bad_ones_are_dead_lettered(
    registry_url: str,
    worker_env: dict[str, str],  # noqa: F811  # the fixture imported above
    workers: Callable[..., Any],  # noqa: F811
) -> None:
    """JSON Schema and Avro framed posts and plain ones each come out exactly once (sink results as registered
    Avro under `<topic>-value`, or escalations); the unknown-id, corrupted and schema-breaking records are dead
    letters carrying their exact bytes and error classes."""
    prefix = worker_env["MINNOW_KAFKA__TOPIC_PREFIX"]
    bootstrap = worker_env["MINNOW_KAFKA__BOOTSTRAP_SERVERS"]
    sink_topic = prefix + names.SINK_TOPICS["feed"]

    async def run() -> tuple[list[Sent], list[ConsumerRecord[bytes, bytes]], Schema]:
        json_schema, avro_schema = await _producer_schemas(registry_url, prefix)
        await create_topics(bootstrap, prefix)
        sent = await produce(bootstrap, prefix, _inputs(json_schema, avro_schema, n=6))
        worker = workers(MINNOW_REGISTRY__URL=registry_url, MINNOW_REGISTRY__OUTPUT_FORMAT="avro")
        topics = (names.SINK_TOPICS["feed"], names.ESCALATION_TOPIC, names.DEADLETTER_TOPIC)
        async with OutputReader(bootstrap, prefix, topics=topics) as reader:
            done = await reader.read_until(lambda records: len(records) >= len(sent), timeout_s=240)
            assert done, f"{len(reader.records)} of {len(sent)} outputs; worker log:\n{worker.tail()}"
            await asyncio.sleep(2)  # anything beyond one output per input would show up now
            await reader.read_to_end()
        assert worker.stop() == 0, worker.tail()
        client = RegistryClient(RegistrySettings(url=registry_url))
        try:
            written = await client.latest(subject_for(sink_topic))
        finally:
            await client.close()
        return sent, reader.records, written

    sent, records, written = asyncio.run(run())
    assert written.schema_type == "AVRO"
    by_place = {(s.topic, s.partition, s.offset): s for s in sent}
    seen: Counter[str] = Counter()
    for record in records:
        if record.topic == sink_topic:
            schema_id, payload = unframe(record.value)
            assert schema_id == written.schema_id
            result = Result.model_validate(from_avro(written.decode(payload), json.loads(written.text)))
            assert record.key == result.id.encode()
            seen[result.id] += 1
        elif record.topic == prefix + names.ESCALATION_TOPIC:
            seen[orjson.loads(record.value)["id"]] += 1
        else:
            source = by_place[dead_letter_source(record)]
            headers = dict(record.headers)
            assert record.value == source.plan.value  # the original bytes, untouched
            assert headers[names.DLQ_ERROR_CLASS].decode() == source.plan.error, headers
            seen[source.marker] += 1
    assert seen == Counter(s.marker for s in sent)
    sinks = sum(1 for record in records if record.topic == sink_topic)
    assert sinks >= 9, "most of the 18 good posts are confident and reach the sink as Avro"


def test_a_registry_that_is_down_stops_the_worker_without_dead_letters_then_nothing_is_lost(
    registry_url: str,
    worker_env: dict[str, str],  # noqa: F811  # the fixture imported above
    workers: Callable[..., Any],  # noqa: F811
) -> None:
    """With the registry unreachable, the worker retries for MINNOW_REGISTRY__RETRY_S, then exits 75 without
    committing or dead-lettering anything; restarted with the registry back, every record comes out once."""
    prefix = worker_env["MINNOW_KAFKA__TOPIC_PREFIX"]
    bootstrap = worker_env["MINNOW_KAFKA__BOOTSTRAP_SERVERS"]
    nowhere = f"http://127.0.0.1:{_closed_port()}/apis/ccompat/v7"

    async def run() -> tuple[int, list[Sent], list[ConsumerRecord[bytes, bytes]], str]:
        json_schema, avro_schema = await _producer_schemas(registry_url, prefix)
        await create_topics(bootstrap, prefix)
        planned = [p for p in _inputs(json_schema, avro_schema, n=2) if p.error is None]
        sent = await produce(bootstrap, prefix, planned)
        down = workers(MINNOW_REGISTRY__URL=nowhere, MINNOW_REGISTRY__RETRY_S="3")
        assert down.process is not None
        code = await asyncio.to_thread(down.process.wait, 120)
        log = down.tail()
        up = workers(MINNOW_REGISTRY__URL=registry_url)
        topics = (names.SINK_TOPICS["feed"], names.ESCALATION_TOPIC, names.DEADLETTER_TOPIC)
        async with OutputReader(bootstrap, prefix, topics=topics) as reader:
            done = await reader.read_until(lambda records: len(records) >= len(sent), timeout_s=240)
            assert done, f"{len(reader.records)} of {len(sent)} outputs; worker log:\n{up.tail()}"
            await asyncio.sleep(2)
            await reader.read_to_end()
        assert up.stop() == 0, up.tail()
        return code, sent, reader.records, log

    code, sent, records, log = asyncio.run(run())
    assert code == 75, log
    assert "schema registry at" in log and "is unavailable" in log
    assert [r for r in records if r.topic == prefix + names.DEADLETTER_TOPIC] == []
    ids = Counter(orjson.loads(r.value)["id"] for r in records)  # plain JSON sinks: output_format is plain
    assert ids == Counter(s.marker for s in sent)


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
