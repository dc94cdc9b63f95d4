#!/usr/bin/env python3
"""Measure zero-shot `feed` (news topic) classification on an AG-News-like proxy built from BBC articles.

    python scripts/zero_shot_news_eval.py --data-dir ../shared/data                  # before and after, int8
    python scripts/zero_shot_news_eval.py --data-dir ../shared/data --precision fp32
    python scripts/zero_shot_news_eval.py --data-dir ../shared/data --recipe before   # the old prototypes only
    git show df9f419:pipeline/data/labels.yaml > /tmp/labels-before.yaml                # the labels before issue 9
    python scripts/zero_shot_news_eval.py --data-dir ../shared/data --before-labels /tmp/labels-before.yaml

The `feed` label set follows the four AG News categories, whose items are a title and a one-sentence description.
BBC articles (news/bbc_news_train.csv, lower-cased, title run into the first sentence) are long, so each becomes its
first two sentences. Categories map business -> business, sport -> sports, tech -> sci_tech and politics -> world;
entertainment has no AG News category and is left out. BBC politics is UK domestic politics, an imperfect stand-in
for AG "World" (mostly foreign news): read the world row with that in mind. The mapped rows are split into two
halves, stratified by category and seeded: paraphrases and recipe choices were made looking at the tuning half; every
figure printed is on the held-out half. The project's own news files (pipeline/data/eval/news_topics*.jsonl) are
scored too, as weaker evidence (project-written, and descriptions were tuned on news_topics.jsonl).

Recipes: `before` is the prototype recipe before issue 9 (the embedding of "name: description", 50/50 with
the examples' mean; paraphrases ignored), rebuilt here so that it stays reproducible, on the labels of
`--before-labels` (default: the same labels as `after`; pass the earlier labels.yaml for the figures before); `after` is
`pipeline.tasks.classify.Prototypes` as the service builds it (paraphrases averaged in). Both use the default
zero-shot temperature and MINNOW_ROUTING__CLASSIFY_MIN_CONFIDENCE, as a worker without a head file does; the extra
`after, T fitted` row shows what a temperature fitted on the tuning half (as `minnow train` would write into a head
file) changes.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from pipeline.engine import Encoder, load_encoder
from pipeline.settings import Settings
from pipeline.tasks.calibration import expected_calibration_error
from pipeline.tasks.classify import DESCRIPTION_WEIGHT, Classifier, Prototypes
from pipeline.tasks.heads import HeadFile, fit_zero_shot_temperature
from pipeline.tasks.labels import LabelSet, load_label_sets

FAMILY = "feed"
BBC_TO_FEED = {"business": "business", "sport": "sports", "tech": "sci_tech", "politics": "world"}
EVAL_DIR = Path(__file__).resolve().parent.parent / "pipeline" / "data" / "eval"
PROJECT_FILES = ("news_topics.jsonl", "news_topics_train.jsonl")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Figures:
    name: str
    n: int
    accuracy: float
    macro_f1: float
    ece: float
    escalated: float  # share with confidence below the threshold
    kept_accuracy: float  # accuracy on the rest


def lead(text: str, sentences: int) -> str:
    """The first `sentences` sentences of an article: AG News items are a title and about one sentence."""
    return " ".join(_SENTENCE_END.split(text.strip())[:sentences])


def read_bbc(path: Path, sentences: int) -> tuple[list[str], list[str], list[str]]:
    """Proxy texts, feed labels and BBC categories of the mapped rows (entertainment left out)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"Text", "Category"} <= set(reader.fieldnames):
                raise SystemExit(f"{path}: expected a header with 'Text' and 'Category' (BBC news format)")
            raw = [(r["Text"], r["Category"]) for r in reader]
    except OSError as exc:
        raise SystemExit(f"cannot read {path}: {exc} (pass --data-dir, the folder holding news/)") from exc
    kept = [(lead(text, sentences), cat) for text, cat in raw if cat in BBC_TO_FEED]
    if {cat for _, cat in kept} != set(BBC_TO_FEED):
        raise SystemExit(f"{path}: expected the categories {sorted(BBC_TO_FEED)} (BBC news)")
    return [t for t, _ in kept], [BBC_TO_FEED[c] for _, c in kept], [c for _, c in kept]


def halves(categories: Sequence[str], seed: int) -> tuple[list[int], list[int]]:
    """Row indices of the tuning half and the held-out half, stratified by BBC category."""
    from sklearn.model_selection import train_test_split

    tune, held = train_test_split(np.arange(len(categories)), test_size=0.5, stratify=categories, random_state=seed)
    return sorted(int(i) for i in tune), sorted(int(i) for i in held)


def before_prototypes(label_set: LabelSet, encoder: Encoder) -> Prototypes:
    """The prototypes of the previous recipe: "name: description" (no paraphrases), 50/50 with the examples."""
    descriptions = encoder.embed([f"{lab.name.replace('_', ' ')}: {lab.description}" for lab in label_set.labels])
    rows = []
    for label, desc in zip(label_set.labels, descriptions, strict=True):
        proto = desc
        if label.examples:
            examples = encoder.embed(label.examples).mean(axis=0)
            examples /= max(float(np.linalg.norm(examples)), 1e-12)
            proto = DESCRIPTION_WEIGHT * desc + (1 - DESCRIPTION_WEIGHT) * examples
        rows.append(proto / max(float(np.linalg.norm(proto)), 1e-12))
    return Prototypes(label_set, np.stack(rows).astype(np.float32))


