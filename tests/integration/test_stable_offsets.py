"""A consumer that starts while a transaction still holds its group's offsets waits for the transaction and starts
after it, not before it (KIP-447's require_stable; pipeline/stream/stable_offsets.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from pipeline.settings import KafkaSettings
from pipeline.stream import clients, stable_offsets
from tests.integration.helpers import create_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BEFORE = 5  # committed the plain way
IN_TRANSACTION = 10  # committed by the open transaction
STILL_WAITING_S = 3.0
BOUND_S = 2.0


async def _pending_offsets(bootstrap: str, topic: str, group: str, transactional_id: str) -> AIOKafkaProducer:
    """Offset BEFORE committed for `group`, then a transaction left open with IN_TRANSACTION in it."""
    await create_topic(bootstrap, topic, partitions=1)
    tp = TopicPartition(topic, 0)
    plain = clients.consumer(KafkaSettings(bootstrap_servers=bootstrap), group_id=group, enable_auto_commit=False)
    await plain.start()
    try:
        plain.assign([tp])
        await plain.commit({tp: BEFORE})
    finally:
        await plain.stop()
    transaction = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id)
    await transaction.start()
    await transaction.begin_transaction()
    await transaction.send_offsets_to_transaction({tp: IN_TRANSACTION}, group)
    return transaction


async def _starts_after_the_transaction(bootstrap: str, topic: str, group: str, transactional_id: str) -> None:
    transaction = await _pending_offsets(bootstrap, topic, group, transactional_id)
    tp = TopicPartition(topic, 0)
    restarted = clients.consumer(KafkaSettings(bootstrap_servers=bootstrap), group_id=group, enable_auto_commit=False)
    await restarted.start()
    try:
        restarted.assign([tp])
        # The race this module closes: aiokafka's own OffsetFetch answers the offset from before the transaction.
        await restarted._coordinator.ensure_coordinator_known()
        unstable = await stable_offsets.AIOKAFKA_FETCH(restarted._coordinator, [tp])
        assert unstable[tp].offset == BEFORE, "without require_stable the broker should answer the old offset"

        position = asyncio.ensure_future(restarted.position(tp))
        committed = asyncio.ensure_future(restarted.committed(tp))
        await asyncio.sleep(STILL_WAITING_S)
        assert not position.done(), f"the consumer started at {position.result()} while the transaction was open"
        assert not committed.done(), "committed() answered while the transaction was open"

        await transaction.commit_transaction()
        assert await asyncio.wait_for(position, 30) == IN_TRANSACTION
        assert await asyncio.wait_for(committed, 30) == IN_TRANSACTION
    finally:
        await restarted.stop()
        await transaction.stop()


async def _starts_before_a_transaction_that_never_ends(
    bootstrap: str, topic: str, group: str, transactional_id: str
) -> float:
    transaction = await _pending_offsets(bootstrap, topic, group, transactional_id)
    tp = TopicPartition(topic, 0)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, stable_offsets_wait_s=BOUND_S)
    restarted = clients.consumer(kafka, group_id=group, enable_auto_commit=False)
    await restarted.start()
    try:
        restarted.assign([tp])
        started = time.monotonic()
        assert await asyncio.wait_for(restarted.position(tp), 30) == BEFORE
        return time.monotonic() - started
    finally:
        await restarted.stop()
        await transaction.abort_transaction()
        await transaction.stop()


def test_a_consumer_waits_for_offsets_a_transaction_holds(
    kafka_bootstrap: str, random_name: Callable[[str], str]
) -> None:
    """While a transaction holds a group's new offset, a consumer of that group neither starts nor reports an offset
    (aiokafka alone would start at the old one: asserted, so the test fails if the broker stops showing the race);
    once the transaction commits, it starts at the transaction's offset."""
    asyncio.run(
        _starts_after_the_transaction(kafka_bootstrap, random_name("stable"), random_name("group"), random_name("txn"))
    )


def test_a_transaction_that_never_ends_holds_a_consumer_only_for_the_bound(
    kafka_bootstrap: str, random_name: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    """A transaction left open (as a hanging one the broker never completes) holds a consumer for
    MINNOW_KAFKA__STABLE_OFFSETS_WAIT_S, not for ever: then it starts from the last stable offset, and a WARNING
    names the partition."""
    waited = asyncio.run(
        _starts_before_a_transaction_that_never_ends(
            kafka_bootstrap, random_name("hanging"), random_name("group"), random_name("txn")
        )
    )
    assert BOUND_S <= waited < BOUND_S + 10, waited
    assert "still held by a transaction after" in caplog.text
