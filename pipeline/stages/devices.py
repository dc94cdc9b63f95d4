"""Per-device IoT state: rolling statistics that score a reading against the device's own history, and windows.

Plain functions over frozen models, so the streaming layer only has to keep one `DeviceState` per device id (in a
table with a compacted changelog) and act on what these functions return (docs/iot.md):

- `observe` folds one message into the state: per metric, an exponentially weighted mean and variance (the
  z-score of the message is taken against the statistics *before* it is folded in), and the aggregates of the
  open tumbling window, aligned to the epoch and driven by event time (`message.ts`).
- A message for a later window closes the open one. A *late* message (event time before the open window, or
  before the end of the last window emitted) still updates the statistics and is scored, but joins no window:
  that window has been emitted, and a second, corrected record for it would be counted twice downstream. A
  message dated more than `max_ahead_s` past the wall clock is treated the same way, so one device with a wrong
  clock cannot close the real window early and make every later message late.
- `close_idle` emits the open window of a device that went silent: once the wall clock is `grace_s` past the
  window's end *and* no message has arrived for `grace_s` (a worker catching up on a backlog is not silence).
- `rescore` lifts an anomaly's bounds-based scores with the z-scores; routing decides on the new anomaly once,
  after this step (pipeline/stages/route.py).
- Non-finite (and absurdly large) readings never touch the statistics or the windows; the bounds scorer already
  scores a non-finite reading 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.models import Anomaly, IoTMessage, IoTWindow, MetricWindow
from pipeline.settings import Settings

Placement = Literal["window", "late", "future"]
# A device that invents metric names must not grow its state (rewritten to the changelog on every message)
# without limit: metrics past this many are still bounds-scored, but get no statistics and no window.
MAX_METRICS = 32
# A metric that has been constant has no spread; the standard deviation is floored at this fraction of its mean
# (or at STD_FLOOR_ABS), so a move of a tenth of a percent from a long-constant reading is not a 10^9 sigma event.
STD_FLOOR_REL = 1e-3
STD_FLOOR_ABS = 1e-9
Z_LIMIT = 1e6  # z-scores are clamped so a result always serialises as a finite JSON number
# Once a metric has `min_samples`, a reading is folded into its statistics clipped to mean +- FOLD_CLIP_Z
# standard deviations: a single spike then moves the baseline like a 4-sigma reading instead of inflating the
# variance for the next few half-lives and hiding the spikes that follow it. A real level shift still gets
# through, a few half-lives later (each clipped reading widens the variance, which widens the clip).
FOLD_CLIP_Z = 4.0
# An event time more than this past the wall clock is a wrong device clock, not a network delay.
MAX_AHEAD_S = 3600.0
# Readings beyond this magnitude are left out like NaN: squared or summed, they could overflow to infinity, and an
# infinite mean or window sum would be written to the changelog as null and fail to load back.
MAX_ABS_READING = 1e150


class _State(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MetricStats(_State):
    """Exponentially weighted mean and (population) variance of one metric's finite readings."""

    n: int = Field(ge=1, description="finite readings folded in")
    mean: float
    var: float = Field(ge=0)


class MetricAggregate(_State):
    """One metric's readings in the open window."""

    count: int = Field(ge=1)
    min: float
    max: float
    sum: float


class OpenWindow(_State):
    start: float = Field(description="Unix seconds, a multiple of the window length")
    end: float = Field(description="Unix seconds; the window holds event times in [start, end)")
    messages: int = Field(ge=1)
    metrics: dict[str, MetricAggregate] = Field(default_factory=dict)


class DeviceState(_State):
    """One device as the IoT worker holds it between messages."""

    device_id: str
    partition: int = Field(ge=0, description="the iot.in partition the device's messages arrive on")
    stats: dict[str, MetricStats] = Field(default_factory=dict, description="rolling statistics per metric")
    window: OpenWindow | None = None
    emitted_until: float | None = Field(
        default=None, description="end of the last window emitted (Unix seconds); earlier event times are late"
    )
    last_seen: float = Field(description="wall-clock seconds (Unix time) when the last message arrived")
    late: int = Field(default=0, ge=0, description="messages that joined no window: late, or dated in the future")
    offset: int = Field(
        default=-1,
        description="the input offset of the last message folded in (set by the stream layer): a redelivered "
        "message at or below it is scored but not folded in again",
    )


