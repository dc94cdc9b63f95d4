"""Per-device IoT state: each metric's own history (pipeline/stages/history.py), alert cooldowns, and windows.

Plain functions over frozen models, so the stream worker (pipeline/stream/devices.py) and the file path
(`minnow infer`, pipeline/commands/infer.py) keep one `DeviceState` per device id and fold a device's messages, in
input order, through the same `track` (docs/iot.md):

- `observe` folds one message into the state: per metric, the history detectors' signal for the reading (taken
  against the history *before* it), then the reading folded into the history, and into the open tumbling window,
  aligned to the epoch and driven by event time (`message.ts`).
- A message for a later window closes the open one. A *late* message (event time before the open window, or
  before the end of the last window emitted) still updates the history and is scored, but joins no window:
  that window has been emitted, and a second, corrected record for it would be counted twice downstream. A
  message dated more than `max_ahead_s` past the wall clock is treated the same way, so one device with a wrong
  clock cannot close the real window early and make every later message late.
- `rescore` lifts an anomaly's bounds-based scores with the history scores; `cooldown` then marks the anomalies of a
  device+metric that escalated within `cooldown_s` as repeats (one escalation per episode); `bounded` keeps the
  detail small. Routing decides once, after this step (pipeline/stages/route.py).
- `close_idle` emits the open window of a device that went silent: once the wall clock is `grace_s` past the
  window's end *and* no message has arrived for `grace_s` (a worker catching up on a backlog is not silence).
- Non-finite (and absurdly large) readings never touch the history or the windows; the bounds scorer already
  scores a non-finite reading 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.models import Anomaly, AnyEvent, ErrorRecord, IoTMessage, IoTWindow, MetricWindow, Scores
from pipeline.settings import DetectorSettings, IoTSettings, Settings
from pipeline.stages.history import MetricHistory, Signal, step

Placement = Literal["window", "late", "future"]
# A device that invents metric names must not grow its state (rewritten to the changelog on every batch) without
# limit: metrics past this many are still bounds-scored, but get no history and no window.
MAX_METRICS = 32
# What a result says about its readings stays small whatever a message carries: the most anomalous metrics
# (ties in input order) and a count of the rest; reasons past MAX_REASONS are counted in one last line.
MAX_DETAIL_METRICS = 16
MAX_REASONS = 16
# An event time more than this past the wall clock is a wrong device clock, not a network delay.
MAX_AHEAD_S = 3600.0
# Readings beyond this magnitude are left out like NaN: squared or summed, they could overflow to infinity, and an
# infinite value would be written to the changelog as null and fail to load back.
MAX_ABS_READING = 1e150


class _State(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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
    """One device as the IoT worker (or `minnow infer`) holds it between messages."""

    device_id: str
    partition: int = Field(ge=0, description="the iot.in partition the device's messages arrive on")
    history: dict[str, MetricHistory] = Field(default_factory=dict, description="each metric's history")
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

    @model_validator(mode="before")
    @classmethod
    def _old_statistics(cls, data: Any) -> Any:
        # States written before the history detectors kept a rolling mean per metric (`stats`): such a state still
        # loads, and its metrics warm up again.
        if isinstance(data, dict) and "stats" in data:
            data = {k: v for k, v in data.items() if k != "stats"}
        return data


class Observed(BaseModel):
    """What observing one message did: the new state, its metrics' signals, and the window it closed, if any."""

    model_config = ConfigDict(frozen=True)

    state: DeviceState
    signals: dict[str, Signal] = Field(default_factory=dict)
    closed: IoTWindow | None = None
    placement: Placement = "window"


class Tracked(BaseModel):
    """One message through its device's state: the new state, the anomaly as routing should see it, the window."""

    model_config = ConfigDict(frozen=True)

    state: DeviceState
    anomaly: Anomaly | None
    closed: IoTWindow | None = None
    placement: Placement = "window"


class Detectors:
    """Each metric's detector settings, resolved once per metric name (the overrides over the defaults)."""

    def __init__(self, settings: IoTSettings) -> None:
        self._settings = settings
        self._resolved: dict[str, DetectorSettings] = {}

    def __call__(self, metric: str) -> DetectorSettings:
        cfg = self._resolved.get(metric)
        if cfg is None:
            cfg = self._resolved[metric] = self._settings.detector(metric)
        return cfg


