"""The faust app behind `minnow worker`: its configuration, its topics and one batch agent per input topic."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from pipeline.metrics import PARTITIONS_ASSIGNED
from pipeline.models import FAMILIES
from pipeline.settings import Settings
from pipeline.stages.inputs import worker_inputs
from pipeline.stream import names
from pipeline.stream.clients import PRODUCER_MAX_REQUEST_BYTES, faust_app
from pipeline.stream.conversations import Conversations
from pipeline.stream.devices import Devices
from pipeline.stream.lag import LagReport
from pipeline.stream.registry import RegistryCodec
from pipeline.stream.stalls import Patience, Stalls
from pipeline.stream.state import ChangelogStore
from pipeline.stream.transactions import Transactions
from pipeline.stream.worker import (
    BatchProcessor,
    Engine,
    OutputRecord,
    batch_agent,
    batch_scope,
    exit_undelivered,
)

log = logging.getLogger(__name__)


class FaustSender:
    """Produces through the app's producer; in exactly-once mode, inside the origin partition's transaction."""

    def __init__(self, app: faust.App, transactions: Transactions) -> None:
        self._app = app
        self._transactions = transactions

    async def __call__(self, record: OutputRecord, /) -> Any:
        if self._transactions.enabled and record.origin is not None:
            return await self._transactions.send(record)
        producer = await self._app.maybe_start_producer()
        headers = list(record.headers) or None
        return await producer.send(record.topic, record.key, record.value, record.partition, None, headers)


def create_app(
    settings: Settings, engine: Engine, *, datadir: Path, size_limits: Mapping[str, int] | None = None
) -> faust.App:
    """The configured app with its agents registered; `minnow worker` runs it in a faust Worker."""
    kafka = settings.kafka
    app = faust_app(
        kafka,  # faust's app id is its consumer group id; broker and credentials come from the settings
        processing_guarantee=kafka.processing_guarantee,
        datadir=str(datadir),
        autodiscover=False,
        web_enabled=False,  # /metrics is served by the metrics server, not faust's web
        topic_allow_declare=False,  # topics are created from their specs, never implicitly by a worker
        topic_disable_leader=True,  # no leader election: every worker is alike
        consumer_auto_offset_reset="earliest",
        # faust's 60 s default keeps a restarted worker waiting a minute for the group to drop its killed
        # predecessor; 10 s (Kafka's long-time default) still tolerates a busy 2-core host, since heartbeats run
        # on the event loop while the model runs in threads.
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        producer_max_request_size=PRODUCER_MAX_REQUEST_BYTES,
        stream_wait_empty=True,  # on stop and revoke, wait for in-flight batches before the final commit
        # The periodic commit (its first comes after two intervals); at-least-once also commits after every batch.
        broker_commit_interval=settings.worker.commit_interval_s,
    )
    transactions = Transactions(app)
    send = FaustSender(app, transactions)
    inputs = {item.topic: item for item in worker_inputs(settings)}
    registry = RegistryCodec.configured(settings)  # one client and schema cache for every input topic
    # From the settings, not `transactions.enabled`: faust caches `app.in_transaction` on first use, and before
    # the worker starts it is False.
    at_least_once = kafka.processing_guarantee == "at_least_once"
    stalls = Stalls({name: item.family for name, item in inputs.items()})
    for name, item in inputs.items():
        family = item.family
        source = app.topic(
            name,
            key_serializer="raw",
            value_serializer="raw",
            allow_empty=True,  # a null value is a dead letter, not a crash
        )
        state = _state(settings, family, input_topic=name)
        processor = BatchProcessor(
            settings,
            engine,
            send,
            delivery_timeout_s=settings.worker.delivery_timeout_s,
            stateful=state.step if state is not None else None,
            reading=item,
            registry=registry,
            size_limits=size_limits,
            patience=_patience(app, settings, stalls, name) if at_least_once else None,
        )
        if state is not None:
            _keep_state(app, state, processor, transactions, input_topic=name, stalls=stalls)
        # One actor per topic: take_events acks in offset order only within one actor, and faust's commit
        # logic can skip an unacked offset when acks arrive out of order.
        several = sum(i.family == family for i in inputs.values()) > 1  # agent names must differ
        agent_name = f"minnow.{family}.{name}" if several else f"minnow.{family}"
        body = batch_agent(processor, settings, transactions, commit=committer(app) if at_least_once else None)
        app.agent(source, name=agent_name, concurrency=1)(body)

    lag = LagReport(kafka.group_id, inputs)  # this worker's partitions only: lag sums right across replicas

    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned: set[Any] = args[0]  # faust sends the whole new assignment
        PARTITIONS_ASSIGNED.set(sum(1 for tp in assigned if tp.topic in inputs))
        lag.assigned(assigned)

    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        PARTITIONS_ASSIGNED.set(0)  # eager rebalancing: everything is revoked, then the new set assigned
        lag.revoked(args[0])

    async def announce() -> None:
        _dump_tasks_on_sigusr1()
        log.info(
            "minnow worker: group %s, inputs %s, guarantee %s, batches of %d events or %d ms",
            kafka.group_id,
            ", ".join(inputs),
            kafka.processing_guarantee,
            settings.worker.batch_max_events,
            settings.worker.batch_max_wait_ms,
        )

    app.on_partitions_assigned.connect(on_assigned)
    app.on_partitions_revoked.connect(on_revoked)
    app.task(announce)
    if settings.worker.metrics_port:
        port = settings.worker.metrics_port

        async def serve_endpoints() -> None:
            from pipeline.stream.health import start_health_server, track_lag

            # A taken port crashes the app: a worker asked to expose metrics must not run blind.
            server = await start_health_server(port, host=settings.worker.metrics_host)
            try:
                await track_lag(kafka, lag)
            finally:  # faust cancels app tasks once the final commit is done, so probes answer while draining
                await server.close()

        app.task(serve_endpoints)
    return app


def _patience(app: faust.App, settings: Settings, stalls: Stalls, topic: str) -> Patience:
    """How the input `topic` retries a batch that failed to deliver while the worker's other inputs go on."""

    def can_wait() -> bool:
        # faust stops the flow and waits for every consumed event to be acked before a rebalance or a stop; a batch
        # that stays undelivered is never acked, so waiting on would hold every other input too.
        consumer: Any = app.consumer
        return bool(consumer.flow_active) and not app.rebalancing

    worker = settings.worker
    return Patience(
        stalls, topic, retries=worker.delivery_retries, stalled_retry_s=worker.stalled_retry_s, can_wait=can_wait
    )


