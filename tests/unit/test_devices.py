"""Per-device IoT state: rolling statistics, z-scores, tumbling windows, idle close and history-aware rescoring."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.models import InputInfo, IoTMessage, ModelInfo, Result, Scores
from pipeline.settings import Settings, WorkerSettings
from pipeline.stages.devices import (
    MAX_METRICS,
    Deviation,
    DeviceState,
    Observed,
    close_idle,
    observe,
    rescore,
)
from pipeline.stages.route import Router
from pipeline.tasks.anomaly import load_bounds, score_readings

T0 = 1_700_000_040.0  # a multiple of 60: the start of a one-minute window
NEVER_CLIP = 10**9  # min_samples that keeps clipping off, for comparisons with plain statistics
SETTINGS = Settings(worker=WorkerSettings(iot_min_samples=30, iot_zscore_threshold=4.0))


def msg(i: int, ts: float, device: str = "d-1", **readings: float) -> IoTMessage:
    return reading(i, ts, readings, device)


def reading(i: int, ts: float, readings: dict[str, float], device: str = "d-1") -> IoTMessage:
    """`msg` with readings named at run time (a `**` dict could also fill `device`, as far as mypy knows)."""
    return IoTMessage(id=f"m-{i}", device_id=device, ts=datetime.fromtimestamp(ts, UTC), readings=readings)


def feed(
    values: Sequence[float],
    *,
    state: DeviceState | None = None,
    half_life: float = 50.0,
    min_samples: int = NEVER_CLIP,
    start: float = T0,
    step: float = 1.0,
    metric: str = "t",
) -> list[Observed]:
    """Observe one reading per value, `step` seconds apart, each arriving a second after its event time."""
    out = []
    for i, value in enumerate(values):
        ts = start + i * step
        seen = observe(
            state,
            reading(i, ts, {metric: value}),
            partition=3,
            now=ts + 1,
            window_s=60.0,
            half_life=half_life,
            min_samples=min_samples,
        )
        state = seen.state
        out.append(seen)
    return out


def weighted_reference(values: Sequence[float], half_life: float) -> tuple[float, float]:
    """numpy's weighted mean and variance with the weights the half-life implies (1/n while that is larger)."""
    alpha = 1 - 2 ** (-1 / half_life)
    steps = np.maximum(alpha, 1 / np.arange(1, len(values) + 1))
    # The weight of reading k: its own step, shrunk by (1 - step) of every later reading.
    later = np.concatenate([np.cumprod((1 - steps[1:])[::-1])[::-1], [1.0]])
    weights = steps * later
    mean = float(np.average(values, weights=weights))
    return mean, float(np.average((np.asarray(values) - mean) ** 2, weights=weights))


def engine_result(message: IoTMessage, settings: Settings = SETTINGS) -> Result:
    """What the mini model returns for a message without text: bounds scores and the routing decision."""
    anomaly = score_readings(message.readings, load_bounds())
    scores = Scores(
        id=message.id,
        kind="iot",
        anomaly=anomaly,
        model=ModelInfo(name="mini", version="1", quantization="int8"),
        input=InputInfo(tokens=0, chunks=0, truncated=False),
    )
    return Router.configure(settings).result(scores)


def rescored(result: Result, zscores: Mapping[str, Deviation], settings: Settings = SETTINGS) -> Result:
    """The result as the worker routes it after the device step rescored its anomaly (the same result when
    history does not count)."""
    if result.anomaly is None:
        return result
    anomaly = rescore(result.anomaly, zscores, settings)
    if anomaly is result.anomaly:
        return result
    return Router.configure(settings).result(result.model_copy(update={"anomaly": anomaly}))


# ---------------------------------------------------------------------------------------------- statistics
def test_first_readings_are_exactly_numpy_mean_and_population_variance() -> None:
    """Until the EW weight takes over (~1.44 half-lives), the statistics are Welford's: np.mean and np.var."""
    values = list(np.random.default_rng(1).normal(20, 3, size=60))
    stats = feed(values, half_life=50)[-1].state.stats["t"]
    assert stats.n == 60
    assert stats.mean == pytest.approx(np.mean(values), rel=1e-12)
    assert stats.var == pytest.approx(np.var(values), rel=1e-10)


def test_long_sequence_matches_numpy_weighted_mean_and_variance() -> None:
    """Past the switch, mean and variance equal numpy's weighted ones with weights halving every half-life."""
    values = list(np.random.default_rng(2).normal(5, 2, size=400) + np.linspace(0, 8, 400))
    stats = feed(values, half_life=20)[-1].state.stats["t"]
    mean, var = weighted_reference(values, 20)
    assert stats.mean == pytest.approx(mean, rel=1e-9)
    assert stats.var == pytest.approx(var, rel=1e-9)


