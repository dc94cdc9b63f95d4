"""The stream agents: micro-batch each input topic, run the mini model off the loop, route, deliver, then ack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn, Protocol

from aiokafka import errors as aiokafka_errors

from pipeline import logs, metrics
from pipeline.codec import encode
from pipeline.errors import DeliveryError, InferenceError, InputError
from pipeline.escalation.counterfactual import Counterfactual, Estimate
from pipeline.models import FAMILIES, AnyEvent, ErrorRecord, Scores, ToDeadLetter, ToSink
from pipeline.settings import Settings
from pipeline.stages.inputs import Input
from pipeline.stages.route import Router
from pipeline.stages.validate import best_effort_id, parse_event
from pipeline.stream import names
from pipeline.stream.deadletter import Headers, Provenance, dead_letter_headers, normalize_headers
from pipeline.stream.message_sizes import record_size
from pipeline.stream.registry import RegistryCodec
from pipeline.stream.stalls import Patience

log = logging.getLogger(__name__)

# `window`: an IoT window summary (a sink record that stands for no single input, so not a settled result).
Destination = Literal["sink", "escalation", "deadletter", "window", "state"]

# aiokafka retries a send until its own request timeout; a batch still unacknowledged after this long means the
# broker is unreachable, and the worker exits so the batch is redelivered from the last commit.
DELIVERY_TIMEOUT_S = 120.0
# EX_TEMPFAIL: the batch could not be delivered; restarting the worker retries it.
EXIT_UNDELIVERED = 75
# What the broker (or the producer's own size check) refuses for one record alone: retrying never helps, so the record's
# input becomes a dead letter instead of failing its batch for ever.
_REFUSED_RECORD = (
    aiokafka_errors.MessageSizeTooLargeError,
    aiokafka_errors.RecordTooLargeError,
    aiokafka_errors.InvalidMessageError,
    aiokafka_errors.CorruptRecordException,
    aiokafka_errors.InvalidTimestampError,
)


@dataclass(frozen=True)
class InputRecord:
    """One consumed record, as read: the value is never re-encoded, so a dead letter can carry it untouched."""

    source: Provenance
    key: bytes | None
    value: bytes | None
    consumed_at: float  # time.monotonic() when the consumer handed the record over
    produced_at: float | None = None  # the record's Kafka timestamp (epoch seconds), for produce-to-sink latency


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
    # The input record it stands for (None for state writes): where its dead letter comes from if the broker
    # refuses this record.
    input: InputRecord | None = field(default=None, compare=False, repr=False)
    produced_at: float | None = None  # the input record's Kafka timestamp (epoch seconds), for produce-to-sink
    # What asking the large model instead would have cost (sink and escalation results; for the metrics only).
    counterfactual: Estimate | None = field(default=None, compare=False, repr=False)


class Progress:
    """The offset after the last record processed per input partition, to tell a caught-up partition from one
    with a backlog (timers must not call a key idle while its next records are still unread)."""

    def __init__(self) -> None:
        self._next: dict[int, int] = {}

    def saw(self, records: Sequence[InputRecord]) -> None:
        for record in records:
            partition, offset = record.source.partition, record.source.offset
            self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def next_offset(self, partition: int) -> int:
        return self._next.get(partition, 0)


class Engine(Protocol):
    """What the batch processor needs from the mini model (AsyncMiniModel in production): scores, not routes."""

    async def score(self, events: Sequence[AnyEvent]) -> list[Scores | ErrorRecord]: ...


@dataclass(frozen=True)
class Emitted:
    """An event a stateful step made (an assembled conversation), and the input record it is accounted to."""

    event: AnyEvent
    origin: InputRecord


@dataclass(frozen=True)
class Stepped:
    """What a stateful step returns: the batch's scores as its state changes them, the events it emits, and its
    own records (changelog writes, closed windows) to deliver with the batch."""

    scores: list[Scores | ErrorRecord] = field(default_factory=list)
    emitted: list[Emitted] = field(default_factory=list)
    writes: list[OutputRecord] = field(default_factory=list)


class StatefulStep(Protocol):
    """Per-key state kept across batches (conversations, devices): a plain call that returns data.

    `ready` waits until the state of the batch's partitions is rebuilt; `step` sees each batch's valid events with
    their scores, in order, and returns a `Stepped` (a device's history changes its anomaly; a final segment emits
    its conversation). The processor then scores what was emitted and routes everything, once.
    """

    async def ready(self, records: Sequence[InputRecord]) -> None: ...

    async def step(
        self, valid: Sequence[tuple[AnyEvent, InputRecord]], scores: list[Scores | ErrorRecord]
    ) -> Stepped: ...


class TransactionScope(Protocol):
    """Holds the transactions of input partitions while a batch is delivered (a no-op under at-least-once)."""

    def hold(
        self, origins: Iterable[tuple[str, int]], *, within_s: float | None = None
    ) -> AbstractAsyncContextManager[None]: ...


class Sender(Protocol):
    """Schedules one record; the awaitable it returns resolves once the broker has acknowledged the record."""

    async def __call__(self, record: OutputRecord, /) -> Awaitable[object]: ...


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
        reading: Input | None = None,
        registry: RegistryCodec | None = None,
        size_limits: Mapping[str, int] | None = None,
        patience: Patience | None = None,
    ) -> None:
        self._settings = settings
        # How a batch that failed to deliver is retried (at-least-once); without it a failure is raised at once.
        self._patience = patience
        # max.message.bytes per output topic, as the broker has it (message_sizes.topic_limits); a topic not in it is
        # not checked (the producer's own limit, PRODUCER_MAX_REQUEST_BYTES, still applies).
        self._size_limits = dict(size_limits or {})
        self._registry = registry  # decodes registry-framed inputs and frames sink values (docs/registry.md)
        self._engine = engine
        self._send = send
        self._delivery_timeout_s = delivery_timeout_s
        self._stateful = stateful
        self._router = Router.configure(settings)
        self.progress = Progress()
        self._sink_topics = {kind: settings.topic(family.sink_topic) for kind, family in FAMILIES.items()}
        self._escalation_topic = settings.topic(names.ESCALATION_TOPIC)
        self._deadletter_topic = settings.topic(names.DEADLETTER_TOPIC)
        self._reading = reading or Input(topic="", family="feed")
        self._family = self._reading.family  # the label of this input's metrics
        self._counterfactual = Counterfactual(settings)

    @property
    def delivery_timeout_s(self) -> float:
        return self._delivery_timeout_s

    async def handle(self, records: Sequence[InputRecord]) -> list[OutputRecord]:
        """Plan and deliver one batch; returns only once every output is acknowledged by the broker."""
        metrics.INFLIGHT.inc(len(records))
        try:
            for record in records:
                metrics.EVENTS_IN.labels(topic=record.source.topic, family=self._family).inc()
            with batch_scope():
                return await self._deliver_patiently(await self.plan(records), records)
        finally:
            metrics.INFLIGHT.dec(len(records))

    async def _deliver_patiently(
        self, outputs: Sequence[OutputRecord], records: Sequence[InputRecord]
    ) -> list[OutputRecord]:
        """Deliver a planned batch, sending all of it again in order after a failure for as long as the patience
        allows (the batch is planned once: its state steps must not run twice)."""
        attempt = 0
        while True:
            try:
                delivered = await self.deliver(outputs)
            except DeliveryError as exc:
                if self._patience is None:
                    raise
                attempt += 1
                # Raises when the process must exit instead; the batch's offsets are then never committed.
                await self._patience.wait(attempt, exc, where=span(_where(r) for r in records))
                continue
            if attempt and self._patience is not None:
                self._patience.delivered()
            return delivered

    async def plan(self, records: Sequence[InputRecord]) -> list[OutputRecord]:
        """Validate, score, step the state, route: one output per input record, in input order, then what the
        state emitted and wrote."""
        if self._stateful is not None:
            await self._stateful.ready(records)
        parsed = await self._parse(records)
        valid = [
            (item, record) for item, record in zip(parsed, records, strict=True) if not isinstance(item, InputError)
        ]
        scored = await self._score([event for event, _ in valid], [record for _, record in valid])
        stepped = await self._stateful.step(valid, scored) if self._stateful is not None else Stepped(scored)
        outcomes = iter(stepped.scores)
        outputs: list[OutputRecord] = []
        for record, item in zip(records, parsed, strict=True):
            if isinstance(item, InputError):
                event_id = best_effort_id(record.value or b"", self._reading.mapping)
                outputs.append(self._dead_letter(record, record.key, item.code, str(item), event_id=event_id))
            else:
                outputs.append(self._routed(record, item, next(outcomes)))
        # What the state produced (closed conversations, windows, changelog writes) follows the batch's own outputs
        # and is acknowledged with them, before the batch's offsets are.
        outputs.extend(await self.finish(stepped))
        self.progress.saw(records)
        return outputs

    async def finish(self, stepped: Stepped) -> list[OutputRecord]:
        """Score and route the events a step emitted, then its own writes: the outputs to deliver for them."""
        events = [emitted.event for emitted in stepped.emitted]
        origins = [emitted.origin for emitted in stepped.emitted]
        scored = await self._score(events, origins)
        outputs = [
            self._routed(origin, event, outcome, emitted=True)
            for event, origin, outcome in zip(events, origins, scored, strict=True)
        ]
        return outputs + stepped.writes

    async def deliver(self, outputs: Sequence[OutputRecord]) -> list[OutputRecord]:
        """Send every output in order, then wait for all broker acknowledgements (or raise DeliveryError); returns
        what was delivered.

        At-least-once, a record the broker refuses for itself (too large, invalid) costs its input a dead letter
        (`output_rejected`), not the batch: the rest is acknowledged and the batch goes on. Inside exactly-once
        transactions a refused record fails the transaction, so there the size check before sending must hold.
        """
        try:
            async with asyncio.timeout(self._delivery_timeout_s):
                refused = await self._send_all(outputs)
                if refused and self._settings.kafka.processing_guarantee == "at_least_once":
                    replacements = [self._refused(output, exc) for output, exc in refused]
                    outputs = [o for o in outputs if all(o is not r for r, _ in refused)] + replacements
                    refused = await self._send_all(replacements)
                if refused:
                    raise refused[0][1]
        except TimeoutError as exc:
            raise DeliveryError(
                f"{len(outputs)} outputs not acknowledged within {self._delivery_timeout_s:.0f}s"
            ) from exc
        except Exception as exc:  # any client failure means the batch is not known to be delivered
            raise DeliveryError(f"delivery failed: {type(exc).__name__}: {exc}") from exc
        self._count_delivered(outputs)
        return list(outputs)

    # ---------------------------------------------------------------------------------------- internals
    async def _send_all(self, outputs: Sequence[OutputRecord]) -> list[tuple[OutputRecord, Exception]]:
        """Send `outputs` and wait for their acknowledgements; the ones the broker (or the producer) refused for
        themselves, with why. Any other failure is raised."""
        pending: list[tuple[OutputRecord, Awaitable[object]]] = []
        refused: list[tuple[OutputRecord, Exception]] = []
        for output in outputs:
            # Scheduled one after another so the producer keeps their order per partition; awaited together so a
            # batch costs one round trip, not one per record.
            try:
                pending.append((output, await self._send(output)))
            except _REFUSED_RECORD as exc:  # the producer's own check, before anything is sent
                if output.input is None:
                    raise
                refused.append((output, exc))
        acks = await asyncio.gather(*(ack for _, ack in pending), return_exceptions=True)
        for (output, _), ack in zip(pending, acks, strict=True):
            if isinstance(ack, _REFUSED_RECORD) and output.input is not None:
                refused.append((output, ack))
            elif isinstance(ack, BaseException):
                raise ack
        return refused

    def _refused(self, output: OutputRecord, exc: Exception) -> OutputRecord:
        """The dead letter of the input behind an output the broker refused."""
        assert output.input is not None  # state writes are never refused for themselves: _send_all raises those
        # _dead_letter logs it (the class at WARNING with where it was read, this message at DEBUG).
        message = f"the broker refused the {output.destination} record for {output.topic}: {type(exc).__name__}: {exc}"
        return self._dead_letter(output.input, output.key, "output_rejected", message)

    async def _parse(self, records: Sequence[InputRecord]) -> list[AnyEvent | InputError]:
        """Each record's event, or the InputError that dead-letters it."""
        mapping, kind = self._reading.mapping, self._reading.kind
        if self._registry is not None:  # a registry that is down raises RegistryError here: the batch fails
            await self._registry.start()
            return await self._registry.parse([record.value or b"" for record in records], mapping=mapping, kind=kind)
        parsed: list[AnyEvent | InputError] = []
        max_bytes = self._settings.kafka.max_event_bytes
        for record in records:
            try:
                parsed.append(parse_event(record.value or b"", max_bytes=max_bytes, mapping=mapping, kind=kind))
            except InputError as exc:
                parsed.append(exc)
        return parsed

    async def _score(self, events: list[AnyEvent], records: list[InputRecord]) -> list[Scores | ErrorRecord]:
        if not events:
            return []
        started = time.monotonic()
        queue_wait = metrics.QUEUE_WAIT.labels(family=self._family)
        for record in records:
            queue_wait.observe(max(started - record.consumed_at, 0.0))
        metrics.BATCH_SIZE.labels(family=self._family).observe(len(events))
        outcomes = await self._engine.score(events)
        metrics.INFERENCE.labels(family=self._family).observe(time.monotonic() - started)
        if len(outcomes) != len(events):  # results must stay aligned with offsets, or nothing can be acked safely
            raise InferenceError(f"engine returned {len(outcomes)} outcomes for {len(events)} events")
        return outcomes

    def _routed(
        self, record: InputRecord, event: AnyEvent, outcome: Scores | ErrorRecord, *, emitted: bool = False
    ) -> OutputRecord:
        """The one output for an event: routed once, its topic chosen by the outcome's type."""
        key = event.key()
        origin = (record.source.topic, record.source.partition)
        routed = self._router.route(event, outcome)
        # An emitted event (an assembled conversation) has no input bytes of its own: it is dead-lettered as the
        # event it was made into. Encoded only when it fails.
        own_bytes: Callable[[], bytes | None] = (lambda: encode(event)) if emitted else (lambda: None)
        if isinstance(routed, ToDeadLetter):
            error = routed.error
            value = own_bytes()
            return self._dead_letter(record, key, error.error, error.message, value=value, event_id=event.id)
        produced = record.produced_at
        if isinstance(routed, ToSink):
            topic = self._sink_topics[routed.result.kind]
            result = routed.result
            value = self._registry.sink_value(result, result.kind) if self._registry is not None else encode(result)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("to the sink %s", topic, extra=logs.event_fields(event.id, *_where(record)))
            cost = self._counterfactual.estimate(event, result)
            output = OutputRecord(
                topic,
                key,
                value,
                (),
                "sink",
                (),
                event.event_time(),
                origin,
                input=record,
                produced_at=produced,
                counterfactual=cost,
            )
        else:
            escalation = routed.record
            reasons = tuple(escalation.reasons)
            if log.isEnabledFor(logging.DEBUG):
                where = _where(record)
                log.debug(
                    "escalated: %s", ", ".join(reasons), extra=logs.event_fields(event.id, *where, reasons=reasons)
                )
            topic, value = self._escalation_topic, encode(escalation)
            cost = self._counterfactual.estimate(event, escalation.result)
            output = OutputRecord(
                topic,
                key,
                value,
                (),
                "escalation",
                reasons,
                event.event_time(),
                origin,
                input=record,
                produced_at=produced,
                counterfactual=cost,
            )
        too_large = self._oversize(output)
        if too_large:  # never sent: the broker would refuse it on every retry, and the batch with it
            return self._dead_letter(record, key, "output_too_large", too_large, value=own_bytes(), event_id=event.id)
        return output

    def _oversize(self, output: OutputRecord) -> str:
        """Why `output` cannot be written to its topic ("" when it can)."""
        limit = self._size_limits.get(output.topic)
        size = record_size(output.key, output.value, output.headers)
        if limit is None or size <= limit:
            return ""
        return (
            f"the {output.destination} record would be {size} bytes; topic {output.topic} takes at most {limit} "
            "(max.message.bytes)"
        )

    def _dead_letter(
        self,
        record: InputRecord,
        key: bytes | None,
        error: str,
        message: str,
        *,
        value: bytes | None = None,
        event_id: str | None = None,
    ) -> OutputRecord:
        # The code only above DEBUG: the message may quote the event (a schema error shows the value it rejected).
        fields = logs.event_fields(event_id, *_where(record), error=error)
        log.warning("to the dead-letter topic: %s", error, extra=fields)
        log.debug("dead letter %s: %s", error, message, extra=fields)
        headers = dead_letter_headers(record.source, error=error, message=message)
        origin = (record.source.topic, record.source.partition)
        body = record.value if value is None else value
        produced = record.produced_at
        output = OutputRecord(
            self._deadletter_topic, key, body, headers, "deadletter", (error,), None, origin, produced_at=produced
        )
        too_large = self._oversize(output)
        if too_large:
            # Even the bytes do not fit the dead-letter topic: the dead letter names where they are instead (the
            # source coordinates in its headers), so the input is accounted for and can be read while retained.
            note = f"{message}; value left out: {too_large}, read it at its source coordinates"
            headers = dead_letter_headers(record.source, error=error, message=note)
            return OutputRecord(
                self._deadletter_topic, key, None, headers, "deadletter", (error,), None, origin, produced_at=produced
            )
        return output

    def _count_delivered(self, outputs: Sequence[OutputRecord]) -> None:
        family = self._family
        now = datetime.now(UTC)
        epoch_now = now.timestamp()
        for output in outputs:
            if output.destination == "state":
                continue  # changelog writes are bookkeeping, not events out
            metrics.EVENTS_OUT.labels(topic=output.topic, family=family, destination=output.destination).inc()
            if output.produced_at is not None:
                metrics.PRODUCE_TO_SINK.labels(family=family).observe(max(epoch_now - output.produced_at, 0.0))
            if output.destination == "deadletter":
                metrics.DEAD_LETTERS.labels(reason=output.reasons[0], family=family).inc()
                continue
            for code in output.reasons:
                task, _, reason = code.partition(".")
                metrics.ESCALATIONS.labels(task=task, reason=reason or "unspecified", family=family).inc()
            if output.event_time is not None and output.event_time.tzinfo is not None:
                metrics.EVENT_TO_SINK.labels(family=family).observe(max((now - output.event_time).total_seconds(), 0.0))
            if output.counterfactual is not None:
                cost = output.counterfactual
                metrics.COUNTERFACTUAL_COST.labels(family=family).inc(cost.usd)
                metrics.COUNTERFACTUAL_TOKENS.labels(family=family, direction="in").inc(cost.tokens_in)
                metrics.COUNTERFACTUAL_TOKENS.labels(family=family, direction="out").inc(cost.tokens_out)


