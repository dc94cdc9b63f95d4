"""The moderate task: the shipped heads score obvious cases sensibly, the uncertain band, config thresholds, the
shipped file's checks, held-out quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.engine import Encoder
from pipeline.errors import ConfigError, InferenceError, ModelError
from pipeline.models import Moderation
from pipeline.tasks.moderate import (
    CATEGORIES,
    EVAL_FILE,
    HEADS_FILE,
    SEED_FILE,
    CategoryPolicy,
    ModerationConfig,
    ModerationHeads,
    Moderator,
    ProfanityModel,
    read_labelled,
)
from pipeline.tasks.moderation_eval import evaluate


@pytest.fixture(scope="module")
def moderator() -> Moderator:
    """The shipped heads (pipeline/data/moderation_heads.npz) under the bundled policy."""
    return Moderator.load()


def run(moderator: Moderator, encoder: Encoder, texts: list[str]) -> list[Moderation]:
    return moderator.moderate(texts, encoder.embed(texts))


def with_policy(config: ModerationConfig, category: str, threshold: float, low: float, high: float) -> ModerationConfig:
    categories = dict(config.categories)
    categories[category] = CategoryPolicy(threshold=threshold, uncertain_low=low, uncertain_high=high)
    return ModerationConfig(categories=categories)


# ------------------------------------------------------------------------------------------------ flags
@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("You're a worthless idiot and everybody hates you.", "harassment"),
        ("Immigrants are vermin and should be driven out of our country.", "hate"),
        ("I want to kill myself tonight.", "self-harm"),
        ("Send me naked pictures of yourself.", "sexual"),
        ("I'm going to stab you when you walk home tonight.", "violence"),
        ("Selling cocaine and meth, message me for prices.", "illicit"),
        ("This fucking car won't start, shit.", "profanity"),
        ("Congratulations, you won a free iPhone! Click the link to claim your prize now!!!", "spam"),
    ],
)
def test_clear_positive_is_flagged_in_its_category(
    moderator: Moderator, encoder: Encoder, text: str, category: str
) -> None:
    (result,) = run(moderator, encoder, [text])
    assert result.flagged is True
    assert category in result.flagged_categories
    assert result.categories[category] >= moderator.config.categories[category].threshold


@pytest.mark.parametrize(
    "text",
    [
        "The meeting has moved to 3pm on Thursday.",
        "Simmer for ten minutes, then kill the heat and stir in the butter.",
        "I destroyed my friend at tennis this morning.",
        "Our team crushed it at the hackathon.",
        "The soldiers were killed in an ambush, the ministry said.",
        "Police say the suspect stabbed two people before being arrested.",
        "The nurse explained the side effects of the medication.",
        "How can I help my sister who has been hurting herself?",
        "Suicide prevention training is available for all teachers.",
        "Our museum tour covers the history of the civil rights movement.",
        "The ambulance arrived within minutes of the crash.",
        # Issue 9: support requests the seed-only heads flagged as spam and illicit.
        "please move $100 from my checking to saving account",
        "Someone used my card without permission, how do I block it and get a refund?",
        "What is the exchange rate for a transfer to euros?",
        "set an alarm for 6am and remind me to call the bank",
    ],
)
def test_benign_and_hard_negative_texts_are_not_flagged(moderator: Moderator, encoder: Encoder, text: str) -> None:
    (result,) = run(moderator, encoder, [text])
    assert result.flagged is False
    assert result.flagged_categories == []


def test_plain_text_far_from_every_threshold_has_full_confidence(moderator: Moderator, encoder: Encoder) -> None:
    (result,) = run(moderator, encoder, ["Can you send me the slides from this morning's planning meeting?"])
    assert result.confidence == 1.0
    assert result.uncertain_categories == []
    assert result.reasons == []


def test_every_result_scores_every_category_in_unit_interval(moderator: Moderator, encoder: Encoder) -> None:
    results = run(moderator, encoder, ["hello", "I will hurt you", "buy now!!!"])
    assert len(results) == 3
    for result in results:
        assert list(result.categories) == list(CATEGORIES)
        assert all(0.0 <= s <= 1.0 for s in result.categories.values())


def test_empty_and_emoji_only_texts_get_unflagged_results(moderator: Moderator, encoder: Encoder) -> None:
    results = run(moderator, encoder, ["", "😀🎉🔥"])
    assert [r.flagged for r in results] == [False, False]
    assert all(set(r.categories) == set(CATEGORIES) for r in results)


def test_empty_batch_gives_no_results(moderator: Moderator) -> None:
    assert moderator.moderate([], np.zeros((0, 384), dtype=np.float32)) == []


def test_texts_and_vectors_of_different_lengths_are_an_inference_error(moderator: Moderator) -> None:
    with pytest.raises(InferenceError, match="2 texts but 1 vectors"):
        moderator.moderate(["a", "b"], np.zeros((1, 384), dtype=np.float32))


# --------------------------------------------------------------------------------------- band and config
def test_score_inside_the_band_is_uncertain_with_a_readable_reason(moderator: Moderator, encoder: Encoder) -> None:
    text = "Can we move the retro to Friday afternoon?"
    score = run(moderator, encoder, [text])[0].categories["harassment"]
    config = with_policy(moderator.config, "harassment", score + 0.01, max(score - 0.05, 0.0), score + 0.2)
    (result,) = run(Moderator.load(config), encoder, [text])

    policy = config.categories["harassment"]
    assert result.uncertain_categories == ["harassment"]
    assert result.flagged is False
    assert result.confidence < 0.5
    assert result.reasons[0] == (
        f"harassment score {score:.2f} is inside the uncertain band "
        f"[{policy.uncertain_low:.2f}, {policy.uncertain_high:.2f}]"
    )


def test_thresholds_from_config_decide_the_flag(moderator: Moderator, encoder: Encoder) -> None:
    text = "You are so annoying."
    score = run(moderator, encoder, [text])[0].categories["harassment"]
    assert 0.0 < score < 1.0
    below = with_policy(moderator.config, "harassment", score / 2, score / 4, (score + 1) / 2)
    above = with_policy(moderator.config, "harassment", (score + 1) / 2, score / 2, (score + 3) / 4)

    flagged = run(Moderator.load(below), encoder, [text])[0]
    passed = run(Moderator.load(above), encoder, [text])[0]
    assert "harassment" in flagged.flagged_categories
    assert "harassment" not in passed.flagged_categories


def test_bundled_config_is_fitted_and_self_harm_leans_to_recall() -> None:
    """The bundled policy covers every category, and self-harm flags no later than the categories tuned for F1."""
    config = ModerationConfig.from_yaml()
    assert set(config.categories) == set(CATEGORIES)
    others = [config.categories[c].threshold for c in CATEGORIES if c != "self-harm"]
    assert config.categories["self-harm"].threshold <= float(np.median(others))


def test_operator_defaults_and_overrides_apply(tmp_path: Path) -> None:
    """An operator's file (MINNOW_MODERATION_FILE) sets defaults for every category and overrides one."""
    path = tmp_path / "moderation.yaml"
    path.write_text(
        "defaults: {threshold: 0.6, uncertain_low: 0.4, uncertain_high: 0.8}\n"
        "categories: {spam: {threshold: 0.9, uncertain_high: 0.95}}\n"
    )
    config = ModerationConfig.from_yaml(path)
    assert config.categories["hate"] == CategoryPolicy(threshold=0.6, uncertain_low=0.4, uncertain_high=0.8)
    assert config.categories["spam"] == CategoryPolicy(threshold=0.9, uncertain_low=0.4, uncertain_high=0.95)