@dataclass(frozen=True)
class _State:
    owner: str  # conversation | device
    step: Conversations | Devices
    store: ChangelogStore
    sweep_interval_s: float


def _state(settings: Settings, family: str, *, input_topic: str) -> _State | None:
    """The state a family's agent keeps across batches (conversations, devices), if any."""
    owner = {"transcript": "conversation", "iot": "device"}.get(family)
    if owner is None:
        return None
    kafka = settings.kafka
    changelog = settings.topic(names.STATE_TOPICS[owner])
    store = ChangelogStore(kafka, changelog, read_committed=kafka.processing_guarantee == "exactly_once")
    if owner == "conversation":
        interval = max(0.5, min(5.0, settings.worker.conversation_idle_s / 4))
        return _State(owner, Conversations(settings, store, input_topic=input_topic), store, interval)
    interval = max(0.5, min(5.0, settings.worker.iot_window_grace_s / 4))
    return _State(owner, Devices(settings, store, input_topic=input_topic), store, interval)


def _keep_state(
    app: faust.App,
    state: _State,
    processor: BatchProcessor,
    transactions: Transactions,
    *,
    input_topic: str,
    stalls: Stalls,
) -> None:
    """Rebuild a stateful agent's state from its changelog on assignment, and sweep what closes without input."""
    step, store, owner, interval = state.step, state.store, state.owner, state.sweep_interval_s
    delivery_timeout_s = processor.delivery_timeout_s

    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        store.assign({tp.partition for tp in args[0] if tp.topic == input_topic})

    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        store.revoke({tp.partition for tp in args[0] if tp.topic == input_topic})

    # Signals, not assignor state: faust calls these after the batches in flight were delivered and committed.
    app.on_partitions_revoked.connect(on_revoked)
    app.on_partitions_assigned.connect(on_assigned)

    def caught_up(tps: set[Any]) -> set[int]:
        """Partitions with nothing left to read: processed (or committed, after a restart) up to the highwater."""
        consumer: Any = app.consumer
        committed = getattr(consumer, "_committed_offset", {})  # faust's view; no public accessor
        done = set()
        for tp in tps:
            # The highwater from the last fetch response, read in place. Not `await consumer.highwaters(...)`:
            # that round trip through faust's consumer thread hung the whole worker now and then (seen in a
            # task dump: every agent waiting, one sweep parked in call_thread).
            highwater = consumer.highwater(tp)
            position = max(processor.progress.next_offset(tp.partition), committed.get(tp) or 0)
            if highwater is not None and position >= highwater and store.is_ready(tp.partition):
                done.add(tp.partition)
        return done

    async def sweep() -> None:
        if app.rebalancing:
            return  # assignments are changing; caught_up also skips partitions whose state is being rebuilt
        if stalls.is_stalled(input_topic):
            return  # its outputs go where the stalled batch could not: closing state now would only fail too
        partitions = caught_up({tp for tp in app.assignor.assigned_actives() if tp.topic == input_topic})
        origins = [(input_topic, partition) for partition in sorted(partitions)]
        with batch_scope():  # what a sweep closes is a batch of its own in the log
            try:
                async with transactions.hold(origins, within_s=delivery_timeout_s):
                    outputs = await processor.finish(await step.sweep(partitions))
                    await processor.deliver(outputs)
                if outputs:
                    await transactions.commit_without_input(origins)
            except Exception as exc:
                exit_undelivered(exc)

    app.timer(interval, name=f"minnow.{owner}s.sweep")(sweep)


