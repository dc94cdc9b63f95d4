"""Summaries on the held-out part of the public dialogue sets, against LEAD-3, LONGEST-3 and the ROUGE oracle.

    python -m pipeline.tasks.summary_public_eval --data-dir ../shared/data

For SAMSum validation and DialogSum dev, on the `held_out` part (`summary_public.part_of`: 40% of each file, never
used by `summary_train`), prints ROUGE-1/2/L F1 x 100 (rouge-score, stemming on) of Minnow, of LEAD-3 and
LONGEST-3 taken by turns and by sentences, and of the greedy extractive oracle; mean lengths in words; the Spearman
correlation of the summary's confidence with its own ROUGE-1; ROUGE-1 of escalated vs kept summaries at the
confidence threshold given; and the summarizer's time per dialogue (the encoder pass not included).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from pipeline.settings import SummarySettings
from pipeline.tasks.rouge import ROUGE_KEYS, rouge_scores
from pipeline.tasks.summarize import lead_n, longest_n, render_candidates, render_lines, summarize
from pipeline.tasks.summary_features import candidates
from pipeline.tasks.summary_model import SummaryModel, load_summary_model, trees_from_json
from pipeline.tasks.summary_public import SETS, Part, read_set
from pipeline.tasks.summary_train import oracle

if TYPE_CHECKING:
    from pipeline.engine.encoder import Encoder
    from pipeline.tasks.summary_eval import EmbeddedDialogue

BASELINE_UNITS = 3
LOWEST_SHARE = 0.2  # escalating this share of least confident summaries: what do they score, what does the rest
BOOTSTRAP_RESAMPLES = 1000  # for the confidence's Spearman interval: a few hundred dialogues leave it wide
METHODS = ("minnow", "lead3_turns", "longest3_turns", "lead3_sentences", "longest3_sentences", "oracle")


def outputs(
    d: EmbeddedDialogue, settings: SummarySettings, model: SummaryModel | None = None
) -> tuple[dict[str, str], float, float]:
    """Every method's summary of one dialogue, Minnow's confidence and the milliseconds Minnow took."""
    started = time.perf_counter()
    s = summarize(d.segments, d.vectors, d.doc_vector, speakers=d.speakers, settings=settings, model=model)
    ms = (time.perf_counter() - started) * 1000
    pool = candidates(d.segments, d.vectors, d.doc_vector, d.speakers)
    longest = sorted(range(len(pool.texts)), key=lambda j: -len(pool.texts[j]))[:BASELINE_UNITS]
    texts = {
        "minnow": s.text,
        "lead3_turns": render_lines(lead_n(d.segments, BASELINE_UNITS), d.segments, d.speakers),
        "longest3_turns": render_lines(longest_n(d.segments, BASELINE_UNITS), d.segments, d.speakers),
        "lead3_sentences": render_candidates(pool, list(range(min(BASELINE_UNITS, len(pool.texts)))), d.speakers),
        "longest3_sentences": render_candidates(pool, longest, d.speakers),
        "oracle": render_candidates(pool, oracle(pool.texts, d.reference), d.speakers),
    }
    return texts, s.confidence, ms


def evaluate(
    dialogues: list[EmbeddedDialogue],
    settings: SummarySettings,
    min_confidence: float,
    models: Sequence[SummaryModel | None] | None = None,
) -> dict[str, Any]:
    """Scores, lengths, confidence quality and speed over `dialogues` (`models[i]` summarizes dialogue i; default:
    the shipped model)."""
    from scipy.stats import spearmanr

    per: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    words: dict[str, list[int]] = {m: [] for m in (*METHODS, "reference")}
    confidence: list[float] = []
    times: list[float] = []
    for i, d in enumerate(dialogues):
        texts, confidence_of_d, ms = outputs(d, settings, models[i] if models is not None else None)
        confidence.append(confidence_of_d)
        times.append(ms)
        words["reference"].append(len(d.reference.split()))
        for method, text in texts.items():
            per[method].append(rouge_scores(text, d.reference))
            words[method].append(len(text.split()))
    r1 = np.asarray([r["rouge1"] for r in per["minnow"]])
    conf = np.asarray(confidence, dtype=np.float64)
    escalated: NDArray[np.bool_] = np.less(conf, min_confidence)
    rho = float(spearmanr(conf, r1).statistic) if len(set(confidence)) > 1 else float("nan")
    return {
        "dialogues": len(dialogues),
        "rouge": {m: {k: float(np.mean([r[k] for r in rows])) for k in ROUGE_KEYS} for m, rows in per.items()},
        "mean_words": {m: float(np.mean(w)) for m, w in words.items()},
        "confidence_spearman_rouge1": float(rho),
        "confidence_spearman_ci95": spearman_interval(conf, r1),
        "escalation": {
            "min_confidence": min_confidence,
            "escalated": int(escalated.sum()),
            "rouge1_escalated": float(r1[escalated].mean()) if escalated.any() else None,
            "rouge1_kept": float(r1[~escalated].mean()) if (~escalated).any() else None,
        },
        "lowest_fifth": _lowest_share(conf, r1, LOWEST_SHARE),
        "ms_per_dialogue": {"median": float(np.median(times)), "p95": float(np.percentile(times, 95))},
    }


def spearman_interval(
    x: NDArray[np.float64], y: NDArray[np.float64], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> list[float]:
    """95% percentile-bootstrap interval of Spearman's rho between `x` and `y`, resampling dialogues."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    rhos = []
    for _ in range(resamples):
        pick = rng.integers(0, len(x), len(x))
        rx, ry = rankdata(x[pick]), rankdata(y[pick])
        if rx.std() > 0 and ry.std() > 0:
            rhos.append(float(np.corrcoef(rx, ry)[0, 1]))
    if not rhos:
        return [float("nan"), float("nan")]
    return [float(np.percentile(rhos, 2.5)), float(np.percentile(rhos, 97.5))]


