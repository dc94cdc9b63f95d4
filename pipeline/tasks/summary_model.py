"""The shipped summary model: boosted trees that score candidate sentences, and a linear quality estimate.

Both are fitted offline by `pipeline/tasks/summary_train.py` on public dialogues (docs/summarization.md, "The
model") and shipped as one small JSON file; reading them needs numpy only (no scikit-learn at run time).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import ConfigError
from pipeline.tasks.summary_features import FEATURES

MODEL_PATH = Path(__file__).resolve().parent.parent / "data" / "summary_model.json"
Matrix = NDArray[np.float64]

# What the quality estimate reads about a document and its summary (summarize.quality_features builds them). Chosen
# by forward selection on cross-validated fitting dialogues (docs/summarization.md, "Confidence"): the summary's
# words against what the dialogue and the sentence scores say matters, and how far it reads like a retelling.
QUALITY_FEATURES = (
    "content_mass",  # the dialogue's content-word occurrences whose word the summary contains, as a share
    "pseudo_reference",  # ROUGE-1 F1 of the summary against all candidates' words weighted by their scores
    "chosen_score_sum",  # the chosen sentences' scores summed: how many oracle sentences the trees expect it holds
    "shared_words",  # share of the summary's content words that more than one speaker uses
    "pronoun_share",  # "I", "you", "we" in the summary: human summaries are written in the third person
    "first_person_share",  # "I", "we" alone: a first-person line is the furthest from a retelling
    "speakers_covered",  # share of the dialogue's speakers that have a line in the summary
    "word_frequency",  # mean log count in the dialogue of the summary's content words
    "generic_speakers",  # speaker tags such as "#Person1#" (spoken transcripts) rather than names
)
# The estimate weighs every feature twice, once for all documents and once more for documents with this feature at
# 1 (spoken transcripts): the same signal predicts differently in chats and in transcripts.
GROUP_FEATURE = "generic_speakers"


@dataclass(frozen=True)
class Trees:
    """Boosted regression trees over FEATURES, all padded to the same node count so they run side by side.

    A leaf points to itself, so walking `depth` steps from the root lands every row on its leaf.
    """

    feature: NDArray[np.intp]  # (trees, nodes)
    threshold: Matrix  # (trees, nodes): go left when x[feature] <= threshold
    left: NDArray[np.intp]
    right: NDArray[np.intp]
    value: Matrix  # leaf values (0 on inner nodes)
    depth: int
    baseline: float

    def logit(self, x: Matrix) -> NDArray[np.float64]:
        """Raw boosted score per row of `x` (n, len(FEATURES))."""
        n_trees = self.feature.shape[0]
        node = np.zeros((len(x), n_trees), dtype=np.intp)
        tree = np.arange(n_trees)[None, :]
        rows = np.arange(len(x))[:, None]
        for _ in range(self.depth):
            f = self.feature[tree, node]
            go_left = x[rows, f] <= self.threshold[tree, node]
            node = np.where(go_left, self.left[tree, node], self.right[tree, node])
        return np.asarray(self.baseline + self.value[tree, node].sum(axis=1), dtype=np.float64)

    def probability(self, x: Matrix) -> NDArray[np.float64]:
        return np.asarray(1.0 / (1.0 + np.exp(-self.logit(x))), dtype=np.float64)


@dataclass(frozen=True)
class Quality:
    """Ridge regression from QUALITY_FEATURES to the summary's expected ROUGE-1 F1 against a human summary.

    `coef` weighs `design(q)`: the standardised features, the same again times the group feature (raw, 0 or 1), and
    the group feature itself.
    """

    mean: Matrix
    scale: Matrix
    coef: Matrix
    intercept: float

    def design(self, q: Matrix) -> Matrix:
        """The regression's inputs for feature rows `q` (one row, or (n, len(QUALITY_FEATURES)))."""
        z = (q - self.mean) / self.scale
        group = q[..., QUALITY_FEATURES.index(GROUP_FEATURE), None]
        return np.concatenate([z, z * group, group], axis=-1)

    def predict(self, q: Matrix) -> float:
        return float(self.design(q) @ self.coef + self.intercept)


@dataclass(frozen=True)
class SummaryModel:
    trees: Trees
    quality: Quality
    provenance: dict[str, Any]


def trees_from_json(body: dict[str, Any]) -> Trees:
    return Trees(
        feature=np.asarray(body["feature"], dtype=np.intp),
        threshold=np.asarray(body["threshold"], dtype=np.float64),
        left=np.asarray(body["left"], dtype=np.intp),
        right=np.asarray(body["right"], dtype=np.intp),
        value=np.asarray(body["value"], dtype=np.float64),
        depth=int(body["depth"]),
        baseline=float(body["baseline"]),
    )


@lru_cache(maxsize=4)
def load_summary_model(path: Path = MODEL_PATH) -> SummaryModel:
    """Read the shipped weights once; a file written for other features is an error, not a silent mismatch."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the summary model {path}: {exc}; reinstall, or refit with summary_train"
        ) from exc
    if (
        tuple(body["features"]) != FEATURES
        or tuple(body["quality"]["features"]) != QUALITY_FEATURES
        or len(body["quality"]["coef"]) != 2 * len(QUALITY_FEATURES) + 1
    ):
        raise ConfigError(
            f"{path} was fitted on other features; refit it with `python -m pipeline.tasks.summary_train`"
        )
    q = body["quality"]
    quality = Quality(
        mean=np.asarray(q["mean"], dtype=np.float64),
        scale=np.asarray(q["scale"], dtype=np.float64),
        coef=np.asarray(q["coef"], dtype=np.float64),
        intercept=float(q["intercept"]),
    )
    return SummaryModel(trees_from_json(body["trees"]), quality, body["provenance"])