def track(
    state: DeviceState | None,
    message: IoTMessage,
    anomaly: Anomaly | None,
    *,
    partition: int,
    now: float,
    settings: Settings,
    detectors: Detectors | None = None,
) -> Tracked:
    """The one step both paths run per IoT message: observe, rescore with history, cooldown, bound the detail."""
    detectors = detectors or Detectors(settings.iot)
    escalate_above = settings.routing.anomaly_escalate_above
    seen = observe(
        state,
        message,
        partition=partition,
        now=now,
        window_s=settings.worker.iot_window_s,
        detectors=detectors,
        escalate_above=escalate_above,
    )
    if anomaly is None:
        return Tracked(state=seen.state, anomaly=None, closed=seen.closed, placement=seen.placement)
    lifted = rescore(anomaly, seen.signals, escalate_above, detectors)
    new_state, routed = cooldown(seen.state, message, lifted, escalate_above, detectors)
    return Tracked(state=new_state, anomaly=bounded(routed), closed=seen.closed, placement=seen.placement)


def observe(
    state: DeviceState | None,
    message: IoTMessage,
    *,
    partition: int,
    now: float,
    window_s: float,
    detectors: Detectors,
    escalate_above: float,
    max_ahead_s: float = MAX_AHEAD_S,
) -> Observed:
    """Fold one message into its device's state (None: the first message seen from the device)."""
    readings = {k: v for k, v in message.readings.items() if abs(v) <= MAX_ABS_READING}  # False for NaN
    old = state.history if state is not None else {}
    tracked = _tracked(old, readings)
    ts = _epoch(message.ts)
    signals: dict[str, Signal] = {}
    history = dict(old)
    for name in tracked:
        signals[name], history[name] = step(old.get(name), readings[name], ts, detectors(name), escalate_above)

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
        history=history,
        window=window,
        emitted_until=emitted_until,
        last_seen=now,
        late=late + (placement != "window"),
    )
    return Observed(state=new, signals=signals, closed=closed, placement=placement)


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


def rescore(anomaly: Anomaly, signals: Mapping[str, Signal], escalate_above: float, detectors: Detectors) -> Anomaly:
    """The anomaly with each metric's score raised by its history score (the same object when there is no signal).

    A metric whose history is still warming up keeps its bounds score and says so (`warming_up`, and a reason
    `anomaly.warming_up: ...` when it has no bounds either: it is not judged at all yet).
    """
    if not anomaly.metrics or not signals.keys() & anomaly.metrics.keys():
        return anomaly
    metrics = dict(anomaly.metrics)
    reasons = list(anomaly.reasons)
    for name, metric in anomaly.metrics.items():
        signal = signals.get(name)
        if signal is None:
            continue
        if signal.warming_up:
            metrics[name] = metric.model_copy(update={"warming_up": True})
            if metric.lower is None and metric.upper is None:
                reasons.append(
                    f"anomaly.warming_up: {name} has {signal.readings} of {detectors(name).warmup_readings} "
                    "readings; not judged until then"
                )
            continue
        update: dict[str, Any] = {"zscore": signal.z, "expected": signal.expected}
        if signal.score > metric.score:
            update |= {"score": signal.score, "detector": signal.detector}
            if signal.score > escalate_above:
                reasons.append(_explain(name, metric.value, signal, detectors(name)))
        metrics[name] = metric.model_copy(update=update)
    return Anomaly(score=max(m.score for m in metrics.values()), metrics=metrics, reasons=reasons)


def cooldown(
    state: DeviceState, message: IoTMessage, anomaly: Anomaly, escalate_above: float, detectors: Detectors
) -> tuple[DeviceState, Anomaly]:
    """Mark anomalies within their device+metric's cooldown as repeats; start the cooldown of those that escalate.

    Measured in event time (`ts`), so a replayed file escalates the same readings as the stream did. Only metrics
    with a history have a cooldown (a device's first MAX_METRICS metrics).
    """
    ts = _epoch(message.ts)
    history = dict(state.history)
    metrics = dict(anomaly.metrics)
    for name, metric in anomaly.metrics.items():
        past = history.get(name)
        if metric.score <= escalate_above or past is None:
            continue
        last = past.last_alert
        if last is not None and abs(ts - last) < detectors(name).cooldown_s:
            metrics[name] = metric.model_copy(update={"repeat": True})
        else:
            history[name] = past.model_copy(update={"last_alert": ts})
    new_state = state.model_copy(update={"history": history}) if history != state.history else state
    return new_state, anomaly.model_copy(update={"metrics": metrics}) if metrics != anomaly.metrics else anomaly


