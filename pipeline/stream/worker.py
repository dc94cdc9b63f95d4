"""The stream agents: micro-batch each input topic, run the mini model off the loop, route, deliver, then ack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn, Protocol

import orjson

from pipeline import metrics
from pipeline.errors import DeliveryError, InferenceError, InputError
from pipeline.models import AnyEvent, ErrorRecord, FeedEvent, IoTMessage, Result, ToDeadLetter, ToSink
from pipeline.settings import Settings
from pipeline.stages.route import route
from pipeline.stages.validate import parse_event
from pipeline.stream import names
from pipeline.stream.deadletter import Headers, Provenance, dead_letter_headers, normalize_headers

log = logging.getLogger(__name__)

Destination = Literal["sink", "escalation", "deadletter", "state"]

# aiokafka retries a send until its own request timeout; a batch still unacknowledged after this long means the
# broker is unreachable, and the worker exits so the batch is redelivered from the last commit.
DELIVERY_TIMEOUT_S = 120.0
# EX_TEMPFAIL: the batch could not be delivered; restarting the worker retries it.
EXIT_UNDELIVERED = 75


@dataclass(frozen=True)
class InputRecord:
    """One consumed record, as read: the value is never re-encoded, so a dead letter can carry it untouched."""

    source: Provenance
    key: bytes | None
    value: bytes | None
    consumed_at: float  # time.monotonic() when the consumer handed the record over


@dataclass(frozen=True)
class OutputRecord:
    """One record to produce for one input record."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    destination: Destination
    reasons: tuple[str, ...]  # the dead-letter error class, or the escalation reasons
    event_time: datetime | None  # the event's own timestamp, for the event-to-sink latency
    # The input partition this output belongs to: in exactly-once mode it is written in that partition's
    # transaction, so it becomes visible exactly when that partition's offsets are committed.
    origin: tuple[str, int] | None = None
    partition: int | None = None  # an explicit partition (state changelogs); None = by key


class Engine(Protocol):
    """What the batch processor needs from the mini model (AsyncMiniModel in production)."""

    async def process(self, events: Sequence[AnyEvent]) -> list[Result | ErrorRecord]: ...


class StatefulStep(Protocol):
    """Per-key state kept across batches (conversations, devices).

    `ready` waits until the state of the batch's partitions is rebuilt; `annotate` sees each batch's valid
    events with their engine outcomes, in order, and may adjust the outcomes before routing (a device's history
    changes its anomaly score); `after_batch` returns what the state emits (closed conversations, windows,
    changelog writes), delivered with the batch.
    """

    async def ready(self, records: Sequence[InputRecord]) -> None: ...

    async def annotate(
        self, valid: Sequence[tuple[AnyEvent, InputRecord]], outcomes: list[Result | ErrorRecord]
    ) -> list[Result | ErrorRecord]: ...

    async def after_batch(
        self, valid: Sequence[tuple[AnyEvent, InputRecord]], records: Sequence[InputRecord]
    ) -> list[OutputRecord]: ...


class TransactionScope(Protocol):
    """Holds the transactions of input partitions while a batch is delivered (a no-op under at-least-once)."""

    def hold(self, origins: Iterable[tuple[str, int]]) -> AbstractAsyncContextManager[None]: ...


class Sender(Protocol):
    """Schedules one record; the awaitable it returns resolves once the broker has acknowledged the record."""

    async def __call__(self, record: OutputRecord, /) -> Awaitable[object]: ...


def _json(model: Result | Any) -> bytes:
    return orjson.dumps(model.model_dump(mode="json", exclude_none=True))


def _event_time(event: AnyEvent) -> datetime | None:
    if isinstance(event, FeedEvent):
        return event.created_at
    if isinstance(event, IoTMessage):
        return event.ts
    return None


