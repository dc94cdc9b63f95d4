"""The mini model over a batch of events: one encoder pass, then every task, then the route."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.engine import Encoder, TextEmbedding, load_encoder
from pipeline.engine.text import clean, split_sentences
from pipeline.errors import InferenceError, MinnowError
from pipeline.models import (
    Anomaly,
    AnyEvent,
    Classification,
    Conversation,
    ErrorRecord,
    FeedEvent,
    InputInfo,
    IoTMessage,
    ModelInfo,
    Moderation,
    Result,
    Summary,
    TranscriptSegment,
)
from pipeline.settings import Settings
from pipeline.tasks.anomaly import Bounds, load_bounds, score_readings
from pipeline.tasks.classify import Classifier
from pipeline.tasks.heads import HeadFile
from pipeline.tasks.labels import load_label_sets
from pipeline.tasks.moderate import ModerationConfig, Moderator
from pipeline.tasks.route import decide
from pipeline.tasks.summarize import summarize

log = logging.getLogger(__name__)


@dataclass
class _Job:
    """What one event needs from the encoder and which tasks run on it."""

    event: AnyEvent
    text: str | list[str]
    family: str | None
    moderate: bool
    by_sentence: bool
    speakers: list[str] | None = None


def build_classifier(settings: Settings, encoder: Encoder) -> Classifier:
    """The configured label sets, with the trained heads when MINNOW_HEAD_FILE names some."""
    heads = HeadFile.load(settings.head_file, encoder.files.version) if settings.head_file else None
    return Classifier.build(
        load_label_sets(settings.labels_file), encoder, heads, min_confidence=settings.routing.classify_min_confidence
    )


def build_moderator(settings: Settings, encoder: Encoder) -> Moderator:
    """The moderation heads (fitted once per model build, then cached) under the configured policy."""
    policy = ModerationConfig.from_yaml(settings.moderation_file) if settings.moderation_file else None
    return Moderator.load(encoder, Path(settings.engine.cache_dir), policy)


def _as_text(text: str | list[str]) -> str:
    return text if isinstance(text, str) else "\n".join(text)


class MiniModel:
    """Everything the mini model does to a batch of events, synchronously (see runtime.py for async)."""

    def __init__(
        self,
        encoder: Encoder,
        classifier: Classifier,
        moderator: Moderator,
        bounds: dict[str, Bounds],
        settings: Settings,
    ) -> None:
        self.encoder = encoder
        self.classifier = classifier
        self.moderator = moderator
        self.bounds = bounds
        self.settings = settings
        manifest = encoder.files.manifest
        self.model_info = ModelInfo(
            name=str(manifest["name"]), version=str(manifest["version"]), quantization=encoder.files.precision
        )

    @classmethod
    def load(cls, settings: Settings) -> MiniModel:
        encoder = load_encoder(settings.engine)
        return cls(
            encoder,
            build_classifier(settings, encoder),
            build_moderator(settings, encoder),
            load_bounds(settings.bounds_file),
            settings,
        )

    # ------------------------------------------------------------------------------------------ public
    def process(self, events: Sequence[AnyEvent]) -> list[Result | ErrorRecord]:
        """One result or error record per event, in order. A failing batch is bisected to find the poison item."""
        if not events:
            return []
        try:
            return list(self._process_batch(events))
        except Exception as exc:  # any failure, typed or not, must cost only the item that causes it
            if len(events) == 1:
                log.warning("event %s failed in the engine: %s", events[0].id, exc)
                code = exc.code if isinstance(exc, MinnowError) else InferenceError.code
                return [ErrorRecord(error=code, message=f"{type(exc).__name__}: {exc}", id=events[0].id)]
            mid = len(events) // 2
            return self.process(events[:mid]) + self.process(events[mid:])

    # ---------------------------------------------------------------------------------------- internals
    def _job(self, event: AnyEvent) -> _Job:
        min_sentences = self.settings.summary.min_sentences_to_summarize
        if isinstance(event, FeedEvent | TranscriptSegment):
            text = clean(event.text, self.settings.engine.max_text_chars).text
            if not text:  # nothing to judge: a label for an empty post would be a confident guess
                return _Job(event, "", None, moderate=False, by_sentence=False)
            if isinstance(event, TranscriptSegment):
                return _Job(event, event.text, "transcript", moderate=True, by_sentence=False)
            long_post = len(split_sentences(text)) >= min_sentences
            return _Job(event, event.text, "feed", moderate=True, by_sentence=long_post)
        if isinstance(event, Conversation):
            turns = sorted(event.segments, key=lambda s: s.seq)
            return _Job(
                event,
                [t.text for t in turns],
                "transcript",
                moderate=True,
                by_sentence=len(turns) >= min_sentences,
                speakers=[t.speaker for t in turns],
            )
        return _Job(event, event.text or "", "iot" if event.text else None, moderate=False, by_sentence=False)

    def _process_batch(self, events: Sequence[AnyEvent]) -> list[Result]:
        started = time.perf_counter()
        jobs = [self._job(e) for e in events]
        n = len(jobs)

        t = time.perf_counter()
        embeddings = self.encoder.embed_documents([j.text for j in jobs], [j.by_sentence for j in jobs])
        encode_ms = (time.perf_counter() - t) * 1000
        if len(embeddings) != n:  # the count invariant that keeps results aligned with offsets
            raise InferenceError(f"encoder returned {len(embeddings)} embeddings for {n} events")

        t = time.perf_counter()
        classifications = self._classify(jobs, embeddings)
        classify_ms = (time.perf_counter() - t) * 1000

        t = time.perf_counter()
        moderations = self._moderate(jobs, embeddings)
        moderate_ms = (time.perf_counter() - t) * 1000

        t = time.perf_counter()
        summaries = [self._summary(j, e) for j, e in zip(jobs, embeddings, strict=True)]
        summarize_ms = (time.perf_counter() - t) * 1000

        anomalies = [
            score_readings(j.event.readings, self.bounds) if isinstance(j.event, IoTMessage) else None for j in jobs
        ]
        total_ms = (time.perf_counter() - started) * 1000
        shared = {
            "encode_ms": encode_ms / n,
            "classify_ms": classify_ms / n,
            "moderate_ms": moderate_ms / n,
            "summarize_ms": summarize_ms / n,
            "engine_ms": total_ms / n,
            "batch_size": float(n),
        }
        results = []
        for i, (job, emb) in enumerate(zip(jobs, embeddings, strict=True)):
            results.append(
                self._result(
                    job,
                    emb=emb,
                    classification=classifications[i],
                    moderation=moderations[i],
                    summary=summaries[i],
                    anomaly=anomalies[i],
                    timings=shared,
                )
            )
        return results

    def _classify(self, jobs: Sequence[_Job], embeddings: Sequence[TextEmbedding]) -> list[Classification | None]:
        out: list[Classification | None] = [None] * len(jobs)
        by_family: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            if job.family is not None and job.family in self.classifier.label_sets:
                by_family.setdefault(job.family, []).append(i)
        for family, idx in by_family.items():
            vectors = np.stack([embeddings[i].vector for i in idx])
            for i, c in zip(idx, self.classifier.classify(family, vectors), strict=True):
                out[i] = c
        return out

    def _moderate(self, jobs: Sequence[_Job], embeddings: Sequence[TextEmbedding]) -> list[Moderation | None]:
        out: list[Moderation | None] = [None] * len(jobs)
        idx = [i for i, j in enumerate(jobs) if j.moderate]
        if not idx:
            return out
        texts = [_as_text(jobs[i].text) for i in idx]
        vectors = np.stack([embeddings[i].vector for i in idx])
        for i, m in zip(idx, self.moderator.moderate(texts, vectors), strict=True):
            out[i] = m
        return out

    def _summary(self, job: _Job, emb: TextEmbedding) -> Summary | None:
        if not job.by_sentence:
            return None
        speakers = [job.speakers[s] for s in emb.segment_sources] if job.speakers else None
        return summarize(
            emb.segments, emb.segment_vectors, emb.vector, speakers=speakers, settings=self.settings.summary
        )

    def _result(
        self,
        job: _Job,
        *,
        emb: TextEmbedding,
        classification: Classification | None,
        moderation: Moderation | None,
        summary: Summary | None,
        anomaly: Anomaly | None,
        timings: dict[str, float],
    ) -> Result:
        route, reasons = decide(
            self.settings.routing,
            classification=classification,
            moderation=moderation,
            summary=summary,
            anomaly=anomaly,
        )
        return Result(
            id=job.event.id,
            kind=job.event.kind,
            classification=classification,
            moderation=moderation,
            summary=summary,
            anomaly=anomaly,
            route=route,
            escalation_reasons=reasons,
            model=self.model_info,
            input=InputInfo(
                tokens=emb.tokens,
                chunks=len(emb.segments),
                truncated=emb.truncated,
                segments=len(job.event.segments) if isinstance(job.event, Conversation) else None,
            ),
            timings={k: round(v, 3) for k, v in timings.items()},
        )
