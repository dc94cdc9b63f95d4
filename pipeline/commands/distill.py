"""`minnow distill`: replay a labeled stream, settle what the mini model escalates, retrain, measure before and after.

No large model or reviewer is reachable here: an escalated item's gold label stands in for the verdict a person
(or the large model) would give. Those verdicts become LabelRecords and go through the same latest-per-key rule and
training code as `minnow train --from-topic labels`.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import numpy as np
import orjson
from numpy.typing import NDArray

from pipeline.engine import Encoder, load_encoder
from pipeline.errors import ConfigError, MinnowError
from pipeline.models import Classification, EventKind, LabelRecord
from pipeline.review.verdicts import KeyedLabel, label_key, latest_verdicts
from pipeline.settings import RoutingSettings, Settings
from pipeline.tasks.classify import Classifier, ClassifyTask
from pipeline.training import LabeledRow, fit_heads, read_labeled, rows_from_verdicts

STAND_IN = "gold label (stand-in for a reviewer)"
VERDICTS = "verdicts"
WITH_CONFIDENT = "verdicts + confident mini answers"


@dataclass(frozen=True)
class Replay:
    """The mini model over a part of the stream: what it answered and which items it escalated."""

    classifications: list[Classification]
    escalated: NDArray[np.bool_]

    def metrics(self, rows: Sequence[LabeledRow]) -> dict[str, Any]:
        from sklearn.metrics import f1_score

        gold = [r.label for r in rows]
        predicted = [c.label for c in self.classifications]
        correct = np.asarray([p == g for p, g in zip(predicted, gold, strict=True)])
        names = sorted(set(self.classifications[0].scores))
        kept = ~self.escalated
        return {
            "method": self.classifications[0].method,
            "items": len(rows),
            "escalation_rate": float(self.escalated.mean()),
            "accuracy": float(correct.mean()),
            "macro_f1": float(f1_score(gold, predicted, labels=names, average="macro", zero_division=0)),
            "accuracy_kept": float(correct[kept].mean()) if kept.any() else None,
        }


def replay(
    classifier: Classifier,
    family: str,
    vectors: NDArray[np.float32],
    routing: RoutingSettings,
    texts: Sequence[str] | None = None,
) -> Replay:
    """Classify and route as the worker does (the classification part of routing); `texts` for lexical heads."""
    classifications = classifier.classify(family, vectors, texts)
    task = ClassifyTask.configure(Settings(routing=routing))
    escalated = [bool(task.reasons(c)) for c in classifications]
    return Replay(classifications, np.asarray(escalated, dtype=bool))


def stand_in_verdicts(rows: Sequence[LabeledRow], escalated: NDArray[np.bool_], family: str) -> list[LabelRecord]:
    """The escalated items settled with their gold labels, as the label records a reviewer would have sent."""
    if family not in get_args(EventKind):
        raise ConfigError(f"family {family!r} is not an event kind ({', '.join(get_args(EventKind))})")
    now = datetime.now(UTC)
    return [
        LabelRecord.model_validate(
            {
                "id": row.id or f"{family}-{i}",
                "kind": family,
                "task": "classify",
                "text": row.text,
                "label_set": family,
                "label": row.label,
                "source": "human",
                "decided_by": STAND_IN,
                "decided_at": now,
            }
        )
        for i, row in enumerate(rows)
        if escalated[i]
    ]


def _split(data: Path, holdout: Path | None, split: float, family: str) -> tuple[list[LabeledRow], list[LabeledRow]]:
    def ours(path: Path) -> list[LabeledRow]:
        return [r for r in read_labeled(path) if r.family == family and r.label is not None]

    rows = ours(data)
    if holdout is not None:
        stream, held = rows, ours(holdout)
    else:
        cut = round(len(rows) * split)
        stream, held = rows[:cut], rows[cut:]
    if not stream or not held:
        raise ConfigError(
            f"{data} gives {len(stream)} stream and {len(held)} held-out '{family}' items; both parts need some "
            "(check --family, --split or --holdout)"
        )
    return stream, held


def run(
    settings: Settings,
    data: Path,
    *,
    holdout: Path | None = None,
    split: float = 0.5,
    family: str = "feed",
    thresholds: Sequence[float] | None = None,
    refit_zero_shot: bool = False,
    as_json: bool = False,
    plot: Path | None = None,
) -> int:
    report = distill(
        settings,
        data,
        holdout=holdout,
        split=split,
        family=family,
        thresholds=thresholds,
        refit_zero_shot=refit_zero_shot,
    )
    if plot is not None:
        plot_distill(report, plot)
        report["plot"] = str(plot)
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(render(report))
    return 0


def distill(
    settings: Settings,
    data: Path,
    *,
    holdout: Path | None = None,
    split: float = 0.5,
    family: str = "feed",
    thresholds: Sequence[float] | None = None,
    refit_zero_shot: bool = False,
) -> dict[str, Any]:
    """The report: the held-out replay before, and after retraining on what each collection threshold gathered.

    `refit_zero_shot` also fits zero-shot temperatures on the collected rows, which `train --from-topic` does not.
    """
    stream, held = _split(data, holdout, split, family)
    encoder = load_encoder(settings.engine)
    classifier = ClassifyTask.load(settings, encoder).classifier
    if family not in classifier.label_sets:
        raise ConfigError(f"no label set for family {family!r}; known: {', '.join(classifier.label_sets)}")
    # Each part embedded once, in stream order as `minnow eval` does (int8 activations are quantized per batch,
    # so batch make-up moves vectors by up to a few hundredths); every refit reuses these vectors.
    experiment = _Experiment(
        encoder,
        classifier,
        settings.routing,
        family,
        stream,
        held,
        encoder.embed([r.text for r in stream]),
        encoder.embed([r.text for r in held]),
        refit_zero_shot,
    )
    routing = settings.routing
    return {
        "data": str(data),
        "holdout": str(holdout) if holdout else f"last {1 - split:.0%} of {data}",
        "family": family,
        "stream_items": len(stream),
        "held_out_items": len(held),
        "min_confidence": routing.classify_min_confidence,
        "refit_zero_shot": refit_zero_shot,
        "before": replay(classifier, family, experiment.held_vectors, routing, [r.text for r in held]).metrics(held),
        "runs": [experiment.run(t) for t in thresholds or [routing.classify_min_confidence]],
    }


@dataclass(frozen=True)
class _Experiment:
    encoder: Encoder
    classifier: Classifier
    routing: RoutingSettings
    family: str
    stream: list[LabeledRow]
    held: list[LabeledRow]
    stream_vectors: NDArray[np.float32]
    held_vectors: NDArray[np.float32]
    refit_zero_shot: bool

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Training texts are stream texts: their vectors, not a second pass through the encoder."""
        index = {r.text: i for i, r in enumerate(self.stream)}
        return self.stream_vectors[[index[t] for t in texts]]

    def run(self, threshold: float) -> dict[str, Any]:
        """Collect below `threshold`, retrain twice (verdicts; verdicts + confident answers), replay the held-out."""
        texts = [r.text for r in self.stream]
        on_stream = replay(self.classifier, self.family, self.stream_vectors, self.routing, texts)
        collect = self.routing.model_copy(update={"classify_min_confidence": threshold})
        escalated = replay(self.classifier, self.family, self.stream_vectors, collect, texts).escalated
        verdicts = stand_in_verdicts(self.stream, escalated, self.family)
        # The same rule the labels topic gets: latest verdict per `task:id` (ids repeated in a stream count once).
        entries = [KeyedLabel(0, offset, 0, label_key(v), v) for offset, v in enumerate(verdicts)]
        settled = rows_from_verdicts(list(latest_verdicts(entries).values()))
        confident = [
            LabeledRow(id=r.id, family=self.family, text=r.text, label=c.label)
            for r, c, up in zip(self.stream, on_stream.classifications, escalated, strict=True)
            if not up
        ]
        return {
            "collect_min_confidence": threshold,
            "escalated": int(escalated.sum()),
            "escalated_share": float(escalated.mean()),
            "verdicts_by_label": dict(sorted(Counter(r.label for r in settled).items())),
            "after": {
                VERDICTS: self.after(settled, VERDICTS),
                WITH_CONFIDENT: self.after([*settled, *confident], WITH_CONFIDENT),
            },
        }

    def after(self, rows: list[LabeledRow], name: str) -> dict[str, Any]:
        """Retrain on `rows` as `train --from-topic` does, and replay the held-out part with the new heads."""
        try:
            heads, skipped = fit_heads(
                rows,
                self.classifier.label_sets,
                self.encoder,
                origin=name,
                embed=self.embed,
                zero_shot_temperatures=self.refit_zero_shot,
            )
        except (MinnowError, ValueError) as exc:
            return {"trained": False, "why": str(exc)}
        retrained = Classifier(
            self.classifier.label_sets,
            self.classifier.prototypes,
            heads,
            min_confidence=self.routing.classify_min_confidence,
        )
        held_texts = [r.text for r in self.held]
        body = replay(retrained, self.family, self.held_vectors, self.routing, held_texts).metrics(self.held)
        head = heads.heads.get(self.family)
        body |= {"trained": head is not None, "examples": len(rows)}
        if head is not None:
            body["temperature"] = head.temperature
        if self.family in skipped:
            body["why"] = skipped[self.family]
        return body


