"""Per-device IoT state: history folding, tumbling windows, idle close, rescoring, cooldown and bounded detail."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.models import InputInfo, IoTMessage, ModelInfo, Result, Scores
from pipeline.settings import IoTSettings, MetricDetectorSettings, Settings
from pipeline.stages.devices import (
    MAX_DETAIL_METRICS,
    MAX_METRICS,
    Detectors,
    DeviceState,
    Observed,
    close_idle,
    observe,
    track,
)
from pipeline.stages.route import Router
from pipeline.tasks.anomaly import load_bounds, score_readings

T0 = 1_700_000_040.0  # a multiple of 60: the start of a one-minute window
# Plain detectors for the window and routing tests: a short warm-up, no season, no record gate, no cooldown.
SETTINGS = Settings(
    iot=IoTSettings(warmup_readings=30, season="none", record_days=0, cooldown_s=0, threshold=4.0, cusum_limit=0)
)


def msg(i: int, ts: float, device: str = "d-1", **readings: float) -> IoTMessage:
    return reading(i, ts, readings, device)


def reading(i: int, ts: float, readings: dict[str, float], device: str = "d-1") -> IoTMessage:
    """`msg` with readings named at run time (a `**` dict could also fill `device`, as far as mypy knows)."""
    return IoTMessage(id=f"m-{i}", device_id=device, ts=datetime.fromtimestamp(ts, UTC), readings=readings)


def see(state: DeviceState | None, message: IoTMessage, *, now: float, cfg: Settings = SETTINGS) -> Observed:
    return observe(
        state,
        message,
        partition=3,
        now=now,
        window_s=60.0,
        detectors=Detectors(cfg.iot),
        escalate_above=cfg.routing.anomaly_escalate_above,
    )


def feed(
    values: Sequence[float],
    *,
    state: DeviceState | None = None,
    start: float = T0,
    step: float = 1.0,
    metric: str = "t",
    cfg: Settings = SETTINGS,
) -> list[Observed]:
    """Observe one reading per value, `step` seconds apart, each arriving a second after its event time."""
    out = []
    for i, value in enumerate(values):
        ts = start + i * step
        seen = see(state, reading(i, ts, {metric: value}), now=ts + 1, cfg=cfg)
        state = seen.state
        out.append(seen)
    return out


def engine_scores(message: IoTMessage) -> Scores:
    """What the mini model returns for a message without text: the bounds-scored anomaly."""
    return Scores(
        id=message.id,
        kind="iot",
        anomaly=score_readings(message.readings, load_bounds()),
        model=ModelInfo(name="mini", version="1", quantization="int8"),
        input=InputInfo(tokens=0, chunks=0, truncated=False),
    )


def tracked(state: DeviceState | None, message: IoTMessage, cfg: Settings = SETTINGS) -> tuple[DeviceState, Result]:
    """The message through `track` (as the worker and `minnow infer` run it), then routed."""
    scores = engine_scores(message)
    seen = track(state, message, scores.anomaly, partition=3, now=message.ts.timestamp() + 1, settings=cfg)
    return seen.state, Router.configure(cfg).result(scores.model_copy(update={"anomaly": seen.anomaly}))


# ------------------------------------------------------------------------------------------------ history
def test_history_is_folded_before_nothing_else_and_taken_before_the_reading() -> None:
    """The reading is judged against the history without itself, then folded in (recent ring bounded)."""
    values = [10.0, 12.0] * 20
    state = feed(values)[-1].state
    seen = see(state, msg(99, T0 + 99, t=20.0), now=T0 + 100)
    signal = seen.signals["t"]
    assert signal.warming_up is False and signal.readings == 40
    assert signal.expected == 11.0 and signal.z is not None and signal.z > 4
    assert seen.state.history["t"].readings == 41 and seen.state.history["t"].recent[-1] == 20.0


def test_non_finite_and_absurd_readings_never_touch_history_or_windows() -> None:
    """NaN, infinities and readings past 1e150 (which could overflow) are left to the bounds scorer."""
    state = feed([1.0, 2.0, 3.0])[-1].state
    for i, bad in enumerate([math.nan, math.inf, -math.inf, 1e308, -1e200]):
        seen = see(state, msg(i, T0 + 10 + i, t=bad), now=T0 + 20)
        assert seen.signals == {} and seen.state.history == state.history
        state = seen.state
    assert state.window is not None and state.window.messages == 8  # the messages count, their readings do not
    assert state.window.metrics["t"].model_dump() == {"count": 3, "min": 1.0, "max": 3.0, "sum": 6.0}
    assert DeviceState.model_validate_json(state.model_dump_json()) == state


def test_metrics_past_the_cap_get_no_state() -> None:
    """A device that invents metric names cannot grow its changelog record without limit."""
    readings = {f"m{i}": float(i) for i in range(MAX_METRICS + 5)}
    state = see(None, reading(0, T0, readings), now=T0).state
    assert sorted(state.history) == sorted(f"m{i}" for i in range(MAX_METRICS))
    assert state.window is not None and len(state.window.metrics) == MAX_METRICS


def test_a_state_written_before_the_detectors_still_loads_and_warms_up_again() -> None:
    """An old changelog record with rolling `stats` loads; its metrics start a fresh history."""
    old = '{"device_id":"d","partition":0,"stats":{"t":{"n":5,"mean":1.0,"var":0.5}},"last_seen":1.0}'
    state = DeviceState.model_validate_json(old)
    assert state.history == {} and state.device_id == "d"


# ------------------------------------------------------------------------------------------------- windows
def test_windows_are_epoch_aligned_and_close_on_the_first_message_of_a_later_window() -> None:
    """Event times T0+5..T0+59 form one window [T0, T0+60); the message at T0+60 closes it with the right numbers."""
    seen = feed([4.0, 1.0, 7.0, 2.0], start=T0 + 5, step=18)  # T0+5, +23, +41, +59
    assert [s.closed for s in seen] == [None] * 4
    closing = feed([9.0], state=seen[-1].state, start=T0 + 60)[0]
    window = closing.closed
    assert window is not None
    assert (window.window_start.timestamp(), window.window_end.timestamp()) == (T0, T0 + 60)
    assert window.device_id == "d-1" and window.messages == 4
    metric = window.metrics["t"]
    assert (metric.count, metric.min, metric.max, metric.mean) == (4, 1.0, 7.0, 3.5)
    assert closing.state.window is not None and closing.state.window.start == T0 + 60
    assert closing.state.window.messages == 1 and closing.state.emitted_until == T0 + 60


def test_a_message_without_readings_counts_in_the_window_but_has_no_metric() -> None:
    state = feed([1.0], start=T0)[-1].state
    text_only = IoTMessage(id="x", device_id="d-1", ts=datetime.fromtimestamp(T0 + 2, UTC), text="door open")
    seen = see(state, text_only, now=T0 + 3)
    assert seen.signals == {} and seen.state.window is not None
    assert seen.state.window.messages == 2 and seen.state.window.metrics["t"].count == 1


def test_a_late_message_updates_history_but_no_window_and_is_counted() -> None:
    """Before the open window, or inside an emitted one: scored and learned from, never re-emitted."""
    state = feed([1.0, 2.0], start=T0 + 60)[-1].state  # window [T0+60, T0+120) open
    seen = see(state, msg(7, T0 + 30, t=50.0), now=T0 + 70)
    assert seen.placement == "late" and seen.closed is None
    assert seen.state.window == state.window
    assert seen.state.history["t"].readings == 3 and seen.state.late == 1
    assert seen.signals["t"].readings == 2


def test_a_message_dated_far_in_the_future_does_not_close_the_open_window() -> None:
    """A device with a wrong clock cannot make every later message late."""
    state = feed([1.0], start=T0)[-1].state
    ahead = T0 + 10 * 86_400
    seen = see(state, msg(2, ahead, t=2.0), now=T0 + 5)
    assert seen.placement == "future" and seen.closed is None and seen.state.window == state.window
    assert seen.state.late == 1 and seen.state.history["t"].readings == 2


def test_idle_close_waits_for_both_the_window_end_plus_grace_and_silence() -> None:
    """Not before end + grace; not while messages still arrive (a backlog); then exactly once."""
    state = feed([3.0, 5.0], start=T0 + 10, step=20)[-1].state  # last arrival at T0+31
    assert close_idle(state, now=T0 + 60 + 29, grace_s=30) == (state, None)  # window end + grace not reached
    busy = state.model_copy(update={"last_seen": T0 + 80})
    assert close_idle(busy, now=T0 + 95, grace_s=30) == (busy, None)  # a message arrived 15 s ago
    closed_state, window = close_idle(state, now=T0 + 90, grace_s=30)
    assert window is not None and window.messages == 2 and window.metrics["t"].mean == 4.0
    assert closed_state.window is None and closed_state.emitted_until == T0 + 60
    assert close_idle(closed_state, now=T0 + 500, grace_s=30) == (closed_state, None)
    straggler = feed([9.0], state=closed_state, start=T0 + 50)[0]
    assert straggler.placement == "late" and straggler.state.window is None
    later = feed([9.0], state=closed_state, start=T0 + 200)[0]
    assert later.placement == "window" and later.state.window is not None and later.state.window.start == T0 + 180


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(st.floats(-200, 400), st.floats(-1e6, 1e6, allow_nan=False)),
        min_size=1,
        max_size=40,
    )
)
def test_every_windowed_message_is_in_exactly_one_window_with_the_right_aggregates(
    events: list[tuple[float, float]],
) -> None:
    """Property: for any event times (out of order too), windowed messages regroup exactly by epoch window."""
    state: DeviceState | None = None
    windows = []
    windowed: dict[float, list[float]] = {}
    for i, (offset, value) in enumerate(events):
        ts = T0 + offset
        seen = see(state, msg(i, ts, t=value), now=T0 + 1000)
        state = seen.state
        if seen.closed:
            windows.append(seen.closed)
        if seen.placement == "window":
            windowed.setdefault(math.floor(ts / 60) * 60, []).append(value)
    assert state is not None
    final, last = close_idle(state, now=T0 + 10_000, grace_s=30)
    windows += [last] if last else []
    assert final.late == len(events) - sum(len(v) for v in windowed.values())
    starts = [w.window_start.timestamp() for w in windows]
    assert starts == sorted(set(starts)) == sorted(windowed)
    for w in windows:
        values = windowed[w.window_start.timestamp()]
        metric = w.metrics["t"]
        assert (w.messages, metric.count) == (len(values), len(values))
        assert (metric.min, metric.max) == (min(values), max(values))
        assert metric.mean == pytest.approx(sum(values) / len(values), rel=1e-9, abs=1e-6)


# ------------------------------------------------------------------------------------------------ rescoring
def trained(n: int, cfg: Settings = SETTINGS) -> DeviceState:
    """A device whose temperature has sat at 20 +- 0.5 (in the middle of its bounds) for n readings, a minute apart."""
    state: DeviceState | None = None
    for i, value in enumerate(20 + np.random.default_rng(5).normal(0, 0.5, n)):
        state, _ = tracked(state, msg(i, T0 + 60 * i, temperature_c=float(value)), cfg)
    assert state is not None
    return state


def test_an_out_of_pattern_reading_inside_the_bounds_escalates_once_the_device_has_history() -> None:
    """26 °C is mid-range for the bounds (score 0, sink) but ~12 robust sigma for this device: a deviation."""
    message = msg(999, T0 + 60 * 999, temperature_c=26.0)
    before = Router.configure(SETTINGS).result(engine_scores(message))
    _, after = tracked(trained(200), message)
    assert before.route == "sink" and before.anomaly is not None and before.anomaly.score == 0.0
    assert after.anomaly is not None
    metric = after.anomaly.metrics["temperature_c"]
    assert metric.zscore is not None and metric.zscore > 8 and metric.detector == "recent"
    assert metric.expected == pytest.approx(20, abs=0.2)
    assert metric.score > 0.99 and after.anomaly.score == metric.score
    assert after.route == "escalate"
    assert after.escalation_reasons == ["anomaly.high_score", "anomaly.deviation"]
    assert "robust standard deviations from this device's recent median" in after.anomaly.reasons[-1]


def test_a_burst_escalates_through_track_as_a_deviation_and_says_it_is_a_run() -> None:
    """With MINNOW_IOT__BURST_READINGS=3, three readings in a row at ~3.6 robust sigma (no single one past the
    spike threshold) escalate on the third through `track`, tagged anomaly.deviation, and the reason names the run."""
    cfg = SETTINGS.model_copy(update={"iot": SETTINGS.iot.model_copy(update={"burst_readings": 3})})
    state = trained(200, cfg)
    routes = []
    for i in range(3):
        state, after = tracked(state, msg(300 + i, T0 + 60 * (300 + i), temperature_c=21.8), cfg)
        routes.append(after.route)
    assert routes == ["sink", "sink", "escalate"]
    assert after.escalation_reasons == ["anomaly.high_score", "anomaly.deviation"]
    assert after.anomaly is not None and after.anomaly.reasons[-1].endswith(
        "the last of 3 readings in a row this far out"
    )


def test_a_count_on_a_sqrt_scale_escalates_through_track_with_its_baseline_in_units() -> None:
    """With a per-metric `scale: sqrt`, a surge of a count escalates through `track`; `expected` is the count's
    median in requests (not its square root), and the reason says which scale the z was measured on."""
    cfg = SETTINGS.model_copy(
        update={"iot": SETTINGS.iot.model_copy(update={"metrics": {"requests": MetricDetectorSettings(scale="sqrt")}})}
    )
    state: DeviceState | None = None
    counts = np.random.default_rng(11).poisson(100, 200)
    for i, count in enumerate(counts):
        state, _ = tracked(state, msg(i, T0 + 60 * i, requests=float(count)), cfg)
    assert state is not None and state.history["requests"].scale == "sqrt"
    _, after = tracked(state, msg(500, T0 + 60 * 500, requests=400.0), cfg)
    assert after.route == "escalate" and after.anomaly is not None
    metric = after.anomaly.metrics["requests"]
    # 96 readings: the median of the square roots is the midpoint of two middle ones, so it is the count's median
    # only to within their gap.
    assert metric.expected == pytest.approx(float(np.median(counts[-96:])), abs=0.5)
    assert "robust standard deviations (on a sqrt scale) from this device's recent median" in after.anomaly.reasons[-1]


def test_a_departure_from_the_daily_pattern_escalates_through_track_as_a_deviation() -> None:
    """With MINNOW_IOT__DEPARTURE_THRESHOLD set, a noon reading at the night level (the daily rise that did not
    come) escalates through `track`, tagged anomaly.deviation, its reason measured against this hour's usual."""
    iot = SETTINGS.iot.model_copy(
        update={"season": "day", "season_min_readings": 4, "warmup_readings": 50, "departure_threshold": 6.0}
    )
    cfg = SETTINGS.model_copy(update={"iot": iot})
    start = 1_700_006_400.0  # 00:00 UTC
    rng = np.random.default_rng(12)
    state: DeviceState | None = None
    for i in range(6 * 144):  # six days, one reading every 10 minutes: 10 at night, 30 from 12:00 to 14:00
        ts = start + 600 * i
        value = (30.0 if 12 <= (ts % 86_400) / 3600 < 14 else 10.0) + float(rng.normal(0, 0.3))
        state, _ = tracked(state, msg(i, ts, level=value), cfg)
    noon = start + 6 * 86_400 + 12 * 3600
    _, after = tracked(state, msg(9999, noon, level=10.0), cfg)
    assert after.route == "escalate" and after.anomaly is not None
    assert after.escalation_reasons == ["anomaly.high_score", "anomaly.deviation"]
    metric = after.anomaly.metrics["level"]
    assert metric.detector == "season" and metric.zscore is not None and metric.zscore < -6
    assert "from this hour's usual 30" in after.anomaly.reasons[-1]
    _, off = tracked(
        state,
        msg(9999, noon, level=10.0),
        SETTINGS.model_copy(update={"iot": iot.model_copy(update={"departure_threshold": 0.0})}),
    )
    assert off.route == "sink"


