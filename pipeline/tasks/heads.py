"""Trained classification heads: fit a logistic regression on embeddings, calibrate it, save it as JSON."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import ConfigError
from pipeline.tasks import lexical
from pipeline.tasks.calibration import expected_calibration_error, fit_temperature, nll, softmax

# 2: heads may carry a lexical channel (hashed n-grams of the text). Files of format 1 still load (no channel).
HEAD_FORMAT = "minnow-heads-2"
READABLE_FORMATS = ("minnow-heads-1", HEAD_FORMAT)
# Training rows with this label are requests the label set does not cover: they fit the out-of-scope threshold
# and are never a class of the head (CLINC150 calls them `oos`).
OUT_OF_SCOPE_LABEL = "oos"
# Without out-of-scope examples, the threshold escalates this share of held-out in-scope items; with them, the
# smallest share up to OUT_OF_SCOPE_MAX_RATE that escalates OUT_OF_SCOPE_RECALL of them.
OUT_OF_SCOPE_RATE = 0.03
OUT_OF_SCOPE_MAX_RATE = 0.08
OUT_OF_SCOPE_RECALL = 0.9
# Logistic regression's C, tried in order; measured on banking77 (60 % train): C=16 0.917 accuracy vs C=4 0.910.
REGULARIZATION = (4.0, 16.0)
MIN_HOLDOUT_TO_CHOOSE = 200
# With the texts, one more candidate: the embedding (scaled by EMBEDDING_SCALE) next to hashed n-grams, C =
# LEXICAL_C; it is kept when its calibrated held-out log-loss is the lowest. Measured on banking77 (60 % train,
# temperature on 20 %, 20 % held out): accuracy 0.899 -> 0.911; C 8/16/32 and scale 1/2 within 0.003 of each other.
EMBEDDING_SCALE = 2.0
LEXICAL_C = 8.0
LEXICAL_MIN_COUNT = 2  # n-gram buckets seen in fewer training texts get no weight (keeps the head file small)


class LexicalChannel(BaseModel):
    """Weights of the hashed n-gram buckets seen in training (pipeline/tasks/lexical.py), added to the logits."""

    model_config = ConfigDict(frozen=True)

    recipe: str = lexical.LEXICAL_RECIPE
    buckets: list[int]  # sorted
    # (buckets, labels) float16, little-endian, row-major, base64: 2 bytes a weight instead of ~20 as JSON numbers.
    # float16 moves a logit by about 0.002 (weights under 10 and ~120 features of ~0.09 each): far below noise.
    weights: str

    @classmethod
    def from_array(cls, buckets: NDArray[np.int64], weights: NDArray[np.float64]) -> LexicalChannel:
        raw = np.ascontiguousarray(weights, dtype="<f2").tobytes()
        return cls(buckets=[int(b) for b in buckets], weights=base64.b64encode(raw).decode("ascii"))

    @cached_property
    def _arrays(self) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        w = np.frombuffer(base64.b64decode(self.weights), dtype="<f2").astype(np.float64)
        return np.asarray(self.buckets, dtype=np.int64), w.reshape(len(self.buckets), -1)

    def scores(self, texts: Sequence[str]) -> NDArray[np.float64]:
        buckets, weights = self._arrays
        return lexical.scores(lexical.batch_features(texts), buckets, weights)


class LinearHead(BaseModel):
    """Multinomial logistic regression over embeddings, with a fitted temperature."""

    model_config = ConfigDict(frozen=True)

    labels: list[str]
    coef: list[list[float]]  # (labels, dim)
    intercept: list[float]
    temperature: float = 1.0
    metrics: dict[str, float] = Field(default_factory=dict)
    examples: int = 0
    # Out of scope: 1 - the highest cosine to a class centroid (the mean of the class's unit training vectors).
    # Measured on CLINC150 against max-softmax, max-logit, energy and Mahalanobis: as good as the best, and cheap
    # (docs/classification.md). Empty centroids: a head from before, with no out-of-scope score.
    centroids: list[list[float]] = Field(default_factory=list)
    out_of_scope_threshold: float | None = None
    # Hashed n-grams of the text, next to the embedding: None for an embedding-only head (and every format-1 head).
    lexical: LexicalChannel | None = None

    @cached_property
    def _arrays(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Weights, intercepts and centroids as arrays, converted once (from lists: about 5 ms for 77 labels)."""
        return (
            np.asarray(self.coef, dtype=np.float64),
            np.asarray(self.intercept, dtype=np.float64),
            np.asarray(self.centroids, dtype=np.float64),
        )

    def out_of_scope(self, vectors: NDArray[np.float32]) -> NDArray[np.float64] | None:
        """Distance to the nearest class centroid (0 = on a centroid, 2 = opposite); None without centroids."""
        if not self.centroids:
            return None
        return _centroid_distance(vectors, self._arrays[2])

    def logits(self, vectors: NDArray[np.float32], texts: Sequence[str] | None = None) -> NDArray[np.float64]:
        """Uncalibrated logits; `texts` (the embedded texts, aligned) are needed by a head with a lexical channel."""
        w, b, _ = self._arrays
        out: NDArray[np.float64] = vectors.astype(np.float64) @ w.T + b
        if self.lexical is not None:
            if texts is None or len(texts) != len(vectors):
                # Scoring without the words would give other probabilities than the ones calibrated: refuse.
                raise ValueError("this head has a lexical channel: pass the texts aligned with the vectors")
            out += self.lexical.scores(texts)
        return out

    def predict_proba(self, vectors: NDArray[np.float32], texts: Sequence[str] | None = None) -> NDArray[np.float64]:
        return softmax(self.logits(vectors, texts), self.temperature)


