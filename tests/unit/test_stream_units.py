"""The stream worker without a broker: one output per input, dead letters intact, ack only after delivery."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn, cast

import orjson
import pytest
from aiokafka import errors as aiokafka_errors
from prometheus_client import REGISTRY

from pipeline import cli
from pipeline.errors import DeliveryError, InferenceError
from pipeline.escalation.tasks import build_prompt, tasks_for
from pipeline.models import (
    EVENT_ADAPTER,
    Anomaly,
    AnyEvent,
    Classification,
    ErrorRecord,
    EscalationRecord,
    InputInfo,
    ModelInfo,
    Scores,
)
from pipeline.settings import KafkaSettings, Settings, WorkerSettings
from pipeline.stream import names
from pipeline.stream.deadletter import MAX_MESSAGE_CHARS, Provenance, dead_letter_headers, normalize_headers
from pipeline.stream.worker import (
    BatchProcessor,
    InputRecord,
    OutputRecord,
    batch_agent,
    finish_even_if_cancelled,
    input_record,
)

PREFIX = "t."
MODEL = ModelInfo(name="mini", version="1", quantization="int8")
SETTINGS = Settings(
    kafka=KafkaSettings(topic_prefix=PREFIX, max_event_bytes=1024),
    worker=WorkerSettings(batch_max_events=4, batch_max_wait_ms=20),
)


def feed(event_id: str, text: str = "Stocks rallied today.") -> bytes:
    return orjson.dumps({"id": event_id, "source": "wire", "text": text, "created_at": "2026-11-20T09:00:00Z"})


def segment(event_id: str, conversation: str, seq: int) -> bytes:
    body = {"id": event_id, "conversation_id": conversation, "seq": seq, "speaker": "agent", "text": "hello"}
    return orjson.dumps(body)


def reading(event_id: str, device: str) -> bytes:
    return orjson.dumps({"id": event_id, "device_id": device, "ts": "2026-11-20T09:00:00Z", "readings": {"t": 1.0}})


def record(value: bytes | None, offset: int, *, topic: str = "feeds.in", key: bytes | None = None) -> InputRecord:
    return InputRecord(Provenance(PREFIX + topic, 2, offset), key, value, consumed_at=0.0)


UNSURE_LABEL = Classification(
    label="world", confidence=0.3, scores={"world": 0.3}, label_set="feed", method="zero-shot"
)
HIGH_ANOMALY = Anomaly(score=0.95, metrics={})


class FakeEngine:
    """Sinks every event, except ids listed as escalated (classify.low_confidence) or failing (an error record)."""

    def __init__(self, *, escalate: Sequence[str] = (), fail: Sequence[str] = (), drop_one: bool = False) -> None:
        self.escalate, self.fail, self.drop_one = set(escalate), set(fail), drop_one
        self.batches: list[list[str]] = []

    async def score(self, events: Sequence[AnyEvent]) -> list[Scores | ErrorRecord]:
        self.batches.append([e.id for e in events])
        out: list[Scores | ErrorRecord] = []
        for event in events:
            if event.id in self.fail:
                out.append(ErrorRecord(error="inference_error", message="boom", id=event.id))
                continue
            # Unsure scores earn the router's reasons classify.low_confidence and anomaly.high_score.
            unsure = event.id in self.escalate
            out.append(
                Scores(
                    id=event.id,
                    kind=event.kind,
                    classification=UNSURE_LABEL if unsure else None,
                    anomaly=HIGH_ANOMALY if unsure else None,
                    model=MODEL,
                    input=InputInfo(tokens=3, chunks=1, truncated=False),
                    timings={"batch_size": float(len(events))},
                )
            )
        return out[:-1] if self.drop_one else out


class FakeSender:
    """Records what is sent; acknowledges at once, later (hold) or never (fail); refuses records for `refuse_topic`
    as a broker refuses a record that is too large."""

    def __init__(self, *, hold: bool = False, fail: Exception | None = None, refuse_topic: str = "") -> None:
        self.hold, self.fail, self.refuse_topic = hold, fail, refuse_topic
        self.sent: list[OutputRecord] = []
        self.acks: list[asyncio.Future[None]] = []

    async def __call__(self, output: OutputRecord) -> asyncio.Future[None]:
        self.sent.append(output)
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if output.topic == self.refuse_topic:
            ack.set_exception(aiokafka_errors.MessageSizeTooLargeError("the broker refused it"))
        elif self.fail is not None:
            ack.set_exception(self.fail)
        elif not self.hold:
            ack.set_result(None)
        self.acks.append(ack)
        return ack

    def acknowledge_all(self) -> None:
        for ack in self.acks:
            if not ack.done():
                ack.set_result(None)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def handle(records: list[InputRecord], engine: FakeEngine, sender: FakeSender | None = None) -> list[OutputRecord]:
    processor = BatchProcessor(SETTINGS, engine, sender or FakeSender())
    return asyncio.run(processor.handle(records))


# ------------------------------------------------------------------------------------------ dead letters
def test_dead_letter_headers_name_the_source_and_start_at_attempt_one() -> None:
    now = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    headers = dict(dead_letter_headers(Provenance("t.feeds.in", 3, 42), error="schema_error", message="bad", now=now))
    assert headers == {
        names.DLQ_SOURCE_TOPIC: b"t.feeds.in",
        names.DLQ_SOURCE_PARTITION: b"3",
        names.DLQ_SOURCE_OFFSET: b"42",
        names.DLQ_ERROR_CLASS: b"schema_error",
        names.DLQ_ERROR_MESSAGE: b"bad",
        names.DLQ_FIRST_SEEN: b"2026-11-20T09:00:00.000+00:00",
        names.DLQ_ATTEMPT: b"1",
    }


def test_the_input_records_own_headers_travel_renamed_and_minnows_are_never_copied() -> None:
    """A producer's headers come with the dead letter under `minnow.original.` (so a producer's `minnow.error.class`
    cannot pass for Minnow's); a re-driven dead letter's renamed headers stay as they are, its `minnow.*` ones are
    written afresh, not copied."""
    produced = (("trace-id", b"abc"), ("minnow.error.class", b"spoofed"), ("minnow.original.tenant", b"t1"))
    headers = dead_letter_headers(Provenance("t.feeds.in", 0, 7, produced), error="schema_error", message="bad")
    assert dict(headers)[names.DLQ_ERROR_CLASS] == b"schema_error"
    assert [h for h in headers if h[0].startswith("minnow.original.")] == [
        ("minnow.original.trace-id", b"abc"),
        ("minnow.original.tenant", b"t1"),
    ]
    assert [name for name, _ in headers].count(names.DLQ_ERROR_CLASS) == 1


def test_a_redriven_dead_letter_keeps_its_first_seen_time_and_counts_one_more_attempt() -> None:
    earlier = ((names.DLQ_FIRST_SEEN, b"2026-01-01T00:00:00.000+00:00"), (names.DLQ_ATTEMPT, b"2"))
    headers = dict(dead_letter_headers(Provenance("t.deadletter", 0, 7, earlier), error="decode_error", message="x"))
    assert headers[names.DLQ_FIRST_SEEN] == b"2026-01-01T00:00:00.000+00:00"
    assert headers[names.DLQ_ATTEMPT] == b"3"
    garbled = ((names.DLQ_ATTEMPT, b"many"),)
    assert dict(dead_letter_headers(Provenance("t", 0, 0, garbled), error="e", message="m"))[names.DLQ_ATTEMPT] == b"1"


def test_a_long_error_message_is_capped_in_the_header() -> None:
    headers = dict(dead_letter_headers(Provenance("t", 0, 0), error="schema_error", message="y" * 10_000))
    text = headers[names.DLQ_ERROR_MESSAGE].decode()
    assert len(text) == MAX_MESSAGE_CHARS and text.endswith("…")


def test_headers_from_any_client_shape_become_a_tuple_of_pairs() -> None:
    assert normalize_headers(None) == ()
    assert normalize_headers([("a", b"1"), ("b", None)]) == (("a", b"1"), ("b", b""))
    assert normalize_headers({"a": b"1"}) == (("a", b"1"),)


# ---------------------------------------------------------------------------------------- batch processor
def test_one_output_per_input_in_input_order_keyed_by_the_events_key() -> None:
    engine = FakeEngine(escalate=["f2"])
    records = [
        record(feed("f1"), 10, key=b"in-key"),
        record(b"not json", 11, key=b"junk"),
        record(segment("s1", "conv-9", 0), 12, topic="transcripts.in"),
        record(feed("f2"), 13),
        record(reading("r1", "dev-4"), 14, topic="iot.in"),
    ]
    outputs = handle(records, engine)
    assert [(o.topic, o.key, o.destination) for o in outputs] == [
        ("t.feeds.enriched", b"f1", "sink"),
        ("t.deadletter", b"junk", "deadletter"),
        ("t.transcripts.enriched", b"conv-9", "sink"),
        ("t.escalations", b"f2", "escalation"),
        ("t.iot.enriched", b"dev-4", "sink"),
    ]
    assert engine.batches == [["f1", "s1", "f2", "r1"]], "valid events go to the engine as one batch, in order"
    sink = orjson.loads(outputs[0].value or b"")
    assert sink["id"] == "f1" and sink["route"] == "sink" and sink["classification"] is None, "null fields written"


def test_dead_letters_carry_the_original_bytes_and_where_they_were_read() -> None:
    bad = {
        "not_json": b"{nope",
        "bad_utf8": b'{"id": "x", "text": "caf\xe9"}',
        "oversize": feed("big", "x" * 2000),
        "schema": orjson.dumps({"id": "s", "source": "wire", "text": "no created_at"}),
        "array": b"[1, 2]",
    }
    records = [record(value, offset) for offset, value in enumerate(bad.values())] + [record(None, 99, key=b"k")]
    outputs = handle(records, FakeEngine())
    assert [o.value for o in outputs] == [*bad.values(), None], "the bytes, untouched (a null value stays null)"
    classes = [dict(o.headers)[names.DLQ_ERROR_CLASS] for o in outputs]
    assert classes == [b"decode_error"] * 3 + [b"schema_error"] * 2 + [b"decode_error"]
    first = dict(outputs[0].headers)
    assert first[names.DLQ_SOURCE_TOPIC] == b"t.feeds.in" and first[names.DLQ_SOURCE_PARTITION] == b"2"
    assert [dict(o.headers)[names.DLQ_SOURCE_OFFSET] for o in outputs] == [b"0", b"1", b"2", b"3", b"4", b"99"]
    assert b"over the 1024-byte limit" in dict(outputs[2].headers)[names.DLQ_ERROR_MESSAGE]
    assert b"UTF-8" in dict(outputs[1].headers)[names.DLQ_ERROR_MESSAGE]


def test_an_engine_error_record_becomes_a_dead_letter_keyed_by_the_event() -> None:
    raw = segment("s7", "conv-1", 3)
    outputs = handle([record(raw, 5, topic="transcripts.in", key=b"whatever")], FakeEngine(fail=["s7"]))
    assert [(o.topic, o.key, o.value) for o in outputs] == [("t.deadletter", b"conv-1", raw)]
    headers = dict(outputs[0].headers)
    assert headers[names.DLQ_ERROR_CLASS] == b"inference_error" and headers[names.DLQ_ERROR_MESSAGE] == b"boom"


def test_an_escalation_carries_the_result_the_original_event_and_the_reasons() -> None:
    before = metric("minnow_escalations_total", task="anomaly", reason="high_score", family="feed")
    outputs = handle([record(reading("r9", "dev-2"), 0, topic="iot.in")], FakeEngine(escalate=["r9"]))
    body = orjson.loads(outputs[0].value or b"")
    assert body["reasons"] == ["classify.low_confidence", "anomaly.high_score"]
    assert body["result"]["id"] == "r9" and body["event"]["device_id"] == "dev-2" and body["event"]["kind"] == "iot"
    assert outputs[0].key == b"dev-2"
    assert metric("minnow_escalations_total", task="anomaly", reason="high_score", family="feed") == before + 1


def test_an_output_larger_than_its_topic_takes_is_never_sent_its_input_is_a_dead_letter() -> None:
    """The broker's max.message.bytes per output topic is checked before sending: an escalation that would not fit
    (it carries the whole event) becomes its input's dead letter, reason output_too_large, the original bytes kept,
    and the rest of the batch goes where it belongs."""
    long_text = "An unclear post. " * 40
    limits = {PREFIX + names.ESCALATION_TOPIC: 600, PREFIX + "feeds.enriched": 100_000}
    processor = BatchProcessor(SETTINGS, FakeEngine(escalate=["big"]), FakeSender(), size_limits=limits)
    big, small = feed("big", long_text), feed("small")
    outputs = asyncio.run(processor.handle([record(big, 0), record(small, 1)]))
    assert [(o.destination, o.value) for o in outputs] == [("deadletter", big), ("sink", outputs[1].value)]
    headers = dict(outputs[0].headers)
    assert headers[names.DLQ_ERROR_CLASS] == b"output_too_large"
    assert b"topic t.escalations takes at most 600 (max.message.bytes)" in headers[names.DLQ_ERROR_MESSAGE]


def test_a_dead_letter_that_does_not_fit_either_keeps_the_coordinates_and_leaves_the_bytes_out() -> None:
    """Even the dead-letter topic is too small for the input's bytes: the dead letter still accounts for the input
    (source topic, partition and offset in its headers) and says where to read the bytes."""
    limits = {PREFIX + "feeds.enriched": 300, PREFIX + names.DEADLETTER_TOPIC: 700}
    processor = BatchProcessor(SETTINGS, FakeEngine(), FakeSender(), size_limits=limits)
    raw = feed("huge", "A long story. " * 60)
    (output,) = asyncio.run(processor.handle([record(raw, 9)]))
    headers = dict(output.headers)
    assert output.destination == "deadletter" and output.value is None
    assert headers[names.DLQ_SOURCE_OFFSET] == b"9" and headers[names.DLQ_ERROR_CLASS] == b"output_too_large"
    assert b"read it at its source coordinates" in headers[names.DLQ_ERROR_MESSAGE]


def test_a_record_the_broker_refuses_costs_one_dead_letter_not_the_batch() -> None:
    """At-least-once, a sink record refused by the broker for itself (MessageSizeTooLargeError: a limit lowered
    after start-up) is replaced by its input's dead letter (output_rejected); the batch is delivered, no
    DeliveryError, so the worker never enters a crash loop over it."""
    sender = FakeSender(refuse_topic=PREFIX + "feeds.enriched")
    processor = BatchProcessor(SETTINGS, FakeEngine(escalate=["e1"]), sender)
    raw = feed("s1")
    delivered = asyncio.run(processor.handle([record(raw, 0), record(feed("e1"), 1)]))
    sent = [(o.destination, o.topic) for o in sender.sent]
    assert sent == [("sink", "t.feeds.enriched"), ("escalation", "t.escalations"), ("deadletter", "t.deadletter")]
    dead = sender.sent[-1]
    assert dead.value == raw and dict(dead.headers)[names.DLQ_ERROR_CLASS] == b"output_rejected"
    assert sorted(o.destination for o in delivered) == ["deadletter", "escalation"]


def test_counters_move_only_for_what_was_delivered() -> None:
    labels = {"topic": "t.feeds.in", "family": "feed"}
    sink = {"topic": "t.feeds.enriched", "family": "feed", "destination": "sink"}
    before_in, before_dl = (
        metric("minnow_events_in_total", **labels),
        metric("minnow_dead_letters_total", reason="decode_error", family="feed"),
    )
    before_out = metric("minnow_events_out_total", **sink)
    handle([record(feed("a"), 0), record(b"?", 1)], FakeEngine())
    assert metric("minnow_events_in_total", **labels) == before_in + 2
    assert metric("minnow_events_out_total", **sink) == before_out + 1
    assert metric("minnow_dead_letters_total", reason="decode_error", family="feed") == before_dl + 1
    with pytest.raises(DeliveryError):
        handle([record(feed("b"), 2)], FakeEngine(), FakeSender(fail=RuntimeError("broker down")))
    assert metric("minnow_events_out_total", **sink) == before_out + 1, "nothing counted as out"
    assert metric("minnow_inflight_events") == 0


def test_a_batch_of_only_bad_records_never_calls_the_engine() -> None:
    engine = FakeEngine()
    assert [o.destination for o in handle([record(b"x", 0)], engine)] == ["deadletter"]
    assert engine.batches == []


def test_handle_returns_only_after_the_broker_acknowledged_every_output() -> None:
    async def scenario() -> tuple[bool, bool, int]:
        sender = FakeSender(hold=True)
        processor = BatchProcessor(SETTINGS, FakeEngine(), sender)
        task = asyncio.ensure_future(processor.handle([record(feed("a"), 0), record(feed("b"), 1)]))
        await asyncio.sleep(0.05)
        done_before = task.done()
        sender.acknowledge_all()
        await asyncio.sleep(0)
        outputs = await task
        return done_before, task.done(), len(outputs)

    assert asyncio.run(scenario()) == (False, True, 2)


def test_an_unacknowledged_batch_times_out_as_a_delivery_error() -> None:
    processor = BatchProcessor(SETTINGS, FakeEngine(), FakeSender(hold=True), delivery_timeout_s=0.05)
    with pytest.raises(DeliveryError, match="not acknowledged within"):
        asyncio.run(processor.handle([record(feed("a"), 0)]))


def test_an_engine_that_loses_a_result_breaks_the_batch_instead_of_misaligning_offsets() -> None:
    with pytest.raises(InferenceError, match="2 events"):
        handle([record(feed("a"), 0), record(feed("b"), 1)], FakeEngine(drop_one=True))


# ------------------------------------------------------------------------------------------------- agent
def test_a_cancelled_agent_still_finishes_delivering_its_batch() -> None:
    async def scenario() -> tuple[bool, int]:
        sender = FakeSender(hold=True)
        processor = BatchProcessor(SETTINGS, FakeEngine(), sender)
        agent = asyncio.ensure_future(finish_even_if_cancelled(processor.handle([record(feed("a"), 0)])))
        await asyncio.sleep(0.05)
        agent.cancel()  # what faust does on stop and on some rebalances
        await asyncio.sleep(0.05)
        still_running = not agent.done()
        sender.acknowledge_all()
        with pytest.raises(asyncio.CancelledError):
            await agent
        return still_running, sum(ack.done() for ack in sender.acks)

    assert asyncio.run(scenario()) == (True, 1), "the cancellation waits for the batch, then propagates"


class _StopError(Exception):
    pass


class FakeStream:
    """Just enough of a faust stream: take_events yields the given batches of events."""

    def __init__(self, batches: list[list[Any]]) -> None:
        self.batches = batches
        self.asked: list[tuple[int, float]] = []

    async def take_events(self, max_: int, within: float) -> AsyncIterator[list[Any]]:
        self.asked.append((max_, within))
        for batch in self.batches:
            yield batch


def _event(value: bytes, offset: int) -> Any:
    message = SimpleNamespace(topic="t.feeds.in", partition=0, offset=offset, key=b"k", value=value, headers=[])
    return SimpleNamespace(message=message)


def test_the_agent_batches_by_size_and_wait_and_stops_the_process_when_delivery_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A batch that cannot be delivered stops the process (on_failure) before anything is acked, and the log says
    which input partition and offsets it was read from."""
    failures: list[BaseException] = []

    def on_failure(exc: BaseException) -> NoReturn:
        failures.append(exc)
        raise _StopError  # stands in for os._exit: the batch must never reach take_events' ack

    processor = BatchProcessor(SETTINGS, FakeEngine(), FakeSender(fail=RuntimeError("no leader")))
    stream = FakeStream([[_event(feed("a"), 0), _event(feed("b"), 1)], [_event(feed("c"), 2)]])
    with pytest.raises(_StopError):
        asyncio.run(batch_agent(processor, SETTINGS, on_failure=on_failure)(stream))
    assert stream.asked == [(4, 0.02)]
    assert len(failures) == 1 and isinstance(failures[0], DeliveryError)
    lines = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert lines == ["batch not delivered, read from t.feeds.in[0]@0-1"], lines