def _where(record: InputRecord) -> tuple[str, int, int]:
    """Where a record was read (topic, partition, offset), for its log lines."""
    return record.source.topic, record.source.partition, record.source.offset


@contextlib.contextmanager
def batch_scope() -> Iterator[None]:
    """Every line logged for one batch carries its `batch_id`: the one already set (the agent's), else a new one."""
    if "batch_id" in logs.current():
        yield
        return
    with logs.log_context(batch_id=uuid.uuid4().hex[:16]):
        yield


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


def batch_span(events: Sequence[Any]) -> str:
    """`topic[partition]@first-last, ...` of a batch's faust events, in partition order."""
    return span((str(e.message.topic), int(e.message.partition), int(e.message.offset)) for e in events)


def span(coordinates: Iterable[tuple[str, int, int]]) -> str:
    """`topic[partition]@first-last, ...` of records' (topic, partition, offset), in partition order."""
    spans: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset in coordinates:
        spans.setdefault((topic, partition), []).append(offset)
    return ", ".join(f"{t}[{p}]@{min(o)}-{max(o)}" for (t, p), o in sorted(spans.items()))


def exit_undelivered(exc: BaseException) -> NoReturn:
    """End the process at once, before faust can commit offsets for a batch whose outputs may be missing.

    Raising instead would let `take_events` ack the batch on the way out and the shutdown commit would skip it.
    """
    log.critical("batch not delivered; exiting so it is redelivered after restart: %s", exc, exc_info=exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_UNDELIVERED)


