"""Small helpers shared by the integration tests (the broker itself comes from conftest's fixtures)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import NewTopic

from pipeline.ops import devkafka
from pipeline.settings import KafkaSettings
from pipeline.stream import clients

Cluster = str | KafkaSettings
"""A plain broker's host:port, or the settings of a secured one: test clients come from the same factory."""


def as_kafka(cluster: Cluster) -> KafkaSettings:
    return cluster if isinstance(cluster, KafkaSettings) else KafkaSettings(bootstrap_servers=cluster)


async def create_topic(bootstrap: Cluster, topic: str, partitions: int) -> None:
    """Create one topic with a single replica: what a test needs before it produces."""
    admin = clients.admin(as_kafka(bootstrap))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


# The v2 record batch header as Kafka writes it to its log segments (and on the wire): baseOffset, batchLength,
# partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta, baseTimestamp, maxTimestamp, producerId,
# producerEpoch, baseSequence, recordCount.
_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
_LOG_OVERHEAD = 12  # baseOffset and batchLength precede the length they count
_TRANSACTIONAL = 0x10


@dataclass(frozen=True)
class LoggedBatch:
    """One record batch of a partition's log, as the broker stored it."""

    base_offset: int
    producer_id: int  # -1 for a producer that is neither idempotent nor transactional
    base_sequence: int
    transactional: bool


def logged_batches(bootstrap: str, topic: str) -> list[LoggedBatch] | None:
    """Every record batch in `topic`'s log segments on the local test broker, read from its data folder; None when
    `bootstrap` is not a local broker started from the default cache folder (its files are out of reach)."""
    port = int(bootstrap.rsplit(":", 1)[1])
    cache_dir = devkafka.default_cache_dir()
    data_dir: Path | None = None
    for state in cache_dir.glob("broker*.json"):
        info = devkafka.BrokerInfo.from_json(state.read_text())
        if info.port == port:
            data_dir = info.data_dir
    if data_dir is None:
        return None
    batches: list[LoggedBatch] = []
    for segment in sorted(data_dir.glob(f"{topic}-*/*.log")):
        data, at = segment.read_bytes(), 0
        while at + _BATCH_HEADER.size <= len(data):
            base, length, _, magic, _, attributes, *_, producer_id, _, sequence, _ = _BATCH_HEADER.unpack_from(data, at)
            if magic == 2:
                batches.append(LoggedBatch(base, producer_id, sequence, bool(attributes & _TRANSACTIONAL)))
            at += _LOG_OVERHEAD + length
    return batches
