"""Per-metric history detectors: robust level, seasonal profile, record gate, CUSUM level shifts, warm-up, bounds."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.settings import DetectorSettings, IoTSettings, Settings
from pipeline.stages.history import (
    CLUSTER_TIMES,
    MetricHistory,
    Signal,
    fold,
    from_scale,
    history_score,
    judge,
    robust,
    season_bin,
    step,
    to_scale,
)

E = 0.8  # MINNOW_ROUTING__ANOMALY_ESCALATE_ABOVE
HOUR = 3600.0
DAY = 86_400.0
T0 = 1_700_006_400.0  # 2023-11-15 00:00 UTC, a Wednesday
PLAIN = DetectorSettings(warmup_readings=20, season="none", record_days=0, cusum_limit=0, threshold=4.0)


def run(values: list[float], cfg: DetectorSettings, *, step: float = 60.0, start: float = T0) -> MetricHistory:
    history: MetricHistory | None = None
    for i, value in enumerate(values):
        history = fold(history, value, start + i * step, cfg)
    assert history is not None
    return history


def signal_after(values: list[float], value: float, cfg: DetectorSettings, *, step: float = 60.0) -> Signal:
    history = run(values, cfg, step=step)
    return judge(history, value, T0 + len(values) * step, cfg, E)


def test_robust_level_and_spread_are_median_and_scaled_mad() -> None:
    """On normal data the spread estimates the standard deviation; one wild value moves neither much."""
    values = list(np.random.default_rng(1).normal(50, 2, 2000))
    level, spread = robust(values)
    assert level == pytest.approx(50, abs=0.2) and spread == pytest.approx(2, rel=0.1)
    level2, spread2 = robust([*values, 1e9])
    assert level2 == pytest.approx(level, abs=0.01) and spread2 < 1e6  # the mean-abs floor moves, the median not
    assert robust([5.0] * 10) == pytest.approx((5.0, 5e-3))  # constant: floored at 0.1% of the level


def test_the_history_score_is_the_escalation_score_exactly_at_the_limit() -> None:
    """0 at the baseline, exactly e at the limit (still sink: only above escalates), above it beyond."""
    assert history_score(0, 4, E) == 0.0
    assert history_score(4, 4, E) == pytest.approx(E)
    assert history_score(-4.2, 4, E) > E


def test_a_spike_is_found_and_does_not_hide_the_next_one() -> None:
    """Median and MAD barely move after one spike, so an equal spike right after it still scores above e."""
    calm = list(np.random.default_rng(2).normal(10, 1, 100))
    first = signal_after(calm, 30.0, PLAIN)
    second = signal_after([*calm, 30.0], 30.0, PLAIN)
    assert first.score > E and first.detector == "recent" and first.z is not None and first.z > 10
    assert second.score > E


def test_warm_up_says_so_instead_of_guessing() -> None:
    """Before warmup_readings the signal is `warming_up`, with no score and no z."""
    signal = signal_after([1.0] * 10, 100.0, PLAIN)
    assert (signal.warming_up, signal.score, signal.z, signal.readings) == (True, 0.0, None, 10)


def test_the_recent_ring_is_bounded() -> None:
    """However many readings, the recent ring holds recent_readings and each season bin season_readings."""
    cfg = DetectorSettings(recent_readings=10, season="day", season_readings=3, season_min_readings=2)
    history = run([float(i) for i in range(500)], cfg, step=HOUR / 2)
    assert history.recent == [float(i) for i in range(490, 500)]
    assert len(history.season) == 24 and all(len(v) <= 3 for v in history.season.values())


def test_season_bins_are_utc_hours_of_day_or_week() -> None:
    assert season_bin(T0 + 5 * HOUR + 59, "day") == "5"
    assert season_bin(T0 + 5 * HOUR, "week") == str(2 * 24 + 5)  # Wednesday
    assert season_bin(T0, "none") is None


def daily(days: int, step: float = 600.0, noise: float = 0.3) -> list[float]:
    """A strong daily cycle: 10 at night, 30 between 12:00 and 14:00 UTC, small noise; one reading every 10 min."""
    rng = np.random.default_rng(3)
    out = []
    for i in range(int(days * DAY / step)):
        hour = ((T0 + i * step) % DAY) / HOUR
        out.append((30.0 if 12 <= hour < 14 else 10.0) + float(rng.normal(0, noise)))
    return out


def test_the_seasonal_profile_knows_the_daily_rise_is_usual() -> None:
    """At 12:00 the reading jumps to 30: far from the recent level, but what this hour always reads. With the
    seasonal profile it is not a spike; without it, it is. A 60 at 03:00 is a spike either way."""
    values = daily(6) + daily(1)[:72]  # six days, then up to 12:00 of the seventh
    seasonal = DetectorSettings(warmup_readings=50, season="day", season_min_readings=4, record_days=0)
    flat = seasonal.model_copy(update={"season": "none"})
    at_noon = signal_after(values, 30.0, seasonal, step=600)
    assert at_noon.detector == "season" and at_noon.score < 0.2
    assert signal_after(values, 30.0, flat, step=600).score > E
    night = values[:-54]  # 03:00
    assert signal_after(night, 60.0, seasonal, step=600).score > E


def test_the_record_gate_lets_only_the_largest_surprise_of_recent_days_escalate() -> None:
    """A series with a 12-sigma spike every day: with the record gate on, today's usual spike is no news (below
    e), a spike twice as large is; before warmup_days of history the signal is warming up."""
    rng = np.random.default_rng(4)
    values = list(rng.normal(100, 1, 24 * 10))
    for day in range(10):
        values[day * 24 + 12] = 112.0  # hourly readings: one 12-sigma spike at noon
    cfg = DetectorSettings(warmup_readings=20, season="none", record_days=7, warmup_days=3, threshold=4.0)
    assert signal_after(values, 112.0, PLAIN, step=HOUR).score > E  # no gate: every day's spike escalates
    assert signal_after(values, 112.0, cfg, step=HOUR).score < E + 0.01
    assert signal_after(values, 130.0, cfg, step=HOUR).score > E
    assert signal_after(values[:48], 130.0, cfg, step=HOUR).warming_up  # two days: still warming up


def test_cusum_finds_a_level_shift_too_small_to_be_a_spike() -> None:
    """A shift of 2.5 sigma is never a 4-sigma spike, but the CUSUM trips on it within a few readings."""
    rng = np.random.default_rng(5)
    calm = list(rng.normal(0, 1, 200))
    cfg = PLAIN.model_copy(update={"cusum_limit": 8.0, "cusum_slack": 0.5})
    history = run(calm, cfg)
    tripped_at = None
    for i, value in enumerate(rng.normal(2.5, 1, 20)):
        ts = T0 + (200 + i) * 60
        signal = judge(history, float(value), ts, cfg, E)
        if signal.score > E:
            tripped_at = i
            assert signal.detector == "level_shift"
            break
        history = fold(history, float(value), ts, cfg)
    assert tripped_at is not None and tripped_at < 10
    off = signal_after(calm, 2.5, PLAIN)
    assert off.score < E  # the same reading, spike detector only


def test_per_metric_overrides_take_the_defaults_for_what_they_leave_unset() -> None:
    """MINNOW_IOT__METRICS overrides one metric; the others and its unset fields keep the defaults."""
    iot = IoTSettings.model_validate({"threshold": 5.0, "metrics": {"rpm": {"season": "week", "threshold": 9.0}}})
    assert iot.detector("rpm").threshold == 9.0 and iot.detector("rpm").season == "week"
    assert iot.detector("rpm").recent_readings == iot.recent_readings
    assert iot.detector("temperature_c").threshold == 5.0 and iot.detector("temperature_c").season == "day"


def test_iot_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """MINNOW_IOT__THRESHOLD and the JSON MINNOW_IOT__METRICS are read; an override breaking a rule is refused."""
    monkeypatch.setenv("MINNOW_IOT__THRESHOLD", "7.5")
    monkeypatch.setenv("MINNOW_IOT__METRICS", '{"rpm": {"cooldown_s": 0}}')
    settings = Settings()
    assert settings.iot.threshold == 7.5 and settings.iot.detector("rpm").cooldown_s == 0
    with pytest.raises(ValueError, match="season_min_readings"):
        IoTSettings.model_validate({"metrics": {"rpm": {"season_min_readings": 99}}})


def test_the_old_worker_variables_still_start_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """MINNOW_WORKER__IOT_HALF_LIFE (and its two siblings) are no longer read, but do not stop a deployment."""
    monkeypatch.setenv("MINNOW_WORKER__IOT_HALF_LIFE", "50")
    monkeypatch.setenv("MINNOW_WORKER__IOT_ZSCORE_THRESHOLD", "4")
    assert Settings().worker.iot_window_s == 60.0


BURST = PLAIN.model_copy(update={"burst_readings": 3, "burst_threshold": 3.0})


def test_a_burst_of_moderate_readings_escalates_where_no_single_one_is_a_spike() -> None:
    """Three readings in a row 3.5 sigma above the median: none is a 4-sigma spike, but the third completes a
    burst and scores above e (the reason says it is a run); with the burst detector off nothing escalates."""
    rng = np.random.default_rng(6)
    calm = list(rng.normal(0, 1, 200))
    level, spread = robust(calm[-PLAIN.recent_readings :])
    high = level + 3.5 * spread
    first, second = signal_after(calm, high, BURST), signal_after([*calm, high], high, BURST)
    third = signal_after([*calm, high, high], high, BURST)
    assert first.score < E and second.score < E
    assert third.score > E and third.burst == 3 and third.detector == "recent"
    assert signal_after([*calm, high, high], high, PLAIN).score < E


def test_a_burst_must_stay_on_one_side_of_the_baseline() -> None:
    """Readings that swing 3.5 sigma above, below, above are noise, not a burst: the run must keep its sign."""
    rng = np.random.default_rng(7)
    calm = list(rng.normal(0, 1, 200))
    level, spread = robust(calm[-PLAIN.recent_readings :])
    up, down = level + 3.5 * spread, level - 3.5 * spread
    assert signal_after([*calm, up, down], up, BURST).score < E


def test_bursts_have_their_own_record_gate_and_an_escalated_burst_enters_it_at_the_bar() -> None:
    """With the record gate on, the daily three-hour burst is no news after the first days; a burst five times as
    high is. The escalated burst enters the record at its bar (1.2 x the old record), not at its own height, so a
    later burst need not beat the fault itself. The burst state stays bounded (k - 1 z's, record_days + 1 days)."""
    rng = np.random.default_rng(8)
    cfg = BURST.model_copy(update={"record_days": 7, "warmup_days": 3, "threshold": 50.0})  # spikes can't speak
    values = list(rng.normal(100, 1, 24 * 10))
    for day in range(10):
        values[day * 24 + 12 : day * 24 + 15] = [106.0, 106.0, 106.0]
    history = run(values, cfg, step=HOUR)
    record = max(history.burst_peaks.values())
    assert record > cfg.burst_threshold and len(history.burst_peaks) <= 8 and len(history.last_z) == 2
    ts = T0 + len(values) * HOUR
    usual = history
    for i in range(3):
        signal = judge(usual, 106.0, ts + i * HOUR, cfg, E)
        usual = fold(usual, 106.0, ts + i * HOUR, cfg)
    assert signal.score < E
    big = history
    for i in range(3):
        signal = judge(big, 130.0, ts + i * HOUR, cfg, E)
        big = fold(big, 130.0, ts + i * HOUR, cfg)
    assert signal.score > E and signal.burst == 3
    assert max(big.burst_peaks.values()) == pytest.approx(1.2 * record, rel=1e-6)


def test_burst_readings_of_one_is_refused() -> None:
    """One reading in a row is the spike detector's job: burst_readings must be 0 (off) or at least 2."""
    with pytest.raises(ValueError, match="burst_readings"):
        DetectorSettings(burst_readings=1)
    assert DetectorSettings().burst_readings == 0  # off by default


def test_departures_are_on_by_default_at_12_sigma_and_ratio_1_5() -> None:
    """The defaults chosen on the NAB tune split (docs/iot.md): departures on at 12 robust sigma from the hour's
    usual, 1.5 x their own record; 0 turns them off, per metric too."""
    cfg = DetectorSettings()
    assert (cfg.departure_threshold, cfg.departure_ratio) == (12.0, 1.5)
    iot = IoTSettings.model_validate({"metrics": {"rpm": {"departure_threshold": 0}}})
    assert iot.detector("rpm").departure_threshold == 0 and iot.detector("t").departure_threshold == 12.0


def test_scales_are_signed_monotone_and_invertible() -> None:
    """sqrt and log keep the order of any finite reading (negative ones too) and come back to it exactly enough;
    `none` is the identity. A reading at the history's limit (1e150) stays finite on every scale."""
    values = [-1e150, -50.0, -1.0, -0.25, 0.0, 0.25, 1.0, 4.0, 50.0, 1e6, 1e150]
    for scale in ("none", "sqrt", "log"):
        scaled = [to_scale(v, scale) for v in values]
        assert scaled == sorted(scaled) and len(set(scaled)) == len(values)
        for v, u in zip(values, scaled, strict=True):
            assert from_scale(u, scale) == pytest.approx(v, rel=1e-9, abs=1e-12)
    assert to_scale(16.0, "sqrt") == 4.0 and to_scale(-16.0, "sqrt") == -4.0 and to_scale(7.0, "none") == 7.0


def test_a_metric_on_a_scale_is_judged_on_it_and_reports_its_baseline_in_units() -> None:
    """With scale sqrt the z is the robust z of the reading's square root against the square roots the history
    holds, and `expected` is the median back in the metric's units (a monotone scale keeps the median)."""
    cfg = PLAIN.model_copy(update={"scale": "sqrt", "recent_readings": 21})
    counts = [float(c) for c in np.random.default_rng(10).poisson(40, 60)]
    history = run(counts, cfg)
    assert history.scale == "sqrt" and history.recent == [to_scale(c, "sqrt") for c in counts[-21:]]
    signal = judge(history, 90.0, T0 + 60 * 60.0, cfg, E)
    level, spread = robust(history.recent)
    assert signal.z == pytest.approx((90.0**0.5 - level) / spread, abs=1e-3)
    assert signal.expected == pytest.approx(float(np.median(counts[-21:])), rel=1e-9)


def test_a_log_scale_stops_multiplicative_noise_paging_and_still_sees_a_tenfold_surge() -> None:
    """Readings with multiplicative noise (100 x lognormal, sigma 0.3): on the raw scale the long right tail puts
    some ordinary readings past 5 robust sigma; on the log scale none is, and a tenfold surge still escalates."""
    values = [float(v) for v in 100 * np.exp(np.random.default_rng(9).normal(0, 0.3, 3000))]
    raw = DetectorSettings(warmup_readings=96, season="none", record_days=0, threshold=5.0)
    logged = raw.model_copy(update={"scale": "log"})

    def escalations(cfg: DetectorSettings) -> int:
        history: MetricHistory | None = None
        count = 0
        for i, value in enumerate(values):
            signal, history = step(history, value, T0 + i * 60.0, cfg, E)
            count += signal.score > E
        return count

    assert escalations(raw) >= 2
    assert escalations(logged) == 0
    assert signal_after(values, 1000.0, logged).score > E


def test_changing_a_metrics_scale_restarts_its_history_but_keeps_its_cooldown() -> None:
    """A history kept on one scale is no baseline on another: after `scale` changes the metric warms up again,
    and the start of its cooldown (last_alert) carries over, so the change itself pages no one twice."""
    history = run([10.0] * 50, PLAIN).model_copy(update={"last_alert": T0})
    moved = PLAIN.model_copy(update={"scale": "log"})
    signal, after = step(history, 10.0, T0 + 50 * 60.0, moved, E)
    assert signal.warming_up and signal.readings == 0
    assert (after.readings, after.scale, after.last_alert) == (1, "log", T0)
    assert after.recent == [to_scale(10.0, "log")]


def test_scale_is_a_per_metric_setting() -> None:
    """MINNOW_IOT__METRICS can put one metric on a scale and leave the others raw; an unknown scale is refused."""
    iot = IoTSettings.model_validate({"metrics": {"requests": {"scale": "sqrt"}}})
    assert iot.detector("requests").scale == "sqrt" and iot.detector("temperature_c").scale == "none"
    with pytest.raises(ValueError, match="scale"):
        IoTSettings.model_validate({"scale": "cube"})


def test_a_departure_from_the_daily_pattern_escalates_where_the_season_rule_lets_it_pass() -> None:
    """At 12:00 the daily rise to 30 does not come: 10 is the recent level, so the spike detector (the nearer of
    recent and season) says nothing. With departures on, the reading is far from its hour's usual and escalates,
    `detector: season`, z negative, `expected` the hour's usual; a usual noon reading does not."""
    values = daily(6) + daily(1)[:72]  # six days, then up to 12:00 of the seventh
    seasonal = DetectorSettings(
        warmup_readings=50, season="day", season_min_readings=4, record_days=0, departure_threshold=0.0
    )
    departures = seasonal.model_copy(update={"departure_threshold": 6.0})
    assert signal_after(values, 10.0, seasonal, step=600).score < E  # departures off
    missed = signal_after(values, 10.0, departures, step=600)
    assert missed.score > E and missed.detector == "season"
    assert missed.z is not None and missed.z < -6 and missed.expected == pytest.approx(30, abs=0.5)
    assert signal_after(values, 30.0, departures, step=600).score < 0.2


def test_departures_have_their_own_bounded_record_gate() -> None:
    """With the record gate on, departures are judged once their own record spans warmup_days earlier days, a
    departure no larger than the recent ones (ratio x record) is no news, a far larger one is; the record holds at
    most record_days + 1 days and stays empty while departures are off."""
    cfg = DetectorSettings(
        warmup_readings=50,
        season="day",
        season_min_readings=4,
        record_days=3,
        warmup_days=2,
        threshold=1e6,  # spikes cannot speak
        departure_threshold=3.0,
        departure_ratio=1.5,
    )
    values = daily(9)
    history = run(values, cfg, step=600)
    assert 1 <= len(history.season_peaks) <= cfg.record_days + 1
    assert not run(values, cfg.model_copy(update={"departure_threshold": 0.0}), step=600).season_peaks
    record = max(history.season_peaks.values())
    assert 1.0 < record < 6.0  # the noise of nine ordinary days, in the bins' spreads
    noon = T0 + 9 * DAY + 12 * HOUR
    assert judge(history, 29.5, noon, cfg, E).score < E  # an ordinary noon
    missed = judge(history, 10.0, noon, cfg, E)  # the rise that did not come
    assert missed.score > E and missed.z is not None and abs(missed.z) > cfg.departure_ratio * record
    young = run(values[: int(1.5 * DAY / 600)], cfg, step=600)
    assert judge(young, 10.0, T0 + 1.5 * DAY, cfg, E).score < E  # warming up: too few days of departures


def spiky(days: int, step: float = 600.0, height: float = 20.0) -> list[float]:
    """Noise around 10 (sd 0.5) with one spike of `height` every day at 03:00 UTC; one reading every 10 min."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(int(days * DAY / step)):
        at_three = ((T0 + i * step) % DAY) == 3 * HOUR
        out.append(10.0 + (height if at_three else float(rng.normal(0, 0.5))))
    return out


CLUSTERS = DetectorSettings(
    warmup_readings=50,
    season="none",
    record_days=14,
    warmup_days=2,
    departure_threshold=0.0,
    cluster_threshold=6.0,
    cluster_readings=144,
    cluster_window_s=6 * HOUR,
    cluster_ratio=1.5,
)


def test_spikes_that_come_more_often_than_on_any_recent_day_escalate_as_a_cluster() -> None:
    """Ten days with one 20-high spike a day, then three 15-high spikes within two hours: each is smaller than the
    record, so the record gate lets every one pass. With clusters on, the second is two in six hours where every
    earlier day had one (bar 1.5 x 1): it escalates, `cluster` 2; the third too (`cluster` 3) — today's own count
    does not raise the bar it is judged against. The first (one, as on any day) does not; nor any with clusters off
    (the record gate alone)."""
    history = run(spiky(10), CLUSTERS, step=600)
    assert max(history.cluster_peaks.values()) == 1.0 and len(history.cluster_times) == 1
    off = CLUSTERS.model_copy(update={"cluster_threshold": 0.0})
    history_off = run(spiky(10), off, step=600)
    at = T0 + 10 * DAY + 8 * HOUR
    signals, signals_off = [], []
    for k in range(3):
        ts = at + k * 3600
        signal, history = step(history, 25.0, ts, CLUSTERS, E)
        signal_off, history_off = step(history_off, 25.0, ts, off, E)
        signals.append(signal)
        signals_off.append(signal_off)
    assert [s.score > E for s in signals] == [False, True, True]
    assert [s.cluster for s in signals] == [1, 2, 3]
    assert signals[1].detector == "recent" and signals[1].z is not None and signals[1].z > 6
    assert not any(s.score > E for s in signals_off)  # the record gate alone: each is smaller than 1.2 x 20-high
    assert max(history.cluster_peaks.values()) == 3.0


def test_a_cluster_no_larger_than_recent_days_clusters_is_no_news() -> None:
    """A metric that had three readings past the threshold within six hours yesterday does not escalate today's two
    (bar 1.5 x 3); with none in the last record_days, one reading past the threshold is enough."""
    values = spiky(6, height=0.0)  # noise only
    history = run(values, CLUSTERS, step=600)
    for k in range(3):  # yesterday's cluster
        history = fold(history, 30.0, T0 + 6 * DAY + (1 + k) * HOUR, CLUSTERS)
    assert max(history.cluster_peaks.values()) == 3.0
    today = []
    for k in range(2):
        signal, history = step(history, 30.0, T0 + 7 * DAY + (5 + k) * HOUR, CLUSTERS, E)
        today.append(signal)
    assert not any(s.score > E for s in today)
    assert max(history.cluster_peaks.values()) == 3.0
    no_spikes = CLUSTERS.model_copy(update={"threshold": 1e6})  # only the cluster detector can speak
    quiet = run(values, no_spikes, step=600)
    alone = judge(quiet, 14.0, T0 + 6 * DAY + HOUR, no_spikes, E)
    assert alone.score > E and alone.cluster == 1


def test_the_cluster_state_is_bounded_and_empty_while_clusters_are_off() -> None:
    """Its ring holds cluster_readings readings, its event times at most CLUSTER_TIMES, its daily counts at most
    record_days + 1 days; a metric with clusters off carries none of it, and turning them off empties it."""
    cfg = CLUSTERS.model_copy(update={"record_days": 3, "cluster_window_s": 30 * DAY, "cluster_ratio": 1e9})
    values = [10.0 + (40.0 if i % 2 else 0.0) * (i > 200) for i in range(1200)]  # past 200, every other reading
    history = run(values, cfg, step=600)
    assert len(history.cluster_recent) == cfg.cluster_readings
    assert 0 < len(history.cluster_times) <= CLUSTER_TIMES
    assert len(history.cluster_peaks) <= cfg.record_days + 1
    off = cfg.model_copy(update={"cluster_threshold": 0.0})
    assert run(values, off, step=600).model_dump(include={"cluster_recent", "cluster_times", "cluster_peaks"}) == {
        "cluster_recent": [],
        "cluster_times": [],
        "cluster_peaks": {},
    }
    emptied = fold(history, 10.0, T0 + 1200 * 600, off)
    assert not emptied.cluster_recent and not emptied.cluster_times and not emptied.cluster_peaks
