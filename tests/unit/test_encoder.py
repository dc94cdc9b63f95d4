"""The ONNX encoder reproduces sentence-transformers' figures and never drops input silently."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.engine import Encoder
from pipeline.engine.encoder import within_budget
from pipeline.engine.text import clean, split_sentences

HAPPY, VERY_HAPPY, SUNNY = "That is a happy person", "That is a very happy person", "Today is a sunny day"


def _cosines(encoder: Encoder) -> tuple[float, float]:
    v = encoder.embed([HAPPY, VERY_HAPPY, SUNNY])
    return float(v[0] @ v[1]), float(v[0] @ v[2])


def test_fp32_graph_matches_sentence_transformers_figures(encoder_fp32: Encoder) -> None:
    """fp32: cos(happy, very happy) = 0.943 ± 0.005 and cos(happy, sunny) = 0.257 ± 0.01."""
    close, far = _cosines(encoder_fp32)
    assert close == pytest.approx(0.943, abs=0.005)
    assert far == pytest.approx(0.257, abs=0.01)


def test_int8_graph_within_002_of_reference(encoder: Encoder) -> None:
    close, far = _cosines(encoder)
    assert close == pytest.approx(0.943, abs=0.02)
    assert far == pytest.approx(0.257, abs=0.02)


def test_embeddings_are_unit_length_and_384_wide(encoder: Encoder) -> None:
    v = encoder.embed(["a", "a much longer sentence about the weather in spring", ""])
    assert v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)


def test_batching_does_not_change_embeddings_beyond_quantization_noise(encoder_fp32: Encoder) -> None:
    """Padding in a mixed-length batch leaves fp32 vectors as they are alone (the mask works)."""
    texts = ["short", "a considerably longer sentence that forces the batch to be padded for the first text"]
    together = encoder_fp32.embed(texts)
    alone = np.stack([encoder_fp32.embed([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_plan_batches_respects_size_and_token_budget(encoder: Encoder) -> None:
    lengths = [5, 200, 7, 30, 256, 12, 8, 250, 3, 100] * 10
    batches = encoder.plan_batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every unit exactly once
    for b in batches:
        assert len(b) <= encoder.settings.max_windows_per_batch
        assert len(b) * max(lengths[i] for i in b) <= encoder.settings.max_tokens_per_batch
    # length buckets: within a batch the lengths are close (sorted order), which is what cuts padding
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.3 * sum(lengths)


def test_long_text_is_chunked_not_truncated(encoder: Encoder) -> None:
    sentence = "The meeting covered the budget, the hiring plan and the new office lease in detail. "
    doc = encoder.embed_documents([sentence * 60], [False])[0]  # ~1000 tokens, four times the window
    assert len(doc.segments) >= 4
    assert not doc.truncated
    assert doc.tokens > 900


def test_a_text_over_the_per_event_budget_is_embedded_from_a_spread_sample(encoder: Encoder) -> None:
    """100 KB of text costs at most the per-event budget of tokens: its first and last sentences and evenly spread
    ones between, in order, and the result says which limit cut it."""
    text = " ".join(f"Sentence number {i} is here." for i in range(3_000))  # 86 KB, under the char limit
    doc = encoder.embed_documents([text], [True])[0]
    assert doc.truncated and doc.truncated_by == "max_tokens_per_event"
    assert doc.tokens + 2 * len(doc.segments) <= encoder.settings.max_tokens_per_event
    assert doc.segment_sources == sorted(doc.segment_sources)
    assert doc.segments[0] == "Sentence number 0 is here." and doc.segments[-1] == "Sentence number 2999 is here."
    gaps = np.diff(doc.segment_sources)
    assert gaps.max() <= gaps.min() + 1, "the sample is spread evenly, not the head of the text"


def test_each_limit_is_named_when_it_cuts(encoder: Encoder) -> None:
    """A text cut at MINNOW_ENGINE__MAX_TEXT_CHARS but within the token budget says `max_text_chars`; one that is
    also sampled says `max_tokens_per_event` (what was embedded is a sample)."""
    cut_short = Encoder(encoder.files, encoder.settings.model_copy(update={"max_text_chars": 2_000}))
    assert cut_short.embed_documents(["word " * 1_000], [False])[0].truncated_by == "max_text_chars"
    assert encoder.embed_documents(["word " * 30_000], [False])[0].truncated_by == "max_tokens_per_event"


@pytest.mark.parametrize(
    ("lengths", "budget", "cap", "kept"),
    [
        ([100] * 5, 1000, 10, [0, 1, 2, 3, 4]),  # fits: everything, in order
        ([100] * 9, 500, 10, [0, 2, 4, 6, 8]),  # ends, middle, quarters
        ([100] * 9, 1000, 3, [0, 4, 8]),  # the piece cap binds first
        ([100] * 7, 400, 10, [0, 2, 4, 6]),
        ([300, 100, 100, 300], 500, 10, [0]),  # always at least the first piece
        ([], 500, 10, []),
    ],
)
def test_within_budget_keeps_the_ends_and_spreads_the_rest(
    lengths: list[int], budget: int, cap: int, kept: list[int]
) -> None:
    """The sampling rule in isolation."""
    assert within_budget(lengths, budget, cap) == kept


def test_run_on_sentence_longer_than_window_keeps_every_token(encoder: Encoder) -> None:
    text = " ".join(["word"] * 700)  # no sentence boundary at all
    doc = encoder.embed_documents([text], [True])[0]
    assert doc.tokens == 700
    assert len(doc.segments) == 3  # 254 + 254 + 192
    assert not doc.truncated


def test_presplit_dialogue_keeps_sources_for_speakers(encoder: Encoder) -> None:
    doc = encoder.embed_documents([["hello", "", "I need help with my bill"]], [True])[0]
    assert doc.segments == ["hello", "I need help with my bill"]
    assert doc.segment_sources == [0, 2]


def test_clean_removes_control_characters_and_reports_cut() -> None:
    assert clean("a\x00b\x1b[31mc\u200bd", 100).text == "a b [31mc d"
    cut = clean("x" * 50, 10)
    assert cut.truncated and cut.text == "x" * 10


def test_split_sentences_keeps_abbreviations_together() -> None:
    text = "Dr. Smith arrived at 3.30 p.m. today. He said hello! Then\nhe left"
    assert split_sentences(text) == [
        "Dr. Smith arrived at 3.30 p.m. today.",
        "He said hello!",
        "Then",
        "he left",
    ]
