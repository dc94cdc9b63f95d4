"""Small helpers shared by the integration tests (the broker itself comes from conftest's fixtures)."""

from __future__ import annotations

from aiokafka.admin import NewTopic

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