def test_a_warming_up_metric_is_scored_on_bounds_only_and_says_so() -> None:
    """Before warmup_readings the history says nothing: bounds score, `warming_up`, no z-score, not escalated."""
    _, after = tracked(trained(20), msg(999, T0 + 60 * 999, temperature_c=26.0))
    assert after.anomaly is not None
    metric = after.anomaly.metrics["temperature_c"]
    assert metric.warming_up and metric.zscore is None and metric.score == 0.0 and after.route == "sink"


def test_a_metric_without_bounds_warming_up_gets_the_warming_up_reason() -> None:
    """No bounds and no history yet: nothing judges it, and the result says `anomaly.warming_up` (not escalated)."""
    _, after = tracked(None, msg(1, T0, rpm=1200.0))
    assert after.anomaly is not None and after.route == "sink"
    assert any(r.startswith("anomaly.warming_up: rpm has 0 of 30 readings") for r in after.anomaly.reasons)


def test_a_usual_reading_gets_its_zscore_and_keeps_its_route() -> None:
    """Within the device's pattern: zscore filled, score barely moves, still sink with no reasons."""
    _, after = tracked(trained(200), msg(999, T0 + 60 * 999, temperature_c=20.3))
    assert after.anomaly is not None and after.anomaly.metrics["temperature_c"].zscore is not None
    assert after.anomaly.metrics["temperature_c"].detector == "recent"  # it set the (small) score
    assert after.anomaly.score < 0.2 and (after.route, after.escalation_reasons) == ("sink", [])