# --------------------------------------------------------------------------------------------- report
def _row(name: str, m: dict[str, Any]) -> str:
    if "accuracy" not in m:
        return f"  {name:42} not trained: {m.get('why', '')}"
    kept = f"{m['accuracy_kept']:.3f}" if m["accuracy_kept"] is not None else "  -  "
    return (
        f"  {name:42} {m['method']:12} {m['escalation_rate']:7.1%}  {m['accuracy']:.3f}  {m['macro_f1']:.3f}   {kept}"
    )


def render(report: dict[str, Any]) -> str:
    lines = [
        f"distill / {report['family']}: stream {report['stream_items']} items ({report['data']}), "
        f"held out {report['held_out_items']} ({report['holdout']}); replayed at min_confidence "
        f"{report['min_confidence']:.2f}",
        "  verdicts are the gold labels standing in for a reviewer or the large model"
        + ("; zero-shot temperatures refit on the collected labels" if report["refit_zero_shot"] else ""),
        f"  {'':42} {'method':12} {'escal.':>7}  {'acc':5}  {'mF1':5}   acc kept",
        _row("before (no verdicts)", report["before"]),
    ]
    for run in report["runs"]:
        by_label = ", ".join(f"{k} {v}" for k, v in run["verdicts_by_label"].items())
        lines.append(
            f"collected below confidence {run['collect_min_confidence']:.2f}: {run['escalated']} escalated "
            f"({run['escalated_share']:.1%}) -> verdicts {by_label or 'none'}"
        )
        for name, body in run["after"].items():
            lines.append(_row(f"after, {name}", body))
            if body.get("why") and "accuracy" in body:
                lines.append(f"    ({body['why']})")
    if report.get("plot"):
        lines.append(f"plot: {report['plot']}")
    return "\n".join(lines)


