#!/usr/bin/env python3
"""How much of a real stream the mini model escalates at the defaults, and why — on the public dev sets.

    python scripts/escalation_mix.py --data-dir ../shared/data                 # every set, 600 items each
    python scripts/escalation_mix.py --data-dir ../shared/data --limit 0 --json  # every row, as JSON

Each set is read from its path (never copied) and replayed through the whole mini model (`MiniModel.process`:
every task, then the one routing decision) as the family a user would send it as:

| set | file (split) | sent as |
|---|---|---|
| tweets | moderation/tweeteval_offensive_val (validation) | feed posts |
| hate tweets | moderation/tweeteval_hate_val (validation) | feed posts |
| news | news/bbc_news_train.csv (train; the label set never saw it) | feed posts (whole articles) |
| banking | intents/banking77_train.csv (train) | support tickets (empty subject) |
| assistant | intents/clinc150_train_val.json (`val` + `oos_val`) | transcript segments |
| chats | dialogue/samsum_validation.jsonl (validation) | conversations (`Name: text` turns) |
| dialogues | dialogue/dialogsum_dev.jsonl (dev) | conversations (`#Person1#: text` turns) |

For each: escalation share, the share of items carrying each escalation reason, and the flagged share (for the
benign sets — banking, assistant, news — every flag is a false positive). A seeded sample of `--limit` rows per set
keeps the run to a few minutes on two cores; `--limit 0` reads every row.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.models import AnyEvent, Conversation, FeedEvent, Result, SupportTicket, TranscriptSegment
from pipeline.settings import load_settings
from pipeline.stages.infer import MiniModel

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 32


@dataclass(frozen=True)
class Stream:
    name: str
    path: str
    read: Callable[[Path], list[AnyEvent]]


def _feed(texts: Sequence[str], prefix: str) -> list[AnyEvent]:
    return [FeedEvent(id=f"{prefix}-{i}", source=prefix, text=t, created_at=NOW) for i, t in enumerate(texts)]


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _tweets(path: Path) -> list[AnyEvent]:
    return _feed(_lines(path), "tweet")


def _news(path: Path) -> list[AnyEvent]:
    with path.open(newline="", encoding="utf-8") as f:
        return _feed([row["Text"] for row in csv.DictReader(f)], "news")


def _banking(path: Path) -> list[AnyEvent]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [
        SupportTicket.model_validate(
            {"id": f"bank-{i}", "thread_id": f"bank-{i}", "body": r["text"], "from": "c@example.com", "sent_at": NOW}
        )
        for i, r in enumerate(rows)
    ]


def _assistant(path: Path) -> list[AnyEvent]:
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = [text for text, _ in data["val"] + data["oos_val"]]
    return [
        TranscriptSegment(id=f"clinc-{i}", conversation_id=f"clinc-{i}", seq=0, speaker="user", text=t)
        for i, t in enumerate(rows)
    ]


def _conversation(i: int, prefix: str, dialogue: str) -> Conversation | None:
    segments = []
    for seq, line in enumerate(line for line in dialogue.replace("\r\n", "\n").split("\n") if line.strip()):
        speaker, sep, text = line.partition(":")
        if not sep or not text.strip():
            continue
        segments.append(
            TranscriptSegment(
                id=f"{prefix}-{i}-{seq}",
                conversation_id=f"{prefix}-{i}",
                seq=seq,
                speaker=speaker.strip() or "?",
                text=text.strip(),
            )
        )
    return Conversation(id=f"{prefix}-{i}", segments=segments) if segments else None


def _dialogues(field: str, prefix: str) -> Callable[[Path], list[AnyEvent]]:
    def read(path: Path) -> list[AnyEvent]:
        rows = [json.loads(line) for line in _lines(path) if line.strip()]
        conversations = (_conversation(i, prefix, row[field]) for i, row in enumerate(rows))
        return [c for c in conversations if c is not None]

    return read


STREAMS = (
    Stream("tweets", "moderation/tweeteval_offensive_val_text.txt", _tweets),
    Stream("hate tweets", "moderation/tweeteval_hate_val_text.txt", _tweets),
    Stream("news", "news/bbc_news_train.csv", _news),
    Stream("banking", "intents/banking77_train.csv", _banking),
    Stream("assistant", "intents/clinc150_train_val.json", _assistant),
    Stream("chats", "dialogue/samsum_validation.jsonl", _dialogues("context", "samsum")),
    Stream("dialogues", "dialogue/dialogsum_dev.jsonl", _dialogues("dialogue", "dialogsum")),
)


def _batches(events: Sequence[AnyEvent]) -> Iterator[Sequence[AnyEvent]]:
    for start in range(0, len(events), BATCH):
        yield events[start : start + BATCH]


def measure(model: MiniModel, events: Sequence[AnyEvent]) -> dict[str, object]:
    results = [r for batch in _batches(events) for r in model.process(batch) if isinstance(r, Result)]
    n = len(results)
    reasons = Counter(reason for r in results for reason in set(r.escalation_reasons))
    escalated = sum(r.route == "escalate" for r in results)
    flagged = sum(bool(r.moderation and r.moderation.flagged) for r in results)
    return {
        "n": n,
        "errors": len(events) - n,
        "escalated": round(escalated / n, 4) if n else 0.0,
        "flagged": round(flagged / n, 4) if n else 0.0,
        "reasons": {reason: round(count / n, 4) for reason, count in reasons.most_common()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, required=True, help="the shared data folder (../shared/data)")
    parser.add_argument("--limit", type=int, default=600, help="rows per set, a seeded sample (0 = all)")
    parser.add_argument("--only", nargs="*", help="set names to run (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    model = MiniModel.load(load_settings())
    report: dict[str, object] = {}
    for stream in STREAMS:
        if args.only and stream.name not in args.only:
            continue
        path = args.data_dir / stream.path
        if not path.is_file():
            print(f"escalation_mix: {path} not found; pass --data-dir pointing at the shared data", file=sys.stderr)
            return 2
        events = stream.read(path)
        if args.limit and len(events) > args.limit:
            events = random.Random(0).sample(events, args.limit)
        report[stream.name] = row = measure(model, events) | {"file": stream.path}
        if not args.json:
            reasons = ", ".join(f"{name} {share:.1%}" for name, share in row["reasons"].items())  # type: ignore[attr-defined]
            print(
                f"{stream.name:12} n={row['n']:5} escalated {row['escalated']:.1%}  flagged {row['flagged']:.1%}  "
                f"reasons: {reasons or '-'}",
                flush=True,
            )
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
