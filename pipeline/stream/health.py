"""A worker's operational endpoints (/metrics, /healthz, /readyz) and the consumer-lag tracker that feeds them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from pipeline.metrics import PARTITIONS_ASSIGNED
from pipeline.settings import KafkaSettings
from pipeline.stream import clients
from pipeline.stream.clients import topic_partitions
from pipeline.stream.lag import LagReport, Partition

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], bool]

# Probes are short requests; a long graceful wait would only delay the worker's own shutdown.
_SHUTDOWN_GRACE_S = 1.0
# end_offsets "may block indefinitely" (aiokafka) when a partition has no leader; one round must not.
_MIN_ROUND_TIMEOUT_S = 30.0


def partitions_assigned() -> int:
    """The current value of minnow_partitions_assigned (0 before the first rebalance)."""
    for metric in PARTITIONS_ASSIGNED.collect():
        for sample in metric.samples:
            return int(sample.value)
    return 0


def has_partitions() -> bool:
    """The default readiness check: the worker owns at least one input partition."""
    return partitions_assigned() > 0


@dataclass
class HealthServer:
    """A running endpoint server; `port` is the bound one (useful when 0 was asked for)."""

    host: str
    port: int
    _runner: web.AppRunner = field(repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop listening and close open connections; calling it twice is harmless."""
        if self._closed:
            return
        self._closed = True
        await self._runner.cleanup()

    async def __aenter__(self) -> HealthServer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def start_health_server(
    port: int,
    ready: ReadyCheck | None = None,
    *,
    host: str = "0.0.0.0",
    registry: CollectorRegistry = REGISTRY,
) -> HealthServer:
    """Serve /metrics, /healthz and /readyz on host:port (0 = any free port) until `close()`.

    `ready` decides /readyz; by default a worker is ready once it has partitions assigned.
    """
    app = _application(ready or has_partitions, default_check=ready is None, registry=registry)
    # Probes arrive every few seconds; an access-log line for each would drown the worker's own logs.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_GRACE_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = _bound_port(runner, fallback=port)
    log.info("health endpoints on %s:%d (/metrics, /healthz, /readyz)", host, bound)
    return HealthServer(host=host, port=bound, _runner=runner)


def _bound_port(runner: web.AppRunner, fallback: int) -> int:
    for address in runner.addresses:
        # IPv4 and IPv6 sockets both report (host, port, ...) tuples.
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return fallback


def _application(ready: ReadyCheck, *, default_check: bool, registry: CollectorRegistry) -> web.Application:
    started = time.monotonic()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        # Answering at all is the proof: a blocked or dead event loop cannot run this handler.
        return web.json_response({"status": "alive", "uptime_s": round(time.monotonic() - started, 3)})

    async def readyz(_: web.Request) -> web.Response:
        assigned = partitions_assigned()
        try:
            is_ready = bool(ready())
        except Exception as exc:  # a broken check must read as "not ready", not as a 500 the probe misreads
            return _not_ready(f"readiness check failed: {type(exc).__name__}: {exc}", assigned)
        if is_ready:
            return web.json_response({"ready": True, "partitions_assigned": assigned})
        if default_check:
            return _not_ready(
                "no input partitions are assigned to this worker (minnow_partitions_assigned is 0)", assigned
            )
        return _not_ready("the worker's readiness check reports not ready", assigned)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def _not_ready(reason: str, assigned: int) -> web.Response:
    return web.json_response({"ready": False, "reason": reason, "partitions_assigned": assigned}, status=503)


def lag_by_partition(
    end_offsets: Mapping[Partition, int],
    committed: Mapping[Partition, int | None],
    beginning_offsets: Mapping[Partition, int] | None = None,
) -> dict[Partition, int]:
    """Records each partition still holds for the group: high watermark minus committed offset, never negative.

    A partition the group never committed (None or -1), or whose commit is older than the log's first
    retained offset, counts from that first offset: it is where an `earliest` consumer would start.
    """
    lags: dict[Partition, int] = {}
    for tp, high in end_offsets.items():
        start = beginning_offsets.get(tp, 0) if beginning_offsets else 0
        position = committed.get(tp)
        if position is None or position < start:
            position = start
        lags[(tp[0], tp[1])] = max(high - position, 0)
    return lags


async def measure_lag(
    consumer: AIOKafkaConsumer,
    admin: AIOKafkaAdminClient,
    group_id: str,
    topics: Collection[str],
    *,
    only: Collection[Partition] | None = None,
) -> dict[Partition, int]:
    """One lag reading for `group_id` on every partition of `topics` (or those of them in `only`), from started
    aiokafka clients.

    `consumer` is an AIOKafkaConsumer without a group (it only reads offsets); `admin` an AIOKafkaAdminClient.
    Topics the cluster does not know are left out.
    """
    # Fresh metadata every round, so partitions added since the last one are counted too.
    known = await topic_partitions(admin, topics)
    partitions = [TopicPartition(topic, number) for topic in sorted(known) for number in known[topic]]
    if only is not None:
        partitions = [tp for tp in partitions if (tp.topic, tp.partition) in only]
    if not partitions:
        return {}
    end = await consumer.end_offsets(partitions)
    beginning = await consumer.beginning_offsets(partitions)
    stored = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
    committed: dict[Partition, int | None] = {tp: int(meta.offset) for tp, meta in stored.items()}
    return lag_by_partition(
        {tp: int(offset) for tp, offset in end.items()},
        committed,
        {tp: int(offset) for tp, offset in beginning.items()},
    )


@asynccontextmanager
async def _lag_clients(kafka: KafkaSettings) -> AsyncIterator[tuple[AIOKafkaConsumer, AIOKafkaAdminClient]]:
    # No group on the consumer: it must never join (and so never rebalance) the group it measures.
    consumer = clients.consumer(kafka, group_id=None, enable_auto_commit=False)
    admin = clients.admin(kafka)
    try:
        await consumer.start()
        await admin.start()
        yield consumer, admin
    finally:
        await admin.close()
        await consumer.stop()


async def track_lag(kafka: KafkaSettings, report: LagReport, interval_s: float = 15.0) -> None:
    """Set minnow_consumer_lag{group,topic,partition} every `interval_s` seconds for the partitions `report` holds
    (this process's own, so a sum across replicas counts each once: pipeline/stream/lag.py), until cancelled.

    A failed round (broker away, timeout) is logged and retried with fresh clients after `interval_s`,
    so lag tracking never takes the worker down with it. Its clients come from the one factory (clients.py), with
    the cluster's security settings.
    """
    group_id = report.group
    round_timeout = max(interval_s, _MIN_ROUND_TIMEOUT_S)
    while True:
        try:
            async with _lag_clients(kafka) as (consumer, admin):
                while True:
                    held = report.held
                    if held:  # a replica holding nothing asks the broker nothing
                        async with asyncio.timeout(round_timeout):
                            lags = await measure_lag(consumer, admin, group_id, report.topics, only=held)
                        report.publish(lags)
                    await asyncio.sleep(interval_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("consumer lag of group %s not measured (%s: %s); retrying", group_id, type(exc).__name__, exc)
            await asyncio.sleep(interval_s)