def test_bounds_escalation_keeps_its_reason_without_deviation_when_history_agrees() -> None:
    """A device that has always read ~90 (over the bounds): escalated by bounds, not tagged as a deviation."""
    state: DeviceState | None = None
    for i, value in enumerate(90 + np.random.default_rng(6).normal(0, 0.5, 60)):
        state, _ = tracked(state, msg(i, T0 + 60 * i, temperature_c=float(value)))
    _, after = tracked(state, msg(99, T0 + 60 * 99, temperature_c=90.2))
    assert after.anomaly is not None and after.anomaly.metrics["temperature_c"].detector is None
    assert (after.route, after.escalation_reasons) == ("escalate", ["anomaly.high_score"])


def test_cooldown_escalates_once_per_episode_then_again_after_it() -> None:
    """With a cooldown, the second anomalous reading of the same device+metric is a repeat (sink); past the
    cooldown (event time) the next one escalates again. Other metrics have their own cooldown."""
    cfg = SETTINGS.model_copy(update={"iot": SETTINGS.iot.model_copy(update={"cooldown_s": 3600.0})})
    state = trained(200, cfg)
    t = T0 + 60 * 300
    state, first = tracked(state, msg(1, t, temperature_c=30.0), cfg)
    state, second = tracked(state, msg(2, t + 60, temperature_c=30.0), cfg)
    state, later = tracked(state, msg(3, t + 3700, temperature_c=35.0), cfg)
    assert first.route == "escalate" and second.route == "sink" and later.route == "escalate"
    assert second.anomaly is not None and second.anomaly.metrics["temperature_c"].repeat
    assert second.anomaly.score > 0.8  # the score stays honest; only the escalation is held back
    assert state.history["temperature_c"].last_alert == t + 3700


