"""Summaries stay within their word and character bounds and in order, skip repeats and filler, read speakers
compactly, run the shipped model exactly as fitted, and beat LEAD-3 (and, on public dialogues, LONGEST-3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.engine import Encoder
from pipeline.engine.encoder import Vectors
from pipeline.engine.text import split_sentences
from pipeline.settings import SummarySettings
from pipeline.tasks.summarize import (
    ELLIPSIS,
    compact,
    dialogue_segments,
    lead_n,
    longest_n,
    render_lines,
    speaker_label,
    summarize,
)
from pipeline.tasks.summary_eval import DIALOGUES_PATH, Unit, evaluate_dialogues
from pipeline.tasks.summary_features import FEATURES, candidates
from pipeline.tasks.summary_model import MODEL_PATH, QUALITY_FEATURES, load_summary_model, trees_from_json
from pipeline.tasks.summary_public import parse_turns, part_of
from pipeline.tasks.summary_train import export_trees, oracle

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
@pytest.mark.parametrize("max_sentences", [1, 2, 4])
@pytest.mark.parametrize("max_chars", [40, 90, 600])
@pytest.mark.parametrize("max_words", [5, 12, 28])
def test_summary_never_exceeds_its_word_character_or_sentence_bounds(
    encoder: Encoder, max_sentences: int, max_chars: int, max_words: int
) -> None:
    """Whatever the bounds, prose and dialogue summaries fit them (a cut one included), with a confidence in [0, 1]."""
    settings = SummarySettings(max_sentences=max_sentences, max_chars=max_chars, max_words=max_words)
    segments, vectors, doc = embed_text(encoder, NEWS)
    prose = summarize(segments, vectors, doc, speakers=None, settings=settings)
    call_segments = [text for _, text in CALL]
    call_speakers = [speaker for speaker, _ in CALL]
    call_vectors, call_doc = embed_segments(encoder, call_segments)
    call = summarize(call_segments, call_vectors, call_doc, speakers=call_speakers, settings=settings)
    for summary in (prose, call):
        assert 0 < len(summary.text) <= max_chars
        assert len(summary.text.split()) <= max_words
        assert 1 <= len(summary.sentence_ids) <= max_sentences
        assert 0.0 <= summary.confidence <= 1.0


def test_default_summaries_are_about_as_long_as_a_human_chat_summary(encoder: Encoder) -> None:
    """The default budget (28 words) holds a summary near the 20-word length of SAMSum/DialogSum references."""
    segments, vectors, doc = embed_text(encoder, NEWS)
    summary = summarize(segments, vectors, doc, speakers=None, settings=SummarySettings())
    assert 8 <= len(summary.text.split()) <= 28


def test_selected_sentences_come_out_in_original_order(encoder: Encoder) -> None:
    """Prose segments are sentences here: the chosen ones are joined in document order."""
    segments, vectors, doc = embed_text(encoder, NEWS)
    summary = summarize(segments, vectors, doc, speakers=None, settings=SummarySettings(max_words=80))
    assert len(summary.sentence_ids) >= 2
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
    assert original[len(kept)] in " ,;:-"
    assert any("cut with" in r for r in summary.reasons)


# --------------------------------------------------------------------------------------------- selection
def test_duplicate_sentences_are_never_both_selected(encoder: Encoder) -> None:
    """The most central sentence, said twice, appears once, whatever the overlap allowed short of a copy."""
    key = "The bike lane plan was approved by the city council on Tuesday."
    text = f"{key} {key} {NEWS}"
    segments, vectors, doc = embed_text(encoder, text)
    for max_overlap in (0.3, 0.6, 1.0):  # 1.0: only a sentence whose every content word is already said is skipped
        settings = SummarySettings(max_overlap=max_overlap, max_words=80)
        summary = summarize(segments, vectors, doc, speakers=None, settings=settings)
        picked = [segments[i] for i in summary.sentence_ids]
        assert len(picked) == len(set(picked))


def test_dialogue_lines_read_speaker_colon_text_and_skip_filler_turns(encoder: Encoder) -> None:
    segments = [text for _, text in CALL]
    speakers = [speaker for speaker, _ in CALL]
    vectors, doc = embed_segments(encoder, segments)
    summary = summarize(segments, vectors, doc, speakers=speakers, settings=SummarySettings(max_words=40))
    lines = summary.text.split("\n")
    assert lines == [f"{speakers[i]}: {compact(segments[i])}" for i in summary.sentence_ids]
    fillers = {"Hi.", "Okay.", "Yeah.", "Thanks.", "Ok, bye."}
    assert not {segments[i] for i in summary.sentence_ids} & fillers


def test_compact_rendering_drops_empty_openers_and_emoticons_but_never_the_whole_sentence() -> None:
    """ "Oh, well, " and "Hi Tom, " openers and emoticons go; a sentence that would keep under two words stays."""
    assert compact("Oh, well, I fixed the printer :)") == "I fixed the printer"
    assert compact("Hi Tom, are you busy tomorrow?") == "Are you busy tomorrow?"
    assert compact("Okay then.") == "Okay then."
    assert compact("Well-known fact, that.") == "Well-known fact, that."


def test_transcript_tags_read_as_names_and_sentences_of_one_turn_share_its_line(encoder: Encoder) -> None:
    """ "#Person1#" is rendered "Person1"; two chosen sentences of one turn sit on one "Person1: ..." line."""
    assert speaker_label("#Person1#") == "Person1"
    assert speaker_label(" Lena ") == "Lena"
    assert render_lines([0], ["I lost my card."], ["#Person2#"]) == "Person2: I lost my card."
    turns = [
        ("#Person1#", "Good morning, how can I help you?"),
        ("#Person2#", "I lost my debit card at the station yesterday. Can you block it and send a new one?"),
        ("#Person1#", "Sure. The card is blocked now and a new card will arrive within five working days."),
        ("#Person2#", "Thank you so much."),
    ]
    segments = [t for _, t in turns]
    vectors, doc = embed_segments(encoder, segments)
    summary = summarize(segments, vectors, doc, speakers=[s for s, _ in turns], settings=SummarySettings(max_words=60))
    lines = summary.text.split("\n")
    assert all(line.startswith(("Person1: ", "Person2: ")) for line in lines)
    assert len(lines) == len(summary.sentence_ids)  # one line per turn, however many of its sentences are chosen


# ----------------------------------------------------------------------------------------------- the model
def test_shipped_model_matches_the_features_and_says_where_it_came_from() -> None:
    """The shipped weights name the features they were fitted on, the data files and the command."""
    body = json.loads(MODEL_PATH.read_text(encoding="utf-8"))
    assert tuple(body["features"]) == FEATURES
    assert tuple(body["quality"]["features"]) == QUALITY_FEATURES
    assert set(body["provenance"]["fitted_on"]) == {"dialogue/samsum_validation.jsonl", "dialogue/dialogsum_dev.jsonl"}
    assert "summary_train" in body["provenance"]["command"]
    model = load_summary_model()
    assert model.trees.feature.max() < len(FEATURES)
    assert MODEL_PATH.stat().st_size < 200_000  # small enough to ship in the wheel


def test_exported_trees_give_the_fitted_model_s_scores_exactly() -> None:
    """The numpy tree walk reproduces scikit-learn's decision function, also for rows sitting on a threshold."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.random((600, 4))
    x[:, 2] = np.round(x[:, 2], 1)  # few distinct values: thresholds fall on observed values
    y = (x[:, 0] + 0.5 * x[:, 2] + rng.normal(0, 0.2, 600) > 0.8).astype(int)
    clf = HistGradientBoostingClassifier(max_iter=25, max_leaf_nodes=7, early_stopping=False, random_state=0)
    clf.fit(x, y)
    trees = trees_from_json(export_trees(clf))
    assert np.allclose(trees.logit(x), clf.decision_function(x), atol=1e-4)  # leaf values keep 6 digits
    assert np.allclose(trees.probability(x), clf.predict_proba(x)[:, 1], atol=1e-4)


