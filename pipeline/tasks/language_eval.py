"""Measure language identification on real text: python -m pipeline.tasks.language_eval --data-dir ../shared/data.

Per dataset: how many texts, the share called unsupported (on English sets: the false-unsupported rate),
the share too short to tell (und), and on the other languages the recall of "unsupported" and the accuracy
of the code. Then throughput, median of 3 runs. `--tune` sweeps min_chars x min_confidence on the tuning
part only, beside the rule not taken (unsupported when the top language alone is probable enough);
`--calibration` shows whether the probabilities mean what they say. The data, and which part of it tuned
what: pipeline/tasks/language_corpora.py and docs/language.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.tasks.language import (
    DEFAULT_MIN_CHARS,
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_TEMPERATURE,
    UNDETERMINED,
    LanguageIdentifier,
    LanguageScore,
)
from pipeline.tasks.language_corpora import (
    FORTUNES_DIR,
    LOCALE_DIR,
    Corpus,
    catalog_corpora,
    english_corpora,
    fortune_corpora,
)

# English tuned on: the train splits. Of every other language, the even-numbered texts; the odd ones are held out.
TUNING_ENGLISH = frozenset({"tweets_hate_train", "tweets_offensive_train", "davidson_tweets", "banking77_train"})
THROUGHPUT_SETS = ("tweets_hate_val", "tweets_offensive_val")
# Codes that name the same written language: the catalogs say nb, the model says no (Norwegian).
SAME_LANGUAGE = {"nb": {"nb", "no"}, "nn": {"nn", "no"}}
SWEEP_MIN_CHARS = (8, 10, 12, 15, 18, 20, 25)
SWEEP_MIN_CONFIDENCE = (0.9, 0.95, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999)
SWEEP_TEMPERATURE = (1.0, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.3)


def load_corpora(data_dir: Path, locale_dir: Path = LOCALE_DIR, fortunes_dir: Path = FORTUNES_DIR) -> list[Corpus]:
    """Every set this machine has: English from data_dir, other languages from the catalogs and fortunes."""
    return [*english_corpora(data_dir), *catalog_corpora(locale_dir), *fortune_corpora(fortunes_dir)]


def tuning_part(corpus: Corpus) -> list[int]:
    """Indexes of the texts thresholds were tuned on; the rest of the set is held out."""
    if corpus.code == "en":
        return list(range(len(corpus.texts))) if corpus.name in TUNING_ENGLISH else []
    return list(range(0, len(corpus.texts), 2))


def held_out_part(corpus: Corpus) -> list[int]:
    tuned = set(tuning_part(corpus))
    return [i for i in range(len(corpus.texts)) if i not in tuned]


def _right_code(expected: str, code: str) -> bool:
    return code in SAME_LANGUAGE.get(expected, {expected})


def dataset_row(identifier: LanguageIdentifier, corpus: Corpus, scores: Sequence[LanguageScore]) -> dict[str, Any]:
    """The figures of one set at the identifier's thresholds."""
    results = [identifier.decide(s) for s in scores]
    n = len(results)
    unsupported = sum(not r.supported for r in results)
    identified = [r for r in results if r.code != UNDETERMINED]
    row: dict[str, Any] = {
        "dataset": corpus.name,
        "source": corpus.source,
        "language": corpus.code,
        "n": n,
        "unsupported_share": unsupported / n if n else 0.0,
        "und_share": (n - len(identified)) / n if n else 0.0,
    }
    if corpus.code not in identifier.supported:
        row["recall_unsupported"] = row["unsupported_share"]
        row["code_accuracy_identified"] = (
            sum(_right_code(corpus.code, r.code) for r in identified) / len(identified) if identified else 0.0
        )
    return row


def evaluate(identifier: LanguageIdentifier, corpora: Sequence[Corpus]) -> dict[str, Any]:
    """Per-set rows, and a summary over the held-out parts (English sets not tuned on, odd texts of the rest)."""
    scored = {c.name: identifier.score(c.texts) for c in corpora}
    rows = [dataset_row(identifier, c, scored[c.name]) for c in corpora]
    held_english: list[dict[str, Any]] = []
    held_other: list[dict[str, Any]] = []
    for corpus in corpora:
        part = held_out_part(corpus)
        if not part:
            continue
        held = Corpus(corpus.name, corpus.source, [corpus.texts[i] for i in part], corpus.code)
        row = dataset_row(identifier, held, [scored[corpus.name][i] for i in part])
        (held_english if corpus.code in identifier.supported else held_other).append(row)
    summary = {
        "held_out_supported_sets": len(held_english),
        "held_out_false_unsupported_mean": _mean(r["unsupported_share"] for r in held_english),
        "held_out_false_unsupported_worst": max((r["unsupported_share"] for r in held_english), default=0.0),
        "held_out_other_sets": len(held_other),
        "held_out_recall_unsupported_mean": _mean(r["recall_unsupported"] for r in held_other),
        "held_out_code_accuracy_mean": _mean(r["code_accuracy_identified"] for r in held_other),
    }
    return {"datasets": rows, "summary": summary}


