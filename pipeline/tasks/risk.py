"""Escalation thresholds fitted to a stated target with a finite-sample guarantee (docs/escalation.md).

Two targets, each held with probability at least 1 - delta over the draw of the calibration data, provided the
traffic is exchangeable with it (same distribution, items independent):

- `max_error`: among the items the mini model handles itself, the share it gets wrong is at most Y. Candidate
  thresholds on a fixed grid, fixed before the data is seen, are tested from strict to loose (Learn-then-Test,
  Angelopoulos et al. 2021, fixed-sequence testing): each tests "error among auto-handled > Y" with the one-sided
  Clopper-Pearson bound, and the scan stops at the first threshold whose bound exceeds Y. A strict threshold keeps
  few items, so its bound is wide and a single scan could stop at once; the scan therefore runs from several
  fixed starts, each at delta / starts (Bonferroni), and the loosest threshold any of them reaches is taken.
- `max_escalation`: the share escalated is at most X. The escalation rate only grows with the threshold, so the
  highest grid threshold whose Clopper-Pearson upper bound on the rate is at most X is a fixed-sequence test too.

A threshold `t` means: escalate when confidence < t. Everything here is plain arrays; the command that reads
labeled data and writes the thresholds file is pipeline/commands/calibrate.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config_files import read_yaml
from pipeline.errors import ConfigError
from pipeline.tasks.beta import beta_quantile

# Thresholds tested, strict (1.0) to loose (0.0), fixed before any data is seen: the grid may not depend on it.
GRID = np.round(np.linspace(1.0, 0.0, 1001), 3)
DEFAULT_STARTS = 10


def clopper_pearson_upper(errors: int, n: int, delta: float) -> float:
    """One-sided (1 - delta) upper confidence bound on a binomial proportion from `errors` out of `n`."""
    return float(clopper_pearson_upper_all(np.array([errors]), np.array([n]), delta)[0])


@dataclass(frozen=True)
class Fitted:
    """A fitted threshold and what it did on the calibration data."""

    threshold: float
    target: str  # "max_error" or "max_escalation"
    level: float  # Y or X
    delta: float
    n: int
    escalated: int  # items escalated at the threshold
    auto_errors: int  # wrong answers among the items kept
    bound: float  # the upper bound that passed: on the error among kept items, or on the escalation rate

    @property
    def escalation_rate(self) -> float:
        return self.escalated / self.n if self.n else 0.0

    @property
    def auto_error_rate(self) -> float:
        kept = self.n - self.escalated
        return self.auto_errors / kept if kept else 0.0

    def guarantee(self) -> str:
        what = "error among auto-handled items" if self.target == "max_error" else "share of items escalated"
        return (
            f"with probability >= {1 - self.delta:.3g} over the calibration draw, the {what} is <= {self.level:.3g} "
            "on traffic exchangeable with the calibration data"
        )


def clopper_pearson_upper_all(errors: NDArray[np.int64], n: NDArray[np.int64], delta: float) -> NDArray[np.float64]:
    """`clopper_pearson_upper` over arrays (one bound per pair): the (1 - delta) quantile of Beta(errors + 1,
    n - errors). scipy's `beta.ppf` where scipy is installed (the `train` extra; fast), else the numpy bisection
    of pipeline/tasks/beta.py (the same bounds to 1e-9, about a second per fit), so `minnow calibrate` runs on a
    runtime-only install too."""
    out = np.ones(len(n), dtype=np.float64)
    ok = (n > 0) & (errors < n)
    a, b = (errors[ok] + 1).astype(np.float64), (n[ok] - errors[ok]).astype(np.float64)
    try:
        from scipy.stats import beta
    except ImportError:
        out[ok] = beta_quantile(1.0 - delta, a, b)
    else:
        out[ok] = beta.ppf(1.0 - delta, a, b)
    return out


def _counts(
    confidence: NDArray[np.float64], correct: NDArray[np.bool_], forced: NDArray[np.bool_] | None
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per grid threshold: items kept (confidence >= t, not forced) and wrong answers among them."""
    free = np.ones(len(confidence), dtype=bool) if forced is None else ~forced
    conf = confidence[free]
    order = np.argsort(conf)
    conf, wrong = conf[order], (~correct[free])[order]
    first_kept = np.searchsorted(conf, GRID, side="left")  # items at or above t start here
    wrong_above = np.concatenate([np.cumsum(wrong[::-1])[::-1], [0]])
    kept = (len(conf) - first_kept).astype(np.int64)
    errors = wrong_above[first_kept].astype(np.int64)
    return kept, errors


