"""Risk-controlled thresholds: the finite-sample guarantees hold on synthetic data with known error rates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from pipeline.errors import ConfigError
from pipeline.settings import RoutingSettings, Settings
from pipeline.tasks.classify import fitted_thresholds
from pipeline.tasks.risk import (
    GRID,
    FamilyThreshold,
    ThresholdsFile,
    clopper_pearson_upper,
    fit_band,
    fit_max_error,
    fit_max_escalation,
    sha256_file,
)

REPEATS = 200
DELTA = 0.1
# Violations allowed out of REPEATS: delta * REPEATS plus three binomial standard deviations, so a procedure whose
# true failure rate were delta would pass, and one failing much more often (the naive fit below) cannot.
ALLOWED = DELTA * REPEATS + 3 * np.sqrt(REPEATS * DELTA * (1 - DELTA))


def draw(rng: np.random.Generator, n: int) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Confidence uniform on [0, 1], wrong with probability 0.3 * (1 - confidence)^2.

    The error among items with confidence >= t is then 0.1 * (1 - t)^2, and the share escalated at t is t."""
    conf = rng.uniform(0, 1, n)
    correct = rng.uniform(0, 1, n) >= 0.3 * (1 - conf) ** 2
    return conf, correct


def true_error(t: float) -> float:
    return 0.1 * (1 - t) ** 2


def naive_max_error(conf: NDArray[np.float64], correct: NDArray[np.bool_], max_error: float) -> float:
    """The loosest grid threshold whose empirical error is <= the target: no bound, no guarantee."""
    for t in GRID[::-1]:
        kept = conf >= t
        if kept.any() and (~correct[kept]).mean() <= max_error:
            return float(t)
    return 1.0


def test_clopper_pearson_matches_known_values() -> None:
    """The one-sided bound: 0 of n gives 1 - delta^(1/n) exactly; k of n lies above k/n; n of n is 1."""
    assert clopper_pearson_upper(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-9)
    assert 0.05 < clopper_pearson_upper(5, 100, 0.05) < 0.12
    assert clopper_pearson_upper(100, 100, 0.05) == 1.0
    assert clopper_pearson_upper(0, 0, 0.05) == 1.0


def test_max_error_guarantee_holds_in_repeated_draws() -> None:
    """Over 200 calibration draws, the true error at the fitted threshold exceeds the target in at most delta of
    them (with binomial slack) -- while the naive plug-in fit on the same draws breaks it far more often, so this
    coverage check is able to fail."""
    rng = np.random.default_rng(11)
    target = 0.05  # the true error is 0.05 at t = 1 - sqrt(0.5) = 0.293
    fitted, naive = [], []
    for _ in range(REPEATS):
        conf, correct = draw(rng, 2000)
        fitted.append(fit_max_error(conf, correct, target, DELTA).threshold)
        naive.append(naive_max_error(conf, correct, target))
    violations = sum(true_error(t) > target for t in fitted)
    naive_violations = sum(true_error(t) > target for t in naive)
    assert violations <= ALLOWED
    assert naive_violations > ALLOWED  # the check would catch a procedure without the bound
    # ... and the guarantee is not bought by escalating everything: thresholds stay near the true 0.293.
    assert float(np.median(fitted)) < 0.5


def test_max_escalation_guarantee_holds_in_repeated_draws() -> None:
    """The share escalated at the fitted threshold (= the threshold, for uniform confidence) exceeds the target
    in at most delta of 200 draws; the naive quantile breaks it about half the time."""
    rng = np.random.default_rng(12)
    target = 0.2
    fitted, naive = [], []
    for _ in range(REPEATS):
        conf, correct = draw(rng, 1000)
        fitted.append(fit_max_escalation(conf, correct, target, DELTA).threshold)
        naive.append(float(np.quantile(conf, target)))
    assert sum(t > target for t in fitted) <= ALLOWED
    assert sum(t > target for t in naive) > ALLOWED
    assert float(np.median(fitted)) > 0.15


def test_forced_items_are_escalated_and_counted() -> None:
    """Items forced out (e.g. out of scope) are never auto-handled: their errors do not count against the error
    target, and they count as escalated against the escalation target."""
    rng = np.random.default_rng(3)
    conf, correct = draw(rng, 2000)
    forced = np.zeros(len(conf), dtype=bool)
    forced[:200] = True
    correct[:200] = False  # all wrong, all confident: they would break the error target if kept
    conf[:200] = 0.99
    with_forced = fit_max_error(conf, correct, 0.05, 0.1, forced=forced)
    assert with_forced.escalated >= 200
    esc = fit_max_escalation(conf, correct, 0.3, 0.1, forced=forced)
    assert esc.escalated >= 200 and esc.bound <= 0.3


