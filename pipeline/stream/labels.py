"""The labels topic as training data: read it to its end offsets at start, keep the latest verdict per key, train."""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from pipeline.commands.labeled import read_labeled
from pipeline.commands.train import rows_from_verdicts, train_and_save
from pipeline.errors import ConfigError, StreamToolError
from pipeline.models import LabelRecord
from pipeline.review.verdicts import KeyedLabel, latest_verdicts
from pipeline.settings import Settings
from pipeline.stream.clients import partitions, started

log = logging.getLogger(__name__)

_POLL_MS = 500
READ_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LabelsRead:
    """What one pass over the labels topic found."""

    topic: str
    entries: list[KeyedLabel]
    unreadable: int

    @property
    def records(self) -> int:
        return len(self.entries) + self.unreadable


async def read_labels(bootstrap_servers: str, topic: str, *, timeout_s: float = READ_TIMEOUT_S) -> LabelsRead:
    """Every record from the beginning up to the end offsets taken at start; joins no group, commits nothing."""
    assigned = [TopicPartition(topic, number) for number in await partitions(bootstrap_servers, topic)]
    # "earliest" as well as the seek: with the default "latest", the reset that assign() starts can land after
    # seek_to_beginning and leave every partition at its end (seen with aiokafka 0.14).
    consumer = await started(
        AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        ),
        bootstrap_servers,
    )
    try:
        consumer.assign(assigned)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(assigned)
        await consumer.seek_to_beginning(*assigned)
        return await asyncio.wait_for(_read_to(consumer, topic, ends), timeout_s)
    except TimeoutError as exc:
        raise StreamToolError(f"reading {topic} to its end offsets took more than {timeout_s:.0f}s") from exc
    finally:
        await consumer.stop()


async def _read_to(consumer: AIOKafkaConsumer, topic: str, ends: dict[TopicPartition, int]) -> LabelsRead:
    entries: list[KeyedLabel] = []
    unreadable = 0
    left = {tp for tp, end in ends.items() if end > 0}
    for tp in list(left):
        if await consumer.position(tp) >= ends[tp]:  # compacted away or deleted up to the end
            left.discard(tp)
    while left:
        batches = await consumer.getmany(*left, timeout_ms=_POLL_MS)
        for tp, records in batches.items():
            for record in records:
                if record.offset >= ends[tp]:
                    break
                try:
                    value = None if record.value is None else LabelRecord.model_validate_json(record.value)
                except ValidationError as exc:
                    unreadable += 1
                    log.warning(
                        "%s partition %d offset %d is not a label record: %s", topic, tp.partition, record.offset, exc
                    )
                    continue
                key = record.key.decode(errors="replace") if record.key is not None else None
                entries.append(KeyedLabel(tp.partition, record.offset, record.timestamp, key, value))
        for tp in list(left):
            if await consumer.position(tp) >= ends[tp]:
                left.discard(tp)
    return LabelsRead(topic=topic, entries=entries, unreadable=unreadable)


def run_train(settings: Settings, bootstrap_servers: str, topic: str, data: Path | None, out: Path) -> int:
    """`minnow train --from-topic labels [--data more.jsonl]`: the latest classify verdicts, plus a file if given."""
    read = asyncio.run(read_labels(bootstrap_servers, topic))
    verdicts = list(latest_verdicts(read.entries).values())
    rows = rows_from_verdicts(verdicts)
    print(
        f"{topic}: {read.records} records, {len(verdicts)} latest verdicts, {len(rows)} for classification"
        + (f", {read.unreadable} unreadable (skipped)" if read.unreadable else ""),
        file=sys.stderr,
    )
    if not rows:
        raise ConfigError(
            f"the labels topic {topic} has no classification verdicts ({read.records} records read up to its end "
            "offsets); settle items with `minnow review` first, or train from a file with --data"
        )
    origin = f"topic {topic}"
    if data is not None:
        rows += read_labeled(data)
        origin += f" and {data}"
    # Verdicts are the escalated, hardest items: no zero-shot temperature is fitted to them (docs/distillation.md).
    return train_and_save(settings, rows, out, origin=origin, require_head=True, zero_shot_temperatures=False)
