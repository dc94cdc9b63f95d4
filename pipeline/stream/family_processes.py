"""Exactly-once with several families: one worker process per family, so one family's failure cannot stop the others.

faust runs one transactional producer per *partition number* of each group of input topics with the same partition
count: partition 0 of the feed input and partition 0 of the IoT input share one transaction. A send that fails
inside it spoils the other family's outputs too, and only a restart can abort and rewind it (docs/
architecture-stream.md, "One input cannot stop the others"). So under exactly-once a worker given several families
runs each as its own `minnow worker --families <family>` child in its own consumer group, `<group>-<family>` (what
the Helm chart names a family's group), and restarts a child that exits 75 with backoff while the others go on.
At-least-once does not need this: there a failed input stalls alone in one process (pipeline/stream/stalls.py).

The parent loads no model. It serves the configured /metrics, /healthz and /readyz: the children's metrics merged
(each sample labelled `worker_family`), alive while it runs, ready when every child is. The first time a family's
group has no committed offsets, they are copied from the shared group (a worker that ran every family in one group
before), only while that group has no live member - two workers must never read one input in two groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client.core import CollectorRegistry, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from pipeline import metrics
from pipeline.errors import ConfigError, StreamToolError
from pipeline.settings import KafkaSettings, Settings
from pipeline.stages.inputs import worker_inputs
from pipeline.stream import clients

log = logging.getLogger(__name__)

EXIT_TEMPFAIL = 75  # a child that may succeed when started again (broker gone, a delivery that failed)
_FIRST_BACKOFF_S = 1.0
_MAX_BACKOFF_S = 60.0
_STEADY_S = 60.0  # a child that ran this long before it exited starts again after the first backoff
_POLL_S = 2.0  # how often the parent asks each child whether it is ready
_SCRAPE_TIMEOUT_S = 2.0
_PR_SET_PDEATHSIG = 1
PARENT_PID = "MINNOW_FAMILY_PARENT_PID"  # internal: set for a family's worker by its parent, read by die_with_parent
_LIVE_GROUP_STATES = {"PreparingRebalance", "CompletingRebalance", "Stable", "Reconciling", "Assigning"}


def family_topics(settings: Settings) -> dict[str, list[str]]:
    """The input topics of each family this worker reads (the inputs file's, else the families' own), in order."""
    topics: dict[str, list[str]] = {}
    for item in worker_inputs(settings):
        topics.setdefault(item.family, []).append(item.topic)
    return topics


def wanted(settings: Settings) -> bool:
    """Whether `minnow worker` runs one process per family (exactly-once, inputs of several families, not off)."""
    return (
        settings.worker.family_processes == "auto"
        and settings.kafka.processing_guarantee == "exactly_once"
        and len(family_topics(settings)) > 1
    )


def family_group(group_id: str, family: str) -> str:
    """A family's consumer group: the worker group and the family, as the Helm chart names it."""
    return f"{group_id}-{family}"


