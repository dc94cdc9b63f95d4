"""The naive baseline of `minnow bench e2e`: a per-event consumer loop through the same broker, and the feeder."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.codec import encode
from pipeline.errors import DeliveryError, InputError
from pipeline.models import ToDeadLetter, ToSink
from pipeline.ops.topics import apply
from pipeline.settings import KafkaSettings
from pipeline.stages.infer import MiniModel
from pipeline.stages.runtime import AsyncMiniModel
from pipeline.stages.validate import parse_event
from pipeline.stream import clients, names
from pipeline.topic_specs import load_specs

OUTPUT_TOPICS = (names.SINK_TOPICS["feed"], names.ESCALATION_TOPIC, names.DEADLETTER_TOPIC)  # of every bench worker
NAIVE_PREFIX = "naive."  # the naive worker's own copies of the feed topics, under the bench prefix
NAIVE_WORKER_MAX_EVENTS = 1000  # per round (the first of the round's texts); ~20-40 s at its speed here
NAIVE_WORKER_WARMUP = 20  # events that cover its group join and first calls, not measured
NAIVE_STEPS = ("consume", "model", "produce_ack", "commit")  # "model": parse, MiniModel.process, route, JSON


async def send_feed_events(
    producer: AIOKafkaProducer, topic: str, events: Sequence[tuple[str, str]], sent: dict[str, float], rate: float
) -> None:
    """Produce feed events whose `created_at` is their send time; `rate` 0 sends as fast as the producer takes them."""
    pending = []
    start = time.perf_counter()
    for n, (event_id, text) in enumerate(events):
        if rate:
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        now = time.time()
        created = datetime.fromtimestamp(now, UTC).isoformat()
        value = orjson.dumps({"kind": "feed", "id": event_id, "source": "bench", "text": text, "created_at": created})
        sent[event_id] = now
        pending.append(await producer.send(topic, value, key=event_id.encode()))
    await asyncio.gather(*pending)


class NaiveWorker:
    """What a straightforward at-least-once consumer does, one event at a time: consume it, run the model on it
    (off the loop, as the worker does), produce its output and await the broker's ack, commit its offset.

    Same model, parsing, routing and broker as `minnow worker`, without batching; in this process, on its own
    topics under the bench prefix and its own group; the bench's own producer feeds its input topic.
    """

    def __init__(self, engine: AsyncMiniModel, clients: tuple[AIOKafkaConsumer, AIOKafkaProducer], prefix: str) -> None:
        self._engine, (self._consumer, self._producer), self._prefix = engine, clients, prefix
        self.spent = dict.fromkeys(NAIVE_STEPS, 0.0)  # seconds per step since the warm-up
        self.outputs: Counter[str] = Counter()
        self.warmup_events = 0

    async def _take(self, count: int) -> None:
        for _ in range(count):
            t0 = time.perf_counter()
            record = await self._consumer.getone()
            t1 = time.perf_counter()
            topic, key, value = await self._output(record.value or b"")
            t2 = time.perf_counter()
            await self._producer.send_and_wait(self._prefix + topic, value, key=key)
            t3 = time.perf_counter()
            await self._consumer.commit({TopicPartition(record.topic, record.partition): record.offset + 1})
            for step, seconds in zip(NAIVE_STEPS, (t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3), strict=True):
                self.spent[step] += seconds
            self.outputs[topic] += 1

    async def _output(self, raw: bytes) -> tuple[str, bytes | None, bytes]:
        """(logical topic, key, value) of the one output for one input, routed as the worker routes it."""
        try:
            event = parse_event(raw)
        except InputError:
            return names.DEADLETTER_TOPIC, None, raw
        (scores,) = await self._engine.score([event])
        routed = self._engine.model.router.route(event, scores)
        if isinstance(routed, ToDeadLetter):
            return names.DEADLETTER_TOPIC, event.key(), raw
        topic, out = (
            (names.SINK_TOPICS[routed.result.kind], routed.result)
            if isinstance(routed, ToSink)
            else (names.ESCALATION_TOPIC, routed.record)
        )
        return topic, event.key(), encode(out)

    async def run(self, feeder: AIOKafkaProducer, ids: list[str], texts: Sequence[str]) -> float:
        """Events/s from the first produce of these events (by `feeder`) to the commit of the last."""
        timeout_s = max(300.0, len(ids) / 2)
        start = time.perf_counter()
        taking = asyncio.create_task(self._take(len(ids)))
        try:
            await send_feed_events(
                feeder, self._prefix + names.INPUT_TOPICS["feed"], list(zip(ids, texts, strict=True)), {}, 0
            )
            async with asyncio.timeout(timeout_s):
                await taking
        except TimeoutError as exc:
            raise DeliveryError(f"the naive worker did not finish {len(ids)} events in {timeout_s:.0f} s") from exc
        finally:
            if not taking.done():
                taking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await taking
        return len(ids) / (time.perf_counter() - start)

    async def warm_up(self, feeder: AIOKafkaProducer, texts: Sequence[str]) -> None:
        """Joins the group and makes the first calls; nothing of it is counted."""
        await self.run(feeder, [f"nw{n}" for n in range(len(texts))], texts)
        self.spent, self.warmup_events = dict.fromkeys(NAIVE_STEPS, 0.0), len(texts)
        self.outputs.clear()

    def figures(self) -> dict[str, Any]:
        done = sum(self.outputs.values()) or 1
        return {
            "warmup_events": self.warmup_events,
            "ms_per_event": {step: round(1000 * s / done, 2) for step, s in self.spent.items()},
            "outputs": dict(self.outputs),
        }


@contextlib.asynccontextmanager
async def naive_worker(kafka: KafkaSettings, prefix: str, model: MiniModel) -> AsyncIterator[NaiveWorker]:
    """A NaiveWorker on fresh topics `<prefix>naive.*`; the caller's cleanup deletes every topic under `prefix`."""
    mine = prefix + NAIVE_PREFIX
    await apply(
        kafka,
        name_of=lambda n: mine + n,
        specs=[s for s in load_specs() if s.name in (names.INPUT_TOPICS["feed"], *OUTPUT_TOPICS)],
    )
    consumer = clients.consumer(
        kafka,
        mine + names.INPUT_TOPICS["feed"],
        group_id=mine + "worker",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = clients.producer(kafka)
    engine = AsyncMiniModel(model)
    try:
        await consumer.start()
        await producer.start()
        yield NaiveWorker(engine, (consumer, producer), mine)
    finally:
        await producer.stop()
        await consumer.stop()
        engine.close()
