"""A fuzz stream of 10,000 malformed records among valid events on every family's input topic: the worker never
stops, each malformed record is exactly one dead letter with its original bytes, each valid one exactly one result."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pytest
from aiokafka import ConsumerRecord

from pipeline.stream import clients, names
from tests.faults.accounting import destination, stands_for_one_input
from tests.faults.hostile import Record, stream
from tests.integration.helpers import as_kafka
from tests.integration.test_worker_e2e import (  # noqa: F401  # worker_env, workers: fixtures used by name
    MAX_EVENT_BYTES,
    OutputReader,
    WorkerProcess,
    at_least,
    create_topics,
    dead_letter_source,
    worker_env,
    workers,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(600)]

MALFORMED = 10_000
VALID_PER_TOPIC = 100
# Fixed, so a failure can be replayed; MINNOW_FUZZ_SEED explores other streams.
SEED = int(os.environ.get("MINNOW_FUZZ_SEED", "1313"))


@dataclass(frozen=True)
class Produced:
    record: Record
    topic: str  # real topic name
    partition: int
    offset: int


async def produce_all(bootstrap: str, prefix: str, records: list[Record]) -> list[Produced]:
    """One producer, every record sent before any acknowledgement is awaited: batched by aiokafka."""
    producer = clients.producer(as_kafka(bootstrap), max_request_size=8 * MAX_EVENT_BYTES, linger_ms=20)
    await producer.start()
    try:
        acks = [await producer.send(prefix + r.topic, r.value, key=r.key, headers=r.headers or None) for r in records]
        written = await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return [Produced(r, m.topic, m.partition, m.offset) for r, m in zip(records, written, strict=True)]


@dataclass
class Outcome:
    """Each produced record's outputs: dead letters by the place they name, results by event id."""

    letters: dict[tuple[str, int, int], list[ConsumerRecord[bytes, bytes]]]
    results: dict[str, list[str]]  # event id -> destination of each result
    strays: list[str]

    @classmethod
    def of(cls, records: list[ConsumerRecord[bytes, bytes]], prefix: str, ids: set[str]) -> Outcome:
        letters: dict[tuple[str, int, int], list[ConsumerRecord[bytes, bytes]]] = defaultdict(list)
        results: dict[str, list[str]] = defaultdict(list)
        strays: list[str] = []
        for record in records:
            if not stands_for_one_input(record, prefix):
                continue  # an assembled conversation: its segments have their own results
            kind = destination(record.topic, prefix)
            if kind == "deadletter":
                letters[dead_letter_source(record)].append(record)
                continue
            event_id = str(orjson.loads(record.value)["id"])
            (results[event_id] if event_id in ids else strays).append(kind if event_id in ids else event_id)
        return cls(letters, results, strays)

    def complete(self, produced: list[Produced]) -> bool:
        """Every produced record has an output: a valid one its result, a malformed one its dead letter."""
        for p in produced:
            found = (
                p.record.event_id in self.results
                if p.record.valid
                else (p.topic, p.partition, p.offset) in self.letters
            )
            if not found:
                return False
        return True


