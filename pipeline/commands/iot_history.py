"""Measure what a device's own history adds to bounds-only IoT anomaly scores, on a seeded synthetic stream.

    python -m pipeline.commands.iot_history [--seed 7] [--devices 6] [--days 14] [--thresholds 4,5,6,8]
        [--record-days 14]

Each device reports a temperature every minute: a daily cycle, sensor noise and a slow drift, with spikes
injected at random (most inside the bounds, some outside). Every message is scored as the mini model scores it
(bounds, then the anomaly task's reasons), then tracked through its device's history (`track`, as the worker and
`minnow infer` do, cooldown off so every spike counts); the table counts injected spikes escalated and other
messages escalated (false escalations), for bounds only and for each spike threshold. The data is synthetic.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pipeline.models import IoTMessage
from pipeline.settings import IoTSettings, Settings
from pipeline.stages.devices import Detectors, DeviceState, track
from pipeline.tasks.anomaly import AnomalyTask, load_bounds, score_readings

START = datetime(2025, 3, 1, tzinfo=UTC).timestamp()
INTERVAL_S = 60.0
DAY_S = 86_400.0
SPIKE_RATE = 0.002  # per message: about three a day per device
OUT_OF_BOUNDS_SHARE = 0.2  # of spikes; the rest stay inside the bundled temperature bounds [-20, 70]


Spike = Literal["", "in_bounds", "out_of_bounds"]  # "": a normal reading


@dataclass(frozen=True)
class Reading:
    message: IoTMessage
    spike: Spike


@dataclass
class Tally:
    detected: dict[str, int]
    false_escalations: int = 0

    def add(self, spike: Spike, escalated: bool) -> None:
        if spike and escalated:
            self.detected[spike] += 1
        elif escalated:
            self.false_escalations += 1


def stream(seed: int, devices: int, days: float) -> Iterator[Reading]:
    """Every device's messages, interleaved in event-time order."""
    rng = random.Random(seed)
    params = [
        {
            "base": rng.uniform(15, 30),
            "amplitude": rng.uniform(2, 6),
            "phase": rng.uniform(0, 2 * math.pi),
            "noise": rng.uniform(0.1, 0.4),
            "drift_per_day": rng.uniform(-0.3, 0.5),
        }
        for _ in range(devices)
    ]
    for i in range(int(days * DAY_S / INTERVAL_S)):
        ts = START + i * INTERVAL_S
        for d, p in enumerate(params):
            t_day = (ts - START) / DAY_S
            value = (
                p["base"]
                + p["amplitude"] * math.sin(2 * math.pi * t_day + p["phase"])
                + p["drift_per_day"] * t_day
                + rng.gauss(0, p["noise"])
            )
            spike: Spike = ""
            if rng.random() < SPIKE_RATE:
                if rng.random() < OUT_OF_BOUNDS_SHARE:
                    spike, value = "out_of_bounds", rng.uniform(72, 90)
                else:
                    spike, value = "in_bounds", value + rng.choice((-1, 1)) * rng.uniform(2, 10)
            message = IoTMessage(
                id=f"d{d}-{i}",
                device_id=f"d{d}",
                ts=datetime.fromtimestamp(ts, UTC),
                readings={"temperature_c": round(value, 2)},
            )
            yield Reading(message, spike)


def measure(readings: Sequence[Reading], thresholds: Sequence[float], record_days: int) -> list[dict[str, object]]:
    bounds = load_bounds()
    base = Settings()
    # What the mini model returns for a message without text: the bounds-scored anomaly.
    engine = [score_readings(r.message.readings, bounds) for r in readings]
    bounds_only = Tally(detected={"in_bounds": 0, "out_of_bounds": 0})
    for r, anomaly in zip(readings, engine, strict=True):
        bounds_only.add(r.spike, bool(AnomalyTask.configure(base).reasons(anomaly)))
    rows: list[dict[str, object]] = [{"scoring": "bounds only", **_row(bounds_only)}]
    for threshold in thresholds:
        iot = IoTSettings(threshold=threshold, cooldown_s=0, record_days=record_days)
        settings = base.model_copy(update={"iot": iot})
        detectors = Detectors(settings.iot)
        states: dict[str, DeviceState] = {}
        tally = Tally(detected={"in_bounds": 0, "out_of_bounds": 0})
        task = AnomalyTask.configure(settings)
        for r, anomaly in zip(readings, engine, strict=True):
            now = r.message.ts.timestamp() + 1.0
            seen = track(
                states.get(r.message.device_id),
                r.message,
                anomaly,
                partition=0,
                now=now,
                settings=settings,
                detectors=detectors,
            )
            states[r.message.device_id] = seen.state
            tally.add(r.spike, bool(task.reasons(seen.anomaly)))
        rows.append({"scoring": f"bounds + history, threshold {threshold:g}", **_row(tally)})
    counts = {"in_bounds": 0, "out_of_bounds": 0}
    for r in readings:
        if r.spike:
            counts[r.spike] += 1
    rows.insert(0, {"scoring": "injected", **counts, "false_escalations": ""})
    return rows


def _row(tally: Tally) -> dict[str, object]:
    return {**tally.detected, "false_escalations": tally.false_escalations}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--devices", type=int, default=6)
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--thresholds", default="4,5,6,8", help="comma-separated robust z spike thresholds")
    parser.add_argument(
        "--record-days", type=int, default=IoTSettings().record_days, help="the record gate's days; 0 = gate off"
    )
    args = parser.parse_args(argv)
    readings = list(stream(args.seed, args.devices, args.days))
    rows = measure(readings, [float(t) for t in args.thresholds.split(",")], args.record_days)
    print(f"{len(readings)} messages, {args.devices} devices, {args.days:g} days, seed {args.seed}, ", end="")
    print(f"record gate {args.record_days} days")
    print("| scoring | in-bounds spikes escalated | out-of-bounds spikes escalated | false escalations |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['scoring']} | {row['in_bounds']} | {row['out_of_bounds']} | {row['false_escalations']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