def child_env(settings: Settings, family: str, port: int, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of one family's worker: the parent's, with its family, group and an internal health port."""
    return {
        **base,
        "MINNOW_WORKER__FAMILIES": family,
        "MINNOW_WORKER__FAMILY_PROCESSES": "off",
        "MINNOW_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,  # --bootstrap-servers included
        "MINNOW_KAFKA__GROUP_ID": family_group(settings.kafka.group_id, family),
        "MINNOW_WORKER__METRICS_PORT": str(port),
        "MINNOW_WORKER__METRICS_HOST": "127.0.0.1",  # only the parent reads it; the parent's port is the public one
    }


# ------------------------------------------------------------------------------------------------ offsets
async def migrate_offsets(kafka: KafkaSettings, inputs: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Copy the shared group's committed offsets of each family's input topics (`inputs`: family -> topics) into the
    family's group where it has none yet; returns how many partitions each family got. Refuses (ConfigError) while
    the shared group has live members: they read the same inputs and would repeat every output."""
    admin = await clients.started(clients.admin(kafka), kafka)
    try:
        every = [topic for topics in inputs.values() for topic in topics]
        partitions = await clients.topic_partitions(admin, every)
        old = await _committed(kafka, kafka.group_id, _tps(every, partitions))
        # Asked only when there is something to copy: a new cluster has no group coordinator before a first group.
        described = await admin.describe_consumer_groups([kafka.group_id]) if old else []
    finally:
        await admin.close()
    if not old:
        return {}
    live = [
        group
        for response in described
        for group in response.to_object()["groups"]
        if group["state"] in _LIVE_GROUP_STATES and group["members"]
    ]
    copied: dict[str, int] = {}
    for family, topics in inputs.items():
        tps = _tps(topics, partitions)
        group = family_group(kafka.group_id, family)
        to_copy = {tp: offset for tp, offset in old.items() if tp in tps}
        if not to_copy or await _committed(kafka, group, tps):
            continue
        if live:
            raise ConfigError(
                f"consumer group {kafka.group_id} still has {len(live[0]['members'])} live member(s) reading "
                f"{', '.join(topics)}: stop the workers that run every family in one process before starting one "
                "process per family (docs/architecture-stream.md, 'One process per family')"
            )
        await _commit(kafka, group, to_copy)
        log.warning(
            "family %s: group %s starts from group %s's committed offsets of %s (%d partitions)",
            family,
            group,
            kafka.group_id,
            ", ".join(topics),
            len(to_copy),
        )
        copied[family] = len(to_copy)
    return copied


def _tps(topics: Sequence[str], partitions: Mapping[str, list[int]]) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for topic in topics for p in partitions.get(topic, [])]


async def _committed(kafka: KafkaSettings, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = await clients.started(clients.consumer(kafka, group_id=group, enable_auto_commit=False), kafka)
    try:
        offsets = {tp: await consumer.committed(tp) for tp in tps}  # stable offsets (stable_offsets.py)
    finally:
        await consumer.stop()
    return {tp: offset for tp, offset in offsets.items() if offset is not None}


async def _commit(kafka: KafkaSettings, group: str, offsets: Mapping[TopicPartition, int]) -> None:
    consumer = await clients.started(clients.consumer(kafka, group_id=group, enable_auto_commit=False), kafka)
    try:
        consumer.assign(list(offsets))
        await consumer.commit(dict(offsets))
    finally:
        await consumer.stop()


# ------------------------------------------------------------------------------------------------ children
@dataclass
class Child:
    """One family's worker process and what the parent knows of it."""

    family: str
    port: int
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    exits: list[int] = field(default_factory=list)
    argv: tuple[str, ...] = ("-m", "pipeline.cli", "worker")  # after the Python interpreter

    async def start(self) -> None:
        # Its own session: a terminal's Ctrl-C reaches the parent only, which stops the children once, in order.
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, *self.argv, env={**self.env, PARENT_PID: str(os.getpid())}, start_new_session=True
        )

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)


class ChildMetrics(Collector):
    """The children's /metrics as one exposition: each sample labelled with its family's process."""

    def __init__(self, children: list[Child]) -> None:
        self._children = children

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for child in self._children:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{child.port}/metrics", timeout=_SCRAPE_TIMEOUT_S
                ) as response:
                    text = response.read().decode()
            except OSError:  # restarting: its series are missing until it answers again
                continue
            for family in text_string_to_metric_families(text):
                metric = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type, family.unit)
                )
                for sample in family.samples:
                    labels = {**sample.labels, "worker_family": child.family}
                    metric.add_sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
        yield from merged.values()


