"""One family that cannot deliver does not stop the others: its input stalls (retried, watched by a gauge) while the
worker's other inputs keep going and committing; it goes on by itself once its outputs are accepted again, and the
process exits 75 only when none of its inputs can go on.

The fault is a real one: the feed sink is deleted under the running worker (the local broker, like the compose stack
and most production clusters, never auto-creates topics), so every produce to it fails until it is created again.
"""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.errors import TopicAlreadyExistsError
from prometheus_client.parser import text_string_to_metric_families

from pipeline.stream import clients, names
from tests.integration.helpers import as_kafka, create_topic
from tests.integration.test_worker_e2e import (  # noqa: F401  # worker_env, workers: fixtures used by name
    OUTPUT_TOPICS,
    PARTITIONS,
    OutputReader,
    Sent,
    WorkerProcess,
    _create_and_produce,
    _end_offsets,
    _free_port,
    all_seen,
    committed_offsets,
    feed,
    iot,
    output_markers,
    produce,
    worker_env,
    workers,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(300)]

# Quick to fail and to retry, so the test sees the stall, the other family's progress and the recovery in seconds.
PATIENCE = {
    "MINNOW_WORKER__DELIVERY_TIMEOUT_S": "4",
    "MINNOW_WORKER__DELIVERY_RETRIES": "1",
    "MINNOW_WORKER__STALLED_RETRY_S": "3",
}


async def delete_topic(bootstrap: str, topic: str) -> None:
    admin = await clients.started(clients.admin(as_kafka(bootstrap)), as_kafka(bootstrap))
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def recreate_topic(bootstrap: str, topic: str) -> None:
    """Create a deleted topic again, once the broker has finished deleting it."""
    deadline = time.monotonic() + 60
    while True:
        try:
            await create_topic(bootstrap, topic, PARTITIONS)
            return
        except TopicAlreadyExistsError:  # still being deleted
            assert time.monotonic() < deadline, f"{topic} was never deleted"
            await asyncio.sleep(0.5)