def test_oracle_picks_the_sentences_that_share_the_reference_s_words() -> None:
    """Greedy ROUGE oracle: the two sentences carrying the reference's content, not the greeting or the filler."""
    texts = ["Hi there!", "Lena fixed the printer.", "Ok.", "She will order toner for Marco on Monday.", "Great."]
    assert oracle(texts, "Lena fixed the printer and will order toner for Marco on Monday.") == [1, 3]
    assert oracle(texts, "") == []


def test_candidate_features_follow_position_questions_and_answers(encoder: Encoder) -> None:
    """Feature columns mean what their names say: first/last turn flags, a question and the answer after it."""
    turns = [("Ann", "Are you coming to the party on Friday?"), ("Bo", "Yes, I will bring two pizzas."), ("Ann", "Ok.")]
    segments = [t for _, t in turns]
    vectors, doc = embed_segments(encoder, segments)
    pool = candidates(segments, vectors, doc, [s for s, _ in turns])
    col = {name: pool.features[:, i] for i, name in enumerate(FEATURES)}
    assert list(col["first_segment"]) == [1, 0, 0] and list(col["last_segment"]) == [0, 0, 1]
    assert list(col["question"]) == [1, 0, 0] and list(col["answer"]) == [0, 1, 0]
    assert list(col["quantity"]) == [1, 1, 0]  # "Friday", "two"
    assert list(col["filler"]) == [0, 0, 1]


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
    assert 0.0 <= summary.confidence <= 1.0
    assert summary.reasons == ["only 1 sentence(s), fewer than 4: kept whole"]


