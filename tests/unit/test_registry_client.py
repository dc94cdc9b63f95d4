"""The registry client and the worker's registry path (pipeline/stream/registry.py), over real HTTP.

The server is tests/registry_server.py: a small real aiohttp server with the Confluent-compatible endpoints, not a
real registry (Apicurio runs in tests/integration/test_registry_e2e.py). It can fail on purpose, which is what
these tests need: a registry that is down must fail the batch, never dead-letter good records.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from pipeline.avro import from_avro
from pipeline.errors import ConfigError, RegistryError, UnknownSchemaError
from pipeline.models import Result
from pipeline.settings import KafkaSettings, RegistrySettings, Settings, WorkerSettings, load_settings
from pipeline.stream import names
from pipeline.stream.registry import RegistryClient, RegistryCodec, subject_for
from pipeline.stream.worker import BatchProcessor, OutputRecord
from pipeline.wire import Schema, frame, unframe
from tests.registry_server import RegistryServer
from tests.unit.test_registry_wire import FEED_AVRO_SCHEMA, FEED_JSON_SCHEMA
from tests.unit.test_stream_units import PREFIX, FakeEngine, FakeSender, feed, record

Run = Callable[[Callable[[RegistryServer], Awaitable[Any]]], Any]


class Sleeps:
    """Records back-off waits instead of sleeping, so a retry test takes milliseconds."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def with_server(body: Callable[[RegistryServer], Awaitable[Any]], **server_options: Any) -> Any:
    async def main() -> Any:
        server = RegistryServer(**server_options)
        await server.start()
        try:
            return await body(server)
        finally:
            await server.stop()

    return asyncio.run(main())


def client_for(url: str, sleeps: Sleeps | None = None, **options: Any) -> RegistryClient:
    return RegistryClient(RegistrySettings(url=url, **options), sleep=sleeps or Sleeps())


def test_a_schema_is_fetched_once_by_id_then_served_from_the_cache() -> None:
    """Ids are immutable in a registry, so a thousand records of one schema cost one request."""

    async def body(server: RegistryServer) -> None:
        schema_id = server.add(FEED_JSON_SCHEMA)
        client = client_for(server.url)
        first = await client.schema(schema_id)
        again = await client.schema(schema_id)
        await client.close()
        assert first is again and first.schema_type == "JSON"
        assert server.requests == [f"GET /schemas/ids/{schema_id}"]

    with_server(body)


def test_an_unknown_id_is_the_records_fault_not_the_registrys() -> None:
    """A 404 for the id becomes UnknownSchemaError (an InputError: a dead letter), naming the id."""

    async def body(server: RegistryServer) -> None:
        client = client_for(server.url)
        with pytest.raises(UnknownSchemaError, match="no schema with id 42"):
            await client.schema(42)
        await client.close()

    with_server(body)


def test_a_failing_registry_is_retried_with_back_off_until_it_answers() -> None:
    """Two 503s, then the answer: the client waits 0.25 s, then 0.5 s, and returns the schema."""

    async def body(server: RegistryServer) -> None:
        schema_id = server.add(FEED_AVRO_SCHEMA, "AVRO")
        server.fail_next = 2
        sleeps = Sleeps()
        client = client_for(server.url, sleeps)
        schema = await client.schema(schema_id)
        await client.close()
        assert schema.schema_type == "AVRO" and sleeps.waits == [0.25, 0.5]

    with_server(body)


def test_a_registry_that_stays_down_raises_registry_error_after_its_retry_budget() -> None:
    """Nothing listening: RegistryError (not an InputError) once retry_s is spent, naming the URL and the cause."""

    async def body(server: RegistryServer) -> None:
        url = server.url
        await server.stop()
        sleeps = Sleeps()
        client = client_for(url, sleeps, retry_s=2.0, timeout_s=1.0)
        with pytest.raises(RegistryError, match=f"registry at {url} is unavailable .* after retrying 2s"):
            await client.schema(1)
        await client.close()
        assert sum(sleeps.waits) <= 2.0 and len(sleeps.waits) >= 2

    with_server(body)


