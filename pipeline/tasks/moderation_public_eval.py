"""Measure the shipped moderation on the public data's held-out parts, beside alt-profanity-check alone.

`python -m pipeline.tasks.moderation_public_eval --data-dir ../shared/data [--precision int8|fp32]` prints, per test
part (never trained or tuned on: pipeline/tasks/moderation_public.py): ROC-AUC and precision / recall / F1 of
`flagged` (and of `hate` on HatEval), per-category flag rates on benign sets, the share that would escalate (a score
inside a category's uncertain band), profanity-check alone on the same texts, the project-written eval set's
figure, and the per-text scoring cost. Figures for docs/moderation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import MinnowError
from pipeline.tasks.moderate import CATEGORIES, Floats, Moderator
from pipeline.tasks.moderation_eval import median_ms
from pipeline.tasks.moderation_public import Part, embed_part, public_parts

PROFANITY_CHECK_AT = 0.5  # the library's own `predict` cut


def _binary(truth: NDArray[np.bool_], guess: NDArray[np.bool_], score: Floats) -> dict[str, float]:
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    p, r, f, _ = precision_recall_fscore_support(truth, guess, average="binary", zero_division=0)
    return {
        "roc_auc": round(float(roc_auc_score(truth, score)), 4),
        "precision": round(float(p), 4),
        "recall": round(float(r), 4),
        "f1": round(float(f), 4),
    }


def measure_part(moderator: Moderator, part: Part, vectors: NDArray[np.float32]) -> dict[str, Any]:
    """One test part: Minnow's figures and profanity-check's on the same texts."""
    results = moderator.moderate(part.texts, vectors)
    scores = np.array([[r.categories[c] for c in CATEGORIES] for r in results])
    flagged = np.array([r.flagged for r in results])
    per_category = scores >= moderator.config.column("threshold")
    baseline = moderator.profanity.probability(part.texts)
    out: dict[str, Any] = {
        "items": len(part.texts),
        "flagged_rate": round(float(flagged.mean()), 4),
        "escalated_rate": round(float(np.mean([bool(r.uncertain_categories) for r in results])), 4),
        "profanity_check_flagged_rate": round(float((baseline >= PROFANITY_CHECK_AT).mean()), 4),
    }
    if part.benign:
        out["category_flag_rates"] = {c: round(float(per_category[:, k].mean()), 4) for k, c in enumerate(CATEGORIES)}
        out["category_escalation_rates"] = {
            c: round(float(np.mean([c in r.uncertain_categories for r in results])), 4) for c in CATEGORIES
        }
        return out
    known = part.labels >= 0
    truth = ((part.labels == 1) & known).any(axis=1)
    out["positives"] = int(truth.sum())
    out["flagged"] = _binary(truth, flagged, scores.max(axis=1))
    out["profanity_check"] = _binary(truth, baseline >= PROFANITY_CHECK_AT, baseline)
    for k, c in enumerate(CATEGORIES):
        if c == "hate" and known[:, k].all():
            out["hate"] = _binary(part.labels[:, k] == 1, per_category[:, k], scores[:, k])
    out["escalated_rate_of_positives"] = round(
        float(np.mean([bool(r.uncertain_categories) for r, t in zip(results, truth, strict=True) if t])), 4
    )
    return out


def scoring_cost(
    moderator: Moderator, texts: Sequence[str], vectors: NDArray[np.float32], repeats: int = 20
) -> dict[str, float]:
    """Median milliseconds per 64 texts: the whole moderate() call and its parts."""
    texts, vectors = list(texts[:64]), vectors[:64]
    calls = {
        "moderate_ms_per_64": lambda: moderator.moderate(texts, vectors),
        "ngram_features_ms_per_64": lambda: moderator.lexical.features(texts),
        "profanity_check_ms_per_64": lambda: moderator.profanity.probability(texts),
    }
    return {name: round(median_ms(call, repeats), 2) for name, call in calls.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tasks.moderation_public_eval", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="the shared public data folder")
    parser.add_argument("--precision", choices=["int8", "fp32"], default="int8", help="the encoder's precision")
    parser.add_argument("--cache", type=Path, default=Path("/tmp"), help="where embeddings are cached (npz)")
    args = parser.parse_args(argv)
    from pipeline.engine import load_encoder
    from pipeline.settings import EngineSettings, load_settings
    from pipeline.tasks.moderation_eval import evaluate

    try:
        engine = load_settings().engine
        encoder = load_encoder(EngineSettings(cache_dir=engine.cache_dir, precision=args.precision, intra_op_threads=1))
        moderator = Moderator.load()
        report: dict[str, Any] = {"precision": args.precision}
        tests = [p for p in public_parts(args.data_dir) if p.split == "test"]
        for part in tests:
            vectors = embed_part(encoder, part, args.cache)
            report[part.name] = measure_part(moderator, part, vectors)
            print(f"measured {part.name}", file=sys.stderr)
        benign = [report[p.name] for p in tests if p.benign]
        report["benign_all"] = {
            "items": sum(b["items"] for b in benign),
            "flagged_rate": round(
                sum(b["flagged_rate"] * b["items"] for b in benign) / sum(b["items"] for b in benign), 4
            ),
            "escalated_rate": round(
                sum(b["escalated_rate"] * b["items"] for b in benign) / sum(b["items"] for b in benign), 4
            ),
        }
        project = evaluate(moderator, encoder)
        report["project_eval"] = {
            "items": project["items"],
            "flagged": project["flagged"],
            "uncertain_rate": project["uncertain_rate"],
            "category_roc_auc": {c: m["roc_auc"] for c, m in project["categories"].items()},
        }
        offensive = tests[0]
        report["cost"] = scoring_cost(moderator, offensive.texts, embed_part(encoder, offensive, args.cache))
    except MinnowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