def test_impossible_targets_are_config_errors() -> None:
    """A target no threshold can certify says so in one line rather than writing a threshold without a guarantee."""
    rng = np.random.default_rng(4)
    conf, correct = draw(rng, 50)
    with pytest.raises(ConfigError, match="max-error"):
        fit_max_error(conf, correct, 0.001, 0.05)
    with pytest.raises(ConfigError, match="max-escalation"):
        fit_max_escalation(conf, correct, 0.3, 0.05, forced=np.ones(50, dtype=bool))
    with pytest.raises(ConfigError, match="between 0 and 1"):
        fit_max_error(conf, correct, 1.5, 0.05)


def _thresholds(heads: dict[str, str] | None) -> ThresholdsFile:
    fitted = fit_max_error(*draw(np.random.default_rng(5), 2000), 0.05, 0.1)
    family = FamilyThreshold(
        min_confidence=fitted.threshold,
        method="trained-head",
        guarantee=fitted.guarantee(),
        items=fitted.n,
        escalation_rate=fitted.escalation_rate,
        auto_error_rate=fitted.auto_error_rate,
        bound=fitted.bound,
    )
    return ThresholdsFile(
        target="max_error",
        level=0.05,
        delta=0.1,
        created_at="2026-12-04T00:00:00+00:00",
        model_version="0.1.0+recipe.abc",
        data={"path": "cal.jsonl", "sha256": "0" * 64, "items": 2000},
        heads=heads,
        families={"feed": family},
    )


def test_thresholds_file_round_trips_and_is_refused_for_another_model_or_heads(tmp_path: Path) -> None:
    """The file states its guarantee and provenance, loads back equal, feeds routing through the setting, and is
    refused (ConfigError naming `minnow calibrate`) with another model or another head file than it was fitted for."""
    heads = tmp_path / "heads.json"
    heads.write_text("{}", encoding="utf-8")
    written = _thresholds({"path": str(heads), "sha256": sha256_file(heads)})
    path = tmp_path / "thresholds.yaml"
    written.save(path)
    assert "probability >= 0.9" in path.read_text(encoding="utf-8")
    loaded = ThresholdsFile.load(path)
    assert loaded == written
    loaded.check("0.1.0+recipe.abc", heads)
    settings = Settings(routing=RoutingSettings(thresholds_file=path), head_file=heads)
    assert fitted_thresholds(settings, model_version="0.1.0+recipe.abc") == {
        "feed": written.families["feed"].min_confidence
    }
    with pytest.raises(ConfigError, match="minnow calibrate"):
        loaded.check("0.1.0+recipe.other", heads)
    with pytest.raises(ConfigError, match="minnow calibrate"):
        loaded.check("0.1.0+recipe.abc", None)
    heads.write_text('{"changed": 1}', encoding="utf-8")
    with pytest.raises(ConfigError, match="minnow calibrate"):
        loaded.check("0.1.0+recipe.abc", heads)
    (tmp_path / "other.yaml").write_text("format: something-else\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a Minnow thresholds file"):
        ThresholdsFile.load(tmp_path / "other.yaml")


def test_band_guarantee_holds_for_a_yes_no_score() -> None:
    """The uncertain band of a yes/no score (flag at 0.5) fitted to max error 0.05: over 200 draws the true error
    among decided items exceeds 0.05 in at most delta of them, and the band stays near the true one."""
    rng = np.random.default_rng(21)

    def true_error(w: float) -> float:
        # score uniform on [0, 1]; an item at margin m = |score - 0.5| is wrong with probability 0.5 * (1 - 2m)^2,
        # so among margins >= w (uniform on [w, 0.5]) the error is 0.5 * (1 - 2w)^2 / 3: 0.05 at w = 0.226.
        return 0.5 * (1 - 2 * w) ** 2 / 3

    widths = []
    for _ in range(REPEATS):
        score = rng.uniform(0, 1, 3000)
        wrong = rng.uniform(0, 1, 3000) < 0.5 * (1 - 2 * np.abs(score - 0.5)) ** 2
        positive = (score >= 0.5) ^ wrong
        band = fit_band(score, positive, 0.5, target="max_error", level=0.05, delta=DELTA)
        assert band.high - 0.5 == pytest.approx(0.5 - band.low) and band.high <= 1.0
        widths.append(band.high - 0.5)
    assert sum(true_error(w) > 0.05 for w in widths) <= ALLOWED
    assert float(np.median(widths)) < 0.3  # not everything escalated: the true width is 0.226
