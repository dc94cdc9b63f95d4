"""`minnow escalator`: settle escalation records with the large model; deliver results, labels or reviews; commit.

aiokafka directly, not faust: records are settled concurrently and finish out of order, and faust's commit logic
can skip an unacked offset when acks arrive out of order (docs/architecture-stream.md). Here the commit point of
each partition is one past the longest run of finished offsets from the start, kept by `OffsetLedger` (offsets.py)
and committed by hand; pause/resume of the partitions is the backpressure (breaker open, in-flight limit reached).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from pydantic import ValidationError

from pipeline import metrics
from pipeline.codec import encode
from pipeline.errors import DecodeError, DeliveryError, InputError, SchemaError
from pipeline.escalation.cache import SettledRecords
from pipeline.escalation.escalator import Escalator, Outcome
from pipeline.logs import log_context
from pipeline.models import EVENT_ADAPTER, AnyEvent, EscalationRecord, ToSink
from pipeline.review.verdicts import label_key
from pipeline.settings import Settings
from pipeline.stream import clients, names
from pipeline.stream.clients import PRODUCER_MAX_REQUEST_BYTES
from pipeline.stream.deadletter import Headers, dead_letter_headers
from pipeline.stream.lag import LagReport
from pipeline.stream.offsets import OffsetLedger
from pipeline.stream.registry import RegistryCodec
from pipeline.stream.worker import EXIT_UNDELIVERED, InputRecord, input_record

log = logging.getLogger(__name__)

Destination = Literal["sink", "labels", "review", "deadletter"]

# Escalation records carry the whole event; a fetch must be able to return the largest one.
FETCH_MAX_PARTITION_BYTES = 4 * 1024 * 1024
COMMIT_INTERVAL_S = 1.0
POLL_TIMEOUT_MS = 200
# A graceful stop waits this long for records in flight (a breaker in mode `wait` can hold them much longer).
STOP_GRACE_S = 30.0
# The escalator's own consumer group, `<group_id>-escalator`: its offsets never mix with the workers'.
ESCALATOR_GROUP_SUFFIX = "-escalator"


@dataclass(frozen=True)
class Delivery:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    destination: Destination


@dataclass(frozen=True)
class Plan:
    """Everything one escalation record becomes, and how it ended for the metrics."""

    deliveries: tuple[Delivery, ...]
    outcome: Literal["sink", "review", "deadletter"]
    reason: str


def decode(raw: bytes | None) -> tuple[EscalationRecord, AnyEvent]:
    """An escalation record and its event, or DecodeError / SchemaError."""
    if raw is None:
        raise DecodeError("null value")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from exc
    try:
        record = EscalationRecord.model_validate(data)
        event = EVENT_ADAPTER.validate_python(record.event)
    except ValidationError as exc:
        raise SchemaError(f"not an escalation record: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from exc
    return record, event


class EscalationHandler:
    """One escalation record in, its deliveries out. No Kafka in it: testable with plain records."""

    def __init__(self, settings: Settings, escalator: Escalator, registry: RegistryCodec | None = None) -> None:
        self._escalator = escalator
        self._registry = registry  # frames settled sink records like the worker's (docs/registry.md)
        self._sinks = {kind: settings.topic(logical) for kind, logical in names.SINK_TOPICS.items()}
        self._labels = settings.topic(names.LABELS_TOPIC)
        self._review = settings.topic(names.REVIEW_TOPIC)
        self._deadletter = settings.topic(names.DEADLETTER_TOPIC)

    async def plan(self, record: InputRecord) -> Plan:
        if self._registry is not None:  # sink schemas registered once; a registry that is down fails here
            await self._registry.start()
        try:
            escalation, event = decode(record.value)
        except InputError as exc:
            return self._dead_letter(record, exc.code, str(exc))
        with log_context(event_id=escalation.id):  # the large-model tier's lines for this record name it
            try:
                outcome = await self._escalator.settle(escalation, event)
            except Exception as exc:  # a bug met by one record must not stop the tier: that record is set aside
                # The type above DEBUG, the traceback below: an exception's message may quote the event.
                log.error("settling %s failed: %s", escalation.id, type(exc).__name__)
                log.debug("settling %s failed", escalation.id, exc_info=exc)
                return self._dead_letter(record, "escalation_error", f"{type(exc).__name__}: {exc}")
        return self._deliveries(outcome, event.key())

    def _deliveries(self, outcome: Outcome, key: bytes) -> Plan:
        if isinstance(outcome, ToSink):
            result = outcome.result
            value = self._registry.sink_value(result, result.kind) if self._registry is not None else encode(result)
            sink = Delivery(self._sinks[result.kind], key, value, (), "sink")
            labels = tuple(
                Delivery(self._labels, label_key(label).encode(), encode(label), (), "labels")
                for label in outcome.labels
            )
            return Plan((sink, *labels), "sink", outcome.reason)
        review = Delivery(self._review, key, encode(outcome.record), (), "review")
        return Plan((review,), "review", outcome.reason)

    def _dead_letter(self, record: InputRecord, error: str, message: str) -> Plan:
        log.warning("to the dead-letter topic: %s", error, extra={"error": error})  # where: from _settle's context
        log.debug("dead letter %s: %s", error, message)
        headers = dead_letter_headers(record.source, error=error, message=message)
        return Plan((Delivery(self._deadletter, record.key, record.value, headers, "deadletter"),), "deadletter", error)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    def __init__(self, runner: EscalatorRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._runner.lag.revoked(revoked)
        await self._runner.hand_back(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        metrics.PARTITIONS_ASSIGNED.set(len(assigned))
        self._runner.lag.assigned(assigned)  # the whole new assignment: aiokafka rebalances eagerly


class EscalatorRunner:
    """The consume → settle → deliver → commit loop around started aiokafka clients."""

    def __init__(
        self,
        settings: Settings,
        handler: EscalationHandler,
        escalator: Escalator,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        *,
        commit_interval_s: float = COMMIT_INTERVAL_S,
        stop_grace_s: float = STOP_GRACE_S,
        settled: SettledRecords | None = None,
        lag: LagReport | None = None,
    ) -> None:
        self._settings = settings
        self._handler = handler
        self._escalator = escalator
        self._consumer = consumer
        self._producer = producer
        self._max_inflight = settings.escalation.max_inflight
        self._delivery_timeout_s = settings.worker.delivery_timeout_s
        self._commit_interval_s = commit_interval_s
        self._stop_grace_s = stop_grace_s
        # Revocation must finish well inside the rebalance timeout (aiokafka: the session timeout).
        self._revoke_grace_s = settings.kafka.session_timeout_s * 0.6
        self.topic = settings.topic(names.ESCALATION_TOPIC)
        self.lag = lag or lag_report(settings)  # what the lag tracker may publish: this process's partitions
        self._ledger = OffsetLedger()
        # Records finished beyond the commit point (they finish out of order): skipped when replayed after a crash.
        self._settled = settled
        self._tasks: dict[asyncio.Task[None], TopicPartition] = {}
        self._failure: BaseException | None = None
        self._paused = False

    def listener(self) -> ConsumerRebalanceListener:
        return _Rebalance(self)

    async def run(self, stop: asyncio.Event) -> int:
        """Consume until `stop` is set (exit 0) or an output cannot be delivered (exit 75, nothing more committed)."""
        last_commit = time.monotonic()
        while not stop.is_set() and self._failure is None:
            self._backpressure()
            free = self._max_inflight - len(self._tasks)
            batch = await self._consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=max(free, 1))
            for tp, messages in batch.items():
                for message in messages:
                    self._start(tp, message)
            if time.monotonic() - last_commit >= self._commit_interval_s:
                await self.commit()
                last_commit = time.monotonic()
        if self._failure is not None:
            log.critical("escalator: an output was not delivered; exiting for redelivery: %s", self._failure)
            await self._cancel(set(self._tasks))
            await self.commit()  # only offsets whose outputs were all acknowledged
            return EXIT_UNDELIVERED
        await self._drain(set(self._tasks), self._stop_grace_s)
        await self.commit()
        return 0

    async def commit(self, partitions: Collection[TopicPartition] | None = None) -> None:
        assigned = self._consumer.assignment()
        offsets = {tp: o for tp, o in self._ledger.committable(partitions).items() if tp in assigned}
        if offsets:
            await self._consumer.commit(offsets)
            self._ledger.committed(offsets)
            if self._settled is not None:  # below the commit point nothing is replayed: forget it
                for tp, offset in offsets.items():
                    await self._settled.forget_settled(tp.topic, tp.partition, offset)

    async def hand_back(self, revoked: set[TopicPartition]) -> None:
        """Before partitions move: let their records finish (a while), commit them, forget the rest."""
        metrics.PARTITIONS_ASSIGNED.set(0)
        tasks = {task for task, tp in self._tasks.items() if tp in revoked}
        await self._drain(tasks, self._revoke_grace_s)
        try:
            await self.commit(revoked)
        except Exception as exc:  # the group may have moved on already; the new owner repeats those records
            log.warning("commit on revocation failed (%s); their records will be settled again", exc)
        self._ledger.forget(revoked)

    # ------------------------------------------------------------------------------------------ internals
    def _start(self, tp: TopicPartition, message: Any) -> None:
        self._ledger.take(tp, message.offset)
        metrics.EVENTS_IN.labels(topic=tp.topic, family="").inc()
        metrics.ESCALATOR_INFLIGHT.inc()
        task = asyncio.create_task(self._settle(tp, input_record(message, timestamp_ms=True)))
        self._tasks[task] = tp
        task.add_done_callback(self._tasks.pop)

    async def _settle(self, tp: TopicPartition, record: InputRecord) -> None:
        digest = hashlib.sha256(record.value or b"").hexdigest()[:32]
        offset = record.source.offset
        try:
            if self._settled is not None and await self._settled.was_settled(tp.topic, tp.partition, offset, digest):
                # Delivered before a crash, its offset not yet committed: settled, not asked or delivered again.
                self._ledger.finish(tp, offset)
                metrics.ESCALATOR_OUTCOMES.labels(outcome="replayed", reason="already_settled").inc()
                return
            where = record.source
            with log_context(topic=where.topic, partition=where.partition, offset=where.offset):
                plan = await self._handler.plan(record)
            await self._deliver(plan.deliveries)
            if self._settled is not None:
                await self._settled.mark_settled(tp.topic, tp.partition, offset, digest)
        except Exception as exc:  # DeliveryError, or a bug past the handler: never commit this offset
            self._failure = self._failure or exc
            return
        finally:
            metrics.ESCALATOR_INFLIGHT.dec()
        self._ledger.finish(tp, offset)
        metrics.ESCALATOR_OUTCOMES.labels(outcome=plan.outcome, reason=plan.reason).inc()
        if plan.outcome == "deadletter":
            metrics.DEAD_LETTERS.labels(reason=plan.reason, family="").inc()

    async def _deliver(self, deliveries: Sequence[Delivery]) -> None:
        try:
            async with asyncio.timeout(self._delivery_timeout_s):
                pending = [
                    await self._producer.send(d.topic, d.value, key=d.key, headers=list(d.headers) or None)
                    for d in deliveries
                ]
                await asyncio.gather(*pending)
        except TimeoutError as exc:
            raise DeliveryError(f"outputs not acknowledged within {self._delivery_timeout_s:.0f}s") from exc
        except Exception as exc:  # any client failure means the outputs are not known to be delivered
            raise DeliveryError(f"delivery failed: {type(exc).__name__}: {exc}") from exc
        for delivery in deliveries:
            metrics.EVENTS_OUT.labels(topic=delivery.topic, family="", destination=delivery.destination).inc()

    def _backpressure(self) -> None:
        """Stop fetching while the breaker holds requests (mode `wait`) or the in-flight limit is reached."""
        hold = self._escalator.blocked or len(self._tasks) >= self._max_inflight
        partitions = self._consumer.assignment()
        if hold and not self._paused:
            self._consumer.pause(*partitions)
            self._paused = True
            if self._escalator.blocked:
                log.warning("escalator: circuit open; not taking escalations until a probe succeeds")
        elif not hold and self._paused:
            self._consumer.resume(*partitions)
            self._paused = False
        elif hold and partitions:  # partitions assigned since the pause are paused too
            self._consumer.pause(*partitions)

    async def _drain(self, tasks: set[asyncio.Task[None]], grace_s: float) -> None:
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace_s)
        if late:
            log.warning("escalator: %d records not settled in %.0fs; they will be settled again", len(late), grace_s)
            await self._cancel(late)

    @staticmethod
    async def _cancel(tasks: set[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def lag_report(settings: Settings) -> LagReport:
    """The escalator group's lag series: the escalation partitions this process holds."""
    return LagReport(settings.kafka.group_id + ESCALATOR_GROUP_SUFFIX, [settings.topic(names.ESCALATION_TOPIC)])


