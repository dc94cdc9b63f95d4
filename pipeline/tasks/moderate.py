"""The moderation task: per-category scores from the shipped heads (embedding, hashed n-grams and profanity-check,
stacked), the per-category policy (thresholds, uncertain bands) that turns them into a decision, and what a large
model is asked when unsure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from pipeline.config_files import read_yaml
from pipeline.errors import AnswerError, ConfigError, InferenceError
from pipeline.models import Moderation
from pipeline.settings import Settings
from pipeline.tasks.base import Answer, Asked, Batch, RestoreText, read_section, strict_object
from pipeline.tasks.moderation_heads import (  # re-exported: the moderation task's parts
    CATEGORIES,
    CONFIG_FILE,
    EVAL_FILE,
    HEADS_FILE,
    SEED_FILE,
    Floats,
    Lexical,
    ModerationHeads,
    read_labelled,
)
from pipeline.tasks.profanity import ProfanityModel

if TYPE_CHECKING:
    from pipeline.engine.encoder import Encoder

__all__ = [
    "CATEGORIES",
    "CONFIG_FILE",
    "EVAL_FILE",
    "FLAG_AT",
    "HEADS_FILE",
    "SEED_FILE",
    "CategoryPolicy",
    "Floats",
    "Lexical",
    "ModerateTask",
    "ModerationConfig",
    "ModerationHeads",
    "Moderator",
    "ProfanityModel",
    "read_labelled",
]


# ------------------------------------------------------------------------------------------------ config
class CategoryPolicy(BaseModel):
    """Where one category flags, and the band around it where the score is too close to call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float
    uncertain_low: float
    uncertain_high: float

    @model_validator(mode="after")
    def _band_surrounds_threshold(self) -> CategoryPolicy:
        if not 0.0 <= self.uncertain_low < self.threshold < self.uncertain_high <= 1.0:
            raise ValueError(
                f"need 0 <= uncertain_low < threshold < uncertain_high <= 1, got "
                f"{self.uncertain_low} / {self.threshold} / {self.uncertain_high}"
            )
        return self


