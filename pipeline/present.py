"""One-line human descriptions of results (as JSON) for terminal output."""

from __future__ import annotations

from typing import Any


def describe(result: dict[str, Any]) -> str:
    """Label and confidence, moderation flags, anomaly score and the start of a summary, as one line."""
    parts = []
    if c := result.get("classification"):
        parts.append(f"{c['label']} ({c['confidence']:.2f})")
    if (m := result.get("moderation")) and m["flagged"]:
        parts.append("flagged: " + ",".join(m["flagged_categories"]))
    if a := result.get("anomaly"):
        parts.append(f"anomaly {a['score']:.2f}")
    if s := result.get("summary"):
        parts.append(f"summary: {s['text'][:50]}…")
    return "; ".join(parts)