def fit_max_error(
    confidence: NDArray[np.float64],
    correct: NDArray[np.bool_],
    max_error: float,
    delta: float,
    *,
    forced: NDArray[np.bool_] | None = None,
    starts: int = DEFAULT_STARTS,
) -> Fitted:
    """The loosest grid threshold whose error among kept items is certified <= `max_error` (see module doc).

    `forced` marks items escalated whatever the threshold (e.g. out of scope): they are never kept, so the bound is
    on what is really auto-handled. Raises ConfigError when no threshold passes.
    """
    _check(confidence, correct, max_error, delta)
    kept, errors = _counts(confidence, correct, forced)
    passes = clopper_pearson_upper_all(errors, kept, delta / starts) <= max_error
    loosest = -1
    for start in np.linspace(0, len(GRID) - 1, starts + 1)[:-1].round().astype(int):
        i = int(start)
        while i < len(GRID) and passes[i]:  # fixed sequence: stop at the first hypothesis not rejected
            i += 1
        loosest = max(loosest, i - 1 if i > start else -1)
    if loosest < 0:
        raise ConfigError(
            f"no threshold keeps the auto-handled error <= {max_error:g} at delta {delta:g} on {len(confidence)} "
            "items; give more calibration data or a looser --max-error"
        )
    n = len(confidence)
    bound = float(clopper_pearson_upper_all(errors[[loosest]], kept[[loosest]], delta / starts)[0])
    escalated = n - int(kept[loosest])
    return Fitted(float(GRID[loosest]), "max_error", max_error, delta, n, escalated, int(errors[loosest]), bound)


def fit_max_escalation(
    confidence: NDArray[np.float64],
    correct: NDArray[np.bool_],
    max_escalation: float,
    delta: float,
    *,
    forced: NDArray[np.bool_] | None = None,
) -> Fitted:
    """The strictest grid threshold whose escalation rate is certified <= `max_escalation` (see module doc)."""
    _check(confidence, correct, max_escalation, delta)
    n = len(confidence)
    kept, errors = _counts(confidence, correct, forced)
    escalated = n - kept
    bounds = clopper_pearson_upper_all(escalated, np.full(len(GRID), n, dtype=np.int64), delta)
    # Loose to strict (the grid read backwards): the rate only grows, so the passing thresholds are a prefix.
    i = len(GRID) - 1
    while i >= 0 and bounds[i] <= max_escalation:
        i -= 1
    strictest = i + 1
    if strictest >= len(GRID):
        forced_n = 0 if forced is None else int(forced.sum())
        raise ConfigError(
            f"even escalating only the forced items ({forced_n} of {n}: out of scope) cannot be certified "
            f"<= {max_escalation:g} at delta {delta:g}; give more data or a looser --max-escalation"
        )
    return Fitted(
        float(GRID[strictest]),
        "max_escalation",
        max_escalation,
        delta,
        n,
        int(escalated[strictest]),
        int(errors[strictest]),
        float(bounds[strictest]),
    )


@dataclass(frozen=True)
class Band:
    """An uncertain band around a decision point: scores in [low, high) escalate, the rest are decided."""

    low: float
    high: float
    fitted: Fitted


