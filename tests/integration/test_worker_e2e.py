"""`minnow worker` on the real broker: every input comes out once, dead letters keep their bytes, nothing is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.admin import NewTopic
from prometheus_client.parser import text_string_to_metric_families

from pipeline.stream import clients, names
from tests.integration.conftest import BOOTSTRAP_ENV
from tests.integration.helpers import Cluster, as_kafka, logged_batches

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PARTITIONS = 3
MAX_EVENT_BYTES = 4096  # small, so an oversize record is cheap to send
OUTPUT_TOPICS = (*sorted(set(names.SINK_TOPICS.values())), names.ESCALATION_TOPIC, names.DEADLETTER_TOPIC)
START = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
STOP_TIMEOUT_S = 60.0

FEED_TEXTS = (
    "Stocks rallied on Wall Street after the central bank held interest rates steady.",
    "The home side scored twice in stoppage time to win the cup final in front of a sold-out stadium.",
    "New open-source compiler release cuts build times in half, according to the maintainers.",
    "The city council met on Tuesday to discuss the new transit plan. Residents packed the hall. Many spoke "
    "against the fare rise. The vote was postponed to next month.",
    "Scientists report a new battery chemistry that charges in five minutes.",
    "CLICK HERE to claim your FREE prize!!! Send your bank details now to win $1000 instantly.",
    "ok",  # too short to classify with confidence: escalated
)
TURNS = (
    "Thanks for calling, how can I help you today?",
    "I was charged twice on my last invoice and I want a refund.",
    "I can see the duplicate charge; the refund will arrive in three days.",
    "My router keeps dropping the connection every evening.",
    "hmm",  # escalated: low confidence
)


# --------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Planned:
    """One input record to produce, and what the test expects of it."""

    topic: str  # logical input topic
    key: bytes | None
    value: bytes | None
    marker: str | None  # the event id when the record carries one; None: identified by where it was written
    out_key: bytes | None = None  # event.key() for valid events
    order: tuple[str, float] | None = None  # (key, seq or ts) for the per-key order check
    error: str | None = None  # the dead-letter class a deliberately bad record must get


@dataclass(frozen=True)
class Sent:
    plan: Planned
    topic: str  # real topic name
    partition: int
    offset: int

    @property
    def marker(self) -> str:
        return self.plan.marker or f"{self.topic}@{self.partition}:{self.offset}"


def _json(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


def feed(n: int, *, wave: str = "a") -> Planned:
    event_id = f"feed-{wave}{n:04d}"
    text = FEED_TEXTS[n % len(FEED_TEXTS)]
    body = {"id": event_id, "source": "wire", "text": text, "created_at": (START + timedelta(seconds=n)).isoformat()}
    return Planned("feeds.in", event_id.encode(), _json(body), event_id, out_key=event_id.encode())


def segment(conversation: str, seq: int) -> Planned:
    event_id = f"{conversation}-seg-{seq:03d}"
    body = {
        "id": event_id,
        "conversation_id": conversation,
        "seq": seq,
        "speaker": "agent" if seq % 2 == 0 else "customer",
        "text": TURNS[seq % len(TURNS)],
    }
    key = conversation.encode()
    return Planned("transcripts.in", key, _json(body), event_id, out_key=key, order=(conversation, float(seq)))


def iot(device: str, n: int) -> Planned:
    event_id = f"{device}-m{n:04d}"
    ts = START + timedelta(minutes=n)
    body: dict[str, Any] = {
        "id": event_id,
        "device_id": device,
        "ts": ts.isoformat(),
        # every ninth reading overheats: an anomaly, escalated
        "readings": {"temperature_c": 96.0 if n % 9 == 4 else 20.0 + n % 7, "humidity_pct": 40.0},
    }
    if n % 5 == 0:
        body["text"] = "CRITICAL: overheating detected" if n % 10 == 0 else "heartbeat ok"
    key = device.encode()
    return Planned("iot.in", key, _json(body), event_id, out_key=key, order=(device, ts.timestamp()))


def conversation(n: int) -> Planned:
    event_id = f"call-{n}"
    segments = [
        {"id": f"{event_id}-{i}", "conversation_id": event_id, "seq": i, "speaker": "agent", "text": TURNS[i]}
        for i in range(len(TURNS))
    ]
    body = {"kind": "conversation", "id": event_id, "segments": segments}
    return Planned("transcripts.in", event_id.encode(), _json(body), event_id, out_key=event_id.encode())


def deliberately_bad() -> list[Planned]:
    oversize = {"id": "feed-oversize", "source": "wire", "text": "x" * MAX_EVENT_BYTES, "created_at": START.isoformat()}
    no_created_at = {"id": "feed-no-created-at", "source": "wire", "text": "missing its timestamp"}
    bad_reading = {"id": "iot-bad-reading", "device_id": "dev-0", "ts": "yesterday", "readings": {"t": "hot"}}
    return [
        Planned("feeds.in", b"junk-1", b"this line is not JSON at all", None, error="decode_error"),
        Planned("transcripts.in", b"junk-2", b'{"id": "utf8", "text": "caf\xe9"}', None, error="decode_error"),
        Planned("feeds.in", b"big", _json(oversize), "feed-oversize", error="decode_error"),
        Planned("feeds.in", b"nc", _json(no_created_at), "feed-no-created-at", error="schema_error"),
        Planned("iot.in", b"dev-0", _json(bad_reading), "iot-bad-reading", error="schema_error"),
        Planned("iot.in", b"arr", b"[1, 2, 3]", None, error="schema_error"),
        Planned("iot.in", b"tombstone", None, None, error="decode_error"),
    ]


def mixed_inputs() -> list[Planned]:
    """Every family, a deliberate duplicate pair, an empty text and every kind of bad record, interleaved."""
    feeds = [feed(n) for n in range(120)]
    feeds += [feeds[7]]  # the same record twice: two inputs, two outputs with one id
    empty = {"id": "feed-empty", "source": "wire", "text": "", "created_at": START.isoformat()}
    feeds += [Planned("feeds.in", b"feed-empty", _json(empty), "feed-empty", out_key=b"feed-empty")]
    segments = [segment(f"conv-{c}", seq) for seq in range(20) for c in range(6)]
    readings = [iot(f"dev-{d}", n) for n in range(20) for d in range(6)]
    return interleave(feeds, segments, readings, [conversation(1), conversation(2)], deliberately_bad())


def interleave(*groups: list[Planned]) -> list[Planned]:
    """Round-robin across groups, so every topic has records in flight at once; order within a group is kept."""
    out: list[Planned] = []
    iters = [iter(g) for g in groups]
    while iters:
        for it in list(iters):
            item = next(it, None)
            if item is None:
                iters.remove(it)
            else:
                out.append(item)
    return out


# ----------------------------------------------------------------------------------------- the broker
async def create_topics(bootstrap: Cluster, prefix: str) -> None:
    admin = clients.admin(as_kafka(bootstrap))
    await admin.start()
    try:
        # The state changelogs too: a worker declares no topics itself, and they must match the inputs' partitions.
        wanted = [*names.INPUT_TOPICS.values(), *OUTPUT_TOPICS, names.IOT_WINDOWS_TOPIC, *names.STATE_TOPICS.values()]
        await admin.create_topics(
            [NewTopic(prefix + t, num_partitions=PARTITIONS, replication_factor=1) for t in wanted]
        )
    finally:
        await admin.close()


async def produce(bootstrap: Cluster, prefix: str, planned: list[Planned]) -> list[Sent]:
    producer = clients.producer(as_kafka(bootstrap), max_request_size=4 * MAX_EVENT_BYTES)
    await producer.start()
    try:
        futures = [await producer.send(prefix + p.topic, p.value, key=p.key) for p in planned]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [Sent(p, m.topic, m.partition, m.offset) for p, m in zip(planned, metadata, strict=True)]


async def committed_offsets(bootstrap: Cluster, group: str) -> dict[tuple[str, int], int]:
    admin = clients.admin(as_kafka(bootstrap))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


class OutputReader:
    """Reads every output partition (or those of `topics`) from the beginning, outside any group, keeping what it
    has seen."""

    def __init__(
        self,
        bootstrap: Cluster,
        prefix: str,
        *,
        isolation_level: str = "read_uncommitted",
        topics: Sequence[str] = OUTPUT_TOPICS,
    ) -> None:
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self._consumer = clients.consumer(
            as_kafka(bootstrap), enable_auto_commit=False, isolation_level=isolation_level
        )
        self._partitions = [TopicPartition(prefix + t, p) for t in topics for p in range(PARTITIONS)]

    async def __aenter__(self) -> OutputReader:
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def read_until(self, done: Callable[[list[ConsumerRecord[bytes, bytes]]], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done(self.records):
            if time.monotonic() > deadline:
                return False
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp in sorted(batches, key=lambda t: (t.topic, t.partition)):
                self.records.extend(batches[tp])
        return True

    async def read_to_end(self) -> None:
        """Everything written so far: up to the current end of every output partition."""
        ends = await self._consumer.end_offsets(self._partitions)
        positions = {tp: await self._consumer.position(tp) for tp in self._partitions}
        deadline = time.monotonic() + 30
        while any(positions[tp] < ends[tp] for tp in self._partitions) and time.monotonic() < deadline:
            batches = await self._consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                self.records.extend(batch)
            positions = {tp: await self._consumer.position(tp) for tp in self._partitions}


# ---------------------------------------------------------------------------------------- the worker
@dataclass
class WorkerProcess:
    """`python -m pipeline.cli worker` as a child process, its log in a file."""

    env: dict[str, str]
    log_path: Path
    args: tuple[str, ...] = ("worker",)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    _log: Any = field(default=None, repr=False)

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *self.args], env=self.env, stdout=self._log, stderr=self._log
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT_S)
        finally:
            self.kill()
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


# The kill tests SIGKILL one worker process running every family. Exactly-once would otherwise split it into one
# process per family (pipeline/stream/family_processes.py), each of which is such a worker for its one family; the
# split itself is tested in test_family_isolation.py.
ONE_PROCESS = {"MINNOW_WORKER__FAMILY_PROCESSES": "off"}


@pytest.fixture
def worker_env(kafka_bootstrap: str, random_name: Callable[[str], str], model_cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINNOW_")}
    env.update(
        MINNOW_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
        MINNOW_KAFKA__TOPIC_PREFIX=random_name("worker") + ".",
        MINNOW_KAFKA__GROUP_ID=random_name("group"),
        MINNOW_KAFKA__MAX_EVENT_BYTES=str(MAX_EVENT_BYTES),
        MINNOW_ENGINE__CACHE_DIR=str(model_cache),
        MINNOW_WORKER__METRICS_PORT="0",
    )
    return env


@pytest.fixture
def workers(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers that are always gone after the test, whatever it asserted."""
    started: list[WorkerProcess] = []

    def make(**env: str) -> WorkerProcess:
        worker = WorkerProcess({**worker_env, **env}, tmp_path / f"worker-{len(started) + 1}.log")
        started.append(worker)
        worker.start()
        return worker

    yield make
    for worker in started:
        worker.kill()


