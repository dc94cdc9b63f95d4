"""`minnow bench e2e`: events/s and produce-to-sink latency through a real broker and worker, vs the engine alone
and vs a naive one-event-at-a-time worker."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.bench.model import make_texts
from pipeline.bench.naive import (
    NAIVE_WORKER_MAX_EVENTS,
    NAIVE_WORKER_WARMUP,
    OUTPUT_TOPICS,
    naive_worker,
    send_feed_events,
)
from pipeline.errors import DeliveryError
from pipeline.models import FeedEvent
from pipeline.ops import devkafka
from pipeline.ops.demo import start_worker
from pipeline.ops.topics import apply
from pipeline.settings import KafkaSettings, Settings
from pipeline.stages.infer import MiniModel
from pipeline.stream import clients, names
from pipeline.stream.clients import partitions
from pipeline.topic_specs import load_specs

TEXT_TOKENS = 30  # word pieces per text: the "short" set of `bench model`
HALF_LOAD = 0.5  # the paced phase sends at this fraction of the burst's measured rate
PACED_MAX_EVENTS = 1000
WORKER_START_WAIT_S = 300.0  # the warm-up also covers the worker loading its model and joining the group
STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Arrival:
    """Where and when the first output for one event was read."""

    topic: str
    consumed_at: float  # time.time() when this process's consumer got the record
    sent_at: float  # the output record's timestamp (CreateTime: set by the worker's producer at send)


@dataclass
class OutputWatch:
    """Reads the feed outputs from the start and remembers the first output of every event id (keys are ids)."""

    arrivals: dict[str, Arrival] = field(default_factory=dict)
    duplicates: int = 0
    _waiting: set[str] = field(default_factory=set)
    _done: asyncio.Event = field(default_factory=asyncio.Event)

    def expect(self, ids: Sequence[str]) -> asyncio.Event:
        self._waiting = {i for i in ids if i not in self.arrivals}
        self._done = asyncio.Event()
        if not self._waiting:
            self._done.set()
        return self._done

    async def run(self, consumer: AIOKafkaConsumer, prefix: str) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for tp, records in batches.items():
                for rec in records:
                    self._file(tp.topic[len(prefix) :], rec.key, rec.timestamp, now)

    def _file(self, topic: str, key: bytes | None, timestamp_ms: int, now: float) -> None:
        event_id = (key or b"").decode(errors="replace")
        if event_id in self.arrivals:  # at-least-once: a repeat is counted, never timed twice
            self.duplicates += 1
            return
        self.arrivals[event_id] = Arrival(topic, now, timestamp_ms / 1000)
        self._waiting.discard(event_id)
        if not self._waiting:
            self._done.set()


def _percentiles_ms(values: Sequence[float]) -> dict[str, float]:
    if len(values) < 2:
        only = round(values[0] * 1000, 1) if values else 0.0
        return {"p50": only, "p95": only, "p99": only}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {name: round(cuts[i] * 1000, 1) for name, i in (("p50", 49), ("p95", 94), ("p99", 98))}


def _phase(name: str, ids: Sequence[str], sent: dict[str, float], watch: OutputWatch) -> dict[str, Any]:
    arrivals = [watch.arrivals[i] for i in ids]
    span = max(a.consumed_at for a in arrivals) - min(sent[i] for i in ids)
    return {
        "phase": name,
        "events": len(ids),
        "events_per_s": round(len(ids) / span, 1),
        "latency_ms": _percentiles_ms([a.consumed_at - sent[i] for i, a in zip(ids, arrivals, strict=True)]),
        "latency_to_worker_send_ms": _percentiles_ms([a.sent_at - sent[i] for i, a in zip(ids, arrivals, strict=True)]),
        "outputs": dict(Counter(a.topic for a in arrivals)),
    }


async def _wait(done: asyncio.Event, timeout_s: float, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done.is_set():
        if proc.poll() is not None:
            raise DeliveryError(f"the worker exited with code {proc.returncode} during the {what}; see its log")
        if time.monotonic() > deadline:
            raise DeliveryError(f"the {what} was not fully processed within {timeout_s:.0f} s")
        try:
            await asyncio.wait_for(done.wait(), 0.5)
        except TimeoutError:
            continue


def _peak_rss_mb(pid: int) -> float | None:
    """VmHWM of a live process, in MB; None where /proc does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _delete_topics(kafka: KafkaSettings, prefix: str) -> None:
    admin = clients.admin(kafka)
    try:
        await admin.start()
        mine = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