def _lowest_share(conf: NDArray[np.float64], r1: NDArray[np.float64], share: float) -> dict[str, float]:
    """ROUGE-1 of the `share` least confident summaries vs the others, and the confidence that cuts them."""
    order = np.argsort(conf, kind="stable")
    n = max(1, round(len(conf) * share))
    low, rest = order[:n], order[n:]
    return {
        "share": share,
        "threshold": float(conf[order[n]]) if n < len(conf) else 1.0,
        "rouge1_escalated": float(r1[low].mean()),
        "rouge1_kept": float(r1[rest].mean()) if len(rest) else float("nan"),
    }


def cross_fitted(dialogues: list[EmbeddedDialogue], folds: int) -> list[SummaryModel | None]:
    """For k-fold cross-validation over whole files: per dialogue, trees fitted on the other folds (the shipped
    quality estimate kept), so every dialogue is summarized by a model that never saw it."""
    from sklearn.model_selection import KFold

    from pipeline.tasks.summary_train import fit_trees

    shipped = load_summary_model()
    pools = [candidates(d.segments, d.vectors, d.doc_vector, d.speakers) for d in dialogues]
    labels = [
        np.isin(np.arange(len(p.texts)), oracle(p.texts, d.reference)) for p, d in zip(pools, dialogues, strict=True)
    ]
    models: list[SummaryModel | None] = [None] * len(dialogues)
    for train, held in KFold(folds, shuffle=True, random_state=0).split(np.arange(len(dialogues))):
        trees = trees_from_json(fit_trees([pools[i] for i in train], [labels[i] for i in train]))
        for i in held:
            models[i] = SummaryModel(trees, shipped.quality, {"cross_fitted": True})
    return models


def embed_part(encoder: Encoder, data_dir: Path, name: str, part: Part | None) -> list[EmbeddedDialogue]:
    from pipeline.tasks.summary_eval import embed_dialogues

    spec = next(s for s in SETS if s.name == name)
    return embed_dialogues(encoder, read_set(data_dir, spec, part), unit="turn")


def render(report: dict[str, Any]) -> str:
    lines = []
    for name, body in report["sets"].items():
        lines.append(f"\n{name} ({body['file']}, {body['part']}: {body['dialogues']} dialogues)")
        lines.append("| method | ROUGE-1 | ROUGE-2 | ROUGE-L | words |")
        lines.append("|---|---:|---:|---:|---:|")
        for method in METHODS:
            r = body["rouge"][method]
            lines.append(
                f"| {method} | {r['rouge1'] * 100:.2f} | {r['rouge2'] * 100:.2f} | {r['rougeL'] * 100:.2f} "
                f"| {body['mean_words'][method]:.1f} |"
            )
        lines.append(f"| reference | | | | {body['mean_words']['reference']:.1f} |")
        e = body["escalation"]
        low_ci, high_ci = body["confidence_spearman_ci95"]
        lines.append(
            f"confidence vs ROUGE-1: Spearman {body['confidence_spearman_rouge1']:.3f} "
            f"(bootstrap 95% interval {low_ci:.3f} to {high_ci:.3f})"
        )
        if e["rouge1_escalated"] is not None and e["rouge1_kept"] is not None:
            lines.append(
                f"below confidence {e['min_confidence']}: {e['escalated']} escalated, ROUGE-1 "
                f"{e['rouge1_escalated'] * 100:.2f} escalated vs {e['rouge1_kept'] * 100:.2f} kept"
            )
        low = body["lowest_fifth"]
        lines.append(
            f"least confident {low['share']:.0%} (confidence < {low['threshold']:.3f}): ROUGE-1 "
            f"{low['rouge1_escalated'] * 100:.2f} escalated vs {low['rouge1_kept'] * 100:.2f} kept"
        )
        ms = body["ms_per_dialogue"]
        lines.append(
            f"summarizer: {ms['median']:.2f} ms median, {ms['p95']:.2f} ms p95 per dialogue (encoder excluded)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=0.3,
        help="escalate below this confidence (for the escalated/kept split)",
    )
    parser.add_argument(
        "--folds",
        type=int,
        default=0,
        help="k-fold cross-validation over both whole files (trees refitted per fold) instead of the held-out part",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    from pipeline.engine import load_encoder
    from pipeline.settings import load_settings

    settings = load_settings()
    encoder = load_encoder(settings.engine)
    report: dict[str, Any] = {"settings": settings.summary.model_dump(), "sets": {}}
    part: Part | None = None if args.folds else "held_out"
    by_set = {spec.name: embed_part(encoder, args.data_dir, spec.name, part) for spec in SETS}
    everything = [d for dialogues in by_set.values() for d in dialogues]
    models = cross_fitted(everything, args.folds) if args.folds else [None] * len(everything)
    start = 0
    for spec in SETS:
        dialogues = by_set[spec.name]
        mine = models[start : start + len(dialogues)]
        start += len(dialogues)
        body = evaluate(dialogues, settings.summary, args.min_confidence, mine)
        report["sets"][spec.name] = {"file": spec.file, "part": part or f"all, {args.folds}-fold", **body}
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