def test_credentials_are_sent_and_a_refusal_names_the_settings_to_fix() -> None:
    """Basic auth reaches the registry; wrong credentials fail at once (no retry), saying which variables."""

    async def body(server: RegistryServer) -> None:
        schema_id = server.add(FEED_JSON_SCHEMA)
        good = client_for(server.url, username="minnow", password=SecretStr("s3cret"))
        assert (await good.schema(schema_id)).schema_id == schema_id
        sleeps = Sleeps()
        bad = client_for(server.url, sleeps, username="minnow", password=SecretStr("wrong"))
        with pytest.raises(RegistryError, match=r"refused schema .* \(HTTP 401\): check MINNOW_REGISTRY__USERNAME"):
            await bad.schema(schema_id)
        assert sleeps.waits == []
        await good.close()
        await bad.close()

    with_server(body, user="minnow", password="s3cret")


def test_registering_is_idempotent_and_latest_returns_it() -> None:
    """POST /subjects/{subject}/versions twice with one schema yields one id; versions/latest serves it."""

    async def body(server: RegistryServer) -> None:
        client = client_for(server.url)
        first = await client.register("t.feeds.enriched-value", "AVRO", FEED_AVRO_SCHEMA)
        again = await client.register("t.feeds.enriched-value", "AVRO", FEED_AVRO_SCHEMA)
        latest = await client.latest("t.feeds.enriched-value")
        await client.close()
        assert first == again == latest.schema_id and latest.schema_type == "AVRO"

    with_server(body)


def _settings(url: str, output_format: str) -> Settings:
    return Settings(
        kafka=KafkaSettings(topic_prefix=PREFIX, max_event_bytes=1024),
        worker=WorkerSettings(batch_max_events=8, batch_max_wait_ms=20),
        registry=RegistrySettings(url=url, output_format=output_format, retry_s=1.0, timeout_s=1.0),  # type: ignore[arg-type]
    )


async def _handle(server: RegistryServer, output_format: str, values: list[bytes]) -> list[OutputRecord]:
    settings = _settings(server.url, output_format)
    codec = RegistryCodec(settings, RegistryClient(settings.registry, sleep=Sleeps()))
    processor = BatchProcessor(settings, FakeEngine(), FakeSender(), registry=codec)
    try:
        return await processor.handle([record(value, offset) for offset, value in enumerate(values)])
    finally:
        await codec.close()


def test_framed_json_schema_and_avro_records_are_processed_and_bad_ones_dead_lettered() -> None:
    """One batch mixing plain JSON, JSON-Schema-framed and Avro-framed posts, a record of an unknown schema id and
    a corrupted Avro payload: the three good ones reach the sink (as registered Avro, under `<topic>-value`); the
    two bad ones are dead letters with their original bytes and their own error classes."""

    async def body(server: RegistryServer) -> None:
        json_id = server.add(FEED_JSON_SCHEMA)
        avro_id = server.add(FEED_AVRO_SCHEMA, "AVRO")
        avro = Schema.parse(avro_id, "AVRO", FEED_AVRO_SCHEMA)
        post = {"id": "avro-1", "source": "wire", "text": "Rain.", "created_at": 1_764_000_000_000, "lang": None}
        good_avro = frame(avro_id, avro.encode(post))
        corrupted = frame(avro_id, avro.encode({**post, "id": "avro-2"})[:-4])
        unknown = frame(999, b'{"id": "lost", "text": "x"}')
        json_framed = frame(
            json_id,
            orjson.dumps({"id": "json-1", "source": "wire", "text": "Sun.", "created_at": "2026-11-20T09:00:00Z"}),
        )
        values = [feed("plain-1"), json_framed, good_avro, unknown, corrupted]
        outputs = await _handle(server, "avro", values)

        assert [o.destination for o in outputs] == ["sink", "sink", "sink", "deadletter", "deadletter"]
        assert [o.value for o in outputs[3:]] == [unknown, corrupted]
        assert [o.reasons for o in outputs[3:]] == [("unknown_schema_id",), ("registry_payload_error",)]
        message = dict(outputs[3].headers)[names.DLQ_ERROR_MESSAGE].decode()
        assert message == "the schema registry has no schema with id 999"
        sink = f"{PREFIX}feeds.enriched"
        sink_id = server.subjects[subject_for(sink)][-1]
        derived = json.loads(server.schemas[sink_id]["schema"])
        written = Schema.parse(sink_id, "AVRO", server.schemas[sink_id]["schema"])
        ids = []
        for output in outputs[:3]:
            schema_id, payload = unframe(output.value or b"")
            assert schema_id == sink_id
            ids.append(Result.model_validate(from_avro(written.decode(payload), derived)).id)
        assert ids == ["plain-1", "json-1", "avro-1"]

    with_server(body)


