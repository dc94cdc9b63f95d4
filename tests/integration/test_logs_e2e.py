"""`minnow worker` with MINNOW_LOG_FORMAT=json on the real broker: every stderr line is one JSON object, faust's
included, and a dead letter's line names the event, where it was read and its batch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.test_worker_e2e import (
    MAX_EVENT_BYTES,
    Planned,
    create_topics,
    produce,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MARKER = "okapi-lantern-marker-5520"  # in every event's text: must never reach an INFO-or-above line
WAIT_S = 150.0


def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def test_a_json_worker_log_is_json_lines_and_a_dead_letter_line_carries_its_fields(
    kafka_bootstrap: str, random_name: Callable[[str], str], model_cache: Path, tmp_path: Path
) -> None:
    prefix = random_name("logs") + "."
    bad = [
        Planned("feeds.in", b"junk", f"not JSON {MARKER}".encode(), None, error="decode_error"),
        Planned("feeds.in", b"nc", orjson.dumps({"id": "feed-nc", "source": "w", "text": MARKER}), "feed-nc"),
    ]
    body = {"id": "feed-ok", "source": "w", "text": f"Stocks rallied, {MARKER}.", "created_at": "2026-11-20T09:00:00Z"}
    good = Planned("feeds.in", b"feed-ok", orjson.dumps(body), "feed-ok")

    async def setup() -> list[Any]:
        await create_topics(kafka_bootstrap, prefix)
        return await produce(kafka_bootstrap, prefix, [*bad, good])

    sent = asyncio.run(setup())
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINNOW_")}
    env.update(
        MINNOW_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
        MINNOW_KAFKA__TOPIC_PREFIX=prefix,
        MINNOW_KAFKA__GROUP_ID=random_name("group"),
        MINNOW_KAFKA__MAX_EVENT_BYTES=str(MAX_EVENT_BYTES),
        MINNOW_ENGINE__CACHE_DIR=str(model_cache),
        MINNOW_WORKER__METRICS_PORT="0",
        MINNOW_LOG_FORMAT="json",
    )
    err, out = tmp_path / "stderr.log", tmp_path / "stdout.log"
    with err.open("wb") as err_file, out.open("wb") as out_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker"], env=env, stdout=out_file, stderr=err_file
        )
        try:
            deadline = time.monotonic() + WAIT_S
            while sum("to the dead-letter topic" in line for line in _lines(err)) < len(bad):
                assert worker.poll() is None, "\n".join(_lines(err)[-30:])
                assert time.monotonic() < deadline, "no dead-letter lines:\n" + "\n".join(_lines(err)[-30:])
                time.sleep(0.5)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=60)

    lines = _lines(err)
    parsed = [orjson.loads(line) for line in lines]  # raises on any line that is not JSON
    assert all(isinstance(line, dict) and {"ts", "level", "logger", "message"} <= set(line) for line in parsed)
    assert any(line["logger"].startswith(("faust", "mode")) for line in parsed)  # faust's lines: the same format
    assert _lines(out) == []
    dead = [line for line in parsed if line["message"].startswith("to the dead-letter topic")]
    where = {(s.topic, s.partition, s.offset): s.plan.marker for s in sent[: len(bad)]}
    assert {(d["topic"], d["partition"], d["offset"]): d["event_id"] for d in dead} == where
    assert sorted(d["error"] for d in dead) == ["decode_error", "schema_error"]
    assert all(d["level"] == "WARNING" and d["batch_id"] for d in dead)
    assert not [line for line in lines if MARKER in line]  # the worker ran at INFO: no event text anywhere