def stalled_gauge(port: int) -> dict[str, float]:
    """minnow_input_stalled by family, from the worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.labels["family"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "minnow_input_stalled"
    }


async def wait_for(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
    return True


async def wait_for_commits(
    bootstrap: str, group: str, ends: dict[tuple[str, int], int], worker: WorkerProcess, timeout_s: float
) -> dict[tuple[str, int], int]:
    """Wait until `group` has committed `ends` (input partition -> next offset); returns all its committed offsets."""
    deadline = time.monotonic() + timeout_s
    while True:
        committed = await committed_offsets(bootstrap, group)
        if all(committed.get(tp) == end for tp, end in ends.items()):
            return committed
        assert time.monotonic() < deadline, f"{group} committed {ends}\n" + worker.tail()
        await asyncio.sleep(0.5)


async def read_everything(
    reader: OutputReader,
    sink: OutputReader,
    *,
    sent: list[Sent],
    by_place: dict[tuple[str, int, int], Sent],
    worker: WorkerProcess,
    timeout_s: float,
) -> Counter[str]:
    """Read both readers until every input of `sent` has come out; returns how often each one did."""
    expected = Counter(s.marker for s in sent)
    deadline = time.monotonic() + timeout_s
    while not all_seen(expected, by_place)(reader.records + sink.records):
        assert time.monotonic() < deadline, "every input out after the sink is back\n" + worker.tail()
        await reader.read_until(lambda _: True, 0)
        await sink.read_until(lambda _: True, 0)
        await reader.read_to_end()
        await sink.read_to_end()
    await asyncio.sleep(3)  # a late repeat would show by now
    await reader.read_to_end()
    await sink.read_to_end()
    return output_markers(reader.records + sink.records, by_place)


async def cut_the_feed_sink(
    bootstrap: str, prefix: str, reader: OutputReader, worker: WorkerProcess, *, device: str, wave: str
) -> tuple[list[Sent], list[Sent]]:
    """Delete the feed sink under the running worker, then produce six feeds and seven IoT messages; returns (feeds,
    IoT messages) once every one of those IoT messages has come out."""
    await delete_topic(bootstrap, prefix + names.SINK_TOPICS["feed"])
    feeds = await produce(bootstrap, prefix, [feed(n, wave=wave) for n in range(6)])
    devices = await produce(bootstrap, prefix, [iot(device, n) for n in range(1, 8)])
    by_place = {(s.topic, s.partition, s.offset): s for s in devices}
    assert await reader.read_until(all_seen(Counter(s.marker for s in devices), by_place), 120), worker.tail()
    return feeds, devices


def test_a_family_that_cannot_deliver_stalls_alone_and_recovers(
    kafka_bootstrap: str,
    worker_env: dict[str, str],  # noqa: F811  # the fixture imported above
    workers: Callable[..., WorkerProcess],  # noqa: F811
) -> None:
    """Feeds cannot be written (their sink was deleted) while IoT messages can: the feed input stalls (gauge 1, one
    CRITICAL line naming its partition and offsets), the IoT input delivers and commits everything, including
    messages sent after the stall began, and the worker stays up. Once the sink exists again the feed input goes on
    by itself: every input id comes out (feeds possibly more than once: at-least-once sends the whole batch again),
    every offset is committed, SIGTERM exits 0."""
    prefix, group = worker_env["MINNOW_KAFKA__TOPIC_PREFIX"], worker_env["MINNOW_KAFKA__GROUP_ID"]
    feed_sink = names.SINK_TOPICS["feed"]
    others = [topic for topic in OUTPUT_TOPICS if topic != feed_sink]
    port = _free_port()

    async def run() -> None:
        sent = await _create_and_produce(kafka_bootstrap, prefix, [iot("dev-iso", 0)])
        worker = workers(MINNOW_WORKER__FAMILIES="feed,iot", MINNOW_WORKER__METRICS_PORT=str(port), **PATIENCE)
        async with OutputReader(kafka_bootstrap, prefix, topics=others) as reader:
            by_place = {(s.topic, s.partition, s.offset): s for s in sent}
            assert await reader.read_until(all_seen(Counter(s.marker for s in sent), by_place), 120), worker.tail()
            feeds, devices = await cut_the_feed_sink(
                kafka_bootstrap, prefix, reader, worker, device="dev-iso", wave="s"
            )
            sent += feeds + devices
            iot_sent = [s for s in sent if s.plan.topic == "iot.in"]
            assert await wait_for(lambda: stalled_gauge(port).get("feed") == 1.0, 60), worker.tail()
            assert stalled_gauge(port).get("iot") == 0.0

            # IoT goes on while feeds are stalled: new messages come out and are committed; no feed offset is.
            later = await produce(kafka_bootstrap, prefix, [iot("dev-iso", n) for n in range(8, 14)])
            sent += later
            iot_sent += later
            by_place = {(s.topic, s.partition, s.offset): s for s in sent}
            assert await reader.read_until(all_seen(Counter(s.marker for s in iot_sent), by_place), 60), worker.tail()
            committed = await wait_for_commits(kafka_bootstrap, group, _end_offsets(iot_sent), worker, 30)
            assert all(committed.get(tp, 0) <= s.offset for s in feeds for tp in [(s.topic, s.partition)])
            assert worker.process is not None and worker.process.poll() is None, "still running\n" + worker.tail()
            assert f"{prefix}feeds.in stalled: the batch read from {prefix}feeds.in[" in worker.log_path.read_text()

            await recreate_topic(kafka_bootstrap, prefix + feed_sink)
            # The new sink read from its start, beside the topics that were never gone.
            async with OutputReader(kafka_bootstrap, prefix, topics=[feed_sink]) as sink:
                seen = await read_everything(reader, sink, sent=sent, by_place=by_place, worker=worker, timeout_s=120)
            assert await wait_for(lambda: stalled_gauge(port).get("feed") == 0.0, 30), worker.tail()
            repeats = sum(n - 1 for n in seen.values() if n > 1)
            print(f"\n[family isolation] {len(sent)} inputs; {repeats} outputs sent more than once (feeds resent)")
            assert all(seen[s.marker] == 1 for s in iot_sent if s.marker), "IoT never repeated"
        assert worker.stop(signal.SIGTERM) == 0, worker.tail()
        assert await committed_offsets(kafka_bootstrap, group) == _end_offsets(sent), "every input committed"

    asyncio.run(run())


def test_a_worker_whose_only_input_stalls_exits_75_naming_the_batch(
    kafka_bootstrap: str,
    worker_env: dict[str, str],  # noqa: F811  # the fixture imported above
    workers: Callable[..., WorkerProcess],  # noqa: F811
) -> None:
    """With nothing else to go on with, a stalled input ends the process: exit 75 (restart and retry) after its
    retries, with the input partition and offsets of the undelivered batch in the log and nothing committed past it."""
    prefix, group = worker_env["MINNOW_KAFKA__TOPIC_PREFIX"], worker_env["MINNOW_KAFKA__GROUP_ID"]

    async def run() -> list[Sent]:
        await _create_and_produce(kafka_bootstrap, prefix, [])
        await delete_topic(kafka_bootstrap, prefix + names.SINK_TOPICS["feed"])
        return await produce(kafka_bootstrap, prefix, [feed(n, wave="x") for n in range(4)])

    sent = asyncio.run(run())
    worker = workers(MINNOW_WORKER__FAMILIES="feed", **PATIENCE)
    assert worker.process is not None
    assert worker.process.wait(timeout=120) == 75, worker.tail()
    log = worker.log_path.read_text()
    assert "every input of this worker is stalled" in log and f"{prefix}feeds.in[" in log, worker.tail()
    committed = asyncio.run(committed_offsets(kafka_bootstrap, group))
    assert all(committed.get(tp, 0) < end for tp, end in _end_offsets(sent).items()), committed


def _readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_exactly_once_runs_each_family_in_its_own_process_so_one_cannot_stop_another(
    kafka_bootstrap: str,
    worker_env: dict[str, str],  # noqa: F811  # the fixture imported above
    workers: Callable[..., WorkerProcess],  # noqa: F811
) -> None:
    """Exactly-once, a worker given feeds and IoT runs each in its own process and consumer group (<group>-<family>).
    With the feed sink deleted the feed process exits 75 and is started again with backoff, while IoT messages sent
    before and during it come out exactly once (read_committed) and are committed in the IoT group, and the parent
    stays up. Its /metrics carries both processes' series (label worker_family), /readyz is 200 once both are ready.
    The sink created again, every feed comes out exactly once; SIGTERM ends every process with 0 and every offset is
    committed in its family's group."""
    prefix, group = worker_env["MINNOW_KAFKA__TOPIC_PREFIX"], worker_env["MINNOW_KAFKA__GROUP_ID"]
    feed_sink = names.SINK_TOPICS["feed"]
    others = [topic for topic in OUTPUT_TOPICS if topic != feed_sink]
    port = _free_port()

    async def run() -> None:
        sent = await _create_and_produce(kafka_bootstrap, prefix, [iot("dev-eos", 0)])
        worker = workers(
            MINNOW_KAFKA__PROCESSING_GUARANTEE="exactly_once",
            MINNOW_WORKER__FAMILIES="feed,iot",
            MINNOW_WORKER__METRICS_PORT=str(port),
            **PATIENCE,
        )
        async with OutputReader(kafka_bootstrap, prefix, topics=others, isolation_level="read_committed") as reader:
            by_place = {(s.topic, s.partition, s.offset): s for s in sent}
            assert await reader.read_until(all_seen(Counter(s.marker for s in sent), by_place), 120), worker.tail()
            assert await wait_for(lambda: _readyz(port) == 200, 60), "both families ready\n" + worker.tail()
            families = {s.labels.get("worker_family") for s in _samples(port, "minnow_partitions_assigned")}
            assert families == {"feed", "iot"}, families

            feeds, devices = await cut_the_feed_sink(
                kafka_bootstrap, prefix, reader, worker, device="dev-eos", wave="e"
            )
            sent += feeds + devices
            iot_sent = [s for s in sent if s.plan.topic == "iot.in"]
            restarted = "family feed: its worker exited 75"
            assert await wait_for(lambda: restarted in worker.log_path.read_text(), 120), worker.tail()

            # IoT goes on while the feed process fails: new messages come out and are committed in the IoT group.
            later = await produce(kafka_bootstrap, prefix, [iot("dev-eos", n) for n in range(8, 14)])
            sent += later
            iot_sent += later
            by_place = {(s.topic, s.partition, s.offset): s for s in sent}
            assert await reader.read_until(all_seen(Counter(s.marker for s in iot_sent), by_place), 60), worker.tail()
            await wait_for_commits(kafka_bootstrap, f"{group}-iot", _end_offsets(iot_sent), worker, 60)
            feed_committed = await committed_offsets(kafka_bootstrap, f"{group}-feed")
            assert all(feed_committed.get((s.topic, s.partition), 0) <= s.offset for s in feeds), feed_committed
            assert worker.process is not None and worker.process.poll() is None, "still running\n" + worker.tail()

            await recreate_topic(kafka_bootstrap, prefix + feed_sink)
            async with OutputReader(
                kafka_bootstrap, prefix, topics=[feed_sink], isolation_level="read_committed"
            ) as sink:
                # The feed process may be in a backoff of up to a minute.
                seen = await read_everything(reader, sink, sent=sent, by_place=by_place, worker=worker, timeout_s=180)
            restarts = worker.log_path.read_text().count(restarted)
            print(f"\n[family isolation, exactly-once] {len(sent)} inputs; feed process restarted {restarts} times")
            assert all(seen[s.marker] == 1 for s in sent if s.marker), "exactly once, every family"
        assert worker.stop(signal.SIGTERM) == 0, worker.tail()
        committed = {
            **await committed_offsets(kafka_bootstrap, f"{group}-feed"),
            **await committed_offsets(kafka_bootstrap, f"{group}-iot"),
        }
        assert committed == _end_offsets(sent), "every input committed in its family's group"

    asyncio.run(run())


def _samples(port: int, name: str) -> list[Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]
