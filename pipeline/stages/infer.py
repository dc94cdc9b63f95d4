"""The mini model over a batch of events: one encoder pass, then every task in the catalog — scores, not routes."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pipeline.engine import Encoder, load_encoder
from pipeline.engine.text import clean, split_sentences
from pipeline.errors import InferenceError, MinnowError
from pipeline.models import (
    AnyEvent,
    EncoderJob,
    ErrorRecord,
    InputInfo,
    ModelInfo,
    Result,
    Scores,
)
from pipeline.settings import FamilyTasks, Settings
from pipeline.stages.route import Router
from pipeline.tasks.base import Batch, Task
from pipeline.tasks.catalog import load_tasks

log = logging.getLogger(__name__)

NOTHING_TO_READ = EncoderJob("", None, moderate=False, summarize=False, identify_language=False)


@dataclass(frozen=True)
class _Resolved:
    job: EncoderJob
    text: str  # the job's text as one string (moderation and language read it whole)
    turns: int | None  # for a text given as turns (a conversation): how many


def chosen(job: EncoderJob, family: FamilyTasks) -> EncoderJob:
    """The family's job with the tasks its stream switched off removed (MINNOW_FAMILIES__<FAMILY>__*).

    Naming a task keeps it; it never switches on a task the family does not do (an IoT reading is not summarized).
    """
    if family.tasks is not None:
        keep = set(family.tasks)
        job = replace(
            job,
            label_set=job.label_set if "classify" in keep else None,
            moderate=job.moderate and "moderate" in keep,
            summarize=job.summarize and "summarize" in keep,
            identify_language=job.identify_language and "language" in keep,
        )
    if family.moderation_categories is not None:
        job = replace(job, moderation_categories=family.moderation_categories)
    return job


class MiniModel:
    """Everything the mini model does to a batch of events, synchronously (see runtime.py for async)."""

    def __init__(self, encoder: Encoder, tasks: Sequence[Task], settings: Settings) -> None:
        self.encoder = encoder
        self.tasks = tuple(tasks)
        self.settings = settings
        self.router = Router(self.tasks)
        manifest = encoder.files.manifest
        self.model_info = ModelInfo(
            name=str(manifest["name"]), version=str(manifest["version"]), quantization=encoder.files.precision
        )

    @classmethod
    def load(cls, settings: Settings) -> MiniModel:
        encoder = load_encoder(settings.engine)
        return cls(encoder, load_tasks(settings, encoder), settings)

    # ------------------------------------------------------------------------------------------ public
    def score(self, events: Sequence[AnyEvent]) -> list[Scores | ErrorRecord]:
        """One score set or error record per event, in order. A failing batch is bisected to find the poison item."""
        if not events:
            return []
        try:
            return list(self._score_batch(events))
        except Exception as exc:  # any failure, typed or not, must cost only the item that causes it
            if len(events) == 1:
                # The type only above DEBUG: an engine error's message may quote the text it failed on.
                fields = {"event_id": events[0].id}
                log.warning("event %s failed in the engine: %s", events[0].id, type(exc).__name__, extra=fields)
                log.debug("event %s failed in the engine: %s", events[0].id, exc, extra=fields)
                code = exc.code if isinstance(exc, MinnowError) else InferenceError.code
                return [ErrorRecord(error=code, message=f"{type(exc).__name__}: {exc}", id=events[0].id)]
            mid = len(events) // 2
            return self.score(events[:mid]) + self.score(events[mid:])

    def process(self, events: Sequence[AnyEvent]) -> list[Result | ErrorRecord]:
        """Score and route, for callers that keep no state between events (the file CLI, benchmarks, evaluation).

        The stream worker scores, runs its stateful steps, then routes.
        """
        scored = self.score(events)
        return [
            s if isinstance(s, ErrorRecord) else self.router.result(s, e) for s, e in zip(scored, events, strict=True)
        ]

    # ---------------------------------------------------------------------------------------- internals
    def _job(self, event: AnyEvent) -> _Resolved:
        """The event's encoder job with its text tasks resolved."""
        job = chosen(event.encoder_job(), self.settings.families.of(event.kind))
        turns = len(job.text) if isinstance(job.text, list) else None
        joined = job.text if isinstance(job.text, str) else "\n".join(job.text)
        text = clean(joined, self.settings.engine.max_text_chars).text
        if not text:  # nothing to judge: a label for an empty post would be a confident guess
            return _Resolved(NOTHING_TO_READ, "", turns)
        if job.summarize:
            pieces = turns if turns is not None else len(split_sentences(text))
            if pieces < self.settings.summary.min_sentences_to_summarize:
                job = replace(job, summarize=False)
        return _Resolved(job, joined, turns)

    def _score_batch(self, events: Sequence[AnyEvent]) -> list[Scores]:
        started = time.perf_counter()
        resolved = [self._job(e) for e in events]
        jobs = [r.job for r in resolved]
        n = len(jobs)

        t = time.perf_counter()
        embeddings = self.encoder.embed_documents([j.text for j in jobs], [j.summarize for j in jobs])
        timings = {"encode_ms": (time.perf_counter() - t) * 1000}
        if len(embeddings) != n:  # the count invariant that keeps results aligned with offsets
            raise InferenceError(f"encoder returned {len(embeddings)} embeddings for {n} events")

        # A text embedded from a sample of its chunks is read by every task as that sample: the lexical channels,
        # profanity and language identification cost in proportion to the text too, and the budget bounds them all.
        texts = [
            "\n".join(e.segments) if e.truncated_by == "max_tokens_per_event" else r.text
            for r, e in zip(resolved, embeddings, strict=True)
        ]
        batch = Batch(events=events, jobs=jobs, texts=texts, embeddings=embeddings)
        by_task: dict[str, Sequence[Any]] = {}  # task field -> one result (or None) per event
        for task in self.tasks:
            t = time.perf_counter()
            by_task[task.field] = results = task.run(batch)
            timings[f"{task.name}_ms"] = (time.perf_counter() - t) * 1000
            if len(results) != n:
                raise InferenceError(f"task {task.name} returned {len(results)} results for {n} events")
        timings["engine_ms"] = (time.perf_counter() - started) * 1000
        shared = {name: round(ms / n, 3) for name, ms in timings.items()} | {"batch_size": float(n)}

        return [
            Scores(
                id=event.id,
                kind=event.kind,
                **{field: results[i] for field, results in by_task.items()},
                model=self.model_info,
                input=InputInfo(
                    tokens=emb.tokens,
                    chunks=len(emb.segments),
                    truncated=emb.truncated,
                    truncated_by=emb.truncated_by,
                    segments=r.turns,
                ),
                timings=shared,
            )
            for i, (event, emb, r) in enumerate(zip(events, embeddings, resolved, strict=True))
        ]
