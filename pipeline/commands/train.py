"""`minnow train`: fit a calibrated logistic head per family, and the zero-shot temperature, from labeled examples
in a file, the labels topic, or both."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.engine import load_encoder
from pipeline.errors import ConfigError
from pipeline.review.verdicts import latest_verdicts
from pipeline.settings import KafkaSettings, Settings
from pipeline.tasks.heads import describe
from pipeline.tasks.labels import load_label_sets
from pipeline.training import LabeledRow, fit_heads, read_labeled, rows_from_verdicts


def run(settings: Settings, data: Path, out: Path) -> int:
    rows = read_labeled(data)
    return train_and_save(settings, rows, out, origin=str(data))


def run_from_topic(settings: Settings, kafka: KafkaSettings, topic: str, data: Path | None, out: Path) -> int:
    """`minnow train --from-topic labels [--data more.jsonl]`: the latest classify verdicts, plus a file if given."""
    from pipeline.stream.labels import read_labels  # aiokafka: only when a topic is read

    read = asyncio.run(read_labels(kafka, topic))
    verdicts = list(latest_verdicts(read.entries).values())
    rows = rows_from_verdicts(verdicts)
    print(
        f"{topic}: {read.records} records, {len(verdicts)} latest verdicts, {len(rows)} for classification"
        + (f", {read.unreadable} unreadable (skipped)" if read.unreadable else ""),
        file=sys.stderr,
    )
    if not rows:
        raise ConfigError(
            f"the labels topic {topic} has no classification verdicts ({read.records} records read up to its end "
            "offsets); settle items with `minnow review` first, or train from a file with --data"
        )
    origin = f"topic {topic}"
    if data is not None:
        rows += read_labeled(data)
        origin += f" and {data}"
    # Verdicts are the escalated, hardest items: no zero-shot temperature is fitted to them (docs/distillation.md).
    return train_and_save(settings, rows, out, origin=origin, require_head=True, zero_shot_temperatures=False)


def train_and_save(
    settings: Settings,
    rows: Sequence[LabeledRow],
    out: Path,
    *,
    origin: str,
    require_head: bool = False,
    zero_shot_temperatures: bool = True,
) -> int:
    """Fit, report what could not be trained, write the head file. `require_head`: no head at all is an error."""
    encoder = load_encoder(settings.engine)
    head_file, skipped = fit_heads(
        rows,
        load_label_sets(settings.labels_file),
        encoder,
        origin=origin,
        zero_shot_temperatures=zero_shot_temperatures,
    )
    if require_head and not head_file.heads:
        reasons = "; ".join(f"{family}: {why}" for family, why in skipped.items())
        raise ConfigError(f"no classification head can be trained from {origin}: {reasons}")
    for family, why in skipped.items():
        print(f"{family}: {why}", file=sys.stderr)
    head_file.save(out)
    print(f"wrote {out}\n{describe(head_file)}")
    return 0
