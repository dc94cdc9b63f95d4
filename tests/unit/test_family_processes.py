"""One worker process per family under exactly-once (pipeline/stream/family_processes.py): when it applies, what each
family's process is given, how the parent restarts one and merges their metrics. The broker-backed story (a family
whose sink is gone restarts alone while the others deliver) is tests/integration/test_family_isolation.py."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.settings import KafkaSettings, Settings, WorkerSettings
from pipeline.stream.family_processes import (
    Child,
    ChildMetrics,
    _keep_running,
    child_env,
    family_topics,
    free_port,
    wanted,
)
from pipeline.stream.health import start_health_server


def _settings(guarantee: str, families: str, mode: str = "auto") -> Settings:
    return Settings(
        kafka=KafkaSettings(processing_guarantee=guarantee, group_id="minnow-worker"),  # type: ignore[arg-type]
        worker=WorkerSettings(families=families, family_processes=mode),  # type: ignore[arg-type]
    )


def test_only_exactly_once_with_several_families_runs_one_process_each() -> None:
    """At-least-once stalls a family inside one process; exactly-once needs a process per family, unless turned off
    or there is only one family."""
    assert wanted(_settings("exactly_once", "feed,iot"))
    assert not wanted(_settings("exactly_once", "feed"))
    assert not wanted(_settings("at_least_once", "feed,iot"))
    assert not wanted(_settings("exactly_once", "feed,iot", mode="off"))


def test_a_family_process_gets_its_family_its_own_group_and_an_internal_port() -> None:
    """Each family reads in `<group>-<family>` (the Helm chart's name for it) and serves its endpoints on 127.0.0.1
    only; the parent's other variables pass through, and the child never splits itself again."""
    settings = _settings("exactly_once", "feed,iot")
    env = child_env(settings, "iot", 41234, {"MINNOW_X": "kept", "MINNOW_WORKER__FAMILIES": "feed,iot"})
    assert env["MINNOW_WORKER__FAMILIES"] == "iot"
    assert env["MINNOW_KAFKA__GROUP_ID"] == "minnow-worker-iot"
    assert env["MINNOW_WORKER__METRICS_PORT"] == "41234"
    assert env["MINNOW_WORKER__METRICS_HOST"] == "127.0.0.1"
    assert env["MINNOW_WORKER__FAMILY_PROCESSES"] == "off"
    assert env["MINNOW_KAFKA__BOOTSTRAP_SERVERS"] == settings.kafka.bootstrap_servers
    assert env["MINNOW_X"] == "kept"


def test_the_parent_serves_the_childrens_metrics_labelled_with_their_family() -> None:
    """Two real children's /metrics merged into one exposition: the same metric from both, told apart by
    `worker_family`; a child that does not answer (restarting) is left out instead of failing the scrape."""

    async def scenario() -> str:
        servers = []
        children = []
        for family, value in (("feed", 3.0), ("iot", 5.0)):
            registry = CollectorRegistry()
            Gauge("minnow_partitions_assigned", "partitions", registry=registry).set(value)
            servers.append(await start_health_server(0, host="127.0.0.1", registry=registry))
            children.append(Child(family, servers[-1].port, {}))
        children.append(Child("ticket", free_port(), {}))  # nothing listens there
        merged = CollectorRegistry()
        merged.register(ChildMetrics(children))
        try:
            return (await asyncio.to_thread(generate_latest, merged)).decode()
        finally:
            for server in servers:
                await server.close()

    text = asyncio.run(scenario())
    samples = {
        s.labels["worker_family"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "minnow_partitions_assigned"
    }
    assert samples == {"feed": 3.0, "iot": 5.0}
    assert text.count("# TYPE minnow_partitions_assigned gauge") == 1


def _exits(tmp_path: Path, codes: list[int]) -> tuple[str, ...]:
    """A child that exits with the next of `codes` each time it is started (a counter file between starts)."""
    counter = tmp_path / "starts"
    script = (
        f"import pathlib, sys; p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) if p.exists() else 0; "
        f"p.write_text(str(n + 1)); sys.exit({codes!r}[n])"
    )
    return ("-c", script)


def test_a_child_that_exits_75_is_started_again_and_another_status_ends_it(tmp_path: Path) -> None:
    """75 (a delivery that failed, a broker gone) restarts that family's process after a backoff; a status a
    restart cannot help (here 3) is returned, for the parent to stop the others and exit with it."""
    child = Child("feed", 0, {}, argv=_exits(tmp_path, [75, 3]))
    code = asyncio.run(asyncio.wait_for(_keep_running(child, asyncio.Event()), 30))
    assert code == 3
    assert child.exits == [75, 3]  # started twice: once again after the 75


def test_a_stop_during_the_backoff_starts_nothing_more(tmp_path: Path) -> None:
    """SIGTERM while a family waits to be started again: it is not started again, and its run ends with 0."""
    child = Child("feed", 0, {}, argv=_exits(tmp_path, [75, 75, 75]))

    async def scenario() -> int:
        stopping = asyncio.Event()
        run = asyncio.create_task(_keep_running(child, stopping))
        while not child.exits:
            await asyncio.sleep(0.05)
        stopping.set()
        return await asyncio.wait_for(run, 10)

    assert asyncio.run(scenario()) == 0
    assert child.exits == [75]


_ORPHAN = """
import os, subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-c", "from pipeline.stream.family_processes import die_with_parent; "
     "die_with_parent(); print('watching', flush=True); import time; time.sleep(60)"],
    env={**os.environ, "MINNOW_FAMILY_PARENT_PID": str(os.getpid())}, stdout=subprocess.PIPE, text=True,
)
assert child.stdout is not None and child.stdout.readline().strip() == "watching"
print(child.pid, flush=True)
time.sleep(60)
"""


def test_a_family_worker_dies_with_its_parent_and_never_outlives_it() -> None:
    """A family's worker asks for SIGTERM on its parent's death (PR_SET_PDEATHSIG, set in the child itself): a
    parent SIGKILLed takes it along within seconds; one started for a parent that is already gone ends at once."""
    with subprocess.Popen([sys.executable, "-c", _ORPHAN], stdout=subprocess.PIPE, text=True) as parent:
        try:
            assert parent.stdout is not None
            grandchild = int(parent.stdout.readline())
            parent.send_signal(signal.SIGKILL)
            parent.wait(10)
            deadline = time.monotonic() + 10
            while _alive(grandchild):
                assert time.monotonic() < deadline, "the family's worker outlived its parent"
                time.sleep(0.1)
        finally:
            parent.kill()
    orphan = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pipeline.stream.family_processes import die_with_parent; die_with_parent(); print('went on')",
        ],
        env={**os.environ, "MINNOW_FAMILY_PARENT_PID": "1"},  # not its parent: as if the parent died before
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert orphan.returncode == 0 and "went on" not in orphan.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_the_families_and_topics_are_the_workers_inputs_not_the_default_names(tmp_path: Path) -> None:
    """With an inputs file the families are those it lists, with the user's topics (two feed topics go to the
    feed process, whose offsets are copied for both); a file listing one family's topics only keeps one process,
    whatever MINNOW_WORKER__FAMILIES says."""
    both = tmp_path / "both.yaml"
    both.write_text(
        "inputs:\n"
        "  - {topic: social.posts, kind: feed}\n"
        "  - {topic: partner.posts, kind: feed}\n"
        "  - {topic: support.tickets, kind: ticket}\n"
    )
    feeds_only = tmp_path / "feeds.yaml"
    feeds_only.write_text("inputs:\n  - {topic: social.posts, kind: feed}\n  - {topic: partner.posts, kind: feed}\n")

    def settings(inputs: Path) -> Settings:
        return Settings(
            kafka=KafkaSettings(processing_guarantee="exactly_once"),
            worker=WorkerSettings(inputs_file=inputs),
        )

    assert family_topics(settings(both)) == {"feed": ["social.posts", "partner.posts"], "ticket": ["support.tickets"]}
    assert wanted(settings(both))
    assert not wanted(settings(feeds_only))