def input_record(message: Any, *, timestamp_ms: bool = False) -> InputRecord:
    """A faust/aiokafka consumer message as plain data (faust's timestamps are seconds, aiokafka's milliseconds)."""
    time_in = getattr(message, "time_in", None)
    timestamp = getattr(message, "timestamp", None)
    produced_at = None
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool) and timestamp > 0:
        produced_at = timestamp / 1000 if timestamp_ms else float(timestamp)
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
        produced_at=produced_at,
    )


AgentFun = Callable[[Any], Coroutine[Any, Any, None]]


def batch_agent(
    processor: BatchProcessor,
    settings: Settings,
    transactions: TransactionScope | None = None,
    *,
    on_failure: Callable[[BaseException], NoReturn] = exit_undelivered,
    commit: Callable[[set[tuple[str, int]]], Awaitable[object]] | None = None,
) -> AgentFun:
    """The agent body for one input topic: `take_events` micro-batches, each delivered before it is acked.

    A batch's events are acked only after `handle` returned, i.e. after every output was acknowledged by the
    broker; in exactly-once mode all of it happens while the batch holds its partitions' transactions. `commit`
    (at-least-once) commits the batch's partitions right after.
    """
    max_events = settings.worker.batch_max_events
    within_s = settings.worker.batch_max_wait_ms / 1000
    # A commit waits for the group or transaction coordinator without a bound of its own while the broker is gone;
    # a worker that cannot commit for as long as it may wait for a delivery exits 75 instead of hanging.
    commit_within_s = settings.worker.delivery_timeout_s

    async def agent(stream: Any) -> None:
        async def unit(events: Sequence[Any]) -> list[OutputRecord]:
            records = [input_record(e.message) for e in events]
            origins = {(r.source.topic, r.source.partition) for r in records}
            held: AbstractAsyncContextManager[None] = (
                transactions.hold(origins, within_s=commit_within_s)
                if transactions is not None
                else contextlib.nullcontext()
            )
            async with held:
                outputs = await processor.handle(records)
                for event in events:  # take_events would ack them too, but after the transaction is released
                    await stream.ack(event)
            if commit is not None:
                # At once, not at the next periodic commit: a crash now repeats at most the batches in flight.
                try:
                    async with asyncio.timeout(commit_within_s):
                        await commit(origins)
                except TimeoutError as exc:
                    raise DeliveryError(f"offsets not committed within {commit_within_s:.0f}s") from exc
            return outputs

        batches: AsyncIterable[Sequence[Any]] = stream.take_events(max_events, within=within_s)
        async for events in batches:
            with batch_scope():  # set here, so the line of a batch that fails to deliver carries its id too
                try:
                    await finish_even_if_cancelled(unit(events))
                except Exception as exc:  # CancelledError passes: the batch was finished before it propagated
                    # Where it happened, for the on-call person: the input partitions and offsets of the batch.
                    log.critical("batch not delivered, read from %s", batch_span(events))
                    on_failure(exc)

    return agent
