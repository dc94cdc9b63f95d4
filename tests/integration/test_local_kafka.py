"""The real broker keeps keyed order, group offsets and transaction boundaries that the stream layer relies on."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.ops import devkafka
from tests.integration.helpers import create_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

KEYS = [f"key-{index}" for index in range(10)]
MESSAGES_PER_KEY = 10


async def _drain(consumer: AIOKafkaConsumer, expected: int, timeout_s: float = 60.0) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < expected and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=500)
        for batch in batches.values():
            records.extend(batch)
    return records


async def _keyed_round_trip(bootstrap: str, topic: str, group: str) -> None:
    await create_topic(bootstrap, topic, partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    partition_of_key: dict[str, int] = {}
    try:
        for sequence in range(MESSAGES_PER_KEY):
            for key in KEYS:
                sent = await producer.send_and_wait(topic, f"{key}:{sequence}".encode(), key=key.encode())
                partition_of_key.setdefault(key, sent.partition)
                assert sent.partition == partition_of_key[key], "one key must always land in one partition"
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        records = await _drain(consumer, expected=len(KEYS) * MESSAGES_PER_KEY)
        await consumer.commit()
        partitions = [TopicPartition(topic, partition) for partition in range(3)]
        end_offsets = await consumer.end_offsets(partitions)
        committed = {tp: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()

    assert len(records) == 100
    sequences_by_key: dict[str, list[int]] = defaultdict(list)
    counts_by_partition: dict[int, int] = defaultdict(int)
    for record in records:
        assert record.key is not None and record.value is not None
        key, sequence = record.value.decode().split(":")
        assert record.key.decode() == key
        assert record.partition == partition_of_key[key]
        sequences_by_key[key].append(int(sequence))
        counts_by_partition[record.partition] += 1
    assert sequences_by_key == {key: list(range(MESSAGES_PER_KEY)) for key in KEYS}
    assert len(set(partition_of_key.values())) > 1, "ten keys over three partitions should use more than one"
    # The committed position of each partition is its end: the next offset to read, not the last one read.
    assert committed == {tp: counts_by_partition[tp.partition] for tp in partitions}
    assert committed == end_offsets

    # A new admin client, not the consumer's cache, reads the offsets the broker stored for the group.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        stored = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    assert {tp: meta.offset for tp, meta in stored.items() if meta.offset >= 0} == {
        tp: offset for tp, offset in committed.items() if offset > 0
    }


def test_keyed_messages_keep_order_and_group_offsets_are_committed(
    kafka_bootstrap: str, random_name: Callable[[str], str]
) -> None:
    """100 keyed records over 3 partitions come back in per-key order; the group's commit is the end offset."""
    asyncio.run(_keyed_round_trip(kafka_bootstrap, random_name("keyed"), random_name("group")))


async def _transactions(bootstrap: str, topic: str, transactional_id: str) -> tuple[list[str], list[str]]:
    await create_topic(bootstrap, topic, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id)
    await producer.start()
    try:
        async with producer.transaction():
            for index in range(3):
                await producer.send(topic, f"committed-{index}".encode())
        await producer.begin_transaction()
        for index in range(3):
            await producer.send(topic, f"aborted-{index}".encode())
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topic, b"committed-3")
    finally:
        await producer.stop()

    seen: list[list[str]] = []
    for isolation in ("read_committed", "read_uncommitted"):
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, isolation_level=isolation, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            # Transaction markers take offsets too, so read until the end offset, not until N records.
            tp = TopicPartition(topic, 0)
            end = (await consumer.end_offsets([tp]))[tp]
            records: list[ConsumerRecord] = []
            deadline = time.monotonic() + 30
            while await consumer.position(tp) < end and time.monotonic() < deadline:
                batches = await consumer.getmany(tp, timeout_ms=500)
                records.extend(batches.get(tp, []))
        finally:
            await consumer.stop()
        seen.append([record.value.decode() for record in records if record.value is not None])
    return seen[0], seen[1]


def test_read_committed_consumer_sees_only_committed_transactions(
    kafka_bootstrap: str, random_name: Callable[[str], str]
) -> None:
    """An aborted transaction's records reach the log but a read_committed consumer never returns them."""
    committed, everything = asyncio.run(_transactions(kafka_bootstrap, random_name("txn"), random_name("producer")))
    assert committed == ["committed-0", "committed-1", "committed-2", "committed-3"]
    assert everything == [
        "committed-0",
        "committed-1",
        "committed-2",
        "aborted-0",
        "aborted-1",
        "aborted-2",
        "committed-3",
    ]


@pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("mvn") is None,
    reason="the local broker needs java and mvn on PATH (docs/local-kafka.md)",
)
def test_local_broker_starts_once_and_stop_leaves_no_process(tmp_path: Path) -> None:
    """start() is idempotent and reports a ready broker; stop() ends the JVM and forgets it."""
    shared = devkafka.default_cache_dir()
    # Reuse the jars already resolved for the session instead of downloading them into tmp_path again.
    (tmp_path / "lib").symlink_to(devkafka.resolve(shared), target_is_directory=True)
    first = devkafka.start(tmp_path)
    try:
        again = devkafka.start(tmp_path)
        assert again == first
        assert devkafka.status(tmp_path) == first
        assert first.kafka_version.startswith("4.")
        assert first.bootstrap_servers == f"127.0.0.1:{first.port}"
        assert (tmp_path / "broker.json").is_file()
    finally:
        assert devkafka.stop(tmp_path) is True
    with pytest.raises(ProcessLookupError):
        os.kill(first.pid, 0)
    assert devkafka.status(tmp_path) is None
    assert not (tmp_path / "broker.json").exists()
    assert devkafka.stop(tmp_path) is False
