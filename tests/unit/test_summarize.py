"""Summaries stay in bounds and in order, skip repeats and filler, and beat LEAD-3 and LONGEST-3."""

from __future__ import annotations

import json

import numpy as np
import pytest

import pipeline.tasks.summarize as summarize_module
from pipeline.engine import Encoder
from pipeline.engine.encoder import Vectors
from pipeline.engine.text import split_sentences
from pipeline.settings import SummarySettings
from pipeline.tasks.summarize import (
    ELLIPSIS,
    dialogue_segments,
    lead_n,
    longest_n,
    render_lines,
    summarize,
)
from pipeline.tasks.summary_eval import DIALOGUES_PATH, Unit, evaluate_dialogues, load_dialogues

NEWS = (
    "The city council voted on Tuesday to expand the bike lane network by 40 kilometres over three years. "
    "The plan, which costs 12 million euros, was approved by 23 votes to 8. "
    "Opponents argued that the lanes would reduce parking in the old town. "
    "Supporters pointed to a 30 percent rise in cycling since 2019. "
    "Construction of the first section along the river is set to begin in May. "
    "The mayor said the network would make the city safer for children cycling to school. "
    "Local shop owners have asked for a meeting to discuss delivery access."
)
CALL = [
    ("Priya", "Hello, thanks for calling, this is Priya."),
    ("Mark", "Hi."),
    ("Priya", "How can I help?"),
    ("Mark", "My internet has been down since last night and I work from home."),
    ("Priya", "Okay."),
    ("Priya", "A damaged fibre cable in your area is being replaced by our technicians today."),
    ("Mark", "Yeah."),
    ("Priya", "Service should be back by 6 pm, and I will credit two days to your next bill."),
    ("Mark", "Thanks."),
    ("Mark", "Ok, bye."),
]


def embed_text(encoder: Encoder, text: str) -> tuple[list[str], Vectors, Vectors]:
    """Sentences, their vectors and the document vector, as the engine's summary mode makes them."""
    doc = encoder.embed_documents([text], [True])[0]
    return doc.segments, doc.segment_vectors, doc.vector


def embed_segments(encoder: Encoder, segments: list[str]) -> tuple[Vectors, Vectors]:
    vectors = encoder.embed(segments)
    mean = vectors.mean(axis=0)
    return vectors, (mean / np.linalg.norm(mean)).astype(np.float32)


# ------------------------------------------------------------------------------------------------- bounds
@pytest.mark.parametrize("max_sentences", [1, 2, 3, 5])
@pytest.mark.parametrize("max_chars", [40, 90, 200, 600])
def test_summary_never_exceeds_max_chars_or_max_sentences(encoder: Encoder, max_sentences: int, max_chars: int) -> None:
    settings = SummarySettings(max_sentences=max_sentences, max_chars=max_chars)
    segments, vectors, doc = embed_text(encoder, NEWS)
    prose = summarize(segments, vectors, doc, speakers=None, settings=settings)
    call_segments, call_speakers = dialogue_segments(CALL)
    call_vectors, call_doc = embed_segments(encoder, call_segments)
    call = summarize(call_segments, call_vectors, call_doc, speakers=call_speakers, settings=settings)
    for summary in (prose, call):
        assert 0 < len(summary.text) <= max_chars
        assert 1 <= len(summary.sentence_ids) <= max_sentences
        assert 0.0 <= summary.confidence <= 1.0


def test_selected_sentences_come_out_in_original_order(encoder: Encoder) -> None:
    segments, vectors, doc = embed_text(encoder, NEWS)
    summary = summarize(segments, vectors, doc, speakers=None, settings=SummarySettings(max_sentences=4))
    assert len(summary.sentence_ids) == 4
    assert summary.sentence_ids == sorted(summary.sentence_ids)
    assert summary.text == " ".join(segments[i] for i in summary.sentence_ids)


