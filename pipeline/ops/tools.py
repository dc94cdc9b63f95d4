"""Tools for people at a terminal: `minnow produce` sends a JSON-lines file to a topic, `minnow tail` prints one."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.errors import DeliveryError
from pipeline.jsonl import numbered_lines, open_input, progress
from pipeline.models import FAMILIES
from pipeline.settings import KafkaSettings, Settings, TopicsSettings
from pipeline.stream import clients
from pipeline.stream.clients import KafkaRecord, partitions, started

# The fields the event families key by (`key_field` in pipeline/models.py), the event id last: outputs and
# hand-produced inputs land on the same partitions (a line that is no valid event is sent all the same).
DEFAULT_KEY_FIELDS = (*dict.fromkeys(f.key_field for f in FAMILIES.values() if f.key_field != "id"), "id")
# Acknowledgements awaited at once; bounds memory on large files while keeping the producer's batches full.
_MAX_UNACKED = 10_000
_POLL_MS = 500


@dataclass(frozen=True)
class ProduceReport:
    topic: str
    sent: int
    invalid_sent: int
    invalid_skipped: int

    def summary(self) -> str:
        text = f"produced {self.sent} records to {self.topic}"
        if self.invalid_sent:
            text += f" ({self.invalid_sent} not valid JSON, sent as raw bytes)"
        if self.invalid_skipped:
            text += f" ({self.invalid_skipped} not valid JSON, skipped)"
        return text


def resolve_topic(name: str, settings: Settings, *, raw: bool = False) -> str:
    """A logical name (feeds.in) is its configured topic (MINNOW_TOPICS__*, else the prefix + name); another name
    gets the prefix unless it has it already; `raw` keeps the name as given."""
    if raw:
        return name
    if name.replace(".", "_") in TopicsSettings.model_fields:
        return settings.topic(name)
    prefix = settings.kafka.topic_prefix
    return name if not prefix or name.startswith(prefix) else f"{prefix}{name}"


def key_for(value: object, key_field: str | None = None) -> bytes | None:
    """The record key of a decoded line: `key_field`, else the first of device_id, conversation_id, id."""
    if not isinstance(value, dict):
        return None
    for name in (key_field,) if key_field else DEFAULT_KEY_FIELDS:
        found = value.get(name)
        if found is None:
            continue
        return found.encode() if isinstance(found, str) else orjson.dumps(found)
    return None


@dataclass(frozen=True)
class _Line:
    number: int
    key: bytes | None
    value: bytes
    valid: bool


def _lines(stream: IO[bytes], key_field: str | None) -> Iterator[_Line]:
    for number, raw in numbered_lines(stream):
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            yield _Line(number, None, raw, valid=False)
            continue
        # The original bytes, not a re-encoding: what the file says is what the worker receives.
        yield _Line(number, key_for(decoded, key_field), raw, valid=True)


async def produce(
    kafka: KafkaSettings,
    topic: str,
    path: str | None,
    *,
    key_field: str | None = None,
    skip_invalid: bool = False,
    show_progress: bool = True,
) -> ProduceReport:
    """Send one record per non-blank line of `path` ('-' or None: stdin) and wait until every one is acknowledged.

    Lines that are not JSON are sent as they are, without a key, so the dead-letter path can be exercised;
    `skip_invalid` drops them instead.
    """
    await partitions(kafka, topic)
    producer = await started(clients.producer(kafka), kafka)
    sent = invalid_sent = invalid_skipped = 0
    pending: list[tuple[int, asyncio.Future[Any]]] = []
    try:
        with open_input(path) as (stream, size), progress(size, f"produce {topic}", show_progress) as bar:
            for line in _lines(stream, key_field):
                bar.update(len(line.value) + 1)
                if not line.valid and skip_invalid:
                    invalid_skipped += 1
                    continue
                pending.append((line.number, await _send(producer, topic, line)))
                sent += 1
                if not line.valid:
                    invalid_sent += 1
                if len(pending) >= _MAX_UNACKED:
                    await _acknowledged(pending, topic)
            await _acknowledged(pending, topic)
    finally:
        await producer.stop()
    return ProduceReport(topic=topic, sent=sent, invalid_sent=invalid_sent, invalid_skipped=invalid_skipped)


async def _send(producer: AIOKafkaProducer, topic: str, line: _Line) -> asyncio.Future[Any]:
    try:
        future: asyncio.Future[Any] = await producer.send(topic, line.value, key=line.key)
    except KafkaError as exc:  # e.g. a line larger than the producer's max_request_size
        raise DeliveryError(f"line {line.number} was not sent to {topic}: {type(exc).__name__}: {exc}") from exc
    return future


async def _acknowledged(pending: list[tuple[int, asyncio.Future[Any]]], topic: str) -> None:
    results = await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
    for (number, _), result in zip(pending, results, strict=True):
        if isinstance(result, BaseException):
            raise DeliveryError(
                f"line {number} was not acknowledged by {topic}: {type(result).__name__}: {result}"
            ) from result
    pending.clear()


def _text(data: bytes) -> str:
    """UTF-8 text when it is, else the bytes' repr, so nothing is hidden or mangled on screen."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        return repr(data)


