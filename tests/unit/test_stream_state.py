"""The stateful steps without a broker: what conversations and devices emit, where their changelog goes, replays."""

from __future__ import annotations

import asyncio

import orjson

from pipeline.stages.assemble import ConversationState
from pipeline.stages.devices import DeviceState
from pipeline.stream import names
from pipeline.stream.conversations import Conversations
from pipeline.stream.devices import Devices
from pipeline.stream.worker import BatchProcessor, InputRecord, OutputRecord
from tests.unit.test_stream_units import PREFIX, SETTINGS, FakeEngine, FakeSender, record

NOW = 1_800_000_000.0


def talk(seq: int, *, final: bool = False, conversation: str = "c1") -> bytes:
    body = {"id": f"{conversation}-{seq}", "conversation_id": conversation, "seq": seq, "speaker": "a", "text": "hi"}
    return orjson.dumps(body | ({"final": True} if final else {}))


def minute(n: int, device: str = "d1", value: float = 20.0) -> bytes:
    ts = f"2026-11-20T09:{n:02d}:30Z"
    return orjson.dumps({"id": f"{device}-{n}", "device_id": device, "ts": ts, "readings": {"t": value}})


def _id(output: OutputRecord) -> str:
    assert output.value is not None
    return str(orjson.loads(output.value)["id"])


def run(processor: BatchProcessor, records: list[InputRecord]) -> list[OutputRecord]:
    return asyncio.run(processor.handle(records))


def conversations_worker(store: dict[bytes, bytes], clock: list[float]) -> tuple[BatchProcessor, Conversations]:
    step = Conversations(SETTINGS, store, clock=lambda: clock[0])
    return BatchProcessor(SETTINGS, FakeEngine(), FakeSender(), stateful=step), step


def sweep(processor: BatchProcessor, step: Conversations, partitions: set[int]) -> list[OutputRecord]:
    """What the worker's sweep timer delivers: the step's emitted conversations scored and routed, then its writes."""

    async def swept() -> list[OutputRecord]:
        return await processor.finish(await step.sweep(partitions))

    return asyncio.run(swept())


def test_a_final_segment_emits_the_conversation_after_the_segment_results_then_the_changelog() -> None:
    store: dict[bytes, bytes] = {}
    processor, _ = conversations_worker(store, [NOW])
    topic = "transcripts.in"
    outputs = run(processor, [record(talk(i, final=i == 2), 10 + i, topic=topic) for i in range(3)])
    kinds = [(o.destination, o.key.decode() if o.destination == "state" else _id(o)) for o in outputs if o.key]
    assert kinds == [("sink", "c1-0"), ("sink", "c1-1"), ("sink", "c1-2"), ("sink", "c1"), ("state", "c1")]
    conversation, changelog = outputs[3], outputs[4]
    assert conversation.topic == PREFIX + names.SINK_TOPICS["conversation"] and conversation.key == b"c1"
    assert (changelog.topic, changelog.partition, changelog.origin) == (
        PREFIX + names.STATE_TOPICS["conversation"],
        2,
        (PREFIX + topic, 2),
    ), "the changelog partition is the input record's partition"
    assert ConversationState.model_validate_json(store[b"c1"]).close_reason == "final"


def test_a_replayed_final_segment_cannot_emit_the_conversation_twice() -> None:
    store: dict[bytes, bytes] = {}
    processor, _ = conversations_worker(store, [NOW])
    batch = [record(talk(i, final=i == 1), i, topic="transcripts.in") for i in range(2)]
    run(processor, batch)
    replay = run(processor, batch)
    assert [o.destination for o in replay] == ["sink", "sink"], "segment results again (at-least-once), nothing else"


def test_the_sweep_closes_only_idle_conversations_on_the_partitions_it_is_given() -> None:
    store: dict[bytes, bytes] = {}
    clock = [NOW]
    processor, step = conversations_worker(store, clock)
    run(processor, [record(talk(0), 0, topic="transcripts.in")])
    assert sweep(processor, step, {2}) == [], "not idle yet"
    clock[0] += SETTINGS.worker.conversation_idle_s
    assert sweep(processor, step, {0, 1}) == [], "partition 2 is not among those swept"
    closed = sweep(processor, step, {2})
    assert [(o.destination, o.key) for o in closed] == [("sink", b"c1"), ("state", b"c1")]
    assert ConversationState.model_validate_json(store[b"c1"]).close_reason == "idle"
    clock[0] += SETTINGS.worker.conversation_keep_closed_s
    (tombstone,) = sweep(processor, step, {2})
    assert (tombstone.value, tombstone.partition, b"c1" in store) == (None, 2, False)
    assert processor.progress.next_offset(2) == 1


def devices_worker(store: dict[bytes, bytes]) -> BatchProcessor:
    return BatchProcessor(SETTINGS, FakeEngine(), FakeSender(), stateful=Devices(SETTINGS, store, clock=lambda: NOW))


def test_each_minute_closes_the_previous_window_and_the_device_state_goes_to_its_partition() -> None:
    store: dict[bytes, bytes] = {}
    processor = devices_worker(store)
    outputs = run(processor, [record(minute(n, value=20.0 + n), n, topic="iot.in") for n in range(3)])
    windows = [orjson.loads(o.value or b"") for o in outputs if o.topic == PREFIX + names.IOT_WINDOWS_TOPIC]
    assert [(w["window_start"], w["messages"], w["metrics"]["t"]["mean"]) for w in windows] == [
        ("2026-11-20T09:00:00Z", 1, 20.0),
        ("2026-11-20T09:01:00Z", 1, 21.0),
    ]
    (changelog,) = [o for o in outputs if o.destination == "state"]
    assert (changelog.key, changelog.partition) == (b"d1", 2)
    state = DeviceState.model_validate_json(store[b"d1"])
    assert (state.offset, state.history["t"].readings) == (2, 3)


def test_a_replayed_reading_is_not_counted_twice_in_the_statistics_or_the_window() -> None:
    store: dict[bytes, bytes] = {}
    processor = devices_worker(store)
    run(processor, [record(minute(0), 0, topic="iot.in"), record(minute(1), 1, topic="iot.in")])
    before = store[b"d1"]
    replay = run(processor, [record(minute(1), 1, topic="iot.in")])
    assert [o.destination for o in replay] == ["sink"], "its result again, no window, no state change"
    assert store[b"d1"] == before