def score(name: str, classifier: Classifier, vectors: NDArray[np.float32], gold: Sequence[str]) -> Figures:
    from sklearn.metrics import f1_score

    names, probs, _ = classifier.probabilities(FAMILY, vectors)
    results = classifier.classify(FAMILY, vectors)
    pred = [c.label for c in results]
    right = np.asarray([p == g for p, g in zip(pred, gold, strict=True)])
    kept = np.asarray([not c.reasons for c in results])  # a reason is what sends the item to escalation
    y = np.asarray([names.index(g) for g in gold])
    return Figures(
        name=name,
        n=len(gold),
        accuracy=float(right.mean()),
        macro_f1=float(f1_score(gold, pred, labels=names, average="macro", zero_division=0)),
        ece=expected_calibration_error(probs, y),
        escalated=float(1 - kept.mean()),
        kept_accuracy=float(right[kept].mean()) if kept.any() else float("nan"),
    )


def read_project_file(path: Path) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["text"] for r in rows if r["family"] == FAMILY], [r["label"] for r in rows if r["family"] == FAMILY]


def print_table(figures: Sequence[Figures], threshold: float) -> None:
    print(f"| recipe, data | items | accuracy | macro-F1 | ECE | escalated at {threshold:.2f} | accuracy of the rest |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for f in figures:
        print(
            f"| {f.name} | {f.n} | {f.accuracy:.3f} | {f.macro_f1:.3f} | {f.ece:.3f} | {f.escalated:.1%} "
            f"| {f.kept_accuracy:.3f} |"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = ap.add_argument
    add("--data-dir", type=Path, required=True, help="the shared data folder holding news/bbc_news_train.csv")
    add("--labels", type=Path, default=None, help="label YAML (default: the configured or bundled labels)")
    add("--precision", choices=["int8", "fp32"], default=None, help="model precision (default: as configured)")
    add("--recipe", choices=["before", "after", "both"], default="both", help="which prototypes to score")
    add("--before-labels", type=Path, default=None, help="label YAML for the `before` recipe (default: --labels)")
    add("--sentences", type=int, default=2, help="leading sentences of each article kept (default 2)")
    add("--seed", type=int, default=0, help="seed of the stratified half split (default 0)")
    add("--no-project", action="store_true", help="skip the project's own news files")
    args = ap.parse_args(argv)

    settings = Settings()
    engine = (
        settings.engine if args.precision is None else settings.engine.model_copy(update={"precision": args.precision})
    )
    label_sets = load_label_sets(args.labels or settings.labels_file)
    if FAMILY not in label_sets:
        raise SystemExit(f"the label file has no '{FAMILY}' label set")
    label_set = label_sets[FAMILY]
    if set(label_set.names) != set(BBC_TO_FEED.values()):
        raise SystemExit(f"the '{FAMILY}' labels {label_set.names} are not the four AG News topics this proxy maps to")
    path = args.data_dir / "news" / "bbc_news_train.csv"
    texts, gold, categories = read_bbc(path, args.sentences)
    tune, held = halves(categories, args.seed)
    encoder = load_encoder(engine)
    threshold = settings.routing.classify_min_confidence
    print(f"data: {path}  ({len(texts)} rows mapped, entertainment left out; first {args.sentences} sentences)")
    print(f"halves (seed {args.seed}, stratified by category): tuning {len(tune)}, held-out {len(held)}")
    print(f"labels: {args.labels or settings.labels_file or 'bundled'}; before: {args.before_labels or 'the same'}")
    print(f"model: {encoder.files.precision}   escalation: confidence < {threshold:.2f}\n")

    vectors = encoder.embed(texts)
    project = [] if args.no_project else [(name, *read_project_file(EVAL_DIR / name)) for name in PROJECT_FILES]
    project_vectors = [encoder.embed(p_texts) for _, p_texts, _ in project]
    recipes = {"before": before_prototypes, "after": Prototypes.build}
    chosen = list(recipes) if args.recipe == "both" else [args.recipe]
    figures: list[Figures] = []
    before_set = load_label_sets(args.before_labels)[FAMILY] if args.before_labels else label_set
    if set(before_set.names) != set(label_set.names):
        raise SystemExit(f"--before-labels has other '{FAMILY}' labels: {before_set.names}")
    for recipe in chosen:
        protos = recipes[recipe](before_set if recipe == "before" else label_set, encoder)
        classifier = Classifier({FAMILY: label_set}, {FAMILY: protos}, min_confidence=threshold)
        figures.append(score(f"{recipe}, BBC proxy held-out half", classifier, vectors[held], [gold[i] for i in held]))
        if recipe == "after":
            temperature = fit_zero_shot_temperature(
                protos.logits(vectors[tune]), [gold[i] for i in tune], protos.label_set.names
            )
            fitted = Classifier(
                {FAMILY: label_set},
                {FAMILY: protos},
                HeadFile(heads={}, zero_shot_temperature={FAMILY: temperature}),
                min_confidence=threshold,
            )
            name = f"after, T={temperature:.4f} fitted on the tuning half, BBC proxy held-out half"
            figures.append(score(name, fitted, vectors[held], [gold[i] for i in held]))
        for (name, _, p_gold), p_vectors in zip(project, project_vectors, strict=True):
            figures.append(score(f"{recipe}, {name} (project-written)", classifier, p_vectors, p_gold))
    print_table(figures, threshold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
