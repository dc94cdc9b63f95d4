"""IoT anomalies on real series: the Numenta Anomaly Benchmark dev series through `minnow infer`'s own path.

    python -m pipeline.commands.iot_nab_eval --data-dir ../shared/data [--split report|tune|all] [--tune]

Each series (`iot/nab/data/<group>/<name>.csv`, `timestamp,value`) becomes one device with one metric (`value`, no
bounds), its readings IoT messages in time order, run through exactly what `minnow infer` runs: the mini model's
scores, the device's history (`DeviceBook`, the worker's `track`) and the router. An escalation is a message routed
to `escalate`. Scored by windows (`iot/nab/combined_windows_dev.json`): a window is found when an escalation falls
inside it; precision is escalations inside windows over all escalations; false escalations per day count those
outside every window over the days outside windows. A plain rolling 3-sigma detector (mean and standard deviation
of the previous readings, every reading past 3 sigma an alert) is scored on the same series in the same run.

The series are split by name within each group (sorted; even positions tune, odd positions report), so the
figures of `--split report` come from series the defaults were not tuned on. `--tune` searches a small grid of
detector settings on the tune split and prints each one's pooled figures (about two minutes a point on two cores).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.commands.infer import infer_batch
from pipeline.errors import ConfigError
from pipeline.models import ErrorRecord, IoTMessage, Result, Scores
from pipeline.settings import IoTSettings, Settings
from pipeline.stages.devices import DeviceBook
from pipeline.stages.infer import MiniModel

NAB = Path("iot") / "nab"
DAY_S = 86_400.0
BATCH = 64
BASELINE_READINGS = 96  # the rolling 3-sigma baseline's window (the detectors' default recent readings)
BASELINE_SIGMA = 3.0


@dataclass(frozen=True)
class Series:
    name: str  # "<group>/<file>.csv", the key of the windows file
    ts: np.ndarray  # Unix seconds, ascending
    values: np.ndarray
    windows: list[tuple[float, float]]


@dataclass(frozen=True)
class Score:
    windows: int
    found: int
    escalations: int
    inside: int
    outside_days: float

    @property
    def false_per_day(self) -> float:
        return (self.escalations - self.inside) / self.outside_days if self.outside_days else 0.0

    @property
    def precision(self) -> float | None:
        return self.inside / self.escalations if self.escalations else None

    def __add__(self, other: Score) -> Score:
        return Score(
            self.windows + other.windows,
            self.found + other.found,
            self.escalations + other.escalations,
            self.inside + other.inside,
            self.outside_days + other.outside_days,
        )


ZERO = Score(0, 0, 0, 0, 0.0)


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def load(data_dir: Path) -> list[Series]:
    root = data_dir / NAB
    windows_file = root / "combined_windows_dev.json"
    if not windows_file.is_file():
        raise ConfigError(f"no NAB windows at {windows_file}: pass --data-dir pointing at the shared data folder")
    windows = json.loads(windows_file.read_text())
    series = []
    for name in sorted(windows):
        with (root / "data" / name).open(newline="") as f:
            rows = list(csv.DictReader(f))
        series.append(
            Series(
                name=name,
                ts=np.array([_epoch(r["timestamp"]) for r in rows]),
                values=np.array([float(r["value"]) for r in rows]),
                windows=[(_epoch(a), _epoch(b)) for a, b in windows[name]],
            )
        )
    return series


def split(series: Sequence[Series]) -> tuple[list[Series], list[Series]]:
    """(tune, report): within each group, sorted by name, even positions tune and odd positions report."""
    tune: list[Series] = []
    report: list[Series] = []
    for _, members in itertools.groupby(sorted(series, key=lambda s: s.name), key=lambda s: s.name.split("/")[0]):
        for i, s in enumerate(members):
            (tune if i % 2 == 0 else report).append(s)
    return tune, report


def events(series: Series) -> list[IoTMessage]:
    device = series.name.removesuffix(".csv")
    return [
        IoTMessage(id=f"{device}-{i}", device_id=device, ts=datetime.fromtimestamp(t, UTC), readings={"value": v})
        for i, (t, v) in enumerate(zip(series.ts.tolist(), series.values.tolist(), strict=True))
    ]


def _batches(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), BATCH):
        yield items[i : i + BATCH]


def escalated_by_minnow(model: MiniModel, settings: Settings, messages: Sequence[IoTMessage]) -> list[float]:
    """Event times of the messages `minnow infer` escalates: score, device history, route — its own function."""
    book = DeviceBook(settings, now=time.time())
    out: list[float] = []
    for batch in _batches(messages):
        for event, result in zip(batch, infer_batch(model, book, batch), strict=True):
            if isinstance(result, Result) and result.route == "escalate":
                out.append(event.ts.timestamp())
    return out


def escalated_from_scores(
    model: MiniModel, settings: Settings, messages: Sequence[IoTMessage], scores: Sequence[Scores | ErrorRecord]
) -> list[float]:
    """`escalated_by_minnow` with the mini model's scores computed once (they do not depend on the detector
    settings): the same device step and router, for the tuning grid."""
    book = DeviceBook(settings, now=time.time())
    tracked = book.step(messages, scores)
    return [
        event.ts.timestamp()
        for event, s in zip(messages, tracked, strict=True)
        if isinstance(s, Scores) and model.router.result(s).route == "escalate"
    ]


def escalated_by_baseline(series: Series) -> list[float]:
    """Plain rolling 3-sigma: mean and standard deviation of the previous BASELINE_READINGS readings."""
    v = series.values
    n = BASELINE_READINGS
    if len(v) <= n:
        return []
    windows = np.lib.stride_tricks.sliding_window_view(v, n)[:-1]  # windows[i] = v[i : i + n], before v[i + n]
    mean, std = windows.mean(axis=1), windows.std(axis=1)
    current = v[n:]
    hit = np.abs(current - mean) > BASELINE_SIGMA * np.maximum(std, 1e-9)
    return [float(t) for t in series.ts[n:][hit]]


def score(series: Series, escalations: Sequence[float]) -> Score:
    times = np.asarray(escalations, dtype=float)
    inside = np.zeros(len(times), dtype=bool)
    found = 0
    for start, end in series.windows:
        hit = (times >= start) & (times <= end)
        found += bool(hit.any())
        inside |= hit
    span = float(series.ts[-1] - series.ts[0])
    in_windows = sum(min(end, series.ts[-1]) - max(start, series.ts[0]) for start, end in series.windows)
    return Score(len(series.windows), found, len(times), int(inside.sum()), max(span - in_windows, 0.0) / DAY_S)


def _fmt(s: Score) -> str:
    precision = f"{s.precision:.2f}" if s.precision is not None else "-"
    return f"{s.found}/{s.windows} | {s.escalations} | {precision} | {s.false_per_day:.2f}"


def report(model: MiniModel, settings: Settings, series: Sequence[Series]) -> tuple[Score, Score]:
    print(
        "| series | Minnow: windows found | escalations | precision | false/day "
        "| 3-sigma: windows found | escalations | precision | false/day |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    ours, base = ZERO, ZERO
    for s in series:
        mine = score(s, escalated_by_minnow(model, settings, events(s)))
        theirs = score(s, escalated_by_baseline(s))
        ours, base = ours + mine, base + theirs
        print(f"| {s.name} | {_fmt(mine)} | {_fmt(theirs)} |", flush=True)
    print(f"| **all {len(series)}** | {_fmt(ours)} | {_fmt(base)} |")
    return ours, base


GRID: dict[str, Sequence[Any]] = {
    "scale": ("none", "sqrt"),
    "burst_readings": (0, 3),
    "record_ratio": (1.0, 1.2),
    "cusum_limit": (0.0, 30.0),
}


def tune(model: MiniModel, settings: Settings, series: Sequence[Series]) -> None:
    """Pooled figures on the tune split for every point of GRID (other settings at their defaults)."""
    prepared = []
    for s in series:
        messages = events(s)
        scores = [x for batch in _batches(messages) for x in model.score(batch)]
        prepared.append((s, messages, scores))
    names = list(GRID)
    print("| " + " | ".join(names) + " | windows found | escalations | precision | false/day |")
    print("|" + "---|" * (len(names) + 4))
    for point in itertools.product(*GRID.values()):
        overrides = dict(zip(names, point, strict=True))
        trial = settings.model_copy(update={"iot": IoTSettings(**(settings.iot.model_dump() | overrides))})
        total = ZERO
        for s, messages, scores in prepared:
            total = total + score(s, escalated_from_scores(model, trial, messages, scores))
        print("| " + " | ".join(str(v) for v in point) + f" | {_fmt(total)} |", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", choices=("report", "tune", "all"), default="report")
    parser.add_argument("--tune", action="store_true", help="search the detector grid on the tune split instead")
    args = parser.parse_args(argv)
    settings = Settings()
    try:
        series = load(args.data_dir)
    except ConfigError as exc:
        print(f"minnow: {exc}", file=sys.stderr)
        return 2
    tune_part, report_part = split(series)
    model = MiniModel.load(settings)
    if args.tune:
        tune(model, settings, tune_part)
        return 0
    chosen = {"tune": tune_part, "report": report_part, "all": series}[args.split]
    print(f"{len(chosen)} series ({args.split} split) from {args.data_dir / NAB}")
    report(model, settings, chosen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