def test_anomaly_detail_stays_bounded_whatever_the_number_of_readings() -> None:
    """A message with 500 readings: at most MAX_DETAIL_METRICS metrics in the result (the most anomalous kept),
    the rest counted in `omitted`, reasons capped, and the serialised anomaly stays small."""
    readings = {f"m{i:03d}": 1.0 for i in range(500)} | {"temperature_c": 95.0}
    _, after = tracked(None, reading(1, T0, readings))
    assert after.anomaly is not None
    assert len(after.anomaly.metrics) == MAX_DETAIL_METRICS and after.anomaly.omitted == 501 - MAX_DETAIL_METRICS
    assert "temperature_c" in after.anomaly.metrics and after.route == "escalate"
    assert len(after.anomaly.reasons) <= 16 and after.anomaly.reasons[-1].endswith("more reasons")
    assert len(after.anomaly.model_dump_json()) < 6000


def test_no_readings_or_no_anomaly_passes_through_unchanged() -> None:
    """A text-only message keeps its engine result; an event without an anomaly is not touched."""
    message = IoTMessage(id="e", device_id="d", ts=datetime.fromtimestamp(T0, UTC), text="hi")
    scores = engine_scores(message)
    seen = track(None, message, scores.anomaly, partition=0, now=T0, settings=SETTINGS)
    assert seen.anomaly is scores.anomaly
    assert track(None, message, None, partition=0, now=T0, settings=SETTINGS).anomaly is None


