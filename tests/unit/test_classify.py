"""Zero-shot and trained-head classification, with calibrated probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from pipeline.engine import Encoder
from pipeline.errors import ConfigError
from pipeline.models import Classification
from pipeline.settings import Settings
from pipeline.tasks.calibration import expected_calibration_error, fit_temperature, softmax
from pipeline.tasks.classify import Classifier, ClassifyTask, Prototypes
from pipeline.tasks.heads import OUT_OF_SCOPE_RATE, HeadFile, fit_head, fit_out_of_scope_threshold, new_head_file
from pipeline.tasks.labels import Label, LabelSet, load_label_sets

ANIMALS = LabelSet(
    name="pets",
    labels=[
        Label(name="cat", description="cats, kittens, meowing, purring felines"),
        Label(name="dog", description="dogs, puppies, barking, walking the dog on a leash"),
        Label(name="fish", description="fish, aquariums, goldfish swimming in a tank"),
    ],
)
TRAIN = {
    "cat": [
        "my kitten purrs all night",
        "the cat knocked the glass off the table",
        "she adopted two tabby cats",
        "the feline hissed at the vet",
        "a cat sleeping in the sun",
        "kittens chasing a toy mouse",
    ],
    "dog": [
        "the puppy chewed my shoes",
        "walking the dog in the park",
        "our labrador barks at the mailman",
        "he trained his dog to fetch",
        "a dog wagging its tail",
        "the hound howled at night",
    ],
    "fish": [
        "the goldfish swims in circles",
        "cleaning the aquarium filter",
        "tropical fish need warm water",
        "he fed the fish flakes",
        "a koi pond in the garden",
        "the betta fish built a bubble nest",
    ],
}


def test_zero_shot_picks_the_described_label(encoder: Encoder) -> None:
    clf = Classifier.build({"pets": ANIMALS}, encoder)
    out = clf.classify("pets", encoder.embed(["my puppy barked at the neighbours", "the aquarium needs new water"]))
    assert [c.label for c in out] == ["dog", "fish"]
    for c in out:
        assert c.method == "zero-shot"
        assert sum(c.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert c.confidence == max(c.scores.values())


def test_low_confidence_carries_a_reason(encoder: Encoder) -> None:
    clf = Classifier.build({"pets": ANIMALS}, encoder, min_confidence=0.99)
    (c,) = clf.classify("pets", encoder.embed(["the weather was nice today"]))
    assert c.confidence < 0.99 and "runner-up" in c.reasons[0]


def test_trained_head_fits_calibrates_and_round_trips(encoder: Encoder, tmp_path: Path) -> None:
    texts = [t for v in TRAIN.values() for t in v]
    labels = [k for k, v in TRAIN.items() for _ in v]
    head = fit_head(encoder.embed(texts), labels, ANIMALS.names, holdout=0.34)
    assert head.temperature > 0 and head.examples == 18
    path = tmp_path / "heads.json"
    new_head_file({"pets": head}, {}, encoder.files.version).save(path)
    loaded = HeadFile.load(path, encoder.files.version)
    clf = Classifier.build({"pets": ANIMALS}, encoder, loaded)
    (c,) = clf.classify("pets", encoder.embed(["a kitten curled up on the sofa"]))
    assert c.label == "cat" and c.method == "trained-head"


def test_head_for_another_label_set_is_refused(encoder: Encoder) -> None:
    head = fit_head(
        encoder.embed([t for v in TRAIN.values() for t in v]),
        [k for k, v in TRAIN.items() for _ in v],
        ANIMALS.names,
    )
    other = LabelSet(name="pets", labels=[Label(name="cat", description="c"), Label(name="bird", description="b")])
    with pytest.raises(ConfigError, match="retrain"):
        Classifier.build({"pets": other}, encoder, new_head_file({"pets": head}, {}, "v"))


def test_fit_temperature_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 4)) * 3
    true_t = 2.5
    y = np.asarray([rng.choice(4, p=p) for p in softmax(logits, true_t)])
    assert fit_temperature(logits, y) == pytest.approx(true_t, rel=0.15)
    assert expected_calibration_error(softmax(logits, true_t), y) < expected_calibration_error(softmax(logits, 0.5), y)


def _unit(v: NDArray[np.float32]) -> NDArray[np.float32]:
    out: NDArray[np.float32] = v / np.linalg.norm(v, axis=-1, keepdims=True)
    return out


def test_a_label_without_paraphrases_keeps_the_name_description_prototype(encoder: Encoder) -> None:
    """Without paraphrases or examples a prototype is the embedding of "name: description", as before paraphrases."""
    texts = [f"{label.name}: {label.description}" for label in ANIMALS.labels]
    np.testing.assert_allclose(Prototypes.build(ANIMALS, encoder).matrix, _unit(encoder.embed(texts)), atol=1e-6)


def test_paraphrases_are_averaged_into_the_description_vector(encoder: Encoder) -> None:
    """Each paraphrase is embedded on its own, without the name, and averaged with "name: description"; the
    examples' mean is then mixed in 50/50."""
    pets = LabelSet(
        name="pets",
        labels=[
            Label(name="cat", description="cats", paraphrases=["kittens purring", "a feline"], examples=["my cat"]),
            Label(name="dog", description="dogs", paraphrases=["puppies barking"]),
        ],
    )
    flat = encoder.embed(["cat: cats", "kittens purring", "a feline", "dog: dogs", "puppies barking"])
    cat = _unit(0.5 * _unit(flat[:3].mean(axis=0)) + 0.5 * _unit(encoder.embed(["my cat"])[0]))
    dog = _unit(flat[3:].mean(axis=0))
    np.testing.assert_allclose(Prototypes.build(pets, encoder).matrix, np.stack([cat, dog]), atol=1e-6)