def bounded(anomaly: Anomaly) -> Anomaly:
    """At most MAX_DETAIL_METRICS metrics (the highest scores, ties in input order) and MAX_REASONS reasons."""
    metrics, omitted = anomaly.metrics, anomaly.omitted
    if len(metrics) > MAX_DETAIL_METRICS:
        ranked = sorted(metrics, key=lambda name: -metrics[name].score)  # stable: ties keep input order
        keep = set(ranked[:MAX_DETAIL_METRICS])
        omitted += len(metrics) - len(keep)
        metrics = {name: m for name, m in metrics.items() if name in keep}
    reasons = anomaly.reasons
    if len(reasons) > MAX_REASONS:
        reasons = [*reasons[: MAX_REASONS - 1], f"... and {len(reasons) - MAX_REASONS + 1} more reasons"]
    if metrics is anomaly.metrics and reasons is anomaly.reasons:
        return anomaly
    return anomaly.model_copy(update={"metrics": metrics, "reasons": reasons, "omitted": omitted})


def _explain(name: str, value: float, signal: Signal, cfg: DetectorSettings) -> str:
    if signal.detector == "level_shift":
        return (
            f"{name}={value} continues a level shift away from this device's median {signal.expected:.6g} "
            f"(over {signal.readings} readings)"
        )
    baseline = "this hour's usual" if signal.detector == "season" else "this device's recent median"
    on = f" (on a {cfg.scale} scale)" if cfg.scale != "none" else ""
    said = f"{name}={value} is {signal.z:+.1f} robust standard deviations{on} from {baseline} {signal.expected:.6g}"
    if signal.burst:
        return f"{said}, the last of {signal.burst} readings in a row this far out"
    if signal.cluster:
        record = f", more than {cfg.cluster_ratio:g}x as many as on any of the last {cfg.record_days} days"
        return (
            f"{said}; {signal.cluster} {'reading' if signal.cluster == 1 else 'readings'} within "
            f"{cfg.cluster_window_s / 3600:g} h {'was' if signal.cluster == 1 else 'were'} past "
            f"{cfg.cluster_threshold:g} robust standard deviations of its last {cfg.cluster_readings} readings"
            + (record if cfg.record_days else "")
        )
    return said


def _tracked(history: Mapping[str, MetricHistory], readings: Mapping[str, float]) -> list[str]:
    """The finite readings that get history and window aggregates: known metrics, then new ones up to the cap."""
    room = MAX_METRICS - len(history)
    tracked = []
    for name in readings:
        if name in history:
            tracked.append(name)
        elif room > 0:
            tracked.append(name)
            room -= 1
    return tracked


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


class DeviceBook:
    """Every device's state in memory, for callers that read events from a file (`minnow infer`, evaluation).

    Each IoT message goes through `track`, in input order, exactly as the stream worker's step sends it
    (pipeline/stream/devices.py), so replaying a device's messages from a file escalates what streaming them did.
    """

    def __init__(self, settings: Settings, *, now: float) -> None:
        self._settings = settings
        self._detectors = Detectors(settings.iot)
        self._now = now  # one wall clock for the run: it only tells a wrong device clock (far future) apart
        self.states: dict[str, DeviceState] = {}
        self.windows: list[IoTWindow] = []

    def step(self, events: Sequence[AnyEvent], scores: Sequence[Scores | ErrorRecord]) -> list[Scores | ErrorRecord]:
        """The batch's scores with every IoT anomaly rescored against its device's history; windows are collected."""
        out: list[Scores | ErrorRecord] = []
        for event, outcome in zip(events, scores, strict=True):
            if not isinstance(event, IoTMessage):
                out.append(outcome)
                continue
            anomaly = outcome.anomaly if isinstance(outcome, Scores) else None
            seen = track(
                self.states.get(event.device_id),
                event,
                anomaly,
                partition=0,
                now=self._now,
                settings=self._settings,
                detectors=self._detectors,
            )
            self.states[event.device_id] = seen.state
            if seen.closed is not None:
                self.windows.append(seen.closed)
            out.append(with_anomaly(outcome, seen.anomaly))
        return out


def with_anomaly(outcome: Scores | ErrorRecord, anomaly: Anomaly | None) -> Scores | ErrorRecord:
    """The scores with the tracked anomaly (the same object when tracking changed nothing)."""
    if isinstance(outcome, ErrorRecord) or anomaly is outcome.anomaly:
        return outcome
    return outcome.model_copy(update={"anomaly": anomaly})
