"""The labels topic as training data: read it to its end offsets at start (`minnow train --from-topic`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from pipeline.errors import StreamToolError
from pipeline.logs import event_fields, without_input
from pipeline.models import LabelRecord
from pipeline.review.verdicts import KeyedLabel
from pipeline.settings import KafkaSettings
from pipeline.stream import clients
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


async def read_labels(kafka: KafkaSettings, topic: str, *, timeout_s: float = READ_TIMEOUT_S) -> LabelsRead:
    """Every record from the beginning up to the end offsets taken at start; joins no group, commits nothing."""
    assigned = [TopicPartition(topic, number) for number in await partitions(kafka, topic)]
    # "earliest" as well as the seek: with the default "latest", the reset that assign() starts can land after
    # seek_to_beginning and leave every partition at its end (seen with aiokafka 0.14).
    consumer = await started(
        clients.consumer(kafka, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"), kafka
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
                        "%s partition %d offset %d is not a label record: %s",
                        topic,
                        tp.partition,
                        record.offset,
                        without_input(exc),
                        extra=event_fields(None, topic, tp.partition, record.offset),
                    )
                    continue
                key = record.key.decode(errors="replace") if record.key is not None else None
                entries.append(KeyedLabel(tp.partition, record.offset, record.timestamp, key, value))
        for tp in list(left):
            if await consumer.position(tp) >= ends[tp]:
                left.discard(tp)
    return LabelsRead(topic=topic, entries=entries, unreadable=unreadable)