# ----------------------------------------------------------------------------------------- accounting
def output_markers(
    records: list[ConsumerRecord[bytes, bytes]], by_place: dict[tuple[str, int, int], Sent]
) -> Counter[str]:
    """Which input each output stands for: the result's id, or for a dead letter the place it was read from."""
    seen: Counter[str] = Counter()
    for record in records:
        if record.topic.endswith(names.DEADLETTER_TOPIC):
            seen[by_place[dead_letter_source(record)].marker] += 1
        else:
            seen[orjson.loads(record.value)["id"]] += 1
    return seen


def dead_letter_source(record: ConsumerRecord[bytes, bytes]) -> tuple[str, int, int]:
    headers = dict(record.headers)
    return (
        headers[names.DLQ_SOURCE_TOPIC].decode(),
        int(headers[names.DLQ_SOURCE_PARTITION]),
        int(headers[names.DLQ_SOURCE_OFFSET]),
    )


def all_seen(expected: Counter[str], by_place: dict[tuple[str, int, int], Sent]) -> Callable[[list[Any]], bool]:
    def done(records: list[ConsumerRecord[bytes, bytes]]) -> bool:
        seen = output_markers(records, by_place)
        return all(seen[marker] >= count for marker, count in expected.items())

    return done


def _missing(expected: Counter[str], records: list[Any], by_place: dict[tuple[str, int, int], Sent]) -> str:
    """What a failed wait was still waiting for, by input topic, for the assertion message."""
    seen = output_markers(records, by_place)
    missing = [marker for marker, n in expected.items() if seen[marker] < n]
    topics = Counter(s.plan.topic for s in by_place.values() if s.marker in set(missing))
    return f"missing {len(missing)} outputs {dict(topics)}, e.g. {sorted(missing)[:8]}\n"


