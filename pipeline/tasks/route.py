"""The escalation decision: per-task thresholds turn a result's confidences into sink or escalate."""

from __future__ import annotations

from pipeline.models import Anomaly, Classification, Moderation, Route, Summary
from pipeline.settings import RoutingSettings


def decide(
    settings: RoutingSettings,
    *,
    classification: Classification | None,
    moderation: Moderation | None,
    summary: Summary | None,
    anomaly: Anomaly | None,
) -> tuple[Route, list[str]]:
    """`escalate` with reason codes `task.reason` when any task is unsure; `sink` otherwise."""
    reasons: list[str] = []
    if classification is not None and classification.confidence < settings.classify_min_confidence:
        reasons.append("classify.low_confidence")
    if moderation is not None:
        if moderation.uncertain_categories:
            reasons.append("moderate.uncertain_category")
        elif moderation.confidence < settings.moderation_min_confidence:
            reasons.append("moderate.low_confidence")
        if settings.escalate_flagged and moderation.flagged:
            reasons.append("moderate.flagged")
    if summary is not None and summary.text and summary.confidence < settings.summary_min_confidence:
        reasons.append("summarize.low_confidence")
    if anomaly is not None and anomaly.score > settings.anomaly_escalate_above:
        reasons.append("anomaly.high_score")
    return ("escalate" if reasons else "sink"), reasons