def test_zscore_is_taken_against_the_statistics_before_the_reading() -> None:
    """The reading is compared with the baseline without itself, then folded in."""
    before = feed([10.0, 12.0, 10.0, 12.0])[-1].state
    seen = observe(before, msg(9, T0 + 9, t=20.0), partition=3, now=T0 + 10, window_s=60, half_life=50, min_samples=99)
    dev = seen.zscores["t"]
    assert (dev.z, dev.mean, dev.std, dev.samples) == pytest.approx((9.0, 11.0, 1.0, 4))  # (20 - 11) / 1
    after = seen.state.stats["t"]
    assert after.n == 5 and after.mean == pytest.approx(np.mean([10, 12, 10, 12, 20]))


def test_baseline_follows_a_slow_drift() -> None:
    """A reading on a drifting trend stays near z = 0; against the all-time mean it would look wildly off."""
    rng = np.random.default_rng(3)
    values = list(20 + 0.01 * np.arange(3000) + rng.normal(0, 0.5, 3000))  # +30 over the run
    seen = feed(values, half_life=50, min_samples=30)
    on_trend = 20 + 0.01 * 3000
    stats = seen[-1].state.stats["t"]
    assert abs(stats.mean - on_trend) < 1.5  # the lag is about slope / alpha = 0.7
    assert abs((on_trend - stats.mean) / math.sqrt(stats.var)) < 3
    assert abs((on_trend - np.mean(values)) / np.std(values)) > 1.5


def test_a_spike_is_clipped_when_folded_in_so_the_next_spike_is_still_seen() -> None:
    """After min_samples, one huge reading moves the variance like a 4-sigma one instead of blowing it up."""
    calm = list(np.random.default_rng(4).normal(0, 1, 200))
    clipped = feed([*calm, 1000.0], min_samples=30)[-1].state.stats["t"]
    unclipped = feed([*calm, 1000.0])[-1].state.stats["t"]
    assert math.sqrt(clipped.var) < 1.2
    assert math.sqrt(unclipped.var) > 10


def test_non_finite_and_absurd_readings_never_touch_statistics_or_windows() -> None:
    """NaN, infinities and readings past 1e150 (which could overflow) are left to the bounds scorer."""
    state = feed([1.0, 2.0, 3.0])[-1].state
    for i, bad in enumerate([math.nan, math.inf, -math.inf, 1e308, -1e200]):
        seen = observe(
            state, msg(i, T0 + 10 + i, t=bad), partition=3, now=T0 + 20, window_s=60, half_life=50, min_samples=99
        )
        assert seen.zscores == {} and seen.state.stats == state.stats
        state = seen.state
    assert state.window is not None and state.window.messages == 8  # the messages count, their readings do not
    assert state.window.metrics["t"].model_dump() == {"count": 3, "min": 1.0, "max": 3.0, "sum": 6.0}
    assert DeviceState.model_validate_json(state.model_dump_json()) == state


def test_metrics_past_the_cap_get_no_state() -> None:
    """A device that invents metric names cannot grow its changelog record without limit."""
    readings = {f"m{i}": float(i) for i in range(MAX_METRICS + 5)}
    state = observe(
        None, reading(0, T0, readings), partition=0, now=T0, window_s=60, half_life=50, min_samples=30
    ).state
    assert sorted(state.stats) == sorted(f"m{i}" for i in range(MAX_METRICS))
    assert state.window is not None and len(state.window.metrics) == MAX_METRICS


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
    seen = observe(state, text_only, partition=3, now=T0 + 3, window_s=60, half_life=50, min_samples=30)
    assert seen.zscores == {} and seen.state.window is not None
    assert seen.state.window.messages == 2 and seen.state.window.metrics["t"].count == 1


def test_a_late_message_updates_statistics_but_no_window_and_is_counted() -> None:
    """Before the open window, or inside an emitted one: scored and learned from, never re-emitted."""
    state = feed([1.0, 2.0], start=T0 + 60)[-1].state  # window [T0+60, T0+120) open
    seen = observe(state, msg(7, T0 + 30, t=50.0), partition=3, now=T0 + 70, window_s=60, half_life=50, min_samples=9)
    assert seen.placement == "late" and seen.closed is None
    assert seen.state.window == state.window
    assert seen.state.stats["t"].n == 3 and seen.state.late == 1
    assert seen.zscores["t"].samples == 2


def test_a_message_dated_far_in_the_future_does_not_close_the_open_window() -> None:
    """A device with a wrong clock cannot make every later message late."""
    state = feed([1.0], start=T0)[-1].state
    ahead = T0 + 10 * 86_400
    seen = observe(state, msg(2, ahead, t=2.0), partition=3, now=T0 + 5, window_s=60, half_life=50, min_samples=9)
    assert seen.placement == "future" and seen.closed is None and seen.state.window == state.window
    assert seen.state.late == 1 and seen.state.stats["t"].n == 2


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
        seen = observe(state, msg(i, ts, t=value), partition=0, now=T0 + 1000, window_s=60, half_life=10, min_samples=5)
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
def trained(n: int) -> DeviceState:
    """A device whose temperature has sat at 20 +- 0.5 (in the middle of its bounds) for n readings."""
    values = list(20 + np.random.default_rng(5).normal(0, 0.5, n))
    return feed(values, min_samples=30, metric="temperature_c")[-1].state


