"""`minnow eval`: how good the mini model is on labeled data, and what escalating the unsure part buys."""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from pipeline.engine import Encoder, load_encoder
from pipeline.settings import Settings
from pipeline.stages.route import Router
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
    rows: list[LabeledRow], classifier: Classifier, encoder: Encoder, router: Router
) -> dict[str, Any]:
    """Per family: accuracy, calibration, risk-coverage, and the operating point in force as the router decides it
    (its thresholds, the heads' out-of-scope score), with the share of escalations by reason. Rows labeled `oos`
    (outside the label set) count in the routing figures only: always wrong when auto-handled."""
    from sklearn.metrics import accuracy_score, f1_score

    report: dict[str, Any] = {}
    by_family: dict[str, list[LabeledRow]] = defaultdict(list)
    for row in rows:
        if row.label is not None and row.family in classifier.label_sets:
            by_family[row.family].append(row)
    for family, fam in by_family.items():
        texts = [r.text for r in fam]
        vectors = encoder.embed(texts)
        labels, probs, method = classifier.probabilities(family, vectors, texts)
        index = {name: i for i, name in enumerate(labels)}
        y = np.asarray([index.get(r.label or "", -1) for r in fam])
        in_scope = y >= 0
        pred = probs.argmax(axis=1)
        conf = probs.max(axis=1)
        correct = pred == y
        reasons = [router.reasons({"classification": c}) for c in classifier.classify(family, vectors, texts)]
        escalated = np.asarray([bool(r) for r in reasons])
        y_in, pred_in = y[in_scope], pred[in_scope]
        report[family] = {
            "method": method,
            "examples": len(fam),
            "out_of_scope_examples": int((~in_scope).sum()),
            "accuracy": float(accuracy_score(y_in, pred_in)) if in_scope.any() else None,
            "macro_f1": float(
                f1_score(y_in, pred_in, average="macro", labels=list(range(len(labels))), zero_division=0)
            )
            if in_scope.any()
            else None,
            "ece": expected_calibration_error(probs[in_scope], y_in),
            "at_threshold": {
                "min_confidence": classifier.threshold(family),
                "fitted": family in classifier.thresholds,
                "out_of_scope_threshold": classifier.heads.out_of_scope_threshold(family),
                "out_of_scope_escalated": float(escalated[~in_scope].mean()) if (~in_scope).any() else None,
                **_in_force(escalated, correct, reasons),
            },
            "selective": selective_accuracy(conf, correct),
        }
    return report


def evaluate_moderation(rows: list[LabeledRow], settings: Settings, encoder: Encoder) -> dict[str, Any] | None:
    """Per-category and `flagged` precision, recall, F1 and ROC-AUC on rows that carry `categories`, and the
    operating point in force: what moderation escalates, why, and how right the flagged decision is on the rest."""
    from pipeline.errors import ConfigError
    from pipeline.tasks.moderate import CATEGORIES, ModerateTask
    from pipeline.tasks.moderation_eval import evaluate_texts

    mod_rows = [r for r in rows if r.categories is not None]
    if not mod_rows:
        return None
    unknown = sorted({c for r in mod_rows for c in r.categories or []} - set(CATEGORIES))
    if unknown:
        raise ConfigError(f"unknown moderation categories {unknown}; known: {', '.join(CATEGORIES)}")
    task = ModerateTask.load(settings, encoder)
    texts = [r.text for r in mod_rows]
    truth = np.asarray([[c in (r.categories or []) for c in CATEGORIES] for r in mod_rows], dtype=bool)
    vectors = encoder.embed(texts)
    results = task.moderator.moderate(texts, vectors)
    report = evaluate_texts(task.moderator, encoder, texts, truth, vectors=vectors, results=results)
    reasons = [task.reasons(m) for m in results]
    escalated = np.asarray([bool(r) for r in reasons])
    # The decision a moderation result makes is `flagged`: right when it matches "has any category".
    correct = np.asarray([m.flagged for m in results]) == truth.any(axis=1)
    report["at_threshold"] = _in_force(escalated, correct, reasons)
    report["selective"] = selective_accuracy(np.asarray([m.confidence for m in results]), correct)
    return report


def _in_force(escalated: NDArray[np.bool_], correct: NDArray[np.bool_], reasons: list[list[str]]) -> dict[str, Any]:
    every = [code for rs in reasons for code in rs]
    return {
        "escalation_rate": float(escalated.mean()),
        "coverage": float(1 - escalated.mean()),
        "accuracy_kept": float(correct[~escalated].mean()) if (~escalated).any() else None,
        "reasons": {code: round(n / len(every), 4) for code, n in sorted(Counter(every).items())},
    }


def evaluate_summaries(rows: list[LabeledRow], settings: Settings, encoder: Encoder) -> dict[str, Any] | None:
    """ROUGE-1/2/L of Minnow's summaries against LEAD-3 and LONGEST-3, on rows with `turns` and `summary`."""
    from pipeline.tasks.summary_eval import embed_dialogues, score_with_confidence

    records = [
        {"id": r.id or str(i), "turns": r.turns, "summary": r.summary}
        for i, r in enumerate(rows)
        if r.turns and r.summary
    ]
    if not records:
        return None
    dialogues = embed_dialogues(encoder, records, unit="turn")
    scores = score_with_confidence(dialogues, settings.summary, settings.routing.summary_min_confidence)
    return {"examples": len(records), **scores}