def test_label_file_reads_paraphrases_and_refuses_blank_ones(tmp_path: Path) -> None:
    """`paraphrases` is an optional list of texts; a blank entry is a configuration error naming the set."""
    good = tmp_path / "labels.yaml"
    good.write_text(
        "label_sets:\n  feed:\n    labels:\n      - {name: a, description: x, paraphrases: [y, z]}\n"
        "      - {name: b, description: w}\n"
    )
    labels = load_label_sets(good)["feed"].labels
    assert [label.paraphrases for label in labels] == [["y", "z"], []]
    good.write_text(good.read_text().replace("[y, z]", "[y, '  ']"))
    with pytest.raises(ConfigError, match=r"(?s)label set .feed.*paraphrases must not be blank"):
        load_label_sets(good)


def test_label_file_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "labels.yaml"
    bad.write_text(
        "label_sets:\n  feed:\n    labels:\n      - {name: a, description: x}\n      - {name: a, description: y}\n"
    )
    with pytest.raises(ConfigError, match="duplicate label names: a"):
        load_label_sets(bad)
    bad.write_text("just: text")
    with pytest.raises(ConfigError, match="label_sets"):
        load_label_sets(bad)


def test_out_of_scope_requests_escalate_with_their_own_reason(encoder: Encoder) -> None:
    """A trained head stores centroids and an out-of-scope threshold; a request about none of its labels is past the
    threshold and the task gives `classify.out_of_scope`, while an in-scope request does not."""
    texts = [t for v in TRAIN.values() for t in v]
    labels = [k for k, v in TRAIN.items() for _ in v]
    vectors = encoder.embed(texts)
    fitted = fit_head(vectors, labels, ANIMALS.names, holdout=0.34)
    assert len(fitted.centroids) == 3
    assert fitted.out_of_scope_threshold is None  # 6 held-out items cannot place a 3% conformal quantile
    # Threshold here: farther than every training example (enough data fits it: test_fit_out_of_scope_threshold_...).
    train_distances = fitted.out_of_scope(vectors)
    assert train_distances is not None
    head = fitted.model_copy(update={"out_of_scope_threshold": float(train_distances.max())})
    assert head.out_of_scope_threshold is not None
    heads = new_head_file({"pets": head}, {}, encoder.files.version)
    clf = Classifier.build({"pets": ANIMALS}, encoder, heads, min_confidence=0.0)
    far, near = clf.classify("pets", encoder.embed(["transfer money to my savings account", "my cat purrs loudly"]))
    assert far.out_of_scope is not None and near.out_of_scope is not None
    assert far.out_of_scope > head.out_of_scope_threshold > near.out_of_scope
    task = ClassifyTask(Settings(), clf, out_of_scope={"pets": head.out_of_scope_threshold})
    assert task.reasons(far) == ["classify.out_of_scope"]
    assert task.reasons(near) == []


