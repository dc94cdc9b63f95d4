"""The data contracts: input events, enriched results and error records (frozen pydantic v2 models).

Each event family is one class here that knows itself: which fields tell its kind when `kind` is missing, its
record key, its event time, what the encoder reads (`EncoderJob`), the text a large model reads, and its topics.
`FAMILIES` is the one table of them; nothing else switches on the event class.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError

EventKind = Literal["feed", "transcript", "conversation", "iot", "ticket"]
Route = Literal["sink", "escalate"]
DecidedBy = Literal["mini-model", "large-model", "human"]
# Which limit left part of an input out of the embedding (docs/architecture.md "Long texts").
Truncation = Literal["max_text_chars", "max_tokens_per_event"]


class _Contract(BaseModel):
    # Unknown fields are kept out (extra="ignore") so producers can add fields without breaking workers.
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)


@dataclass(frozen=True)
class EncoderJob:
    """What the mini model reads of one event, and which text tasks run on it.

    `text` is one text, or a list of turns already split (a conversation). `summarize` asks for a summary when the
    text is long enough (the engine counts sentences or turns against MINNOW_SUMMARY__MIN_SENTENCES_TO_SUMMARIZE).
    `identify_language` is for text people wrote; a device's log line is not in a language worth escalating for.
    `moderation_categories` trims the taxonomy for a stream that cares about some categories only.
    """

    text: str | list[str]
    label_set: str | None
    moderate: bool
    summarize: bool
    speakers: list[str] | None = None
    identify_language: bool = True
    moderation_categories: tuple[str, ...] | None = None  # None: every category


# ----------------------------------------------------------------------------------------------- inputs
class _Event(_Contract):
    """What every event family tells about itself. Topic names are logical (MINNOW_KAFKA__TOPIC_PREFIX + name)."""

    kind_fields: ClassVar[tuple[str, ...]] = ()  # fields that tell this family when `kind` is missing
    key_field: ClassVar[str] = "id"  # the field whose value keys every output about the event
    described_as: ClassVar[str]  # what the item is, in words, for the large model's prompt
    input_topic: ClassVar[str | None]  # None: not consumed from a topic (assembled by the worker)
    sink_topic: ClassVar[str]

    if TYPE_CHECKING:  # declared by each family, with its own constraints and in its own field order
        id: str
        kind: EventKind

    # The object as the producer sent it, when it was read through a field mapping or had fields the contract does
    # not know: results carry it on unchanged (`Result.original`). Not a field: it is not part of the contract.
    _original: dict[str, Any] | None = PrivateAttr(default=None)

    def set_original(self, produced: dict[str, Any]) -> None:
        self._original = produced

    @property
    def original(self) -> dict[str, Any] | None:
        return self._original

    def key(self) -> bytes:
        """The record key of every output about this event: per-key order holds for what shares it."""
        return str(getattr(self, self.key_field)).encode()

    def event_time(self) -> datetime | None:
        """When the event happened, by its own clock (for the event-to-sink latency); None when it has none."""
        return None

    def encoder_job(self) -> EncoderJob:
        raise NotImplementedError

    def prompt_text(self) -> str:
        """The text a large model reads when the item is escalated."""
        raise NotImplementedError

    def label_text(self) -> str:
        """The text a verdict on this event is about: what the mini model classifies (and heads train on)."""
        job = self.encoder_job()
        return job.text if isinstance(job.text, str) else "\n".join(job.text)


class FeedEvent(_Event):
    """A social or news post."""

    described_as: ClassVar[str] = "a news or social-feed post"
    input_topic: ClassVar[str | None] = "feeds.in"
    sink_topic: ClassVar[str] = "feeds.enriched"

    kind: Literal["feed"] = "feed"
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=256)
    text: str
    lang: str | None = None
    url: str | None = None
    created_at: datetime

    def event_time(self) -> datetime | None:
        return self.created_at

    def encoder_job(self) -> EncoderJob:
        return EncoderJob(self.text, "feed", moderate=True, summarize=True)

    def prompt_text(self) -> str:
        return self.text


class TranscriptSegment(_Event):
    """One utterance of a call or meeting transcript."""

    kind_fields: ClassVar[tuple[str, ...]] = ("conversation_id",)
    key_field: ClassVar[str] = "conversation_id"
    described_as: ClassVar[str] = "one utterance of a call or meeting transcript"
    input_topic: ClassVar[str | None] = "transcripts.in"
    sink_topic: ClassVar[str] = "transcripts.enriched"

    kind: Literal["transcript"] = "transcript"
    id: str = Field(min_length=1, max_length=256)
    conversation_id: str = Field(min_length=1, max_length=256)
    seq: int = Field(ge=0)
    speaker: str = Field(min_length=1, max_length=256)
    text: str
    start_s: float | None = None
    end_s: float | None = None
    final: bool | None = None

    def encoder_job(self) -> EncoderJob:
        return EncoderJob(self.text, "transcript", moderate=True, summarize=False)

    def prompt_text(self) -> str:
        return f"{self.speaker}: {self.text}"


class Conversation(_Event):
    """A whole conversation: its segments in order. The stream layer assembles these; the CLI accepts them."""

    kind_fields: ClassVar[tuple[str, ...]] = ("segments",)
    described_as: ClassVar[str] = "a conversation, one utterance per line as `speaker: text`"
    input_topic: ClassVar[str | None] = None  # assembled from transcripts.in by the worker
    sink_topic: ClassVar[str] = "transcripts.enriched"

    kind: Literal["conversation"] = "conversation"
    id: str = Field(min_length=1, max_length=256)
    segments: list[TranscriptSegment] = Field(min_length=1)

    def encoder_job(self) -> EncoderJob:
        turns = sorted(self.segments, key=lambda s: s.seq)
        return EncoderJob(
            [t.text for t in turns], "transcript", moderate=True, summarize=True, speakers=[t.speaker for t in turns]
        )

    def prompt_text(self) -> str:
        return "\n".join(f"{segment.speaker}: {segment.text}" for segment in self.segments)


class IoTMessage(_Event):
    """A device message: numeric readings and an optional text (alert, log line)."""

    kind_fields: ClassVar[tuple[str, ...]] = ("readings", "device_id")
    key_field: ClassVar[str] = "device_id"
    described_as: ClassVar[str] = "a message from an IoT device: its text and its readings"
    input_topic: ClassVar[str | None] = "iot.in"
    sink_topic: ClassVar[str] = "iot.enriched"

    kind: Literal["iot"] = "iot"
    id: str = Field(min_length=1, max_length=256)
    device_id: str = Field(min_length=1, max_length=256)
    ts: datetime
    readings: dict[str, float] = Field(default_factory=dict)
    text: str | None = None

    def event_time(self) -> datetime | None:
        return self.ts

    def encoder_job(self) -> EncoderJob:
        text = self.text or ""
        return EncoderJob(text, "iot" if text else None, moderate=False, summarize=False, identify_language=False)

    def prompt_text(self) -> str:
        readings = ", ".join(f"{name}={value:g}" for name, value in sorted(self.readings.items()))
        return "\n".join(part for part in (self.text or "", f"readings: {readings}" if readings else "") if part)


class SupportTicket(_Event):
    """One message of a support ticket or email thread. `from` on the wire (a Python keyword, so `sender` here)."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)
    kind_fields: ClassVar[tuple[str, ...]] = ("thread_id",)
    key_field: ClassVar[str] = "thread_id"
    described_as: ClassVar[str] = "a support ticket or email: its subject line, then its body"
    input_topic: ClassVar[str | None] = "tickets.in"
    sink_topic: ClassVar[str] = "tickets.enriched"

    kind: Literal["ticket"] = "ticket"
    id: str = Field(min_length=1, max_length=256, description="the message id")
    thread_id: str = Field(
        min_length=1, max_length=256, description="the ticket or email thread; records are keyed by it"
    )
    subject: str = ""
    body: str
    sender: str = Field(alias="from", min_length=1, max_length=512, description="the sender's address")
    to: str | None = Field(default=None, max_length=512)
    sent_at: datetime

    def event_time(self) -> datetime | None:
        return self.sent_at

    def encoder_job(self) -> EncoderJob:
        # The subject is often the clearest statement of the intent; a long body (a quoted thread) is summarized,
        # read without the mail client's quoting so the summary quotes the thread, not its markup.
        body = unquoted(self.body)
        text = f"{self.subject}\n\n{body}" if self.subject.strip() else body
        return EncoderJob(text, "ticket", moderate=True, summarize=True)

    def prompt_text(self) -> str:
        return f"Subject: {self.subject}\n\n{self.body}" if self.subject.strip() else self.body


