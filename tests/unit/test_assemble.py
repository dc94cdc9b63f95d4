"""Conversation assembly: segments gather per conversation, close on final/idle/size, and replays cannot reopen."""

from __future__ import annotations

import pytest

from pipeline.models import TranscriptSegment
from pipeline.stages.assemble import Added, ConversationState, add_segment, close, due, to_conversation


def seg(seq: int, *, conv: str = "c1", final: bool | None = None, text: str | None = None) -> TranscriptSegment:
    return TranscriptSegment(
        id=f"{conv}-s{seq}",
        conversation_id=conv,
        seq=seq,
        speaker="agent" if seq % 2 else "customer",
        text=text or f"utterance {seq}",
        final=final,
    )


def feed(*segments: TranscriptSegment, start: float = 1000.0) -> list[Added]:
    state: ConversationState | None = None
    steps = []
    for i, segment in enumerate(segments):
        step = add_segment(state, segment, partition=2, now=start + i)
        steps.append(step)
        state = step.state
    return steps


def test_segments_gather_until_the_final_one_which_emits_them_in_speaking_order() -> None:
    steps = feed(seg(2), seg(0), seg(1), seg(3, final=True))
    assert [s.closed for s in steps[:3]] == [None, None, None]
    closed = steps[-1].closed
    assert closed is not None
    assert closed.id == "c1"
    assert [s.seq for s in closed.segments] == [0, 1, 2, 3]
    marker = steps[-1].state
    assert (marker.closed_at, marker.close_reason, marker.segment_count, marker.segments) == (1003.0, "final", 4, {})
    assert marker.partition == 2


def test_a_redelivered_segment_replaces_itself_instead_of_counting_twice() -> None:
    steps = feed(seg(0), seg(1), seg(0, text="utterance 0"), seg(2, final=True))
    closed = steps[-1].closed
    assert closed is not None
    assert [s.id for s in closed.segments] == ["c1-s0", "c1-s1", "c1-s2"]


def test_segments_of_a_closed_conversation_are_ignored_so_a_replay_cannot_emit_a_partial_conversation() -> None:
    steps = feed(seg(0), seg(1, final=True))
    marker = steps[-1].state
    replay = add_segment(marker, seg(1, final=True), partition=2, now=2000.0)
    straggler = add_segment(marker, seg(5), partition=2, now=2001.0)
    assert (replay.ignored, replay.closed, replay.state) == (True, None, marker)
    assert (straggler.ignored, straggler.closed, straggler.state) == (True, None, marker)


def test_a_conversation_closes_when_it_reaches_the_segment_cap() -> None:
    state = None
    for i in range(3):
        step = add_segment(state, seg(i), partition=0, now=float(i), max_segments=3)
        state = step.state
    assert step.closed is not None
    assert len(step.closed.segments) == 3
    assert step.state.close_reason == "max_segments"


def test_a_conversation_closes_before_its_state_outgrows_one_changelog_record() -> None:
    """Long segments (95 KB each) close the conversation at max_bytes with the segment that reached it: every state
    ever written stays under the budget, nothing is dropped from the emitted conversation."""
    long_text = "word " * 19_000  # 95,000 bytes
    state: ConversationState | None = None
    written: list[int] = []
    for i in range(12):
        step = add_segment(state, seg(i, text=long_text), partition=0, now=float(i), max_bytes=262_144)
        state = step.state
        written.append(len(state.model_dump_json()))
        if step.closed is not None:
            break
    assert step.closed is not None and step.state.close_reason == "max_bytes"
    assert [s.seq for s in step.closed.segments] == [0, 1, 2]  # 3 x 95 KB reaches 256 KiB
    assert max(written) < 262_144 and step.state.segments == {}


def test_due_finds_idle_conversations_and_expired_markers_oldest_first() -> None:
    quiet = add_segment(None, seg(0, conv="quiet"), partition=0, now=100.0).state
    quieter = add_segment(None, seg(0, conv="quieter"), partition=0, now=50.0).state
    busy = add_segment(None, seg(0, conv="busy"), partition=0, now=390.0).state
    old_marker = close(add_segment(None, seg(0, conv="old"), partition=0, now=0.0).state, "final", now=10.0).state
    new_marker = close(add_segment(None, seg(0, conv="new"), partition=0, now=0.0).state, "final", now=380.0).state
    states = {s.conversation_id: s for s in (quiet, quieter, busy, old_marker, new_marker)}
    idle, expired = due(states, now=400.0, idle_s=300.0, keep_closed_s=60.0)
    assert [s.conversation_id for s in idle] == ["quieter", "quiet"]
    assert [s.conversation_id for s in expired] == ["old"]


def test_state_round_trips_through_json_as_the_changelog_stores_it() -> None:
    state = feed(seg(0), seg(1))[-1].state
    again = ConversationState.model_validate_json(state.model_dump_json())
    assert again == state
    assert to_conversation(again) == to_conversation(state)


def test_closing_an_empty_state_is_impossible_because_a_conversation_needs_a_segment() -> None:
    empty = ConversationState(conversation_id="x", partition=0, last_seen=0.0)
    with pytest.raises(ValueError, match="at least 1"):
        to_conversation(empty)