class BatchProcessor:
    """Turns one micro-batch of input records into exactly one output record each, in input order, and delivers them.

    Knows nothing of faust: records come in as plain data, outputs leave through `send`, so the streaming
    contract (one output per input, order, dead-letter bytes and headers) is testable without a broker.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        send: Sender,
        *,
        delivery_timeout_s: float = DELIVERY_TIMEOUT_S,
        stateful: StatefulStep | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._send = send
        self._delivery_timeout_s = delivery_timeout_s
        self._stateful = stateful
        prefix = settings.kafka.topic_prefix
        self._sink_topics = {kind: names.topic(prefix, logical) for kind, logical in names.SINK_TOPICS.items()}
        self._escalation_topic = names.topic(prefix, names.ESCALATION_TOPIC)
        self._deadletter_topic = names.topic(prefix, names.DEADLETTER_TOPIC)

    async def handle(self, records: Sequence[InputRecord]) -> list[OutputRecord]:
        """Plan and deliver one batch; returns only once every output is acknowledged by the broker."""
        metrics.INFLIGHT.inc(len(records))
        try:
            for record in records:
                metrics.EVENTS_IN.labels(topic=record.source.topic).inc()
            outputs = await self.plan(records)
            await self.deliver(outputs)
            return outputs
        finally:
            metrics.INFLIGHT.dec(len(records))

    async def plan(self, records: Sequence[InputRecord]) -> list[OutputRecord]:
        """Validate, infer and route: one output per input record, in input order."""
        if self._stateful is not None:
            await self._stateful.ready(records)
        parsed: list[AnyEvent | InputError] = []
        for record in records:
            try:
                parsed.append(parse_event(record.value or b"", max_bytes=self._settings.kafka.max_event_bytes))
            except InputError as exc:
                parsed.append(exc)
        valid = self._valid(parsed, records)
        inferred = await self._infer([event for event, _ in valid], [record for _, record in valid])
        if self._stateful is not None:
            inferred = await self._stateful.annotate(valid, inferred)
        outcomes = iter(inferred)
        outputs: list[OutputRecord] = []
        for record, item in zip(records, parsed, strict=True):
            if isinstance(item, InputError):
                outputs.append(self._dead_letter(record, record.key, item.code, str(item)))
            else:
                outputs.append(self.routed(record, item, next(outcomes)))
        if self._stateful is not None:
            # Whatever the state produced (closed conversations, windows, changelog writes) follows the batch's
            # own outputs and is acknowledged with them, before the batch's offsets are.
            outputs.extend(await self._stateful.after_batch(valid, records))
        return outputs

    async def deliver(self, outputs: Sequence[OutputRecord]) -> None:
        """Send every output in order, then wait for all broker acknowledgements (or raise DeliveryError)."""
        try:
            async with asyncio.timeout(self._delivery_timeout_s):
                # Scheduled one after another so the producer keeps their order per partition; awaited together
                # so a batch costs one round trip, not one per record.
                pending = [await self._send(output) for output in outputs]
                await asyncio.gather(*pending)
        except TimeoutError as exc:
            raise DeliveryError(
                f"{len(outputs)} outputs not acknowledged within {self._delivery_timeout_s:.0f}s"
            ) from exc
        except Exception as exc:  # any client failure means the batch is not known to be delivered
            raise DeliveryError(f"delivery failed: {type(exc).__name__}: {exc}") from exc
        self._count_delivered(outputs)

    # ---------------------------------------------------------------------------------------- internals
    @staticmethod
    def _valid(
        parsed: Sequence[AnyEvent | InputError], records: Sequence[InputRecord]
    ) -> list[tuple[AnyEvent, InputRecord]]:
        return [
            (item, record) for item, record in zip(parsed, records, strict=True) if not isinstance(item, InputError)
        ]

    async def _infer(self, events: list[AnyEvent], records: list[InputRecord]) -> list[Result | ErrorRecord]:
        if not events:
            return []
        started = time.monotonic()
        for record in records:
            metrics.QUEUE_WAIT.observe(max(started - record.consumed_at, 0.0))
        metrics.BATCH_SIZE.observe(len(events))
        outcomes = await self._engine.process(events)
        metrics.INFERENCE.observe(time.monotonic() - started)
        if len(outcomes) != len(events):  # results must stay aligned with offsets, or nothing can be acked safely
            raise InferenceError(f"engine returned {len(outcomes)} outcomes for {len(events)} events")
        return outcomes

    def routed(
        self, record: InputRecord, event: AnyEvent, outcome: Result | ErrorRecord, *, value: bytes | None = None
    ) -> OutputRecord:
        """The one output for an event's outcome; `value` is what a dead letter carries (default: the input's)."""
        key = names.record_key(event)
        origin = (record.source.topic, record.source.partition)
        routed = route(event, outcome)
        if isinstance(routed, ToDeadLetter):
            return self._dead_letter(record, key, routed.error.error, routed.error.message, value=value)
        if isinstance(routed, ToSink):
            topic = self._sink_topics[routed.result.kind]
            return OutputRecord(topic, key, _json(routed.result), (), "sink", (), _event_time(event), origin)
        escalation = routed.record
        return OutputRecord(
            self._escalation_topic,
            key,
            _json(escalation),
            (),
            "escalation",
            tuple(escalation.reasons),
            _event_time(event),
            origin,
        )

    def _dead_letter(
        self, record: InputRecord, key: bytes | None, error: str, message: str, *, value: bytes | None = None
    ) -> OutputRecord:
        headers = dead_letter_headers(record.source, error=error, message=message)
        origin = (record.source.topic, record.source.partition)
        body = record.value if value is None else value
        return OutputRecord(self._deadletter_topic, key, body, headers, "deadletter", (error,), None, origin)

    def attach(self, stateful: StatefulStep) -> None:
        """Set the state step after construction (it needs this processor to route what it emits)."""
        self._stateful = stateful

    async def infer(self, events: list[AnyEvent], records: list[InputRecord]) -> list[Result | ErrorRecord]:
        """Run the engine on events that are not input records themselves (assembled conversations)."""
        return await self._infer(events, records)

    @staticmethod
    def _count_delivered(outputs: Sequence[OutputRecord]) -> None:
        now = datetime.now(UTC)
        for output in outputs:
            if output.destination == "state":
                continue  # changelog writes are bookkeeping, not events out
            metrics.EVENTS_OUT.labels(topic=output.topic).inc()
            if output.destination == "deadletter":
                metrics.DEAD_LETTERS.labels(reason=output.reasons[0]).inc()
                continue
            for code in output.reasons:
                task, _, reason = code.partition(".")
                metrics.ESCALATIONS.labels(task=task, reason=reason or "unspecified").inc()
            if output.event_time is not None and output.event_time.tzinfo is not None:
                metrics.EVENT_TO_SINK.observe(max((now - output.event_time).total_seconds(), 0.0))


async def finish_even_if_cancelled(work: Coroutine[Any, Any, list[OutputRecord]]) -> list[OutputRecord]:
    """Run a batch to the end even when the agent is cancelled meanwhile, then pass the cancellation on.

    faust cancels agents on stop and on some rebalances, and `take_events` acks its buffered events on the way
    out; a batch stopped half-delivered would have its offsets committed with outputs missing.
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():  # the batch itself was cancelled, not just this wait
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result


