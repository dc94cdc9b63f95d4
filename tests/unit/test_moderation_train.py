"""Moderation training logic on small data: public labels mapped to categories, deterministic disjoint splits, the
fitted threshold and band, and the written policy file read back as a config."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.tasks.moderate import CATEGORIES, ModerationConfig
from pipeline.tasks.moderation_heads import mlp_logit
from pipeline.tasks.moderation_public import NEG, POS, UNKNOWN, bucket, public_parts
from pipeline.tasks.moderation_train import best_band, best_threshold, fit_mlp, fit_nb_svm, write_policy


def _column(name: str) -> int:
    return CATEGORIES.index(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A miniature shared data folder in the real files' formats (texts written here, not copied)."""
    (tmp_path / "moderation").mkdir()
    (tmp_path / "intents").mkdir()
    (tmp_path / "news").mkdir()
    for task in ("offensive", "hate"):
        for split, n in (("train", 60), ("val", 10)):
            texts = [f"{task} {split} tweet number {i}" for i in range(n)]
            (tmp_path / "moderation" / f"tweeteval_{task}_{split}_text.txt").write_text("\n".join(texts) + "\n")
            labels = [str(i % 2) for i in range(n)]
            (tmp_path / "moderation" / f"tweeteval_{task}_{split}_labels.txt").write_text("\n".join(labels) + "\n")
    with (tmp_path / "moderation" / "davidson_labeled_data.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", "count", "hate_speech", "offensive_language", "neither", "class", "tweet"])
        for i in range(30):
            writer.writerow([i, 3, 0, 0, 3, i % 3, f"davidson tweet\nwith a newline {i}"])
    with (tmp_path / "intents" / "banking77_train.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "category"])
        writer.writerows([[f"where is my card {i}", "card_arrival"] for i in range(40)])
    with (tmp_path / "news" / "bbc_news_train.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ArticleId", "Text", "Category"])
        writer.writerows([[i, f"markets rose today {i}", "business"] for i in range(20)])
    clinc = {
        "train": [[f"play some music {i}", "play_music"] for i in range(40)],
        "val": [[f"what time is it {i}", "time"] for i in range(5)],
        "oos_train": [["how tall is a giraffe", "oos"]],
        "oos_val": [["who painted the ceiling", "oos"]],
    }
    (tmp_path / "intents" / "clinc150_train_val.json").write_text(json.dumps(clinc))
    return tmp_path


def test_public_labels_map_onto_categories(data_dir: Path) -> None:
    """OffensEval offensive is harassment (finer categories unknown), not-offensive is negative for all, HatEval
    hate is hate, benign sets are negative for every category."""
    parts = {(p.name, p.split): p for p in public_parts(data_dir)}
    offensive = parts[("tweeteval_offensive_val", "test")]
    off_row, not_row = offensive.labels[1], offensive.labels[0]
    assert off_row[_column("harassment")] == POS
    assert off_row[_column("hate")] == UNKNOWN
    assert (not_row == NEG).all()
    hate = parts[("tweeteval_hate_val", "test")].labels[1]
    assert hate[_column("hate")] == POS
    assert hate[_column("spam")] == NEG
    for (name, _), part in parts.items():
        if name.startswith(("banking77", "bbc_news", "clinc150")):
            assert part.benign and (part.labels == NEG).all()


def test_splits_are_disjoint_deterministic_and_keep_davidson_newlines(data_dir: Path) -> None:
    """A text lands in one split only, the same one on every run; CSV newlines stay inside their text."""
    first, second = public_parts(data_dir), public_parts(data_dir)
    assert [(p.name, p.split, p.texts) for p in first] == [(p.name, p.split, p.texts) for p in second]
    seen: dict[str, str] = {}
    for part in first:
        for text in part.texts:
            assert seen.setdefault(f"{part.name.removesuffix('_val')}|{text}", part.split) == part.split
    davidson = [t for p in first if p.name == "davidson" for t in p.texts]
    assert davidson and all("\n" in t for t in davidson)
    assert 0 <= bucket("anything") < 100


def test_missing_data_file_is_a_config_error_naming_the_option(tmp_path: Path) -> None:
    """Pointing at a folder without the data fails in one line that says to pass --data-dir."""
    with pytest.raises(ConfigError, match="--data-dir"):
        public_parts(tmp_path)


