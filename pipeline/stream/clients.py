"""Starting aiokafka clients (and the producers' request size limit), and asking a broker which partitions a topic
has, with errors that say where."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from pipeline.errors import StreamToolError
from pipeline.stream.health import topic_partitions

# Every producer that writes Minnow's outputs: the broker's max.message.bytes (per topic) is the real limit. The
# producer must not refuse a large dead letter or escalation on its own, or an oversize input record would stop a
# worker on every restart.
PRODUCER_MAX_REQUEST_BYTES = 16 * 1024 * 1024


class KafkaRecord(Protocol):
    """The fields of an aiokafka ConsumerRecord that `tail` and `review` read."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


class _Client(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ClientT = TypeVar("ClientT", bound=_Client)


async def started(client: ClientT, bootstrap_servers: str) -> ClientT:
    """The aiokafka client, started; a broker that cannot be reached is a StreamToolError that says where."""
    try:
        await client.start()
    except KafkaError as exc:
        await client.stop()
        raise StreamToolError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc
    return client


async def partitions(bootstrap_servers: str, topic: str) -> list[int]:
    """The topic's partitions; a missing topic is an error, not something for the broker to auto-create."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        await admin.start()
        known = await topic_partitions(admin, [topic])
    except KafkaError as exc:
        raise StreamToolError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc
    finally:
        await admin.close()
    if topic not in known:
        raise StreamToolError(f"topic {topic!r} does not exist on {bootstrap_servers}; create it first")
    return known[topic]