def test_fitted_thresholds_win_over_the_setting_for_their_families() -> None:
    """Precedence: a family in the thresholds file escalates below its fitted threshold; others below the setting."""
    task = ClassifyTask(Settings(), thresholds={"pets": 0.9})
    pets = Classification(label="cat", confidence=0.8, scores={"cat": 0.8}, label_set="pets", method="trained-head")
    feed = pets.model_copy(update={"label_set": "feed"})
    assert task.reasons(pets) == ["classify.low_confidence"]  # 0.8 < fitted 0.9
    assert task.reasons(feed) == []  # 0.8 >= the default 0.55


def test_calibration_scores_count_out_of_scope_rows_as_wrong_and_forced(encoder: Encoder) -> None:
    """`minnow calibrate` scores rows as the router sees them: an `oos` row is never correct, and one the head finds
    out of scope is forced to escalate whatever the threshold; a label outside the set is a ConfigError."""
    from pipeline.commands.calibrate import score_family
    from pipeline.training import LabeledRow

    texts = [t for v in TRAIN.values() for t in v]
    labels = [k for k, v in TRAIN.items() for _ in v]
    vectors = encoder.embed(texts)
    head = fit_head(vectors, labels, ANIMALS.names, holdout=0.34)
    train_distances = head.out_of_scope(vectors)
    assert train_distances is not None
    head = head.model_copy(update={"out_of_scope_threshold": float(train_distances.max())})
    clf = Classifier.build({"pets": ANIMALS}, encoder, new_head_file({"pets": head}, {}, encoder.files.version))
    rows = [
        LabeledRow(family="pets", text="my kitten sleeps on the radiator", label="cat"),
        LabeledRow(family="pets", text="what is the interest rate on my mortgage", label="oos"),
    ]
    scored = score_family(clf, "pets", rows, encoder.embed)
    assert scored.method == "trained-head"
    assert scored.correct.tolist() == [True, False]
    assert scored.forced.tolist() == [False, True]
    with pytest.raises(ConfigError, match="not in the 'pets' label set"):
        score_family(clf, "pets", [LabeledRow(family="pets", text="a parrot", label="bird")], encoder.embed)


def test_fit_out_of_scope_threshold_is_a_conformal_quantile() -> None:
    """Over 300 draws of 200 held-out in-scope distances, a new in-scope item lies above the threshold in at most
    3% of cases on average (plus sampling slack); with out-of-scope examples the smallest share reaching 90% of
    them is taken; too few held-out items give no threshold."""
    rng = np.random.default_rng(8)
    exceed = []
    for _ in range(300):
        t, _ = fit_out_of_scope_threshold(rng.uniform(0, 1, 200), None)
        assert t is not None
        exceed.append(float(rng.uniform(0, 1) > t))
    assert np.mean(exceed) <= OUT_OF_SCOPE_RATE + 3 * np.sqrt(OUT_OF_SCOPE_RATE / 300)
    in_scope = rng.uniform(0, 1, 1000)
    threshold, metrics = fit_out_of_scope_threshold(in_scope, rng.uniform(0.97, 1.2, 100))
    assert threshold is not None and metrics["oos_train_escalated"] >= 0.9
    assert 0.95 < threshold < 0.985  # share 1% or 2%, not the default 3% (threshold ~0.97)
    assert fit_out_of_scope_threshold(rng.uniform(0, 1, 20), None) == (None, {})
