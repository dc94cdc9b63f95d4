"""The anomaly task: score IoT readings against per-metric bounds from configuration."""

from __future__ import annotations

import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from pipeline.config_files import read_yaml
from pipeline.errors import ConfigError
from pipeline.models import Anomaly, IoTMessage, MetricAnomaly
from pipeline.settings import Settings
from pipeline.tasks.base import Batch, NotAskedOfLargeModel

if TYPE_CHECKING:
    from pipeline.engine.encoder import Encoder

# Inside the bounds a reading scores at most EDGE_SCORE as it nears an edge; outside it climbs towards 1
# with the excess measured in tenths of the allowed range.
EDGE_SCORE = 0.5
EDGE_ZONE = 0.2  # the outer 20% of the half-range starts to count
MAX_NAMED = 8  # metrics named in the "no bounds" reason; the rest are counted, so the reason stays short


class Bounds(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    min: float | None = None
    max: float | None = None
    unit: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


def bundled_bounds_path() -> Path:
    return Path(str(resources.files("pipeline") / "data" / "bounds.yaml"))


def load_bounds(path: Path | None = None) -> dict[str, Bounds]:
    path = path or bundled_bounds_path()
    raw = read_yaml(path, "bounds file") or {}
    metrics = raw.get("metrics") if isinstance(raw, dict) else None
    if not isinstance(metrics, dict):
        raise ConfigError(f"bounds file {path} needs a top-level 'metrics:' mapping of metric -> {{min, max}}")
    try:
        return {str(name): Bounds.model_validate(body) for name, body in metrics.items()}
    except ValidationError as exc:
        raise ConfigError(f"bounds file {path} is invalid: {exc}") from exc


def _metric_score(value: float, b: Bounds) -> tuple[float, bool]:
    if not math.isfinite(value):
        return 1.0, True
    width = (b.max - b.min) if (b.min is not None and b.max is not None) else max(abs(b.min or b.max or 1.0), 1.0)
    scale = 0.1 * width
    if b.max is not None and value > b.max:
        return EDGE_SCORE + (1 - EDGE_SCORE) * (1 - math.exp(-(value - b.max) / scale)), True
    if b.min is not None and value < b.min:
        return EDGE_SCORE + (1 - EDGE_SCORE) * (1 - math.exp(-(b.min - value) / scale)), True
    if b.min is None or b.max is None:
        return 0.0, False
    half = width / 2
    off_centre = abs(value - (b.min + half)) / half  # 0 at the centre, 1 at an edge
    return EDGE_SCORE * max(0.0, (off_centre - (1 - EDGE_ZONE)) / EDGE_ZONE), False


def score_readings(readings: Mapping[str, float], bounds: Mapping[str, Bounds]) -> Anomaly:
    """Per-metric scores and the message's score (the worst metric). Metrics without bounds score 0."""
    metrics: dict[str, MetricAnomaly] = {}
    reasons: list[str] = []
    for name, value in readings.items():
        b = bounds.get(name)
        if b is None:
            metrics[name] = MetricAnomaly(value=value, lower=None, upper=None, score=0.0, out_of_bounds=False)
            continue
        score, out = _metric_score(value, b)
        metrics[name] = MetricAnomaly(value=value, lower=b.min, upper=b.max, score=round(score, 6), out_of_bounds=out)
        if out:
            reasons.append(f"{name}={value} is outside [{b.min}, {b.max}]{' ' + b.unit if b.unit else ''}")
    unbounded = sorted(n for n in readings if n not in bounds)
    if unbounded:
        named = ", ".join(unbounded[:MAX_NAMED])
        more = f" and {len(unbounded) - MAX_NAMED} more" if len(unbounded) > MAX_NAMED else ""
        reasons.append(f"no bounds configured for: {named}{more} (scored from the device's history alone)")
    score = max((m.score for m in metrics.values()), default=0.0)
    return Anomaly(score=score, metrics=metrics, reasons=reasons)


# ------------------------------------------------------------------------------------------------ the task
class AnomalyTask(NotAskedOfLargeModel):
    """Score an IoT message's readings against the configured bounds (the device step then rescores them against
    the device's own history: pipeline/stages/devices.py `track`, in the worker and in `minnow infer`). A large
    model settles an anomaly by classifying the message's text (ClassifyTask)."""

    name: ClassVar[str] = "anomaly"
    field: ClassVar[str] = "anomaly"

    def __init__(self, settings: Settings, bounds: Mapping[str, Bounds] | None = None) -> None:
        self._escalate_above = settings.routing.anomaly_escalate_above
        self._bounds = bounds if bounds is not None else {}

    @classmethod
    def configure(cls, settings: Settings) -> AnomalyTask:
        return cls(settings)

    @classmethod
    def load(cls, settings: Settings, encoder: Encoder) -> AnomalyTask:
        return cls(settings, load_bounds(settings.bounds_file))

    def run(self, batch: Batch) -> list[Anomaly | None]:
        return [
            score_readings(event.readings, self._bounds) if isinstance(event, IoTMessage) else None
            for event in batch.events
        ]

    def reasons(self, anomaly: Anomaly | None) -> list[str]:
        """`anomaly.high_score` when a metric scores above the line and is not a repeat of an episode already
        escalated; then `anomaly.deviation` (a spike against the device's history set that score) and
        `anomaly.level_shift` (its CUSUM did), in that order, when they apply."""
        if anomaly is None or anomaly.score <= self._escalate_above:
            return []
        fresh = [m for m in anomaly.metrics.values() if m.score > self._escalate_above and not m.repeat]
        if anomaly.metrics and not fresh:
            return []  # every metric over the line is a repeat (an anomaly without metrics keeps its score's word)
        reasons = ["anomaly.high_score"]
        if any(m.detector in ("recent", "season") for m in fresh):
            reasons.append("anomaly.deviation")
        if any(m.detector == "level_shift" for m in fresh):
            reasons.append("anomaly.level_shift")
        return reasons
