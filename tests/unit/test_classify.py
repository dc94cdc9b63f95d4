"""Zero-shot and trained-head classification, with calibrated probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from pipeline.engine import Encoder
from pipeline.errors import ConfigError
from pipeline.tasks.calibration import expected_calibration_error, fit_temperature, softmax
from pipeline.tasks.classify import Classifier, Prototypes
from pipeline.tasks.heads import HeadFile, fit_head, new_head_file
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