def sweep(corpora: Sequence[Corpus], supported: Sequence[str], temperature: float) -> list[dict[str, Any]]:
    """Worst and mean false-unsupported over the English tuning sets, mean recall over the other tuning halves."""
    scorer = LanguageIdentifier(supported, min_chars=1, temperature=temperature)
    parts = [(c, tuning_part(c)) for c in corpora]
    scored = [(c, scorer.score([c.texts[i] for i in part])) for c, part in parts if part]
    rows = []
    for min_chars in SWEEP_MIN_CHARS:
        for min_confidence in SWEEP_MIN_CONFIDENCE:
            identifier = LanguageIdentifier(
                supported, min_chars=min_chars, min_confidence=min_confidence, temperature=temperature
            )
            english: list[tuple[float, float]] = []
            other: list[tuple[float, float]] = []
            for corpus, scores in scored:
                shares = (
                    _mean(not identifier.decide(s).supported for s in scores),
                    _mean(_top1_unsupported(identifier, s) for s in scores),
                )
                (english if corpus.code in identifier.supported else other).append(shares)
            rows.append(
                {
                    "min_chars": min_chars,
                    "min_confidence": min_confidence,
                    "false_unsupported_worst": max((e[0] for e in english), default=0.0),
                    "false_unsupported_mean": _mean(e[0] for e in english),
                    "recall_unsupported_mean": _mean(o[0] for o in other),
                    "top1_rule_false_unsupported_worst": max((e[1] for e in english), default=0.0),
                    "top1_rule_recall_unsupported_mean": _mean(o[1] for o in other),
                }
            )
    return rows


def _top1_unsupported(identifier: LanguageIdentifier, score: LanguageScore) -> bool:
    """The rule not taken, for comparison: unsupported when the top language alone is probable enough."""
    return (
        score.code != UNDETERMINED
        and score.letters >= identifier.min_chars
        and score.code not in identifier.supported
        and score.probability >= identifier.min_confidence
    )


def calibration(identifier: LanguageIdentifier, corpora: Sequence[Corpus], *, tuning: bool) -> dict[str, Any]:
    """Is a top-1 probability of p right p of the time? On the tuning or the held-out part; each set weighs the
    same, or English, most of the texts, would decide alone."""
    probability, right, weight = [], [], []
    for corpus in corpora:
        part = tuning_part(corpus) if tuning else held_out_part(corpus)
        scores = [s for s in identifier.score([corpus.texts[i] for i in part]) if s.code != UNDETERMINED]
        for s in scores:
            probability.append(s.probability)
            right.append(_right_code(corpus.code, s.code))
            weight.append(1.0 / len(scores))
    p, ok, w = np.array(probability), np.array(right, dtype=float), np.array(weight)
    edges = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0 + 1e-9)
    bins, ece = [], 0.0
    for low, high in itertools.pairwise(edges):
        m = (p >= low) & (p < high)
        if not m.any():
            continue
        mean_p, accuracy = float(np.average(p[m], weights=w[m])), float(np.average(ok[m], weights=w[m]))
        ece += abs(mean_p - accuracy) * float(w[m].sum())
        bins.append(
            {"from": low, "to": min(high, 1.0), "n": int(m.sum()), "mean_probability": mean_p, "accuracy": accuracy}
        )
    return {"texts": len(p), "expected_calibration_error": ece / float(w.sum()), "bins": bins}


def temperature_sweep(corpora: Sequence[Corpus], supported: Sequence[str], min_chars: int) -> list[dict[str, Any]]:
    """Calibration error of the top-1 probability per temperature, on the tuning and the held-out part."""
    rows = []
    for temperature in SWEEP_TEMPERATURE:
        identifier = LanguageIdentifier(supported, min_chars=min_chars, temperature=temperature)
        rows.append(
            {
                "temperature": temperature,
                "tuning_ece": calibration(identifier, corpora, tuning=True)["expected_calibration_error"],
                "held_out_ece": calibration(identifier, corpora, tuning=False)["expected_calibration_error"],
            }
        )
    return rows


def throughput(identifier: LanguageIdentifier, texts: Sequence[str], runs: int = 3) -> float:
    """Texts per second through identify(), median of `runs` runs over the batch, the model already loaded."""
    identifier.warm()
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        identifier.identify(texts)
        rates.append(len(texts) / (time.perf_counter() - start))
    return statistics.median(rates)


def _mean(values: Any) -> float:
    values = [float(v) for v in values]
    return statistics.fmean(values) if values else 0.0


