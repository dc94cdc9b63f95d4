"""Classify event embeddings: zero-shot from label descriptions, or a trained logistic head; calibrated either way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from pipeline.engine.encoder import Encoder
from pipeline.errors import AnswerError, ConfigError
from pipeline.models import Classification
from pipeline.settings import Settings
from pipeline.tasks.base import Answer, Asked, Batch, RestoreText, read_section, strict_object
from pipeline.tasks.calibration import softmax
from pipeline.tasks.heads import HeadFile, LinearHead
from pipeline.tasks.labels import LabelSet, load_label_sets
from pipeline.tasks.risk import ThresholdsFile

__all__ = ["Classifier", "ClassifyTask", "LinearHead", "Prototypes", "fitted_thresholds"]

# Zero-shot logits are cosine similarities, which differ by a few hundredths between labels; this default
# temperature spreads them into probabilities. `minnow train` fits 0.031 (int8) on the clean, project-written
# pipeline/data/eval/news_topics_train.jsonl and 0.046 on the BBC news proxy's tuning half
# (scripts/zero_shot_news_eval.py); a label set of your own deserves its own fit (docs/classification.md).
DEFAULT_ZERO_SHOT_TEMPERATURE = 0.04
DESCRIPTION_WEIGHT = 0.5  # the rest goes to the mean of the label's examples, when it has any


@dataclass(frozen=True)
class Prototypes:
    """One unit vector per label, in label-set order.

    A label's description vector is the normalised mean embedding of "name: description" and of each paraphrase,
    each embedded on its own (prompt ensembling); it is mixed DESCRIPTION_WEIGHT / rest with the normalised mean
    embedding of the examples. Paraphrases are embedded without the name: the name's own sense ("world" in "world
    record") then weighs less in a broad label (docs/labels.md).
    """

    label_set: LabelSet
    matrix: NDArray[np.float32]  # (labels, dim)

    @classmethod
    def build(cls, label_set: LabelSet, encoder: Encoder) -> Prototypes:
        texts = [
            [f"{label.name.replace('_', ' ')}: {label.description}", *label.paraphrases] for label in label_set.labels
        ]
        flat = encoder.embed([t for group in texts for t in group])
        starts = np.cumsum([0] + [len(group) for group in texts])
        rows = []
        for i, label in enumerate(label_set.labels):
            proto = _unit(flat[starts[i] : starts[i + 1]].mean(axis=0))
            if label.examples:
                examples = _unit(encoder.embed(label.examples).mean(axis=0))
                proto = DESCRIPTION_WEIGHT * proto + (1 - DESCRIPTION_WEIGHT) * examples
            rows.append(_unit(proto))
        return cls(label_set, np.stack(rows).astype(np.float32))

    def logits(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        out: NDArray[np.float32] = vectors @ self.matrix.T
        return out


def _unit(vector: NDArray[np.float32]) -> NDArray[np.float32]:
    out: NDArray[np.float32] = vector / max(float(np.linalg.norm(vector)), 1e-12)
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
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        self.label_sets = label_sets
        self.prototypes = prototypes
        self.heads = heads or HeadFile(heads={}, zero_shot_temperature={})
        self.min_confidence = min_confidence
        self.thresholds = dict(thresholds or {})  # per family, from a thresholds file: they win
        for family, head in self.heads.heads.items():
            if family in label_sets and set(head.labels) != set(label_sets[family].names):
                # A head trained on other labels would silently answer with labels the config no longer has.
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
        thresholds: Mapping[str, float] | None = None,
    ) -> Classifier:
        prototypes = {family: Prototypes.build(ls, encoder) for family, ls in label_sets.items()}
        return cls(label_sets, prototypes, heads, min_confidence=min_confidence, thresholds=thresholds)

    def threshold(self, family: str) -> float:
        """The confidence below which the family's items escalate: its fitted threshold, else the setting."""
        return self.thresholds.get(family, self.min_confidence)

    def families(self) -> list[str]:
        return list(self.label_sets)

    def probabilities(
        self, family: str, vectors: NDArray[np.float32], texts: Sequence[str] | None = None
    ) -> tuple[list[str], NDArray[np.float64], str]:
        """Calibrated probabilities over the family's labels, the label order, and the method used. `texts`: the
        embedded texts, aligned; a head with a lexical channel needs them (zero-shot ignores them)."""
        head = self.heads.heads.get(family)
        if head is not None:
            return head.labels, head.predict_proba(vectors, texts), "trained-head"
        protos = self.prototypes[family]
        temperature = self.heads.zero_shot_temperature.get(family, DEFAULT_ZERO_SHOT_TEMPERATURE)
        return protos.label_set.names, softmax(protos.logits(vectors), temperature), "zero-shot"

    def out_of_scope(self, family: str, vectors: NDArray[np.float32]) -> NDArray[np.float64] | None:
        """The trained head's out-of-scope distances (None: zero-shot or a head without them)."""
        head = self.heads.heads.get(family)
        return head.out_of_scope(vectors) if head is not None else None

    def classify(
        self, family: str, vectors: NDArray[np.float32], texts: Sequence[str] | None = None
    ) -> list[Classification]:
        if len(vectors) == 0:
            return []
        labels, probs, method = self.probabilities(family, vectors, texts)
        oos = self.out_of_scope(family, vectors)
        return [
            self._one(family, labels, row, method, None if oos is None else float(oos[i]))
            for i, row in enumerate(probs)
        ]

    def _one(
        self, family: str, labels: Sequence[str], probs: NDArray[np.float64], method: str, oos: float | None
    ) -> Classification:
        order = np.argsort(-probs)
        top, second = int(order[0]), int(order[1]) if len(order) > 1 else int(order[0])
        confidence = float(probs[top])
        threshold = self.threshold(family)
        reasons: list[str] = []
        if confidence < threshold:
            reasons.append(
                f"top label '{labels[top]}' has confidence {confidence:.2f} < {threshold:.2f}; "
                f"runner-up '{labels[second]}' at {float(probs[second]):.2f}"
            )
        oos_threshold = self.heads.out_of_scope_threshold(family)
        if oos is not None and oos_threshold is not None and oos > oos_threshold:
            reasons.append(f"out of scope: distance {oos:.3f} to the nearest label > {oos_threshold:.3f}")
        return Classification(
            label=labels[top],
            confidence=round(confidence, 6),
            scores={name: round(float(p), 6) for name, p in zip(labels, probs, strict=True)},
            label_set=family,
            method="trained-head" if method == "trained-head" else "zero-shot",
            reasons=reasons,
            out_of_scope=None if oos is None else round(oos, 6),
        )