class ModerationConfig(BaseModel):
    """A policy for every category; `from_yaml` reads the bundled or an operator's `moderation.yaml`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    categories: dict[str, CategoryPolicy]

    @model_validator(mode="after")
    def _every_category(self) -> ModerationConfig:
        if set(self.categories) != set(CATEGORIES):
            raise ValueError(f"categories must be exactly {list(CATEGORIES)}, got {sorted(self.categories)}")
        return self

    @classmethod
    def from_yaml(cls, path: Path = CONFIG_FILE) -> ModerationConfig:
        raw = read_yaml(path, "moderation config") or {}
        try:
            defaults = raw.get("defaults") or {}
            given = raw.get("categories") or {}
            merged = {name: {**defaults, **(given.get(name) or {})} for name in {*CATEGORIES, *given}}
            return cls(categories=merged)  # type: ignore[arg-type]  # pydantic validates the dicts
        except AttributeError as exc:  # a section that is not a mapping
            raise ConfigError(f"cannot read moderation config {path}: {exc}") from exc
        except ValidationError as exc:
            raise ConfigError(f"invalid moderation config {path}: {exc}") from exc

    def column(self, field: str) -> Floats:
        """One policy field for every category, in CATEGORIES order, for vectorised comparisons."""
        return np.array([getattr(self.categories[c], field) for c in CATEGORIES], dtype=np.float64)


# ------------------------------------------------------------------------------------------------ scoring
class Moderator:
    """Scores texts per category and turns the scores into `Moderation` results."""

    def __init__(self, heads: ModerationHeads, profanity: ProfanityModel, config: ModerationConfig) -> None:
        self.heads = heads
        self.profanity = profanity
        self.lexical = Lexical()
        self.config = config
        self._threshold = config.column("threshold")
        self._low = config.column("uncertain_low")
        self._high = config.column("uncertain_high")

    @classmethod
    def load(cls, config: ModerationConfig | None = None, *, heads: Path = HEADS_FILE) -> Moderator:
        """The shipped heads (trained offline: pipeline/tasks/moderation_train.py) under the given or bundled policy."""
        return cls(ModerationHeads.load(heads), ProfanityModel.load(), config or ModerationConfig.from_yaml())

    def scores(self, texts: Sequence[str], vectors: NDArray[np.floating]) -> Floats:
        """(texts, categories) calibrated scores, columns in CATEGORIES order."""
        if len(texts) != len(vectors):
            raise InferenceError(f"moderation got {len(texts)} texts but {len(vectors)} vectors")
        if not texts:
            return np.zeros((0, len(CATEGORIES)))
        if vectors.ndim != 2 or vectors.shape[1] != self.heads.dim:
            raise InferenceError(f"moderation expects ({len(texts)}, {self.heads.dim}) vectors, got {vectors.shape}")
        return self.heads.scores(vectors, self.lexical.features(texts), self.profanity.probability(texts))

    def moderate(
        self,
        texts: Sequence[str],
        vectors: NDArray[np.floating],
        categories: Sequence[tuple[str, ...] | None] | None = None,
    ) -> list[Moderation]:
        """One result per text; `vectors` are the texts' embeddings from the shared encoder pass.

        `categories`, per text, trims the taxonomy (None: every category): a category left out is not reported,
        cannot flag and cannot lower the confidence.
        """
        # Decide on the rounded scores the result reports, so a reader never sees 0.4 unflagged at 0.4.
        scores = np.round(self.scores(texts, vectors), 4)
        kept = self._kept(len(texts), categories)
        certainty = np.where(kept, self._certainty(scores), 1.0)
        confidence = np.round(certainty.min(axis=1), 4).tolist()
        # Whole-batch masks turned into Python lists once: per-item numpy calls cost more than the scoring.
        flagged = (kept & (scores >= self._threshold)).tolist()
        uncertain = (kept & (scores >= self._low) & (scores <= self._high)).tolist()
        keep = kept.tolist()
        return [
            Moderation(
                flagged=any(flagged[i]),
                confidence=confidence[i],
                categories={name: score for name, score, on in zip(CATEGORIES, row, keep[i], strict=True) if on},
                flagged_categories=_names(flagged[i]),
                uncertain_categories=_names(uncertain[i]),
                reasons=self._reasons(scores[i], certainty[i]) if confidence[i] < 1.0 else [],
            )
            for i, row in enumerate(scores.tolist())
        ]

    @staticmethod
    def _kept(n: int, categories: Sequence[tuple[str, ...] | None] | None) -> NDArray[np.bool_]:
        """(texts, categories) mask of the categories each text is moderated for."""
        kept = np.ones((n, len(CATEGORIES)), dtype=bool)
        for i, names in enumerate(categories or ()):
            if names is not None:
                kept[i] = [name in names for name in CATEGORIES]
        return kept

    def _certainty(self, scores: Floats) -> Floats:
        """Per category, how far the score is from its threshold, on a scale the band defines.

        0 at the threshold, 0.5 at the band's edge, 1 from halfway between that edge and 0 (or 1) onwards;
        linear in between. Below 0.5 exactly when the score is inside the uncertain band.
        """
        above = scores >= self._threshold
        edge = np.where(above, self._high, self._low)
        far = np.where(above, (self._high + 1.0) / 2.0, self._low / 2.0)
        distance = np.abs(scores - self._threshold)
        band = np.abs(edge - self._threshold)
        beyond = np.maximum(np.abs(far - edge), 1e-12)  # a band reaching 0 or 1 leaves no room beyond it
        inside = 0.5 * distance / band
        outside = 0.5 + 0.5 * np.minimum(1.0, (distance - band) / beyond)
        out: Floats = np.where(distance <= band, inside, outside)
        return out

    def _reasons(self, scores: Floats, certainty: Floats) -> list[str]:
        """Why confidence is low: every category that is not far from its threshold, least certain first."""
        return [self._reason(int(k), float(scores[k])) for k in np.argsort(certainty) if certainty[k] < 1.0]

    def _reason(self, k: int, score: float) -> str:
        name, low, high = CATEGORIES[k], self._low[k], self._high[k]
        if low <= score <= high:
            return f"{name} score {score:.2f} is inside the uncertain band [{low:.2f}, {high:.2f}]"
        return f"{name} score {score:.2f} is near its threshold {self._threshold[k]:.2f} (band [{low:.2f}, {high:.2f}])"


def _names(mask: list[bool]) -> list[str]:
    return [name for name, on in zip(CATEGORIES, mask, strict=True) if on]


# ------------------------------------------------------------------------------------------------ the task
# A category the large model scores at or above this is flagged: it is asked for probabilities.
FLAG_AT = 0.5


class ModerationAnswer(Answer):
    categories: dict[str, float]


def _check_trimmed_categories(settings: Settings) -> None:
    """A stream's trimmed category set names known categories only: a typo must not silently moderate nothing."""
    for family, chosen in settings.families:
        unknown = sorted(set(chosen.moderation_categories or ()) - set(CATEGORIES))
        if unknown:
            raise ConfigError(
                f"MINNOW_FAMILIES__{family.upper()}__MODERATION_CATEGORIES: unknown {', '.join(unknown)}; "
                f"choose from {', '.join(CATEGORIES)}"
            )


