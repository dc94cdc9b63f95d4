"""Outputs that do not fit their topic cost one dead letter each, never the worker: checked before sending
against the broker's real max.message.bytes (read at start-up), and refused ones replaced when a limit changes
under a running worker."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.stream import clients, names
from tests.integration.helpers import as_kafka
from tests.integration.test_worker_e2e import (  # noqa: F401  # worker_env, workers: fixtures used by name
    OutputReader,
    Planned,
    Sent,
    WorkerProcess,
    _create_and_produce,
    all_seen,
    committed_offsets,
    dead_letter_source,
    feed,
    output_markers,
    produce,
    worker_env,
    workers,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(300)]

SINK_LIMIT = 2500  # a feed's result is ~1.1 KB; one that carries a 3 KB field of its producer's is not


async def set_limit(bootstrap: str, topic: str, max_bytes: int) -> None:
    admin = await clients.started(clients.admin(as_kafka(bootstrap)), as_kafka(bootstrap))
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(max_bytes)})]
        )
    finally:
        await admin.close()


def carrying(plan: Planned, extra_bytes: int) -> Planned:
    """The same feed with a field the contract does not know: its result carries the original event along."""
    body = json.loads(plan.value or b"")
    body["attachment"] = "x" * extra_bytes
    return replace(plan, value=json.dumps(body).encode())


def test_oversize_outputs_are_dead_letters_and_the_worker_stays_up(
    kafka_bootstrap: str,
    worker_env: dict[str, str],  # noqa: F811  # the fixture imported above
    workers: Callable[..., WorkerProcess],  # noqa: F811
) -> None:
    """Two ways a result can be too large, each one dead letter with the original bytes, nothing else lost:
    a result over the sink's limit as read at start-up (output_too_large, never sent), and results refused by the
    broker after the limit was lowered under the running worker (output_rejected). The worker never exits until
    SIGTERM (exit 0), and commits every input."""
    prefix, group = worker_env["MINNOW_KAFKA__TOPIC_PREFIX"], worker_env["MINNOW_KAFKA__GROUP_ID"]
    sink = prefix + names.SINK_TOPICS["feed"]
    first = [feed(n, wave="z") for n in range(6)] + [carrying(feed(6, wave="z"), 3000)]

    async def run() -> None:
        await _create_and_produce(kafka_bootstrap, prefix, [])
        await set_limit(kafka_bootstrap, sink, SINK_LIMIT)
        sent = await produce(kafka_bootstrap, prefix, first)
        worker = workers(MINNOW_KAFKA__MAX_EVENT_BYTES="8192")
        async with OutputReader(kafka_bootstrap, prefix) as reader:
            by_place = {(s.topic, s.partition, s.offset): s for s in sent}
            assert await reader.read_until(all_seen(Counter(s.marker for s in sent), by_place), 120), worker.tail()
            letters = {
                by_place[dead_letter_source(r)].marker: r for r in reader.records if r.topic.endswith("deadletter")
            }
            assert set(letters) == {"feed-z0006"}, worker.tail()
            headers = dict(letters["feed-z0006"].headers)
            assert headers[names.DLQ_ERROR_CLASS] == b"output_too_large"
            assert letters["feed-z0006"].value == first[-1].value, "the original bytes"

            await set_limit(kafka_bootstrap, sink, 600)  # below any result: the broker refuses them now
            await asyncio.sleep(2)  # topic configs reach the broker's log a moment later
            later = await produce(kafka_bootstrap, prefix, [feed(n, wave="y") for n in range(3)])
            sent += later
            by_place = {(s.topic, s.partition, s.offset): s for s in sent}
            assert await reader.read_until(all_seen(Counter(s.marker for s in sent), by_place), 120), worker.tail()
            refused = [
                r
                for r in reader.records
                if r.topic.endswith("deadletter") and dict(r.headers)[names.DLQ_ERROR_CLASS] == b"output_rejected"
            ]
            # The model may escalate one on another CPU's int8 kernels: an escalation is not a sink record.
            escalations = [r for r in reader.records if r.topic.endswith(names.ESCALATION_TOPIC)]
            escalated = {json.loads(r.value or b"")["result"]["id"] for r in escalations}
            assert {by_place[dead_letter_source(r)].marker for r in refused} == {s.marker for s in later} - escalated
            assert worker.process is not None and worker.process.poll() is None, "still running\n" + worker.tail()
        assert worker.stop(signal.SIGTERM) == 0, worker.tail()
        committed = await committed_offsets(kafka_bootstrap, group)
        ends: dict[tuple[str, int], int] = {}
        for s in sent:
            ends[(s.topic, s.partition)] = max(ends.get((s.topic, s.partition), 0), s.offset + 1)
        assert committed == ends, "every input committed"

    asyncio.run(run())


INPUT_LIMIT = 300_000  # so a 95 KB segment and a 20,000-reading IoT message are valid inputs


def long_segments(conversation: str, n: int, size: int) -> list[Planned]:
    words = ("The customer explains the billing problem again in great detail and the agent listens. " * 2000)[:size]
    plans = []
    for seq in range(n):
        event_id = f"{conversation}-seg-{seq:03d}"
        body = {"id": event_id, "conversation_id": conversation, "seq": seq, "speaker": "customer", "text": words}
        key = conversation.encode()
        plans.append(Planned("transcripts.in", key, json.dumps(body).encode(), event_id, out_key=key))
    return plans


def many_readings(device: str, n: int) -> Planned:
    readings = {f"sensor_{i:05d}": 20.0 + (i % 13) for i in range(n)}
    body = {"id": f"{device}-m0", "device_id": device, "ts": "2026-11-20T09:00:00+00:00", "readings": readings}
    return Planned("iot.in", device.encode(), json.dumps(body).encode(), f"{device}-m0", out_key=device.encode())


def just_under(limit: int) -> Planned:
    body = {"id": "feed-big", "source": "wire", "text": "", "created_at": "2026-11-20T09:00:00+00:00"}
    filler = "A very long post about the city council and the transit plan. "
    room = limit - len(json.dumps(body).encode()) - 64
    body["text"] = (filler * (room // len(filler) + 1))[:room]
    return Planned("feeds.in", b"feed-big", json.dumps(body).encode(), "feed-big", out_key=b"feed-big")


def test_amplifying_inputs_never_stop_the_worker(
    kafka_bootstrap: str,
    worker_env: dict[str, str],  # noqa: F811  # the fixture imported above
    workers: Callable[..., WorkerProcess],  # noqa: F811
) -> None:
    """What made a worker crash-loop before: twelve 95 KB segments of one conversation (its state outgrew the
    changelog), one IoT message with 20,000 readings (its result outgrew the sink), a post just under the input
    limit. With the broker's default 1 MB limits, every input comes out (a result, an escalation or a dead letter),
    the conversation once, and the worker runs until SIGTERM."""
    prefix = worker_env["MINNOW_KAFKA__TOPIC_PREFIX"]
    planned = [*long_segments("conv-long", 12, 95_000), many_readings("dev-wide", 20_000), just_under(INPUT_LIMIT)]

    async def run() -> None:
        await _create_and_produce(kafka_bootstrap, prefix, [])
        producer = clients.producer(as_kafka(kafka_bootstrap), max_request_size=4 * INPUT_LIMIT)
        await producer.start()
        try:
            acks = [await producer.send(prefix + p.topic, p.value, key=p.key) for p in planned]
            written = await asyncio.gather(*acks)
        finally:
            await producer.stop()
        sent = [Sent(p, m.topic, m.partition, m.offset) for p, m in zip(planned, written, strict=True)]
        by_place = {(s.topic, s.partition, s.offset): s for s in sent}
        expected = Counter(s.marker for s in sent) + Counter({"conv-long": 1})  # the assembled conversation
        worker = workers(MINNOW_KAFKA__MAX_EVENT_BYTES=str(INPUT_LIMIT), MINNOW_WORKER__CONVERSATION_IDLE_S="5")
        async with OutputReader(kafka_bootstrap, prefix) as reader:
            assert await reader.read_until(all_seen(expected, by_place), 240), worker.tail()
            await asyncio.sleep(2)  # anything more (a repeat) would arrive now
            await reader.read_to_end()
            seen = output_markers(reader.records, by_place)
            assert seen == expected, f"each input once, the conversation once: {seen - expected}"
            assert worker.process is not None and worker.process.poll() is None, worker.tail()
        assert worker.stop(signal.SIGTERM) == 0, worker.tail()

    asyncio.run(run())
