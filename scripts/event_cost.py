"""What one event costs the mini model, by size: a short post against long ones, through every task.

    python scripts/event_cost.py [--repeats 7] [--threads 1]

Each event is processed alone (a batch of one, as when it arrives on a quiet partition), `--repeats` times; the
table gives the median milliseconds, the ratio to the short post (measured in the same run), the tokens embedded
and the limit that cut the text, if any. The long texts are built from bundled news-like sentences, seeded.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime

from pipeline.models import FeedEvent, SupportTicket
from pipeline.settings import Settings
from pipeline.stages.infer import MiniModel

WORDS = [
    "the",
    "central",
    "bank",
    "said",
    "on",
    "tuesday",
    "that",
    "rates",
    "would",
    "stay",
    "on",
    "hold",
    "while",
    "inflation",
    "cooled",
    "across",
    "most",
    "regions",
    "and",
    "analysts",
    "expected",
    "growth",
    "to",
    "pick",
    "up",
    "next",
    "year",
    "as",
    "exports",
    "recovered",
    "from",
    "a",
    "weak",
    "summer",
]


def _text(chars: int, rng: random.Random) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24))).capitalize() + "."
        out.append(sentence)
        size += len(sentence) + 1
    return " ".join(out)[:chars]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (1: one core per worker)")
    args = parser.parse_args()
    settings = Settings.model_validate({"engine": {"intra_op_threads": args.threads}})
    model = MiniModel.load(settings)
    rng = random.Random(7)
    now = datetime(2026, 12, 4, tzinfo=UTC)
    cases: list[tuple[str, FeedEvent | SupportTicket]] = [
        (
            "short post (41 chars)",
            FeedEvent(id="s", source="b", text="Rates rose again today, and markets fell.", created_at=now),
        )
    ]
    for chars in (1_000, 10_000, 100_000):
        cases.append(
            (f"post, {chars // 1000} KB", FeedEvent(id="p", source="b", text=_text(chars, rng), created_at=now))
        )
    cases.append(
        (
            "ticket, 100 KB (summarized)",
            SupportTicket.model_validate(
                {
                    "id": "t",
                    "thread_id": "t",
                    "from": "a@b.c",
                    "subject": "Refund",
                    "body": _text(100_000, rng),
                    "sent_at": now,
                }
            ),
        )
    )
    model.process([cases[0][1]])  # warm-up
    base = None
    print(f"{'event':30} {'median ms':>10} {'x short':>8} {'tokens':>7}  {'cut by':22} slowest stages (ms, last run)")
    for name, event in cases:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            (result,) = model.process([event])
            times.append(time.perf_counter() - start)
        median = statistics.median(times) * 1000
        base = base or median
        info = result.input if hasattr(result, "input") else None
        tokens = info.tokens if info else 0
        cut = (info.truncated_by or "") if info else ""
        stages = getattr(result, "timings", {})
        top = ", ".join(f"{k} {v:.0f}" for k, v in sorted(stages.items(), key=lambda kv: -kv[1])[:4])
        print(f"{name:30} {median:10.1f} {median / base:8.1f} {tokens:7d}  {cut:22} {top}")
    print(f"\nMINNOW_ENGINE__MAX_TOKENS_PER_EVENT={settings.engine.max_tokens_per_event}, threads {args.threads}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