class Deviation(_State):
    """How far one reading is from its device's statistics before the reading was folded in."""

    z: float
    mean: float
    std: float
    samples: int = Field(description="readings the statistics rest on")


class Observed(BaseModel):
    """What observing one message did: the new state, its z-scores, and the window it closed, if any."""

    model_config = ConfigDict(frozen=True)

    state: DeviceState
    zscores: dict[str, Deviation] = Field(default_factory=dict)
    closed: IoTWindow | None = None
    placement: Placement = "window"


def observe(
    state: DeviceState | None,
    message: IoTMessage,
    *,
    partition: int,
    now: float,
    window_s: float,
    half_life: float,
    min_samples: int,
    max_ahead_s: float = MAX_AHEAD_S,
) -> Observed:
    """Fold one message into its device's state (None: the first message seen from the device)."""
    readings = {k: v for k, v in message.readings.items() if abs(v) <= MAX_ABS_READING}  # False for NaN
    old_stats = state.stats if state is not None else {}
    tracked = _tracked(old_stats, readings)
    zscores = {name: _deviation(old_stats[name], readings[name]) for name in tracked if name in old_stats}
    alpha = 1 - 2 ** (-1 / half_life)
    stats = dict(old_stats)
    for name in tracked:
        prior = old_stats.get(name)
        stats[name] = fold(prior, readings[name], alpha, clip=prior is not None and prior.n >= min_samples)

    ts = _epoch(message.ts)
    window = state.window if state is not None else None
    emitted_until = state.emitted_until if state is not None else None
    start = math.floor(ts / window_s) * window_s
    closed: IoTWindow | None = None
    placement: Placement = "window"
    if ts > now + max_ahead_s:
        placement = "future"
    elif (window is not None and ts < window.start) or (emitted_until is not None and ts < emitted_until):
        placement = "late"
    elif window is not None and ts >= window.end:
        closed = to_window(message.device_id, window)
        emitted_until = window.end
        window = None
    in_window = {name: readings[name] for name in tracked}
    if placement == "window":
        window = _add(window, in_window, start=start, end=start + window_s)
    late = state.late if state is not None else 0
    new = DeviceState(
        device_id=message.device_id,
        partition=partition,
        stats=stats,
        window=window,
        emitted_until=emitted_until,
        last_seen=now,
        late=late + (placement != "window"),
    )
    return Observed(state=new, zscores=zscores, closed=closed, placement=placement)


def close_idle(state: DeviceState, *, now: float, grace_s: float) -> tuple[DeviceState, IoTWindow | None]:
    """Emit the open window once event time can no longer reach it; otherwise the state, unchanged."""
    window = state.window
    if window is None or now < window.end + grace_s or now - state.last_seen < grace_s:
        return state, None
    closed = state.model_copy(update={"window": None, "emitted_until": window.end})
    return closed, to_window(state.device_id, window)


def to_window(device_id: str, window: OpenWindow) -> IoTWindow:
    return IoTWindow(
        device_id=device_id,
        window_start=datetime.fromtimestamp(window.start, UTC),
        window_end=datetime.fromtimestamp(window.end, UTC),
        messages=window.messages,
        metrics={
            name: MetricWindow(count=a.count, min=a.min, max=a.max, mean=a.sum / a.count)
            for name, a in window.metrics.items()
        },
    )


