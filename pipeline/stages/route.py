"""Turn an engine outcome into where it goes: sink, escalation or dead letter — data, not exceptions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline.models import (
    AnyEvent,
    ErrorRecord,
    EscalationRecord,
    Result,
    ToDeadLetter,
    ToEscalation,
    ToSink,
)

Outcome = ToSink | ToEscalation | ToDeadLetter


def route(event: AnyEvent, outcome: Result | ErrorRecord, *, now: datetime | None = None) -> Outcome:
    """Where one event's outcome goes. The escalation record carries the original event for the large model."""
    if isinstance(outcome, ErrorRecord):
        return ToDeadLetter(error=outcome)
    if outcome.route == "sink":
        return ToSink(result=outcome)
    event_json: dict[str, Any] = event.model_dump(mode="json")
    return ToEscalation(
        record=EscalationRecord(
            id=outcome.id,
            kind=outcome.kind,
            reasons=outcome.escalation_reasons,
            result=outcome,
            event=event_json,
            escalated_at=now or datetime.now(UTC),
        )
    )
