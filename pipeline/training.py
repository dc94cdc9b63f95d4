"""Labeled examples and classification heads fitted on them: what `minnow train`, `eval`, `distill` and the labels
topic share. Kafka-free: the labels topic is read by pipeline/stream/labels.py."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.engine import Encoder
from pipeline.errors import ConfigError
from pipeline.models import LabelRecord
from pipeline.tasks.classify import Prototypes
from pipeline.tasks.heads import (
    OUT_OF_SCOPE_LABEL,
    HeadFile,
    LinearHead,
    fit_head,
    fit_zero_shot_temperature,
    new_head_file,
)
from pipeline.tasks.labels import LabelSet

MIN_EXAMPLES_PER_LABEL = 3

Embed = Callable[[Sequence[str]], NDArray[np.float32]]


class LabeledRow(BaseModel):
    """One labeled example. Only the fields present are evaluated."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str | None = None
    family: str = "feed"
    text: str = ""
    label: str | None = None
    categories: list[str] | None = None  # moderation truth: the categories that apply ([] = benign)
    turns: list[dict[str, str]] | None = None  # a dialogue: [{"speaker", "text"}]
    summary: str | None = None  # the reference summary of `turns`


def read_labeled(path: Path) -> list[LabeledRow]:
    """Labeled JSON lines (`minnow train`, `eval`, `distill`); a line that is not one is a ConfigError naming it."""
    rows: list[LabeledRow] = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            rows.append(LabeledRow.model_validate(orjson.loads(raw)))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise ConfigError(f'{path}:{number}: not a labeled example ({{"family", "text", "label"}}): {exc}') from exc
    if not rows:
        raise ConfigError(f"{path} has no labeled examples")
    return rows


def rows_from_verdicts(verdicts: Sequence[LabelRecord]) -> list[LabeledRow]:
    """Classification verdicts (from the labels topic) as labeled examples: the label set is the family."""
    return [
        LabeledRow(id=v.id, family=v.label_set, text=v.text, label=v.label)
        for v in verdicts
        if v.task == "classify" and v.label_set and v.label is not None
    ]


def fit_heads(
    rows: Sequence[LabeledRow],
    label_sets: dict[str, LabelSet],
    encoder: Encoder,
    *,
    origin: str,
    embed: Embed | None = None,
    zero_shot_temperatures: bool = True,
) -> tuple[HeadFile, dict[str, str]]:
    """A head per family with enough examples of every label, a zero-shot temperature per family with two labels
    or more (unless `zero_shot_temperatures` is off); and, per family left without a head, why.

    Turn the temperatures off for rows that are not a fair sample: verdicts on escalated items are the hardest
    ones, and a temperature fitted to them makes zero-shot under-confident (docs/distillation.md measures it).
    `embed` may serve vectors already computed."""
    embed = embed or encoder.embed
    by_family: dict[str, list[LabeledRow]] = defaultdict(list)
    for row in rows:
        if row.label is not None:
            by_family[row.family].append(row)
    if not by_family:
        raise ConfigError(f"{origin} has no labeled examples for classification")
    unknown = sorted(set(by_family) - set(label_sets))
    if unknown:
        raise ConfigError(f"{origin} has families without a label set: {', '.join(unknown)}")
    heads: dict[str, LinearHead] = {}
    temps: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for family, all_rows in by_family.items():
        label_set = label_sets[family]
        # Out-of-scope rows fit the head's out-of-scope threshold only (unless the label set has a label `oos`).
        oos_rows = [r for r in all_rows if r.label == OUT_OF_SCOPE_LABEL and r.label not in label_set.names]
        fam_rows = [r for r in all_rows if r not in oos_rows]
        labels = [r.label for r in fam_rows if r.label is not None]
        strangers = sorted(set(labels) - set(label_set.names))
        if strangers:
            raise ConfigError(f"{origin}: labels not in the '{family}' label set: {', '.join(strangers)}")
        counts = Counter(labels)
        if len(counts) < 2:
            # One label teaches nothing: a temperature fitted to it would make zero-shot overconfident.
            only = f"all {len(labels)} examples are" if len(labels) > 1 else "the one example is"
            skipped[family] = f"nothing trained: {only} '{labels[0]}' (two labels at least)"
            continue
        texts = [r.text for r in fam_rows]
        vectors = embed(texts)
        if zero_shot_temperatures:
            temps[family] = fit_zero_shot_temperature(
                Prototypes.build(label_set, encoder).logits(vectors), labels, label_set.names
            )
        thin = [f"{n} ({counts[n]})" for n in label_set.names if counts[n] < MIN_EXAMPLES_PER_LABEL]
        if thin:
            fallback = "zero-shot calibration only" if zero_shot_temperatures else "zero-shot as configured"
            skipped[family] = (
                f"no trained head (fewer than {MIN_EXAMPLES_PER_LABEL} examples for: {', '.join(thin)}); {fallback}"
            )
            continue
        oos_vectors = embed([r.text for r in oos_rows]) if oos_rows else None
        heads[family] = fit_head(vectors, labels, label_set.names, oos_vectors=oos_vectors, texts=texts)
    return new_head_file(heads, temps, encoder.files.version), skipped