class HeadFile(BaseModel):
    """What `minnow train` writes: heads and zero-shot temperatures per family, tied to one model version."""

    model_config = ConfigDict(frozen=True)

    format: str = HEAD_FORMAT
    model_version: str = ""
    trained_at: str = ""
    heads: dict[str, LinearHead]
    zero_shot_temperature: dict[str, float]

    def out_of_scope_threshold(self, family: str) -> float | None:
        head = self.heads.get(family)
        return head.out_of_scope_threshold if head is not None else None

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
        if head.format not in READABLE_FORMATS:
            raise ConfigError(f"{path} has format {head.format!r}; this Minnow reads {', '.join(READABLE_FORMATS)}")
        for family, one in head.heads.items():
            if one.lexical is not None and one.lexical.recipe != lexical.LEXICAL_RECIPE:
                raise ConfigError(
                    f"{path}: the '{family}' head's n-gram features are {one.lexical.recipe!r}, this Minnow computes "
                    f"{lexical.LEXICAL_RECIPE!r}; retrain with `minnow train`"
                )
        if model_version and head.model_version and head.model_version.split("+")[-1] != model_version.split("+")[-1]:
            # Heads are fitted in one embedding space; another model's vectors would be scored nonsensically.
            raise ConfigError(
                f"{path} was trained for model {head.model_version}, but the engine runs {model_version}; "
                "retrain with `minnow train`"
            )
        return head


def _centroids(vectors: NDArray[np.float32], y: NDArray[np.int64], classes: int) -> NDArray[np.float64]:
    unit = _unit(vectors)
    # A class absent from a small training part gets a zero centroid: nothing is near it.
    means = np.stack([unit[y == c].mean(axis=0) if (y == c).any() else np.zeros(unit.shape[1]) for c in range(classes)])
    return _unit(means)


def _unit(vectors: NDArray[np.floating]) -> NDArray[np.float64]:
    v = np.asarray(vectors, dtype=np.float64)
    out: NDArray[np.float64] = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return out