_QUOTE_HEADER = re.compile(r"^\s*(?:>\s*)*On .{3,200} wrote:\s*$")
_QUOTE_MARK = re.compile(r"^\s*(?:>\s?)+")


def unquoted(body: str) -> str:
    """An email body with reply quoting taken off: `> ` markers stripped and `On ... wrote:` lines dropped."""
    lines = (_QUOTE_MARK.sub("", line) for line in body.splitlines() if not _QUOTE_HEADER.match(line))
    return "\n".join(lines)


AnyEvent = FeedEvent | TranscriptSegment | Conversation | IoTMessage | SupportTicket
Event = Annotated[AnyEvent, Field(discriminator="kind")]
EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(Event)

# Every family, by kind. Guessing a missing `kind` tries them in this order; a feed has no telling field and is
# what is left.
FAMILIES: dict[str, type[AnyEvent]] = {
    "iot": IoTMessage,
    "transcript": TranscriptSegment,
    "conversation": Conversation,
    "ticket": SupportTicket,
    "feed": FeedEvent,
}


def guess_kind(obj: dict[str, object]) -> str:
    """The kind of an event that omits `kind`, from the fields each family must have."""
    for kind, family in FAMILIES.items():
        if any(field in obj for field in family.kind_fields):
            return kind
    return "feed"


