"""People in the loop through a real broker: review records in, one verdict per item on the labels topic, a head out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.cli import main
from pipeline.commands.distill import replay, stand_in_verdicts
from pipeline.engine import Encoder
from pipeline.models import FeedEvent, LabelRecord, Result, ReviewRecord
from pipeline.review.verdicts import label_key, latest_verdicts
from pipeline.settings import RoutingSettings, Settings
from pipeline.stages.infer import MiniModel
from pipeline.stream.labels import read_labels
from pipeline.stream.names import REVIEW_SKIPS
from pipeline.tasks.classify import ClassifyTask
from pipeline.tasks.heads import HeadFile
from pipeline.tasks.labels import load_label_sets
from pipeline.training import LabeledRow, fit_heads, read_labeled, rows_from_verdicts
from tests.integration.helpers import as_kafka, create_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EVAL = Path(__file__).resolve().parents[2] / "pipeline" / "data" / "eval"
PER_LABEL = 5  # 20 items: 18 answered, 1 skipped on purpose, 1 not in the answers file


@pytest.fixture
def prefix(
    monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str, random_name: Callable[[str], str], model_cache: Path
) -> str:
    """Settings point at the test broker with a fresh topic prefix; returns the prefix."""
    prefix = random_name("review") + "."
    monkeypatch.setenv("MINNOW_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("MINNOW_KAFKA__TOPIC_PREFIX", prefix)
    monkeypatch.setenv("MINNOW_ENGINE__CACHE_DIR", str(model_cache))
    return prefix


def news_items() -> list[LabeledRow]:
    """The first PER_LABEL items of each label of the bundled news set, in file order."""
    taken: dict[str, int] = {}
    items = []
    for row in read_labeled(EVAL / "news_topics.jsonl"):
        if row.label and taken.get(row.label, 0) < PER_LABEL:
            taken[row.label] = taken.get(row.label, 0) + 1
            items.append(row)
    return items


def review_records(mini_model: MiniModel, items: list[LabeledRow]) -> list[ReviewRecord]:
    """Real mini results for real news items, as the escalator would hand them to people."""
    events = [
        FeedEvent(id=row.id or "", source="wire", text=row.text, created_at=datetime(2026, 11, 27, tzinfo=UTC))
        for row in items
    ]
    records = []
    for event, result in zip(events, mini_model.process(events), strict=True):
        assert isinstance(result, Result)
        records.append(
            ReviewRecord(
                id=event.id,
                kind="feed",
                reasons=["classify.low_confidence"],
                review_reasons=["budget.hard_cap"],
                event=event.model_dump(mode="json"),
                result=result,
                sent_at=datetime.now(UTC),
            )
        )
    return records


async def produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def review_topic_state(
    bootstrap: str, topic: str, group: str
) -> tuple[dict[int, int], dict[int, int], list[str]]:
    """End offsets, the group's committed offsets, and the ids of records that carry a skip count."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        ends = await consumer.end_offsets(tps)
        committed = {tp.partition: await consumer.committed(tp) or 0 for tp in tps}
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        skipped: list[str] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                skipped += [
                    json.loads(r.value)["id"] for r in batch if any(name == REVIEW_SKIPS for name, _ in r.headers)
                ]
        return {tp.partition: ends[tp] for tp in tps}, committed, sorted(skipped)
    finally:
        await consumer.stop()


