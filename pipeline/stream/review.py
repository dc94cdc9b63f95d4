"""`minnow review`: review records to a person, verdicts to the labels topic, the offset committed after that."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from pipeline.codec import encode
from pipeline.errors import DeliveryError, StreamToolError
from pipeline.logs import event_fields, without_input
from pipeline.models import ReviewRecord
from pipeline.review.prompt import Accept, ScriptedAnswer, ask, decide
from pipeline.review.verdicts import Decision, Quit, Skip, Verdict, label_key, label_records
from pipeline.settings import KafkaSettings
from pipeline.stream import clients
from pipeline.stream.clients import KafkaRecord, partitions, started
from pipeline.stream.names import REVIEW_SKIPS

log = logging.getLogger(__name__)

T = TypeVar("T")
# Decides one item; the string says where it is (partition, offset, how many are left) for the heading.
Decider = Callable[[ReviewRecord, str], Awaitable[Decision]]

# A person may think for a long time; without a poll for this long aiokafka leaves the group and the item
# in hand would be given to someone else.
REVIEW_MAX_POLL_INTERVAL_MS = 3_600_000
JOIN_WAIT_S = 60.0  # no partitions by then: every partition is held by other reviewers of the group
_POLL_MS = 500


@dataclass(frozen=True)
class ReviewOptions:
    review_topic: str
    labels_topic: str
    group_id: str
    reviewer: str
    follow: bool = False
    max_items: int | None = None
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000


@dataclass
class ReviewTally:
    """What one session did; `settled` + `skipped` + `unreadable` items were committed."""

    settled: int = 0
    label_records: int = 0
    skipped: int = 0
    unreadable: int = 0
    stopped_by_person: bool = False
    caught_up: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.settled + self.skipped

    def summary(self) -> str:
        text = f"settled {self.settled} ({self.label_records} label records), skipped {self.skipped}"
        if self.unreadable:
            text += f", {self.unreadable} unreadable passed over"
        return text


async def review(kafka: KafkaSettings, options: ReviewOptions, decider: Decider, out: TextIO) -> ReviewTally:
    """Take review records from the group's position until caught up (or `max_items`; or for ever with `follow`).

    Per item: the decision; for a verdict its label records go to the labels topic, for a skip the record goes back
    to the end of the review topic; once the broker has acknowledged that, the item's offset is committed. Quit
    commits nothing more, so an unfinished item is shown again next time.
    """
    own = await partitions(kafka, options.review_topic)
    await partitions(kafka, options.labels_topic)
    consumer = clients.consumer(
        kafka,
        options.review_topic,
        group_id=options.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_interval_ms=REVIEW_MAX_POLL_INTERVAL_MS,
        session_timeout_ms=options.session_timeout_ms,
        heartbeat_interval_ms=options.heartbeat_interval_ms,
    )
    await started(consumer, kafka)
    try:
        producer = await started(clients.producer(kafka), kafka)
    except StreamToolError:
        await consumer.stop()
        raise
    try:
        # What is waiting now is this session's queue; skips land after it, so they are not shown again today.
        ends = await consumer.end_offsets([TopicPartition(options.review_topic, n) for n in own])
        session = _Session(consumer=consumer, producer=producer, options=options, decider=decider, ends=ends, out=out)
        await session.run()
        return session.tally
    finally:
        await producer.stop()
        await consumer.stop()


@dataclass(kw_only=True)
class _Session:
    consumer: AIOKafkaConsumer
    producer: AIOKafkaProducer
    options: ReviewOptions
    decider: Decider
    ends: dict[TopicPartition, int]  # the queue of this session: what was waiting when it started
    out: TextIO
    tally: ReviewTally = field(default_factory=ReviewTally)
    idle_said: bool = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while self.options.max_items is None or self.tally.handled < self.options.max_items:
            batches = await self.consumer.getmany(timeout_ms=_POLL_MS, max_records=1)
            if not batches:
                if not self.consumer.assignment():
                    if loop.time() - started > JOIN_WAIT_S:
                        self.tally.notes.append("no review partitions were assigned: other reviewers hold them all")
                        return
                    continue
                if await self._caught_up():
                    if not self.options.follow:
                        self.tally.caught_up = True
                        return
                    if not self.idle_said:
                        self.out.write(f"caught up ({self.tally.summary()}); waiting for new items, Ctrl-C stops\n")
                        self.out.flush()
                        self.idle_said = True
                continue
            for tp, records in batches.items():
                for record in records:
                    if not self.options.follow and record.offset >= self.ends.get(tp, 0):
                        self.consumer.pause(tp)  # arrived after the start: for the next session
                        continue
                    self.idle_said = False
                    if not await self._one(tp, record):
                        self.tally.stopped_by_person = True
                        return

    async def _caught_up(self) -> bool:
        paused = self.consumer.paused()
        for tp in self.consumer.assignment():
            if tp not in paused and await self.consumer.position(tp) < self.ends.get(tp, 0):
                return False
        return True

    async def _left(self) -> int:
        paused = self.consumer.paused()
        left = 0
        for tp in self.consumer.assignment():
            if tp not in paused:
                left += max(0, self.ends.get(tp, 0) - await self.consumer.position(tp))
        return left

    async def _one(self, tp: TopicPartition, record: KafkaRecord) -> bool:
        """Handle one review record; False when the person quits."""
        try:
            if record.value is None:
                raise ValueError("a tombstone has no review record")
            item = ReviewRecord.model_validate_json(record.value)
        except (ValidationError, ValueError) as exc:
            log.warning(
                "review partition %d offset %d is not a review record; passed over: %s",
                tp.partition,
                record.offset,
                without_input(exc) if isinstance(exc, ValidationError) else exc,  # never the record's text
                extra=event_fields(None, tp.topic, tp.partition, record.offset),
            )
            self.tally.unreadable += 1
            await self._commit(tp, record.offset)
            return True
        left = "" if self.options.follow else f", {await self._left()} more waiting"
        decision = await self.decider(item, f"(partition {tp.partition} offset {record.offset}{left})")
        if isinstance(decision, Quit):
            return False
        if isinstance(decision, Skip):
            await self._requeue(record)
            self.tally.skipped += 1
        else:
            self.tally.label_records += await self._send_verdict(item, decision)
            self.tally.settled += 1
        await self._commit(tp, record.offset)
        return True

    async def _send_verdict(self, item: ReviewRecord, verdict: Verdict) -> int:
        records = label_records(item, verdict, reviewer=self.options.reviewer, now=datetime.now(UTC))
        futures = []
        for label in records:
            value, key = encode(label), label_key(label).encode()
            futures.append(await self._send(self.options.labels_topic, value, key, []))
        await _acknowledged(futures, f"the verdict on {item.id}", self.options.labels_topic)
        return len(records)

    async def _requeue(self, record: KafkaRecord) -> None:
        """The same bytes, key and headers, at the end of the review topic; the skip count goes up by one."""
        headers = [(name, value) for name, value in record.headers if name != REVIEW_SKIPS]
        skips = next((int(value) for name, value in record.headers if name == REVIEW_SKIPS and value.isdigit()), 0)
        headers.append((REVIEW_SKIPS, str(skips + 1).encode()))
        future = await self._send(self.options.review_topic, record.value, record.key, headers)
        await _acknowledged([future], f"the skipped item at offset {record.offset}", self.options.review_topic)

    async def _send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        try:
            future: asyncio.Future[Any] = await self.producer.send(topic, value, key=key, headers=list(headers))
        except KafkaError as exc:
            raise DeliveryError(f"could not send to {topic}: {type(exc).__name__}: {exc}") from exc
        return future

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            await self.consumer.commit({tp: offset + 1})
        except KafkaError as exc:
            # The verdict is on the labels topic already; a rebalance took the partition, so the item may be shown
            # once more (to someone), and the newer verdict replaces this one under compaction.
            log.warning("commit of review partition %d offset %d failed: %s", tp.partition, offset, exc)
            self.tally.notes.append(f"partition {tp.partition} offset {offset}: commit failed ({exc}); may come again")


async def _acknowledged(futures: Sequence[asyncio.Future[Any]], what: str, topic: str) -> None:
    results = await asyncio.gather(*futures, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise DeliveryError(
                f"{what} was not acknowledged by {topic}: {type(result).__name__}: {result}"
            ) from result


# -------------------------------------------------------------------------------------------- deciders
def person_at_terminal(out: TextIO) -> Decider:
    """The interactive decider: the prompt runs in a daemon thread, so heartbeats go on while a person thinks
    and Ctrl-C is not held up by a blocked read."""

    def write(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    async def decider(item: ReviewRecord, where: str) -> Decision:
        return await _in_daemon_thread(lambda: ask(item, input, write, where=where))

    return decider


def from_answers(answers: dict[str, ScriptedAnswer], accept: Accept | None, out: TextIO) -> Decider:
    """The scripted decider: an answers file by id, else the `accept` policy, else skip (left for a person)."""

    async def decider(item: ReviewRecord, where: str) -> Decision:
        decision = decide(item, answers.get(item.id), accept)
        shown = decision.describe() if isinstance(decision, Verdict) else "skipped: left for a person"
        out.write(f"{item.kind} {item.id} {where}: {shown}\n")
        out.flush()
        return decision

    return decider


async def _in_daemon_thread(work: Callable[[], T]) -> T:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def hand_over(settle: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (Ctrl-C): nobody waits for this answer
            loop.call_soon_threadsafe(settle)

    def target() -> None:
        try:
            value = work()
        except BaseException as exc:  # re-raised in the session by the awaiting coroutine
            error = exc
            hand_over(lambda: None if future.done() else future.set_exception(error))
        else:
            hand_over(lambda: None if future.done() else future.set_result(value))

    threading.Thread(target=target, name="minnow-review-prompt", daemon=True).start()
    return await future


def run(kafka: KafkaSettings, options: ReviewOptions, decider: Decider | None = None) -> int:
    out = sys.stdout
    tally = asyncio.run(review(kafka, options, decider or person_at_terminal(out), out))
    for note in tally.notes:
        print(f"note: {note}", file=sys.stderr)
    print(tally.summary() + ("; nothing left to review" if tally.caught_up else ""), file=out)
    return 0
