"""Per-metric history detectors: what a device's own past says about its next reading (docs/iot.md, "Detectors").

Plain functions over a small, bounded, frozen state per metric (`MetricHistory`), so the stream worker and the file
path (`minnow infer`) fold readings the same way:

- **warm-up**: until a metric has `warmup_readings` readings its history says nothing (`Signal.warming_up`); the
  reading is scored on bounds only instead of being judged against a baseline too short to know it.
- **recent level, robust**: the median and the MAD of the last `recent_readings` readings. One spike barely moves
  a median, so it cannot hide the spikes that follow (an average and a standard deviation would).
- **season**: the median and MAD of the last `season_readings` readings that fell in the same hour of the day (or
  of the week). A reading counts as a spike only when it is far from *both* its recent level and what this hour
  usually reads: the daily rise of a cycle is far from the recent level but usual for the hour.
- **record gate**: a spike must also beat `record_ratio` x the largest |z| of the last `record_days` UTC days
  (`peaks`, one number a day), so a series with a big burst every day escalates only a burst bigger than those.
- **level shifts and trend changes**: a two-sided CUSUM of the reading's distance from the recent median, in
  robust standard deviations, each step less a slack `cusum_slack`; it trips past `cusum_limit`, then restarts.
  A shift too small to be a spike adds up reading after reading until it trips, long before the median follows.
- **scale** (off by default): readings can be judged on a square-root or log scale (`scale`), where a count's noise
  no longer grows with its level; the history keeps the scaled readings and reports its baseline in the metric's
  units.
- **departures** (on by default): a reading far from its hour's usual (`departure_threshold`) although near its
  recent level — the daily rise that did not come, a night that reads like a day — which the season rule above
  lets pass. They have their own record gate (`season_peaks`, ratio `departure_ratio`).
- **clusters** (off by default): readings far from the metric's own longer baseline (the median and MAD of its last
  `cluster_readings` readings, no season) counted over the last `cluster_window_s` seconds; the count must beat
  `cluster_ratio` x the largest count of the days before today (`cluster_peaks`; with none, one such reading is
  enough). It judges how *often* a metric leaves its usual, not by how much: spikes that come more often than
  on any recent day, each no taller than the last fortnight's largest, which the record gate above lets pass.
- **bursts** (off by default): `burst_readings` readings in a row on one side of the baseline, each past
  `burst_threshold`; the burst's size is the smallest |z| of the run. It has its own record gate (`burst_peaks`), and
  a burst that beats its bar enters that record *at the bar*, so one episode does not raise the bar for two weeks.

A history score is `1 - (1 - e) ** ((x / limit) ** 2)` for the spike's z (limit: `threshold`, or the record gate's
bar when higher), for the burst (limit: `burst_threshold`, or its record gate's bar), for the departure (limit:
`departure_threshold`, or its record gate's bar), for the cluster's count (limit: its bar) and for the CUSUM (limit
`cusum_limit`): 0 at the baseline, exactly the escalation score e at the limit, towards 1 beyond, so routing
compares one number with the bounds score (pipeline/stages/devices.py `rescore`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.settings import DetectorSettings, Scale

Detector = Literal["recent", "season", "level_shift"]
# 1.4826 * MAD estimates the standard deviation of normal data; 1.2533 * mean absolute deviation does too, and is
# not 0 when more than half of the readings are equal (a counter that is mostly 0), where the MAD is.
MAD_TO_STD = 1.4826
MEAN_ABS_TO_STD = 1.2533
# The spread is floored at this fraction of the level (or at SPREAD_FLOOR_ABS): a metric that has been constant
# has none, and a move of a tenth of a percent from it is not a 10^9-sigma event.
SPREAD_FLOOR_REL = 1e-3
SPREAD_FLOOR_ABS = 1e-9
Z_LIMIT = 1e6  # z-scores are clamped so a result always serialises as a finite JSON number


class MetricHistory(BaseModel):
    """One metric's recent readings, its seasonal profile and its CUSUM, as the device state keeps them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    readings: int = Field(default=0, ge=0, description="finite readings folded in")
    scale: Scale = Field(default="none", description="the scale `recent` and `season` hold the readings on")
    recent: list[float] = Field(default_factory=list, description="the last readings, oldest first (bounded)")
    season: dict[str, list[float]] = Field(
        default_factory=dict, description="seasonal bin (hour of day or of week) -> its last readings (bounded)"
    )
    peaks: dict[str, float] = Field(
        default_factory=dict,
        description="UTC day number -> the largest |z| of that day (the last `record_days` days): the surprise to beat",
    )
    cusum_up: float = Field(default=0.0, ge=0)
    cusum_down: float = Field(default=0.0, ge=0)
    last_z: list[float] = Field(
        default_factory=list, description="the z of the last `burst_readings` - 1 judged readings (bursts only)"
    )
    burst_peaks: dict[str, float] = Field(
        default_factory=dict,
        description="UTC day number -> the largest burst of that day, at most its bar (the last `record_days` days)",
    )
    season_peaks: dict[str, float] = Field(
        default_factory=dict,
        description="UTC day number -> the largest |z| from the hour's usual that day (departures only; the last "
        "`record_days` days)",
    )
    cluster_recent: list[float] = Field(
        default_factory=list, description="the last `cluster_readings` readings, oldest first (clusters only)"
    )
    cluster_times: list[float] = Field(
        default_factory=list,
        description="event times of the readings past `cluster_threshold` in the last `cluster_window_s` (bounded)",
    )
    cluster_peaks: dict[str, float] = Field(
        default_factory=dict,
        description="UTC day number -> the largest cluster count of that day (the last `record_days` days)",
    )
    last_alert: float | None = Field(
        default=None, description="event time (Unix seconds) this metric last escalated: the start of its cooldown"
    )


