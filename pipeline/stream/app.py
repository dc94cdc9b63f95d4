"""The faust app behind `minnow worker`: its configuration, its topics and one batch agent per input topic."""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import faust

from pipeline.metrics import PARTITIONS_ASSIGNED
from pipeline.settings import Settings
from pipeline.stream import names
from pipeline.stream.worker import BatchProcessor, Engine, OutputRecord, batch_agent

log = logging.getLogger(__name__)

# The broker's max.message.bytes is the real limit; the producer must not refuse a large dead letter on its own,
# or an oversize input record would stop the worker on every restart.
PRODUCER_MAX_REQUEST_BYTES = 16 * 1024 * 1024


class FaustSender:
    """Produces through the app's producer, so exactly-once mode sends inside its transactions."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def __call__(self, record: OutputRecord, /) -> Any:
        producer = await self._app.maybe_start_producer()
        headers = list(record.headers) or None
        return await producer.send(record.topic, record.key, record.value, None, None, headers)


def broker_urls(bootstrap_servers: str) -> list[str]:
    """`host:port,host:port` as faust's broker URLs."""
    return [f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()]


def create_app(settings: Settings, engine: Engine, *, datadir: Path) -> faust.App:
    """The configured app with its agents registered; `minnow worker` runs it in a faust Worker."""
    kafka = settings.kafka
    app = faust.App(
        kafka.group_id,  # faust's app id is its consumer group id
        broker=broker_urls(kafka.bootstrap_servers),
        processing_guarantee=kafka.processing_guarantee,
        datadir=str(datadir),
        autodiscover=False,
        web_enabled=False,  # /metrics is served by the metrics server, not faust's web
        topic_allow_declare=False,  # topics are created from their specs, never implicitly by a worker
        topic_disable_leader=True,  # no tables, so no leader election topic
        consumer_auto_offset_reset="earliest",
        # faust's 60 s default keeps a restarted worker waiting a minute for the group to drop its killed
        # predecessor; 10 s (Kafka's long-time default) still tolerates a busy 2-core host, since heartbeats run
        # on the event loop while the model runs in threads.
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        producer_max_request_size=PRODUCER_MAX_REQUEST_BYTES,
        stream_wait_empty=True,  # on stop and revoke, wait for in-flight batches before the final commit
    )
    send = FaustSender(app)
    inputs = {names.topic(kafka.topic_prefix, logical): family for family, logical in names.INPUT_TOPICS.items()}
    for name, family in inputs.items():
        source = app.topic(
            name,
            key_serializer="raw",
            value_serializer="raw",
            allow_empty=True,  # a null value is a dead letter, not a crash
        )
        processor = BatchProcessor(settings, engine, send, delivery_timeout_s=settings.worker.delivery_timeout_s)
        # One actor per topic: take_events acks in offset order only within one actor, and faust's commit
        # logic can skip an unacked offset when acks arrive out of order.
        app.agent(source, name=f"minnow.{family}", concurrency=1)(batch_agent(processor, settings))

    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned: set[Any] = args[0]  # faust sends the whole new assignment
        PARTITIONS_ASSIGNED.set(sum(1 for tp in assigned if tp.topic in inputs))

    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        PARTITIONS_ASSIGNED.set(0)  # eager rebalancing: everything is revoked, then the new set assigned

    async def announce() -> None:
        log.info(
            "minnow worker: group %s, inputs %s, guarantee %s, batches of %d events or %d ms",
            kafka.group_id,
            ", ".join(inputs),
            kafka.processing_guarantee,
            settings.worker.batch_max_events,
            settings.worker.batch_max_wait_ms,
        )
        if kafka.processing_guarantee == "exactly_once":
            # Measured, not assumed: faust only puts a send in a transaction when the destination is a topic its
            # consumer reads and its assignor groups; our outputs are neither, so they are written outside.
            log.warning(
                "exactly_once: faust commits input offsets inside transactions, but this worker's outputs are "
                "written outside them, so delivery is at-least-once (docs/architecture-stream.md)"
            )

    app.on_partitions_assigned.connect(on_assigned)
    app.on_partitions_revoked.connect(on_revoked)
    app.task(announce)
    if settings.worker.metrics_port:
        port = settings.worker.metrics_port

        async def serve_endpoints() -> None:
            from pipeline.stream.health import start_health_server, track_lag

            # A taken port crashes the app: a worker asked to expose metrics must not run blind.
            server = await start_health_server(port)
            try:
                await track_lag(kafka.bootstrap_servers, kafka.group_id, list(inputs))
            finally:  # faust cancels app tasks once the final commit is done, so probes answer while draining
                await server.close()

        app.task(serve_endpoints)
    return app


def run(settings: Settings, *, verbose: bool = False) -> int:
    """Load the model, then run the worker until SIGTERM/SIGINT; returns the process exit code."""
    from pipeline.stages.infer import MiniModel
    from pipeline.stages.runtime import AsyncMiniModel

    # The model loads before the consumer joins the group, so partitions are never assigned to a worker
    # that cannot process them yet.
    engine = AsyncMiniModel(MiniModel.load(settings))
    try:
        with tempfile.TemporaryDirectory(prefix="minnow-faust-") as datadir:
            app = create_app(settings, engine, datadir=Path(datadir))
            worker = faust.Worker(
                app,
                loglevel=logging.DEBUG if verbose else logging.INFO,
                logfile=sys.stderr,
                quiet=True,
            )
            try:
                worker.execute_from_commandline()
            except SystemExit as exc:  # mode's Worker always ends by raising SystemExit with the exit status
                return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
            return 0
    finally:
        engine.close()
