"""Verdicts on review records, the label records they become, and the labels topic's latest-verdict-per-key rule."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pipeline.errors import AnswerError, InputError
from pipeline.models import EscalationRecord, LabelRecord, ReviewRecord, label_text
from pipeline.settings import Settings
from pipeline.tasks.base import Asked, Task
from pipeline.tasks.catalog import configure_tasks
from pipeline.tasks.moderate import CATEGORIES, FLAG_AT  # a large model's score at FLAG_AT or above flags

Basis = Literal["mini-model", "large-model", "person"]
# Reading and labelling a verdict uses no threshold: the defaults serve (and reading the environment here would
# make importing the module depend on it).
_SETTINGS = Settings.model_construct()
_TASKS = configure_tasks(_SETTINGS)


@dataclass(frozen=True)
class Verdict:
    """A person settled the item. `None` for a task means the person said nothing about it."""

    label: str | None = None
    flagged_categories: tuple[str, ...] | None = None
    basis: Basis = "person"

    def sections(self, record: ReviewRecord) -> dict[str, dict[str, Any]]:
        """The verdict as a large model's answer to the item would read (task field -> section), certain of itself."""
        out: dict[str, dict[str, Any]] = {}
        if self.label is not None:
            out["classification"] = {"label": self.label, "confidence": 1.0}
        if self.flagged_categories is not None:
            flagged = set(self.flagged_categories)
            out["moderation"] = {"categories": {c: 1.0 if c in flagged else 0.0 for c in flag_choices(record)}}
        return out

    def describe(self) -> str:
        parts = []
        if self.label is not None:
            parts.append(f"classify={self.label}")
        if self.flagged_categories is not None:
            parts.append("flags=" + (",".join(self.flagged_categories) or "none"))
        return f"{' '.join(parts) or 'nothing'} ({self.basis})"


@dataclass(frozen=True)
class Skip:
    """Not settled now: the item goes back to the end of the review queue for later."""


@dataclass(frozen=True)
class Quit:
    """Stop the session; this item and the ones after it stay on the review topic, uncommitted."""


Decision = Verdict | Skip | Quit


# ------------------------------------------------------------------------------------------ what is offered
def label_choices(record: ReviewRecord) -> list[str]:
    """The label set of the mini result, in label-set order (stable numbers from one item to the next)."""
    classification = record.result.classification
    return list(classification.scores) if classification is not None else []


def flag_choices(record: ReviewRecord) -> list[str]:
    moderation = record.result.moderation
    return list(moderation.categories) if moderation is not None else list(CATEGORIES)


def mini_verdict(record: ReviewRecord) -> Verdict | None:
    """The mini model's answer: its label, and its flags when moderation was in question (a `moderate.*` reason),
    as the escalator asks the large model to moderate only then."""
    classification, moderation = record.result.classification, record.result.moderation
    if moderation is not None and not any(reason.startswith("moderate.") for reason in record.reasons):
        moderation = None
    if classification is None and moderation is None:
        return None
    return Verdict(
        label=classification.label if classification is not None else None,
        flagged_categories=tuple(moderation.flagged_categories) if moderation is not None else None,
        basis="mini-model",
    )


def large_verdict(record: ReviewRecord) -> Verdict | None:
    """The large model's answer, when it gave a usable one.

    The escalator's answer reads `{"classification": {"label"}, "moderation": {"categories": {name: score}}}`; a
    category scored at FLAG_AT or above is flagged, as the escalator flags it. `flagged_categories` lists are read
    too. A label outside the label set is not offered: an invalid answer is often why the item is here.
    """
    answer = record.large_model_answer
    if not answer:
        return None
    classification, moderation = answer.get("classification"), answer.get("moderation")
    label = classification.get("label") if isinstance(classification, dict) else answer.get("label")
    flags = _flags(moderation if isinstance(moderation, dict) else answer)
    usable_label = label if isinstance(label, str) and label in label_choices(record) else None
    usable_flags = flags if flags is not None and set(flags) <= set(flag_choices(record)) else None
    if usable_label is None and usable_flags is None:
        return None
    return Verdict(label=usable_label, flagged_categories=usable_flags, basis="large-model")


def _flags(section: dict[str, Any]) -> tuple[str, ...] | None:
    listed, scores = section.get("flagged_categories"), section.get("categories")
    if isinstance(listed, list):
        return tuple(str(name) for name in listed)
    if isinstance(scores, dict) and all(isinstance(v, int | float) for v in scores.values()):
        return tuple(str(name) for name, score in scores.items() if score >= FLAG_AT)
    return None


