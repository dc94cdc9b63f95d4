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
        one_line = " / ".join(line for line in s["text"].splitlines() if line.strip())  # a summary is a line per turn
        parts.append(f"summary: {one_line[:50]}…")
    return "; ".join(parts)
