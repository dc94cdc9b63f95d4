"""`minnow eval`: how good the mini model is on labeled data, and what escalating the unsure part buys."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from pipeline.engine import Encoder, load_encoder
from pipeline.settings import Settings
from pipeline.tasks.calibration import expected_calibration_error
from pipeline.tasks.classify import Classifier, ClassifyTask
from pipeline.training import LabeledRow, read_labeled

ESCALATION_RATES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


def selective_accuracy(confidence: NDArray[np.float64], correct: NDArray[np.bool_]) -> list[dict[str, float]]:
    """Accuracy on what stays with the mini model when the least confident share is escalated."""
    order = np.argsort(-confidence, kind="stable")
    rows = []
    for rate in ESCALATION_RATES:
        keep = order[: max(1, round(len(order) * (1 - rate)))]
        rows.append(
            {
                "escalation_rate": rate,
                "kept": float(len(keep)),
                "accuracy": float(correct[keep].mean()),
                "threshold": float(confidence[keep].min()),
            }
        )
    return rows


def evaluate_classification(
    rows: list[LabeledRow], classifier: Classifier, encoder: Encoder, min_confidence: float
) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score

    report: dict[str, Any] = {}
    by_family: dict[str, list[LabeledRow]] = defaultdict(list)
    for row in rows:
        if row.label is not None and row.family in classifier.label_sets:
            by_family[row.family].append(row)
    for family, fam in by_family.items():
        labels, probs, method = classifier.probabilities(family, encoder.embed([r.text for r in fam]))
        index = {name: i for i, name in enumerate(labels)}
        y = np.asarray([index.get(r.label or "", -1) for r in fam])
        pred = probs.argmax(axis=1)
        conf = probs.max(axis=1)
        correct = pred == y
        escalated = conf < min_confidence
        report[family] = {
            "method": method,
            "examples": len(fam),
            "accuracy": float(accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, average="macro", labels=list(range(len(labels))), zero_division=0)),
            "ece": expected_calibration_error(probs, y),
            "at_threshold": {
                "min_confidence": min_confidence,
                "escalation_rate": float(escalated.mean()),
                "accuracy_kept": float(correct[~escalated].mean()) if (~escalated).any() else None,
            },
            "selective": selective_accuracy(conf, correct),
        }
    return report


def evaluate_moderation(rows: list[LabeledRow], settings: Settings, encoder: Encoder) -> dict[str, Any] | None:
    """Per-category and `flagged` precision, recall, F1 and ROC-AUC on rows that carry `categories`."""
    from pipeline.errors import ConfigError
    from pipeline.tasks.moderate import CATEGORIES, ModerateTask
    from pipeline.tasks.moderation_eval import evaluate_texts

    mod_rows = [r for r in rows if r.categories is not None]
    if not mod_rows:
        return None
    unknown = sorted({c for r in mod_rows for c in r.categories or []} - set(CATEGORIES))
    if unknown:
        raise ConfigError(f"unknown moderation categories {unknown}; known: {', '.join(CATEGORIES)}")
    moderator = ModerateTask.load(settings, encoder).moderator
    truth = np.asarray([[c in (r.categories or []) for c in CATEGORIES] for r in mod_rows], dtype=bool)
    return evaluate_texts(moderator, encoder, [r.text for r in mod_rows], truth)


def evaluate_summaries(rows: list[LabeledRow], settings: Settings, encoder: Encoder) -> dict[str, Any] | None:
    """ROUGE-1/2/L of Minnow's summaries against LEAD-3 and LONGEST-3, on rows with `turns` and `summary`."""
    from pipeline.tasks.summary_eval import embed_dialogues, score_dialogues

    records = [
        {"id": r.id or str(i), "turns": r.turns, "summary": r.summary}
        for i, r in enumerate(rows)
        if r.turns and r.summary
    ]
    if not records:
        return None
    scores = score_dialogues(embed_dialogues(encoder, records, unit="turn"), settings.summary)
    return {"examples": len(records), **scores}


def plot_selective(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for family, body in report.items():
        xs = [row["escalation_rate"] * 100 for row in body["selective"]]
        ys = [row["accuracy"] * 100 for row in body["selective"]]
        ax.plot(xs, ys, marker="o", label=f"{family} ({body['method']})")
    ax.set_xlabel("escalated to the large model (%)")
    ax.set_ylabel("accuracy on what the mini model keeps (%)")
    ax.set_title("Selective accuracy: escalate the least confident share")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(report: dict[str, Any]) -> str:
    lines = []
    for family, body in report.get("classification", {}).items():
        at = body["at_threshold"]
        kept = at["accuracy_kept"]
        lines += [
            f"classification / {family} ({body['method']}, {body['examples']} examples)",
            f"  accuracy {body['accuracy']:.3f}   macro-F1 {body['macro_f1']:.3f}   ECE {body['ece']:.3f}",
            f"  at min_confidence {at['min_confidence']:.2f}: escalates {at['escalation_rate']:.1%}, "
            f"accuracy on the rest {kept:.3f}"
            if kept is not None
            else "  everything escalates at this threshold",
            "  escalated   kept   accuracy   confidence >=",
        ]
        lines += [
            f"  {row['escalation_rate']:8.0%}  {int(row['kept']):5d}   {row['accuracy']:.3f}"
            f"      {row['threshold']:.3f}"
            for row in body["selective"]
        ]
    mod = report.get("moderation")
    if mod:
        lines.append(f"moderation ({mod['items']} examples)   precision  recall   F1     ROC-AUC")
        for name, m in [*mod["categories"].items(), ("flagged (any)", mod["flagged"])]:
            auc = f"{m['roc_auc']:.3f}" if m["roc_auc"] is not None else "  -  "
            lines.append(f"  {name:26} {m['precision']:.3f}     {m['recall']:.3f}   {m['f1']:.3f}  {auc}")
    summ = report.get("summarization")
    if summ:
        lines.append(f"summarization ({summ['examples']} dialogues), ROUGE F1 x 100:   R-1    R-2    R-L")
        for key, name in (("minnow", "Minnow"), ("lead3", "LEAD-3"), ("longest3", "LONGEST-3")):
            r = summ[key]
            lines.append(f"  {name:10} {r['rouge1'] * 100:35.2f} {r['rouge2'] * 100:6.2f} {r['rougeL'] * 100:6.2f}")
    if report.get("plot"):
        lines.append(f"plot: {report['plot']}")
    return "\n".join(lines)


def run(settings: Settings, data: Path, *, as_json: bool, plot: Path | None) -> int:
    rows = read_labeled(data)
    encoder = load_encoder(settings.engine)
    classifier = ClassifyTask.load(settings, encoder).classifier
    report: dict[str, Any] = {
        "data": str(data),
        "classification": evaluate_classification(rows, classifier, encoder, settings.routing.classify_min_confidence),
    }
    moderation = evaluate_moderation(rows, settings, encoder)
    if moderation:
        report["moderation"] = moderation
    summaries = evaluate_summaries(rows, settings, encoder)
    if summaries:
        report["summarization"] = summaries
    if report["classification"]:
        plot = plot or data.with_suffix(".selective.png")
        plot_selective(report["classification"], plot)
        report["plot"] = str(plot)
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(render(report))
    return 0