def die_with_parent() -> None:
    """In a family's worker (`minnow worker` started by this module): SIGTERM when the parent dies, so a killed parent
    never leaves a child reading on its own (Linux's PR_SET_PDEATHSIG; elsewhere nothing). Set by the child itself,
    not between fork and exec, where the parent's threads make it unsafe; a parent already gone ends it at once."""
    parent = os.environ.get(PARENT_PID)
    if parent is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):
        raise SystemExit(0)  # the parent died before the line above: nobody supervises this family any more


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _keep_running(child: Child, stopping: asyncio.Event) -> int:
    """Run one family's worker until the parent stops; start it again after an exit 75 (with backoff). Returns its
    last exit status; any other status than 0 and 75 ends the parent too (a setting that cannot work)."""
    backoff = _FIRST_BACKOFF_S
    while True:
        started = time.monotonic()
        await child.start()
        assert child.process is not None
        code = await child.process.wait()
        child.ready = False
        child.exits.append(code)
        if stopping.is_set():
            return code
        if code != EXIT_TEMPFAIL:
            log.critical("family %s: its worker exited %d; stopping the other families' workers", child.family, code)
            return code if code != 0 else 1
        if time.monotonic() - started >= _STEADY_S:
            backoff = _FIRST_BACKOFF_S
        log.error(
            "family %s: its worker exited 75 (see its last lines above); starting it again in %.0f s, the other "
            "families go on",
            child.family,
            backoff,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), backoff)
        if stopping.is_set():
            return 0
        backoff = min(backoff * 2, _MAX_BACKOFF_S)


async def _watch_ready(children: list[Child]) -> None:
    while True:
        assigned = 0
        for child in children:
            child.ready, partitions = await asyncio.to_thread(_readiness, child.port)
            assigned += partitions
        metrics.PARTITIONS_ASSIGNED.set(assigned)  # what the parent's /readyz reports: its children's, together
        await asyncio.sleep(_POLL_S)


def _readiness(port: int) -> tuple[bool, int]:
    """(ready, partitions assigned) as a child's /readyz answers; (False, 0) while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=_SCRAPE_TIMEOUT_S) as response:
            return response.status == 200, int(json.loads(response.read()).get("partitions_assigned", 0))
    except urllib.error.HTTPError as exc:  # 503: not ready, still with its count
        return False, int(json.loads(exc.read() or b"{}").get("partitions_assigned", 0))
    except (OSError, ValueError):  # not listening (restarting), or not its JSON
        return False, 0


async def supervise(settings: Settings) -> int:
    """Run one worker process per family until SIGTERM/SIGINT (forwarded; each drains and commits)."""
    from pipeline.stream.health import start_health_server

    worker = settings.worker
    inputs = family_topics(settings)
    try:
        await migrate_offsets(settings.kafka, inputs)
    except KafkaError as exc:
        raise StreamToolError(f"could not copy consumer group {settings.kafka.group_id}'s offsets: {exc}") from exc
    children = []
    for family in inputs:
        port = free_port() if worker.metrics_port else 0
        children.append(Child(family, port, child_env(settings, family, port, os.environ)))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop(reason: str) -> None:
        if stopping.is_set():  # once: a second SIGTERM would cut a child's drain short
            return
        log.warning("%s: stopping every family's worker (each drains and commits)", reason)
        stopping.set()
        for child in children:
            child.signal(signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signal.Signals(signum).name)
    server = None
    watcher = None
    if worker.metrics_port:
        registry = CollectorRegistry()
        registry.register(ChildMetrics(children))
        server = await start_health_server(
            worker.metrics_port, lambda: all(c.ready for c in children), host=worker.metrics_host, registry=registry
        )
        watcher = asyncio.create_task(_watch_ready(children))
    log.info(
        "exactly-once with %d families: one worker process each (%s)",
        len(children),
        ", ".join(f"{c.family} in group {family_group(settings.kafka.group_id, c.family)}" for c in children),
    )
    runs = [asyncio.create_task(_keep_running(child, stopping)) for child in children]
    try:
        done, _ = await asyncio.wait(runs, return_when=asyncio.FIRST_COMPLETED)
        ended = None
        if not stopping.is_set():  # a child ended for good (not 75): the others stop too; its status is the parent's
            ended = next(iter(done)).result()
            stop("a family's worker ended for good")
        codes = await asyncio.gather(*runs)
        return ended if ended is not None else max(codes, default=0)
    except BaseException:  # the parent itself failed: no child goes on without it
        stop("the parent failed")
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
        if server is not None:
            await server.close()


def run(settings: Settings) -> int:
    return asyncio.run(supervise(settings))
