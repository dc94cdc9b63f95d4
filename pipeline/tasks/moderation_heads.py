"""Moderation heads: profanity-check's linear model and calibrated per-category embedding heads (seed-set fit)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from pipeline.engine.encoder import Encoder

Floats = NDArray[np.float64]

CATEGORIES: tuple[str, ...] = (
    "harassment",
    "hate",
    "self-harm",
    "sexual",
    "violence",
    "illicit",
    "profanity",
    "spam",
)
# profanity-check was trained on offensive language, so it is evidence for these two and noise for the rest.
PROFANITY_INFORMED = frozenset({"harassment", "profanity"})
# Bump when the fitting recipe changes: heads cached under the old recipe are then refitted.
HEAD_RECIPE = "moderation-heads-1"
HEAD_C = 16.0  # inverse L2 strength of each head, chosen by 5-fold CV on the seed set (docs/moderation.md)
FOLDS = 5

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SEED_FILE = DATA_DIR / "moderation_seed.jsonl"
CONFIG_FILE = DATA_DIR / "moderation.yaml"
EVAL_FILE = DATA_DIR / "moderation_eval.jsonl"


# --------------------------------------------------------------------------------------------- profanity
class ProfanityModel:
    """alt-profanity-check's TF-IDF and five calibrated linear SVMs, scored as one sparse product."""

    def __init__(self, vectorizer: Any, model: Any) -> None:
        self._vectorizer = vectorizer
        self._model = model
        self._linear = _linear_form(model)
        probe = ["you are a fucking idiot", "have a lovely day", "kill the heat", ""]
        # The fast path re-derives sklearn's arithmetic; if a future sklearn changes it, fall back to its call.
        if self._linear is not None and not np.allclose(self._fast(probe), self._slow(probe), atol=1e-9):
            self._linear = None

    @classmethod
    def load(cls) -> ProfanityModel:
        """Load the pickled pipeline without importing the package (its import also loads them)."""
        import joblib
        from sklearn.exceptions import InconsistentVersionWarning

        spec = importlib.util.find_spec("profanity_check")
        if spec is None or not spec.submodule_search_locations:
            raise ModelError("alt-profanity-check is not installed; run: pip install alt-profanity-check")
        data = Path(next(iter(spec.submodule_search_locations))) / "data"
        try:
            with warnings.catch_warnings():
                # Pickled by an older scikit-learn; the probe check in __init__ proves it still scores.
                warnings.simplefilter("ignore", InconsistentVersionWarning)
                return cls(joblib.load(data / "vectorizer.joblib"), joblib.load(data / "model.joblib"))
        except (OSError, ValueError, AttributeError) as exc:
            raise ModelError(f"cannot load profanity-check from {data}: {exc}") from exc

    def probability(self, texts: Sequence[str]) -> Floats:
        """P(offensive) per text."""
        return self._fast(texts) if self._linear is not None else self._slow(texts)

    def _slow(self, texts: Sequence[str]) -> Floats:
        return np.asarray(self._model.predict_proba(self._vectorizer.transform(texts))[:, 1], dtype=np.float64)

    def _fast(self, texts: Sequence[str]) -> Floats:
        assert self._linear is not None
        weights, bias, slope, offset = self._linear
        decision = np.asarray(self._vectorizer.transform(texts) @ weights) + bias  # (n, svms)
        return np.asarray(_sigmoid(-(decision * slope + offset)).mean(axis=1), dtype=np.float64)


def _linear_form(model: Any) -> tuple[Floats, Floats, Floats, Floats] | None:
    """(weights (vocab, m), biases, Platt slopes, Platt offsets) of a binary sigmoid CalibratedClassifierCV."""
    try:
        parts = model.calibrated_classifiers_
        if list(model.classes_) != [0, 1] or any(p.method != "sigmoid" or len(p.calibrators) != 1 for p in parts):
            return None
        weights = np.stack([np.ravel(p.estimator.coef_) for p in parts], axis=1).astype(np.float64)
        bias = np.array([float(np.ravel(p.estimator.intercept_)[0]) for p in parts])
        slope = np.array([float(p.calibrators[0].a_) for p in parts])
        offset = np.array([float(p.calibrators[0].b_) for p in parts])
    except (AttributeError, TypeError, IndexError):
        return None
    return weights, bias, slope, offset


def _sigmoid(x: Floats) -> Floats:
    out: Floats = 0.5 * (1.0 + np.tanh(0.5 * x))  # tanh form: no overflow warning for large |x|
    return out


def _logit(p: Floats) -> Floats:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    out: Floats = np.log(q / (1 - q))
    return out