def test_a_consumer_message_becomes_an_input_record_with_its_coordinates() -> None:
    message = SimpleNamespace(
        topic="t.iot.in", partition=1, offset=9, key=None, value=b"v", headers=[("h", b"1")], time_in=12.5
    )
    assert input_record(message) == InputRecord(Provenance("t.iot.in", 1, 9, (("h", b"1"),)), None, b"v", 12.5)


def test_the_kafka_timestamp_becomes_produced_at_in_seconds_from_faust_and_aiokafka() -> None:
    """faust gives the record timestamp in seconds, aiokafka in milliseconds: both become epoch seconds."""
    faust_message = SimpleNamespace(
        topic="t", partition=0, offset=1, key=None, value=b"v", headers=[], time_in=1.0, timestamp=1_700_000_000.5
    )
    aiokafka_record = SimpleNamespace(
        topic="t", partition=0, offset=1, key=None, value=b"v", headers=[], timestamp=1_700_000_000_500
    )
    assert input_record(faust_message).produced_at == 1_700_000_000.5
    assert input_record(aiokafka_record, timestamp_ms=True).produced_at == 1_700_000_000.5


def test_delivered_results_count_their_counterfactual_cost_and_produce_to_sink_latency() -> None:
    """An escalated feed result adds the escalator's own estimate for asking about it (input tokens as the escalator
    counts them for the same prompt, output as the mini result written in the answer's schema) to
    minnow_counterfactual_cost_usd_total{family}; a dead letter adds nothing; both observe produce-to-sink from the
    record's Kafka timestamp; a batch that fails delivery counts nothing."""
    family = {"family": "feed"}
    before_usd = metric("minnow_counterfactual_cost_usd_total", **family)
    before_in = metric("minnow_counterfactual_tokens_total", direction="in", **family)
    before_latency = metric("minnow_produce_to_sink_seconds_count", **family)
    produced = time.time() - 2.0
    unsure = InputRecord(Provenance(PREFIX + "feeds.in", 2, 0), None, feed("cf-1"), 0.0, produced_at=produced)
    bad = InputRecord(Provenance(PREFIX + "feeds.in", 2, 1), None, b"?", 0.0, produced_at=produced)
    escalated, dead = handle([unsure, bad], FakeEngine(escalate=["cf-1"]))
    assert (escalated.destination, dead.destination) == ("escalation", "deadletter")
    assert dead.counterfactual is None

    body = orjson.loads(escalated.value or b"")
    record_ = EscalationRecord.model_validate(body)
    event = EVENT_ADAPTER.validate_python(body["event"])
    prompt = build_prompt(record_, event, tasks_for(record_, SETTINGS), SETTINGS)  # what the escalator would send
    answer = {"classification": {"label": "world", "confidence": 0.3}}
    tokens_out = len(orjson.dumps(answer)) // 4
    assert escalated.counterfactual is not None
    assert (escalated.counterfactual.tokens_in, escalated.counterfactual.tokens_out) == (
        prompt.request.estimated_input_tokens,
        tokens_out,
    )
    usd = (prompt.request.estimated_input_tokens * 0.15 + tokens_out * 0.60) / 1e6  # gpt-4o-mini's default price
    assert metric("minnow_counterfactual_cost_usd_total", **family) == pytest.approx(before_usd + usd)
    assert metric("minnow_counterfactual_tokens_total", direction="in", **family) == (
        before_in + prompt.request.estimated_input_tokens
    )
    assert metric("minnow_produce_to_sink_seconds_count", **family) == before_latency + 2
    assert metric("minnow_produce_to_sink_seconds_bucket", le="1.0", **family) <= before_latency, "2 s old: > 1 s"

    with pytest.raises(DeliveryError):
        handle([record(feed("cf-2"), 2)], FakeEngine(escalate=["cf-2"]), FakeSender(fail=RuntimeError("down")))
    assert metric("minnow_counterfactual_cost_usd_total", **family) == pytest.approx(before_usd + usd)


