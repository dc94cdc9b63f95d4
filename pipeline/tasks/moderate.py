"""Moderation: per-category scores from profanity-check's linear model and calibrated embedding heads."""

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
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from pipeline.config_files import read_yaml
from pipeline.errors import ConfigError, InferenceError, ModelError
from pipeline.models import Moderation

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


# ------------------------------------------------------------------------------------------------ config
class CategoryPolicy(BaseModel):
    """Where one category flags, and the band around it where the score is too close to call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float
    uncertain_low: float
    uncertain_high: float

    @model_validator(mode="after")
    def _band_surrounds_threshold(self) -> CategoryPolicy:
        if not 0.0 <= self.uncertain_low < self.threshold < self.uncertain_high <= 1.0:
            raise ValueError(
                f"need 0 <= uncertain_low < threshold < uncertain_high <= 1, got "
                f"{self.uncertain_low} / {self.threshold} / {self.uncertain_high}"
            )
        return self


class ModerationConfig(BaseModel):
    """A policy for every category; `from_yaml` reads the bundled or an operator's `moderation.yaml`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    categories: dict[str, CategoryPolicy]

    @model_validator(mode="after")
    def _every_category(self) -> ModerationConfig:
        if set(self.categories) != set(CATEGORIES):
            raise ValueError(f"categories must be exactly {list(CATEGORIES)}, got {sorted(self.categories)}")
        return self

    @classmethod
    def from_yaml(cls, path: Path = CONFIG_FILE) -> ModerationConfig:
        raw = read_yaml(path, "moderation config") or {}
        try:
            defaults = raw.get("defaults") or {}
            given = raw.get("categories") or {}
            merged = {name: {**defaults, **(given.get(name) or {})} for name in {*CATEGORIES, *given}}
            return cls(categories=merged)  # type: ignore[arg-type]  # pydantic validates the dicts
        except AttributeError as exc:  # a section that is not a mapping
            raise ConfigError(f"cannot read moderation config {path}: {exc}") from exc
        except ValidationError as exc:
            raise ConfigError(f"invalid moderation config {path}: {exc}") from exc

    def column(self, field: str) -> Floats:
        """One policy field for every category, in CATEGORIES order, for vectorised comparisons."""
        return np.array([getattr(self.categories[c], field) for c in CATEGORIES], dtype=np.float64)


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


# ------------------------------------------------------------------------------------------------ scoring
class Moderator:
    """Scores texts per category and turns the scores into `Moderation` results."""

    def __init__(
        self, heads: ModerationHeads, profanity: ProfanityModel, config: ModerationConfig, *, from_cache: bool
    ) -> None:
        self.heads = heads
        self.profanity = profanity
        self.config = config
        self.from_cache = from_cache  # False when load() had to fit the heads
        self._threshold = config.column("threshold")
        self._low = config.column("uncertain_low")
        self._high = config.column("uncertain_high")

    @classmethod
    def load(
        cls, encoder: Encoder, cache_dir: Path, config: ModerationConfig | None = None, *, seed: Path = SEED_FILE
    ) -> Moderator:
        """Cached heads for this encoder and seed file, fitted (seconds) and cached when absent."""
        config = config or ModerationConfig.from_yaml()
        profanity = ProfanityModel.load()
        path = heads_path(cache_dir, encoder, seed)
        heads = ModerationHeads.read(path)
        if heads is not None:
            return cls(heads, profanity, config, from_cache=True)
        texts, labels = read_labelled(seed)
        heads = fit_heads(encoder.embed(texts), labels, profanity.probability(texts))
        heads.save(path)
        return cls(heads, profanity, config, from_cache=False)

    def scores(self, texts: Sequence[str], vectors: NDArray[np.floating]) -> Floats:
        """(texts, categories) calibrated scores, columns in CATEGORIES order."""
        if len(texts) != len(vectors):
            raise InferenceError(f"moderation got {len(texts)} texts but {len(vectors)} vectors")
        if not texts:
            return np.zeros((0, len(CATEGORIES)))
        if vectors.ndim != 2 or vectors.shape[1] != self.heads.coef.shape[0]:
            raise InferenceError(
                f"moderation expects ({len(texts)}, {self.heads.coef.shape[0]}) vectors, got {vectors.shape}"
            )
        return self.heads.scores(vectors, self.profanity.probability(texts))

    def moderate(self, texts: Sequence[str], vectors: NDArray[np.floating]) -> list[Moderation]:
        """One result per text; `vectors` are the texts' embeddings from the shared encoder pass."""
        # Decide on the rounded scores the result reports, so a reader never sees 0.4 unflagged at 0.4.
        scores = np.round(self.scores(texts, vectors), 4)
        certainty = self._certainty(scores)
        confidence = np.round(certainty.min(axis=1), 4).tolist()
        # Whole-batch masks turned into Python lists once: per-item numpy calls cost more than the scoring.
        flagged = (scores >= self._threshold).tolist()
        uncertain = ((scores >= self._low) & (scores <= self._high)).tolist()
        return [
            Moderation(
                flagged=any(flagged[i]),
                confidence=confidence[i],
                categories=dict(zip(CATEGORIES, row, strict=True)),
                flagged_categories=_names(flagged[i]),
                uncertain_categories=_names(uncertain[i]),
                reasons=self._reasons(scores[i], certainty[i]) if confidence[i] < 1.0 else [],
            )
            for i, row in enumerate(scores.tolist())
        ]

    def _certainty(self, scores: Floats) -> Floats:
        """Per category, how far the score is from its threshold, on a scale the band defines.

        0 at the threshold, 0.5 at the band's edge, 1 from halfway between that edge and 0 (or 1) onwards;
        linear in between. Below 0.5 exactly when the score is inside the uncertain band.
        """
        above = scores >= self._threshold
        edge = np.where(above, self._high, self._low)
        far = np.where(above, (self._high + 1.0) / 2.0, self._low / 2.0)
        distance = np.abs(scores - self._threshold)
        band = np.abs(edge - self._threshold)
        beyond = np.maximum(np.abs(far - edge), 1e-12)  # a band reaching 0 or 1 leaves no room beyond it
        inside = 0.5 * distance / band
        outside = 0.5 + 0.5 * np.minimum(1.0, (distance - band) / beyond)
        out: Floats = np.where(distance <= band, inside, outside)
        return out

    def _reasons(self, scores: Floats, certainty: Floats) -> list[str]:
        """Why confidence is low: every category that is not far from its threshold, least certain first."""
        return [self._reason(int(k), float(scores[k])) for k in np.argsort(certainty) if certainty[k] < 1.0]

    def _reason(self, k: int, score: float) -> str:
        name, low, high = CATEGORIES[k], self._low[k], self._high[k]
        if low <= score <= high:
            return f"{name} score {score:.2f} is inside the uncertain band [{low:.2f}, {high:.2f}]"
        return f"{name} score {score:.2f} is near its threshold {self._threshold[k]:.2f} (band [{low:.2f}, {high:.2f}])"


def _names(mask: list[bool]) -> list[str]:
    return [name for name, on in zip(CATEGORIES, mask, strict=True) if on]


# --------------------------------------------------------------------------------------------- evaluation