def consumer_for(settings: Settings) -> AIOKafkaConsumer:
    kafka = settings.kafka
    return clients.consumer(
        kafka,
        group_id=kafka.group_id + ESCALATOR_GROUP_SUFFIX,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Workers in exactly-once mode write escalations inside transactions: an aborted one (a crashed batch,
        # redone after the restart) must not be paid for. Non-transactional records are unaffected.
        isolation_level="read_committed",
        session_timeout_ms=int(kafka.session_timeout_s * 1000),
        heartbeat_interval_ms=int(kafka.heartbeat_interval_s * 1000),
        max_partition_fetch_bytes=FETCH_MAX_PARTITION_BYTES,
    )


def producer_for(settings: Settings) -> AIOKafkaProducer:
    return clients.producer(settings.kafka, max_request_size=PRODUCER_MAX_REQUEST_BYTES)


async def serve(
    settings: Settings,
    escalator: Escalator,
    stop: asyncio.Event,
    *,
    settled: SettledRecords | None = None,
    lag: LagReport | None = None,
) -> int:
    """Start the Kafka clients, run until `stop`, close everything; returns the exit code."""
    consumer, producer = consumer_for(settings), producer_for(settings)
    handler = EscalationHandler(settings, escalator, RegistryCodec.configured(settings))
    runner = EscalatorRunner(settings, handler, escalator, consumer, producer, settled=settled, lag=lag)
    await producer.start()
    try:
        await consumer.start()
        try:
            consumer.subscribe([runner.topic], listener=runner.listener())
            _announce(settings, runner.topic)
            return await runner.run(stop)
        finally:
            await consumer.stop()
    finally:
        await producer.stop()


def _announce(settings: Settings, topic: str) -> None:
    """One line at start: what this escalator does with the records of `topic`."""
    cfg, group = settings.escalation, settings.kafka.group_id + ESCALATOR_GROUP_SUFFIX
    if cfg.review_only:
        why = "MINNOW_ESCALATION__MODE=review-only" if cfg.mode == "review-only" else "no API key is set"
        log.warning(
            "minnow escalator: review-only mode (%s): every escalated item of %s goes to %s, no large model is asked",
            why,
            topic,
            settings.topic(names.REVIEW_TOPIC),
        )
        return
    log.info(
        "minnow escalator: group %s, topic %s, model %s at %s, breaker mode %s",
        group,
        topic,
        cfg.model,
        cfg.base_url,
        cfg.breaker_mode,
    )


async def _main(settings: Settings) -> int:
    from pipeline.escalation.cache_file import open_cache
    from pipeline.escalation.client import client_for
    from pipeline.stream.preflight import preflight

    # Wrong credentials or an untrusted certificate: one line and an exit, before any client retries.
    await preflight(settings.kafka)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with client_for(settings.escalation) as client, open_cache(settings) as cache:
        escalator = Escalator(settings, client, cache=cache)
        lag = lag_report(settings)
        endpoints: asyncio.Task[None] | None = None
        if settings.escalation.metrics_port:
            endpoints = asyncio.create_task(_endpoints(settings, lag))
        try:
            return await serve(settings, escalator, stop, settled=cache, lag=lag)
        finally:
            if endpoints is not None:
                endpoints.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await endpoints


async def _endpoints(settings: Settings, lag: LagReport) -> None:
    from pipeline.stream.health import start_health_server, track_lag

    server = await start_health_server(settings.escalation.metrics_port, host=settings.escalation.metrics_host)
    try:
        await track_lag(settings.kafka, lag)
    finally:
        await server.close()


def run(settings: Settings) -> int:
    """`minnow escalator`: run until SIGTERM/SIGINT; 0 after a clean stop, 75 when outputs could not be delivered."""
    if settings.log_level is None:  # a service logs what it does by default; MINNOW_LOG_LEVEL and -v win
        logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    return asyncio.run(_main(settings))
