"""`minnow produce` / `minnow tail` round-trip a file through a real broker, and the lag gauge matches its offsets."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import REGISTRY

from pipeline.cli import main
from pipeline.stream.health import measure_lag, track_lag
from pipeline.stream.lag import LagReport
from tests.integration.helpers import as_kafka, create_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MALFORMED = [b'{"id": "broken-1", "text": ', b"not json at all \xff"]


def _events_file(path: Path) -> list[bytes]:
    """48 JSON events keyed three ways (device, conversation, id) plus 2 malformed lines, 50 in all."""
    lines: list[bytes] = []
    for sequence in range(16):
        lines.append(orjson.dumps({"id": f"m-{sequence}", "device_id": f"dev-{sequence % 3}", "seq": sequence}))
        lines.append(orjson.dumps({"id": f"s-{sequence}", "conversation_id": f"conv-{sequence % 2}", "seq": sequence}))
        lines.append(orjson.dumps({"id": f"feed-{sequence % 4}", "seq": sequence}))
        if sequence in (5, 11):
            lines.append(MALFORMED[sequence // 10])
    path.write_bytes(b"\n".join(lines) + b"\n\n")  # a trailing blank line is not a record
    return lines


@pytest.fixture
def kafka_env(monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str, random_name: Callable[[str], str]) -> str:
    """Settings point at the test broker with a fresh prefix; returns the prefix."""
    prefix = random_name("tools") + "."
    monkeypatch.setenv("MINNOW_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("MINNOW_KAFKA__TOPIC_PREFIX", prefix)
    return prefix


def test_produce_then_tail_returns_every_line_in_per_key_order(
    kafka_env: str, kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """50 lines (2 malformed) go out keyed and come back in order per key; malformed ones arrive as raw bytes."""
    topic = kafka_env + "feeds.in"
    asyncio.run(create_topic(kafka_bootstrap, topic, partitions=3))
    source = tmp_path / "events.jsonl"
    lines = _events_file(source)

    assert main(["produce", "--topic", "feeds.in", str(source)]) == 0
    assert capsys.readouterr().out.strip() == f"produced 50 records to {topic} (2 not valid JSON, sent as raw bytes)"

    assert main(["tail", "feeds.in", "--from-beginning", "--max", "50", "--timeout", "60", "--json"]) == 0
    records = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert len(records) == 50
    assert {r["topic"] for r in records} == {topic}
    broken = [r for r in records if "value_bytes" in r]
    assert sorted(r["value_bytes"] for r in broken) == sorted(repr(raw) for raw in MALFORMED)
    assert all(r["key"] is None and "value" not in r for r in broken)

    sent_by_key: dict[str, list[int]] = defaultdict(list)
    for raw in lines:
        if raw not in MALFORMED:
            event = orjson.loads(raw)
            sent_by_key[event.get("device_id") or event.get("conversation_id") or event["id"]].append(event["seq"])
    got_by_key: dict[str, list[int]] = defaultdict(list)
    partitions_of_key: dict[str, set[int]] = defaultdict(set)
    for record in sorted((r for r in records if "value" in r), key=lambda r: (r["partition"], r["offset"])):
        got_by_key[record["key"]].append(record["value"]["seq"])
        partitions_of_key[record["key"]].add(record["partition"])
    assert got_by_key == sent_by_key
    assert set(sent_by_key) == {"dev-0", "dev-1", "dev-2", "conv-0", "conv-1", "feed-0", "feed-1", "feed-2", "feed-3"}
    assert all(len(partitions) == 1 for partitions in partitions_of_key.values())


def test_key_field_and_skip_invalid_change_what_is_sent(
    kafka_env: str, kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--key-field picks the key; --skip-invalid drops malformed lines; --raw-topic skips the prefix."""
    topic = kafka_env + "raw"
    asyncio.run(create_topic(kafka_bootstrap, topic, partitions=1))
    source = tmp_path / "events.jsonl"
    source.write_bytes(b'{"id": "a", "region": "eu"}\nnot json\n{"id": "b", "region": 7}\n{"id": "c"}\n')

    assert (
        main(["produce", "--raw-topic", "--topic", topic, "--key-field", "region", "--skip-invalid", str(source)]) == 0
    )
    assert capsys.readouterr().out.strip() == f"produced 3 records to {topic} (1 not valid JSON, skipped)"
    assert main(["tail", "--raw-topic", topic, "--from-beginning", "--max", "3", "--timeout", "60", "--json"]) == 0
    records = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["offset"], r["key"], r["value"]["id"]) for r in records] == [
        (0, "eu", "a"),
        (1, "7", "b"),
        (2, None, "c"),
    ]