def record_as_json(record: KafkaRecord) -> dict[str, Any]:
    """One record as a JSON object; a value that is not JSON appears as `value_bytes`, the repr of its bytes."""
    out: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": None if record.key is None else _text(record.key),
        # A repeated header keeps its last value here; the pretty form lists every one.
        "headers": {name: _text(value) for name, value in record.headers},
    }
    if record.value is None:
        out["value"] = None  # a tombstone
        return out
    try:
        out["value"] = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        out["value_bytes"] = repr(record.value)
    return out


def format_record(record: KafkaRecord) -> str:
    """A heading line (where, when, key), one line per header, then the value: indented JSON or repr(bytes)."""
    when = (
        datetime.fromtimestamp(record.timestamp / 1000, tz=UTC).isoformat(timespec="milliseconds")
        if record.timestamp >= 0
        else "no timestamp"
    )
    key = "none" if record.key is None else repr(_text(record.key))
    lines = [f"--- {record.topic} partition {record.partition} offset {record.offset}  {when}  key {key}"]
    lines += [f"    {name}: {_text(value)}" for name, value in record.headers]
    if record.value is None:
        lines.append("(tombstone: no value)")
    else:
        try:
            lines.append(orjson.dumps(orjson.loads(record.value), option=orjson.OPT_INDENT_2).decode())
        except orjson.JSONDecodeError:
            lines.append(repr(record.value))
    return "\n".join(lines)


async def tail(
    kafka: KafkaSettings,
    topic: str,
    out: TextIO,
    *,
    from_beginning: bool = False,
    max_records: int | None = None,
    timeout_s: float | None = None,
    as_json: bool = False,
) -> int:
    """Print records of every partition of `topic` as they arrive; returns how many were printed.

    Starts at the end (only new records) unless `from_beginning`; stops after `max_records` or `timeout_s`
    seconds, else runs until cancelled (Ctrl-C). Joins no consumer group and commits nothing.
    """
    assigned = [TopicPartition(topic, number) for number in await partitions(kafka, topic)]
    consumer = await started(clients.consumer(kafka, group_id=None, enable_auto_commit=False), kafka)
    try:
        consumer.assign(assigned)
        await (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*assigned)
        for tp in assigned:
            # Resolve the start now, so "from the end" means from this moment, not from the first fetch.
            await consumer.position(tp)
        return await _print_records(consumer, out, max_records, timeout_s, as_json)
    finally:
        await consumer.stop()


async def _print_records(
    consumer: AIOKafkaConsumer, out: TextIO, max_records: int | None, timeout_s: float | None, as_json: bool
) -> int:
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    printed = 0
    while max_records is None or printed < max_records:
        wait_ms = _POLL_MS
        if deadline is not None:
            left = deadline - loop.time()
            if left <= 0:
                break
            wait_ms = max(1, min(wait_ms, int(left * 1000)))
        room = None if max_records is None else max_records - printed
        batches = await consumer.getmany(timeout_ms=wait_ms, max_records=room)
        for records in batches.values():
            for record in records:
                out.write((orjson.dumps(record_as_json(record)).decode() if as_json else format_record(record)) + "\n")
                printed += 1
        out.flush()
    return printed


def run_produce(
    kafka: KafkaSettings,
    topic: str,
    path: str | None,
    *,
    key_field: str | None = None,
    skip_invalid: bool = False,
) -> int:
    report = asyncio.run(
        produce(
            kafka,
            topic,
            path,
            key_field=key_field,
            skip_invalid=skip_invalid,
            # tqdm's carriage-return redraws would litter a log file or CI output; a terminal gets the bar.
            show_progress=sys.stderr.isatty(),
        )
    )
    print(report.summary())
    return 0


def run_tail(
    kafka: KafkaSettings,
    topic: str,
    *,
    from_beginning: bool = False,
    max_records: int | None = None,
    timeout_s: float | None = None,
    as_json: bool = False,
) -> int:
    asyncio.run(
        tail(
            kafka,
            topic,
            sys.stdout,
            from_beginning=from_beginning,
            max_records=max_records,
            timeout_s=timeout_s,
            as_json=as_json,
        )
    )
    return 0
