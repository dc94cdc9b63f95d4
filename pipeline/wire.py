"""The Confluent wire format and its payloads (JSON Schema, Avro): bytes <-> JSON objects, with no registry I/O.

A record framed for a schema registry is the magic byte 0, the schema id as a 4-byte big-endian unsigned
integer, then the payload: UTF-8 JSON for a JSON Schema, Avro binary (no container, no schema) for Avro. The
registry client that fetches and registers schemas lives in the streaming layer (pipeline/stream/registry.py);
everything here is pure, so it is tested without a registry and imported by the core without Kafka or HTTP.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import fastavro
import orjson
from jsonschema import exceptions as jsonschema_errors
from jsonschema import validators

from pipeline.errors import RegistryPayloadError

MAGIC = 0
HEADER_BYTES = 5
_HEADER = struct.Struct(">bI")

SchemaType = Literal["JSON", "AVRO"]


def is_framed(raw: bytes) -> bool:
    """Whether the record starts with the wire format's magic byte (a JSON value never starts with byte 0)."""
    return raw[:1] == b"\x00"


def frame(schema_id: int, payload: bytes) -> bytes:
    """The wire format of one payload written with the schema `schema_id`."""
    if not 0 <= schema_id <= 0xFFFFFFFF:
        raise ValueError(f"schema id {schema_id} does not fit in 4 bytes")
    return _HEADER.pack(MAGIC, schema_id) + payload


def unframe(raw: bytes) -> tuple[int, bytes]:
    """(schema id, payload) of a framed record; RegistryPayloadError when it is not one."""
    if len(raw) < HEADER_BYTES:
        raise RegistryPayloadError(f"registry frame is {len(raw)} bytes, shorter than its {HEADER_BYTES}-byte header")
    if raw[0] != MAGIC:
        raise RegistryPayloadError(f"registry frame starts with byte {raw[0]}, not the magic byte {MAGIC}")
    _, schema_id = _HEADER.unpack_from(raw)
    return int(schema_id), raw[HEADER_BYTES:]


@dataclass(frozen=True)
class Schema:
    """One registered schema, parsed once: what decodes and encodes its payloads."""

    schema_id: int
    schema_type: SchemaType
    text: str
    _parsed: Any = field(repr=False, compare=False, default=None)

    @classmethod
    def parse(cls, schema_id: int, schema_type: str, text: str) -> Schema:
        """Parse a registry's schema text; a schema that cannot be used says so as RegistryPayloadError."""
        kind = schema_type.upper()
        if kind not in ("JSON", "AVRO"):
            raise RegistryPayloadError(f"schema {schema_id} is {kind}; Minnow reads JSON Schema and Avro")
        try:
            document = orjson.loads(text)
            if kind == "AVRO":
                parsed: Any = fastavro.parse_schema(document)
            else:
                validator_class = validators.validator_for(document)
                validator_class.check_schema(document)
                parsed = validator_class(document)
        except Exception as exc:  # fastavro and jsonschema raise many types for a bad schema
            raise RegistryPayloadError(f"schema {schema_id} ({kind}) cannot be parsed: {exc}") from exc
        return cls(schema_id, kind, text, parsed)  # type: ignore[arg-type]

    def decode(self, payload: bytes) -> Any:
        """The payload as a JSON value; RegistryPayloadError when its bytes do not match this schema."""
        if self.schema_type == "JSON":
            return self._decode_json(payload)
        return self._decode_avro(payload)

    def encode(self, value: Any) -> bytes:
        """A JSON value as this schema's payload (not framed); ValueError when it does not fit the schema."""
        if self.schema_type == "JSON":
            return orjson.dumps(value)
        out = io.BytesIO()
        fastavro.schemaless_writer(out, self._parsed, value)
        return out.getvalue()

    def _decode_json(self, payload: bytes) -> Any:
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise RegistryPayloadError(f"payload of JSON schema {self.schema_id} is not valid JSON: {exc}") from exc
        error = jsonschema_errors.best_match(self._parsed.iter_errors(value))
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path) or "(root)"
            raise RegistryPayloadError(
                f"payload does not match JSON schema {self.schema_id} at {where}: {error.message}"
            )
        return value

    def _decode_avro(self, payload: bytes) -> Any:
        buffer = io.BytesIO(payload)
        try:
            value = fastavro.schemaless_reader(buffer, self._parsed, None)
        except Exception as exc:  # EOFError, UnicodeDecodeError, IndexError (union branch), ValueError ...
            reason = str(exc) or type(exc).__name__
            raise RegistryPayloadError(f"payload does not decode with Avro schema {self.schema_id}: {reason}") from exc
        left = len(payload) - buffer.tell()
        if left:  # a reader stops where the schema ends: bytes after it mean the writer used another schema
            raise RegistryPayloadError(
                f"payload has {left} bytes left after decoding with Avro schema {self.schema_id}"
            )
        return jsonable(value)


def jsonable(value: Any) -> Any:
    """An Avro reader's value as JSON: logical types (timestamps, decimals, uuids) and bytes as strings."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value
