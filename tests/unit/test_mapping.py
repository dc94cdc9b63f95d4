"""Field mappings: events of a producer's own shape read as Minnow's families, with the producer's event kept."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from pipeline.errors import ConfigError, MappingError, SchemaError
from pipeline.models import ErrorRecord, FeedEvent, IoTMessage
from pipeline.stages.mapping import FieldMapping, JsonPath, load_mapping
from pipeline.stages.validate import decode_line, parse_event

SOCIAL = FieldMapping.model_validate(
    {
        "kind": "feed",
        "fields": {
            "id": "$.uuid",
            "source": "twitter",
            "text": ["$.body.message", "$.body['alt text']"],
            "created_at": "$.ts",
            "lang": "$.meta.langs[0]",
        },
    }
)
POST: dict[str, Any] = {
    "uuid": 90210,
    "body": {"message": "Rates rose again, markets fell."},
    "ts": 1764806400,
    "meta": {"langs": ["en", "de"]},
    "user": {"handle": "@ana"},
}


def test_a_mapped_event_reads_every_field_from_its_path() -> None:
    """Paths, lists of paths, constants, list indexes; an integer id becomes text; epoch seconds become a time."""
    event = parse_event(orjson.dumps(POST), mapping=SOCIAL)
    assert isinstance(event, FeedEvent)
    assert (event.id, event.source, event.text, event.lang) == ("90210", "twitter", POST["body"]["message"], "en")
    assert event.created_at == datetime(2025, 12, 4, tzinfo=UTC)


def test_the_event_as_produced_travels_on_unchanged() -> None:
    """Fields the contract does not know (`user`) are not dropped: the event keeps the producer's object."""
    event = parse_event(orjson.dumps(POST), mapping=SOCIAL)
    assert event.original == POST


def test_the_first_present_path_wins() -> None:
    """A list of paths is tried in order; a null counts as missing."""
    post = {**POST, "body": {"message": None, "alt text": "the fallback"}}
    assert parse_event(orjson.dumps(post), mapping=SOCIAL).text == "the fallback"  # type: ignore[union-attr]


def test_a_missing_required_field_is_a_mapping_error_naming_field_and_path() -> None:
    """The record becomes one error record (a dead letter in the worker) saying which field and where."""
    post = {k: v for k, v in POST.items() if k != "body"}
    record = decode_line(orjson.dumps(post), 7, mapping=SOCIAL)
    assert isinstance(record, ErrorRecord)
    assert record.error == MappingError.code and record.line == 7 and record.id == "90210"
    assert record.message == "mapped field `text` has no value at $.body.message or $.body['alt text']"


def test_a_missing_optional_field_keeps_its_default() -> None:
    """`lang` is optional: an event without `meta` still maps."""
    post = {k: v for k, v in POST.items() if k != "meta"}
    event = parse_event(orjson.dumps(post), mapping=SOCIAL)
    assert isinstance(event, FeedEvent) and event.lang is None


def test_a_mapped_value_of_the_wrong_type_is_a_schema_error() -> None:
    """Mapping finds the value; the contract still judges it, and the message says it came through a mapping."""
    with pytest.raises(SchemaError, match=r"feed event \(after mapping\) does not match its schema: feed.created_at"):
        parse_event(orjson.dumps({**POST, "ts": "yesterday"}), mapping=SOCIAL)


def test_iot_readings_map_from_a_nested_object_and_timestamps_in_milliseconds() -> None:
    """A device's sensors object is its readings; epoch milliseconds are read as milliseconds."""
    mapping = FieldMapping.model_validate(
        {
            "kind": "iot",
            "fields": {"id": "$.msg_id", "device_id": "$.meta.device", "ts": "$.t", "readings": "$.sensors"},
        }
    )
    raw = {"msg_id": "m-1", "meta": {"device": "pump-7"}, "t": 1764806400000, "sensors": {"temp_c": 71.5}}
    event = parse_event(orjson.dumps(raw), mapping=mapping)
    assert isinstance(event, IoTMessage)
    assert (event.device_id, event.readings, event.ts) == (
        "pump-7",
        {"temp_c": 71.5},
        datetime(2025, 12, 4, tzinfo=UTC),
    )


def test_an_unmapped_event_with_unknown_fields_keeps_them_too() -> None:
    """Without a mapping, fields outside the contract are kept as well; a contract-shaped event keeps nothing."""
    shaped = {"kind": "feed", "id": "p1", "source": "s", "text": "hi", "created_at": "2026-01-01T00:00:00Z"}
    assert parse_event(orjson.dumps(shaped)).original is None
    extended = {**shaped, "campaign": "winter"}
    assert parse_event(orjson.dumps(extended)).original == extended


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$", ()),
        ("$.a.b", ("a", "b")),
        ("$.items[0].name", ("items", 0, "name")),
        ("$['key with.dots'][-1]", ("key with.dots", -1)),
        ('$["it\'s"]', ("it's",)),
    ],
)
def test_paths_compile_to_keys_and_indexes(path: str, steps: tuple[str | int, ...]) -> None:
    """The JSONPath subset: .key, ['key'], ["key"], [index] (negative from the end)."""
    assert JsonPath(path).steps == steps


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"id": "$.id", "source": "x", "text": "$.t"}, "created_at not mapped"),
        ({"id": "$.id", "source": "x", "text": "$.t", "created_at": "$.c", "body": "$.b"}, "no field body"),
        ({"id": "$.id", "source": "x", "text": "$.t..x", "created_at": "$.c"}, "cannot read path"),
    ],
)
def test_a_mapping_that_cannot_work_is_refused_when_loaded(fields: dict[str, Any], message: str) -> None:
    """Unknown contract fields, unmapped required ones and unreadable paths fail at start-up, not per event."""
    with pytest.raises(ValidationError, match=message):
        FieldMapping.model_validate({"kind": "feed", "fields": fields})


def test_a_mapping_file_error_names_the_file(tmp_path: Path) -> None:
    """`minnow infer --map` and the worker report a bad file in one line that says where."""
    path = tmp_path / "social.yaml"
    path.write_text("kind: feed\nfields:\n  id: $.uuid\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"social.yaml: map every required feed field: created_at, source, text not mapped"
    ):
        load_mapping(path)


def test_the_documented_example_loads() -> None:
    """docs/mapping.md's example file is a working mapping."""
    mapping = load_mapping(Path(__file__).parents[2] / "docs" / "examples" / "social-posts.map.yaml")
    assert mapping.kind == "feed" and "text" in mapping.fields