def fit_band(
    scores: NDArray[np.float64],
    positive: NDArray[np.bool_],
    decide_at: float,
    *,
    target: Literal["max_error", "max_escalation"],
    level: float,
    delta: float,
) -> Band:
    """A symmetric band around `decide_at` for a yes/no score (e.g. one moderation category: flagged at or above
    `decide_at`), fitted with the same guarantee as the classification thresholds.

    The band of half-width w keeps the items with |score - decide_at| >= w, so the margin |score - decide_at| plays
    the part of confidence and w that of the threshold: a kept item is right when (score >= decide_at) == positive.
    Scores must lie in [0, 1]; `fitted.threshold` is w as a share of the widest possible band
    (max(decide_at, 1 - decide_at)). For a moderation band file: low = decide_at - w, high = decide_at + w."""
    # Margins scaled to [0, 1] so that the grid, and the scan's starts, cover the whole range of possible bands.
    scale = max(decide_at, 1.0 - decide_at)
    margin = np.abs(np.asarray(scores, dtype=np.float64) - decide_at) / scale
    correct = (np.asarray(scores) >= decide_at) == np.asarray(positive, dtype=bool)
    fit = fit_max_error if target == "max_error" else fit_max_escalation
    fitted = fit(margin, correct, level, delta)
    width = fitted.threshold * scale
    return Band(max(0.0, decide_at - width), min(1.0, decide_at + width), fitted)


def _check(confidence: NDArray[np.float64], correct: NDArray[np.bool_], level: float, delta: float) -> None:
    if len(confidence) != len(correct):
        raise ValueError("confidence and correct must align")
    if len(confidence) == 0:
        raise ConfigError("no calibration items")
    if not 0 < level < 1:
        raise ConfigError(f"the target must be a share between 0 and 1 (exclusive), got {level:g}")
    if not 0 < delta < 1:
        raise ConfigError(f"--delta must be between 0 and 1 (exclusive), got {delta:g}")


# ------------------------------------------------------------------------------------------ the thresholds file
THRESHOLDS_FORMAT = "minnow-thresholds-1"


class FamilyThreshold(BaseModel):
    """One family's fitted threshold and what it did on the calibration data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_confidence: float = Field(ge=0, le=1)
    method: str  # trained-head or zero-shot: what the threshold was fitted for
    guarantee: str
    items: int
    escalation_rate: float
    auto_error_rate: float
    bound: float
    out_of_scope_escalated: int = 0  # items the head's out-of-scope score escalated whatever the threshold


class ThresholdsFile(BaseModel):
    """What `minnow calibrate` writes: per-family classification thresholds, the target they were fitted to, and
    the data, heads and model they hold for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = THRESHOLDS_FORMAT
    target: Literal["max_error", "max_escalation"]
    level: float
    delta: float
    created_at: str
    model_version: str
    data: dict[str, str | int]  # path, sha256, items
    heads: dict[str, str] | None = None  # path, sha256 of the head file in force when fitted; None: zero-shot
    families: dict[str, FamilyThreshold]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (
            "# Classification thresholds from `minnow calibrate` (docs/escalation.md, 'Sizing escalation').\n"
            "# Escalate when confidence < min_confidence; refit when the model, the heads or the traffic change.\n"
        )
        body = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
        path.write_text(header + body, encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> ThresholdsFile:
        raw = read_yaml(path, "thresholds file")
        if not isinstance(raw, dict) or raw.get("format") != THRESHOLDS_FORMAT:
            raise ConfigError(f"{path} is not a Minnow thresholds file ({THRESHOLDS_FORMAT}, from `minnow calibrate`)")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"thresholds file {path} is invalid: {exc.errors()[0]['msg']}") from exc

    def check(self, model_version: str, head_file: Path | None) -> None:
        """ConfigError when the thresholds were fitted for another model or another head file than in force."""
        if self.model_version.rsplit("+", maxsplit=1)[-1] != model_version.rsplit("+", maxsplit=1)[-1]:
            raise ConfigError(
                f"the thresholds were fitted for model {self.model_version}, but the engine runs {model_version}; "
                "rerun `minnow calibrate`"
            )
        fitted_on = self.heads["sha256"] if self.heads else None
        in_force = sha256_file(head_file) if head_file else None
        if fitted_on != in_force:
            raise ConfigError(
                "the thresholds were fitted "
                + (f"for the heads {self.heads['path']}" if self.heads else "for zero-shot (no heads)")
                + ", not for the head file in force; rerun `minnow calibrate` with the heads you run"
            )


def sha256_file(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
