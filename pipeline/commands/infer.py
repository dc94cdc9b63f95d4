"""`minnow infer`: events in, one result or error record per line out, in input order.

IoT messages are tracked per device as the stream worker tracks them (pipeline/stages/devices.py `DeviceBook`): in
input order, so each device's readings are judged against its own history before them.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import IO

from pipeline.jsonl import batched, dump, numbered_lines, open_input, progress
from pipeline.models import AnyEvent, ErrorRecord, Result
from pipeline.settings import Settings
from pipeline.stages.devices import DeviceBook
from pipeline.stages.infer import MiniModel
from pipeline.stages.mapping import FieldMapping
from pipeline.stages.validate import decode_line


def run(
    settings: Settings, path: str | None, out: IO[bytes], *, batch_size: int, mapping: FieldMapping | None = None
) -> int:
    model = MiniModel.load(settings)
    devices = DeviceBook(settings, now=time.time())
    counts: Counter[str] = Counter()
    with open_input(path) as (stream, size), progress(size, "infer") as bar:
        for batch in batched(numbered_lines(stream), batch_size):
            decoded = [decode_line(raw, line, mapping=mapping) for line, raw in batch]
            events: list[AnyEvent] = [d for d in decoded if not isinstance(d, ErrorRecord)]
            results = iter(infer_batch(model, devices, events))
            for (line, _), item in zip(batch, decoded, strict=True):
                record: Result | ErrorRecord = item if isinstance(item, ErrorRecord) else next(results)
                if isinstance(record, ErrorRecord):
                    record = record.model_copy(update={"line": line})
                    counts["error"] += 1
                else:
                    counts[record.route] += 1
                out.write(dump(record))
            bar.update(sum(len(raw) + 1 for _, raw in batch))
    out.flush()
    total = sum(counts.values())
    print(
        f"{total} events: {counts['sink']} to sink, {counts['escalate']} to escalate, {counts['error']} errors",
        file=sys.stderr,
    )
    return 0


def infer_batch(model: MiniModel, devices: DeviceBook, events: Sequence[AnyEvent]) -> list[Result | ErrorRecord]:
    """Score, track IoT messages through their devices' history, then route: the worker's order, without Kafka."""
    scores = devices.step(events, model.score(events))
    pairs = zip(scores, events, strict=True)
    return [s if isinstance(s, ErrorRecord) else model.router.result(s, e) for s, e in pairs]
