"""The broker is SIGKILLed mid-stream and restarted on the same data folder and ports while a worker runs: no
input is lost, and what a read_committed consumer sees stays exactly once in exactly-once mode."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord

from pipeline.ops import devkafka
from pipeline.stream.worker import EXIT_UNDELIVERED
from tests.faults.accounting import tally
from tests.integration.test_worker_e2e import (  # noqa: F401  # worker_env, workers: fixtures used by name
    ONE_PROCESS,
    OutputReader,
    Planned,
    Sent,
    WorkerProcess,
    _create_and_produce,
    at_least,
    feed,
    interleave,
    iot,
    produce,
    segment,
    worker_env,
    workers,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(420)]

EXIT_WAIT_S = 30.0  # three 3 s tries 1 s and 2 s apart, and time to notice them on a busy machine
STALLED = "stalled: the batch read from"  # the CRITICAL line of an input that stalls (pipeline/stream/stalls.py)
DOWN_S = 4.0  # the broker stays dead this long before its restart begins (the restart itself takes ~12 s more)


@dataclass
class OwnBroker:
    """A local broker of this test's own (own run folder and ports), so killing it touches no other test."""

    cache_dir: Path
    instance: str
    info: devkafka.BrokerInfo

    def kill(self) -> None:
        """SIGKILL, then wait until the process is gone (and reaped)."""
        os.kill(self.info.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while devkafka.status(self.cache_dir, instance=self.instance) is not None:
            assert time.monotonic() < deadline, "the broker survived SIGKILL"
            time.sleep(0.1)

    def restart(self) -> float:
        """Start it again on the same data folder and ports; the seconds until it answered."""
        started = time.monotonic()
        self.info = devkafka.restart(self.cache_dir, self.info, instance=self.instance)
        return time.monotonic() - started


@pytest.fixture
def own_broker() -> Iterator[OwnBroker]:
    cache_dir = devkafka.default_cache_dir()
    instance = f"faults-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    broker = OwnBroker(cache_dir, instance, devkafka.start(cache_dir, instance=instance))
    try:
        yield broker
    finally:
        devkafka.stop(cache_dir, instance=instance, forget=True)


@pytest.fixture
def kafka_bootstrap(own_broker: OwnBroker) -> str:
    """This module's workers and readers use the broker it kills, not the session's."""
    return own_broker.info.bootstrap_servers


def wave(name: str, feeds: range, seqs: range) -> list[Planned]:
    """Feeds, transcript segments of six conversations and readings of six devices, interleaved; ids unique per
    wave, per-key sequence numbers and times growing from one wave to the next."""
    return interleave(
        [feed(n, wave=name) for n in feeds],
        [segment(f"bk-conv-{c}", seq) for seq in seqs for c in range(6)],
        [iot(f"bk-dev-{d}", n) for n in seqs for d in range(6)],
    )


# How the outage ends for the worker. Ridden out: the default delivery timeout (120 s) is far above the outage, so
# the worker's clients reconnect and it stays up. Delivery timeout (3 s): a batch whose outputs are not acknowledged
# by then fails. At-least-once its input retries (1 s, 2 s) and then stalls alone, sending the batch again every
# MINNOW_WORKER__STALLED_RETRY_S while the other inputs go on; the worker exits 75 only when every input is stalled.
# Exactly-once a failed batch ends the process at once (75). After an exit the test restarts the worker while the
# broker is still down: it waits for it (MINNOW_KAFKA__STARTUP_WAIT_S), then finishes. Caught committing offsets
# instead (faust's commit, and in exactly-once the batches queued behind its transaction locks), no timeout applies:
# the worker waits for the broker, then goes on (docs/faults.md, "Known gaps").
OUTAGES = {
    "ridden_out": {},
    "delivery_timeout": {
        "MINNOW_WORKER__DELIVERY_TIMEOUT_S": "3",
        "MINNOW_WORKER__STALLED_RETRY_S": "5",
        "MINNOW_KAFKA__STARTUP_WAIT_S": "120",
    },
}


@pytest.mark.parametrize("outage", sorted(OUTAGES))
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_broker_killed_and_restarted_mid_stream_loses_nothing(  # noqa: PLR0915 - one story, told in order
    guarantee: str,
    outage: str,
    own_broker: OwnBroker,
    worker_env: dict[str, str],  # noqa: F811  # the fixture imported above
    workers: Callable[..., WorkerProcess],  # noqa: F811
) -> None:
    """SIGKILL the only broker while the worker is in the middle of a backlog, restart it on the same data folder
    and ports, produce more: every input id ends in exactly one of sink / escalation / dead letter, none lost.

    730 mixed events (feeds, transcript segments, IoT readings, some of them escalated) in three waves: a backlog
    the worker works through first, a burst it is in the middle of when the broker dies, and more after the
    restart. `ridden_out`: the worker stays up through the outage (its clients reconnect; the delivery timeout,
    120 s, is far above it). `delivery_timeout` (3 s): caught delivering, an at-least-once input stalls alone and
    recovers by itself once the broker is back (logged), or, when every input stalled, and always in exactly-once,
    the worker exits 75 naming the batch; restarted while the broker is still down, it waits for it, logging each
    attempt with the address, and finishes. Caught committing, an at-least-once worker exits 75 after the delivery
    timeout (restarted here, as by a supervisor); an exactly-once one waits for the broker in its commit. What
    happened is printed. Either way a SIGTERM then stops it with 0. Inputs produced after the restart come out exactly
    once; at-least-once duplicates are counted and printed; exactly-once: a read_committed consumer sees none, also
    when the worker was restarted while the broker was completing its transactions.
    """
    prefix, kafka_bootstrap = worker_env["MINNOW_KAFKA__TOPIC_PREFIX"], own_broker.info.bootstrap_servers
    backlog, burst, after = (
        wave("p", range(50), range(5)),
        wave("q", range(300), range(5, 20)),
        wave("r", range(50), range(20, 25)),
    )
    env = {"MINNOW_KAFKA__PROCESSING_GUARANTEE": guarantee, **ONE_PROCESS, **OUTAGES[outage]}
    isolation = "read_committed" if guarantee == "exactly_once" else "read_uncommitted"
    figures: dict[str, float] = {}
    outcomes: list[str] = []  # what the worker did: stayed up, stalled, or exit 75 and restarted
    logs: list[str] = []

    async def run() -> tuple[list[Sent], list[ConsumerRecord[bytes, bytes]]]:
        sent = await _create_and_produce(kafka_bootstrap, prefix, backlog)
        worker = workers(**env)
        async with OutputReader(kafka_bootstrap, prefix, isolation_level=isolation) as reader:
            assert await reader.read_until(at_least(len(backlog)), timeout_s=120), worker.tail()
            sent += await produce(kafka_bootstrap, prefix, burst)
            # Mid-stream: part of the burst delivered, the rest read or in flight when the broker dies.
            assert await reader.read_until(at_least(len(backlog) + 40), timeout_s=60), worker.tail()
        figures["outputs_at_kill"] = len(reader.records)
        assert figures["outputs_at_kill"] < len(backlog) + len(burst), "killed before the burst was through"
        started = time.monotonic()
        own_broker.kill()
        if outage == "delivery_timeout":
            code = await asyncio.to_thread(_wait_exit, worker, EXIT_WAIT_S)
            if code is None:  # an input stalled (at-least-once), or the worker waits in a commit: both go on, below
                log = worker.log_path.read_text(errors="replace")
                outcomes.append("input stalled, resent its batch" if STALLED in log else "waited in a commit")
            else:
                assert code == EXIT_UNDELIVERED, f"worker exit {code} with the broker gone\n{worker.tail()}"
                outcomes.append(f"exit {code} {time.monotonic() - started:.1f}s after the kill, restarted")
                logs.append(worker.log_path.read_text(errors="replace"))
                worker = workers(**env)  # while the broker is still down: it must wait for it
        if not outcomes:
            outcomes.append("stayed up")
        await asyncio.sleep(DOWN_S)
        figures["restart_s"] = own_broker.restart()
        figures["down_s"] = time.monotonic() - started
        sent += await produce(kafka_bootstrap, prefix, after)
        async with OutputReader(kafka_bootstrap, prefix, isolation_level=isolation) as reader:
            deadline = time.monotonic() + 240
            while not _accounted(sent, reader.records, prefix):
                assert time.monotonic() < deadline, _where(sent, reader.records, prefix) + _task_dump(worker)
                assert worker.process is not None
                if outage == "delivery_timeout" and worker.process.poll() == EXIT_UNDELIVERED:
                    # A commit cut off longer than the 3 s delivery timeout (the coordinator still loading after
                    # the restart) also ends the worker with 75: its supervisor restarts it, as here.
                    outcomes.append("exit 75 while catching up, restarted")
                    logs.append(worker.log_path.read_text(errors="replace"))
                    worker = workers(**env)
                assert worker.process is not None and worker.process.poll() is None, f"exited\n{worker.tail()}"
                await reader.read_until(at_least(len(reader.records) + 1), timeout_s=1)
            figures["caught_up_s"] = time.monotonic() - started
            await asyncio.sleep(3)  # a late repeat would show by now
            code = worker.stop(signal.SIGTERM)
            assert code == 0, f"worker exited {code} on SIGTERM\n{worker.tail()}"
            logs.append(worker.log_path.read_text(errors="replace"))
            await reader.read_to_end()
        return sent, reader.records

    sent, records = asyncio.run(run())
    counted = tally(sent, records, prefix)
    # How the restarted worker found its offsets: waited for a transaction the broker completed, or gave up on one
    # it never completes (stable_offsets; docs/faults.md, "Known gaps").
    waited = sum("held by a transaction the broker has not completed" in log for log in logs[1:])
    gave_up = sum("still held by a transaction after" in log for log in logs[1:])
    print(
        f"\n[broker kill, {guarantee}, {outage}] {counted.line()}; SIGKILL after {figures['outputs_at_kill']:.0f} "
        f"outputs, broker back after {figures['down_s']:.1f}s (restart {figures['restart_s']:.1f}s); worker "
        f"{outcomes[0]}; every input out {figures['caught_up_s']:.1f}s after the kill; restarts that waited for "
        f"pending offsets {waited}, that gave up on them {gave_up}"
    )
    assert not counted.lost, f"inputs lost: {counted.lost[:10]}"
    assert not counted.strays, f"outputs for inputs never produced: {counted.strays[:10]}"
    assert not counted.split, f"inputs whose outputs went to different destinations: {counted.split[:10]}"
    if outcomes[0].startswith("exit"):
        assert "batch not delivered, read from" in logs[0], "the exit names the batch's input partitions and offsets"
        waits = [line for line in logs[1].splitlines() if "attempt" in line and kafka_bootstrap in line]
        assert waits, f"the restarted worker waited for the broker, one line per attempt\n{logs[1][-3000:]}"
    elif outcomes[0].startswith("input stalled"):
        assert guarantee == "at_least_once", "exactly-once has no stalls: a failed batch ends the process"
        assert "delivers again; it goes on from where it stalled" in logs[-1], "the stalled input recovered by itself"
    elif outage == "ridden_out":
        assert outcomes == ["stayed up"]
    late = {s.marker for s in sent[len(backlog) + len(burst) :]}
    assert not counted.repeated & late, "produced after the restart: exactly once"
    if guarantee == "exactly_once":
        # Also when the worker was restarted while the broker completed its last transactions: its consumer waits
        # for those transactions' offsets to be stable (stable_offsets, KIP-447) instead of reading older ones.
        assert counted.duplicates == 0, f"exactly once, as read_committed consumers see it: {counted.line()}"
    else:
        # Repeated: only what was read before the kill (resent batches can repeat an output more than once).
        assert counted.repeated <= {s.marker for s in sent[: len(backlog) + len(burst)]}, counted.line()


def _task_dump(worker: WorkerProcess) -> str:
    """Where a worker that looks stuck waits: its asyncio tasks, as its SIGUSR1 handler logs them."""
    if worker.process is None or worker.process.poll() is not None:
        return worker.tail()
    worker.process.send_signal(signal.SIGUSR1)
    time.sleep(2)
    text = worker.log_path.read_text(errors="replace")
    return text[text.rfind("asyncio tasks on SIGUSR1") :][:20_000] or worker.tail()


def _wait_exit(worker: WorkerProcess, timeout_s: float) -> int | None:
    assert worker.process is not None
    try:
        return worker.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None


def _accounted(sent: list[Sent], records: list[ConsumerRecord[bytes, bytes]], prefix: str) -> bool:
    return not tally(sent, records, prefix).lost


def _where(sent: list[Sent], records: list[ConsumerRecord[bytes, bytes]], prefix: str) -> str:
    counted = tally(sent, records, prefix)
    return f"still missing after the restart: {counted.line()}, e.g. {counted.lost[:8]}\n"