def test_review_sends_one_verdict_per_item_and_train_reads_them_back(
    prefix: str,
    kafka_bootstrap: str,
    mini_model: MiniModel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    review_topic, labels_topic, group = prefix + "review", prefix + "labels", prefix + "reviewers"
    asyncio.run(create_topic(kafka_bootstrap, review_topic, partitions=3))
    asyncio.run(create_topic(kafka_bootstrap, labels_topic, partitions=3))
    items = news_items()
    records = review_records(mini_model, items)
    asyncio.run(
        produce(kafka_bootstrap, review_topic, [(r.id.encode(), r.model_dump_json().encode()) for r in records])
    )

    gold = {row.id: row.label for row in items}
    skipped_on_purpose, not_answered = items[0].id or "", items[1].id or ""
    answered = [row.id or "" for row in items[2:]]
    lines = [{"id": skipped_on_purpose, "skip": True}] + [{"id": i, "label": gold[i]} for i in answered]
    answers = tmp_path / "answers.jsonl"
    answers.write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    assert main(["review", "--answers", str(answers), "--reviewer", "alice", "--group", group]) == 0
    out = capsys.readouterr().out
    assert "settled 18 (18 label records), skipped 2; nothing left to review" in out

    # Exactly one verdict per answered id, keyed task:id, with the reviewer's label; the two left went back in line.
    first = asyncio.run(read_labels(as_kafka(kafka_bootstrap), labels_topic))
    assert sorted(e.key or "" for e in first.entries) == sorted(f"classify:{i}" for i in answered)
    assert all(
        e.record is not None and e.record.decided_by == "alice" and e.record.source == "human" for e in first.entries
    )
    assert {e.record.id: e.record.label for e in first.entries if e.record} == {i: gold[i] for i in answered}
    ends, committed, requeued = asyncio.run(review_topic_state(kafka_bootstrap, review_topic, group))
    assert requeued == sorted([skipped_on_purpose, not_answered])
    assert sum(ends.values()) == len(records) + 2
    assert sum(committed.values()) == len(records)  # every original item committed; the two put back are not yet

    # A second reviewer settles what was put back by accepting the mini model's answer.
    assert main(["review", "--accept", "mini", "--reviewer", "bob", "--group", group]) == 0
    assert "settled 2 (2 label records), skipped 0; nothing left to review" in capsys.readouterr().out
    ends, committed, _ = asyncio.run(review_topic_state(kafka_bootstrap, review_topic, group))
    assert committed == ends
    second = asyncio.run(read_labels(as_kafka(kafka_bootstrap), labels_topic))
    by_key: dict[str, int] = {}
    for e in second.entries:
        by_key[e.key or ""] = by_key.get(e.key or "", 0) + 1
    assert by_key == {f"classify:{row.id}": 1 for row in items}

    # A later verdict replaces one, a tombstone withdraws another; training sees 19 verdicts.
    replaced, withdrawn = answered[0], answered[1]
    newer = next(e.record for e in second.entries if e.record and e.record.id == replaced)
    newer = newer.model_copy(
        update={"label": "world" if gold[replaced] != "world" else "sports", "decided_by": "carol"}
    )
    later = [
        (f"classify:{replaced}".encode(), newer.model_dump_json().encode()),
        (f"classify:{withdrawn}".encode(), None),
    ]
    asyncio.run(produce(kafka_bootstrap, labels_topic, later))
    latest = latest_verdicts(asyncio.run(read_labels(as_kafka(kafka_bootstrap), labels_topic)).entries)
    assert len(latest) == 19 and latest[f"classify:{replaced}"].decided_by == "carol"

    heads_path = tmp_path / "heads.json"
    assert main(["train", "--from-topic", "labels", "--out", str(heads_path)]) == 0
    captured = capsys.readouterr()
    assert "22 records, 19 latest verdicts, 19 for classification" in captured.err
    head_file = HeadFile.load(heads_path)
    assert head_file.heads["feed"].examples == 19 and head_file.zero_shot_temperature == {}


def test_distillation_verdicts_through_the_topic_train_the_same_head(
    prefix: str, kafka_bootstrap: str, encoder: Encoder, settings: Settings, tmp_path: Path
) -> None:
    """The replayed stream's verdicts, sent to a real labels topic and trained on with `train --from-topic`, give
    the head the in-process distillation fits from the same verdicts."""
    labels_topic = prefix + "labels"
    asyncio.run(create_topic(kafka_bootstrap, labels_topic, partitions=3))
    stream = [r for r in read_labeled(EVAL / "news_topics_train.jsonl") if r.label]
    classifier = ClassifyTask.load(settings, encoder).classifier
    collect = RoutingSettings(classify_min_confidence=0.95)
    escalated = replay(classifier, "feed", encoder.embed([r.text for r in stream]), collect).escalated
    verdicts: list[LabelRecord] = stand_in_verdicts(stream, escalated, "feed")
    # 82 on an AVX512-VNNI CPU with the static int8 model; the AVX2 build escalates a few more or fewer near-ties.
    assert abs(len(verdicts) - 82) <= 6
    asyncio.run(
        produce(
            kafka_bootstrap, labels_topic, [(label_key(v).encode(), v.model_dump_json().encode()) for v in verdicts]
        )
    )

    heads_path = tmp_path / "heads.json"
    assert main(["train", "--from-topic", "labels", "--out", str(heads_path)]) == 0
    via_topic = HeadFile.load(heads_path).heads["feed"]

    rows = rows_from_verdicts(sorted(verdicts, key=label_key))  # the order latest_verdicts gives: by key
    in_process, _ = fit_heads(rows, load_label_sets(), encoder, origin="verdicts", zero_shot_temperatures=False)
    head = in_process.heads["feed"]
    assert via_topic.examples == head.examples == len(verdicts)
    np.testing.assert_allclose(via_topic.coef, head.coef, rtol=1e-6, atol=1e-9)
    assert via_topic.temperature == pytest.approx(head.temperature)