# ---------------------------------------------------------------------------------------------- results
class Classification(_Contract):
    label: str
    confidence: float = Field(ge=0, le=1)
    scores: dict[str, float]
    label_set: str
    method: Literal["zero-shot", "trained-head"]
    reasons: list[str] = Field(default_factory=list)
    # A trained head's distance to its nearest class centroid (docs/classification.md); None: zero-shot, old head.
    out_of_scope: float | None = None


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
        default=None,
        description="robust z-score against the device's own history (recent median and MAD, or the same hour's)",
    )
    expected: float | None = Field(default=None, description="what the device's history expected (the baseline)")
    detector: Literal["recent", "season", "level_shift"] | None = Field(
        default=None, description="the history detector that set the score (None: bounds did, or no history yet)"
    )
    warming_up: bool = Field(default=False, description="the metric's history is too short to judge it yet")
    repeat: bool = Field(
        default=False, description="anomalous, but within the cooldown of this device+metric's last escalation"
    )


class Anomaly(_Contract):
    score: float = Field(ge=0, le=1)
    metrics: dict[str, MetricAnomaly] = Field(description="the most anomalous metrics, at most 16 (docs/iot.md)")
    reasons: list[str] = Field(default_factory=list)
    omitted: int = Field(default=0, ge=0, description="metrics scored but left out of `metrics` (the least anomalous)")


class ModelInfo(_Contract):
    name: str
    version: str
    quantization: str


class InputInfo(_Contract):
    """What the encoder saw: nothing is cut without saying so."""

    tokens: int = Field(description="model tokens embedded")
    chunks: int = Field(description="model windows (or sentences) embedded")
    truncated: bool = Field(description="part of the input was not embedded; truncated_by says which limit")
    truncated_by: Truncation | None = Field(
        default=None,
        description="max_text_chars: the text was cut at MINNOW_ENGINE__MAX_TEXT_CHARS; max_tokens_per_event: it was "
        "embedded from a spread sample of its chunks (first, last, evenly between) within the per-event budget",
    )
    segments: int | None = Field(default=None, description="for a conversation: how many segments it was made of")


