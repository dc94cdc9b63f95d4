"""Escalation test support: records built from Result objects as the worker writes them, and a virtual clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from pipeline.models import (
    EVENT_ADAPTER,
    AnyEvent,
    Classification,
    EscalationRecord,
    InputInfo,
    ModelInfo,
    Moderation,
    Result,
    Summary,
)
from pipeline.tasks.moderate import CATEGORIES

MINI = ModelInfo(name="all-MiniLM-L6-v2", version="test", quantization="int8")
AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FEED_LABELS = ("world", "sports", "business", "sci_tech")
CALL_LABELS = ("billing", "technical_support", "cancellation", "other")
TICKET_LABELS = ("billing", "refund", "payment_issue", "complaint")


def feed_event(event_id: str, text: str) -> dict[str, Any]:
    return {"kind": "feed", "id": event_id, "source": "wire", "text": text, "created_at": "2026-11-26T11:59:00Z"}


def conversation_event(event_id: str, turns: list[tuple[str, str]]) -> dict[str, Any]:
    segments = [
        {"kind": "transcript", "id": f"{event_id}-{i}", "conversation_id": event_id, "seq": i, "speaker": s, "text": t}
        for i, (s, t) in enumerate(turns)
    ]
    return {"kind": "conversation", "id": event_id, "segments": segments}


def iot_event(event_id: str, device: str, text: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "iot", "id": event_id, "device_id": device, "ts": "2026-11-26T11:59:00Z"}
    body["readings"] = {"temp_c": 97.5}
    if text is not None:
        body["text"] = text
    return body


def ticket_event(event_id: str, thread: str, body: str, subject: str = "Charged twice") -> dict[str, Any]:
    return {
        "kind": "ticket",
        "id": event_id,
        "thread_id": thread,
        "subject": subject,
        "body": body,
        "from": "customer@example.com",
        "sent_at": "2026-11-26T11:59:00Z",
    }


def classification(labels: tuple[str, ...], label_set: str, top: float = 0.4) -> Classification:
    rest = (1 - top) / (len(labels) - 1)
    scores = {name: (top if i == 0 else rest) for i, name in enumerate(labels)}
    return Classification(
        label=labels[0], confidence=top, scores=scores, label_set=label_set, method="zero-shot", reasons=["low"]
    )


def moderation(uncertain: tuple[str, ...] = ("harassment",)) -> Moderation:
    categories = {name: (0.45 if name in uncertain else 0.02) for name in CATEGORIES}
    return Moderation(
        flagged=False, confidence=0.2, categories=categories, uncertain_categories=list(uncertain), reasons=["near"]
    )


def escalation(
    event: dict[str, Any],
    reasons: list[str],
    *,
    with_moderation: bool = True,
    summary: str | None = None,
    labels: tuple[str, ...] | None = None,
) -> tuple[EscalationRecord, AnyEvent]:
    """The record the worker writes for `event`, with a mini result unsure in the ways `reasons` say."""
    parsed = EVENT_ADAPTER.validate_python(event)
    kind = parsed.kind
    label_set = "transcript" if kind == "conversation" else kind
    default_labels = {"transcript": CALL_LABELS, "conversation": CALL_LABELS, "ticket": TICKET_LABELS}.get(
        kind, FEED_LABELS
    )
    has_text = kind != "iot" or "text" in event
    result = Result(
        id=parsed.id,
        kind=kind,
        classification=classification(labels or default_labels, label_set) if has_text else None,
        moderation=moderation() if with_moderation else None,
        summary=Summary(text=summary, sentence_ids=[0], confidence=0.3) if summary else None,
        route="escalate",
        escalation_reasons=reasons,
        model=MINI,
        input=InputInfo(tokens=12, chunks=1, truncated=False),
        timings={"infer": 3.0},
    )
    record = EscalationRecord(id=parsed.id, kind=kind, reasons=reasons, result=result, event=event, escalated_at=AT)
    return record, parsed


class VirtualClock:
    """Monotonic time that only moves when someone sleeps: each sleep advances it by exactly its length.

    Exact when one sleeper at a time waits (the limiter serialises its waiters); the sleeps are recorded.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)
