"""The lexical channel of trained heads: hashed n-grams fitted next to the embedding and scored in numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.tasks import lexical
from pipeline.tasks.classify import Classifier
from pipeline.tasks.heads import HeadFile, LinearHead, fit_head, new_head_file
from pipeline.tasks.labels import Label, LabelSet

WORDS = ("refund", "transfer", "card")
NOISE = ("please", "help", "me", "with", "my", "the", "account", "today", "now")


def _data(n: int, seed: int) -> tuple[np.ndarray, list[str], list[str]]:
    """Texts whose label is one word among filler; vectors that are pure noise, so only the words tell."""
    rng = np.random.default_rng(seed)
    labels = [WORDS[i % len(WORDS)] for i in range(n)]
    texts = [" ".join([*rng.choice(NOISE, 4), lab, *rng.choice(NOISE, 2)]) for lab in labels]
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), texts, labels


@pytest.fixture(scope="module")
def lexical_head() -> LinearHead:
    vectors, texts, labels = _data(1000, seed=1)
    return fit_head(vectors, labels, list(WORDS), texts=texts)


def test_features_are_stable_normalised_and_have_both_channels() -> None:
    """A text's features are the same on every call (no salted hash), each channel has norm 1/sqrt(2) so the whole
    vector has norm 1, and the crc32 bucket of a known feature is pinned (a hash change needs a recipe bump)."""
    feats = lexical.text_features("Top up my card, top up!")
    assert feats == lexical.text_features("Top up my card, top up!")
    offset = 1 << lexical.HASH_BITS
    words = np.asarray([v for b, v in feats.items() if b < offset])
    chars = np.asarray([v for b, v in feats.items() if b >= offset])
    assert len(words) and len(chars)
    assert np.linalg.norm(words) == pytest.approx(2**-0.5)
    assert np.linalg.norm(chars) == pytest.approx(2**-0.5)
    assert lexical._bucket("wtop up") in feats
    assert lexical._bucket("wtop up") == 99427
    assert lexical.text_features("") == {}


def test_run_time_scores_equal_the_dense_product() -> None:
    """`scores` (gather + add in numpy) equals the dense features-times-weights product; unknown buckets weigh 0."""
    texts = ["block my card", "card refund please", "zzz qqq"]
    feats = lexical.batch_features(texts)
    kept = np.unique(lexical.batch_features(texts[:2]).buckets)
    weights = np.random.default_rng(0).normal(size=(len(kept), 3))
    dense = np.zeros((3, len(kept)))
    for r, b, v in zip(feats.rows, feats.buckets, feats.values, strict=True):
        if b in kept:
            dense[r, np.searchsorted(kept, b)] += v
    np.testing.assert_allclose(lexical.scores(feats, kept, weights), dense @ weights)
    assert not lexical.scores(feats, kept, weights)[2].any()


def test_the_lexical_channel_is_chosen_and_used_when_only_the_words_tell(lexical_head: LinearHead) -> None:
    """With noise vectors, the head picks the n-gram candidate, classifies new texts right, and its answer follows
    the words: the same vectors with other texts get other labels (this fails if the channel is ignored)."""
    assert lexical_head.lexical is not None
    assert lexical_head.metrics["lexical"] == 1.0
    vectors, texts, labels = _data(300, seed=2)
    probs = lexical_head.predict_proba(vectors, texts)
    assert (np.asarray(WORDS)[probs.argmax(axis=1)] == np.asarray(labels)).mean() > 0.95
    shifted = [t.replace("refund", "tmp").replace("card", "refund").replace("tmp", "card") for t in texts]
    moved = lexical_head.predict_proba(vectors, shifted).argmax(axis=1) != probs.argmax(axis=1)
    assert moved.mean() > 0.5
    with pytest.raises(ValueError, match="lexical"):
        lexical_head.predict_proba(vectors)


def test_without_texts_the_head_is_embedding_only_and_near_chance(lexical_head: LinearHead) -> None:
    """The baseline the channel is measured against: the same data without texts fits no channel, and noise vectors
    alone classify new items near chance (1/3)."""
    vectors, _, labels = _data(1000, seed=1)
    head = fit_head(vectors, labels, list(WORDS))
    assert head.lexical is None and head.metrics["lexical"] == 0.0
    new, _, truth = _data(300, seed=2)
    accuracy = (np.asarray(WORDS)[head.predict_proba(new).argmax(axis=1)] == np.asarray(truth)).mean()
    assert accuracy < 0.5


def test_a_small_holdout_keeps_the_embedding_head() -> None:
    """Under MIN_HOLDOUT_TO_CHOOSE held-out items no candidate is compared: the embedding head with C=4, as before."""
    vectors, texts, labels = _data(60, seed=3)
    head = fit_head(vectors, labels, list(WORDS), texts=texts)
    assert head.lexical is None and head.metrics["regularization_c"] == 4.0


def test_two_labels_with_the_channel_score_like_a_sigmoid() -> None:
    """Two labels: sklearn's one weight row is split in two for the embedding and the n-grams alike."""
    vectors, texts, labels = _data(1500, seed=4)
    keep = [i for i, lab in enumerate(labels) if lab != "card"]
    head = fit_head(vectors[keep], [labels[i] for i in keep], ["refund", "transfer"], texts=[texts[i] for i in keep])
    assert head.lexical is not None
    probs = head.predict_proba(vectors[keep][:50], [texts[i] for i in keep][:50])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert (
        np.asarray(["refund", "transfer"])[probs.argmax(axis=1)] == np.asarray([labels[i] for i in keep][:50])
    ).all()


