"""The escalator's stream layer without a broker: what each record becomes, and which offsets may be committed."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import TopicPartition

from pipeline.escalation.escalator import Outcome
from pipeline.models import AnyEvent, EscalationRecord, LabelRecord, ReviewRecord, ToReview, ToSink
from pipeline.settings import KafkaSettings, Settings
from pipeline.stream import names
from pipeline.stream.deadletter import Provenance
from pipeline.stream.escalator import EscalationHandler, Plan
from pipeline.stream.offsets import OffsetLedger
from pipeline.stream.worker import InputRecord
from tests.escalation_support import AT, conversation_event, escalation, feed_event

SETTINGS = Settings(kafka=KafkaSettings(topic_prefix="t."))
TP = TopicPartition("t.escalations", 1)


class FixedEscalator:
    """Answers every record with the outcome made by `make`, or raises when told to."""

    def __init__(self, make: Any) -> None:
        self.make = make

    async def settle(self, record: EscalationRecord, event: AnyEvent) -> Outcome:
        outcome: Outcome = self.make(record)
        return outcome


def plan(value: bytes | None, make: Any, *, key: bytes | None = b"k") -> Plan:
    handler = EscalationHandler(SETTINGS, FixedEscalator(make))  # type: ignore[arg-type]
    record = InputRecord(Provenance("t.escalations", 1, 42), key, value, consumed_at=0.0)
    return asyncio.run(handler.plan(record))


def as_bytes(record: EscalationRecord) -> bytes:
    return orjson.dumps(record.model_dump(mode="json", exclude_none=True))


def settled(record: EscalationRecord) -> ToSink:
    result = record.result.model_copy(update={"route": "sink", "decided_by": "large-model"})
    label = LabelRecord(
        id=record.id,
        kind=record.kind,
        task="classify",
        text="t",
        label_set="feed",
        label="world",
        source="large-model",
        decided_by="big",
        decided_at=AT,
    )
    return ToSink(result=result, labels=(label,), settled_by="large-model")


def to_review(record: EscalationRecord) -> ToReview:
    review = ReviewRecord(
        id=record.id,
        kind=record.kind,
        reasons=record.reasons,
        review_reasons=["budget.hard_cap"],
        event=record.event,
        result=record.result,
        sent_at=AT,
    )
    return ToReview(record=review)


def test_a_settled_record_goes_to_its_sink_keyed_like_the_original_and_labels_keyed_task_id() -> None:
    record, _ = escalation(conversation_event("conv-7", [("a", "hi"), ("b", "bye")]), ["classify.low_confidence"])
    out = plan(as_bytes(record), settled)
    sink, label = out.deliveries
    assert (sink.topic, sink.key, sink.destination) == ("t.transcripts.enriched", b"conv-7", "sink")
    assert orjson.loads(sink.value or b"")["decided_by"] == "large-model"
    assert (label.topic, label.key, label.destination) == ("t.labels", b"classify:conv-7", "labels")
    assert (out.outcome, out.reason) == ("sink", "large-model")


def test_a_record_for_review_goes_to_the_review_topic() -> None:
    record, _ = escalation(feed_event("p1", "x"), ["classify.low_confidence"])
    out = plan(as_bytes(record), to_review)
    [review] = out.deliveries
    assert (review.topic, review.key) == ("t.review", b"p1")
    assert orjson.loads(review.value or b"")["review_reasons"] == ["budget.hard_cap"]
    assert (out.outcome, out.reason) == ("review", "budget.hard_cap")


def test_undecodable_records_are_dead_letters_with_their_original_bytes() -> None:
    """Not JSON, a JSON that is no escalation record, and a null value: each a dead letter, bytes and key as read."""
    record, _ = escalation(feed_event("p1", "x"), ["classify.low_confidence"])
    broken_event = orjson.loads(as_bytes(record))
    broken_event["event"] = {"kind": "feed", "id": "p1"}  # no text, no created_at
    cases = [(b"\xff{not json", "decode_error"), (b'{"id": 1}', "schema_error"), (None, "decode_error")]
    cases.append((orjson.dumps(broken_event), "schema_error"))
    for value, error in cases:
        out = plan(value, settled, key=b"orig-key")
        [dead] = out.deliveries
        headers = dict(dead.headers)
        assert (dead.topic, dead.key, dead.value) == ("t.deadletter", b"orig-key", value)
        assert headers[names.DLQ_ERROR_CLASS] == error.encode() and headers[names.DLQ_SOURCE_OFFSET] == b"42"
        assert (out.outcome, out.reason) == ("deadletter", error)


def test_a_record_that_breaks_the_escalator_is_set_aside_not_fatal() -> None:
    def boom(record: EscalationRecord) -> Outcome:
        raise RuntimeError("bug")

    record, _ = escalation(feed_event("p1", "x"), ["classify.low_confidence"])
    out = plan(as_bytes(record), boom)
    assert out.outcome == "deadletter" and out.reason == "escalation_error"
    assert dict(out.deliveries[0].headers)[names.DLQ_ERROR_MESSAGE] == b"RuntimeError: bug"


def test_offsets_commit_only_up_to_the_first_unfinished_record() -> None:
    """Records 10-14 taken; 11, 12 and 14 finish first: nothing is committable until 10 finishes, then 13 (the next
    to read after 10-12); after 13, 15."""
    ledger = OffsetLedger()
    for offset in range(10, 15):
        ledger.take(TP, offset)
    for offset in (11, 12, 14):
        ledger.finish(TP, offset)
    assert ledger.committable() == {} and ledger.in_flight() == 5
    ledger.finish(TP, 10)
    assert ledger.committable() == {TP: 13}
    ledger.committed({TP: 13})
    assert ledger.committable() == {}
    ledger.finish(TP, 13)
    assert ledger.committable() == {TP: 15} and ledger.in_flight() == 0


def test_revoked_partitions_are_forgotten() -> None:
    other = TopicPartition("t.escalations", 2)
    ledger = OffsetLedger()
    ledger.take(TP, 0)
    ledger.take(other, 0)
    ledger.finish(TP, 0)
    ledger.finish(other, 0)
    assert ledger.committable([TP]) == {TP: 1}
    ledger.forget([TP])
    ledger.finish(TP, 0)  # a straggler of a revoked partition changes nothing
    assert ledger.committable() == {other: 1}


# ------------------------------------------------------------------------------ the loop, on fake clients
class FakeConsumer:
    """Hands out scripted messages (as many as asked for), records pauses, resumes and commits."""

    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages
        self.paused: set[TopicPartition] = set()
        self.pauses = 0
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)
        self.pauses += 1

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if TP in self.paused or not self.messages:
            await asyncio.sleep(0.01)
            return {}
        taken, self.messages = self.messages[:max_records], self.messages[max_records:]
        return {TP: taken}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


class FakeProducer:
    """Acknowledges every send, unless its value is in `fail`."""

    def __init__(self, fail: frozenset[bytes] = frozenset()) -> None:
        self.sent: list[tuple[str, bytes | None]] = []
        self.fail = fail

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None, headers: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if value is not None and any(marker in value for marker in self.fail):
            future.set_exception(OSError("broker gone"))
        else:
            self.sent.append((topic, value))
            future.set_result(None)
        return future


class SlowEscalator:
    """Settles record n after (5 - n) x 10 ms, so later offsets finish first."""

    blocked = False

    async def settle(self, record: EscalationRecord, event: AnyEvent) -> Outcome:
        await asyncio.sleep((5 - int(record.id.rsplit("-", 1)[1])) * 0.01)
        return settled(record)


def messages(count: int) -> list[Any]:
    from types import SimpleNamespace

    out = []
    for n in range(count):
        record, _ = escalation(feed_event(f"p-{n}", "x"), ["classify.low_confidence"])
        out.append(
            SimpleNamespace(
                topic=TP.topic, partition=TP.partition, offset=n, key=b"k", value=as_bytes(record), headers=[]
            )
        )
    return out


def run_loop(consumer: FakeConsumer, producer: FakeProducer, escalator: Any, until: Any) -> int:
    from pipeline.stream.escalator import EscalatorRunner

    async def main() -> int:
        runner = EscalatorRunner(
            SETTINGS,
            EscalationHandler(SETTINGS, escalator),
            escalator,
            consumer,
            producer,
            commit_interval_s=0.01,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        for _ in range(500):
            if until() or task.done():
                break
            await asyncio.sleep(0.01)
        stop.set()
        return await task

    return asyncio.run(main())


def test_the_loop_delivers_everything_then_commits_past_the_last_offset() -> None:
    """Five records finishing in reverse order (4 first, 0 last): all delivered (a sink and a label record each), exit
    0, and the only commit is 5, made after record 0, the last to finish: nothing was committed ahead of delivery."""
    consumer, producer = FakeConsumer(messages(5)), FakeProducer()
    code = run_loop(consumer, producer, SlowEscalator(), lambda: len(producer.sent) == 10)
    assert code == 0 and len(producer.sent) == 10
    assert consumer.commits == [{TP: 5}]


def test_an_undelivered_output_ends_the_loop_with_75_and_its_offset_uncommitted() -> None:
    """Record 2's output is refused: the loop stops with exit 75 and no commit reaches past offset 2."""
    consumer = FakeConsumer(messages(5))
    producer = FakeProducer(fail=frozenset({b'"p-2"'}))
    code = run_loop(consumer, producer, SlowEscalator(), lambda: False)
    assert code == 75
    assert all(c[TP] <= 2 for c in consumer.commits)


def test_an_open_breaker_in_mode_wait_pauses_consumption() -> None:
    """While the escalator is blocked no record is taken; once it is not, the partition is resumed and all settle."""
    escalator = SlowEscalator()
    escalator.blocked = True
    consumer, producer = FakeConsumer(messages(3)), FakeProducer()
    seen: list[int] = []

    def until() -> bool:
        seen.append(len(consumer.messages))
        if len(seen) == 20:
            escalator.blocked = False
        return len(producer.sent) == 6

    assert run_loop(consumer, producer, escalator, until) == 0
    assert seen[:19] == [3] * 19 and consumer.pauses >= 1 and consumer.paused == set()