def _print_report(report: dict[str, Any]) -> None:
    print(f"{'dataset':24s} {'lang':4s} {'n':>6s} {'unsupported':>11s} {'und':>6s} {'recall':>6s} {'code acc':>8s}")
    for row in report["datasets"]:
        recall = f"{row['recall_unsupported']:6.3f}" if "recall_unsupported" in row else " " * 6
        accuracy = f"{row['code_accuracy_identified']:8.3f}" if "code_accuracy_identified" in row else ""
        print(
            f"{row['dataset']:24s} {row['language']:4s} {row['n']:6d} {row['unsupported_share']:11.4f} "
            f"{row['und_share']:6.3f} {recall} {accuracy}"
        )
    s = report["summary"]
    print(
        f"held out: false unsupported mean {s['held_out_false_unsupported_mean']:.4f}, "
        f"worst {s['held_out_false_unsupported_worst']:.4f} over {s['held_out_supported_sets']} supported sets; "
        f"recall unsupported mean {s['held_out_recall_unsupported_mean']:.3f}, code accuracy "
        f"{s['held_out_code_accuracy_mean']:.3f} over {s['held_out_other_sets']} other sets"
    )
    print(
        f"throughput: {report['throughput_texts_per_s']:.0f} texts/s ({report['throughput_texts']} tweets, median of 3)"
    )
    print(f"model load: {report['model_load_s']:.2f} s")


def _calibration_report(identifier: LanguageIdentifier, corpora: Sequence[Corpus], *, as_json: bool) -> None:
    temperatures = temperature_sweep(corpora, sorted(identifier.supported), identifier.min_chars)
    held_out = calibration(identifier, corpora, tuning=False)
    if as_json:
        print(json.dumps({"temperatures": temperatures, "held_out_at_chosen": held_out}, indent=1))
        return
    for t in temperatures:
        print(f"temperature {t['temperature']:<4} ECE tuning {t['tuning_ece']:.4f} held out {t['held_out_ece']:.4f}")
    print(f"held out at temperature {identifier.temperature}:")
    for b in held_out["bins"]:
        print(
            f"  [{b['from']:.2f}, {b['to']:.2f}) n={b['n']:6d} mean probability {b['mean_probability']:.3f} "
            f"accuracy {b['accuracy']:.3f}"
        )
    print(f"  expected calibration error {held_out['expected_calibration_error']:.4f} over {held_out['texts']} texts")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="the shared public data")
    parser.add_argument("--locale-dir", type=Path, default=LOCALE_DIR, help="gettext catalogs (other languages)")
    parser.add_argument("--fortunes-dir", type=Path, default=FORTUNES_DIR, help="Debian's fortunes-* packages")
    parser.add_argument("--supported", default="en", help="comma-separated ISO 639-1 codes")
    parser.add_argument("--min-confidence", type=float, default=DEFAULT_MIN_CONFIDENCE)
    parser.add_argument("--min-chars", type=int, default=DEFAULT_MIN_CHARS)
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    parser.add_argument("--tune", action="store_true", help="sweep min_chars x min_confidence on the tuning part")
    parser.add_argument("--calibration", action="store_true", help="reliability of the top-1 probability")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    supported = [code for code in args.supported.split(",") if code.strip()]
    identifier = LanguageIdentifier(
        supported, min_confidence=args.min_confidence, min_chars=args.min_chars, temperature=args.temperature
    )
    start = time.perf_counter()
    identifier.warm()
    load_s = time.perf_counter() - start
    corpora = load_corpora(args.data_dir, args.locale_dir, args.fortunes_dir)
    if args.tune:
        rows = sweep(corpora, supported, args.temperature)
        if args.json:
            print(json.dumps(rows, indent=1))
            return
        for r in rows:
            print(
                f"min_chars {r['min_chars']:3d} min_confidence {r['min_confidence']:<7} false unsupported worst "
                f"{r['false_unsupported_worst']:.4f} mean {r['false_unsupported_mean']:.4f}  "
                f"recall {r['recall_unsupported_mean']:.3f}  | top-1 rule: worst "
                f"{r['top1_rule_false_unsupported_worst']:.4f} recall {r['top1_rule_recall_unsupported_mean']:.3f}"
            )
        return
    if args.calibration:
        _calibration_report(identifier, corpora, as_json=args.json)
        return
    report = evaluate(identifier, corpora)
    tweets = [t for c in corpora if c.name in THROUGHPUT_SETS for t in c.texts]
    report["throughput_texts"] = len(tweets)
    report["throughput_texts_per_s"] = throughput(identifier, tweets) if tweets else 0.0
    report["model_load_s"] = load_s
    report["settings"] = {
        "supported": sorted(identifier.supported),
        "min_confidence": identifier.min_confidence,
        "min_chars": identifier.min_chars,
        "temperature": identifier.temperature,
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print_report(report)


if __name__ == "__main__":
    main()
