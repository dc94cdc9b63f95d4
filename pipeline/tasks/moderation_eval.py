"""Measure moderation: per-category precision, recall, F1, ROC-AUC on labeled texts, and batch timing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.engine.encoder import Encoder
from pipeline.models import Moderation
from pipeline.tasks.moderate import CATEGORIES, EVAL_FILE, Floats, Moderator, read_labelled


def evaluate(moderator: Moderator, encoder: Encoder, path: Path = EVAL_FILE) -> dict[str, Any]:
    """Per-category precision, recall, F1, ROC-AUC and Brier score, and the same for `flagged` (any category)."""
    texts, labels = read_labelled(path)
    return evaluate_texts(moderator, encoder, texts, labels)


def evaluate_texts(
    moderator: Moderator,
    encoder: Encoder,
    texts: list[str],
    labels: NDArray[np.bool_],
    *,
    vectors: NDArray[np.float32] | None = None,
    results: list[Moderation] | None = None,
) -> dict[str, Any]:
    """The same report for texts and their (texts, categories) truth matrix (`vectors`: their embeddings, and
    `results`: what `moderate` made of them, when the caller has them already)."""
    from sklearn.metrics import brier_score_loss, precision_recall_fscore_support, roc_auc_score

    vectors = encoder.embed(texts) if vectors is None else vectors
    scores = moderator.scores(texts, vectors)
    results = moderator.moderate(texts, vectors) if results is None else results
    predicted = scores >= moderator.config.column("threshold")

    def summary(truth: NDArray[np.bool_], guess: NDArray[np.bool_], score: Floats) -> dict[str, float | None]:
        p, r, f, _ = precision_recall_fscore_support(truth, guess, average="binary", zero_division=0)
        auc = float(roc_auc_score(truth, score)) if 0 < truth.sum() < len(truth) else None
        brier = float(brier_score_loss(truth, score))
        return {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "roc_auc": auc,
            "brier": brier,
            "support": int(truth.sum()),
        }

    return {
        "items": len(texts),
        "categories": {name: summary(labels[:, k], predicted[:, k], scores[:, k]) for k, name in enumerate(CATEGORIES)},
        "flagged": summary(_any_row(labels), _any_row(predicted), scores.max(axis=1)),
        "uncertain_rate": float(np.mean([bool(r.uncertain_categories) for r in results])),
    }


def _any_row(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    return np.asarray(mask.any(axis=1), dtype=bool)


def median_ms(call: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of `repeats` calls, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def _per_batch_ms(moderator: Moderator, encoder: Encoder, batch: int = 64, repeats: int = 50) -> dict[str, float]:
    """Median milliseconds per batch for moderate() and for the profanity-check part alone."""
    from pipeline.tasks.profanity import library_model

    texts = (read_labelled(EVAL_FILE)[0] * batch)[:batch]
    vectors = encoder.embed(texts)
    vectorizer, library = library_model()
    return {
        "moderate_ms": median_ms(lambda: moderator.moderate(texts, vectors), repeats),
        "profanity_ms": median_ms(lambda: moderator.profanity.probability(texts), repeats),
        "sklearn_predict_proba_ms": median_ms(lambda: library.predict_proba(vectorizer.transform(texts)), repeats),
    }


if __name__ == "__main__":  # python -m pipeline.tasks.moderation_eval: the numbers in docs/moderation.md
    from pipeline.engine import load_encoder
    from pipeline.settings import load_settings

    engine = load_settings().engine
    enc = load_encoder(engine)
    mod = Moderator.load()
    print(json.dumps({"eval": evaluate(mod, enc), "batch_of_64": _per_batch_ms(mod, enc)}, indent=1))
