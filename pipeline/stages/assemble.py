"""Conversation assembly: transcript segments gather per conversation until the final one or a quiet spell.

Plain functions over frozen models, so the streaming layer only has to keep one `ConversationState` per
conversation id (in a table with a changelog) and act on what these functions return.

- Segments are kept by segment id, so a redelivered segment replaces itself instead of counting twice.
- A conversation closes on a segment marked `final`, after `idle_s` without a new segment, or when it reaches
  `max_segments` or `max_bytes` of segment text (so its state always fits one changelog record). Closing leaves
  a *closed marker* (no segments) for `keep_closed_s`: a segment of an already closed conversation - a
  redelivery after a crash, or a straggler - is then ignored instead of opening a partial conversation that
  would be emitted a second time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.models import Conversation, TranscriptSegment

CloseReason = Literal["final", "idle", "max_segments", "max_bytes"]
# Enough for a two-hour meeting cut into utterances; a longer one is emitted at this size and later segments only
# get their per-segment results (docs/architecture-stream.md).
MAX_SEGMENTS = 2000
MAX_BYTES = 262_144
# What one segment costs in the encoded state besides its text: ids, speaker, timestamps, field names.
SEGMENT_OVERHEAD_BYTES = 256


class ConversationState(BaseModel):
    """One conversation as the transcript worker holds it between segments."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    conversation_id: str
    partition: int = Field(ge=0, description="the transcripts.in partition the conversation's segments arrive on")
    segments: dict[str, TranscriptSegment] = Field(default_factory=dict, description="by segment id; empty once closed")
    last_seen: float = Field(description="wall-clock seconds (Unix time) when the last segment arrived")
    closed_at: float | None = Field(default=None, description="when the conversation record was emitted")
    close_reason: CloseReason | None = None
    segment_count: int = Field(default=0, ge=0, description="distinct segments in the emitted conversation")


class Added(BaseModel):
    """What adding one segment did: the new state, and the conversation to emit if this closed it."""

    model_config = ConfigDict(frozen=True)

    state: ConversationState
    closed: Conversation | None = None
    ignored: bool = False  # the conversation was already closed; the state is unchanged


def add_segment(
    state: ConversationState | None,
    segment: TranscriptSegment,
    *,
    partition: int,
    now: float,
    max_segments: int = MAX_SEGMENTS,
    max_bytes: int = MAX_BYTES,
) -> Added:
    """Add one segment to its conversation's state (None: the first segment seen).

    A segment that brings the conversation to `max_bytes` closes it with itself included: the state written is
    then the closed marker, never a record too large for the changelog topic."""
    if state is not None and state.closed_at is not None:
        return Added(state=state, ignored=True)
    segments = dict(state.segments) if state is not None else {}
    segments[segment.id] = segment
    opened = ConversationState(
        conversation_id=segment.conversation_id,
        partition=partition,
        segments=segments,
        last_seen=now,
    )
    if segment.final:
        return close(opened, "final", now=now)
    if len(segments) >= max_segments:
        return close(opened, "max_segments", now=now)
    if state_bytes(opened) >= max_bytes:
        return close(opened, "max_bytes", now=now)
    return Added(state=opened)


def state_bytes(state: ConversationState) -> int:
    """About what the state's changelog record weighs: its segments' text in UTF-8 and their framing."""
    return sum(len(segment.text.encode()) + SEGMENT_OVERHEAD_BYTES for segment in state.segments.values())


def close(state: ConversationState, reason: CloseReason, *, now: float) -> Added:
    """The conversation to emit, and the closed marker that replaces the state."""
    conversation = to_conversation(state)
    marker = ConversationState(
        conversation_id=state.conversation_id,
        partition=state.partition,
        last_seen=state.last_seen,
        closed_at=now,
        close_reason=reason,
        segment_count=len(state.segments),
    )
    return Added(state=marker, closed=conversation)


def to_conversation(state: ConversationState) -> Conversation:
    """The segments in speaking order (seq, then id so equal seqs are stable)."""
    ordered = sorted(state.segments.values(), key=lambda s: (s.seq, s.id))
    return Conversation(id=state.conversation_id, segments=ordered)


def due(
    states: Mapping[str, ConversationState] | Iterable[tuple[str, ConversationState]],
    *,
    now: float,
    idle_s: float,
    keep_closed_s: float,
) -> tuple[list[ConversationState], list[ConversationState]]:
    """(open conversations idle for `idle_s`, closed markers older than `keep_closed_s`), each oldest first."""
    items = states.items() if isinstance(states, Mapping) else states
    idle: list[ConversationState] = []
    expired: list[ConversationState] = []
    for _, state in items:
        if state.closed_at is None:
            if now - state.last_seen >= idle_s:
                idle.append(state)
        elif now - state.closed_at >= keep_closed_s:
            expired.append(state)
    idle.sort(key=lambda s: s.last_seen)
    expired.sort(key=lambda s: s.closed_at or 0.0)
    return idle, expired