# ------------------------------------------------------------------------------------------------- heads
@dataclass(frozen=True)
class ModerationHeads:
    """One logistic-regression head per category over embeddings, with a Platt layer on top.

    score = sigmoid(slope * (vector @ coef + intercept) + profanity_slope * logit(p_profanity) + offset)
    """

    coef: Floats  # (dim, categories)
    intercept: Floats  # (categories,)
    slope: Floats
    profanity_slope: Floats  # zero outside PROFANITY_INFORMED
    offset: Floats

    def scores(self, vectors: NDArray[np.floating], profanity: Floats) -> Floats:
        head = np.asarray(vectors, dtype=np.float64) @ self.coef + self.intercept
        return _sigmoid(head * self.slope + _logit(profanity)[:, None] * self.profanity_slope + self.offset)

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, categories=np.array(CATEGORIES), **{k: getattr(self, k) for k in _HEAD_FIELDS})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getvalue())
        os.replace(tmp, path)  # atomic: workers starting together never read a half-written file

    @classmethod
    def read(cls, path: Path) -> ModerationHeads | None:
        """The cached heads, or None when the file is missing, unreadable or for other categories."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if tuple(str(c) for c in data["categories"]) != CATEGORIES:
                    return None
                return cls(**{k: np.asarray(data[k], dtype=np.float64) for k in _HEAD_FIELDS})
        except (OSError, KeyError, ValueError):
            return None


_HEAD_FIELDS = ("coef", "intercept", "slope", "profanity_slope", "offset")


def fit_heads(vectors: NDArray[np.floating], labels: NDArray[np.bool_], profanity: Floats) -> ModerationHeads:
    """Fit every category's head, and its Platt layer on 5-fold out-of-fold head scores."""
    x = np.asarray(vectors, dtype=np.float64)
    fitted = [
        _fit_category(x, labels[:, k], _logit(profanity), name in PROFANITY_INFORMED)
        for k, name in enumerate(CATEGORIES)
    ]
    coef, intercept, slope, profanity_slope, offset = (np.array(column) for column in zip(*fitted, strict=True))
    return ModerationHeads(coef.T, intercept, slope, profanity_slope, offset)


def _fit_category(
    x: Floats, y: NDArray[np.bool_], profanity_logit: Floats, informed: bool
) -> tuple[Floats, float, float, float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    # Balanced weights: each category has ~60 positives among ~800 seed texts.
    head = LogisticRegression(C=HEAD_C, class_weight="balanced", max_iter=5000)
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=0)
    held_out = cross_val_predict(head, x, y, cv=folds, method="decision_function")
    features = np.column_stack([held_out, profanity_logit]) if informed else held_out[:, None]
    # Unweighted Platt: probabilities for the seed set's mix (~8% per category); balanced weights here
    # flagged about three times as many benign seed texts in cross-validation (docs/moderation.md).
    platt = LogisticRegression(C=1e4, max_iter=5000).fit(features, y)
    head.fit(x, y)
    profanity_slope = float(platt.coef_[0, 1]) if informed else 0.0
    return (
        head.coef_[0],
        float(head.intercept_[0]),
        float(platt.coef_[0, 0]),
        profanity_slope,
        float(platt.intercept_[0]),
    )


# -------------------------------------------------------------------------------------------------- seed
def read_labelled(path: Path) -> tuple[list[str], NDArray[np.bool_]]:
    """Texts and their (texts, categories) label matrix from a `{"text", "categories"}` JSON-lines file."""
    texts: list[str] = []
    rows: list[list[bool]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read moderation data {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            text, cats = item["text"], set(item["categories"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{number}: expected {{'text', 'categories'}}: {exc}") from exc
        if not isinstance(text, str) or not cats <= set(CATEGORIES):
            raise ConfigError(f"{path}:{number}: unknown categories {sorted(cats - set(CATEGORIES))}")
        texts.append(text)
        rows.append([c in cats for c in CATEGORIES])
    return texts, np.array(rows, dtype=bool).reshape(len(rows), len(CATEGORIES))


def heads_path(cache_dir: Path, encoder: Encoder, seed: Path) -> Path:
    """Cache file keyed by model version, precision, seed file, recipe and profanity-check version."""
    digest = hashlib.sha256(seed.read_bytes())
    digest.update(f"{HEAD_RECIPE}|{CATEGORIES}|{importlib.metadata.version('alt-profanity-check')}".encode())
    key = f"{encoder.files.version}-{encoder.files.precision}-{digest.hexdigest()[:16]}"
    return cache_dir / "moderation" / f"heads-{key}.npz"