def test_threshold_outside_its_band_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "moderation.yaml"
    path.write_text("defaults: {threshold: 0.7, uncertain_low: 0.2, uncertain_high: 0.6}\n")
    with pytest.raises(ConfigError, match="uncertain_low < threshold < uncertain_high"):
        ModerationConfig.from_yaml(path)


def test_unknown_category_in_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "moderation.yaml"
    path.write_text("defaults: {threshold: 0.5, uncertain_low: 0.3, uncertain_high: 0.7}\ncategories: {gossip: {}}\n")
    with pytest.raises(ConfigError, match="gossip"):
        ModerationConfig.from_yaml(path)


# ---------------------------------------------------------------------------------------- the shipped file
def test_missing_heads_file_is_a_model_error_saying_what_to_run(tmp_path: Path) -> None:
    """Without the shipped file, loading fails in one line naming the training command."""
    with pytest.raises(ModelError, match=r"run: python -m pipeline.tasks.moderation_train --data-dir"):
        ModerationHeads.load(tmp_path / "absent.npz")


def test_heads_for_other_categories_are_refused(tmp_path: Path) -> None:
    """A heads file whose categories differ from CATEGORIES is refused, not misread column by column."""
    with np.load(HEADS_FILE, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["categories"] = np.array([*CATEGORIES[:-1], "gossip"])
    path = tmp_path / "heads.npz"
    np.savez(path, **arrays)
    with pytest.raises(ModelError, match="gossip"):
        ModerationHeads.load(path)


def test_heads_survive_a_save_and_load(moderator: Moderator, tmp_path: Path) -> None:
    """Saving and loading the heads keeps their weights (the n-gram weights are stored as float16)."""
    path = tmp_path / "heads.npz"
    moderator.heads.save(path)
    again = ModerationHeads.load(path)
    np.testing.assert_array_equal(again.emb_coef, moderator.heads.emb_coef)
    np.testing.assert_allclose(again.lex_coef, moderator.heads.lex_coef, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(again.mlp_w1, moderator.heads.mlp_w1, rtol=1e-6)
    np.testing.assert_array_equal(again.mlp_on, moderator.heads.mlp_on)


def test_tweet_categories_read_the_embedding_with_an_mlp(moderator: Moderator) -> None:
    """`harassment` and `hate` (thousands of public positives) score the vector with their MLP, and the stack uses
    it; the seed-only categories keep their logistic embedding heads (no MLP weights)."""
    for k, name in enumerate(CATEGORIES):
        tweet = name in ("harassment", "hate")
        assert bool(moderator.heads.mlp_on[k]) == tweet
        assert (np.abs(moderator.heads.mlp_w1[k]).sum() > 0) == tweet
        if tweet:
            assert moderator.heads.w_emb[k] > 0.0


def test_profanity_category_is_profanity_check_alone(moderator: Moderator) -> None:
    """`profanity` is profanity-check's own score, calibrated: no embedding or n-gram weight dilutes it."""
    k = CATEGORIES.index("profanity")
    assert moderator.heads.w_emb[k] == 0.0
    assert moderator.heads.w_lex[k] == 0.0
    assert moderator.heads.w_prof[k] > 0.0


# ----------------------------------------------------------------------------------- profanity and data
def test_profanity_fast_path_matches_the_library(moderator: Moderator) -> None:
    """The worker's numpy profanity scores equal the library's own predict_prob (where [train] installed it)."""
    predict_prob = pytest.importorskip("profanity_check").predict_prob

    texts = ["you absolute shithead", "lovely weather today", "kill the heat", "", "😀"]
    np.testing.assert_allclose(moderator.profanity.probability(texts), predict_prob(texts), atol=1e-9)


def test_profanity_model_scores_swearing_high_and_greetings_low() -> None:
    probabilities = ProfanityModel.load().probability(["what the fuck", "good morning"])
    assert probabilities[0] > 0.9
    assert probabilities[1] < 0.1


def test_bad_data_line_is_a_config_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "seed.jsonl"
    path.write_text('{"text": "ok", "categories": []}\n{"text": "x", "categories": ["gossip"]}\n')
    with pytest.raises(ConfigError, match=r"seed.jsonl:2: unknown categories \['gossip'\]"):
        read_labelled(path)


def test_seed_has_enough_positives_per_category_and_benign_texts() -> None:
    texts, labels = read_labelled(SEED_FILE)
    assert labels.sum(axis=0).min() >= 40
    assert (~labels.any(axis=1)).sum() >= 200
    assert len(set(texts)) == len(texts)


def test_eval_set_is_held_out_from_the_seed() -> None:
    seed, _ = read_labelled(SEED_FILE)
    held_out, labels = read_labelled(EVAL_FILE)
    assert len(held_out) >= 150
    assert labels.sum(axis=0).min() >= 10
    assert not {t.lower() for t in held_out} & {t.lower() for t in seed}


@pytest.mark.slow
def test_held_out_flagged_f1_is_at_least_0_8(moderator: Moderator, encoder: Encoder) -> None:
    report = evaluate(moderator, encoder)
    assert report["items"] >= 150
    assert report["flagged"]["f1"] >= 0.8
    assert all(metrics["roc_auc"] >= 0.9 for metrics in report["categories"].values())
