"""Trained classification heads: fit a logistic regression on embeddings, calibrate it, save it as JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import ConfigError
from pipeline.tasks.calibration import expected_calibration_error, fit_temperature, softmax

HEAD_FORMAT = "minnow-heads-1"


class LinearHead(BaseModel):
    """Multinomial logistic regression over embeddings, with a fitted temperature."""

    model_config = ConfigDict(frozen=True)

    labels: list[str]
    coef: list[list[float]]  # (labels, dim)
    intercept: list[float]
    temperature: float = 1.0
    metrics: dict[str, float] = Field(default_factory=dict)
    examples: int = 0

    def logits(self, vectors: NDArray[np.float32]) -> NDArray[np.float64]:
        w = np.asarray(self.coef, dtype=np.float64)
        out: NDArray[np.float64] = vectors.astype(np.float64) @ w.T + np.asarray(self.intercept, dtype=np.float64)
        return out

    def predict_proba(self, vectors: NDArray[np.float32]) -> NDArray[np.float64]:
        return softmax(self.logits(vectors), self.temperature)


class HeadFile(BaseModel):
    """What `minnow train` writes: heads and zero-shot temperatures per family, tied to one model version."""

    model_config = ConfigDict(frozen=True)

    format: str = HEAD_FORMAT
    model_version: str = ""
    trained_at: str = ""
    heads: dict[str, LinearHead]
    zero_shot_temperature: dict[str, float]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, model_version: str | None = None) -> HeadFile:
        try:
            head = cls.model_validate_json(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read head file {path}: {exc}") from exc
        except ValidationError as exc:
            raise ConfigError(f"{path} is not a Minnow head file (from `minnow train`): {exc}") from exc
        if head.format != HEAD_FORMAT:
            raise ConfigError(f"{path} has format {head.format!r}; this Minnow reads {HEAD_FORMAT!r}")
        if model_version and head.model_version and head.model_version.split("+")[-1] != model_version.split("+")[-1]:
            # Heads are fitted in one embedding space; another model's vectors would be scored nonsensically.
            raise ConfigError(
                f"{path} was trained for model {head.model_version}, but the engine runs {model_version}; "
                "retrain with `minnow train`"
            )
        return head


def _split(n: int, holdout: float, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    cut = max(1, round(n * holdout))
    return order[cut:], order[:cut]


def fit_head(
    vectors: NDArray[np.float32],
    labels: list[str],
    label_names: list[str],
    *,
    holdout: float = 0.2,
    seed: int = 7,
) -> LinearHead:
    """Fit on (1 - holdout), fit the temperature and measure on the held-out part, then refit on everything."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({lab for lab in labels if lab not in index})
    if unknown:
        raise ConfigError(f"training labels not in the label set: {', '.join(unknown)}")
    y = np.asarray([index[lab] for lab in labels], dtype=np.int64)
    present = sorted(set(y.tolist()))
    if len(present) < len(label_names):
        missing = [label_names[i] for i in range(len(label_names)) if i not in present]
        raise ConfigError(f"no training examples for labels: {', '.join(missing)}")

    def model() -> Any:
        return LogisticRegression(C=4.0, max_iter=2000, class_weight="balanced")

    train, held = _split(len(y), holdout, seed)
    clf = model().fit(vectors[train], y[train])
    held_logits = _two_column(clf.decision_function(vectors[held]))
    temperature = fit_temperature(held_logits, y[held])
    raw = softmax(held_logits)
    calibrated = softmax(held_logits, temperature)
    pred = calibrated.argmax(axis=1)
    metrics = {
        "holdout_accuracy": float((pred == y[held]).mean()),
        # A small held-out part may lack a label: it scores 0 for that label rather than warning.
        "holdout_macro_f1": float(
            f1_score(y[held], pred, average="macro", labels=list(range(len(label_names))), zero_division=0)
        ),
        "holdout_ece_before": expected_calibration_error(raw, y[held]),
        "holdout_ece_after": expected_calibration_error(calibrated, y[held]),
        "holdout_examples": float(len(held)),
    }
    full = model().fit(vectors, y)
    coef, intercept = full.coef_, full.intercept_
    if len(label_names) == 2:  # sklearn keeps one row for two classes; softmax over (-z/2, z/2) is sigmoid(z)
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    return LinearHead(
        labels=label_names,
        coef=coef.tolist(),
        intercept=intercept.tolist(),
        temperature=temperature,
        metrics=metrics,
        examples=len(y),
    )


def _two_column(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    if scores.ndim == 1:
        return np.stack([-scores / 2, scores / 2], axis=1)
    return scores


def fit_zero_shot_temperature(logits: NDArray[np.float32], labels: list[str], label_names: list[str]) -> float:
    index = {name: i for i, name in enumerate(label_names)}
    y = np.asarray([index[lab] for lab in labels], dtype=np.int64)
    return fit_temperature(logits, y)


def new_head_file(heads: dict[str, LinearHead], temps: dict[str, float], model_version: str) -> HeadFile:
    return HeadFile(
        model_version=model_version,
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        heads=heads,
        zero_shot_temperature=temps,
    )


def describe(head_file: HeadFile) -> str:
    """A short human summary of a head file for the CLI."""
    lines = [f"model {head_file.model_version}, trained {head_file.trained_at}"]
    for family, head in head_file.heads.items():
        m = head.metrics
        lines.append(
            f"  {family}: {len(head.labels)} labels, {head.examples} examples, held-out accuracy "
            f"{m.get('holdout_accuracy', 0):.3f}, macro-F1 {m.get('holdout_macro_f1', 0):.3f}, ECE "
            f"{m.get('holdout_ece_before', 0):.3f} -> {m.get('holdout_ece_after', 0):.3f} (T={head.temperature:.3f})"
        )
    for family, t in head_file.zero_shot_temperature.items():
        lines.append(f"  {family}: zero-shot temperature {t:.4f}")
    return "\n".join(lines)