class Signal(BaseModel):
    """What one metric's history says about one reading, taken before the reading is folded in."""

    model_config = ConfigDict(frozen=True)

    warming_up: bool
    readings: int = Field(description="readings the history rests on")
    score: float = Field(default=0.0, ge=0, le=1, description="the history score (0 while warming up)")
    z: float | None = Field(default=None, description="robust z of the reading: the smaller of recent and season")
    expected: float | None = Field(default=None, description="the baseline the z is taken from")
    detector: Detector | None = Field(default=None, description="the detector that gave the score")
    burst: int = Field(default=0, ge=0, description="readings in a row the deviation held, when a burst gave the score")
    cluster: int = Field(
        default=0, ge=0, description="readings past cluster_threshold within cluster_window_s, when a cluster scored"
    )


def season_bin(ts: float, season: str) -> str | None:
    """The reading's seasonal bin: hour of the day (`day`) or of the week (`week`, Monday 0), in UTC."""
    if season == "none":
        return None
    when = datetime.fromtimestamp(ts, UTC)
    return str(when.hour if season == "day" else when.weekday() * 24 + when.hour)


def history_score(x: float, limit: float, escalate_above: float) -> float:
    """0 at 0, exactly `escalate_above` at |x| = limit, towards 1 beyond."""
    return round(1.0 - float((1.0 - escalate_above) ** ((x / limit) ** 2)), 6)


@dataclass(frozen=True)
class _Measured:
    """What one reading is against the history before it, computed once for the signal and for the fold."""

    level: float
    z: float
    expected: float
    detector: Detector
    up: float
    down: float
    burst: float  # the smallest |z| of the last burst_readings readings when all lie on one side; 0 otherwise
    season_z: float  # the z against the hour's usual alone; 0 when the bin is not usable yet
    season_level: float
    cluster: int  # readings past cluster_threshold in the window, this one included; 0 when this one is not


CLUSTER_TIMES = 256  # the event times a cluster keeps: its state stays bounded whatever the reading rate


def step(
    history: MetricHistory | None, value: float, ts: float, cfg: DetectorSettings, escalate_above: float
) -> tuple[Signal, MetricHistory]:
    """The signal of one finite reading against the history before it, and the history with the reading in."""
    history, value = _on_scale(history, cfg), to_scale(value, cfg.scale)
    measured = _measure(history, value, ts, cfg)
    return _signal(history, measured, ts, cfg, escalate_above), _fold(history, value, ts, cfg, measured)


def judge(
    history: MetricHistory | None, value: float, ts: float, cfg: DetectorSettings, escalate_above: float
) -> Signal:
    """The signal of one finite reading against the history before it."""
    history, value = _on_scale(history, cfg), to_scale(value, cfg.scale)
    return _signal(history, _measure(history, value, ts, cfg), ts, cfg, escalate_above)