def test_a_lone_overlong_sentence_is_cut_at_a_word_boundary_and_says_so(encoder: Encoder) -> None:
    segments, vectors, doc = embed_text(encoder, NEWS)
    summary = summarize(segments, vectors, doc, speakers=None, settings=SummarySettings(max_chars=50))
    assert len(summary.sentence_ids) == 1  # every sentence of NEWS is longer than 50 characters
    assert summary.text.endswith(ELLIPSIS)
    assert len(summary.text) <= 50
    kept = summary.text.removesuffix(ELLIPSIS)
    original = segments[summary.sentence_ids[0]]
    assert original.startswith(kept)
    assert original[len(kept)] == " "
    assert any("cut with" in r for r in summary.reasons)


# --------------------------------------------------------------------------------------------- selection
def test_duplicate_sentences_are_never_both_selected(encoder: Encoder) -> None:
    """The most central sentence, said twice, appears once; the second pick says something else."""
    key = "The bike lane plan was approved by the city council on Tuesday."
    text = f"{key} {key} {NEWS}"
    segments, vectors, doc = embed_text(encoder, text)
    for redundancy in (0.7, 0.9, 1.0):  # 1.0 turns MMR's novelty term off: only the duplicate rule is left
        summary = summarize(segments, vectors, doc, speakers=None, settings=SummarySettings(redundancy=redundancy))
        picked = [segments[i] for i in summary.sentence_ids]
        assert len(picked) == len(set(picked)) == 3


def test_dialogue_lines_read_speaker_colon_text_and_skip_filler_turns(encoder: Encoder) -> None:
    segments, speakers = dialogue_segments(CALL)
    vectors, doc = embed_segments(encoder, segments)
    summary = summarize(segments, vectors, doc, speakers=speakers, settings=SummarySettings())
    lines = summary.text.split("\n")
    assert lines == [f"{speakers[i]}: {segments[i]}" for i in summary.sentence_ids]
    fillers = {"Hi.", "Okay.", "Yeah.", "Thanks.", "Ok, bye.", "How can I help?"}
    assert not {segments[i] for i in summary.sentence_ids} & fillers
    assert {speakers[i] for i in summary.sentence_ids} == {"Priya", "Mark"}


