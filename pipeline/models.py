"""The data contracts: input events, enriched results and error records (frozen pydantic v2 models)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

EventKind = Literal["feed", "transcript", "conversation", "iot"]
Route = Literal["sink", "escalate"]
DecidedBy = Literal["mini-model", "large-model", "human"]


class _Contract(BaseModel):
    # Unknown fields are kept out (extra="ignore") so producers can add fields without breaking workers.
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)


# ----------------------------------------------------------------------------------------------- inputs
class FeedEvent(_Contract):
    """A social or news post."""

    kind: Literal["feed"] = "feed"
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=256)
    text: str
    lang: str | None = None
    url: str | None = None
    created_at: datetime


class TranscriptSegment(_Contract):
    """One utterance of a call or meeting transcript."""

    kind: Literal["transcript"] = "transcript"
    id: str = Field(min_length=1, max_length=256)
    conversation_id: str = Field(min_length=1, max_length=256)
    seq: int = Field(ge=0)
    speaker: str = Field(min_length=1, max_length=256)
    text: str
    start_s: float | None = None
    end_s: float | None = None
    final: bool | None = None


class Conversation(_Contract):
    """A whole conversation: its segments in order. The stream layer assembles these; the CLI accepts them."""

    kind: Literal["conversation"] = "conversation"
    id: str = Field(min_length=1, max_length=256)
    segments: list[TranscriptSegment] = Field(min_length=1)


class IoTMessage(_Contract):
    """A device message: numeric readings and an optional text (alert, log line)."""

    kind: Literal["iot"] = "iot"
    id: str = Field(min_length=1, max_length=256)
    device_id: str = Field(min_length=1, max_length=256)
    ts: datetime
    readings: dict[str, float] = Field(default_factory=dict)
    text: str | None = None


AnyEvent = FeedEvent | TranscriptSegment | Conversation | IoTMessage
Event = Annotated[AnyEvent, Field(discriminator="kind")]
EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(Event)


# ---------------------------------------------------------------------------------------------- results
class Classification(_Contract):
    label: str
    confidence: float = Field(ge=0, le=1)
    scores: dict[str, float]
    label_set: str
    method: Literal["zero-shot", "trained-head"]
    reasons: list[str] = Field(default_factory=list)


class Moderation(_Contract):
    flagged: bool
    confidence: float = Field(ge=0, le=1)
    categories: dict[str, float]
    flagged_categories: list[str] = Field(default_factory=list)
    uncertain_categories: list[str] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)


class Summary(_Contract):
    text: str
    sentence_ids: list[int]
    confidence: float = Field(ge=0, le=1)
    reasons: list[str] = Field(default_factory=list)


class MetricAnomaly(_Contract):
    value: float
    lower: float | None
    upper: float | None
    score: float = Field(ge=0, le=1)
    out_of_bounds: bool
    zscore: float | None = Field(
        default=None, description="distance from the device's own rolling mean, in its standard deviations"
    )


class Anomaly(_Contract):
    score: float = Field(ge=0, le=1)
    metrics: dict[str, MetricAnomaly]
    reasons: list[str] = Field(default_factory=list)


class ModelInfo(_Contract):
    name: str
    version: str
    quantization: str


class InputInfo(_Contract):
    """What the encoder saw: nothing is cut without saying so."""

    tokens: int
    chunks: int
    truncated: bool
    segments: int | None = Field(default=None, description="for a conversation: how many segments it was made of")


class LargeModelInfo(_Contract):
    """Who settled an escalated item, and what it cost."""

    name: str = Field(description="the model name the endpoint reported (or was asked for)")
    latency_ms: float = Field(ge=0)
    tokens_in: int = Field(ge=0)
    tokens_out: int = Field(ge=0)
    cost_usd: float = Field(ge=0, description="estimated from the configured price table")
    cached: bool = Field(default=False, description="answered from the content-hash cache; no request was sent")


class Result(_Contract):
    """One enriched result per input event."""

    id: str
    kind: EventKind
    classification: Classification | None = None
    moderation: Moderation | None = None
    summary: Summary | None = None
    anomaly: Anomaly | None = None
    route: Route
    escalation_reasons: list[str] = Field(default_factory=list)
    model: ModelInfo
    input: InputInfo
    timings: dict[str, float] = Field(default_factory=dict, description="milliseconds per stage")
    decided_by: DecidedBy = "mini-model"
    large_model: LargeModelInfo | None = None


class ErrorRecord(_Contract):
    """A per-item failure: never a crash, never silence."""

    error: str = Field(description="error class code from pipeline.errors")
    message: str
    id: str | None = None
    line: int | None = Field(default=None, description="1-based input line, for file input")


# ----------------------------------------------------------------------------------- routed outcomes
class EscalationRecord(_Contract):
    """What goes to the escalation topic: the mini result, the original event and why it is escalated."""

    id: str
    kind: EventKind
    reasons: list[str]
    result: Result
    event: dict[str, Any]
    escalated_at: datetime


class ReviewRecord(_Contract):
    """What goes to the review topic: everything a person needs to settle one item."""

    id: str
    kind: EventKind
    reasons: list[str] = Field(description="the mini model's escalation reasons")
    review_reasons: list[str] = Field(description="why no machine settled it, e.g. budget.hard_cap, answer.invalid")
    event: dict[str, Any]
    result: Result = Field(description="the mini model's result")
    large_model_answer: dict[str, Any] | None = Field(default=None, description="the large model's answer, if any")
    large_model_error: str | None = None
    sent_at: datetime


class LabelRecord(_Contract):
    """A verdict on one item, from the large model or a person: training data for the mini model's heads."""

    id: str
    kind: EventKind
    task: Literal["classify", "moderate", "summarize"]
    text: str = Field(description="the text the verdict is about (redaction placeholders restored)")
    label_set: str | None = Field(default=None, description="for task classify: the label set of `label`")
    label: str | None = Field(default=None, description="for task classify: the label")
    flagged_categories: list[str] | None = Field(default=None, description="for task moderate")
    summary: str | None = Field(default=None, description="for task summarize")
    source: Literal["large-model", "human"]
    decided_by: str = Field(description="the model name, or the reviewer's name")
    decided_at: datetime


def label_text(event: dict[str, Any]) -> str:
    """What `LabelRecord.text` holds for an event: the text the mini model classifies (and trains on).

    A conversation's turns in speaking order, one per line, without speakers; otherwise the event's text.
    """
    segments = event.get("segments")
    if isinstance(segments, list):
        turns = sorted((s for s in segments if isinstance(s, dict)), key=lambda s: int(s.get("seq", 0)))
        return "\n".join(str(s.get("text", "")) for s in turns)
    text = event.get("text")
    return text if isinstance(text, str) else ""


class MetricWindow(_Contract):
    count: int = Field(ge=1)
    min: float
    max: float
    mean: float


class IoTWindow(_Contract):
    """One device's readings over one tumbling window, per metric."""

    device_id: str
    window_start: datetime
    window_end: datetime
    messages: int = Field(ge=1)
    metrics: dict[str, MetricWindow]


class ToSink(_Contract):
    """The mini model is confident: the result goes to its family's sink topic."""

    result: Result


class ToEscalation(_Contract):
    record: EscalationRecord


class ToDeadLetter(_Contract):
    """The event could not be processed; its original bytes go to the dead-letter topic."""

    error: ErrorRecord