def fold(stats: MetricStats | None, value: float, alpha: float, *, clip: bool = False) -> MetricStats:
    """The statistics with one finite reading folded in.

    The weight of the new reading is max(alpha, 1/n). While 1/n is larger (the first ~1.44 half-lives of
    readings) this update *is* Welford's: exact mean and population variance of everything seen, so a young
    baseline is not biased towards its first reading. After that it is the exponentially weighted mean and
    variance (West 1979), whose weights halve every `half_life` readings, so the baseline follows drift.
    The switch is seamless: the weights are equal where it happens.
    """
    if stats is None:
        return MetricStats(n=1, mean=value, var=0.0)
    n = stats.n + 1
    weight = max(alpha, 1 / n)
    diff = value - stats.mean
    if clip:
        bound = FOLD_CLIP_Z * _std(stats)
        diff = min(max(diff, -bound), bound)
    mean = stats.mean + weight * diff
    var = (1 - weight) * (stats.var + weight * diff * diff)
    return MetricStats(n=n, mean=mean, var=var)


def rescore(anomaly: Anomaly, zscores: Mapping[str, Deviation], settings: Settings) -> Anomaly:
    """The anomaly with each metric's score raised by its z-score (the same object when history does not count yet).

    A metric's history score is `1 - (1 - e) ** ((z / T) ** 2)` with e = MINNOW_ROUTING__ANOMALY_ESCALATE_ABOVE
    and T = MINNOW_WORKER__IOT_ZSCORE_THRESHOLD: 0 at the mean, exactly e at |z| = T (so only |z| > T
    escalates), towards 1 beyond. It counts only once the metric has MINNOW_WORKER__IOT_MIN_SAMPLES readings.
    """
    if not anomaly.metrics:
        return anomaly
    worker = settings.worker
    escalate_above = settings.routing.anomaly_escalate_above
    metrics = dict(anomaly.metrics)
    reasons = list(anomaly.reasons)
    known = {name: dev for name, dev in zscores.items() if dev.samples >= worker.iot_min_samples}
    if not known.keys() & metrics.keys():
        return anomaly  # cold start (or no numeric readings): bounds only
    for name, metric in anomaly.metrics.items():
        dev = known.get(name)
        if dev is None:
            continue
        history = round(1 - (1 - escalate_above) ** ((dev.z / worker.iot_zscore_threshold) ** 2), 6)
        metrics[name] = metric.model_copy(update={"zscore": round(dev.z, 3), "score": max(metric.score, history)})
        if history > escalate_above:
            reasons.append(
                f"{name}={metric.value} is {dev.z:+.1f} standard deviations from this device's mean "
                f"{dev.mean:.6g} (over {dev.samples} readings)"
            )
    return Anomaly(score=max(m.score for m in metrics.values()), metrics=metrics, reasons=reasons)


def _tracked(stats: Mapping[str, MetricStats], readings: Mapping[str, float]) -> list[str]:
    """The finite readings that get statistics and window aggregates: known metrics, then new ones up to the cap."""
    room = MAX_METRICS - len(stats)
    tracked = []
    for name in readings:
        if name in stats:
            tracked.append(name)
        elif room > 0:
            tracked.append(name)
            room -= 1
    return tracked


def _std(stats: MetricStats) -> float:
    return max(math.sqrt(stats.var), STD_FLOOR_REL * abs(stats.mean), STD_FLOOR_ABS)


def _deviation(stats: MetricStats, value: float) -> Deviation:
    std = _std(stats)
    z = min(max((value - stats.mean) / std, -Z_LIMIT), Z_LIMIT)
    return Deviation(z=z, mean=stats.mean, std=std, samples=stats.n)


def _add(window: OpenWindow | None, readings: Mapping[str, float], *, start: float, end: float) -> OpenWindow:
    metrics = dict(window.metrics) if window is not None else {}
    for name, value in readings.items():
        a = metrics.get(name)
        metrics[name] = (
            MetricAggregate(count=1, min=value, max=value, sum=value)
            if a is None
            else MetricAggregate(count=a.count + 1, min=min(a.min, value), max=max(a.max, value), sum=a.sum + value)
        )
    if window is None:
        return OpenWindow(start=start, end=end, messages=1, metrics=metrics)
    return OpenWindow(start=window.start, end=window.end, messages=window.messages + 1, metrics=metrics)


def _epoch(ts: datetime) -> float:
    """Unix seconds of an event time; a time without a zone is taken as UTC (as the topic schema's examples are)."""
    return (ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)).timestamp()