def plot_distill(report: dict[str, Any], path: Path) -> None:
    """Held-out macro-F1 and escalation after retraining, against the share of the stream people settled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    xs = [run["escalated_share"] * 100 for run in runs]
    fig, (f1_ax, esc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for name, marker in ((VERDICTS, "o"), (WITH_CONFIDENT, "s")):
        f1 = [run["after"][name].get("macro_f1", np.nan) for run in runs]
        esc = [run["after"][name].get("escalation_rate", np.nan) * 100 for run in runs]
        f1_ax.plot(xs, f1, marker=marker, label=f"after: {name}")
        esc_ax.plot(xs, esc, marker=marker, label=f"after: {name}")
    before = report["before"]
    f1_ax.axhline(before["macro_f1"], color="grey", linestyle="--", label=f"before ({before['method']})")
    esc_ax.axhline(before["escalation_rate"] * 100, color="grey", linestyle="--", label=f"before ({before['method']})")
    f1_ax.set_ylabel("held-out macro-F1")
    esc_ax.set_ylabel(f"held-out escalated at {report['min_confidence']:.2f} (%)")
    for ax in (f1_ax, esc_ax):
        ax.set_xlabel("stream items settled by people (%)")
        ax.grid(alpha=0.3)
    f1_ax.legend(fontsize=8)
    fig.suptitle(f"Distillation on a replayed {report['family']} stream (gold labels stand in for reviewers)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