def fold(history: MetricHistory | None, value: float, ts: float, cfg: DetectorSettings) -> MetricHistory:
    """The history with one finite reading folded in (the CUSUM restarts once it has tripped)."""
    history, value = _on_scale(history, cfg), to_scale(value, cfg.scale)
    return _fold(history, value, ts, cfg, _measure(history, value, ts, cfg))


def to_scale(value: float, scale: Scale) -> float:
    """A reading on the scale it is judged on; signed, so a negative reading keeps its order."""
    if scale == "sqrt":
        return math.copysign(math.sqrt(abs(value)), value)
    if scale == "log":
        return math.copysign(math.log1p(abs(value)), value)
    return value


def from_scale(value: float, scale: Scale) -> float:
    """The inverse of `to_scale`: a baseline back in the metric's units."""
    if scale == "sqrt":
        return math.copysign(value * value, value)
    if scale == "log":
        return math.copysign(math.expm1(abs(value)), value)
    return value


def _on_scale(history: MetricHistory | None, cfg: DetectorSettings) -> MetricHistory | None:
    """The history, or a fresh one (warming up again) when it holds readings on another scale than `cfg.scale`:
    a median of square roots is no baseline for a raw reading. Only the cooldown carries over."""
    if history is None or history.scale == cfg.scale:
        return history
    return MetricHistory(scale=cfg.scale, last_alert=history.last_alert)


def warming_up(history: MetricHistory, ts: float, cfg: DetectorSettings) -> bool:
    """Too few readings, or (when the record gate is on) too few days of record, to judge a reading."""
    if history.readings < cfg.warmup_readings or not history.recent:
        return True
    if cfg.record_days == 0:
        return False
    return _days_before(history.peaks, ts) < cfg.warmup_days


def _days_before(peaks: dict[str, float], ts: float) -> int:
    """Days of a record before the day of `ts`."""
    today = _day(ts)
    return sum(1 for day in peaks if int(day) < today)


def _measure(history: MetricHistory | None, value: float, ts: float, cfg: DetectorSettings) -> _Measured | None:
    """None until the metric has `warmup_readings`: nothing is measured (nor recorded) before."""
    if history is None or history.readings < cfg.warmup_readings or not history.recent:
        return None
    level, spread = robust(history.recent)
    detector: Detector = "recent"
    z, expected = _z(value, level, spread), level
    bin_key = season_bin(ts, cfg.season)
    past = history.season.get(bin_key) if bin_key is not None else None
    s_z, s_level = 0.0, level
    if past is not None and len(past) >= cfg.season_min_readings:
        s_level, s_spread = robust(past)
        s_z = _z(value, s_level, max(s_spread, spread * cfg.season_spread_floor))
        if abs(s_z) < abs(z):  # far from both, or not a spike: the nearer baseline speaks
            z, expected, detector = s_z, s_level, "season"
    # A CUSUM step is clipped at the spike threshold: one spike is the spike detector's business, not a level shift.
    step_z = max(-cfg.threshold, min(cfg.threshold, (value - level) / spread))
    up = max(0.0, history.cusum_up + step_z - cfg.cusum_slack)
    down = max(0.0, history.cusum_down - step_z - cfg.cusum_slack)
    return _Measured(
        level=level,
        z=z,
        expected=expected,
        detector=detector,
        up=up,
        down=down,
        burst=_burst(history, z, cfg),
        season_z=s_z,
        season_level=s_level,
        cluster=_cluster(history, value, ts, cfg),
    )


def _cluster(history: MetricHistory, value: float, ts: float, cfg: DetectorSettings) -> int:
    """Readings past the cluster threshold within the window that ends at this one; 0 unless this one is past it."""
    if cfg.cluster_threshold == 0 or len(history.cluster_recent) < cfg.cluster_readings:
        return 0
    level, spread = robust(history.cluster_recent)
    if abs(_z(value, level, spread)) < cfg.cluster_threshold:
        return 0
    return 1 + sum(1 for t in history.cluster_times if ts - t < cfg.cluster_window_s)


