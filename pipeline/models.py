"""The data contracts: input events, enriched results and error records (frozen pydantic v2 models)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

EventKind = Literal["feed", "transcript", "conversation", "iot"]
Route = Literal["sink", "escalate"]


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


class ToSink(_Contract):
    """The mini model is confident: the result goes to its family's sink topic."""

    result: Result


class ToEscalation(_Contract):
    record: EscalationRecord


class ToDeadLetter(_Contract):
    """The event could not be processed; its original bytes go to the dead-letter topic."""

    error: ErrorRecord