def test_tail_starts_at_the_end_unless_asked_for_the_beginning(
    kafka_env: str, kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = kafka_env + "old"
    asyncio.run(create_topic(kafka_bootstrap, topic, partitions=2))
    source = tmp_path / "events.jsonl"
    source.write_text('{"id": "a"}\n{"id": "b"}\n')
    assert main(["produce", "--topic", "old", str(source)]) == 0
    capsys.readouterr()

    assert main(["tail", "old", "--timeout", "1.5"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["tail", "old", "--from-beginning", "--max", "2", "--timeout", "60"]) == 0
    shown = capsys.readouterr().out
    assert shown.count(f"--- {topic} partition ") == 2
    assert '"id": "a"' in shown and '"id": "b"' in shown


def test_missing_topic_is_a_clear_error_not_an_auto_created_topic(
    kafka_env: str, kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text('{"id": "a"}\n')
    assert main(["produce", "--topic", "absent", str(source)]) == 2
    assert main(["tail", "absent", "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count(f"minnow: topic '{kafka_env}absent' does not exist") == 2

    async def listed() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            return list(await admin.list_topics())
        finally:
            await admin.close()

    assert f"{kafka_env}absent" not in asyncio.run(listed())


async def _fill_and_commit(bootstrap: str, topic: str, group: str) -> None:
    """Partition 0 gets 10 records, 1 gets 5, 2 gets 3; the group commits 4 on p0, 5 on p1, nothing on p2."""
    await create_topic(bootstrap, topic, partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition, count in ((0, 10), (1, 5), (2, 3)):
            for index in range(count):
                await producer.send_and_wait(topic, f"{partition}:{index}".encode(), partition=partition)
    finally:
        await producer.stop()
    committer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        await committer.commit(
            {TopicPartition(topic, 0): OffsetAndMetadata(4, ""), TopicPartition(topic, 1): OffsetAndMetadata(5, "")}
        )
    finally:
        await committer.stop()


async def _measure(bootstrap: str, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        return await measure_lag(consumer, admin, group, topics)
    finally:
        await admin.close()
        await consumer.stop()


def test_lag_is_end_offset_minus_the_groups_commit(kafka_bootstrap: str, random_name: Callable[[str], str]) -> None:
    """Committed 4 of 10 and 5 of 5, nothing of 3: lag 6, 0, 3; a topic that does not exist is left out."""
    topic, group = random_name("lag"), random_name("group")
    asyncio.run(_fill_and_commit(kafka_bootstrap, topic, group))
    lags = asyncio.run(_measure(kafka_bootstrap, group, [topic, random_name("absent")]))
    assert lags == {(topic, 0): 6, (topic, 1): 0, (topic, 2): 3}


def test_track_lag_keeps_the_gauge_current(kafka_bootstrap: str, random_name: Callable[[str], str]) -> None:
    """The background tracker publishes minnow_consumer_lag{group,topic,partition} for the partitions this process
    holds (0 and 2 here, not 1) and stops cleanly when cancelled."""
    topic, group = random_name("lag"), random_name("group")
    asyncio.run(_fill_and_commit(kafka_bootstrap, topic, group))
    report = LagReport(group, [topic])
    report.assigned([(topic, 0), (topic, 2)])

    def gauge() -> list[float | None]:
        return [
            REGISTRY.get_sample_value("minnow_consumer_lag", {"group": group, "topic": topic, "partition": str(p)})
            for p in range(3)
        ]

    async def run_tracker() -> list[float | None]:
        tracker = asyncio.create_task(track_lag(as_kafka(kafka_bootstrap), report, interval_s=0.2))
        deadline = time.monotonic() + 60
        while None in (gauge()[0], gauge()[2]) and time.monotonic() < deadline and not tracker.done():
            await asyncio.sleep(0.1)
        tracker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await tracker
        return gauge()

    assert asyncio.run(run_tracker()) == [6.0, None, 3.0]
