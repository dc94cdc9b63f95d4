"""ROUGE-1/2/L F1 match hand-computed values and the rouge-score package (stemming on), and behave as F-measures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.tasks.rouge import corpus_rouge, lcs_length, rouge_l, rouge_n, rouge_scores, stemmed_tokens, tokenize


def test_tokenize_lowercases_and_keeps_only_letters_and_digits() -> None:
    assert tokenize("Dr. Patel's slot: 9:15, TOMORROW!") == [
        "dr",
        "patel",
        "s",
        "slot",
        "9",
        "15",
        "tomorrow",
    ]


def test_identical_texts_score_one_and_disjoint_texts_zero() -> None:
    assert rouge_scores("The card is blocked.", "the card is BLOCKED") == pytest.approx(
        {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    )
    assert rouge_scores("refund issued", "flight moved") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_hand_computed_cat_on_the_mat() -> None:
    """cand: the cat sat on the mat / ref: the cat is on the mat (6 tokens each).

    Unigrams: the x2, cat, on, mat match -> 5/6 both ways. Bigrams: (the cat), (on the), (the mat) of 5 ->
    3/5. LCS: "the cat on the mat" = 5 -> 5/6.
    """
    scores = rouge_scores("the cat sat on the mat", "the cat is on the mat")
    assert scores["rouge1"] == pytest.approx(5 / 6)
    assert scores["rouge2"] == pytest.approx(3 / 5)
    assert scores["rougeL"] == pytest.approx(5 / 6)


def test_repeated_words_are_matched_only_as_often_as_the_reference_has_them() -> None:
    """cand "the the the" vs ref "the cat": 1 clipped match, P = 1/3, R = 1/2, F = 2PR/(P+R) = 0.4."""
    assert rouge_scores("the the the", "the cat")["rouge1"] == pytest.approx(0.4)


def test_rouge_l_rewards_order_where_rouge_1_cannot() -> None:
    """Same bag of words, reversed: ROUGE-1 is perfect, no bigram survives, the LCS is one token."""
    scores = rouge_scores("five days refund", "refund days five")
    assert scores["rouge1"] == pytest.approx(1.0)
    assert scores["rouge2"] == 0.0
    assert scores["rougeL"] == pytest.approx(1 / 3)


def test_unequal_lengths_hand_computed() -> None:
    """cand: "james blocked the card" (4) / ref: "james blocked her card today" (5).

    R1: james, blocked, card = 3 -> P 3/4, R 3/5, F = 2/3. R2: (james blocked) = 1 -> P 1/3, R 1/4, F = 2/7.
    LCS "james blocked card" = 3 -> same as R1.
    """
    scores = rouge_scores("James blocked the card", "James blocked her card today")
    assert scores["rouge1"] == pytest.approx(2 / 3)
    assert scores["rouge2"] == pytest.approx(2 / 7)
    assert scores["rougeL"] == pytest.approx(2 / 3)


def test_empty_candidate_or_reference_scores_zero() -> None:
    assert rouge_scores("", "a reference") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert rouge_scores("a candidate", "...") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_lcs_length_of_known_sequences() -> None:
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # the textbook example (CLRS 15.4)
    assert lcs_length([], ["a"]) == 0


def test_corpus_score_is_the_mean_of_pair_scores() -> None:
    pairs = [("the card is blocked", "the card is blocked"), ("refund issued", "flight moved")]
    assert corpus_rouge(pairs) == pytest.approx({"rouge1": 0.5, "rouge2": 0.5, "rougeL": 0.5})
    assert corpus_rouge([]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


words = st.lists(st.sampled_from(["card", "blocked", "refund", "the", "five", "days"]), max_size=12)


@given(words, words)
def test_scores_are_symmetric_f_measures_in_the_unit_interval(a: list[str], b: list[str]) -> None:
    """F1 swaps precision and recall when the texts swap, so the score does not change."""
    forward, backward = rouge_scores(" ".join(a), " ".join(b)), rouge_scores(" ".join(b), " ".join(a))
    assert forward == pytest.approx(backward)
    assert all(0.0 <= v <= 1.0 for v in forward.values())
    assert forward["rougeL"] <= forward["rouge1"] + 1e-12  # an LCS is a subset of the unigram matches


def test_stemming_matches_inflections_as_published_rouge_does() -> None:
    """rouge-score's Porter stemmer (tokens over 3 characters): "fixes printers" matches "fixed printer" fully."""
    assert rouge_scores("Lena fixes printers", "Lena fixed a printer")["rouge1"] == pytest.approx(2 * 1 * 0.75 / 1.75)
    assert stemmed_tokens("Lena fixed printers") == ["lena", "fix", "printer"]


def test_several_references_are_averaged() -> None:
    """DialogSum's test set has three references; published figures average the per-reference scores."""
    one, other = rouge_scores("the card is blocked", "the card is blocked"), rouge_scores("the card is blocked", "x y")
    both = rouge_scores("the card is blocked", ["the card is blocked", "x y"])
    assert both == pytest.approx({k: (one[k] + other[k]) / 2 for k in one})
    with pytest.raises(ValueError, match="at least one reference"):
        rouge_scores("a", [])


texts = st.lists(
    st.sampled_from(
        ["Card", "blocked", "blocking", "refunds", "the", "five", "days", "#Person1#", "9:15", "café", "!"]
    ),
    max_size=14,
).map(" ".join)


@given(texts, texts)
def test_token_helpers_equal_the_rouge_score_package(candidate: str, reference: str) -> None:
    """The oracle's token-level ROUGE (stemmed tokens, clipped n-grams, LCS) gives the package's F1 exactly."""
    cand, ref = stemmed_tokens(candidate), stemmed_tokens(reference)
    ours = {"rouge1": rouge_n(cand, ref, 1), "rouge2": rouge_n(cand, ref, 2), "rougeL": rouge_l(cand, ref)}
    assert ours == pytest.approx(rouge_scores(candidate, reference), abs=1e-12)
