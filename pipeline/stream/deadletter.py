"""Dead-letter records: the original bytes untouched, with headers that say where they came from and why."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.stream import names

Headers = tuple[tuple[str, bytes], ...]

# Kafka headers travel with every copy of the record; a schema error can name many fields, so the text is capped.
MAX_MESSAGE_CHARS = 2000


@dataclass(frozen=True)
class Provenance:
    """Where an input record was read: the coordinates a dead letter must carry back to its source."""

    topic: str
    partition: int
    offset: int
    headers: Headers = ()


def _header(headers: Headers, name: str) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _attempt(headers: Headers) -> int:
    """1 for a record seen for the first time; one more than the last attempt for a re-driven dead letter."""
    raw = _header(headers, names.DLQ_ATTEMPT)
    try:
        previous = int(raw.decode("ascii")) if raw is not None else 0
    except (UnicodeDecodeError, ValueError):
        previous = 0
    return max(previous, 0) + 1


def dead_letter_headers(source: Provenance, *, error: str, message: str, now: datetime | None = None) -> Headers:
    """The dead-letter headers for one failed input record.

    A record re-driven from the dead-letter topic keeps its first-seen time and counts one more attempt, so a
    poison record that keeps coming back is visible as such.
    """
    first_seen = _header(source.headers, names.DLQ_FIRST_SEEN)
    if first_seen is None:
        first_seen = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").encode()
    text = message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"
    return (
        (names.DLQ_SOURCE_TOPIC, source.topic.encode()),
        (names.DLQ_SOURCE_PARTITION, str(source.partition).encode()),
        (names.DLQ_SOURCE_OFFSET, str(source.offset).encode()),
        (names.DLQ_ERROR_CLASS, error.encode()),
        (names.DLQ_ERROR_MESSAGE, text.encode()),
        (names.DLQ_FIRST_SEEN, first_seen),
        (names.DLQ_ATTEMPT, str(_attempt(source.headers)).encode()),
        *original_headers(source.headers),
    )


def original_headers(headers: Headers) -> Headers:
    """The input record's own headers for its dead letter, renamed under `minnow.original.`: Minnow's headers are
    only ever written by Minnow. Already-renamed ones (a re-driven dead letter failing again) stay as they are;
    other `minnow.*` headers are Minnow's from an earlier dead letter and are written afresh, not copied."""
    kept: list[tuple[str, bytes]] = []
    for name, value in headers:
        if name.startswith(names.ORIGINAL_HEADER_PREFIX):
            kept.append((name, value))
        elif not name.startswith("minnow."):
            kept.append((names.ORIGINAL_HEADER_PREFIX + name, value))
    return tuple(kept)


def normalize_headers(headers: Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None) -> Headers:
    """Kafka clients hand headers over as a list, a tuple or a mapping; values may be null."""
    if headers is None:
        return ()
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((str(key), value if value is not None else b"") for key, value in pairs)
