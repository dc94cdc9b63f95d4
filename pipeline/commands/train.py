"""`minnow train`: fit a calibrated logistic head per family, and the zero-shot temperature, from labeled lines."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from pipeline.commands.labeled import LabeledRow, read_labeled
from pipeline.engine import load_encoder
from pipeline.errors import ConfigError
from pipeline.settings import Settings
from pipeline.tasks.classify import Prototypes
from pipeline.tasks.heads import LinearHead, describe, fit_head, fit_zero_shot_temperature, new_head_file
from pipeline.tasks.labels import load_label_sets

MIN_EXAMPLES_PER_LABEL = 3


def run(settings: Settings, data: Path, out: Path) -> int:
    label_sets = load_label_sets(settings.labels_file)
    rows = [r for r in read_labeled(data) if r.label is not None]
    by_family: dict[str, list[LabeledRow]] = defaultdict(list)
    for row in rows:
        by_family[row.family].append(row)
    unknown = sorted(set(by_family) - set(label_sets))
    if unknown:
        raise ConfigError(f"{data} has families without a label set: {', '.join(unknown)}")
    encoder = load_encoder(settings.engine)
    heads: dict[str, LinearHead] = {}
    temps: dict[str, float] = {}
    for family, fam_rows in by_family.items():
        label_set = label_sets[family]
        labels = [r.label for r in fam_rows if r.label is not None]
        vectors = encoder.embed([r.text for r in fam_rows])
        temps[family] = fit_zero_shot_temperature(
            Prototypes.build(label_set, encoder).logits(vectors), labels, label_set.names
        )
        thin = [n for n in label_set.names if labels.count(n) < MIN_EXAMPLES_PER_LABEL]
        if thin:
            print(
                f"{family}: no trained head (fewer than {MIN_EXAMPLES_PER_LABEL} examples for: {', '.join(thin)}); "
                "zero-shot calibration only",
                file=sys.stderr,
            )
            continue
        heads[family] = fit_head(vectors, labels, label_set.names)
    head_file = new_head_file(heads, temps, encoder.files.version)
    head_file.save(out)
    print(f"wrote {out}\n{describe(head_file)}")
    return 0
