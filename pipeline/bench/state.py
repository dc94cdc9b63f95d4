"""How long a worker takes to rebuild its state from a changelog partition (`python -m pipeline.bench.state`).

Writes N device states of realistic size (three metrics with full histories at the default sizes — 96 recent
readings, 24 hourly bins of 24, 15 daily record peaks and 15 departure peaks — and an open window) to a fresh
one-partition topic on the local broker (or `MINNOW_KAFKA__BOOTSTRAP_SERVERS`), then times `ChangelogStore`
replaying it, as a worker does on assignment. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

import orjson
from aiokafka.admin import NewTopic

from pipeline.ops import devkafka
from pipeline.settings import DetectorSettings, KafkaSettings, load_settings
from pipeline.stages.devices import DeviceState, MetricAggregate, OpenWindow
from pipeline.stages.history import MetricHistory
from pipeline.stream import clients
from pipeline.stream.state import ChangelogStore


def device_state(n: int) -> bytes:
    metrics = ("temperature_c", "humidity_pct", "battery_v")
    state = DeviceState(
        device_id=f"device-{n:07d}",
        partition=0,
        history={m: full_history(20.0 + n % 7) for m in metrics},
        window=OpenWindow(
            start=1_800_000_000.0,
            end=1_800_000_060.0,
            messages=3,
            metrics={m: MetricAggregate(count=3, min=19.0, max=21.0, sum=60.0) for m in metrics},
        ),
        emitted_until=1_800_000_000.0,
        last_seen=1_800_000_030.0,
        offset=n,
    )
    return state.model_dump_json().encode()


def full_history(level: float) -> MetricHistory:
    """A metric's history as large as the default detector settings let it grow."""
    cfg = DetectorSettings()
    ring = [level + 0.01 * i for i in range(cfg.season_readings)]
    today = 20_833  # the UTC day number of 1_800_000_000
    return MetricHistory(
        readings=10_000,
        recent=[level + 0.01 * i for i in range(cfg.recent_readings)],
        season={str(hour): ring for hour in range(24)},
        peaks={str(today - d): 5.0 + 0.123 * d for d in range(cfg.record_days + 1)},
        season_peaks={str(today - d): 4.0 + 0.123 * d for d in range(cfg.record_days + 1)},
        last_alert=1_799_990_000.0,
    )


async def measure(kafka: KafkaSettings, keys: int) -> dict[str, float]:
    topic = f"bench-state-{uuid.uuid4().hex[:8]}"
    admin = clients.admin(kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer = clients.producer(kafka, linger_ms=20, max_batch_size=1 << 20)
        await producer.start()
        try:
            value_bytes = 0
            pending = []
            for n in range(keys):
                value = device_state(n)
                value_bytes += len(value)
                pending.append(await producer.send(topic, value, key=f"device-{n:07d}".encode(), partition=0))
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        store = ChangelogStore(kafka, topic)
        started = time.perf_counter()
        store.assign([0])
        await store.ready([0])
        seconds = time.perf_counter() - started
        assert len(store) == keys, f"restored {len(store)} of {keys} keys"
        return {
            "keys": keys,
            "mean_value_bytes": round(value_bytes / keys),
            "restore_s": round(seconds, 2),
            "keys_per_s": round(keys / seconds),
        }
    finally:
        await admin.delete_topics([topic])
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=50_000, help="device states to write and replay")
    args = parser.parse_args(argv)
    kafka = load_settings().kafka  # the configured cluster and its security
    started = None
    if "MINNOW_KAFKA__BOOTSTRAP_SERVERS" not in os.environ:
        cache = devkafka.default_cache_dir()
        running = devkafka.status(cache)
        if running is None:
            running = started = devkafka.start(cache)
        kafka = KafkaSettings(bootstrap_servers=running.bootstrap_servers)
    try:
        report = asyncio.run(measure(kafka, args.keys))
    finally:
        if started is not None:
            devkafka.stop(devkafka.default_cache_dir())
    sys.stdout.buffer.write(orjson.dumps(report) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