def exit_undelivered(exc: BaseException) -> NoReturn:
    """End the process at once, before faust can commit offsets for a batch whose outputs may be missing.

    Raising instead would let `take_events` ack the batch on the way out and the shutdown commit would skip it.
    """
    log.critical("batch not delivered; exiting so it is redelivered after restart: %s", exc, exc_info=exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_UNDELIVERED)


def input_record(message: Any) -> InputRecord:
    """A faust/aiokafka consumer message as plain data."""
    time_in = getattr(message, "time_in", None)
    return InputRecord(
        source=Provenance(
            topic=str(message.topic),
            partition=int(message.partition),
            offset=int(message.offset),
            headers=normalize_headers(message.headers),
        ),
        key=message.key,
        value=message.value,
        consumed_at=float(time_in) if time_in is not None else time.monotonic(),
    )


AgentFun = Callable[[Any], Coroutine[Any, Any, None]]


def batch_agent(
    processor: BatchProcessor,
    settings: Settings,
    transactions: TransactionScope | None = None,
    *,
    on_failure: Callable[[BaseException], NoReturn] = exit_undelivered,
) -> AgentFun:
    """The agent body for one input topic: `take_events` micro-batches, each delivered before it is acked.

    A batch's events are acked only after `handle` returned, i.e. after every output was acknowledged by the
    broker; in exactly-once mode all of it happens while the batch holds its partitions' transactions.
    """
    max_events = settings.worker.batch_max_events
    within_s = settings.worker.batch_max_wait_ms / 1000

    async def agent(stream: Any) -> None:
        async def unit(events: Sequence[Any]) -> list[OutputRecord]:
            records = [input_record(e.message) for e in events]
            origins = {(r.source.topic, r.source.partition) for r in records}
            async with transactions.hold(origins) if transactions is not None else contextlib.nullcontext():
                outputs = await processor.handle(records)
                for event in events:  # take_events would ack them too, but after the transaction is released
                    await stream.ack(event)
            return outputs

        batches: AsyncIterable[Sequence[Any]] = stream.take_events(max_events, within=within_s)
        async for events in batches:
            try:
                await finish_even_if_cancelled(unit(events))
            except Exception as exc:  # CancelledError passes: the batch was finished before it propagated
                on_failure(exc)

    return agent
