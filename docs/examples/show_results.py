"""Print `minnow infer` results as a short table: what each event became, and the counts per outcome."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import orjson

from pipeline.present import describe


def main(events_path: str, results_path: str) -> int:
    sent = sum(1 for line in Path(events_path).read_bytes().splitlines() if line.strip())
    counts: Counter[str] = Counter()
    print(f"{'id':10} {'kind':12} {'outcome':9} detail")
    for raw in Path(results_path).read_bytes().splitlines():
        r = orjson.loads(raw)
        if "error" in r:
            counts["dead-letter"] += 1
            print(f"{r.get('id') or 'line ' + str(r.get('line'))!s:10} {'-':12} {'error':9} {r['message'][:80]}")
            continue
        counts[r["route"]] += 1
        why = f"; why: {','.join(r['escalation_reasons'])}" if r["escalation_reasons"] else ""
        print(f"{r['id']:10} {r['kind']:12} {r['route']:9} {describe(r)}{why}")
    total = sum(counts.values())
    print(
        f"\n{sent} events sent: {counts['sink']} to sink, {counts['escalate']} escalated, "
        f"{counts['dead-letter']} error records — {total} accounted for"
    )
    return 0 if total == sent else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
