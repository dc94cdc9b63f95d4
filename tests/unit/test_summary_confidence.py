"""Summary confidence: the quality features read what they say, the estimate is fitted and applied the same way
(with its transcript-only weights), the summarizer's confidence is the shipped estimate of exactly those features,
and the evaluation's Spearman interval behaves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from pipeline.engine import Encoder
from pipeline.settings import SummarySettings
from pipeline.tasks.summarize import pseudo_reference_f1, quality_features, summarize, summarize_with_quality
from pipeline.tasks.summary_features import candidates
from pipeline.tasks.summary_model import GROUP_FEATURE, MODEL_PATH, QUALITY_FEATURES, Quality, load_summary_model
from pipeline.tasks.summary_public_eval import spearman_interval
from pipeline.tasks.summary_train import fit_quality, quality_cv

DIM = 384


def unit_vectors(n: int, seed: int = 0) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Random L2-normalised segment vectors and their normalised mean: the quality features do not read them."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    mean = v.mean(axis=0)
    return v, (mean / np.linalg.norm(mean)).astype(np.float32)


def features_of(
    segments: list[str], speakers: list[str] | None, chosen: list[int], text: str, scores: list[float] | None = None
) -> dict[str, float]:
    vectors, doc = unit_vectors(len(segments))
    pool = candidates(segments, vectors, doc, speakers)
    s = np.asarray(scores if scores is not None else [0.5] * len(pool.texts), dtype=np.float64)
    return dict(zip(QUALITY_FEATURES, quality_features(pool, s, chosen, speakers=speakers, text=text), strict=True))


# ------------------------------------------------------------------------------------------------ features
def test_quality_features_read_pronouns_speakers_and_shared_words() -> None:
    """A first-person line of one of two speakers: pronoun shares count its words, half the speakers are covered,
    a content word both speakers use counts as shared, a named chat is not a transcript."""
    segments = ["I booked the table for Friday.", "Great, the table by the window?", "Yes, the window table."]
    speakers = ["Ann", "Ben", "Ann"]
    f = features_of(segments, speakers, [0], "Ann: I booked the table for Friday.")
    assert f["pronoun_share"] == pytest.approx(1 / 7)  # "i" of ann i booked the table for friday
    assert f["first_person_share"] == pytest.approx(1 / 7)
    assert f["speakers_covered"] == pytest.approx(0.5)
    # content words of the summary: ann, booked, table, friday; only "table" is said by both Ann and Ben
    assert f["shared_words"] == pytest.approx(1 / 4)
    assert f["generic_speakers"] == 0.0
    assert f["chosen_score_sum"] == pytest.approx(0.5)


def test_transcript_tags_mark_the_group_and_prose_has_no_speaker_features() -> None:
    """ "#Person1#" speakers set the group feature that switches on the transcript weights; prose gets 0 for every
    speaker feature."""
    segments = ["We moved the launch to May.", "Why May?", "The supplier is late with the parts."]
    tagged = features_of(segments, ["#Person1#", "#Person2#", "#Person1#"], [0, 2], "x")
    assert tagged[GROUP_FEATURE] == 1.0
    prose = features_of(segments, None, [0, 2], "We moved the launch to May. The supplier is late with the parts.")
    assert prose[GROUP_FEATURE] == 0.0
    assert prose["speakers_covered"] == 0.0
    assert prose["shared_words"] == 0.0


def test_a_summary_of_the_dialogue_s_frequent_words_scores_higher_on_mass_and_frequency() -> None:
    """The summary line carrying the dialogue's repeated words covers more of its content mass, and its words are
    more frequent in the dialogue, than a line of one-off words."""
    segments = [
        "The printer on floor two is broken again.",
        "Which printer? The printer near the kitchen?",
        "Yes, that printer, it jams on every page.",
        "I saw a squirrel outside yesterday.",
    ]
    speakers = ["Ann", "Ben", "Ann", "Ben"]
    central = features_of(segments, speakers, [0], "Ann: The printer on floor two is broken again.")
    aside = features_of(segments, speakers, [3], "Ben: I saw a squirrel outside yesterday.")
    assert central["content_mass"] > aside["content_mass"]
    assert central["word_frequency"] > aside["word_frequency"]


def test_pseudo_reference_weighs_each_candidate_s_words_by_its_score() -> None:
    """Against the score-weighted words of all candidates: a summary of the only scored sentence is perfect, one of
    an unscored sentence shares nothing, and raising the other sentence's score lowers the first one's F1."""
    a, b = ["ship", "the", "order"], ["call", "me", "later"]
    assert pseudo_reference_f1(a, [a, b], np.array([1.0, 0.0])) == pytest.approx(1.0)
    assert pseudo_reference_f1(b, [a, b], np.array([1.0, 0.0])) == 0.0
    mixed = pseudo_reference_f1(a, [a, b], np.array([1.0, 1.0]))
    assert 0.0 < mixed < 1.0
    assert pseudo_reference_f1([], [a, b], np.array([1.0, 1.0])) == 0.0


# ------------------------------------------------------------------------------------------------ the estimate
def test_fit_quality_learns_a_slope_that_differs_between_chats_and_transcripts() -> None:
    """Quality rises with a feature in chats and falls with it in transcripts: one ridge over the features and their
    transcript-only copies ranks both groups right, and predict() equals the fitted design."""
    rng = np.random.default_rng(0)
    n = 400
    q = rng.normal(size=(n, len(QUALITY_FEATURES)))
    group = (np.arange(n) % 2).astype(np.float64)
    q[:, QUALITY_FEATURES.index(GROUP_FEATURE)] = group
    x = q[:, 0]
    r1 = 0.3 + np.where(group == 1, -0.05, 0.05) * x + rng.normal(scale=0.01, size=n)
    quality = fit_quality(q, r1, alpha=1.0)
    predicted = np.array([quality.predict(row) for row in q])
    for g in (0, 1):
        corr = np.corrcoef(predicted[group == g], r1[group == g])[0, 1]
        assert corr > 0.9, g
    assert np.allclose(quality.design(q) @ quality.coef + quality.intercept, predicted)
    assert len(quality.coef) == 2 * len(QUALITY_FEATURES) + 1


def test_quality_cv_reports_out_of_fold_spearman_per_set() -> None:
    """On rows whose quality is a clean function of one feature, every set's out-of-fold Spearman is high; on noise
    it is near zero. Both sets are reported by name."""
    rng = np.random.default_rng(1)
    n = 300
    q = rng.normal(size=(n, len(QUALITY_FEATURES)))
    q[:, QUALITY_FEATURES.index(GROUP_FEATURE)] = 0.0
    sets = ["samsum" if i % 2 else "dialogsum" for i in range(n)]
    clean = quality_cv(q, 0.3 + 0.05 * q[:, 1], sets)
    assert set(clean) == {"samsum", "dialogsum"}
    assert min(clean.values()) > 0.9
    noise = quality_cv(q, rng.normal(size=n), sets)
    assert max(abs(v) for v in noise.values()) < 0.3


def test_confidence_is_the_shipped_estimate_of_the_summary_s_own_features(encoder: Encoder) -> None:
    """summarize() and summarize_with_quality() give the same summary, and its confidence is the shipped estimate
    of the features returned (what summary_train fits on), clipped to [0, 1]."""
    turns = [
        ("#Person1#", "Good morning, I'd like to change my flight to Boston."),
        ("#Person2#", "Sure, what is your booking number?"),
        ("#Person1#", "It's BX 4471, the Friday flight at 9 am."),
        ("#Person2#", "I can move you to Saturday at 10 am, there is a 30 dollar fee."),
        ("#Person1#", "That's fine, please do it."),
    ]
    segments = [t for _, t in turns]
    vectors = encoder.embed(segments)
    mean = vectors.mean(axis=0)
    doc = (mean / np.linalg.norm(mean)).astype(np.float32)
    speakers = [s for s, _ in turns]
    settings = SummarySettings()
    plain = summarize(segments, vectors, doc, speakers=speakers, settings=settings)
    summary, q = summarize_with_quality(segments, vectors, doc, speakers=speakers, settings=settings)
    assert summary == plain
    expected = float(np.clip(load_summary_model().quality.predict(q), 0.0, 1.0))
    assert summary.confidence == pytest.approx(expected)
    assert q[QUALITY_FEATURES.index(GROUP_FEATURE)] == 1.0


def test_shipped_quality_estimate_matches_its_features_and_records_its_cross_validation() -> None:
    """The shipped estimate names its features and group, has one weight per design column, and keeps the 5-fold
    Spearman of its fitting, per set, with the refit command."""
    body = json.loads(MODEL_PATH.read_text(encoding="utf-8"))["quality"]
    assert tuple(body["features"]) == QUALITY_FEATURES
    assert body["group_feature"] == GROUP_FEATURE
    assert len(body["coef"]) == 2 * len(QUALITY_FEATURES) + 1
    assert set(body["cv_spearman_rouge1"]) == {"samsum", "dialogsum"}
    provenance = json.loads(MODEL_PATH.read_text(encoding="utf-8"))["provenance"]
    assert "--quality-only" in provenance["quality_refit"]["command"]
    assert isinstance(load_summary_model(MODEL_PATH).quality, Quality)


# ------------------------------------------------------------------------------------------------ evaluation
def test_spearman_interval_brackets_the_estimate_and_is_degenerate_when_it_should_be() -> None:
    """A perfectly monotone pair gives [1, 1]; a noisy one gives an interval around its own rho; constant
    confidence gives no interval."""
    x = np.arange(50, dtype=np.float64)
    assert spearman_interval(x, x**2) == pytest.approx([1.0, 1.0])
    rng = np.random.default_rng(0)
    y = x + rng.normal(scale=20, size=50)
    low, high = spearman_interval(x, y)
    rho = np.corrcoef(np.argsort(np.argsort(x)), np.argsort(np.argsort(y)))[0, 1]
    assert low < rho < high
    assert all(np.isnan(spearman_interval(np.ones(50), y)))


PUBLIC = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.mark.slow  # embeds ~180 held-out DialogSum dialogues: ~10-20 s
@pytest.mark.skipif(not (PUBLIC / "dialogue" / "dialogsum_dev.jsonl").is_file(), reason="../shared/data absent")
def test_confidence_ranks_held_out_spoken_dialogue_summaries(encoder: Encoder) -> None:
    """On the held-out DialogSum part, the confidence ranks Minnow's own summaries by ROUGE-1 (Spearman > 0.25;
    measured 0.38, docs/summarization.md), and the least confident fifth scores lower than the rest."""
    from pipeline.tasks.summary_public_eval import embed_part, evaluate

    report = evaluate(embed_part(encoder, PUBLIC, "dialogsum", "held_out"), SummarySettings(), 0.3)
    assert report["confidence_spearman_rouge1"] > 0.25
    low = report["lowest_fifth"]
    assert low["rouge1_escalated"] < low["rouge1_kept"]