def at_least(n: int) -> Callable[[list[Any]], bool]:
    return lambda records: len(records) >= n


# ---------------------------------------------------------------------------------------------- tests
def test_every_input_comes_out_once_across_a_graceful_restart(  # noqa: PLR0915 - one story, told in order
    kafka_bootstrap: str, worker_env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    """Feeds, segments, conversations, IoT and bad records: one output each (a duplicate pair: two), by id.

    The first worker is stopped with SIGTERM mid-stream; it must drain and commit only what it delivered, so the
    second one (which also gets the records produced meanwhile) neither repeats nor skips anything. Dead letters
    keep the exact bytes and name their source; outputs are keyed by the event's key() and keep per-key order; the
    engine saw batches larger than one; the second worker's /metrics counted what it did.
    """
    prefix, group = worker_env["MINNOW_KAFKA__TOPIC_PREFIX"], worker_env["MINNOW_KAFKA__GROUP_ID"]
    planned = mixed_inputs()
    before, after = planned[:250], planned[250:]

    async def run() -> tuple[
        list[Sent], list[ConsumerRecord[bytes, bytes]], dict[tuple[str, int], int], dict[str, float]
    ]:
        timings: dict[str, float] = {}
        sent = await _create_and_produce(kafka_bootstrap, prefix, before)
        async with OutputReader(kafka_bootstrap, prefix) as reader:
            first = workers()
            assert await reader.read_until(at_least(40), timeout_s=90), first.tail()
            timings["first_outputs_s"] = time.monotonic() - first.started_at
            code = first.stop(signal.SIGTERM)
            assert code == 0, f"worker exited {code} on SIGTERM\n{first.tail()}"
            timings["stopped_after"] = len(reader.records)
            committed = await committed_offsets(kafka_bootstrap, group)
            await reader.read_to_end()
            by_place = {(s.topic, s.partition, s.offset): s for s in sent}
            _assert_committed_only_delivered(sent, committed, reader.records, by_place)
            timings["committed_at_stop"] = sum(committed.values())

            sent += await produce(kafka_bootstrap, prefix, after)  # so the second worker always has work
            by_place = {(s.topic, s.partition, s.offset): s for s in sent}
            expected = Counter(s.marker for s in sent)

            port = _free_port()
            second = workers(MINNOW_WORKER__METRICS_PORT=str(port))
            assert await reader.read_until(at_least(len(reader.records) + 1), timeout_s=90), second.tail()
            first_output = time.monotonic()
            timings["second_start_s"] = first_output - second.started_at
            assert await reader.read_until(all_seen(expected, by_place), timeout_s=120), (
                _missing(expected, reader.records, by_place) + second.tail()
            )
            timings["second_run_s"] = time.monotonic() - first_output
            timings.update(await asyncio.to_thread(_scrape, port))
            code = second.stop(signal.SIGTERM)
            assert code == 0, f"worker exited {code} on SIGTERM\n{second.tail()}"
            await reader.read_to_end()
            final = await committed_offsets(kafka_bootstrap, group)
            async with OutputReader(kafka_bootstrap, prefix, topics=[names.IOT_WINDOWS_TOPIC]) as window_reader:
                await window_reader.read_to_end()
            windows.extend(window_reader.records)
            return sent, reader.records, final, timings

    windows: list[ConsumerRecord[bytes, bytes]] = []
    sent, records, final, timings = asyncio.run(run())
    _assert_windows(windows, sent)
    by_place = {(s.topic, s.partition, s.offset): s for s in sent}
    expected = Counter(s.marker for s in sent)
    assert expected["feed-a0007"] == 2 and len(sent) == len(planned)
    remaining = len(sent) - timings["committed_at_stop"]
    print(
        f"\n[worker e2e] {len(sent)} inputs; first outputs after {timings['first_outputs_s']:.1f}s; SIGTERM after "
        f"{timings['stopped_after']:.0f} outputs ({timings['committed_at_stop']:.0f} of the {len(before)} produced "
        f"by then committed); second worker: first output after "
        f"{timings['second_start_s']:.1f}s, the remaining {remaining:.0f} inputs in "
        f"{timings['second_run_s']:.1f}s (~{remaining / timings['second_run_s']:.0f}/s)"
    )

    assert output_markers(records, by_place) == expected, "every input exactly once, across the graceful restart"
    assert timings["minnow_events_in_total"] == timings["minnow_events_out_total"] == remaining, "the second worker"
    assert timings["minnow_partitions_assigned"] == len(names.INPUT_TOPICS) * PARTITIONS
    assert timings["minnow_batch_size_count"] < remaining, "fewer engine batches than events"
    assert final == _end_offsets(sent), "the second worker committed every input offset"
    _assert_dead_letters(records, by_place, prefix)
    _assert_keys_and_order(records, sent, prefix)
    batch_sizes = [_result(r)["timings"]["batch_size"] for r in records if not r.topic.endswith(names.DEADLETTER_TOPIC)]
    assert max(batch_sizes) > 1, "the engine ran micro-batches, not one event at a time"
    print(
        f"[worker e2e] engine batch sizes: max {max(batch_sizes):.0f}, mean {sum(batch_sizes) / len(batch_sizes):.1f}"
    )
    _assert_idempotent_outputs(kafka_bootstrap, prefix)


@pytest.mark.faults
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_killed_worker_loses_nothing_after_restart(
    guarantee: str, kafka_bootstrap: str, worker_env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    """SIGKILL mid-stream, more input while it is down, restart: every input comes out, none lost.

    At-least-once: duplicates are allowed (what the dead worker delivered but had not committed) and counted;
    records produced after the kill are seen only by the second worker, so they come out exactly once.
    Exactly-once: a read_committed consumer sees every input exactly once - the dead worker's uncommitted
    outputs were in an open transaction that the restart aborted.
    """
    prefix, group = worker_env["MINNOW_KAFKA__TOPIC_PREFIX"], worker_env["MINNOW_KAFKA__GROUP_ID"]
    # Long enough that the worker's first visible commit comes well before the wave is done (it took ~2,000 of
    # 2,400 inputs on a 2-core machine): the kill must land mid-stream.
    first_wave = interleave(
        [feed(n) for n in range(1400)],
        [segment(f"conv-{c}", seq) for seq in range(80) for c in range(10)],
        [iot(f"dev-{d}", n) for n in range(80) for d in range(10)],
    )
    second_wave = interleave(
        [feed(n, wave="b") for n in range(100)],
        [segment(f"conv-{c}", seq) for seq in range(80, 90) for c in range(10)],
        [iot(f"dev-{d}", n) for n in range(80, 90) for d in range(10)],
    )

    env = {"MINNOW_KAFKA__PROCESSING_GUARANTEE": guarantee, **ONE_PROCESS}
    isolation = "read_committed" if guarantee == "exactly_once" else "read_uncommitted"

    async def run() -> tuple[list[Sent], list[ConsumerRecord[bytes, bytes]], dict[str, float]]:
        timings: dict[str, float] = {}
        sent = await _create_and_produce(kafka_bootstrap, prefix, first_wave)
        async with OutputReader(kafka_bootstrap, prefix, isolation_level=isolation) as reader:
            doomed = workers(**env)
            assert await reader.read_until(at_least(100), timeout_s=90), doomed.tail()
            # Killed after a commit and with more delivered since, so the restart resumes from a commit and
            # has delivered-but-uncommitted inputs to redo.
            committed = await _wait_for_commit(kafka_bootstrap, group, timeout_s=30)
            await reader.read_until(at_least(sum(committed.values()) + 40), timeout_s=10)
            doomed.stop(signal.SIGKILL)
            await reader.read_to_end()
            timings["killed_after"] = len(reader.records)
            timings["committed_at_kill"] = sum(committed.values())
            assert 0 < timings["committed_at_kill"] < len(first_wave), "killed mid-stream, after a commit"
            sent += await produce(kafka_bootstrap, prefix, second_wave)

            by_place = {(s.topic, s.partition, s.offset): s for s in sent}
            expected = Counter(s.marker for s in sent)
            survivor = workers(**env)
            assert await reader.read_until(all_seen(expected, by_place), timeout_s=150), (
                _missing(expected, reader.records, by_place) + survivor.tail()
            )
            timings["recovery_s"] = time.monotonic() - survivor.started_at
            code = survivor.stop(signal.SIGTERM)
            assert code == 0, f"worker exited {code} on SIGTERM\n{survivor.tail()}"
            await reader.read_to_end()
            assert await committed_offsets(kafka_bootstrap, group) == _end_offsets(sent)
            return sent, reader.records, timings

    sent, records, timings = asyncio.run(run())
    assert len({s.marker for s in sent}) == len(sent), "every input has its own id"
    by_place = {(s.topic, s.partition, s.offset): s for s in sent}
    expected = Counter(s.marker for s in sent)
    seen = output_markers(records, by_place)
    missing = {m: n - seen[m] for m, n in expected.items() if seen[m] < n}
    duplicates = sum(seen[m] - n for m, n in expected.items() if seen[m] > n)
    print(
        f"\n[worker kill, {guarantee}] {len(sent)} inputs; SIGKILL with {timings['killed_after']:.0f} outputs "
        f"written and {timings['committed_at_kill']:.0f} offsets committed; restarted worker caught up in "
        f"{timings['recovery_s']:.1f}s (incl. ~10 s session timeout); duplicates: {duplicates}"
    )
    assert not missing, f"inputs lost after SIGKILL: {sorted(missing)[:10]}"
    assert set(seen) == set(expected), "no output stands for an input that was never produced"
    assert all(seen[s.marker] == 1 for s in sent[len(first_wave) :]), "produced after the kill: exactly once"
    if guarantee == "exactly_once":
        assert duplicates == 0, "exactly once, as read_committed consumers see it"


def talk(n: int, seq: int, *, final: bool) -> Planned:
    """A segment of conversation `talk-n`; the last one of an even conversation says it is final."""
    conversation = f"talk-{n}"
    body: dict[str, Any] = {
        "id": f"{conversation}-seg-{seq:02d}",
        "conversation_id": conversation,
        "seq": seq,
        "speaker": "agent" if seq % 2 == 0 else "customer",
        "text": TURNS[seq % len(TURNS)],
    }
    if final:
        body["final"] = True
    key = conversation.encode()
    return Planned("transcripts.in", key, _json(body), body["id"], out_key=key, order=(conversation, float(seq)))


@pytest.mark.faults
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_conversations_are_emitted_whole_once_across_a_sigkill(
    guarantee: str, kafka_bootstrap: str, worker_env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    """Segments gather per conversation in a table with a changelog; a SIGKILL loses none of them.

    Eight conversations of eight segments; the even ones end with a `final` segment, the odd ones just stop
    and are closed by the idle timer. The worker is killed after the first half of every conversation; the
    second half is produced while it is down, so the restarted worker must rebuild the first halves from the
    changelog, and must not idle-close anything while its backlog is unread. Every conversation record holds
    all 8 segments. Exactly-once (read_committed): each segment result and each conversation record exactly
    once. At-least-once: duplicates of either are allowed and counted, partial conversations are not.
    """
    prefix, group = worker_env["MINNOW_KAFKA__TOPIC_PREFIX"], worker_env["MINNOW_KAFKA__GROUP_ID"]
    n_conversations, n_segments = 8, 8
    halves = [
        [
            talk(n, seq, final=(seq == n_segments - 1 and n % 2 == 0))
            for seq in range(lo, hi)
            for n in range(n_conversations)
        ]
        for lo, hi in ((0, n_segments // 2), (n_segments // 2, n_segments))
    ]
    isolation = "read_committed" if guarantee == "exactly_once" else "read_uncommitted"
    # Long enough that nothing idles out before the kill, short enough to keep the test brief.
    env = {"MINNOW_WORKER__CONVERSATION_IDLE_S": "15", "MINNOW_KAFKA__PROCESSING_GUARANTEE": guarantee, **ONE_PROCESS}
    conversations = {f"talk-{n}" for n in range(n_conversations)}

    def conversation_records(records: list[ConsumerRecord[bytes, bytes]]) -> list[dict[str, Any]]:
        return [
            _result(r)
            for r in records
            if not r.topic.endswith(names.DEADLETTER_TOPIC) and _result(r)["kind"] == "conversation"
        ]

    async def run() -> tuple[list[Sent], list[ConsumerRecord[bytes, bytes]]]:
        sent = await _create_and_produce(kafka_bootstrap, prefix, halves[0])
        async with OutputReader(kafka_bootstrap, prefix, isolation_level=isolation) as reader:
            doomed = workers(**env)
            assert await reader.read_until(at_least(len(halves[0])), timeout_s=90), doomed.tail()
            await _wait_for_commit(kafka_bootstrap, group, timeout_s=30)
            doomed.stop(signal.SIGKILL)
            sent += await produce(kafka_bootstrap, prefix, halves[1])
            survivor = workers(**env)

            def all_closed(records: list[ConsumerRecord[bytes, bytes]]) -> bool:
                return {c["id"] for c in conversation_records(records)} >= conversations

            assert await reader.read_until(all_closed, timeout_s=150), survivor.tail()
            await asyncio.sleep(5)  # a sweep interval and then some: a second close would show by now
            code = survivor.stop(signal.SIGTERM)
            assert code == 0, f"worker exited {code} on SIGTERM\n{survivor.tail()}"
            await reader.read_to_end()
            return sent, reader.records

    sent, records = asyncio.run(run())
    closed = conversation_records(records)
    by_place = {(s.topic, s.partition, s.offset): s for s in sent}
    seen = output_markers(records, by_place)
    per_conversation = Counter(c["id"] for c in closed)
    duplicates = sum(per_conversation.values()) - len(per_conversation)
    segment_duplicates = sum(seen[s.marker] - 1 for s in sent if seen[s.marker] > 1)
    print(
        f"\n[conversations, {guarantee}] {len(sent)} segments, {len(closed)} conversation records; "
        f"duplicate conversations {duplicates}, duplicate segment results {segment_duplicates}"
    )
    assert set(per_conversation) == conversations
    sizes = sorted((c["id"], c["input"]["segments"]) for c in closed)
    assert all(size == n_segments for _, size in sizes), f"every conversation record is whole: {sizes}"
    assert all(seen[s.marker] >= 1 for s in sent), "every segment has its own result"
    if guarantee == "exactly_once":
        assert duplicates == 0 and segment_duplicates == 0, "exactly once, as read_committed consumers see it"


# -------------------------------------------------------------------------------------------- helpers
def _assert_windows(windows: list[ConsumerRecord[bytes, bytes]], sent: list[Sent]) -> None:
    """One-minute readings in one-minute windows: each reading's window closes when the next one arrives."""
    readings: dict[str, list[float]] = defaultdict(list)
    for s in sent:
        if s.plan.topic == "iot.in" and s.plan.order is not None and s.plan.error is None:
            readings[s.plan.order[0]].append(s.plan.order[1])
    got: dict[str, list[float]] = defaultdict(list)
    for record in windows:
        window = orjson.loads(record.value)
        assert record.key == window["device_id"].encode()
        assert window["messages"] == 1 and window["metrics"]["temperature_c"]["count"] == 1, window
        got[window["device_id"]].append(datetime.fromisoformat(window["window_start"]).timestamp())
    expected = {device: sorted(ts)[:-1] for device, ts in readings.items()}  # the newest window is still open
    assert {device: sorted(ts) for device, ts in got.items()} == expected, "every closed window exactly once"


async def _create_and_produce(bootstrap: Cluster, prefix: str, planned: list[Planned]) -> list[Sent]:
    await create_topics(bootstrap, prefix)
    return await produce(bootstrap, prefix, planned)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    """Totals of the worker's own counters, read from its /metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = (
        "minnow_events_in_total",
        "minnow_events_out_total",
        "minnow_partitions_assigned",
        "minnow_batch_size_count",
    )
    totals = dict.fromkeys(wanted, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("topic", "").endswith(names.IOT_WINDOWS_TOPIC):
                continue  # window summaries stand for no single input; _assert_windows checks them
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals


async def _wait_for_commit(bootstrap: Cluster, group: str, timeout_s: float) -> dict[tuple[str, int], int]:
    deadline = time.monotonic() + timeout_s
    while not (committed := await committed_offsets(bootstrap, group)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return committed


def _end_offsets(sent: list[Sent]) -> dict[tuple[str, int], int]:
    ends: dict[tuple[str, int], int] = {}
    for s in sent:
        ends[(s.topic, s.partition)] = max(ends.get((s.topic, s.partition), 0), s.offset + 1)
    return ends


def _result(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(record.value)
    return body["result"] if record.topic.endswith(names.ESCALATION_TOPIC) else body


def _assert_idempotent_outputs(bootstrap: str, prefix: str) -> None:
    """At-least-once, the worker's producer is still idempotent: every batch it wrote carries a producer id and a
    sequence number, so a retried send cannot write an output twice (faust alone sets idempotence only inside
    transactions). Read from the broker's own log segments."""
    logged = {topic: logged_batches(bootstrap, prefix + topic) for topic in OUTPUT_TOPICS}
    if any(batches is None for batches in logged.values()):
        assert os.environ.get(BOOTSTRAP_ENV), "the local test broker's log segments could not be found"
        return  # a broker of the developer's own: its files are not ours to read
    batches = [batch for topic_batches in logged.values() for batch in topic_batches or ()]
    assert batches, "the outputs were found in the broker's log segments"
    plain = [b for b in batches if b.producer_id < 0 or b.base_sequence < 0]
    assert not plain, f"{len(plain)} of {len(batches)} output batches written by a non-idempotent producer"
    assert not any(b.transactional for b in batches), "at-least-once writes outside transactions"


def _assert_committed_only_delivered(
    sent: list[Sent],
    committed: dict[tuple[str, int], int],
    records: list[ConsumerRecord[bytes, bytes]],
    by_place: dict[tuple[str, int, int], Sent],
) -> None:
    """Every input below a committed offset already has its output: the commit never ran ahead of delivery."""
    seen = output_markers(records, by_place)
    below = [s for s in sent if s.offset < committed.get((s.topic, s.partition), 0)]
    undelivered = [s.marker for s in below if seen[s.marker] == 0]
    assert not undelivered, f"offsets committed for inputs with no output: {undelivered[:10]}"


def _assert_dead_letters(
    records: list[ConsumerRecord[bytes, bytes]], by_place: dict[tuple[str, int, int], Sent], prefix: str
) -> None:
    letters = [r for r in records if r.topic == prefix + names.DEADLETTER_TOPIC]
    deliberate = {s.marker: s for s in by_place.values() if s.plan.error is not None}
    got = {by_place[dead_letter_source(r)].marker: r for r in letters}
    assert set(deliberate) <= set(got), f"bad records missing from the dead-letter topic: {set(deliberate) - set(got)}"
    for marker, record in got.items():
        source = by_place[dead_letter_source(record)]
        headers = dict(record.headers)
        assert record.value == source.plan.value, f"{marker}: the original bytes, untouched"
        assert headers[names.DLQ_SOURCE_TOPIC] == source.topic.encode()
        assert headers[names.DLQ_ATTEMPT] == b"1"
        assert headers[names.DLQ_ERROR_MESSAGE]
        assert datetime.fromisoformat(headers[names.DLQ_FIRST_SEEN].decode()).tzinfo is not None
        if source.plan.error is not None:
            assert headers[names.DLQ_ERROR_CLASS] == source.plan.error.encode(), marker
        if source.plan.out_key is not None:
            assert record.key == source.plan.out_key, f"{marker}: a parsed event is keyed by its key()"
        elif source.plan.error == "decode_error":
            assert record.key == source.plan.key, f"{marker}: an unreadable record keeps its own key"
    others = set(got) - set(deliberate)
    assert others <= {"feed-empty"}, f"valid events dead-lettered: {others}"


def _assert_keys_and_order(records: list[ConsumerRecord[bytes, bytes]], sent: list[Sent], prefix: str) -> None:
    """Keys are event.key(); within each output partition, per-key seq / ts only grows."""
    plans = {s.marker: s.plan for s in sent if s.plan.marker is not None}
    last: dict[tuple[str, int, str], float] = {}
    by_topic: dict[str, Counter[str]] = defaultdict(Counter)
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        if record.topic == prefix + names.DEADLETTER_TOPIC:
            continue
        event_id = orjson.loads(record.value)["id"]
        plan = plans[event_id]
        assert record.key == plan.out_key, f"{event_id} keyed {record.key!r}, not {plan.out_key!r}"
        by_topic[record.topic.removeprefix(prefix)][plan.topic] += 1
        if plan.order is not None:
            place = (record.topic, record.partition, plan.order[0])
            assert plan.order[1] > last.get(place, float("-inf")), f"{event_id} out of order in {place}"
            last[place] = plan.order[1]
    assert set(by_topic["feeds.enriched"]) <= {"feeds.in"}
    assert set(by_topic["iot.enriched"]) <= {"iot.in"}
    assert set(by_topic["transcripts.enriched"]) <= {"transcripts.in"}
    print(f"[worker e2e] outputs by topic and source: {dict(by_topic)}")
    assert sum(by_topic["escalations"].values()) > 0, "some results were escalated (the mix has unsure items)"