class ModerateTask:
    """Moderate each event's text under the per-category policy; a large model scores every category when unsure."""

    name: ClassVar[str] = "moderate"
    field: ClassVar[str] = "moderation"
    settled_for: ClassVar[frozenset[str]] = frozenset({"moderate", "language"})

    def __init__(self, settings: Settings, moderator: Moderator | None = None) -> None:
        _check_trimmed_categories(settings)
        self._routing = settings.routing
        self._moderator = moderator

    @classmethod
    def configure(cls, settings: Settings) -> ModerateTask:
        return cls(settings)

    @classmethod
    def load(cls, settings: Settings, encoder: Encoder) -> ModerateTask:
        """The shipped moderation heads under the configured policy (the encoder's vectors come with each batch)."""
        policy = ModerationConfig.from_yaml(settings.moderation_file) if settings.moderation_file else None
        return cls(settings, Moderator.load(policy))

    @property
    def moderator(self) -> Moderator:
        if self._moderator is None:
            raise RuntimeError("ModerateTask.configure() has no heads; use ModerateTask.load()")
        return self._moderator

    def run(self, batch: Batch) -> list[Moderation | None]:
        out: list[Moderation | None] = [None] * len(batch.jobs)
        idx = [i for i, job in enumerate(batch.jobs) if job.moderate]
        if not idx:
            return out
        vectors = np.stack([batch.embeddings[i].vector for i in idx])
        texts = [batch.texts[i] for i in idx]
        trimmed = [batch.jobs[i].moderation_categories for i in idx]
        for i, m in zip(idx, self.moderator.moderate(texts, vectors, trimmed), strict=True):
            out[i] = m
        return out

    def reasons(self, m: Moderation | None) -> list[str]:
        if m is None:
            return []
        reasons = []
        if m.uncertain_categories:
            reasons.append("moderate.uncertain_category")
        elif m.confidence < self._routing.moderation_min_confidence:
            reasons.append("moderate.low_confidence")
        if self._routing.escalate_flagged and m.flagged:
            reasons.append("moderate.flagged")
        return reasons

    # ------------------------------------------------------------------------------- the large model's half
    def wanted(self, asked: Asked) -> bool:
        m = asked.result.moderation
        return m is not None and bool(m.categories) and bool(asked.unsure & self.settled_for)

    def instruction(self, asked: Asked) -> str:
        return (
            "- moderation: for each category, the probability (0 to 1) that the item belongs to it: "
            f"{', '.join(self._categories(asked))}."
        )

    def answer_schema(self, asked: Asked) -> dict[str, Any]:
        scores = {category: {"type": "number"} for category in self._categories(asked)}
        return strict_object({"categories": strict_object(scores)})

    def read(self, section: Mapping[str, Any], asked: Asked) -> ModerationAnswer:
        answer = read_section(ModerationAnswer, self.field, section)
        asked_for = self._categories(asked)
        scores = answer.categories
        if set(scores) != set(asked_for):
            raise AnswerError(f"moderation categories {sorted(scores)} are not {sorted(asked_for)}")
        outside = [name for name, score in scores.items() if not 0.0 <= score <= 1.0]
        if outside:
            raise AnswerError(f"moderation scores outside 0..1: {', '.join(sorted(outside))}")
        return answer

    def apply(self, answer: Answer, asked: Asked, restore: RestoreText) -> Moderation:
        assert isinstance(answer, ModerationAnswer)
        ordered = {name: float(answer.categories[name]) for name in self._categories(asked)}
        flagged = [name for name, score in ordered.items() if score >= FLAG_AT]
        # The same reading as the mini model's certainty: 0 at the flag threshold, 1 at 0 or 1.
        confidence = min((abs(2 * score - 1) for score in ordered.values()), default=1.0)
        return Moderation(
            flagged=bool(flagged), confidence=round(confidence, 4), categories=ordered, flagged_categories=flagged
        )

    def label(self, answer: Answer, asked: Asked, restore: RestoreText) -> dict[str, Any] | None:
        assert isinstance(answer, ModerationAnswer)
        flagged = [name for name in self._categories(asked) if answer.categories[name] >= FLAG_AT]
        return {"flagged_categories": flagged}

    @staticmethod
    def _categories(asked: Asked) -> tuple[str, ...]:
        """The item's categories in its result's order; the whole taxonomy for an item the mini model did not
        moderate (a person may still flag it; a large model is only asked about moderated items)."""
        m = asked.result.moderation
        return tuple(m.categories) if m is not None else CATEGORIES
