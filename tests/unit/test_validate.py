"""Raw bytes become events, or error records that say what is wrong — never an exception."""

from __future__ import annotations

import orjson
import pytest

from pipeline.models import Conversation, ErrorRecord, FeedEvent, IoTMessage, TranscriptSegment
from pipeline.stages.validate import decode_line


def _raw(obj: object) -> bytes:
    return orjson.dumps(obj)


FEED = {"id": "f1", "source": "s", "text": "hi", "created_at": "2026-01-01T00:00:00Z"}
SEGMENT = {"id": "t1", "conversation_id": "c", "seq": 0, "speaker": "a", "text": "hello"}
IOT = {"id": "i1", "device_id": "d", "ts": "2026-01-01T00:00:00Z", "readings": {"t": 1.5}}


@pytest.mark.parametrize(
    ("obj", "cls"),
    [
        (FEED, FeedEvent),
        (SEGMENT, TranscriptSegment),
        (IOT, IoTMessage),
        ({"id": "c", "segments": [SEGMENT]}, Conversation),
    ],
)
def test_kind_is_inferred_from_fields_when_absent(obj: dict[str, object], cls: type) -> None:
    assert isinstance(decode_line(_raw(obj)), cls)


def test_explicit_kind_wins() -> None:
    event = decode_line(_raw({**FEED, "kind": "feed"}))
    assert isinstance(event, FeedEvent) and event.id == "f1"


@pytest.mark.parametrize(
    ("raw", "code", "fragment"),
    [
        (b"not json", "decode_error", "not valid JSON"),
        (b'{"id": "x", "text": "\xff\xfe"}', "decode_error", "not valid UTF-8"),
        (b"[1, 2]", "schema_error", "must be a JSON object"),
        (_raw({**FEED, "text": 5}), "schema_error", "text"),
        (_raw({**IOT, "readings": {"t": "hot"}}), "schema_error", "readings.t"),
        (_raw({**FEED, "id": ""}), "schema_error", "id"),
    ],
)
def test_bad_input_becomes_an_error_record(raw: bytes, code: str, fragment: str) -> None:
    record = decode_line(raw, line=7)
    assert isinstance(record, ErrorRecord)
    assert record.error == code
    assert fragment in record.message
    assert record.line == 7


def test_oversize_event_is_rejected_with_its_size() -> None:
    raw = _raw({**FEED, "text": "x" * 2000})
    record = decode_line(raw, max_bytes=1000)
    assert isinstance(record, ErrorRecord)
    assert record.error == "decode_error" and "over the 1000-byte limit" in record.message


def test_error_record_keeps_the_id_when_readable() -> None:
    record = decode_line(_raw({**FEED, "created_at": "soon"}))
    assert isinstance(record, ErrorRecord) and record.id == "f1"
