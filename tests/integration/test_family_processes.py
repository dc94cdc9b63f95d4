"""Moving from one exactly-once process for every family to one process per family keeps the inputs' positions:
the shared group's committed offsets are copied into each family's group once, and never while the shared group
still has live members (pipeline/stream/family_processes.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import TopicPartition

from pipeline.errors import ConfigError
from pipeline.settings import KafkaSettings
from pipeline.stream import clients
from pipeline.stream.family_processes import migrate_offsets
from tests.integration.helpers import create_topic
from tests.integration.test_worker_e2e import committed_offsets

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def _commit(kafka: KafkaSettings, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = clients.consumer(kafka, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


def test_a_shared_groups_offsets_move_to_each_familys_group_once(
    kafka_bootstrap: str, random_name: Callable[[str], str]
) -> None:
    """A group that ran feeds and IoT together committed feeds[0] at 5, feeds[1] at 2 and iot[0] at 7: the first
    per-family start copies each family's offsets into `<group>-<family>`; the next start copies nothing, because
    the family groups have offsets of their own by then (which may have moved on)."""
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, group_id=random_name("group"))
    feeds, devices = random_name("feeds"), random_name("iot")

    async def scenario() -> tuple[dict[str, int], dict[str, int], dict[tuple[str, int], int]]:
        await create_topic(kafka_bootstrap, feeds, 2)
        await create_topic(kafka_bootstrap, devices, 1)
        shared = {TopicPartition(feeds, 0): 5, TopicPartition(feeds, 1): 2, TopicPartition(devices, 0): 7}
        await _commit(kafka, kafka.group_id, shared)
        first = await migrate_offsets(kafka, {"feed": [feeds], "iot": [devices]})
        await _commit(kafka, f"{kafka.group_id}-feed", {TopicPartition(feeds, 0): 9})  # the feed process went on
        second = await migrate_offsets(kafka, {"feed": [feeds], "iot": [devices]})
        after = {
            **await committed_offsets(kafka_bootstrap, f"{kafka.group_id}-feed"),
            **await committed_offsets(kafka_bootstrap, f"{kafka.group_id}-iot"),
        }
        return first, second, after

    first, second, after = asyncio.run(scenario())
    assert first == {"feed": 2, "iot": 1}
    assert second == {}
    assert after == {(feeds, 0): 9, (feeds, 1): 2, (devices, 0): 7}


def test_offsets_are_not_copied_while_the_shared_group_has_a_live_member(
    kafka_bootstrap: str, random_name: Callable[[str], str]
) -> None:
    """An old worker still reading in the shared group would repeat every output the family processes make: the
    start is refused with one line that names the group and says to stop the old workers."""
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, group_id=random_name("group"))
    feeds = random_name("feeds")

    async def scenario() -> str:
        await create_topic(kafka_bootstrap, feeds, 1)
        await _commit(kafka, kafka.group_id, {TopicPartition(feeds, 0): 3})
        old_worker = clients.consumer(kafka, feeds, group_id=kafka.group_id, enable_auto_commit=False)
        await old_worker.start()
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while not old_worker.assignment():  # joined: the group is Stable with one member
                assert asyncio.get_running_loop().time() < deadline, "the old worker never joined"
                await old_worker.getmany(timeout_ms=500)
            with pytest.raises(ConfigError) as refused:
                await migrate_offsets(kafka, {"feed": [feeds]})
        finally:
            await old_worker.stop()
        return str(refused.value)

    message = asyncio.run(scenario())
    assert kafka.group_id in message and "stop the workers" in message
