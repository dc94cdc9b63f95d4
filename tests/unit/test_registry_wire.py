"""The Confluent wire format and its payloads (pipeline/wire.py), and the sinks' derived Avro schemas (avro.py)."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from pydantic import BaseModel

from pipeline.avro import JSON_TEXT, avro_schema, from_avro, namespace_for, to_avro
from pipeline.errors import DecodeError, RegistryPayloadError
from pipeline.models import FeedEvent, Result
from pipeline.stages.validate import event_from_object, parse_event
from pipeline.stream import names
from pipeline.topic_specs import SPEC_DIR
from pipeline.wire import HEADER_BYTES, Schema, frame, is_framed, unframe
from tests.unit.test_contracts import model_strategy

FEED_JSON_SCHEMA = json.dumps(
    {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"id": {"type": "string"}, "text": {"type": "string"}, "source": {"type": "string"}},
        "required": ["id", "text"],
    }
)
# What a producer's Avro serializer might use for feed posts: created_at as a timestamp-millis logical type.
FEED_AVRO_SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Post",
        "namespace": "com.example",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "source", "type": "string"},
            {"name": "text", "type": "string"},
            {"name": "created_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "lang", "type": ["null", "string"], "default": None},
        ],
    }
)


def test_a_frame_is_magic_zero_then_the_id_big_endian_then_the_payload() -> None:
    """The byte layout Confluent documents: byte 0 is 0, bytes 1-4 the schema id (big-endian), then the data."""
    assert frame(1, b"{}") == b"\x00\x00\x00\x00\x01{}"
    assert frame(0x01020304, b"x") == b"\x00\x01\x02\x03\x04x"
    assert unframe(b"\x00\x01\x02\x03\x04x") == (0x01020304, b"x")
    assert unframe(frame(0xFFFFFFFF, b"")) == (0xFFFFFFFF, b"")
    assert is_framed(frame(7, b"")) and not is_framed(b'{"id": "a"}') and not is_framed(b"")


@pytest.mark.parametrize("raw", [b"", b"\x00", b"\x00\x00\x00\x01"])
def test_a_frame_shorter_than_its_header_is_a_payload_error(raw: bytes) -> None:
    """Fewer than 5 bytes cannot carry a schema id: the error says how short it is."""
    with pytest.raises(RegistryPayloadError, match=f"{len(raw)} bytes, shorter than its {HEADER_BYTES}-byte header"):
        unframe(raw)


def test_a_frame_with_another_magic_byte_is_refused() -> None:
    """Only magic byte 0 is the Confluent format; byte 1 (e.g. another framing) is not read as a schema id."""
    with pytest.raises(RegistryPayloadError, match="byte 1, not the magic byte 0"):
        unframe(b"\x01\x00\x00\x00\x01{}")


def test_an_id_over_four_bytes_cannot_be_framed() -> None:
    """Schema ids are unsigned 32-bit: a larger one is a bug, not a silently wrapped id."""
    with pytest.raises(ValueError, match="does not fit"):
        frame(1 << 32, b"")


def test_json_schema_payloads_round_trip_and_are_validated() -> None:
    """A JSON Schema payload is UTF-8 JSON; decoding validates it against the writer's schema."""
    schema = Schema.parse(3, "JSON", FEED_JSON_SCHEMA)
    post = {"id": "p-1", "text": "Stocks rallied.", "source": "wire"}
    assert schema.decode(schema.encode(post)) == post
    with pytest.raises(RegistryPayloadError, match="does not match JSON schema 3 at id: 5 is not of type 'string'"):
        schema.decode(b'{"id": 5, "text": "x"}')
    with pytest.raises(RegistryPayloadError, match="payload of JSON schema 3 is not valid JSON"):
        schema.decode(b'{"id": "p-1", "te')


def test_avro_payloads_use_the_binary_encoding_without_a_container() -> None:
    """The payload is the bare Avro binary encoding: a string is its zig-zag length then its bytes."""
    schema = Schema.parse(
        9, "AVRO", json.dumps({"type": "record", "name": "R", "fields": [{"name": "id", "type": "string"}]})
    )
    assert schema.encode({"id": "a"}) == b"\x02a"
    assert schema.decode(b"\x06abc") == {"id": "abc"}


def test_an_avro_event_decodes_to_the_contract_with_logical_types_as_json() -> None:
    """A producer's Avro record (timestamp-millis, a null union) becomes a valid FeedEvent; the timestamp is read
    as an ISO 8601 string, which the contract parses."""
    schema = Schema.parse(4, "AVRO", FEED_AVRO_SCHEMA)
    out = io.BytesIO()
    datum = {"id": "p-2", "source": "wire", "text": "Rain.", "created_at": 1_764_000_000_000, "lang": "en"}
    fastavro.schemaless_writer(out, fastavro.parse_schema(json.loads(FEED_AVRO_SCHEMA)), datum)
    value = schema.decode(out.getvalue())
    assert value["created_at"] == "2025-11-24T16:00:00+00:00"
    event = event_from_object(value)
    assert isinstance(event, FeedEvent) and event.id == "p-2" and event.text == "Rain."


