"""A worker on topics and event shapes of your own, on the real broker: two feed topics of different shapes read
through field mappings, explicitly named outputs, one family per worker; every id accounted for exactly once."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import NewTopic

from pipeline.stream import clients, names
from tests.integration.helpers import as_kafka
from tests.integration.test_worker_e2e import PARTITIONS, OutputReader, WorkerProcess, worker_env  # noqa: F401 - the worker's environment fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SOCIAL_MAP = """kind: feed
fields:
  id: $.uuid
  source: social
  text: [$.body.message, $.body.caption]
  created_at: $.posted_at
"""
PARTNER_MAP = """kind: feed
fields:
  id: $.meta.ref
  source: $.meta.site
  text: $.content
  created_at: $.meta.published_ms
"""
TEXTS = (
    "Stocks rallied after the central bank held interest rates steady.",
    "The home side scored twice in stoppage time to win the cup final.",
    "A new open-source compiler release cuts build times in half.",
)


def _social(n: int) -> dict[str, Any]:
    return {"uuid": 9000 + n, "body": {"message": TEXTS[n % 3]}, "posted_at": 1764806400 + n, "user": {"id": n}}


def _partner(n: int) -> dict[str, Any]:
    meta = {"ref": f"partner-{n}", "site": "partner.example", "published_ms": 1764806400000 + n}
    return {"meta": meta, "content": TEXTS[(n + 1) % 3], "tags": ["x"]}


def test_a_worker_reads_your_topics_through_mappings_and_writes_your_topic_names(
    kafka_bootstrap: str,
    random_name: Callable[[str], str],
    tmp_path: Path,
    worker_env: dict[str, str],  # noqa: F811 - the fixture imported above
) -> None:
    """Six mapped posts from two topics reach the explicitly named sink (or the escalations) once each, with the
    producer's event in `original`; a post missing its text is a `mapping_error` dead letter on the explicitly named
    dead-letter topic with its bytes; the IoT message on the IoT topic is not read by this feed-only worker."""
    base = random_name("own")
    social, partner, iot_in = f"{base}.social.posts", f"{base}.partner.posts", f"{base}.iot.in"
    sink, deadletter, escalations = f"{base}.posts.scored", f"{base}.dlq", f"{base}.escalations"
    (tmp_path / "social.map.yaml").write_text(SOCIAL_MAP)
    (tmp_path / "partner.map.yaml").write_text(PARTNER_MAP)
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text(
        f"inputs:\n  - topic: {social}\n    map: social.map.yaml\n  - topic: {partner}\n    map: partner.map.yaml\n"
    )
    env = {
        **worker_env,
        "MINNOW_WORKER__INPUTS_FILE": str(inputs),
        "MINNOW_WORKER__FAMILIES": "feed",
        "MINNOW_TOPICS__FEEDS_ENRICHED": sink,
        "MINNOW_TOPICS__DEADLETTER": deadletter,
        "MINNOW_TOPICS__ESCALATIONS": escalations,
        "MINNOW_TOPICS__IOT_IN": iot_in,
    }
    unmapped = orjson.dumps({"uuid": 9999, "body": {}, "posted_at": 1764806400})
    sends = [(social, orjson.dumps(_social(n))) for n in range(3)]
    sends += [(partner, orjson.dumps(_partner(n))) for n in range(3)]
    sends += [(social, unmapped), (iot_in, orjson.dumps({"id": "m-1", "device_id": "d", "ts": 1, "readings": {}}))]

    async def run() -> list[Any]:
        await _create_and_send(kafka_bootstrap, [social, partner, iot_in, sink, deadletter, escalations], sends)
        worker = WorkerProcess(env, tmp_path / "worker.log")
        worker.start()
        try:
            async with OutputReader(kafka_bootstrap, "", topics=(sink, deadletter, escalations)) as reader:
                done = await reader.read_until(lambda records: len(records) >= 7, timeout_s=180)
                assert done, f"only {len(reader.records)} outputs; worker log:\n{worker.tail()}"
                await asyncio.sleep(3)  # anything more (a duplicate, the IoT message) would show up by now
                await reader.read_to_end()
            assert worker.stop() == 0, worker.tail()
            return reader.records
        finally:
            worker.kill()

    records = asyncio.run(run())
    results = [orjson.loads(r.value) for r in records if r.topic != deadletter]
    ids = Counter(r["id"] if "id" in r else r["result"]["id"] for r in results)
    assert ids == Counter([*(str(9000 + n) for n in range(3)), *(f"partner-{n}" for n in range(3))])
    originals = {(r.get("result") or r)["id"]: (r.get("result") or r)["original"] for r in results}
    assert originals["9001"] == _social(1) and originals["partner-2"] == _partner(2)
    (dead,) = [r for r in records if r.topic == deadletter]
    headers = dict(dead.headers)
    assert dead.value == unmapped and headers[names.DLQ_ERROR_CLASS] == b"mapping_error"
    assert headers[names.DLQ_SOURCE_TOPIC].decode() == social


async def _create_and_send(bootstrap: str, topics: list[str], sends: list[tuple[str, bytes]]) -> None:
    admin = clients.admin(as_kafka(bootstrap))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    finally:
        await admin.close()
    producer = clients.producer(as_kafka(bootstrap))
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, value) for topic, value in sends])
    finally:
        await producer.stop()


CONNECT_DOC = Path(__file__).resolve().parents[2] / "docs" / "connect.md"
EXAMPLES = CONNECT_DOC.parent / "examples"


def _documented_own_topics(base: str, inputs: Path) -> tuple[dict[str, str], list[list[str]]]:
    """docs/connect.md's own-topics example: its variables (topic and group names made unique to this run, the
    inputs file pointed at this run's copy) and its `minnow` command lines."""
    block = re.search(r"<!-- example: own-topics\b.*?-->\n```bash\n(.*?)```", CONNECT_DOC.read_text(), re.S)
    assert block is not None, "docs/connect.md lost its own-topics example"
    env: dict[str, str] = {}
    commands: list[list[str]] = []
    for line in block.group(1).splitlines():
        code = line.split("#", 1)[0].strip()
        if code.startswith("export "):
            variable, value = code.removeprefix("export ").split("=", 1)
            env[variable] = str(inputs) if value == "/etc/minnow/inputs.yaml" else f"{base}.{value}"
        elif code.startswith("minnow "):
            commands.append(code.split()[1:])
    return env, commands