def _centroid_distance(vectors: NDArray[np.floating], centroids: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = 1.0 - (_unit(vectors) @ centroids.T).max(axis=1)
    return out


def fit_out_of_scope_threshold(
    in_scope: NDArray[np.float64], out_of_scope: NDArray[np.float64] | None
) -> tuple[float | None, dict[str, float]]:
    """The distance above which an item is out of scope, from held-out in-scope distances (and out-of-scope ones).

    A conformal quantile of the held-out in-scope distances: for a share r, the ceil((n + 1)(1 - r))-th smallest,
    so that a new in-scope item exceeds it with probability at most r (exchangeability; Vovk et al.). r is
    OUT_OF_SCOPE_RATE, or with out-of-scope examples the smallest share (1 %, 2 %, ... up to OUT_OF_SCOPE_MAX_RATE)
    that escalates OUT_OF_SCOPE_RECALL of them. None (no out-of-scope score) when too few items are held out
    for the share: fewer than 1 / r - 1."""

    def quantile(rate: float) -> float | None:
        ordered = np.sort(in_scope)
        k = int(np.ceil((len(ordered) + 1) * (1 - rate)))
        return float(ordered[k - 1]) if k <= len(ordered) else None

    rate = OUT_OF_SCOPE_RATE
    if out_of_scope is not None and len(out_of_scope):
        rate = OUT_OF_SCOPE_MAX_RATE
        for r in np.round(np.arange(0.01, OUT_OF_SCOPE_MAX_RATE + 1e-9, 0.01), 2):
            t = quantile(float(r))
            if t is not None and float((out_of_scope > t).mean()) >= OUT_OF_SCOPE_RECALL:
                rate = float(r)
                break
    threshold = quantile(rate)
    if threshold is None:
        return None, {}
    metrics = {"oos_holdout_in_scope_escalated": float((in_scope > threshold).mean())}
    if out_of_scope is not None and len(out_of_scope):
        metrics["oos_train_escalated"] = float((out_of_scope > threshold).mean())
        metrics["oos_train_examples"] = float(len(out_of_scope))
    return threshold, metrics


def _split(n: int, holdout: float, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    cut = max(1, round(n * holdout))
    return order[cut:], order[:cut]


def _design(
    vectors: NDArray[np.float32], features: lexical.Sparse | None, rows: NDArray[np.int64], kept: NDArray[np.int64]
) -> Any:
    """The rows' inputs: the embedding alone, or (scaled) next to the kept n-gram buckets as one sparse matrix."""
    if features is None:
        return vectors[rows]
    import scipy.sparse as sp

    col, found = lexical.columns(features, kept)
    grams = sp.csr_matrix((features.values[found], (features.rows[found], col[found])), shape=(features.n, len(kept)))[
        rows
    ]
    return sp.hstack([sp.csr_matrix(vectors[rows].astype(np.float64) * EMBEDDING_SCALE), grams]).tocsr()


def _kept_buckets(features: lexical.Sparse, rows: NDArray[np.int64]) -> NDArray[np.int64]:
    """Buckets present in at least LEXICAL_MIN_COUNT of the rows' texts, sorted."""
    mine = np.isin(features.rows, rows)
    buckets, counts = np.unique(features.buckets[mine], return_counts=True)
    out: NDArray[np.int64] = buckets[counts >= LEXICAL_MIN_COUNT]
    return out


def fit_head(
    vectors: NDArray[np.float32],
    labels: list[str],
    label_names: list[str],
    *,
    holdout: float = 0.2,
    seed: int = 7,
    oos_vectors: NDArray[np.float32] | None = None,
    texts: Sequence[str] | None = None,
) -> LinearHead:
    """Fit on (1 - holdout), fit the temperature and the out-of-scope threshold and measure on the held-out part,
    then refit on everything. `oos_vectors`: examples outside the label set (label `oos`), for the threshold.
    `texts` (aligned with `vectors`): the embedded texts, which make a lexical channel a candidate."""
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
    if texts is not None and len(texts) != len(vectors):
        raise ValueError("texts and vectors must align")

    def model(c: float) -> Any:
        return LogisticRegression(C=c, max_iter=2000, class_weight="balanced")

    train, held = _split(len(y), holdout, seed)
    # Candidates (C, with n-grams): the one with the lowest calibrated held-out NLL; a small holdout would choose by
    # noise, so it gets the first alone (the embedding, C=4).
    candidates: list[tuple[float, bool]] = [(c, False) for c in REGULARIZATION]
    features = lexical.batch_features(texts) if texts is not None else None
    if features is not None:
        candidates.append((LEXICAL_C, True))
    fits = []
    for c, grams in candidates if len(held) >= MIN_HOLDOUT_TO_CHOOSE else candidates[:1]:
        used = features if grams else None
        kept = _kept_buckets(used, train) if used is not None else np.zeros(0, dtype=np.int64)
        fitted = model(c).fit(_design(vectors, used, train, kept), y[train])
        logits = _two_column(fitted.decision_function(_design(vectors, used, held, kept)))
        t = fit_temperature(logits, y[held])
        fits.append((nll(logits, y[held], t), c, grams, logits, t))
    _, chosen, with_grams, held_logits, temperature = min(fits, key=lambda f: f[0])
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
        "regularization_c": chosen,
        "lexical": float(with_grams),
    }
    train_centroids = _centroids(vectors[train], y[train], len(label_names))
    oos_threshold, oos_metrics = fit_out_of_scope_threshold(
        _centroid_distance(vectors[held], train_centroids),
        _centroid_distance(oos_vectors, train_centroids) if oos_vectors is not None and len(oos_vectors) else None,
    )
    metrics.update(oos_metrics)
    everything = np.arange(len(y), dtype=np.int64)
    used = features if with_grams else None
    kept = _kept_buckets(used, everything) if used is not None else np.zeros(0, dtype=np.int64)
    full = model(chosen).fit(_design(vectors, used, everything, kept), y)
    coef, intercept = full.coef_, full.intercept_
    if len(label_names) == 2:  # sklearn keeps one row for two classes; softmax over (-z/2, z/2) is sigmoid(z)
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    dim = vectors.shape[1]
    # The embedding's scale is folded into its weights: at run time the vector is used as it comes.
    embedding_coef = coef[:, :dim] * (EMBEDDING_SCALE if with_grams else 1.0)
    return LinearHead(
        labels=label_names,
        coef=embedding_coef.tolist(),
        intercept=intercept.tolist(),
        temperature=temperature,
        metrics=metrics,
        examples=len(y),
        centroids=_centroids(vectors, y, len(label_names)).tolist(),
        out_of_scope_threshold=oos_threshold,
        lexical=LexicalChannel.from_array(kept, coef[:, dim:].T) if with_grams else None,
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
            + (f", with {len(head.lexical.buckets)} n-gram buckets" if head.lexical is not None else "")
        )
        if head.out_of_scope_threshold is not None:
            seen = m.get("oos_train_escalated")
            known = f", {seen:.1%} of {int(m.get('oos_train_examples', 0))} out-of-scope examples" if seen else ""
            lines.append(
                f"    out of scope above distance {head.out_of_scope_threshold:.3f}: escalates "
                f"{m.get('oos_holdout_in_scope_escalated', 0):.1%} of held-out in-scope items" + known
            )
    for family, t in head_file.zero_shot_temperature.items():
        lines.append(f"  {family}: zero-shot temperature {t:.4f}")
    return "\n".join(lines)