# ---------------------------------------------------------------------------------------- label records
event_text = label_text  # the text a verdict is about: what the mini model classifies (pipeline.models)


def label_records(
    record: ReviewRecord,
    verdict: Verdict,
    *,
    reviewer: str,
    now: datetime,
    tasks: Sequence[Task] | None = None,
) -> list[LabelRecord]:
    """One label record per task the verdict settles: `classify` for a label, `moderate` for flags.

    The verdict is checked against the item (what a person may choose), then read as a large model's answer would be
    (`Verdict.sections`) and each task of the catalog turns its section into its label record — the one path from
    any verdict, a model's or a person's, to training data.
    """
    if verdict.label is not None:
        choices = label_choices(record)
        if record.result.classification is None or verdict.label not in choices:
            raise InputError(
                f"{record.id}: label {verdict.label!r} is not in the item's label set "
                f"({', '.join(choices) or 'the mini model did not classify it'})"
            )
    if verdict.flagged_categories is not None:
        unknown = sorted(set(verdict.flagged_categories) - set(flag_choices(record)))
        if unknown:
            raise InputError(f"{record.id}: unknown moderation categories {unknown}")
    sections = verdict.sections(record)
    if not sections:
        raise InputError(f"{record.id}: a verdict must settle a label or moderation flags")
    common: dict[str, Any] = {
        "id": record.id,
        "kind": record.kind,
        "text": event_text(record.event),
        "source": "human",
        "decided_by": reviewer,
        "decided_at": now,
    }
    asked = Asked(_as_escalation(record), _SETTINGS)
    out = []
    for task in tasks if tasks is not None else _TASKS:
        section = sections.get(task.field)
        if section is None:
            continue
        try:
            fields = task.label(task.read(section, asked), asked, _unchanged)
        except AnswerError as exc:  # the checks above make this a bug, not a person's mistake: say which
            raise InputError(f"{record.id}: the {task.name} verdict does not fit the item: {exc}") from exc
        if fields is not None:
            out.append(LabelRecord.model_validate({**common, **fields, "task": task.name}))
    return out


def _as_escalation(record: ReviewRecord) -> EscalationRecord:
    """The escalation the review record came from, as the tasks read an item."""
    return EscalationRecord(
        id=record.id,
        kind=record.kind,
        reasons=record.reasons,
        result=record.result,
        event=record.event,
        escalated_at=record.sent_at,
    )


def _unchanged(text: str) -> str:
    return text  # a person's verdict holds no redaction placeholders


def label_key(record: LabelRecord) -> str:
    """The labels topic's record key, `task:event id`: compaction keeps one verdict per item and task."""
    return f"{record.task}:{record.id}"


# ------------------------------------------------------------------------------- latest verdict per key
@dataclass(frozen=True)
class KeyedLabel:
    """One record as read from the labels topic; `record` None is a tombstone (the verdict was withdrawn)."""

    partition: int
    offset: int
    timestamp: int
    key: str | None
    record: LabelRecord | None


def latest_verdicts(entries: Iterable[KeyedLabel]) -> dict[str, LabelRecord]:
    """What compaction leaves: per key, the record at the highest offset wins; a tombstone removes the key.

    Reading before the log cleaner has run must give the same answer as after, so the rule is applied here too.
    A key lives on one partition when every producer keys by `task:id`; should it appear on several, the
    later broker timestamp decides between them.
    """
    last: dict[tuple[str, int], KeyedLabel] = {}
    for entry in sorted(entries, key=lambda e: (e.partition, e.offset)):
        key = entry.key if entry.key is not None else (label_key(entry.record) if entry.record else None)
        if key is not None:
            last[(key, entry.partition)] = entry
    winners: dict[str, KeyedLabel] = {}
    for (key, _), entry in last.items():
        held = winners.get(key)
        if held is None or (entry.timestamp, entry.partition) > (held.timestamp, held.partition):
            winners[key] = entry
    return {key: entry.record for key, entry in sorted(winners.items()) if entry.record is not None}


def classify_verdicts(verdicts: Sequence[LabelRecord]) -> list[LabelRecord]:
    """The verdicts that are training data for classification heads."""
    return [v for v in verdicts if v.task == "classify" and v.label_set and v.label]