def _cluster_bar(history: MetricHistory, ts: float, cfg: DetectorSettings) -> float:
    """ratio x the largest count of the days before today: today's own count must not raise the bar it is judged
    against (a cluster grows one reading at a time). With none, one reading past the threshold is enough."""
    today = str(_day(ts))
    earlier = {day: peak for day, peak in history.cluster_peaks.items() if day != today}
    return max(0.5, cfg.cluster_ratio * _record(earlier, ts, cfg))


def _burst(history: MetricHistory, z: float, cfg: DetectorSettings) -> float:
    """The burst that ends at this reading: the smallest |z| of the run when it all lies on one side, else 0."""
    if cfg.burst_readings < 2 or len(history.last_z) < cfg.burst_readings - 1:
        return 0.0
    run = [*history.last_z[-(cfg.burst_readings - 1) :], z]
    if all(v > 0 for v in run) or all(v < 0 for v in run):
        return min(abs(v) for v in run)
    return 0.0


def _burst_bar(history: MetricHistory, ts: float, cfg: DetectorSettings) -> float:
    return max(cfg.burst_threshold, cfg.record_ratio * _record(history.burst_peaks, ts, cfg))


def _departure(history: MetricHistory, m: _Measured, ts: float, cfg: DetectorSettings, escalate_above: float) -> float:
    """The departure score: the z from the hour's usual against max(threshold, ratio x its own record). Judged once
    its record spans `warmup_days` earlier days (the bins fill later than the recent ring)."""
    if cfg.departure_threshold == 0 or m.season_z == 0:
        return 0.0
    if cfg.record_days > 0 and _days_before(history.season_peaks, ts) < cfg.warmup_days:
        return 0.0
    bar = max(cfg.departure_threshold, cfg.departure_ratio * _record(history.season_peaks, ts, cfg))
    return history_score(m.season_z, bar, escalate_above)


def _signal(
    history: MetricHistory | None, m: _Measured | None, ts: float, cfg: DetectorSettings, escalate_above: float
) -> Signal:
    seen = history.readings if history is not None else 0
    if history is None or m is None or warming_up(history, ts, cfg):
        return Signal(warming_up=True, readings=seen)
    limit = max(cfg.threshold, cfg.record_ratio * _record(history.peaks, ts, cfg))
    spike = history_score(m.z, limit, escalate_above)
    shift = history_score(max(m.up, m.down), cfg.cusum_limit, escalate_above) if cfg.cusum_limit > 0 else 0.0
    burst = history_score(m.burst, _burst_bar(history, ts, cfg), escalate_above) if m.burst > 0 else 0.0
    departure = _departure(history, m, ts, cfg, escalate_above)
    cluster = history_score(m.cluster, _cluster_bar(history, ts, cfg), escalate_above) if m.cluster else 0.0
    # The strongest detector speaks for the reading; on a tie the earlier in this list: (score, z, expected level on
    # the detector's scale, detector, readings in a row, readings in the cluster).
    candidates: list[tuple[float, float, float, Detector, int, int]] = [
        (spike, m.z, m.expected, m.detector, 0, 0),
        (burst, m.z, m.expected, m.detector, cfg.burst_readings, 0),
        (shift, m.z, m.level, "level_shift", 0, 0),
        (departure, m.season_z, m.season_level, "season", 0, 0),
        (cluster, m.z, m.expected, m.detector, 0, m.cluster),
    ]
    score, z, expected, detector, burst_readings, cluster_readings = max(candidates, key=lambda c: c[0])
    return Signal(
        warming_up=False,
        readings=seen,
        score=score,
        z=round(z, 3),
        expected=from_scale(expected, cfg.scale),
        detector=detector,
        burst=burst_readings,
        cluster=cluster_readings,
    )


