"""`minnow bench model`: events/s of the whole engine against the bare int8 encoder on the same texts."""

from __future__ import annotations

import platform
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.engine import Encoder
from pipeline.engine.encoder import pad
from pipeline.models import FeedEvent
from pipeline.settings import Settings
from pipeline.stages.infer import MiniModel

_SENTENCES = (
    "market shares rose after the company reported strong quarterly earnings and raised its forecast for the year",
    "the team won the final match in extra time with a late goal from the young striker",
    "scientists announced a new battery design that charges faster and lasts longer than current cells",
    "officials said the talks between the two governments would resume next week in the capital",
    "customers complained that the update broke the login page and support tickets doubled overnight",
    "the sensor reported a temperature spike in the server room before the cooling system recovered",
)
_WORDS = " ".join(_SENTENCES).split()
REPEATS = 5
TEXT_SETS = (("short", 30), ("long", 150))  # name, word pieces per text


def make_texts(encoder: Encoder, count: int, tokens: int, seed: int) -> list[str]:
    """Deterministic sentences of about `tokens` word pieces, built from a fixed news-like vocabulary."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words: list[str] = []
        while encoder.token_count(" ".join(words)) < tokens:
            sentence = rng.sample(_WORDS, k=rng.randint(8, 14))
            words += [*sentence[:-1], sentence[-1] + "."]
        texts.append(" ".join(words).capitalize())
    return texts


def _rate_once(fn: Callable[[], int], seconds: float) -> float:
    """Items per second over repeated calls of `fn`, which returns how many items it did."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += fn()
    return done / (time.perf_counter() - start)


def _paired(bare: Callable[[], int], engine: Callable[[], int], seconds: float) -> tuple[float, float, float]:
    """Median bare rate, engine rate and engine/bare ratio over REPEATS back-to-back pairs.

    On a shared machine the speed drifts by tens of percent over minutes; measuring the two side by side,
    repeat by repeat, lets each ratio see the same conditions.
    """
    bare(), engine()  # warm-up: first-call allocations and thread start-up are not throughput
    pairs = []
    for _ in range(REPEATS):
        b = _rate_once(bare, seconds / (2 * REPEATS))
        e = _rate_once(engine, seconds / (2 * REPEATS))
        pairs.append((b, e, e / b))
    bares, engines, ratios = zip(*pairs, strict=True)
    return statistics.median(bares), statistics.median(engines), statistics.median(ratios)


def _bare(encoder: Encoder, texts: list[str], batch: int) -> Callable[[], int]:
    """The bare encoder: pre-tokenized, padded batches straight into ONNX Runtime — no tokenizer, no tasks."""
    ids_list = encoder.window_ids(texts)
    batches = [pad(ids_list[start : start + batch]) for start in range(0, len(ids_list), batch)]
    state = {"i": 0}

    def step() -> int:
        ids, mask = batches[state["i"] % len(batches)]
        state["i"] += 1
        encoder.run_padded(ids, mask)
        return len(ids)

    return step


def _engine(model: MiniModel, texts: list[str], batch: int) -> Callable[[], int]:
    now = datetime.now(UTC)
    events = [FeedEvent(id=f"b{i}", source="bench", text=t, created_at=now) for i, t in enumerate(texts)]
    chunks = [events[i : i + batch] for i in range(0, len(events), batch)]
    state = {"i": 0}

    def step() -> int:
        chunk = chunks[state["i"] % len(chunks)]
        state["i"] += 1
        model.process(chunk)
        return len(chunk)

    return step


def measure(settings: Settings, *, seconds: float, batch_sizes: list[int]) -> dict[str, Any]:
    largest = max(batch_sizes)
    engine_settings = settings.engine.model_copy(update={"max_windows_per_batch": largest})
    model = MiniModel.load(settings.model_copy(update={"engine": engine_settings}))
    encoder = model.encoder
    report: dict[str, Any] = {
        "model": model.model_info.model_dump(),
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "processor": platform.machine()},
        "seconds_per_point": seconds,
        "repeats": REPEATS,
        "rows": [],
    }
    text_sets = {name: make_texts(encoder, max(4 * largest, 128), tokens, seed=tokens) for name, tokens in TEXT_SETS}
    # The engine's own memory high-water mark, before the bare encoder's unbounded batches can raise it.
    for texts in text_sets.values():
        for batch in batch_sizes:
            _engine(model, texts, batch)()
    report["engine_peak_rss_mb"] = _peak_rss_mb()
    for name, texts in text_sets.items():
        mean_tokens = statistics.mean(encoder.token_count(t) for t in texts)
        for batch in batch_sizes:
            bare, engine, ratio = _paired(_bare(encoder, texts, batch), _engine(model, texts, batch), seconds)
            row = {
                "texts": name,
                "tokens": round(mean_tokens, 1),
                "batch": batch,
                "bare_per_s": round(bare, 1),
                "engine_per_s": round(engine, 1),
                "ratio": round(ratio, 3),
            }
            report["rows"].append(row)
            print(
                f"  {name:5} batch {batch:3}: bare {bare:7.1f}/s  engine {engine:7.1f}/s  ratio {ratio:.2f}",
                file=sys.stderr,
            )
    report["peak_rss_mb"] = _peak_rss_mb()
    return report


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def render(report: dict[str, Any]) -> str:
    m = report["model"]
    lines = [
        f"model {m['name']} {m['version']} ({m['quantization']}), {report['machine']['cpus']} CPUs, "
        f"medians of {report['repeats']} back-to-back pairs of "
        f"{report['seconds_per_point'] / report['repeats'] / 2:.1f}s",
        "| texts | tokens | batch | bare encoder /s | engine (all tasks) /s | engine / bare |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['texts']} | {r['tokens']} | {r['batch']} | {r['bare_per_s']} | {r['engine_per_s']} | {r['ratio']:.2f} |"
        for r in report["rows"]
    ]
    lines.append(
        f"engine peak RSS: {report['engine_peak_rss_mb']} MB (whole benchmark process: {report['peak_rss_mb']} MB)"
    )
    return "\n".join(lines)


def run(settings: Settings, *, as_json: bool, seconds: float, batch_sizes: list[int]) -> int:
    report = measure(settings, seconds=seconds, batch_sizes=batch_sizes)
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(render(report))
    return 0