def test_json_schema_output_is_framed_plain_json_of_the_topics_checked_in_schema() -> None:
    """output_format json-schema registers topics/schemas/<topic>.json as JSON and frames the codec's JSON."""

    async def body(server: RegistryServer) -> None:
        outputs = await _handle(server, "json-schema", [feed("p-1")])
        schema_id, payload = unframe(outputs[0].value or b"")
        assert server.schemas[schema_id]["schemaType"] == "JSON"
        assert json.loads(server.schemas[schema_id]["schema"])["title"] == "Result"
        assert orjson.loads(payload)["id"] == "p-1"

    with_server(body)


def test_a_registry_that_is_down_fails_the_batch_and_dead_letters_nothing() -> None:
    """Framed records while the registry is unreachable: handle raises RegistryError and sends nothing, so the
    worker exits and the batch is read again after restart — its good records are never dead letters."""

    async def body(server: RegistryServer) -> None:
        schema_id = server.add(FEED_JSON_SCHEMA)
        server.fail_next = 1000  # every request answers 503
        settings = _settings(server.url, "plain")
        codec = RegistryCodec(settings, RegistryClient(settings.registry, sleep=Sleeps()))
        sender = FakeSender()
        processor = BatchProcessor(settings, FakeEngine(), sender, registry=codec)
        framed = frame(schema_id, orjson.dumps({"id": "j", "source": "s", "text": "t"}))
        with pytest.raises(RegistryError, match="unavailable"):
            await processor.handle([record(feed("plain"), 0), record(framed, 1)])
        await codec.close()
        assert sender.sent == []

    with_server(body)


def test_registry_settings_say_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A framed output format without a URL, or a user without a password, stops start-up with the variable."""
    monkeypatch.setenv("MINNOW_REGISTRY__OUTPUT_FORMAT", "avro")
    with pytest.raises(ConfigError, match="output_format avro needs a registry: set MINNOW_REGISTRY__URL"):
        load_settings()
    monkeypatch.setenv("MINNOW_REGISTRY__URL", "http://127.0.0.1:1/apis/ccompat/v7")
    monkeypatch.setenv("MINNOW_REGISTRY__USERNAME", "u")
    with pytest.raises(ConfigError, match="set both MINNOW_REGISTRY__USERNAME and MINNOW_REGISTRY__PASSWORD"):
        load_settings()
    monkeypatch.setenv("MINNOW_REGISTRY__PASSWORD", "p")
    assert load_settings().registry.password == SecretStr("p")


def test_the_escalator_writes_settled_results_in_the_same_registered_format() -> None:
    """A settled escalation's sink record is framed with the sink's registered Avro schema, like the worker's,
    so one sink topic never mixes plain JSON and Avro; its labels stay plain JSON."""
    from pipeline.stream.deadletter import Provenance
    from pipeline.stream.escalator import EscalationHandler
    from pipeline.stream.worker import InputRecord
    from tests.escalation_support import escalation, feed_event
    from tests.unit.test_escalation_stream import FixedEscalator, as_bytes, settled

    async def body(server: RegistryServer) -> None:
        settings = _settings(server.url, "avro")
        codec = RegistryCodec(settings, RegistryClient(settings.registry, sleep=Sleeps()))
        handler = EscalationHandler(settings, FixedEscalator(settled), codec)  # type: ignore[arg-type]
        escalated, _ = escalation(feed_event("f-9", "Markets fell."), ["classify.low_confidence"])
        plan = await handler.plan(
            InputRecord(Provenance(f"{PREFIX}escalations", 0, 1), b"f-9", as_bytes(escalated), 0.0)
        )
        await codec.close()
        sink, label = plan.deliveries
        schema_id, payload = unframe(sink.value or b"")
        assert server.subjects[subject_for(f"{PREFIX}feeds.enriched")] == [schema_id]
        derived = json.loads(server.schemas[schema_id]["schema"])
        decoded = from_avro(
            Schema.parse(schema_id, "AVRO", server.schemas[schema_id]["schema"]).decode(payload), derived
        )
        assert decoded["id"] == "f-9" and decoded["decided_by"] == "large-model"
        assert orjson.loads(label.value or b"")["id"] == "f-9"

    with_server(body)