# ------------------------------------------------------------------------------------------------ contract
def test_state_round_trips_through_json_identically() -> None:
    """What goes to the changelog comes back equal, including an open window and an emitted watermark."""
    seen = feed([1.5, -2.25, 1e-7, 3.0], start=T0 + 30, step=20)
    state = seen[-1].state
    assert state.emitted_until == T0 + 60 and state.window is not None
    text = state.model_dump_json()
    again = DeviceState.model_validate_json(text)
    assert again == state and again.model_dump_json() == text
    assert len(text) < 1200  # small enough to rewrite on every batch


def test_the_device_core_imports_no_kafka_library() -> None:
    code = (
        "import sys, pipeline.stages.devices;"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {'faust', 'aiokafka', 'kafka'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_cluster_escalates_through_track_and_says_how_many_and_over_what() -> None:
    """With MINNOW_IOT__CLUSTER_THRESHOLD=6 (and spikes unable to speak), a reading far from the device's own longer
    baseline escalates through `track` when no such reading came in the last record_days, tagged
    anomaly.deviation; the reason says how many readings within the window were past the threshold."""
    iot = SETTINGS.iot.model_copy(
        update={"cluster_threshold": 6.0, "cluster_readings": 100, "threshold": 1e6, "record_days": 14}
    )
    cfg = SETTINGS.model_copy(update={"iot": iot.model_copy(update={"warmup_days": 0})})
    state = trained(200, cfg)
    _, after = tracked(state, msg(300, T0 + 60 * 300, temperature_c=26.0), cfg)
    assert after.route == "escalate" and after.anomaly is not None
    assert after.escalation_reasons == ["anomaly.high_score", "anomaly.deviation"]
    assert after.anomaly.reasons[-1].endswith(
        "1 reading within 6 h was past 6 robust standard deviations of its last 100 readings, more than 1.5x as many "
        "as on any of the last 14 days"
    )