def test_ten_thousand_malformed_records_cost_one_dead_letter_each(
    kafka_bootstrap: str,
    worker_env: dict[str, str],  # noqa: F811  # the fixture imported above
    workers: Callable[..., WorkerProcess],  # noqa: F811
) -> None:
    """10,000 seeded malformed records — random bytes, invalid UTF-8, truncated JSON, wrong types, missing fields,
    arrays / numbers / null, empty values, tombstones, oversize and overlong fields, odd keys, garbage headers
    (some posing as Minnow's own) — and 400 valid events, spread over the four input topics.

    The worker never exits (checked throughout, then SIGTERM exits 0); every malformed record is exactly one dead
    letter, found by the source topic / partition / offset it names, carrying the record's exact bytes (a tombstone:
    null), its own headers only under `minnow.original.` and Minnow's headers written once, by Minnow; every valid
    event is exactly one result in its sink or the escalation topic, none dead-lettered.
    """
    prefix = worker_env["MINNOW_KAFKA__TOPIC_PREFIX"]
    records = stream(SEED, malformed=MALFORMED, valid_per_topic=VALID_PER_TOPIC, max_bytes=MAX_EVENT_BYTES)
    ids = {r.event_id for r in records if r.event_id is not None}
    figures: dict[str, float] = {}

    async def run() -> tuple[list[Produced], Outcome]:
        await create_topics(kafka_bootstrap, prefix)
        started = time.monotonic()
        produced = await produce_all(kafka_bootstrap, prefix, records)
        figures["produce_s"] = time.monotonic() - started
        worker = workers()
        async with OutputReader(kafka_bootstrap, prefix) as reader:
            deadline = time.monotonic() + 420
            while not Outcome.of(reader.records, prefix, ids).complete(produced):
                assert worker.process is not None and worker.process.poll() is None, f"worker exited\n{worker.tail()}"
                assert time.monotonic() < deadline, f"{len(reader.records)} outputs so far\n{worker.tail()}"
                await reader.read_until(at_least(len(reader.records) + 2000), timeout_s=5)
            figures["worker_s"] = time.monotonic() - worker.started_at
            await asyncio.sleep(2)  # a repeat would show by now
            await reader.read_to_end()
            assert worker.process is not None and worker.process.poll() is None, worker.tail()
            code = worker.stop(signal.SIGTERM)
            assert code == 0, f"worker exited {code} on SIGTERM\n{worker.tail()}"
            log = worker.log_path.read_text(errors="replace")
            assert "Traceback" not in log and '"level":"CRITICAL"' not in log, worker.tail(200)
            return produced, Outcome.of(reader.records, prefix, ids)

    produced, outcome = asyncio.run(run())
    bad = [p for p in produced if not p.record.valid]
    good = [p for p in produced if p.record.valid]
    print(
        f"\n[fuzz, seed {SEED}] {len(bad)} malformed {dict(Counter(p.record.category for p in bad))} and "
        f"{len(good)} valid records produced in {figures['produce_s']:.1f}s; the worker accounted for all of them "
        f"{figures['worker_s']:.1f}s after its start "
        f"(~{len(produced) / figures['worker_s']:.0f} records/s incl. start-up)"
    )
    assert len(bad) == MALFORMED and len(good) == 4 * VALID_PER_TOPIC

    letters_per_place = Counter({place: len(found) for place, found in outcome.letters.items()})
    bad_places = {(p.topic, p.partition, p.offset) for p in bad}
    assert set(letters_per_place) == bad_places, "dead letters for exactly the malformed records"
    repeated = {place: n for place, n in letters_per_place.items() if n != 1}
    assert not repeated, f"malformed records with more than one dead letter: {list(repeated.items())[:5]}"
    for p in bad:
        _assert_dead_letter(p, outcome.letters[(p.topic, p.partition, p.offset)][0])

    per_id = {p.record.event_id: outcome.results.get(p.record.event_id or "", []) for p in good}
    assert all(len(kinds) == 1 for kinds in per_id.values()), (
        f"valid events without exactly one result: {[(i, k) for i, k in per_id.items() if len(k) != 1][:10]}"
    )
    assert not outcome.strays, f"results for events never produced: {outcome.strays[:10]}"
    print(f"[fuzz] valid events by destination: {dict(Counter(k[0] for k in per_id.values()))}")


def _assert_dead_letter(produced: Produced, letter: ConsumerRecord[bytes, bytes]) -> None:
    """The exact bytes, Minnow's headers once each and naming the true source, the producer's under a prefix (a
    forged `minnow.*` header is not copied)."""
    record = produced.record
    where = f"{record.category} at {produced.topic}[{produced.partition}]@{produced.offset}"
    assert letter.value == record.value, f"{where}: the original bytes, untouched"
    headers = list(letter.headers)
    minnow = Counter(name for name, _ in headers if not name.startswith(names.ORIGINAL_HEADER_PREFIX))
    assert all(n == 1 for n in minnow.values()), f"{where}: a Minnow header written twice: {minnow}"
    own = dict(headers)
    assert own[names.DLQ_SOURCE_TOPIC] == produced.topic.encode(), where
    assert own[names.DLQ_SOURCE_PARTITION] == str(produced.partition).encode(), where
    assert own[names.DLQ_SOURCE_OFFSET] == str(produced.offset).encode(), where
    assert own[names.DLQ_ERROR_CLASS] in {b"decode_error", b"schema_error"}, f"{where}: {own[names.DLQ_ERROR_CLASS]!r}"
    originals = [(name, value) for name, value in headers if name.startswith(names.ORIGINAL_HEADER_PREFIX)]
    # A null header value comes back empty (deadletter.normalize_headers: Minnow's headers are bytes throughout).
    expected = [
        (names.ORIGINAL_HEADER_PREFIX + n, v if v is not None else b"")
        for n, v in record.headers
        if not n.startswith("minnow.")
    ]
    assert originals == expected, f"{where}: the producer's headers, prefixed, in order"
