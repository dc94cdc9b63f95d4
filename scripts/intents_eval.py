#!/usr/bin/env python3
"""Trained intent heads on public sets: out-of-scope detection and risk-controlled thresholds, measured held out.

    python scripts/intents_eval.py --data-dir ../shared/data
    python scripts/intents_eval.py --data-dir ../shared/data --max-error 0.04 --delta 0.05 --json

For each set the rows are split three ways, seeded: a head is trained on the train part (`fit_head`: logistic
regression on the embedding and the texts' hashed n-grams (`--no-lexical`: the embedding alone), temperature
and out-of-scope threshold on its own internal holdout), its thresholds are fitted on the
calibration part (`minnow calibrate`'s code: the loosest threshold whose error among auto-handled items is
certified <= --max-error at 1 - --delta, or the strictest certified to escalate <= --max-escalation), and every
figure is measured on the held-out part, which nothing was fitted on:

- `clinc150` (`intents/clinc150_train_val.json`): train = 80 % of `train` plus half of `oos_train` (label `oos`);
  calibration = the other 20 % of `train` and the other half of `oos_train`; held out = `val` + `oos_val`. CLINC's
  `val` is not exchangeable with its `train` (harder for a head fitted on `train`, twice the out-of-scope share):
  this design shows what a shift between calibration and traffic does to the guarantee.
- `clinc150-val-halves`: train = all of `train` + `oos_train`; `val` + `oos_val` split in two stratified halves,
  one to calibrate on, one held out (exchangeable); the default point is measured on all of `val` + `oos_val`.
- banking77 (`intents/banking77_train.csv`): 60 / 20 / 20 stratified by intent; no out-of-scope rows of its own,
  so CLINC's `oos_val` is also run through the banking head (requests of another assistant, all out of scope).

Routing is the worker's: the ClassifyTask's reasons (`classify.low_confidence`, `classify.out_of_scope`). Figures
at the built-in default (MINNOW_ROUTING__CLASSIFY_MIN_CONFIDENCE, no thresholds file) and at the calibrated
thresholds. The datasets are read from their paths and never copied; embeddings may be cached (--cache).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.commands.calibrate import Scored, fit_family
from pipeline.engine import Encoder, load_encoder
from pipeline.settings import EngineSettings, Settings
from pipeline.tasks.classify import Classifier, ClassifyTask, Prototypes
from pipeline.tasks.heads import OUT_OF_SCOPE_LABEL, LinearHead, fit_head, new_head_file
from pipeline.tasks.labels import Label, LabelSet
from pipeline.tasks.risk import clopper_pearson_upper

Vectors = NDArray[np.float32]
FAMILY = "intents"  # the label set the heads are trained as (the script's own, not a configured family)


@dataclass(frozen=True)
class Part:
    texts: list[str]
    labels: list[str]  # `oos` for out of scope


@dataclass(frozen=True)
class Split:
    name: str
    train: Part
    calibration: Part
    held_out: Part
    extra_oos: Part | None = None  # out-of-scope rows from elsewhere, measured on the held-out side only
    default_held_out: Part | None = None  # where the default point is measured, when wider than `held_out`


def _take(texts: list[str], labels: list[str], idx: NDArray[np.int64]) -> Part:
    return Part([texts[i] for i in idx], [labels[i] for i in idx])


def _stratified(labels: list[str], shares: tuple[float, ...], seed: int) -> list[NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    parts: list[list[int]] = [[] for _ in shares]
    for members in groups.values():
        order = rng.permutation(members)
        cuts = np.round(np.cumsum(shares)[:-1] * len(order)).astype(int)
        for k, chunk in enumerate(np.split(order, cuts)):
            parts[k] += chunk.tolist()
    return [np.asarray(sorted(p), dtype=np.int64) for p in parts]


def clinc(data_dir: Path, seed: int) -> Split:
    """Calibration from `train` (held out: all of `val` + `oos_val`): tests the guarantee across CLINC's splits."""
    raw = json.loads((data_dir / "intents" / "clinc150_train_val.json").read_text(encoding="utf-8"))
    texts, labels = [r[0] for r in raw["train"]], [r[1] for r in raw["train"]]
    fit, cal = _stratified(labels, (0.8, 0.2), seed)
    oos_t = [r[0] for r in raw["oos_train"]]
    oos_fit, oos_cal = _stratified([OUT_OF_SCOPE_LABEL] * len(oos_t), (0.5, 0.5), seed)
    train, calib = _take(texts, labels, fit), _take(texts, labels, cal)
    train = Part(train.texts + [oos_t[i] for i in oos_fit], train.labels + [OUT_OF_SCOPE_LABEL] * len(oos_fit))
    calib = Part(calib.texts + [oos_t[i] for i in oos_cal], calib.labels + [OUT_OF_SCOPE_LABEL] * len(oos_cal))
    return Split("clinc150", train, calib, _clinc_val(raw))