def test_head_file_round_trips_and_the_classifier_passes_texts(lexical_head: LinearHead, tmp_path: Path) -> None:
    """Saved and loaded, a lexical head scores the same; the Classifier hands the texts to it."""
    path = tmp_path / "heads.json"
    new_head_file({"tickets": lexical_head}, {}, "m+1").save(path)
    loaded = HeadFile.load(path, "m+1")
    assert json.loads(path.read_text())["format"] == "minnow-heads-2"
    vectors, texts, _ = _data(20, seed=5)
    np.testing.assert_allclose(
        loaded.heads["tickets"].predict_proba(vectors, texts), lexical_head.predict_proba(vectors, texts), atol=1e-6
    )
    label_set = LabelSet(name="tickets", labels=[Label(name=w, description=w) for w in WORDS])
    clf = Classifier({"tickets": label_set}, {}, loaded)
    results = clf.classify("tickets", vectors, texts)
    assert [c.label for c in results] == [WORDS[i] for i in lexical_head.predict_proba(vectors, texts).argmax(axis=1)]


def test_format_1_files_still_load_and_another_recipe_is_refused(lexical_head: LinearHead, tmp_path: Path) -> None:
    """A head file from before (format 1, no channel) loads and scores vectors alone; a head whose n-grams were
    computed by another recipe is refused with a ConfigError saying to retrain."""
    old = new_head_file({"tickets": lexical_head.model_copy(update={"lexical": None})}, {}, "m+1")
    raw = json.loads(old.model_dump_json())
    raw["format"] = "minnow-heads-1"
    del raw["heads"]["tickets"]["lexical"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(raw))
    loaded = HeadFile.load(path)
    vectors, _, _ = _data(5, seed=6)
    assert loaded.heads["tickets"].predict_proba(vectors).shape == (5, 3)
    assert lexical_head.lexical is not None
    other = lexical_head.model_copy(update={"lexical": lexical_head.lexical.model_copy(update={"recipe": "x-0"})})
    new_head_file({"tickets": other}, {}, "m+1").save(path)
    with pytest.raises(ConfigError, match="retrain"):
        HeadFile.load(path)
