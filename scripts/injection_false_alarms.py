"""How often the injection markers fire on ordinary text: the share of public benign texts they flag, per source.

    python scripts/injection_false_alarms.py --data-dir ../shared/data [--part held-out|tune|all] [--show 5]

Every text of these sets is benign as far as prompt injection goes (tweets, support requests, assistant requests,
chats, news), so any text flagged is a false alarm. The marker list was written, and adjusted, looking only at the
`tune` part; the figures to report are the `held-out` part's: the validation split where the set has one (tweeteval,
CLINC150), else the texts whose sha1 is odd (Davidson, banking77, SAMSum's and DialogSum's validation files, BBC).
The texts are read by path and never copied; `--show` prints flagged ones to the terminal only.

A flagged text goes to review only when the large model's answer also departs from the mini model's, so the
share of escalated items held for a person is at most this share times the escalator's disagreement rate.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from pipeline.escalation.injection import MARKERS, markers_in
from pipeline.tasks.risk import clopper_pearson_upper

csv.field_size_limit(sys.maxsize)


def _half(text: str) -> str:
    return "held-out" if hashlib.sha1(text.encode()).digest()[-1] & 1 else "tune"


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def texts(data: Path) -> Iterator[tuple[str, str, str]]:
    """(source, part, text) for every benign text of the public sets that are present."""
    moderation = data / "moderation"
    for task in ("offensive", "hate"):
        for split, part in (("train", "tune"), ("val", "held-out")):
            path = moderation / f"tweeteval_{task}_{split}_text.txt"
            if path.exists():
                yield from ((f"tweeteval_{task}", part, t) for t in _lines(path))
    davidson = moderation / "davidson_labeled_data.csv"
    if davidson.exists():
        with davidson.open(encoding="utf-8", newline="") as handle:
            yield from (("davidson", _half(row["tweet"]), row["tweet"]) for row in csv.DictReader(handle))
    banking = data / "intents" / "banking77_train.csv"
    if banking.exists():
        with banking.open(encoding="utf-8", newline="") as handle:
            yield from (("banking77", _half(row["text"]), row["text"]) for row in csv.DictReader(handle))
    clinc = data / "intents" / "clinc150_train_val.json"
    if clinc.exists():
        sets = json.loads(clinc.read_text(encoding="utf-8"))
        for key, part in (("train", "tune"), ("oos_train", "tune"), ("val", "held-out"), ("oos_val", "held-out")):
            yield from (("clinc150", part, text) for text, _ in sets.get(key, []))
    for name, field in (("samsum_validation.jsonl", "context"), ("dialogsum_dev.jsonl", "dialogue")):
        path = data / "dialogue" / name
        if path.exists():
            for line in _lines(path):
                text = str(json.loads(line)[field])
                yield (name.split("_")[0], _half(text), text)
    news = data / "news" / "bbc_news_train.csv"
    if news.exists():
        with news.open(encoding="utf-8", newline="") as handle:
            yield from (("bbc_news", _half(row["Text"]), row["Text"]) for row in csv.DictReader(handle))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--part", choices=("held-out", "tune", "all"), default="held-out")
    parser.add_argument("--show", type=int, default=0, help="print up to N flagged texts per source (terminal only)")
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"no data directory {args.data_dir}: give --data-dir (the public sets, ../shared/data)", file=sys.stderr)
        return 2
    seen: Counter[str] = Counter()
    flagged: Counter[str] = Counter()
    by_marker: Counter[str] = Counter()
    shown: Counter[str] = Counter()
    for source, part, text in texts(args.data_dir):
        if args.part not in ("all", part):
            continue
        seen[source] += 1
        names = markers_in(text)
        if names:
            flagged[source] += 1
            by_marker.update(names)
            if shown[source] < args.show:
                shown[source] += 1
                print(f"  [{source}] {','.join(names)}: {text[:200]!r}")
    if not seen:
        print(f"no public sets found under {args.data_dir}", file=sys.stderr)
        return 2
    print(f"part {args.part}")
    print(f"{'source':<20}{'texts':>8}{'flagged':>9}{'share':>10}{'95% upper':>11}")
    rows = [(source, seen[source], flagged[source]) for source in seen]
    rows.append(("all", sum(seen.values()), sum(flagged.values())))
    for source, n, hits in rows:
        upper = clopper_pearson_upper(hits, n, 0.05)  # one-sided Clopper-Pearson bound on the false-alarm rate
        print(f"{source:<20}{n:>8}{hits:>9}{hits / n:>10.4%}{upper:>11.4%}")
    print("by marker: " + (", ".join(f"{name} {by_marker[name]}" for name, _ in MARKERS if by_marker[name]) or "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