def test_the_documented_own_topics_example_runs_as_written(
    kafka_bootstrap: str,
    random_name: Callable[[str], str],
    tmp_path: Path,
    worker_env: dict[str, str],  # noqa: F811 - the fixture imported above
) -> None:
    """docs/connect.md's example with docs/examples/inputs.yaml and its mapping: `topics apply --dry-run` changes
    nothing, `--yes` creates Minnow's topics under the documented names and leaves the user's input alone, and
    `minnow worker --families feed` reads docs/examples/social-posts.jsonl: two posts scored, one dead letter."""
    base = random_name("doc")
    social = f"{base}.social.posts.v2"
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text((EXAMPLES / "inputs.yaml").read_text().replace("social.posts.v2", social))
    (tmp_path / "social-posts.map.yaml").write_text((EXAMPLES / "social-posts.map.yaml").read_text())
    documented, commands = _documented_own_topics(base, inputs)
    assert commands == [
        ["topics", "apply", "--dry-run"],
        ["topics", "apply", "--yes"],
        ["worker", "--families", "feed"],
    ]
    env = {**worker_env, **documented}
    sink, escalations, dlq = (env[f"MINNOW_TOPICS__{n}"] for n in ("FEEDS_ENRICHED", "ESCALATIONS", "DEADLETTER"))
    lines = [line for line in (EXAMPLES / "social-posts.jsonl").read_bytes().splitlines() if line.strip()]
    asyncio.run(_create_and_send(kafka_bootstrap, [social], [(social, line) for line in lines]))
    for command in commands[:2]:
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *command], env=env, capture_output=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr.decode()
        if "--dry-run" in command:
            assert b"would create" in done.stdout and social.encode() not in done.stdout

    async def run() -> list[Any]:
        worker = WorkerProcess(env, tmp_path / "worker.log", args=tuple(commands[2]))
        worker.start()
        try:
            async with OutputReader(kafka_bootstrap, "", topics=(sink, escalations, dlq)) as reader:
                done = await reader.read_until(lambda records: len(records) >= len(lines), timeout_s=180)
                assert done, f"only {len(reader.records)} outputs; worker log:\n{worker.tail()}"
            assert worker.stop() == 0, worker.tail()
            return reader.records
        finally:
            worker.kill()

    records = asyncio.run(run())
    scored = [orjson.loads(r.value) for r in records if r.topic != dlq]
    assert sorted((s.get("result") or s)["id"] for s in scored) == ["90210", "90211"]
    (dead,) = [r for r in records if r.topic == dlq]
    assert dead.value == lines[2] and dict(dead.headers)[names.DLQ_ERROR_CLASS] == b"mapping_error"