@pytest.mark.slow  # embeds and summarizes the whole bundled set twice: ~3-6 s
def test_speaker_bonus_makes_summaries_hear_more_of_the_main_speakers(
    encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across the bundled dialogues, switching the bonus off leaves fewer distinct voices in the summaries."""
    dialogues = load_dialogues(encoder)

    def voices_heard() -> int:
        total = 0
        for d in dialogues:
            s = summarize(d.segments, d.vectors, d.doc_vector, speakers=d.speakers, settings=SummarySettings())
            total += len({d.speakers[i] for i in s.sentence_ids})
        return total

    with_bonus = voices_heard()
    monkeypatch.setattr(summarize_module, "W_SPEAKER", 0.0)
    assert with_bonus > voices_heard()


# -------------------------------------------------------------------------------------------- edge cases
def test_empty_input_gives_an_empty_summary_with_zero_confidence_and_a_reason() -> None:
    empty = np.zeros((0, 384), dtype=np.float32)
    for segments, vectors in (([], empty), (["", "  "], np.zeros((2, 384), dtype=np.float32))):
        summary = summarize(
            segments, vectors, np.zeros(384, dtype=np.float32), speakers=None, settings=SummarySettings()
        )
        assert summary.text == ""
        assert summary.sentence_ids == []
        assert summary.confidence == 0.0
        assert summary.reasons == ["empty input: nothing to summarize"]


def test_one_sentence_is_its_own_summary(encoder: Encoder) -> None:
    segments, vectors, doc = embed_text(encoder, "The river bridge closes for repairs on Monday.")
    summary = summarize(segments, vectors, doc, speakers=None, settings=SummarySettings())
    assert summary.text == "The river bridge closes for repairs on Monday."
    assert summary.sentence_ids == [0]
    assert summary.confidence == pytest.approx(1.0, abs=1e-5)  # the summary is the whole document
    assert summary.reasons == ["only 1 sentence(s), fewer than 4: kept whole"]


def test_confidence_falls_and_says_why_when_the_summary_misses_the_document(encoder: Encoder) -> None:
    segments, vectors, doc = embed_text(encoder, NEWS)
    on_topic = summarize(segments, vectors, doc, speakers=None, settings=SummarySettings())
    unrelated = embed_text(encoder, "Preheat the oven and whisk two eggs with sugar.")[2]
    off_topic = summarize(segments, vectors, unrelated, speakers=None, settings=SummarySettings())
    assert on_topic.confidence > 0.5
    assert not on_topic.reasons
    assert off_topic.confidence < 0.5
    assert any(r.startswith("low coverage") for r in off_topic.reasons)


def test_only_filler_turns_still_give_a_summary_and_say_so(encoder: Encoder) -> None:
    turns = [("Ann", "Hi!"), ("Bo", "Hey."), ("Ann", "Ok."), ("Bo", "Yeah, thanks."), ("Ann", "Bye.")]
    segments, speakers = dialogue_segments(turns)
    vectors, doc = embed_segments(encoder, segments)
    summary = summarize(segments, vectors, doc, speakers=speakers, settings=SummarySettings())
    assert summary.sentence_ids
    assert len(summary.sentence_ids) <= 3
    assert any("only filler" in r for r in summary.reasons)


def test_mismatched_inputs_are_rejected() -> None:
    vectors = np.zeros((2, 384), dtype=np.float32)
    with pytest.raises(ValueError, match="3 segments but 2 segment vectors"):
        summarize(["a", "b", "c"], vectors, vectors[0], speakers=None, settings=SummarySettings())
    with pytest.raises(ValueError, match="2 segments but 1 speakers"):
        summarize(["a", "b"], vectors, vectors[0], speakers=["Ann"], settings=SummarySettings())


# ------------------------------------------------------------------------------------ helpers, baselines
def test_dialogue_segments_split_turns_into_sentences_that_keep_their_speaker() -> None:
    segments, speakers = dialogue_segments([("Ann", "Hi. The card is lost."), ("Bo", "I blocked it!")])
    assert segments == ["Hi.", "The card is lost.", "I blocked it!"]
    assert speakers == ["Ann", "Ann", "Bo"]


def test_lead_n_takes_the_first_non_empty_sentences() -> None:
    assert lead_n(["", "a", "b", "c", "d"], 3) == [1, 2, 3]
    assert lead_n(["a"], 3) == [0]


def test_longest_n_takes_the_longest_sentences_in_original_order() -> None:
    segments = ["tiny", "a much longer one", "mid size", "the very longest sentence", "x"]
    assert longest_n(segments, 3) == [1, 2, 3]
    assert render_lines(longest_n(segments, 2), segments, ["A", "B", "C", "D", "E"]) == (
        "B: a much longer one\nD: the very longest sentence"
    )


# ------------------------------------------------------------------------------------------- evaluation
def test_bundled_dialogue_set_is_well_formed() -> None:
    records = [json.loads(line) for line in DIALOGUES_PATH.read_text(encoding="utf-8").splitlines()]
    assert len(records) >= 30
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        assert 8 <= len(r["turns"]) <= 25, r["id"]
        assert all(t["speaker"] and t["text"] for t in r["turns"]), r["id"]
        assert 1 <= len(split_sentences(r["summary"])) <= 3, r["id"]


@pytest.mark.slow  # embeds the whole bundled set: ~2-6 s per unit
@pytest.mark.parametrize("unit", ["sentence", "turn"])  # turns are what the engine feeds for a Conversation
def test_minnow_beats_lead_3_and_longest_3_on_the_bundled_dialogues(encoder: Encoder, unit: Unit) -> None:
    scores = evaluate_dialogues(encoder, unit=unit)
    for metric in ("rouge1", "rouge2", "rougeL"):
        assert scores["minnow"][metric] > scores["lead3"][metric], metric
        assert scores["minnow"][metric] > scores["longest3"][metric], metric
