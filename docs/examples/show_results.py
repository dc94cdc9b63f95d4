"""Print `minnow infer` results as a short table: what each event became, and the counts per outcome."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import orjson


def main(events_path: str, results_path: str) -> int:
    sent = sum(1 for line in Path(events_path).read_bytes().splitlines() if line.strip())
    counts: Counter[str] = Counter()
    print(f"{'id':10} {'kind':12} {'outcome':9} detail")
    for raw in Path(results_path).read_bytes().splitlines():
        r = orjson.loads(raw)
        if "error" in r:
            counts["dead-letter"] += 1
            print(
                f"{str(r.get('id') or 'line ' + str(r.get('line'))):10} {'-':12} {'error':9} {r['message'][:80]}"
            )
            continue
        counts[r["route"]] += 1
        parts = []
        if c := r.get("classification"):
            parts.append(f"{c['label']} ({c['confidence']:.2f})")
        if (m := r.get("moderation")) and m["flagged"]:
            parts.append("flagged: " + ",".join(m["flagged_categories"]))
        if s := r.get("summary"):
            parts.append(f"summary: {s['text'][:60]}…")
        if a := r.get("anomaly"):
            parts.append(f"anomaly {a['score']:.2f}")
        if r["escalation_reasons"]:
            parts.append("why: " + ",".join(r["escalation_reasons"]))
        print(f"{r['id']:10} {r['kind']:12} {r['route']:9} {'; '.join(parts)}")
    total = sum(counts.values())
    print(
        f"\n{sent} events sent: {counts['sink']} to sink, {counts['escalate']} escalated, "
        f"{counts['dead-letter']} error records — {total} accounted for"
    )
    return 0 if total == sent else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
