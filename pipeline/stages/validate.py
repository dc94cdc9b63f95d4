"""Decode raw bytes into events; anything wrong becomes an ErrorRecord that says what and where."""

from __future__ import annotations

import orjson
from pydantic import ValidationError

from pipeline.errors import DecodeError, InputError, SchemaError
from pipeline.models import EVENT_ADAPTER, AnyEvent, ErrorRecord, guess_kind

DEFAULT_MAX_EVENT_BYTES = 1_048_576


def _schema_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_event(raw: bytes, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> AnyEvent:
    """Return the validated event, or raise an InputError subclass saying what is wrong."""
    if len(raw) > max_bytes:
        raise DecodeError(f"event is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson rejects invalid UTF-8 too; say which it is, since producers fix them differently
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise DecodeError(f"not valid UTF-8 at byte {uexc.start}") from exc
        raise DecodeError(f"not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise SchemaError(f"an event must be a JSON object, got {type(obj).__name__}")
    if "kind" not in obj:
        obj = {**obj, "kind": guess_kind(obj)}
    try:
        return EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise SchemaError(f"{obj.get('kind')} event does not match its schema: {_schema_message(exc)}") from exc


def decode_line(
    raw: bytes, line: int | None = None, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> AnyEvent | ErrorRecord:
    """An event, or an ErrorRecord carrying the line number and the event id when it could be read."""
    try:
        return parse_event(raw, max_bytes=max_bytes)
    except InputError as exc:
        return ErrorRecord(error=exc.code, message=str(exc), id=_best_effort_id(raw), line=line)


def _best_effort_id(raw: bytes) -> str | None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    value = obj.get("id") if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None