def _dump_tasks_on_sigusr1() -> None:
    """`kill -USR1 <pid>` logs where every asyncio task of the worker is waiting: for a worker that looks stuck."""
    import asyncio
    import signal

    def chain(task: asyncio.Task[Any]) -> str:
        # print_stack shows only a task's outermost frame; follow what each coroutine awaits to the innermost.
        lines = []
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            frame = frame or getattr(awaited, "gi_frame", None)
            if frame is not None:
                lines.append(f"    {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
            awaited = (
                getattr(awaited, "cr_await", None)
                or getattr(awaited, "ag_await", None)
                or getattr(awaited, "gi_yieldfrom", None)
            )
        return f"  {task.get_name()}\n" + "\n".join(lines)

    def dump() -> None:
        log.warning("asyncio tasks on SIGUSR1:\n%s", "\n".join(chain(t) for t in asyncio.all_tasks()))

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)


def committer(app: faust.App) -> Callable[[set[tuple[str, int]]], Awaitable[object]]:
    """Commit the acked offsets of some input partitions now (faust's commit: one at a time, followers wait)."""

    async def commit(origins: set[tuple[str, int]]) -> object:
        return await app.consumer.commit({TP(topic, partition) for topic, partition in origins})

    return commit


def output_topics(settings: Settings) -> list[str]:
    """Where a worker's batches write records that are checked against their size limit: every sink (a family's
    events may be routed to another family's sink, a conversation's segments to the transcripts'), the escalation
    and the dead-letter topics."""
    sinks = sorted({settings.topic(family.sink_topic) for family in FAMILIES.values()})
    return [*sinks, settings.topic(names.ESCALATION_TOPIC), settings.topic(names.DEADLETTER_TOPIC)]


def run(settings: Settings, *, verbose: bool = False) -> int:
    """Check the cluster answers, load the model, then run the worker until SIGTERM/SIGINT; returns the exit code."""
    import asyncio

    from pipeline.stages.infer import MiniModel
    from pipeline.stages.runtime import AsyncMiniModel
    from pipeline.stream.message_sizes import topic_limits
    from pipeline.stream.preflight import preflight

    async def before_start() -> dict[str, int]:
        # Before faust: wrong credentials or an untrusted certificate are one line and an exit, not endless retries.
        await preflight(settings.kafka)
        return await topic_limits(settings.kafka, output_topics(settings))

    size_limits = asyncio.run(before_start())

    if settings.log_level is None and not verbose:  # a service logs what it does by default (-v: DEBUG)
        logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    # The model loads before the consumer joins the group, so partitions are never assigned to a worker
    # that cannot process them yet.
    engine = AsyncMiniModel(MiniModel.load(settings))
    try:
        with tempfile.TemporaryDirectory(prefix="minnow-faust-") as datadir:
            app = create_app(settings, engine, datadir=Path(datadir), size_limits=size_limits)
            # Logging stays as `minnow` set it up (pipeline/logs.py): faust's own setup would add a second format.
            worker = faust.Worker(app, quiet=True, override_logging=False)
            worker.spinner = None  # a terminal spinner on stdout; without it faust logs "Ready" instead
            try:
                worker.execute_from_commandline()
            except SystemExit as exc:  # mode's Worker always ends by raising SystemExit with the exit status
                return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
            return 0
    finally:
        engine.close()
