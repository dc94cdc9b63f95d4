"""Fit the summary model on the fitting part of the public dialogue sets and write pipeline/data/summary_model.json.

    python -m pipeline.tasks.summary_train --data-dir ../shared/data

1. Every candidate sentence of every fitting dialogue (SAMSum validation and DialogSum dev, the `fit` part of
   `summary_public.part_of`) is labelled 1 when the greedy ROUGE oracle picks it: sentences added one at a time
   while the mean of ROUGE-1 and ROUGE-2 F1 against the reference (rouge-score's stemmed tokens) still rises.
2. Boosted trees (scikit-learn's HistGradientBoostingClassifier, fixed iterations, fixed seed) learn those labels
   from `summary_features.FEATURES`; they are exported as plain arrays.
3. The summarizer then runs on every fitting dialogue with trees fitted on the other folds (5-fold cross-fitting),
   and a ridge regression learns each summary's ROUGE-1 F1 from `summary_model.QUALITY_FEATURES` (each weighed
   once for all and once more for spoken transcripts): the summary's confidence. How well such an estimate ranks
   summaries of fitting dialogues it did not see (5-fold, Spearman per set) is printed and kept with the model.

The held-out part is never read here; `summary_public_eval` reports on it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from pipeline.settings import SummarySettings
from pipeline.tasks.rouge import rouge_n, rouge_scores, stemmed_tokens
from pipeline.tasks.summary_features import FEATURES, Candidates, candidates
from pipeline.tasks.summary_model import (
    GROUP_FEATURE,
    MODEL_PATH,
    QUALITY_FEATURES,
    Quality,
    SummaryModel,
    Trees,
    trees_from_json,
)
from pipeline.tasks.summary_public import HELD_OUT_SHARE, SETS, read_set

if TYPE_CHECKING:
    from pipeline.tasks.summary_eval import EmbeddedDialogue

TREES = 150
LEARNING_RATE = 0.05
MAX_LEAF_NODES = 15
QUALITY_ALPHA = 10.0  # ridge penalty on the standardised quality features and their transcript-only copies
QUALITY_FOLDS = 5


def oracle(texts: Sequence[str], reference: str) -> list[int]:
    """Greedy extractive oracle: add the sentence that most raises mean ROUGE-1/2 F1 until none does."""
    ref = stemmed_tokens(reference)
    tokens = [stemmed_tokens(t) for t in texts]
    chosen: list[int] = []
    best = 0.0
    while True:
        gain: tuple[float, int] | None = None
        for j in range(len(tokens)):
            if j in chosen:
                continue
            summary = [t for k in sorted([*chosen, j]) for t in tokens[k]]
            score = (rouge_n(summary, ref, 1) + rouge_n(summary, ref, 2)) / 2
            if score > best + 1e-9 and (gain is None or score > gain[0]):
                gain = (score, j)
        if gain is None:
            return sorted(chosen)
        best, pick = gain
        chosen.append(pick)


def export_trees(model: Any) -> dict[str, Any]:
    """A fitted HistGradientBoostingClassifier as padded arrays (`summary_model.Trees`): leaves point to themselves."""
    predictors = [p[0].nodes for p in model._predictors]
    width = max(len(nodes) for nodes in predictors)
    shape = (len(predictors), width)
    feature = np.zeros(shape, dtype=np.int64)
    threshold = np.zeros(shape)
    left = np.tile(np.arange(width), (len(predictors), 1))
    right = left.copy()
    value = np.zeros(shape)
    depth = 0
    for t, nodes in enumerate(predictors):
        for n, node in enumerate(nodes):
            if node["is_leaf"]:
                value[t, n] = node["value"]
            else:
                feature[t, n] = node["feature_idx"]
                threshold[t, n] = node["num_threshold"]
                left[t, n], right[t, n] = node["left"], node["right"]
        depth = max(depth, int(nodes["depth"].max()))
    return {
        "feature": feature.tolist(),
        "threshold": threshold.tolist(),  # exact: thresholds sit on observed values, rounding would move rows
        "left": left.tolist(),
        "right": right.tolist(),
        "value": [[float(f"{v:.6g}") for v in row] for row in value],
        "depth": depth,
        "baseline": float(np.ravel(model._baseline_prediction)[0]),
    }


def fit(
    dialogues: list[EmbeddedDialogue], settings: SummarySettings, *, trees: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Fit the trees (unless `trees` are given: kept as they are), then the quality estimate, on `dialogues`; the
    JSON body of summary_model.json."""
    pools = [candidates(d.segments, d.vectors, d.doc_vector, d.speakers) for d in dialogues]
    labels = [
        np.isin(np.arange(len(p.texts)), oracle(p.texts, d.reference)) for p, d in zip(pools, dialogues, strict=True)
    ]
    trees_body = trees if trees is not None else fit_trees(pools, labels)
    q, r1 = cross_fitted_quality_rows(dialogues, pools, labels, settings)
    quality = fit_quality(q, r1)
    y = np.concatenate(labels)
    sets = [d.id.split("-", 1)[0] for d in dialogues]  # summary_public names ids "<set>-<row id>"
    return {
        "features": list(FEATURES),
        "trees": trees_body,
        "quality": {
            "features": list(QUALITY_FEATURES),
            "group_feature": GROUP_FEATURE,
            "alpha": QUALITY_ALPHA,
            "mean": quality.mean.tolist(),
            "scale": quality.scale.tolist(),
            "coef": quality.coef.tolist(),
            "intercept": quality.intercept,
            "cv_spearman_rouge1": {k: round(v, 3) for k, v in quality_cv(q, r1, sets).items()},
        },
        "oracle_positive_share": round(float(y.mean()), 4),
        "candidates": len(y),
    }


