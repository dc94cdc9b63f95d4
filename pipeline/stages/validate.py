"""Decode raw bytes into events; anything wrong becomes an ErrorRecord that says what and where."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from pipeline.errors import DecodeError, InputError, SchemaError
from pipeline.models import EVENT_ADAPTER, FAMILIES, AnyEvent, ErrorRecord, guess_kind
from pipeline.stages.mapping import FieldMapping

DEFAULT_MAX_EVENT_BYTES = 1_048_576


def _schema_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_event(
    raw: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    mapping: FieldMapping | None = None,
    kind: str | None = None,
) -> AnyEvent:
    """Return the validated event, or raise an InputError subclass saying what is wrong.

    With a field mapping the producer's object is read through it (pipeline/stages/mapping.py). The event keeps
    the object as produced (`original`) when it was mapped or carries fields the contract does not know, so its
    result can carry them on. `kind` is what an event without one is (an input declared with a kind); without it
    the kind is guessed from the fields.
    """
    if len(raw) > max_bytes:
        raise DecodeError(f"event is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if raw[:1] == b"\x00":  # the wire format's magic byte: say what to configure, not just "bad JSON"
            raise DecodeError(
                "not valid JSON: the record looks framed for a schema registry (first byte 0); set "
                "MINNOW_REGISTRY__URL so the worker decodes it (docs/registry.md)"
            ) from exc
        # orjson rejects invalid UTF-8 too; say which it is, since producers fix them differently
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise DecodeError(f"not valid UTF-8 at byte {uexc.start}") from exc
        raise DecodeError(f"not valid JSON: {exc}") from exc
    return event_from_object(obj, mapping=mapping, kind=kind)


def event_from_object(obj: Any, *, mapping: FieldMapping | None = None, kind: str | None = None) -> AnyEvent:
    """The validated event for an already decoded JSON value (e.g. a registry-framed record's payload, decoded
    by its JSON Schema or Avro schema in the streaming layer); raises an InputError subclass like `parse_event`."""
    if not isinstance(obj, dict):
        raise SchemaError(f"an event must be a JSON object, got {type(obj).__name__}")
    produced = obj
    if mapping is not None:
        obj = mapping.apply(obj)
    elif "kind" not in obj:
        obj = {**obj, "kind": kind or guess_kind(obj)}
    try:
        event = EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        mapped = " (after mapping)" if mapping is not None else ""
        raise SchemaError(f"{obj.get('kind')} event{mapped} does not match its schema: {_schema_message(exc)}") from exc
    if mapping is not None or _has_unknown_fields(produced, event.kind):
        event.set_original(produced)
    return event


# Each family's contract field names, computed once: every event is checked against them.
_KNOWN = {
    kind: frozenset(info.alias or name for name, info in family.model_fields.items())
    for kind, family in FAMILIES.items()
}


def _has_unknown_fields(obj: dict[str, Any], kind: str) -> bool:
    return not _KNOWN[kind].issuperset(obj)


def decode_line(
    raw: bytes,
    line: int | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    mapping: FieldMapping | None = None,
) -> AnyEvent | ErrorRecord:
    """An event, or an ErrorRecord carrying the line number and the event id when it could be read."""
    try:
        return parse_event(raw, max_bytes=max_bytes, mapping=mapping)
    except InputError as exc:
        return ErrorRecord(error=exc.code, message=str(exc), id=best_effort_id(raw, mapping), line=line)


def best_effort_id(raw: bytes, mapping: FieldMapping | None = None) -> str | None:
    """The event's id when it can be read (through the mapping's `id` source, if any), to name the error record."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    value = mapping.id_of(obj) if mapping is not None else obj.get("id")
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