def test_faust_commits_past_an_unacked_offset_when_acks_arrive_out_of_order() -> None:
    """Why the worker acks only in offset order, one actor per topic (faust-streaming 0.15.3 _new_offset).

    With offset 10 still in flight and 11, 12 acked, faust would commit 13: a crash then loses offset 10.
    If a faust upgrade fixes this, the test fails and the one-actor rule can be revisited.
    """
    from faust.transport.consumer import Consumer
    from faust.types import TP

    tp = TP("t.feeds.in", 0)

    def next_commit(committed: int | None, acked: list[int]) -> int | None:
        state = SimpleNamespace(
            _acked=defaultdict(list, {tp: list(acked)}),
            _acked_index=defaultdict(set, {tp: set(acked)}),
            _gap=defaultdict(list),  # no gaps in the fetched offsets: an empty (falsy) one per partition
            _committed_offset=defaultdict(lambda: None, {tp: committed}),
        )
        result: int | None = Consumer._new_offset(cast(Any, state), tp)
        return result

    assert next_commit(10, [10, 11]) == 12, "in order: commits what was acked"
    assert next_commit(10, [11, 12]) == 13, "out of order: skips unacked offset 10"
    assert next_commit(None, [3, 4]) == 5, "no commit yet: skips unacked offsets 0-2"