def fitted_thresholds(settings: Settings, *, model_version: str | None = None) -> dict[str, float]:
    """Per-family thresholds of MINNOW_ROUTING__THRESHOLDS_FILE ({} when unset); with `model_version`, checked
    against the model and head file in force."""
    path = settings.routing.thresholds_file
    if path is None:
        return {}
    fitted = ThresholdsFile.load(path)
    if model_version is not None:
        fitted.check(model_version, settings.head_file)
    return {family: t.min_confidence for family, t in fitted.families.items()}


def _oos_thresholds(heads: HeadFile | None) -> dict[str, float]:
    if heads is None:
        return {}
    return {f: h.out_of_scope_threshold for f, h in heads.heads.items() if h.out_of_scope_threshold is not None}


# ------------------------------------------------------------------------------------------------ the task
class ClassificationAnswer(Answer):
    label: str
    confidence: float = Field(ge=0, le=1)


class ClassifyTask:
    """Classify each event's text with its family's label set; settled by a large model when unsure.

    An IoT anomaly or an unsupported language is settled by classifying the item too (an IoT message's text says
    its severity; a label for a text the mini model cannot read is a guess).
    """

    name: ClassVar[str] = "classify"
    field: ClassVar[str] = "classification"
    settled_for: ClassVar[frozenset[str]] = frozenset({"classify", "anomaly", "language"})

    def __init__(
        self,
        settings: Settings,
        classifier: Classifier | None = None,
        *,
        thresholds: Mapping[str, float] | None = None,
        out_of_scope: Mapping[str, float] | None = None,
    ) -> None:
        self._min_confidence = settings.routing.classify_min_confidence
        self._thresholds = dict(thresholds or {})
        self._out_of_scope = dict(out_of_scope or {})
        self._classifier = classifier

    @classmethod
    def configure(cls, settings: Settings) -> ClassifyTask:
        """Routing only: the fitted thresholds and the heads' out-of-scope thresholds, no encoder, no checks."""
        heads = HeadFile.load(settings.head_file) if settings.head_file else None
        return cls(settings, thresholds=fitted_thresholds(settings), out_of_scope=_oos_thresholds(heads))

    @classmethod
    def load(cls, settings: Settings, encoder: Encoder) -> ClassifyTask:
        """The configured label sets, with the trained heads when MINNOW_HEAD_FILE names some and the thresholds
        of MINNOW_ROUTING__THRESHOLDS_FILE, checked against the model and heads they were fitted for."""
        heads = HeadFile.load(settings.head_file, encoder.files.version) if settings.head_file else None
        thresholds = fitted_thresholds(settings, model_version=encoder.files.version)
        label_sets = load_label_sets(settings.labels_file)
        min_confidence = settings.routing.classify_min_confidence
        classifier = Classifier.build(label_sets, encoder, heads, min_confidence=min_confidence, thresholds=thresholds)
        return cls(settings, classifier, thresholds=thresholds, out_of_scope=_oos_thresholds(heads))

    @property
    def classifier(self) -> Classifier:
        if self._classifier is None:
            raise RuntimeError("ClassifyTask.configure() has no label sets; use ClassifyTask.load()")
        return self._classifier

    def run(self, batch: Batch) -> list[Classification | None]:
        out: list[Classification | None] = [None] * len(batch.jobs)
        by_label_set: dict[str, list[int]] = {}
        for i, job in enumerate(batch.jobs):
            if job.label_set is not None and job.label_set in self.classifier.label_sets:
                by_label_set.setdefault(job.label_set, []).append(i)
        for label_set, idx in by_label_set.items():
            vectors = np.stack([batch.embeddings[i].vector for i in idx])
            texts = [batch.texts[i] for i in idx]
            for i, c in zip(idx, self.classifier.classify(label_set, vectors, texts), strict=True):
                out[i] = c
        return out

    def reasons(self, c: Classification | None) -> list[str]:
        if c is None:
            return []
        out = []
        if c.confidence < self._thresholds.get(c.label_set, self._min_confidence):
            out.append("classify.low_confidence")
        oos_threshold = self._out_of_scope.get(c.label_set)
        if c.out_of_scope is not None and oos_threshold is not None and c.out_of_scope > oos_threshold:
            out.append("classify.out_of_scope")
        return out

    # ------------------------------------------------------------------------------- the large model's half
    def wanted(self, asked: Asked) -> bool:
        c = asked.result.classification
        return c is not None and bool(c.scores) and bool(asked.unsure & self.settled_for)

    def instruction(self, asked: Asked) -> str:
        label_set, labels = self._labels(asked)
        return (
            f"- classification: choose the one label of the label set `{label_set}` that fits the item best, "
            f"from: {', '.join(labels)}; give your confidence (0 to 1) that it is right."
        )

    def answer_schema(self, asked: Asked) -> dict[str, Any]:
        _, labels = self._labels(asked)
        return strict_object({"label": {"type": "string", "enum": list(labels)}, "confidence": {"type": "number"}})

    def read(self, section: Mapping[str, Any], asked: Asked) -> ClassificationAnswer:
        answer = read_section(ClassificationAnswer, self.field, section)
        label_set, labels = self._labels(asked)
        if answer.label not in labels:
            raise AnswerError(f"label {answer.label!r} is not in the label set {label_set!r}")
        return answer

    def apply(self, answer: Answer, asked: Asked, restore: RestoreText) -> Classification:
        assert isinstance(answer, ClassificationAnswer)
        label_set, _ = self._labels(asked)
        return Classification(
            label=answer.label,
            confidence=answer.confidence,
            scores={answer.label: answer.confidence},
            label_set=label_set or "",
            method="zero-shot",
        )

    def label(self, answer: Answer, asked: Asked, restore: RestoreText) -> dict[str, Any] | None:
        assert isinstance(answer, ClassificationAnswer)
        label_set, _ = self._labels(asked)
        return {"label_set": label_set, "label": answer.label}

    @staticmethod
    def _labels(asked: Asked) -> tuple[str | None, tuple[str, ...]]:
        c = asked.result.classification
        return (c.label_set, tuple(c.scores)) if c is not None else (None, ())