def plot_selective(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for family, body in report.items():
        xs = [row["escalation_rate"] * 100 for row in body["selective"]]
        ys = [row["accuracy"] * 100 for row in body["selective"]]
        (line,) = ax.plot(xs, ys, marker="o", label=f"{family} ({body['method']})")
        at = body["at_threshold"]
        if at["accuracy_kept"] is not None:  # the operating point in force: the thresholds the router uses
            ax.plot(
                [at["escalation_rate"] * 100], [at["accuracy_kept"] * 100], marker="*", markersize=14,
                color=line.get_color(), linestyle="none",
            )  # fmt: skip
    ax.set_xlabel("escalated to the large model (%)")
    ax.set_ylabel("accuracy on what the mini model keeps (%)")
    ax.set_title("Risk-coverage: escalate the least confident share (star: in force)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _render_family(family: str, body: dict[str, Any]) -> list[str]:
    at = body["at_threshold"]
    kept = at["accuracy_kept"]
    source = "fitted, thresholds file" if at["fitted"] else "MINNOW_ROUTING__CLASSIFY_MIN_CONFIDENCE"
    oos = at["out_of_scope_threshold"]
    point = f"  in force: escalate below {at['min_confidence']:.3f} ({source})" + (
        f" or out of scope above distance {oos:.3f}" if oos is not None else ""
    )
    accuracy = "-" if body["accuracy"] is None else f"{body['accuracy']:.3f}"
    f1 = "-" if body["macro_f1"] is None else f"{body['macro_f1']:.3f}"
    lines = [
        f"classification / {family} ({body['method']}, {body['examples']} examples"
        + (f", {body['out_of_scope_examples']} out of scope" if body["out_of_scope_examples"] else "")
        + ")",
        f"  accuracy {accuracy}   macro-F1 {f1}   ECE {body['ece']:.3f}",
        point,
        f"    escalates {at['escalation_rate']:.1%}, accuracy on the rest {kept:.3f}"
        if kept is not None
        else "    everything escalates",
    ]
    if at["out_of_scope_escalated"] is not None:
        lines.append(f"    out-of-scope rows escalated {at['out_of_scope_escalated']:.1%}")
    return lines + _operating_point(at, body["selective"], body["examples"])


def _operating_point(at: dict[str, Any], selective: list[dict[str, float]], examples: int) -> list[str]:
    """Escalations by reason, and the risk-coverage curve with the point in force in its place."""
    lines = []
    kept = at["accuracy_kept"]
    if at["reasons"]:
        lines.append("    escalations by reason: " + ", ".join(f"{k} {v:.0%}" for k, v in at["reasons"].items()))
    lines.append("  risk-coverage: escalated   kept   accuracy   confidence >=")
    table = [
        (row["escalation_rate"], f"{int(row['kept']):5d}   {row['accuracy']:.3f}      {row['threshold']:.3f}")
        for row in selective
    ]
    if kept is not None:
        n_kept = round(examples * at["coverage"])
        table.append((at["escalation_rate"], f"{n_kept:5d}   {kept:.3f}      <- in force"))
    lines += [f"  {rate:22.1%}  {text}" for rate, text in sorted(table, key=lambda r: r[0])]
    return lines


def render(report: dict[str, Any]) -> str:
    lines = []
    for family, body in report.get("classification", {}).items():
        lines += _render_family(family, body)
    mod = report.get("moderation")
    if mod:
        lines.append(f"moderation ({mod['items']} examples)   precision  recall   F1     ROC-AUC")
        for name, m in [*mod["categories"].items(), ("flagged (any)", mod["flagged"])]:
            auc = f"{m['roc_auc']:.3f}" if m["roc_auc"] is not None else "  -  "
            lines.append(f"  {name:26} {m['precision']:.3f}     {m['recall']:.3f}   {m['f1']:.3f}  {auc}")
        at = mod["at_threshold"]
        lines.append("  in force: escalate inside a category's uncertain band (moderation.yaml)")
        lines.append(
            f"    escalates {at['escalation_rate']:.1%}, flagged decision right on the rest {at['accuracy_kept']:.3f}"
            if at["accuracy_kept"] is not None
            else "    everything escalates"
        )
        lines += _operating_point(at, mod["selective"], mod["items"])
    summ = report.get("summarization")
    if summ:
        lines.append(f"summarization ({summ['examples']} dialogues), ROUGE F1 x 100:   R-1    R-2    R-L")
        for key, name in (("minnow", "Minnow"), ("lead3", "LEAD-3"), ("longest3", "LONGEST-3")):
            r = summ[key]
            lines.append(f"  {name:10} {r['rouge1'] * 100:35.2f} {r['rouge2'] * 100:6.2f} {r['rougeL'] * 100:6.2f}")
        e = summ["escalation"]
        lines.append(
            f"  in force: escalate below summary confidence {e['min_confidence']:.2f} "
            "(MINNOW_ROUTING__SUMMARY_MIN_CONFIDENCE)"
        )
        escalated = "-" if e["rouge1_escalated"] is None else f"{e['rouge1_escalated'] * 100:.2f}"
        kept = "-" if e["rouge1_kept"] is None else f"{e['rouge1_kept'] * 100:.2f}"
        lines.append(f"    {e['escalated']} escalated, ROUGE-1 {escalated} escalated vs {kept} kept")
    if report.get("plot"):
        lines.append(f"plot: {report['plot']}")
    return "\n".join(lines)


def run(settings: Settings, data: Path, *, as_json: bool, plot: Path | None) -> int:
    rows = read_labeled(data)
    encoder = load_encoder(settings.engine)
    classifier = ClassifyTask.load(settings, encoder).classifier
    report: dict[str, Any] = {
        "data": str(data),
        "classification": evaluate_classification(rows, classifier, encoder, Router.configure(settings)),
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