class LargeModelInfo(_Contract):
    """Who settled an escalated item, and what it cost."""

    name: str = Field(description="the model name the endpoint reported (or was asked for)")
    latency_ms: float = Field(ge=0)
    tokens_in: int = Field(ge=0)
    tokens_out: int = Field(ge=0)
    cost_usd: float = Field(ge=0, description="estimated from the configured price table")
    cached: bool = Field(default=False, description="answered from the content-hash cache; no request was sent")


class Language(_Contract):
    """The language of the text, and whether the mini model reads it (it is English-only: docs/language.md)."""

    code: str = Field(description='ISO 639-1 code (639-3 where there is none), or "und": too little text to tell')
    confidence: float = Field(
        ge=0,
        le=1,
        description="for a supported code, the probability of that code; for any other code, the probability "
        "that the text is in none of the supported languages (compared with min_confidence); 0 for und",
    )
    supported: bool = Field(description="False only when the text is confidently in no supported language")
    reasons: list[str] = Field(default_factory=list)


class Scores(_Contract):
    """What the mini model found for one event, before anything decides where it goes (not on the wire alone).

    One field per task (`pipeline.tasks.TASKS` names them), None where the task does not apply.
    """

    id: str
    kind: EventKind
    classification: Classification | None = None
    moderation: Moderation | None = None
    summary: Summary | None = None
    anomaly: Anomaly | None = None
    language: Language | None = None
    model: ModelInfo
    input: InputInfo
    timings: dict[str, float] = Field(default_factory=dict, description="milliseconds per stage")


class Result(Scores):
    """One enriched result per input event: the scores and where they sent it."""

    route: Route
    escalation_reasons: list[str] = Field(default_factory=list)
    decided_by: DecidedBy = "mini-model"
    large_model: LargeModelInfo | None = None
    original: dict[str, Any] | None = Field(
        default=None,
        description="the input event as produced, when it was read through a field mapping or had fields outside "
        "the contract (docs/mapping.md); null otherwise",
    )


class ErrorRecord(_Contract):
    """A per-item failure: never a crash, never silence."""

    error: str = Field(description="error class code from pipeline.errors")
    message: str
    id: str | None = None
    line: int | None = Field(default=None, description="1-based input line, for file input")


# ------------------------------------------------------------------------------ escalation and review
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
    """What `LabelRecord.text` holds for an event (as carried on escalation and review records): the text the mini
    model classifies. A conversation's turns in speaking order, one per line, without speakers."""
    try:
        return EVENT_ADAPTER.validate_python(event).label_text()
    except ValidationError:  # a record written before its family changed shape: its turns, or its text
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


# ----------------------------------------------------------------------------------- routed outcomes
class ToSink(_Contract):
    """The item is settled: the result goes to its family's sink topic, and any verdicts in it to the labels topic.

    `settled_by` says who settled it: `mini-model`, `large-model`, `cache` or `budget.soft_cap` (the mini
    result stands).
    """

    result: Result
    labels: tuple[LabelRecord, ...] = ()
    settled_by: str = "mini-model"

    @property
    def reason(self) -> str:
        return self.settled_by


class ToEscalation(_Contract):
    """The mini model is unsure: the record goes to the escalation topic for a large model or a person."""

    record: EscalationRecord


class ToReview(_Contract):
    """No machine may or can settle the item: it goes to the review topic, to a person, with why."""

    record: ReviewRecord

    @property
    def reason(self) -> str:
        return self.record.review_reasons[0]


class ToDeadLetter(_Contract):
    """The event could not be processed; its original bytes go to the dead-letter topic."""

    error: ErrorRecord


Outcome = ToSink | ToEscalation | ToReview | ToDeadLetter