def test_avro_bytes_that_do_not_fit_the_schema_are_payload_errors() -> None:
    """A truncated payload, garbage, and bytes left over after the record all fail with the schema's id."""
    schema = Schema.parse(4, "AVRO", FEED_AVRO_SCHEMA)
    good = schema.encode({"id": "p", "source": "s", "text": "t", "created_at": 0, "lang": None})
    with pytest.raises(RegistryPayloadError, match="does not decode with Avro schema 4"):
        schema.decode(good[:-3])
    with pytest.raises(RegistryPayloadError, match="does not decode with Avro schema 4"):
        schema.decode(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")
    with pytest.raises(RegistryPayloadError, match="2 bytes left after decoding with Avro schema 4"):
        schema.decode(good + b"\x00\x00")


def test_a_schema_of_another_type_or_unparsable_is_refused() -> None:
    """Protobuf is not read, and a broken schema text says so instead of failing later."""
    with pytest.raises(RegistryPayloadError, match="schema 5 is PROTOBUF; Minnow reads JSON Schema and Avro"):
        Schema.parse(5, "PROTOBUF", 'syntax = "proto3";')
    with pytest.raises(RegistryPayloadError, match=r"schema 6 \(AVRO\) cannot be parsed"):
        Schema.parse(6, "AVRO", '{"type": "record"}')


def test_a_framed_record_without_a_registry_says_what_to_configure() -> None:
    """Without a registry a framed record is still a dead letter, but its reason names MINNOW_REGISTRY__URL."""
    with pytest.raises(DecodeError, match=r"framed for a schema registry .* MINNOW_REGISTRY__URL"):
        parse_event(frame(200, b'{"id": "a", "text": "b"}'))


def _sink_schemas() -> list[tuple[str, dict[str, Any]]]:
    topics = sorted(set(names.SINK_TOPICS.values()))
    return [(topic, json.loads((SPEC_DIR / "schemas" / f"{topic}.json").read_text())) for topic in topics]


@pytest.mark.parametrize(("topic", "document"), _sink_schemas(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_sink_result_round_trips_through_its_derived_avro_schema(topic: str, document: dict[str, Any]) -> None:
    """For generated Results, the JSON written by the codec goes through the sink's derived Avro schema (written
    and read with fastavro) and comes back equal, free-form fields (`original`) included as JSON text."""
    derived = avro_schema(document, namespace=namespace_for(topic))
    schema = Schema.parse(1, "AVRO", json.dumps(derived))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(model_strategy(Result))
    def check(result: BaseModel) -> None:
        value = result.model_dump(mode="json")
        decoded = from_avro(schema.decode(schema.encode(to_avro(value, derived))), derived)
        assert orjson.loads(orjson.dumps(decoded)) == orjson.loads(orjson.dumps(value))
        assert Result.model_validate(decoded) == result

    check()


def test_the_derived_schema_maps_json_schema_shapes_to_avro_types() -> None:
    """Nullable fields are ["null", X] with default null, maps stay maps, enums are strings, `$defs` records are
    defined once and then referenced by name, and a free-form object is JSON text."""
    derived = avro_schema(json.loads((SPEC_DIR / "schemas" / "feeds.enriched.json").read_text()), namespace="m.f")
    fields = {entry["name"]: entry for entry in derived["fields"]}
    assert derived["name"] == "Result" and derived["namespace"] == "m.f"
    assert fields["kind"]["type"] == "string"
    assert fields["classification"]["type"][0] == "null" and fields["classification"]["default"] is None
    assert fields["classification"]["type"][1]["name"] == "Classification"
    classification = {entry["name"]: entry["type"] for entry in fields["classification"]["type"][1]["fields"]}
    assert classification["scores"] == {"type": "map", "values": "double"}
    assert classification["reasons"] == {"type": "array", "items": "string"}
    assert fields["original"]["type"] == ["null", {"type": "string", JSON_TEXT: True}]
    assert fastavro.parse_schema(derived)


def test_a_derived_schema_handed_back_without_nested_namespaces_still_reads_back() -> None:
    """Registries (Apicurio) return Avro schemas in a canonical form where nested records inherit the namespace and
    references may be short names; reading free-form fields back as JSON must not depend on the exact text."""
    derived = avro_schema(json.loads((SPEC_DIR / "schemas" / "feeds.enriched.json").read_text()), namespace="m.f")
    text = json.dumps(derived).replace(', "namespace": "m.f"', "").replace('"m.f.', '"')
    canonical = {**json.loads(text), "namespace": "m.f"}
    schema = Schema.parse(2, "AVRO", json.dumps(canonical))
    value = {**_a_result().model_dump(mode="json"), "original": {"uuid": "u-1", "body": {"n": [1, None]}}}
    assert from_avro(schema.decode(schema.encode(to_avro(value, canonical))), canonical) == value


def _a_result() -> Result:
    return Result.model_validate(
        {
            "id": "p-1",
            "kind": "feed",
            "model": {"name": "mini", "version": "1", "quantization": "int8"},
            "input": {"tokens": 3, "chunks": 1, "truncated": False},
            "route": "sink",
        }
    )