# ------------------------------------------------------------------------------------------ app and cli
def test_the_app_has_one_single_actor_agent_per_input_topic_and_no_web_server(tmp_path: Path) -> None:
    from pipeline.stream.app import create_app
    from pipeline.stream.clients import broker_urls

    app = create_app(SETTINGS, FakeEngine(), datadir=tmp_path)
    agents = {agent.name: agent for agent in app.agents.values()}
    assert sorted(agents) == ["minnow.feed", "minnow.iot", "minnow.ticket", "minnow.transcript"]
    assert {a.concurrency for a in agents.values()} == {1}
    topics = {name for agent in agents.values() for name in agent.channel.topics}
    assert topics == {"t.feeds.in", "t.transcripts.in", "t.iot.in", "t.tickets.in"}
    assert app.conf.web_enabled is False and app.conf.topic_allow_declare is False
    assert Path(app.conf.datadir).parent == tmp_path or Path(app.conf.datadir) == tmp_path
    assert str(app.conf.processing_guarantee.value) == "at_least_once"
    assert broker_urls("a:1, b:2,") == ["kafka://a:1", "kafka://b:2"]


def test_minnow_worker_takes_a_bootstrap_servers_override(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.stream import app

    seen: list[Settings] = []

    def fake_run(settings: Settings, *, verbose: bool = False) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(app, "run", fake_run)
    assert cli.main(["worker", "--bootstrap-servers", "broker-1:9092,broker-2:9092"]) == 0
    assert seen[0].kafka.bootstrap_servers == "broker-1:9092,broker-2:9092"
