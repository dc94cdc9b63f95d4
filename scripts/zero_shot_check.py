#!/usr/bin/env python3
"""Measure zero-shot accuracy and macro-F1 of the label sets on labeled JSONL files, with the real encoder.

    python scripts/zero_shot_check.py              # bundled labels, every file in pipeline/data/eval/
    python scripts/zero_shot_check.py --labels my.yaml --errors 10 pipeline/data/eval/news_topics.jsonl
    python scripts/zero_shot_check.py --fail-under news_topics=0.78

Prototypes are built exactly as the service builds them (`pipeline.tasks.classify.Prototypes`): the
normalised mean embedding of "name: description" and the label's paraphrases, and the normalised mean embedding of
the examples, weighted 0.5 / 0.5, then normalised; a text gets the label whose prototype has the highest cosine.
Each JSONL line is {"id": ..., "family": ..., "text": ..., "label": ...}; `family` picks the label set.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, f1_score

from pipeline.engine import Encoder, load_encoder
from pipeline.settings import EngineSettings
from pipeline.tasks.classify import Prototypes
from pipeline.tasks.labels import LabelSet, bundled_labels_path, load_label_sets

EVAL_DIR = Path(__file__).resolve().parent.parent / "pipeline" / "data" / "eval"


def read_jsonl(path: Path) -> list[dict[str, str]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = {"id", "family", "text", "label"} - row.keys()
        if missing:
            raise SystemExit(f"{path}:{n}: missing fields {sorted(missing)}")
        rows.append(row)
    return rows


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def leaked_examples(sets: dict[str, LabelSet], rows: list[dict[str, str]]) -> list[str]:
    """Label examples and paraphrases that are (near-)copies of evaluation texts: they would inflate the score."""
    texts = [_norm(r["text"]) for r in rows]
    leaks = []
    for ls in sets.values():
        for label in ls.labels:
            for ex in [*label.paraphrases, *label.examples]:
                e = _norm(ex)
                if len(e) >= 12 and any(e in t or t in e for t in texts):
                    leaks.append(f"  {ls.name}/{label.name}: {ex!r}")
    return leaks


def evaluate(
    path: Path, sets: dict[str, LabelSet], protos: dict[str, Prototypes], encoder: Encoder, errors: int
) -> dict[str, Any]:
    rows = read_jsonl(path)
    families = Counter(r["family"] for r in rows)
    if len(families) != 1:
        raise SystemExit(f"{path}: expected one family per file, found {dict(families)}")
    family = next(iter(families))
    if family not in sets:
        raise SystemExit(f"{path}: family '{family}' has no label set (have: {', '.join(sets)})")
    names = sets[family].names
    unknown = sorted({r["label"] for r in rows} - set(names))
    if unknown:
        raise SystemExit(f"{path}: labels {unknown} are not in label set '{family}' {names}")

    vectors = encoder.embed([r["text"] for r in rows])
    scores = protos[family].logits(vectors)
    pred = [names[i] for i in np.argmax(scores, axis=1)]
    gold = [r["label"] for r in rows]
    result: dict[str, Any] = {
        "file": path.name,
        "family": family,
        "n": len(rows),
        "labels": len(names),
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=names, average="macro", zero_division=0)),
        "report": classification_report(gold, pred, labels=names, digits=3, zero_division=0),
        "confusion": Counter((g, p) for g, p in zip(gold, pred, strict=True) if g != p),
    }
    if errors:
        wrong = [(r, p, s) for r, p, s in zip(rows, pred, scores, strict=True) if r["label"] != p]
        result["errors"] = [
            f"  [{r['id']}] gold={r['label']} pred={p} "
            f"margin={float(s.max() - s[names.index(r['label'])]):.3f}  {r['text'][:140]}"
            for r, p, s in wrong[:errors]
        ]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = ap.add_argument
    add("files", nargs="*", type=Path, help="labeled JSONL files (default: pipeline/data/eval/*.jsonl)")
    add("--labels", type=Path, default=None, help="label YAML (default: pipeline/data/labels.yaml)")
    add("--precision", choices=["int8", "fp32"], default=None, help="model precision (default: int8)")
    add("--errors", type=int, default=0, metavar="N", help="print up to N misclassified items a file")
    add("--report", action="store_true", help="print per-label precision/recall and top confusions")
    add("--json", action="store_true", help="print the summary as JSON instead of a table")
    ap.add_argument(
        "--fail-under",
        action="append",
        default=[],
        metavar="STEM=F1",
        help="exit 1 when a file's macro-F1 is below F1, e.g. news_topics=0.78 (repeatable)",
    )
    args = ap.parse_args(argv)

    files = args.files or sorted(EVAL_DIR.glob("*.jsonl"))
    labels_path = args.labels or bundled_labels_path()
    sets = load_label_sets(labels_path)

    all_rows = [row for f in files for row in read_jsonl(f)]
    leaks = leaked_examples(sets, all_rows)
    if leaks:
        print("label examples or paraphrases copied from the evaluation data (remove them):", file=sys.stderr)
        print(*leaks, sep="\n", file=sys.stderr)
        return 2

    engine = EngineSettings() if args.precision is None else EngineSettings(precision=args.precision)
    encoder = load_encoder(engine)
    protos = {family: Prototypes.build(ls, encoder) for family, ls in sets.items()}
    results = [evaluate(f, sets, protos, encoder, args.errors) for f in files]

    if args.json:
        keys = ("file", "family", "n", "labels", "accuracy", "macro_f1")
        print(json.dumps([{k: r[k] for k in keys} for r in results], indent=2))
    else:
        print(f"labels: {labels_path}   model: {encoder.files.directory.name} ({encoder.files.precision})\n")
        print("| file | family | items | labels | accuracy | macro-F1 |")
        print("|---|---|---:|---:|---:|---:|")
        for r in results:
            cells = [
                r["file"],
                r["family"],
                r["n"],
                r["labels"],
                f"{r['accuracy']:.3f}",
                f"{r['macro_f1']:.3f}",
            ]
            print("| " + " | ".join(map(str, cells)) + " |")
    for r in results:
        if args.report:
            print(f"\n== {r['file']}\n{r['report']}")
            top = ", ".join(f"{g}->{p} x{c}" for (g, p), c in r["confusion"].most_common(6))
            print(f"top confusions (gold->pred): {top or 'none'}")
        if r.get("errors"):
            print(f"\n== {r['file']}: first {len(r['errors'])} errors", *r["errors"], sep="\n")

    failed = False
    for spec in args.fail_under:
        stem, _, value = spec.partition("=")
        matches = [r for r in results if Path(r["file"]).stem == stem]
        if not matches:
            print(f"--fail-under: no evaluated file named {stem}.jsonl", file=sys.stderr)
            failed = True
        for r in matches:
            if r["macro_f1"] < float(value):
                print(f"FAIL {r['file']}: macro-F1 {r['macro_f1']:.3f} < {float(value):.3f}", file=sys.stderr)
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