def score_against(state: DeviceState, value: float) -> tuple[Result, Result]:
    message = msg(99, T0 + 3600, temperature_c=value)
    seen = observe(state, message, partition=3, now=T0 + 3601, window_s=60, half_life=50, min_samples=30)
    before = engine_result(message)
    return before, rescored(before, seen.zscores, SETTINGS)


def test_an_out_of_pattern_reading_inside_the_bounds_escalates_once_the_device_has_history() -> None:
    """26 °C is mid-range for the bounds (score 0, sink) but ~12 sigma for this device: escalated as a deviation."""
    before, after = score_against(trained(200), 26.0)
    assert before.route == "sink" and before.anomaly is not None and before.anomaly.score == 0.0
    assert after.anomaly is not None
    metric = after.anomaly.metrics["temperature_c"]
    assert metric.zscore is not None and metric.zscore > 8
    assert metric.score > 0.99 and after.anomaly.score == metric.score
    assert after.route == "escalate"
    assert after.escalation_reasons == ["anomaly.high_score", "anomaly.deviation"]
    assert "standard deviations from this device's mean" in after.anomaly.reasons[-1]


def test_a_cold_start_device_is_scored_on_bounds_only() -> None:
    """With fewer than MINNOW_WORKER__IOT_MIN_SAMPLES readings the result is returned as the engine made it."""
    before, after = score_against(trained(20), 26.0)
    assert after is before


def test_a_usual_reading_gets_its_zscore_and_keeps_its_route() -> None:
    """Within the device's pattern: zscore filled, score barely moves, still sink with no reasons."""
    before, after = score_against(trained(200), 20.3)
    assert after.anomaly is not None and after.anomaly.metrics["temperature_c"].zscore is not None
    assert after.anomaly.score < 0.2 and (after.route, after.escalation_reasons) == ("sink", [])
    assert before.anomaly is not None and after.anomaly.reasons == before.anomaly.reasons


def test_the_threshold_maps_to_the_escalation_score_exactly() -> None:
    """|z| = T scores MINNOW_ROUTING__ANOMALY_ESCALATE_ABOVE (not above it: sink); just beyond T escalates."""
    message = msg(1, T0, temperature_c=20.0)
    result = engine_result(message)
    at = rescored(result, {"temperature_c": Deviation(z=-4.0, mean=22, std=0.5, samples=50)}, SETTINGS)
    beyond = rescored(result, {"temperature_c": Deviation(z=-4.1, mean=22, std=0.5, samples=50)}, SETTINGS)
    assert at.anomaly is not None and at.anomaly.score == 0.8 and at.route == "sink"
    assert beyond.anomaly is not None and 0.8 < beyond.anomaly.score < 0.85 and beyond.route == "escalate"


def test_bounds_escalation_keeps_its_reason_without_deviation_when_history_agrees() -> None:
    """A reading over the bounds that is usual for the device: escalated by bounds, not tagged as deviation."""
    result = engine_result(msg(1, T0, temperature_c=90.0))
    after = rescored(result, {"temperature_c": Deviation(z=0.5, mean=89.0, std=2.0, samples=500)}, SETTINGS)
    assert after.anomaly is not None and result.anomaly is not None
    assert after.anomaly.score == result.anomaly.score
    assert (after.route, after.escalation_reasons) == ("escalate", ["anomaly.high_score"])


def test_no_readings_or_no_anomaly_passes_through_unchanged() -> None:
    empty = engine_result(IoTMessage(id="e", device_id="d", ts=datetime.fromtimestamp(T0, UTC), text="hi"))
    assert rescored(empty, {}, SETTINGS) is empty
    feed_result = empty.model_copy(update={"kind": "feed", "anomaly": None})
    zs = {"t": Deviation(z=50, mean=0, std=1, samples=1000)}
    assert rescored(feed_result, zs, SETTINGS) is feed_result


# ------------------------------------------------------------------------------------------------ contract
def test_state_round_trips_through_json_identically() -> None:
    """What goes to the changelog comes back equal, including an open window and an emitted watermark."""
    seen = feed([1.5, -2.25, 1e-7, 3.0], start=T0 + 30, step=20)
    state = seen[-1].state
    assert state.emitted_until == T0 + 60 and state.window is not None
    text = state.model_dump_json()
    again = DeviceState.model_validate_json(text)
    assert again == state and again.model_dump_json() == text
    assert len(text) < 600  # small enough to rewrite on every message


def test_the_device_core_imports_no_kafka_library() -> None:
    code = (
        "import sys, pipeline.stages.devices;"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {'faust', 'aiokafka', 'kafka'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
