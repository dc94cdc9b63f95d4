"""The real size limit of every output topic, read from the broker once at start-up.

A record larger than its topic's `max.message.bytes` is refused by the broker for as long as it is retried: sent
anyway, it would fail its batch, the worker would exit 75, restart and read the same batch again, for ever. The
worker checks each output against these limits before it sends it (worker.py, `output_too_large`), so the limit
must be the broker's own, not one assumed from the specs (a platform team may have set its own).
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.settings import KafkaSettings
from pipeline.stream import clients

log = logging.getLogger(__name__)

LIMIT_CONFIG = "max.message.bytes"
# What the broker adds around each record (the v2 batch header is 61 bytes; a record's own framing is a few varints)
# besides its key, value and headers: counted generously, so a record that passes the check also passes the broker.
RECORD_OVERHEAD_BYTES = 128
HEADER_OVERHEAD_BYTES = 10


async def topic_limits(kafka: KafkaSettings, topics: Collection[str]) -> dict[str, int]:
    """`max.message.bytes` of each of `topics` that exists (the topic's override, else the broker's default)."""
    admin = await clients.started(clients.admin(kafka), kafka)
    try:
        existing = set(await clients.topic_partitions(admin, topics))
        if not existing:
            return {}
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in existing])
    finally:
        await admin.close()
    limits: dict[str, int] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            for entry in resource["config_entries"]:
                if entry["config_names"] == LIMIT_CONFIG and entry["config_value"]:
                    limits[resource["resource_name"]] = int(entry["config_value"])
    log.info("output size limits: %s", ", ".join(f"{t} {n} bytes" for t, n in sorted(limits.items())))
    return limits


def record_size(key: bytes | None, value: bytes | None, headers: Collection[tuple[str, bytes]]) -> int:
    """What one record counts against `max.message.bytes`, uncompressed (compression only makes it smaller)."""
    framing = sum(len(name.encode()) + len(data) + HEADER_OVERHEAD_BYTES for name, data in headers)
    return RECORD_OVERHEAD_BYTES + len(key or b"") + len(value or b"") + framing
