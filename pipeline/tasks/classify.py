"""Classify event embeddings: zero-shot from label descriptions, or a trained logistic head; calibrated either way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.engine.encoder import Encoder
from pipeline.models import Classification
from pipeline.tasks.calibration import softmax
from pipeline.tasks.heads import HeadFile, LinearHead
from pipeline.tasks.labels import LabelSet

# Zero-shot logits are cosine similarities, which differ by a few hundredths between labels; this default
# temperature spreads them into probabilities. `minnow train` fits 0.038 on pipeline/data/eval/news_topics_train.jsonl;
# a label set of your own deserves its own fit (docs/classification.md).
DEFAULT_ZERO_SHOT_TEMPERATURE = 0.04
DESCRIPTION_WEIGHT = 0.5  # the rest goes to the mean of the label's examples, when it has any


@dataclass(frozen=True)
class Prototypes:
    """One unit vector per label, in label-set order."""

    label_set: LabelSet
    matrix: NDArray[np.float32]  # (labels, dim)

    @classmethod
    def build(cls, label_set: LabelSet, encoder: Encoder) -> Prototypes:
        descriptions = encoder.embed(
            [f"{label.name.replace('_', ' ')}: {label.description}" for label in label_set.labels]
        )
        rows = []
        for label, desc in zip(label_set.labels, descriptions, strict=True):
            proto = desc
            if label.examples:
                examples = encoder.embed(label.examples).mean(axis=0)
                examples /= max(float(np.linalg.norm(examples)), 1e-12)
                proto = DESCRIPTION_WEIGHT * desc + (1 - DESCRIPTION_WEIGHT) * examples
            rows.append(proto / max(float(np.linalg.norm(proto)), 1e-12))
        return cls(label_set, np.stack(rows).astype(np.float32))

    def logits(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        out: NDArray[np.float32] = vectors @ self.matrix.T
        return out


class Classifier:
    """Classifies vectors per family with a trained head when one exists, else zero-shot."""

    def __init__(
        self,
        label_sets: dict[str, LabelSet],
        prototypes: dict[str, Prototypes],
        heads: HeadFile | None = None,
        *,
        min_confidence: float = 0.55,
    ) -> None:
        self.label_sets = label_sets
        self.prototypes = prototypes
        self.heads = heads or HeadFile(heads={}, zero_shot_temperature={})
        self.min_confidence = min_confidence
        for family, head in self.heads.heads.items():
            if family in label_sets and set(head.labels) != set(label_sets[family].names):
                # A head trained on other labels would silently answer with labels the config no longer has.
                from pipeline.errors import ConfigError

                raise ConfigError(
                    f"trained head for '{family}' has labels {sorted(head.labels)} but the label set has "
                    f"{sorted(label_sets[family].names)}; retrain with `minnow train`"
                )

    @classmethod
    def build(
        cls,
        label_sets: dict[str, LabelSet],
        encoder: Encoder,
        heads: HeadFile | None = None,
        *,
        min_confidence: float = 0.55,
    ) -> Classifier:
        prototypes = {family: Prototypes.build(ls, encoder) for family, ls in label_sets.items()}
        return cls(label_sets, prototypes, heads, min_confidence=min_confidence)

    def families(self) -> list[str]:
        return list(self.label_sets)

    def probabilities(self, family: str, vectors: NDArray[np.float32]) -> tuple[list[str], NDArray[np.float64], str]:
        """Calibrated probabilities over the family's labels, the label order, and the method used."""
        head = self.heads.heads.get(family)
        if head is not None:
            return head.labels, head.predict_proba(vectors), "trained-head"
        protos = self.prototypes[family]
        temperature = self.heads.zero_shot_temperature.get(family, DEFAULT_ZERO_SHOT_TEMPERATURE)
        return protos.label_set.names, softmax(protos.logits(vectors), temperature), "zero-shot"

    def classify(self, family: str, vectors: NDArray[np.float32]) -> list[Classification]:
        if len(vectors) == 0:
            return []
        labels, probs, method = self.probabilities(family, vectors)
        return [self._one(family, labels, row, method) for row in probs]

    def _one(self, family: str, labels: Sequence[str], probs: NDArray[np.float64], method: str) -> Classification:
        order = np.argsort(-probs)
        top, second = int(order[0]), int(order[1]) if len(order) > 1 else int(order[0])
        confidence = float(probs[top])
        reasons: list[str] = []
        if confidence < self.min_confidence:
            reasons.append(
                f"top label '{labels[top]}' has confidence {confidence:.2f} < {self.min_confidence:.2f}; "
                f"runner-up '{labels[second]}' at {float(probs[second]):.2f}"
            )
        return Classification(
            label=labels[top],
            confidence=round(confidence, 6),
            scores={name: round(float(p), 6) for name, p in zip(labels, probs, strict=True)},
            label_set=family,
            method="trained-head" if method == "trained-head" else "zero-shot",
            reasons=reasons,
        )


__all__ = ["Classifier", "LinearHead", "Prototypes"]