def _rate(model: MiniModel, events: Sequence[FeedEvent], batch: int) -> float:
    """Events/s of `MiniModel.process` over `events` in consecutive batches of `batch`."""
    start = time.perf_counter()
    for i in range(0, len(events), batch):
        model.process(events[i : i + batch])
    return len(events) / (time.perf_counter() - start)


@dataclass(frozen=True)
class Plan:
    """What to send: the measured texts in `rounds` bursts, after `warmup` events that are not measured."""

    texts: Sequence[str]
    rounds: int
    warmup: int

    def burst_texts(self, round_no: int) -> Sequence[str]:
        size = -(-len(self.texts) // self.rounds)
        return self.texts[round_no * size : (round_no + 1) * size]


# name, event ids, their texts, events/s (0: all at once), timeout -> the phase's figures
Phase = Callable[[str, list[str], Sequence[str], float, float], Awaitable[dict[str, Any]]]
# event ids, their texts -> the naive worker's events/s on them
NaivePhase = Callable[[list[str], Sequence[str]], Awaitable[float]]


def _median_ratio(rows: Sequence[dict[str, Any]], key: str) -> float:
    ratios: list[float] = [r["burst"]["events_per_s"] / r[key] for r in rows]
    return round(statistics.median(ratios), 3)


async def _rounds(model: MiniModel, plan: Plan, phase: Phase, naive_worker: NaivePhase) -> dict[str, Any]:
    """Each round: a burst through the broker, then the engine alone, the naive loop and the naive worker on the
    same texts (the naive worker on the first NAIVE_WORKER_MAX_EVENTS of them).

    The machine's speed drifts by tens of percent over minutes; measuring the four back to back, round by
    round, lets each ratio see the same conditions. The worker sits idle while the others run.
    """
    batch = model.settings.worker.batch_max_events
    rows: list[dict[str, Any]] = []
    for r in range(plan.rounds):
        texts = plan.burst_texts(r)
        ids = [f"r{r}e{n}" for n in range(len(texts))]
        sample = min(len(texts), NAIVE_WORKER_MAX_EVENTS)
        print(
            f"round {r + 1}/{plan.rounds}: burst of {len(ids)} events, engine only, naive loop, "
            f"naive worker on {sample} …",
            file=sys.stderr,
        )
        burst = await phase("burst", ids, texts, 0, max(300.0, len(ids) / 5))
        now = datetime.now(UTC)
        feed = [FeedEvent(id=i, source="bench", text=t, created_at=now) for i, t in zip(ids, texts, strict=True)]
        engine = await asyncio.to_thread(_rate, model, feed, batch)
        naive = await asyncio.to_thread(_rate, model, feed, 1)
        worker = await naive_worker([f"n{r}e{n}" for n in range(sample)], texts[:sample])
        rows.append(
            {
                "burst": burst,
                "engine_only_per_s": round(engine, 1),
                "naive_per_s": round(naive, 1),
                "naive_worker_per_s": round(worker, 1),
                "naive_worker_events": sample,
            }
        )
    return {
        "rounds": rows,
        "e2e_per_s": statistics.median(row["burst"]["events_per_s"] for row in rows),
        "engine_only_per_s": statistics.median(row["engine_only_per_s"] for row in rows),
        "naive_per_s": statistics.median(row["naive_per_s"] for row in rows),
        "naive_worker_per_s": statistics.median(row["naive_worker_per_s"] for row in rows),
        "e2e_over_engine": _median_ratio(rows, "engine_only_per_s"),
        "e2e_over_naive": _median_ratio(rows, "naive_per_s"),
        "e2e_over_naive_worker": _median_ratio(rows, "naive_worker_per_s"),
    }


async def _paced(plan: Plan, phase: Phase, rate: float) -> dict[str, Any]:
    """Events sent at `rate`, for the latency of a worker that keeps up."""
    count = max(2, min(len(plan.texts), PACED_MAX_EVENTS, int(rate * 15)))
    print(f"paced: {count} events at {rate:.0f}/s …", file=sys.stderr)
    texts = [plan.texts[n % len(plan.texts)] for n in range(count)]
    paced = await phase("paced", [f"p{n}" for n in range(count)], texts, rate, max(120.0, 3 * count / rate))
    return paced | {"rate_per_s": round(rate, 1)}


async def _through_broker(
    settings: Settings, kafka: KafkaSettings, model: MiniModel, plan: Plan, workdir: Path
) -> dict[str, Any]:
    """Warm-ups, the measured rounds and a paced phase through one worker subprocess (stopped before returning)
    and the naive worker in this process."""
    prefix = f"bench-e2e-{uuid.uuid4().hex[:10]}."  # fresh: the cleanup deletes every topic under it
    await apply(kafka, name_of=lambda n: prefix + n, specs=load_specs())
    report: dict[str, Any] = {"topic_prefix": prefix}
    consumer = clients.consumer(kafka, enable_auto_commit=False)
    producer = clients.producer(kafka)
    proc: subprocess.Popen[bytes] | None = None
    reader: asyncio.Task[None] | None = None
    naive_stack = contextlib.AsyncExitStack()
    try:
        naive = await naive_stack.enter_async_context(naive_worker(kafka, prefix, model))
        await consumer.start()
        await producer.start()
        parts = [TopicPartition(prefix + t, p) for t in OUTPUT_TOPICS for p in await partitions(kafka, prefix + t)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        watch = OutputWatch()
        reader = asyncio.create_task(watch.run(consumer, prefix))
        proc = worker = start_worker(settings, kafka, prefix, workdir / "worker.log")
        topic = prefix + names.INPUT_TOPICS["feed"]
        sent: dict[str, float] = {}

        async def phase(
            name: str, ids: list[str], texts: Sequence[str], rate: float, timeout_s: float
        ) -> dict[str, Any]:
            done = watch.expect(ids)
            await send_feed_events(producer, topic, list(zip(ids, texts, strict=True)), sent, rate)
            await _wait(done, timeout_s, worker, name)
            return _phase(name, ids, sent, watch)

        print(f"worker starting; warm-up of {plan.warmup} events …", file=sys.stderr)
        warm = [plan.texts[n % len(plan.texts)] for n in range(plan.warmup)]
        await phase("warm-up", [f"w{n}" for n in range(plan.warmup)], warm, 0, WORKER_START_WAIT_S)
        print("naive worker: warm-up …", file=sys.stderr)
        await naive.warm_up(producer, warm[:NAIVE_WORKER_WARMUP] or plan.texts[:1])
        report |= await _rounds(model, plan, phase, functools.partial(naive.run, producer))
        report["naive_worker"] = naive.figures()
        paced = await _paced(plan, phase, HALF_LOAD * report["e2e_per_s"])
        # Latencies pooled over every round's burst; the rate is the rounds' median, since the span across rounds
        # would include the in-process measurements.
        bursts = _phase("burst", [i for i in sent if i.startswith("r")], sent, watch) | {
            "events_per_s": report["e2e_per_s"]
        }
        report |= {"burst": bursts, "paced": paced, "duplicates": watch.duplicates}
        report["worker_peak_rss_mb"] = _peak_rss_mb(worker.pid)
    finally:
        if proc is not None:
            _stop(proc)
            report["worker_exit_code"] = proc.returncode
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await naive_stack.aclose()
        await producer.stop()
        await consumer.stop()
        await _delete_topics(kafka, prefix)
    return report


def measure(settings: Settings, kafka: KafkaSettings, *, events: int, warmup: int, rounds: int) -> dict[str, Any]:
    model = MiniModel.load(settings)
    plan = Plan(make_texts(model.encoder, events, TEXT_TOKENS, seed=TEXT_TOKENS), max(1, min(rounds, events)), warmup)
    batch = settings.worker.batch_max_events
    now = datetime.now(UTC)
    # First-call allocations and thread start-up are not throughput.
    model.process(
        [FeedEvent(id=f"w{n}", source="bench", text=t, created_at=now) for n, t in enumerate(plan.texts[:batch])]
    )
    report: dict[str, Any] = {
        "model": model.model_info.model_dump(),
        "events": events,
        "warmup_events": warmup,
        "text_tokens": round(statistics.mean(model.encoder.token_count(t) for t in plan.texts), 1),
        "worker_batch": {"max_events": batch, "max_wait_ms": settings.worker.batch_max_wait_ms},
        "machine": {"cpus": len(os.sched_getaffinity(0)), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with tempfile.TemporaryDirectory(prefix="minnow-bench-e2e-") as workdir:
        try:
            report |= asyncio.run(_through_broker(settings, kafka, model, plan, Path(workdir)))
        except Exception:
            log = Path(workdir) / "worker.log"
            if log.exists():  # the worker's own words are the quickest way to the cause
                print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
    return report


def _verdict(value: float, target: float) -> str:
    return f"{value:.2f} (target ≥ {target:g}: {'met' if value >= target else 'NOT met'})"


def render(report: dict[str, Any]) -> str:
    m, b, p = report["model"], report["burst"], report["paced"]
    wb, rounds, nw = report["worker_batch"], report["rounds"], report["naive_worker"]
    per_round = rounds[0]["burst"]["events"]
    lines = [
        f"model {m['name']} {m['version']} ({m['quantization']}), {report['events']} feed events of ~"
        f"{report['text_tokens']} word pieces in {len(rounds)} rounds of ~{per_round} after a warm-up of "
        f"{report['warmup_events']}; one worker (batches of {wb['max_events']} events / {wb['max_wait_ms']} ms); "
        f"{report['machine']['cpus']} CPUs, load average {report['machine']['load_avg_1m_at_start']} at start",
        "| path | events/s (median) | per round | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---|---:|---:|---:|",
    ]

    def each(get: Callable[[dict[str, Any]], float]) -> str:
        return ", ".join(f"{get(r):.1f}" for r in rounds)

    blat, plat = b["latency_ms"], p["latency_ms"]
    lines += [
        f"| broker + worker, bursts | {report['e2e_per_s']} | {each(lambda r: r['burst']['events_per_s'])} | "
        f"{blat['p50']} | {blat['p95']} | {blat['p99']} |",
        f"| broker + worker, {p['events']} events paced at {p['rate_per_s']}/s | {p['events_per_s']} | | "
        f"{plat['p50']} | {plat['p95']} | {plat['p99']} |",
        f"| engine only (MiniModel.process, batches of {wb['max_events']}) | {report['engine_only_per_s']} | "
        f"{each(lambda r: r['engine_only_per_s'])} | | | |",
        f"| naive engine loop (MiniModel.process, one event per call, no broker) | {report['naive_per_s']} | "
        f"{each(lambda r: r['naive_per_s'])} | | | |",
        f"| naive worker through the broker ({rounds[0]['naive_worker_events']} events a round, each: consume, "
        f"model, produce + ack, commit) | {report['naive_worker_per_s']} | "
        f"{each(lambda r: r['naive_worker_per_s'])} | | | |",
        "ratios are medians of per-round ratios:",
        f"e2e / engine only: {_verdict(report['e2e_over_engine'], 0.9)}",
        f"e2e / naive (engine loop): {_verdict(report['e2e_over_naive'], 3)}",
        f"e2e / naive worker: {_verdict(report['e2e_over_naive_worker'], 3)}",
        "naive worker, ms per event: " + ", ".join(f"{k} {v}" for k, v in nw["ms_per_event"].items()),
        "latency: when this process read the output minus the event's created_at (its produce time); "
        "events/s: a burst's events / (its first produce to its last output read); naive worker: its events / "
        "(their first produce to its last commit)",
        f"outputs of the bursts: {b['outputs']}; duplicates: {report['duplicates']}",
        f"worker peak RSS (VmHWM): {report['worker_peak_rss_mb']} MB; worker exit code {report['worker_exit_code']}",
    ]
    return "\n".join(lines)


def _with_broker(settings: Settings, body: Callable[[KafkaSettings], dict[str, Any]]) -> dict[str, Any]:
    """Run `body(kafka)` on the configured broker, else a local one, stopped again only if started here."""
    if "MINNOW_KAFKA__BOOTSTRAP_SERVERS" in os.environ:
        return body(settings.kafka)

    def local(info: devkafka.BrokerInfo) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=info.bootstrap_servers)

    cache = devkafka.default_cache_dir()
    running = devkafka.status(cache)
    if running is not None:
        return body(local(running))
    print("starting a local Kafka (minnow dev kafka) …", file=sys.stderr)
    running = devkafka.start(cache)
    try:
        return body(local(running))
    finally:
        devkafka.stop(cache)


def run(settings: Settings, *, as_json: bool, events: int, warmup: int, rounds: int) -> int:
    # Fresh topics answer "not leader" for a moment and aiokafka retries on its own; its warnings are noise here.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    report = _with_broker(settings, lambda kafka: measure(settings, kafka, events=events, warmup=warmup, rounds=rounds))
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(render(report))
    return 0