def clinc_val(data_dir: Path, seed: int) -> Split:
    """Exchangeable calibration: the head learns all of `train` + `oos_train`; `val` + `oos_val` is split in two
    halves (stratified), one to calibrate on and one held out. The default point is measured on all of it."""
    raw = json.loads((data_dir / "intents" / "clinc150_train_val.json").read_text(encoding="utf-8"))
    rows = raw["train"] + raw["oos_train"]
    train = Part([r[0] for r in rows], [OUT_OF_SCOPE_LABEL if r[1] == "oos" else r[1] for r in rows])
    val = _clinc_val(raw)
    cal, held = _stratified(val.labels, (0.5, 0.5), seed)
    return Split(
        "clinc150-val-halves", train, _take(val.texts, val.labels, cal), _take(val.texts, val.labels, held),
        default_held_out=val,
    )  # fmt: skip


def _clinc_val(raw: dict[str, list[list[str]]]) -> Part:
    val = raw["val"] + raw["oos_val"]
    return Part([r[0] for r in val], [OUT_OF_SCOPE_LABEL if r[1] == "oos" else r[1] for r in val])


def banking77(data_dir: Path, seed: int) -> Split:
    with (data_dir / "intents" / "banking77_train.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    texts, labels = [r["text"] for r in rows], [r["category"] for r in rows]
    fit, cal, held = _stratified(labels, (0.6, 0.2, 0.2), seed)
    raw = json.loads((data_dir / "intents" / "clinc150_train_val.json").read_text(encoding="utf-8"))
    oos = Part([r[0] for r in raw["oos_val"]], [OUT_OF_SCOPE_LABEL] * len(raw["oos_val"]))
    return Split("banking77", _take(texts, labels, fit), _take(texts, labels, cal), _take(texts, labels, held), oos)


class Embeddings:
    """Vectors by text, cached in one .npz per model version (the machine is shared: embed each text once)."""

    def __init__(self, encoder: Encoder, cache: Path | None) -> None:
        self.encoder = encoder
        self.path = cache.with_name(f"{cache.stem}-{encoder.files.version}.npz") if cache else None
        self.known: dict[str, Vectors] = {}
        if self.path and self.path.exists():
            data = np.load(self.path, allow_pickle=False)
            self.known = dict(zip(data["texts"].tolist(), data["vectors"], strict=True))

    def __call__(self, texts: list[str]) -> Vectors:
        missing = sorted({t for t in texts if t not in self.known})
        if missing:
            self.known.update(zip(missing, self.encoder.embed(missing), strict=True))
        return np.stack([self.known[t] for t in texts]).astype(np.float32)

    def save(self) -> None:
        if self.path:
            texts = list(self.known)
            np.savez(self.path, texts=np.asarray(texts), vectors=np.stack([self.known[t] for t in texts]))


def route(
    task: ClassifyTask, classifier: Classifier, vectors: Vectors, texts: list[str]
) -> tuple[list[str], list[list[str]]]:
    """Predicted labels and the router's reasons per item: the worker's decision, item by item."""
    results = classifier.classify(FAMILY, vectors, texts)
    return [c.label for c in results], [task.reasons(c) for c in results]


def figures(labels: list[str], pred: list[str], reasons: list[list[str]]) -> dict[str, Any]:
    in_scope = np.asarray([lab != OUT_OF_SCOPE_LABEL for lab in labels])
    escalated = np.asarray([bool(r) for r in reasons])
    correct = np.asarray([p == lab for p, lab in zip(pred, labels, strict=True)])
    kept = in_scope & ~escalated
    every = [r for rs in reasons for r in rs]
    out: dict[str, Any] = {
        "in_scope": int(in_scope.sum()),
        "accuracy": float(correct[in_scope].mean()),
        "escalated_in_scope": float(escalated[in_scope].mean()),
        "auto_accuracy_in_scope": float(correct[kept].mean()) if kept.any() else None,
        "escalated_all": float(escalated.mean()),
        # What the error target speaks of: wrong among all auto-handled items, an out-of-scope one always wrong.
        "auto_error_all": float((~correct[~escalated]).mean()) if (~escalated).any() else 0.0,
        "auto_handled": int((~escalated).sum()),
        "reasons": {k: round(v / max(len(every), 1), 4) for k, v in sorted(Counter(every).items())},
    }
    if (~in_scope).any():
        out["out_of_scope"] = int((~in_scope).sum())
        out["escalated_out_of_scope"] = float(escalated[~in_scope].mean())
    return out


def evaluate(
    split: Split,
    embed: Embeddings,
    settings: Settings,
    *,
    target: str,
    level: float,
    delta: float,
    lexical: bool = True,
) -> dict[str, Any]:
    names = sorted({lab for lab in split.train.labels if lab != OUT_OF_SCOPE_LABEL})
    label_set = LabelSet(name=FAMILY, labels=[Label(name=n, description=n.replace("_", " ")) for n in names])
    is_oos = [lab == OUT_OF_SCOPE_LABEL for lab in split.train.labels]
    vectors = embed(split.train.texts)
    keep = np.asarray([not o for o in is_oos])
    oos_vectors = vectors[~keep] if (~keep).any() else None
    texts = [t for t, o in zip(split.train.texts, is_oos, strict=True) if not o]
    started = time.perf_counter()
    head = fit_head(
        vectors[keep], [lab for lab, o in zip(split.train.labels, is_oos, strict=True) if not o], names,
        oos_vectors=oos_vectors, texts=texts if lexical else None,
    )  # fmt: skip
    fit_seconds = time.perf_counter() - started
    heads = new_head_file({FAMILY: head}, {}, embed.encoder.files.version)
    protos = {FAMILY: Prototypes.build(label_set, embed.encoder)}
    min_conf = settings.routing.classify_min_confidence
    oos = {FAMILY: head.out_of_scope_threshold} if head.out_of_scope_threshold is not None else {}
    plain = Classifier({FAMILY: label_set}, protos, heads, min_confidence=min_conf)

    cal_vectors = embed(split.calibration.texts)
    _, probs, method = plain.probabilities(FAMILY, cal_vectors, split.calibration.texts)
    cal_pred = [names[i] for i in probs.argmax(axis=1)]
    dist = plain.out_of_scope(FAMILY, cal_vectors)
    forced = dist > head.out_of_scope_threshold if dist is not None and head.out_of_scope_threshold else None
    scored = Scored(
        method,
        probs.max(axis=1),
        np.asarray([p == lab for p, lab in zip(cal_pred, split.calibration.labels, strict=True)]),
        np.zeros(len(cal_pred), dtype=bool) if forced is None else forced,
    )
    fitted = fit_family(scored, target, level, delta)
    thresholds = {FAMILY: fitted.threshold}
    tuned = Classifier({FAMILY: label_set}, protos, heads, min_confidence=min_conf, thresholds=thresholds)

    report: dict[str, Any] = {
        "set": split.name,
        "rows": {
            "train": len(split.train.texts),
            "calibration": len(split.calibration.texts),
            "held_out": len(split.held_out.texts),
        },
        "head": {k: round(v, 4) for k, v in head.metrics.items()},
        "head_fit_seconds": round(fit_seconds, 1),
        "head_json_bytes": len(heads.model_dump_json(indent=1)),
        "run_time_us_per_text": _run_time(head, embed(split.held_out.texts), split.held_out.texts),
        "out_of_scope_threshold": head.out_of_scope_threshold,
        "calibrated": {
            "target": target,
            "level": level,
            "delta": delta,
            "threshold": fitted.threshold,
            "calibration_escalation": fitted.escalation_rate,
            "calibration_auto_error": fitted.auto_error_rate,
            "bound": fitted.bound,
        },
    }
    for point, classifier, fitted_t in (("default", plain, {}), ("calibrated_held", tuned, thresholds)):
        task = ClassifyTask(settings, classifier, thresholds=fitted_t, out_of_scope=oos)
        part = split.default_held_out if point == "default" and split.default_held_out else split.held_out
        pred, reasons = route(task, classifier, embed(part.texts), part.texts)
        fig = figures(part.labels, pred, reasons)
        fig["rows"] = len(part.texts)
        fig["min_confidence"] = fitted_t.get(FAMILY, min_conf)
        if split.extra_oos is not None:
            _, extra = route(task, classifier, embed(split.extra_oos.texts), split.extra_oos.texts)
            fig["escalated_foreign_out_of_scope"] = float(np.mean([bool(r) for r in extra]))
        report[point] = fig
    got = report["calibrated_held"]
    # The guarantee bounds the population's share; the held-out part is one more sample of it, so it is checked two
    # ways: its own share against the target, and whether it is consistent with a population share <= the target
    # (its one-sided Clopper-Pearson lower bound at delta is <= the target).
    share, n = (
        (got["auto_error_all"], got["auto_handled"]) if target == "max_error" else (got["escalated_all"], got["rows"])
    )
    lower = 1 - clopper_pearson_upper(n - round(share * n), n, delta)
    report["guarantee_held"] = {
        "held_out_share": share,
        "within_target": bool(share <= level),
        "held_out_lower_bound": lower,
        "consistent": bool(lower <= level),
    }
    return report


def _run_time(head: LinearHead, vectors: Vectors, texts: list[str]) -> dict[str, float]:
    """Microseconds per text to score the head (probabilities and out-of-scope distance) in batches of 32, median of
    3, with one BLAS thread (small products pay more for thread hand-offs than they gain on a shared machine); and
    the same head without its lexical channel, for what the n-grams cost."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    def timed(one: LinearHead) -> float:
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            for i in range(0, len(texts), 32):
                one.predict_proba(vectors[i : i + 32], texts[i : i + 32] if one.lexical else None)
                one.out_of_scope(vectors[i : i + 32])
            runs.append((time.perf_counter() - started) / len(texts) * 1e6)
        return round(float(np.median(runs)), 1)

    with threadpool_limits(1):
        return {"head": timed(head), "embedding_part": timed(head.model_copy(update={"lexical": None}))}


def compare_scores(split: Split, embed: Embeddings) -> dict[str, dict[str, float]]:
    """Out-of-scope scores side by side on the held-out part (how the centroid score was chosen): AUROC of in-scope
    vs out of scope, and the share of out-of-scope rows above the 90th percentile of in-scope rows."""
    from sklearn.metrics import roc_auc_score

    names = sorted({lab for lab in split.train.labels if lab != OUT_OF_SCOPE_LABEL})
    keep = [i for i, lab in enumerate(split.train.labels) if lab != OUT_OF_SCOPE_LABEL]
    vectors = embed([split.train.texts[i] for i in keep])
    head = fit_head(vectors, [split.train.labels[i] for i in keep], names)
    index = {n: i for i, n in enumerate(names)}
    y = np.asarray([index[split.train.labels[i]] for i in keep])
    means = np.stack([vectors[y == c].mean(axis=0) for c in range(len(names))])
    residual = vectors - means[y]
    precision = np.linalg.inv(residual.T @ residual / len(residual) + 1e-3 * np.eye(vectors.shape[1]))
    held = embed(split.held_out.texts)
    outside = np.asarray([lab == OUT_OF_SCOPE_LABEL for lab in split.held_out.labels])
    z = head.logits(held) / head.temperature
    probs = head.predict_proba(held)
    diff = held[:, None, :] - means[None]
    scores = {
        "max-softmax": -probs.max(axis=1),
        "max-logit": -z.max(axis=1),
        "energy": -np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)) - z.max(axis=1),
        "mahalanobis": np.einsum("nkd,de,nke->nk", diff, precision, diff).min(axis=1),
        "centroid-cosine": head.out_of_scope(held),
    }
    out = {}
    for name, score in scores.items():
        assert score is not None
        cut = np.quantile(score[~outside], 0.9)
        out[name] = {
            "auroc": float(roc_auc_score(outside, score)),
            "oos_escalated_at_10pct_in_scope": float((score[outside] > cut).mean()),
        }
    return out


def render(report: dict[str, Any]) -> str:
    lines = [f"{report['set']}: rows {report['rows']}, out-of-scope threshold {report['out_of_scope_threshold']:.4f}"]
    h = report["head"]
    lines.append(
        f"  head: {'embedding + n-grams' if h.get('lexical') else 'embedding only'}, C {h['regularization_c']:g}, "
        f"internal held-out accuracy {h['holdout_accuracy']:.3f}; fitted in {report['head_fit_seconds']:.0f} s; "
        f"head file {report['head_json_bytes'] / 1e6:.1f} MB; scoring {report['run_time_us_per_text']['head']:.0f} "
        f"µs/text ({report['run_time_us_per_text']['embedding_part']:.0f} without the n-grams)"
    )
    c = report["calibrated"]
    lines.append(
        f"  calibrated on the calibration part: {c['target']} <= {c['level']:g} at delta {c['delta']:g} -> escalate "
        f"below {c['threshold']:.3f} (calibration: escalated {c['calibration_escalation']:.1%}, auto error "
        f"{c['calibration_auto_error']:.2%}, bound {c['bound']:.2%})"
    )
    for point in ("default", "calibrated_held"):
        f = report[point]
        auto = f["auto_accuracy_in_scope"]
        line = (
            f"  held out ({f['rows']} rows) at {point.removesuffix('_held')} "
            f"(min_confidence {f['min_confidence']:.3f}): accuracy "
            f"{f['accuracy']:.3f}; in-scope escalated {f['escalated_in_scope']:.1%}, auto-handled accuracy "
            f"{auto:.3f}; error among all auto-handled {f['auto_error_all']:.2%}"
        )
        if "escalated_out_of_scope" in f:
            line += f"; out of scope escalated {f['escalated_out_of_scope']:.1%} of {f['out_of_scope']}"
        if "escalated_foreign_out_of_scope" in f:
            line += f"; CLINC oos_val escalated {f['escalated_foreign_out_of_scope']:.1%}"
        lines += [line, f"    reasons {f['reasons']}"]
    g = report["guarantee_held"]
    lines.append(
        f"  guarantee on the held-out part: share {g['held_out_share']:.2%} "
        + ("<=" if g["within_target"] else ">")
        + f" target {c['level']:g}; its lower bound at delta {g['held_out_lower_bound']:.2%}: "
        + ("consistent with the guarantee" if g["consistent"] else "NOT consistent with the guarantee")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--data-dir", default="../shared/data", help="the public dev data (default ../shared/data)")
    goal = ap.add_mutually_exclusive_group()
    goal.add_argument("--max-error", type=float, help="calibrate: error among auto-handled at most (default 0.04)")
    goal.add_argument("--max-escalation", type=float, help="calibrate: share escalated at most")
    ap.add_argument("--delta", type=float, default=0.05, help="the guarantee holds with probability 1 - delta")
    sets = ["clinc150", "clinc150-val-halves", "banking77"]
    ap.add_argument("--sets", nargs="+", default=sets, choices=sets)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cache", help="cache embeddings in this .npz (the model version is added to the name)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-lexical", action="store_true", help="embedding-only heads (as before the lexical channel)")
    ap.add_argument("--compare-scores", action="store_true", help="clinc150: out-of-scope scores side by side")
    args = ap.parse_args(argv)
    if args.max_escalation is not None:
        target, level = "max_escalation", args.max_escalation
    else:
        target, level = "max_error", args.max_error if args.max_error is not None else 0.04
    data_dir = Path(args.data_dir)
    if not (data_dir / "intents").is_dir():
        print(f"intents_eval: no {data_dir / 'intents'}; pass --data-dir", file=sys.stderr)
        return 2
    settings = Settings()
    embed = Embeddings(load_encoder(EngineSettings(intra_op_threads=1)), Path(args.cache) if args.cache else None)
    loaders = {"clinc150": clinc, "clinc150-val-halves": clinc_val, "banking77": banking77}
    if args.compare_scores:
        for name, fig in compare_scores(clinc(data_dir, args.seed), embed).items():
            print(f"{name:16} AUROC {fig['auroc']:.3f}  out of scope escalated at 10% in-scope "
                  f"{fig['oos_escalated_at_10pct_in_scope']:.0%}")  # fmt: skip
        embed.save()
        return 0
    reports = []
    for name in args.sets:
        reports.append(
            evaluate(
                loaders[name](data_dir, args.seed),
                embed,
                settings,
                target=target,
                level=level,
                delta=args.delta,
                lexical=not args.no_lexical,
            )
        )
        embed.save()
    if args.json:
        print(json.dumps(reports, indent=1))
    else:
        print("\n".join(render(r) for r in reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