def test_best_threshold_separates_a_separable_set() -> None:
    """On perfectly separated scores the F1-best threshold is the lowest positive score."""
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    truth = np.array([False, False, False, True, True, True])
    assert best_threshold(scores, truth) == pytest.approx(0.6)


def test_recall_leaning_beta_never_raises_the_threshold() -> None:
    """F2 (self-harm's policy) picks a threshold at or below F1's on the same scores."""
    rng = np.random.default_rng(0)
    truth = rng.random(400) < 0.3
    scores = np.clip(rng.normal(np.where(truth, 0.6, 0.4), 0.15), 0, 1)
    assert best_threshold(scores, truth, beta=2.0) <= best_threshold(scores, truth, beta=1.0)


def test_band_surrounds_the_threshold_within_budget_and_catches_mistakes() -> None:
    """The band holds at most its budget of rows, straddles the threshold, and holds the mistakes next to it."""
    rng = np.random.default_rng(1)
    truth = rng.random(1000) < 0.3
    scores = np.clip(rng.normal(np.where(truth, 0.7, 0.3), 0.15), 0, 1)
    threshold = best_threshold(scores, truth)
    low, high = best_band(scores, truth, threshold, budget=0.1)
    inside = (scores >= low) & (scores <= high)
    assert low <= threshold <= high
    assert inside.sum() <= 0.1 * len(scores) + 2  # ties at the edges may add a row
    mistakes = (truth & (scores < threshold)) | (~truth & (scores >= threshold))
    assert mistakes[inside].mean() > mistakes.mean() * 2  # the band is where the mistakes concentrate


def test_written_policy_reads_back_as_the_config(tmp_path: Path) -> None:
    """The training command's moderation.yaml is a valid ModerationConfig with the fitted values."""
    policy = {c: {"threshold": 0.5, "uncertain_low": 0.3, "uncertain_high": 0.7} for c in CATEGORIES}
    policy["self-harm"] = {"threshold": 0.25, "uncertain_low": 0.1, "uncertain_high": 0.4}
    path = tmp_path / "moderation.yaml"
    write_policy(policy, path)
    config = ModerationConfig.from_yaml(path)
    assert config.categories["self-harm"].threshold == 0.25
    assert config.categories["spam"].uncertain_high == 0.7


def _separable(seed: int, n: int = 300, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    x = rng.normal(size=(n, dim))
    x[:, 0] += np.where(y, 2.0, -2.0) * (x[:, 1] > 0)  # a signal a linear read of x only half sees
    return x, y


def test_mlp_numpy_forward_pass_is_scikit_learns() -> None:
    """The run-time MLP (moderation_heads.mlp_logit over fit_mlp's weights) gives the probabilities scikit-learn's
    fitted MLPClassifier gives, so what was trained is what is shipped."""
    from sklearn.neural_network import MLPClassifier

    from pipeline.tasks import moderation_train as t

    x, y = _separable(0)
    w1, b1, w2, b2 = fit_mlp(x, y)
    reference = MLPClassifier(
        hidden_layer_sizes=(t.MLP_HIDDEN,), alpha=t.MLP_ALPHA, early_stopping=True, random_state=t.SEED, max_iter=300
    ).fit(x, y)
    probability = 1.0 / (1.0 + np.exp(-mlp_logit(x, w1, b1, w2, b2)))
    np.testing.assert_allclose(probability, reference.predict_proba(x)[:, 1], atol=1e-9)
    assert w1.shape == (x.shape[1], t.MLP_HIDDEN) and w2.shape == (t.MLP_HIDDEN,)


def test_nb_svm_is_linear_in_the_ngrams_and_weights_the_telling_ones() -> None:
    """NB-SVM's log-count-ratio scaling folds into plain coefficients: the n-gram that only positives have gets
    the largest weight, one every text has gets little, and the scores separate the classes."""
    from scipy.sparse import csr_matrix
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.random(400) < 0.4
    dense = (rng.random((400, 50)) < 0.1).astype(float)
    dense[:, 0] = y  # only positives
    dense[:, 1] = 1.0  # everyone
    x = csr_matrix(dense)
    coef, bias = fit_nb_svm(x, y)
    assert coef.shape == (50,)
    assert int(np.argmax(coef)) == 0
    assert abs(coef[1]) < 0.1 * coef[0]
    assert roc_auc_score(y, x @ coef + bias) > 0.99