def test_only_filler_turns_still_give_a_summary_and_say_so(encoder: Encoder) -> None:
    turns = [("Ann", "Hi!"), ("Bo", "Hey."), ("Ann", "Ok."), ("Bo", "Yeah, thanks."), ("Ann", "Bye.")]
    segments, speakers = dialogue_segments(turns)
    vectors, doc = embed_segments(encoder, segments)
    summary = summarize(segments, vectors, doc, speakers=speakers, settings=SummarySettings())
    assert summary.sentence_ids
    assert len(summary.sentence_ids) <= SummarySettings().max_sentences
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


def test_public_files_parse_into_turns_and_split_by_a_stable_hash() -> None:
    """ "Name: text" lines become turns (SAMSum's \\r\\n too); the held-out share is about 40% and never moves."""
    assert parse_turns("Lena: I fixed the printer.\r\nMarco: :)\r\nmore of it\n#Person1#: Hi") == [
        {"speaker": "Lena", "text": "I fixed the printer."},
        {"speaker": "Marco", "text": ":) more of it"},
        {"speaker": "#Person1#", "text": "Hi"},
    ]
    parts = [part_of(f"samsum-{i}") for i in range(2000)]
    assert 0.35 < parts.count("held_out") / len(parts) < 0.45
    assert part_of("samsum-7") == part_of("samsum-7")


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
def test_minnow_beats_lead_3_on_the_bundled_dialogues(encoder: Encoder, unit: Unit) -> None:
    """On the project-written calls and meetings (greetings first), Minnow beats LEAD-3 on every metric.

    It does not beat LONGEST-3 there (docs/summarization.md): its 28-word default is short of those 46-word references.
    """
    scores = evaluate_dialogues(encoder, unit=unit)
    for metric in ("rouge1", "rouge2", "rougeL"):
        assert scores["minnow"][metric] > scores["lead3"][metric], metric


PUBLIC = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.mark.slow  # embeds ~330 held-out SAMSum dialogues: ~10-20 s
@pytest.mark.skipif(not (PUBLIC / "dialogue" / "samsum_validation.jsonl").is_file(), reason="../shared/data absent")
def test_minnow_beats_both_baselines_on_held_out_public_chats(encoder: Encoder) -> None:
    """On the held-out SAMSum part, Minnow beats LEAD-3 and LONGEST-3 (turns or sentences) on ROUGE-1 and ROUGE-L,
    and its confidence ranks its own summaries (Spearman > 0.2 with ROUGE-1)."""
    from pipeline.tasks.summary_public_eval import embed_part, evaluate

    report = evaluate(embed_part(encoder, PUBLIC, "samsum", "held_out"), SummarySettings(), 0.3)
    best = {
        k: max(v[k] for m, v in report["rouge"].items() if m not in {"minnow", "oracle"}) for k in ("rouge1", "rougeL")
    }
    assert report["rouge"]["minnow"]["rouge1"] > best["rouge1"] + 0.01
    assert report["rouge"]["minnow"]["rougeL"] > best["rougeL"] + 0.01
    assert report["mean_words"]["minnow"] <= 1.5 * report["mean_words"]["reference"]
    assert report["confidence_spearman_rouge1"] > 0.2