def cross_fitted_quality_rows(
    dialogues: Sequence[EmbeddedDialogue],
    pools: Sequence[Candidates],
    labels: Sequence[NDArray[np.bool_]],
    settings: SummarySettings,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Quality features and ROUGE-1 F1 of every dialogue's summary, made by trees fitted on the other folds.

    On new dialogues the trees' scores are less sure than on the ones they were fitted on, and the estimate must
    read scores as they will be. Rows are in the order of `dialogues`.
    """
    from sklearn.model_selection import KFold

    q = np.zeros((len(dialogues), len(QUALITY_FEATURES)))
    r1 = np.zeros(len(dialogues))
    for train, held in KFold(QUALITY_FOLDS, shuffle=True, random_state=0).split(np.arange(len(dialogues))):
        fold_trees = trees_from_json(fit_trees([pools[i] for i in train], [labels[i] for i in train]))
        for i in held:
            q[i], r1[i] = _quality_row(dialogues[i], fold_trees, settings)
    return q, r1


def fit_quality(q: NDArray[np.float64], r1: NDArray[np.float64], alpha: float = QUALITY_ALPHA) -> Quality:
    """Ridge regression (intercept not penalised) of ROUGE-1 F1 on `Quality.design` of the standardised rows."""
    mean, scale = q.mean(axis=0), q.std(axis=0)
    scale[scale == 0] = 1.0
    blank = Quality(mean, scale, np.zeros(2 * q.shape[1] + 1), 0.0)
    x = blank.design(q)
    x_mean, y_mean = x.mean(axis=0), float(r1.mean())
    xc = x - x_mean
    coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (r1 - y_mean))
    return Quality(mean, scale, coef, float(y_mean - x_mean @ coef))


def quality_cv(
    q: NDArray[np.float64], r1: NDArray[np.float64], groups: Sequence[str], folds: int = QUALITY_FOLDS
) -> dict[str, float]:
    """Spearman of out-of-fold quality estimates with ROUGE-1, per group (the set each row comes from): how well an
    estimate fitted this way ranks summaries of dialogues it did not see."""
    from scipy.stats import spearmanr
    from sklearn.model_selection import KFold

    predicted = np.zeros(len(r1))
    for train, held in KFold(folds, shuffle=True, random_state=0).split(q):
        quality = fit_quality(q[train], r1[train])
        predicted[held] = quality.design(q[held]) @ quality.coef + quality.intercept
    names = np.asarray(groups)
    return {g: float(spearmanr(predicted[names == g], r1[names == g]).statistic) for g in sorted(set(groups))}


def fit_trees(pools: Sequence[Candidates], labels: Sequence[NDArray[np.bool_]]) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = np.vstack([p.features for p in pools])
    y = np.concatenate(labels).astype(int)
    clf = HistGradientBoostingClassifier(
        max_iter=TREES, learning_rate=LEARNING_RATE, max_leaf_nodes=MAX_LEAF_NODES, early_stopping=False, random_state=0
    ).fit(x, y)
    body = export_trees(clf)
    assert np.allclose(trees_from_json(body).logit(x[:500]), clf.decision_function(x[:500]), atol=1e-4)  # exact
    return body


def _quality_row(d: EmbeddedDialogue, trees: Trees, settings: SummarySettings) -> tuple[NDArray[np.float64], float]:
    """The quality features of the summary `trees` make of `d`, exactly as the summarizer computes them, and that
    summary's ROUGE-1 F1."""
    from pipeline.tasks.summarize import summarize_with_quality

    n = len(QUALITY_FEATURES)
    blank = Quality(np.zeros(n), np.ones(n), np.zeros(2 * n + 1), 0.0)
    s, q = summarize_with_quality(
        d.segments,
        d.vectors,
        d.doc_vector,
        speakers=d.speakers,
        settings=settings,
        model=SummaryModel(trees, blank, {}),
    )
    return q, rouge_scores(s.text, d.reference)["rouge1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument("--out", type=Path, default=MODEL_PATH, help="where to write the model")
    parser.add_argument(
        "--quality-only",
        action="store_true",
        help="keep the trees of the model at --out and refit the quality estimate only (int8 embeddings differ a "
        "little between CPUs, and refitted trees would change every summary)",
    )
    args = parser.parse_args(argv)

    from pipeline.engine import load_encoder
    from pipeline.settings import load_settings
    from pipeline.tasks.summary_eval import embed_dialogues

    settings = load_settings()
    encoder = load_encoder(settings.engine)
    dialogues = []
    counts = {}
    for spec in SETS:
        records = read_set(args.data_dir, spec, "fit")
        counts[spec.file] = len(records)
        dialogues += embed_dialogues(encoder, records, unit="turn")
    kept = json.loads(args.out.read_text(encoding="utf-8")) if args.quality_only else None
    body = fit(dialogues, settings.summary, trees=kept["trees"] if kept else None)
    fitted_at = datetime.now(UTC).strftime("%Y-%m-%d")
    if kept:
        body["provenance"] = {
            **kept["provenance"],
            "quality_refit": {
                "command": "python -m pipeline.tasks.summary_train --data-dir ../shared/data --quality-only",
                "fitted_at": fitted_at,
                "encoder": f"{settings.engine.precision}",
            },
        }
        args.out.write_text(json.dumps(body, separators=(",", ":")) + "\n", encoding="utf-8")
        print(f"refitted the quality estimate in {args.out} (trees kept) on {len(dialogues)} dialogues")
        print(f"quality estimate, {QUALITY_FOLDS}-fold Spearman with ROUGE-1: {body['quality']['cv_spearman_rouge1']}")
        return 0
    body["provenance"] = {
        "fitted_on": counts,
        "part": f"fit: the {1 - HELD_OUT_SHARE:.0%} of each file not held out by summary_public.part_of",
        "licences": {"SAMSum": "CC BY-NC-ND 4.0", "DialogSum": "CC BY-NC-SA 4.0"},
        "encoder": f"{settings.engine.precision}",
        "settings": settings.summary.model_dump(),
        "command": "python -m pipeline.tasks.summary_train --data-dir ../shared/data",
        "fitted_at": fitted_at,
        "trees": {"iterations": TREES, "learning_rate": LEARNING_RATE, "max_leaf_nodes": MAX_LEAF_NODES},
    }
    args.out.write_text(json.dumps(body, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {body['candidates']} candidates, {len(dialogues)} dialogues")
    print(f"quality estimate, {QUALITY_FOLDS}-fold Spearman with ROUGE-1: {body['quality']['cv_spearman_rouge1']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