def _fold(
    history: MetricHistory | None, value: float, ts: float, cfg: DetectorSettings, m: _Measured | None
) -> MetricHistory:
    if history is None:
        history = MetricHistory()
    up, down = history.cusum_up, history.cusum_down
    peaks, last_z, burst_peaks = history.peaks, history.last_z, history.burst_peaks
    season_peaks = history.season_peaks
    if m is not None:
        up, down = m.up, m.down
        if cfg.cusum_limit > 0 and max(up, down) > cfg.cusum_limit:
            up = down = 0.0
        if cfg.burst_readings >= 2:
            last_z = [*last_z[-(cfg.burst_readings - 2) :], m.z] if cfg.burst_readings > 2 else [m.z]
        if cfg.record_days > 0:
            today = _day(ts)
            peaks = _with_peak(peaks, today, abs(m.z), cfg)
            if cfg.burst_readings >= 2:
                # A burst that beat its bar enters the record at the bar: the next episode must beat this one's bar
                # by record_ratio again, not the height of a fault that was already escalated.
                burst_peaks = _with_peak(burst_peaks, today, min(m.burst, _burst_bar(history, ts, cfg)), cfg)
            if cfg.departure_threshold > 0 and m.season_z != 0:
                season_peaks = _with_peak(season_peaks, today, abs(m.season_z), cfg)
    recent = [*history.recent[-(cfg.recent_readings - 1) :], value] if cfg.recent_readings > 1 else [value]
    cluster_recent, cluster_times, cluster_peaks = _fold_cluster(history, value, ts, cfg, m)
    season = history.season
    bin_key = season_bin(ts, cfg.season)
    if bin_key is not None:
        season = dict(season)
        season[bin_key] = [*season.get(bin_key, [])[-(cfg.season_readings - 1) :], value]
    # Built without validation: every field comes from a validated history or from arithmetic on finite readings.
    return MetricHistory.model_construct(
        readings=history.readings + 1,
        scale=cfg.scale,
        recent=recent,
        season=season,
        peaks=peaks,
        cusum_up=up,
        cusum_down=down,
        last_z=last_z,
        burst_peaks=burst_peaks,
        season_peaks=season_peaks,
        cluster_recent=cluster_recent,
        cluster_times=cluster_times,
        cluster_peaks=cluster_peaks,
        last_alert=history.last_alert,
    )


def _fold_cluster(
    history: MetricHistory, value: float, ts: float, cfg: DetectorSettings, m: _Measured | None
) -> tuple[list[float], list[float], dict[str, float]]:
    """The cluster detector's baseline ring, event times and daily counts with this reading in; all empty when the
    detector is off, so a metric that does not use it carries none of its state."""
    if cfg.cluster_threshold == 0:
        return [], [], {}
    ring = [*history.cluster_recent[-(cfg.cluster_readings - 1) :], value]
    if m is None or not m.cluster:
        return ring, history.cluster_times, history.cluster_peaks
    kept = [t for t in history.cluster_times if ts - t < cfg.cluster_window_s]
    peaks = _with_peak(history.cluster_peaks, _day(ts), float(m.cluster), cfg) if cfg.record_days > 0 else {}
    return ring, [*kept[-(CLUSTER_TIMES - 1) :], ts], peaks


def _record(peaks: dict[str, float], ts: float, cfg: DetectorSettings) -> float:
    """The largest daily peak of the last `record_days` days (today's so far included); 0 when the gate is off."""
    if cfg.record_days == 0:
        return 0.0
    today = _day(ts)
    return max((peak for day, peak in peaks.items() if today - int(day) <= cfg.record_days), default=0.0)


def _with_peak(peaks: dict[str, float], today: int, size: float, cfg: DetectorSettings) -> dict[str, float]:
    """A record of daily peaks with `size` in today's, trimmed to the last `record_days` days (a new dict)."""
    kept = {day: peak for day, peak in peaks.items() if today - int(day) <= cfg.record_days}
    kept[str(today)] = max(kept.get(str(today), 0.0), size)
    return kept


def _day(ts: float) -> int:
    return int(ts // 86_400)


def robust(values: Sequence[float]) -> tuple[float, float]:
    """Median and robust standard deviation (MAD-based, never below the mean-absolute-deviation estimate's floor)."""
    ordered = sorted(values)
    level = _median(ordered)
    deviations = sorted(abs(v - level) for v in ordered)
    spread = max(
        MAD_TO_STD * _median(deviations),
        MEAN_ABS_TO_STD * sum(deviations) / len(deviations),
        SPREAD_FLOOR_REL * abs(level),
        SPREAD_FLOOR_ABS,
    )
    return level, spread


def _z(value: float, level: float, spread: float) -> float:
    return min(max((value - level) / spread, -Z_LIMIT), Z_LIMIT)


def _median(ordered: Sequence[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
