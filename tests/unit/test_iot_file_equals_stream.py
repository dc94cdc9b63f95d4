"""`minnow infer` on a file of IoT readings escalates exactly what the stream worker escalates on the same sequence."""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from pipeline.commands import infer
from pipeline.models import Anomaly, AnyEvent, ErrorRecord, IoTMessage, Result, Scores
from pipeline.settings import IoTSettings, KafkaSettings, Settings
from pipeline.stages.devices import DeviceBook
from pipeline.stages.infer import MiniModel
from pipeline.stream.devices import Devices
from pipeline.stream.worker import BatchProcessor
from tests.unit.test_stream_units import FakeSender, record

PREFIX = "t."
NOW = 1_800_000_000.0
T0 = 1_763_596_800.0  # 2025-11-20 00:00 UTC
STEP = 600.0  # one reading every 10 minutes


def sequence() -> list[IoTMessage]:
    """Two devices, interleaved: a daily cycle with noise, three spikes, a level shift on d2 and one reading over
    the bundled temperature bounds; enough readings to leave the warm-up."""
    out = []
    for i in range(6 * 144):
        ts = T0 + i * STEP
        hour = (ts % 86_400) / 3600
        base = 20 + 3 * math.sin(2 * math.pi * hour / 24) + 0.3 * math.sin(i * 1.7)
        for device in ("d1", "d2"):
            value = base + (4.0 if device == "d2" and i >= 700 else 0.0)
            if (device, i) in {("d1", 500), ("d1", 501), ("d2", 620)}:
                value += 15.0
            if (device, i) == ("d1", 800):
                value = 75.0  # over the bounds [-20, 70]
            readings = {"temperature_c": round(value, 3), "fan_rpm": 1200.0 + (i % 7)}
            out.append(
                IoTMessage(id=f"{device}-{i}", device_id=device, ts=datetime.fromtimestamp(ts, UTC), readings=readings)
            )
    return out


class RealEngine:
    """The worker's engine interface over the real mini model (scores, no state)."""

    def __init__(self, model: MiniModel) -> None:
        self.model = model

    async def score(self, events: Sequence[AnyEvent]) -> list[Scores | ErrorRecord]:
        return self.model.score(events)


def by_stream(model: MiniModel, settings: Settings, messages: Sequence[IoTMessage]) -> dict[str, tuple[str, Anomaly]]:
    """Route and anomaly of each message as the worker produces them, fed in batches of 7."""
    store: dict[bytes, bytes] = {}
    processor = BatchProcessor(
        settings, RealEngine(model), FakeSender(), stateful=Devices(settings, store, clock=lambda: NOW)
    )
    out: dict[str, tuple[str, Anomaly]] = {}
    for start in range(0, len(messages), 7):
        batch = [
            record(m.model_dump_json().encode(), start + j, topic="iot.in", key=m.device_id.encode())
            for j, m in enumerate(messages[start : start + 7])
        ]
        for output in asyncio.run(processor.handle(batch)):
            if output.destination not in ("sink", "escalation") or output.topic.endswith("iot.windows"):
                continue
            body = orjson.loads(output.value or b"")
            result = body["result"] if output.destination == "escalation" else body
            route = "escalate" if output.destination == "escalation" else "sink"
            out[result["id"]] = (route, Anomaly.model_validate(result["anomaly"]))
    return out


def by_file(model: MiniModel, settings: Settings, messages: Sequence[IoTMessage]) -> dict[str, tuple[str, Anomaly]]:
    """Route and anomaly of each message as `minnow infer` computes them, in batches of 13."""
    book = DeviceBook(settings, now=NOW)
    out: dict[str, tuple[str, Anomaly]] = {}
    for start in range(0, len(messages), 13):
        for result in infer.infer_batch(model, book, messages[start : start + 13]):
            assert isinstance(result, Result) and result.anomaly is not None
            out[result.id] = (result.route, result.anomaly)
    return out


@pytest.mark.slow
def test_replaying_a_file_escalates_what_streaming_it_did(mini_model: MiniModel) -> None:
    """Same messages, same order per device, different batch sizes: every route and every anomaly (scores,
    z-scores, detectors, warm-up and repeat flags) is identical with every detector on (CUSUM and bursts too), and
    history did escalate some readings."""
    settings = mini_model.settings.model_copy(
        update={
            "kafka": KafkaSettings(topic_prefix=PREFIX),
            "iot": IoTSettings(
                warmup_readings=144, warmup_days=1, cooldown_s=6 * 3600.0, cusum_limit=20.0, burst_readings=3
            ),
        }
    )
    messages = sequence()
    streamed = by_stream(mini_model, settings, messages)
    replayed = by_file(mini_model, settings, messages)
    assert len(streamed) == len(replayed) == len(messages)
    assert streamed == replayed
    escalated = sorted(i for i, (route, _) in replayed.items() if route == "escalate")
    assert "d1-500" in escalated and "d1-501" not in escalated  # one escalation for the two-reading episode
    assert "d1-800" in escalated  # over the bounds
    assert any(a.metrics["temperature_c"].warming_up for _, a in replayed.values())
    assert all(not a.metrics["fan_rpm"].repeat for _, a in replayed.values())


@pytest.mark.slow
def test_minnow_infer_scores_unbounded_metrics_from_history(mini_model: MiniModel, tmp_path: Path) -> None:
    """Through the command itself: a metric with no bounds gets z-scores once warmed up, and a spike escalates."""
    settings = mini_model.settings.model_copy(update={"iot": IoTSettings(warmup_readings=50, record_days=0)})
    lines = []
    for i in range(120):
        value = 500.0 if i == 110 else 100.0 + (i % 5)
        ts = datetime.fromtimestamp(T0 + 60 * i, UTC).isoformat()
        lines.append(orjson.dumps({"id": f"p-{i}", "device_id": "pump", "ts": ts, "readings": {"flow": value}}))
    path = tmp_path / "pump.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = io.BytesIO()
    infer.run(settings, str(path), out, batch_size=16)
    results = [orjson.loads(line) for line in out.getvalue().splitlines()]
    routes = {r["id"]: r["route"] for r in results}
    assert routes["p-110"] == "escalate" and sum(route == "escalate" for route in routes.values()) == 1
    assert results[60]["anomaly"]["metrics"]["flow"]["zscore"] is not None
    assert results[10]["anomaly"]["metrics"]["flow"]["warming_up"] is True
