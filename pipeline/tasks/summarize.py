"""Extractive summaries that learn what to pick: candidate sentences scored by shipped boosted trees, chosen within
a word budget without repeating themselves, rendered compactly, with a fitted estimate of their quality.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from pipeline.engine.text import split_sentences
from pipeline.errors import AnswerError
from pipeline.models import Summary
from pipeline.settings import Settings, SummarySettings
from pipeline.tasks.base import Answer, Asked, Batch, RestoreText, read_section, strict_object
from pipeline.tasks.rouge import tokenize
from pipeline.tasks.summary_features import STOP_WORDS, Candidates, candidates, is_filler
from pipeline.tasks.summary_model import QUALITY_FEATURES, SummaryModel, load_summary_model

if TYPE_CHECKING:
    from pipeline.engine.encoder import Encoder

__all__ = ["dialogue_segments", "is_filler", "lead_n", "longest_n", "render_lines", "speaker_label", "summarize"]

Vectors = NDArray[np.float32]

ELLIPSIS = "…"
CUT_MIN_WORDS = 4  # below this a cut sentence is no longer readable
# A candidate scoring under this share of the best one is not worth its words, even when the budget has room.
MIN_RELATIVE_SCORE = 0.3
PERSONAL_PRONOUNS = frozenset("i me my mine you your yours we us our ours".split())  # noqa: SIM905 -- reads better as words
FIRST_PERSON = frozenset("i me my we us our".split())  # noqa: SIM905 -- reads better as words
# Transcripts tag speakers "#Person1#": the tag names who said it, its hashes are markup.
_TAG = re.compile(r"^#(.+)#$")
# Words that open a chat line without adding to it ("Oh, ", "Well, ", "Yeah so "), and emoticons: a summary has no
# room for them, so they are dropped from the start of a rendered sentence.
_OPENER = re.compile(
    r"^(?:(?:hi|hey|hello)\s+[A-Z][a-z]+[,!]\s+|(?:oh|ah|well|yeah|yes|yep|ok|okay|so|um|uh|hmm|hey|hi|hello|haha|hahaha|lol|wow|btw|anyway|listen|look)"
    r"\b[,.!]*\s+)+",
    re.IGNORECASE,
)
_EMOTICON = re.compile(r"\s*(?:[:;=xX8][-^']?[()DPpOo3/\\|*\]\[]+|<3|\(:|\^\^)(?=\s|$)")
_GENERIC = re.compile(r"^(#?person\s*\d+#?|[a-z]|speaker\s*\d+|user|agent|customer|caller)$", re.IGNORECASE)


# ------------------------------------------------------------------------------------------------ public
def summarize(
    segments: list[str],
    segment_vectors: Vectors,
    doc_vector: Vectors,
    *,
    speakers: list[str] | None,
    settings: SummarySettings,
    model: SummaryModel | None = None,
) -> Summary:
    """Pick the sentences the model rates highest, within the bounds, without repeats, in their original order.

    `segments` are dialogue turns (`speakers[i]` saying `segments[i]`) or prose pieces, `segment_vectors` their
    L2-normalised embeddings and `doc_vector` the document's. `sentence_ids` index into `segments` (the
    segments the chosen sentences come from).
    """
    return summarize_with_quality(
        segments, segment_vectors, doc_vector, speakers=speakers, settings=settings, model=model
    )[0]


def summarize_with_quality(
    segments: list[str],
    segment_vectors: Vectors,
    doc_vector: Vectors,
    *,
    speakers: list[str] | None,
    settings: SummarySettings,
    model: SummaryModel | None = None,
) -> tuple[Summary, NDArray[np.float64]]:
    """`summarize`, and the quality features its confidence was read from (`summary_train` fits the estimate on
    exactly these; all zeros for an empty input)."""
    _check_shapes(segments, segment_vectors, speakers)
    if not any(s.strip() for s in segments):
        empty = Summary(text="", sentence_ids=[], confidence=0.0, reasons=["empty input: nothing to summarize"])
        return empty, np.zeros(len(QUALITY_FEATURES))
    model = model or load_summary_model()
    pool = candidates(segments, segment_vectors, doc_vector, speakers)
    scores = model.trees.probability(pool.features)
    reasons: list[str] = []
    present = sum(1 for s in segments if s.strip())
    if present < settings.min_sentences_to_summarize:
        chosen = _in_order(pool, speakers, settings)
        reasons.append(f"only {present} sentence(s), fewer than {settings.min_sentences_to_summarize}: kept whole")
    else:
        chosen = _select(pool, scores, speakers, settings)
        if all(is_filler(pool.texts[j]) for j in range(len(pool.texts))):
            reasons.append("only filler and very short sentences: nothing substantive to pick")
    text, cut = _render_within(pool, chosen, speakers, settings)
    if cut:
        reasons.append(f"the best sentence is longer than the summary's bounds: cut with {ELLIPSIS}")
    quality = quality_features(pool, scores, chosen, speakers=speakers, text=text)
    confidence = float(np.clip(model.quality.predict(quality), 0.0, 1.0))
    ids = sorted({pool.segment[j] for j in chosen})
    return Summary(text=text, sentence_ids=ids, confidence=confidence, reasons=reasons), quality


def dialogue_segments(turns: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Cut (speaker, text) turns into sentences, each with its speaker (for callers that want sentence units)."""
    segments: list[str] = []
    speakers: list[str] = []
    for speaker, text in turns:
        for sentence in split_sentences(text):
            segments.append(sentence)
            speakers.append(speaker)
    return segments, speakers


def lead_n(segments: Sequence[str], n: int) -> list[int]:
    """LEAD-n baseline: the first n non-empty segments."""
    return [i for i, s in enumerate(segments) if s.strip()][:n]


def longest_n(segments: Sequence[str], n: int) -> list[int]:
    """LONGEST-n baseline: the n longest segments (by characters), returned in original order."""
    by_length = sorted((i for i, s in enumerate(segments) if s.strip()), key=lambda i: -len(segments[i]))
    return sorted(by_length[:n])


def speaker_label(speaker: str) -> str:
    """How a speaker is named in a summary: "#Person1#" reads "Person1"; a real name stays as it is."""
    match = _TAG.match(speaker.strip())
    return match.group(1) if match else speaker.strip()


def render_lines(ids: Sequence[int], segments: Sequence[str], speakers: Sequence[str] | None) -> str:
    """Segments as summary text: "Speaker: text" lines for dialogue, one paragraph for prose."""
    if speakers is None:
        return " ".join(segments[i].strip() for i in ids)
    return "\n".join(f"{speaker_label(speakers[i])}: {segments[i].strip()}" for i in ids)


def quality_features(
    pool: Candidates,
    scores: NDArray[np.float64],
    chosen: Sequence[int],
    *,
    speakers: Sequence[str] | None,
    text: str,
) -> NDArray[np.float64]:
    """What the quality estimate reads (QUALITY_FEATURES, in that order) about the summary `text` made of the
    candidates `chosen` (indices into `pool`), given every candidate's score.

    Words are the summary's rendered tokens (speaker names included), unstemmed: the worker does not load the ROUGE
    stemmer. Prose has no speakers: its speaker features are 0.
    """
    tokens = tokenize(text)
    n = max(len(tokens), 1)
    content = [t for t in tokens if t not in STOP_WORDS]
    counts = Counter(t for ts in pool.tokens for t in ts)
    voices: dict[str, set[str]] = {}
    if speakers is not None:
        for segment, ts in zip(pool.segment, pool.tokens, strict=True):
            for t in ts:
                voices.setdefault(t, set()).add(speakers[segment])
    mass = Counter(t for ts in pool.tokens for t in ts if t not in STOP_WORDS)
    present = set(tokens)
    picked = {pool.segment[j] for j in chosen}
    values = [
        sum(c for w, c in mass.items() if w in present) / max(sum(mass.values()), 1),
        pseudo_reference_f1(tokens, pool.tokens, scores),
        float(scores[list(chosen)].sum()) if len(chosen) else 0.0,
        float(np.mean([len(voices.get(t, ())) >= 2 for t in content])) if content else 0.0,
        sum(t in PERSONAL_PRONOUNS for t in tokens) / n,
        sum(t in FIRST_PERSON for t in tokens) / n,
        len({speakers[i] for i in picked}) / max(len(set(speakers)), 1) if speakers is not None else 0.0,
        float(np.mean([np.log1p(counts[t]) for t in content])) if content else 0.0,
        float(speakers is not None and bool(speakers) and all(_GENERIC.match(v.strip()) for v in set(speakers))),
    ]
    assert len(values) == len(QUALITY_FEATURES)
    return np.asarray(values, dtype=np.float64)


def pseudo_reference_f1(
    summary: Sequence[str], candidates: Sequence[Sequence[str]], scores: NDArray[np.float64]
) -> float:
    """ROUGE-1 F1 of the summary's tokens against a reference-free stand-in for the human summary: every candidate's
    tokens, each counted with its sentence's score (the trees' belief that a human would keep it)."""
    expected: dict[str, float] = {}
    for ts, score in zip(candidates, scores, strict=True):
        for t in ts:
            expected[t] = expected.get(t, 0.0) + float(score)
    own = Counter(summary)
    overlap = sum(min(c, expected.get(t, 0.0)) for t, c in own.items())
    total = sum(expected.values())
    if overlap <= 0 or total <= 0:
        return 0.0
    precision, recall = overlap / sum(own.values()), overlap / total
    return 2 * precision * recall / (precision + recall)


# ----------------------------------------------------------------------------------------------- selection
def _check_shapes(segments: Sequence[str], vectors: Vectors, speakers: Sequence[str] | None) -> None:
    if len(vectors) != len(segments):
        raise ValueError(f"{len(segments)} segments but {len(vectors)} segment vectors")
    if speakers is not None and len(speakers) != len(segments):
        raise ValueError(f"{len(segments)} segments but {len(speakers)} speakers")


def _select(
    pool: Candidates, scores: NDArray[np.float64], speakers: Sequence[str] | None, settings: SummarySettings
) -> list[int]:
    """Best-scored first, while the rendered text stays within the bounds; a repeat of what is chosen is skipped."""
    order = [int(j) for j in np.argsort(-scores, kind="stable")]
    chosen: list[int] = []
    covered: set[str] = set()
    for j in order:
        if len(chosen) >= settings.max_sentences:
            break
        if chosen and scores[j] < MIN_RELATIVE_SCORE * scores[chosen[0]]:
            break
        content = {t for t in pool.tokens[j] if t not in STOP_WORDS}
        if chosen and content and len(content & covered) / len(content) >= settings.max_overlap:
            continue  # says again what the summary says
        if _fits(render_candidates(pool, [*chosen, j], speakers), settings):
            chosen.append(j)
            covered |= content
    return sorted(chosen) or order[:1]  # nothing fits whole: keep the best one, `_render_within` cuts it


def _in_order(pool: Candidates, speakers: Sequence[str] | None, settings: SummarySettings) -> list[int]:
    """A short text is its own summary: its sentences from the start while they fit."""
    kept: list[int] = []
    for j in range(len(pool.texts)):
        if len(kept) >= settings.max_sentences or not _fits(render_candidates(pool, [*kept, j], speakers), settings):
            break
        kept.append(j)
    return kept or [0]


def _fits(text: str, settings: SummarySettings) -> bool:
    return len(text.split()) <= settings.max_words and len(text) <= settings.max_chars


# ------------------------------------------------------------------------------------------------- output
def compact(sentence: str) -> str:
    """A sentence without its empty opener ("Oh, well, ", "Hi Tom, ") and emoticons; unchanged when under two words
    would be left."""
    trimmed = _EMOTICON.sub("", _OPENER.sub("", sentence.strip())).strip()
    if len(trimmed.split()) < 2:  # "Okay then." is not improved by "Then."
        return sentence.strip()
    return trimmed[0].upper() + trimmed[1:]


def render_candidates(pool: Candidates, ids: Sequence[int], speakers: Sequence[str] | None) -> str:
    """Chosen sentences in order, compacted; sentences of one turn share one "Speaker: ..." line, prose is one
    paragraph."""
    if speakers is None:
        return " ".join(compact(pool.texts[j]) for j in sorted(ids))
    lines: list[str] = []
    last = -1
    for j in sorted(ids):
        seg = pool.segment[j]
        if seg == last:
            lines[-1] = f"{lines[-1]} {compact(pool.texts[j])}"
        else:
            lines.append(f"{speaker_label(speakers[seg])}: {compact(pool.texts[j])}")
        last = seg
    return "\n".join(lines)


def _render_within(
    pool: Candidates, chosen: list[int], speakers: Sequence[str] | None, settings: SummarySettings
) -> tuple[str, bool]:
    text = render_candidates(pool, chosen, speakers)
    if _fits(text, settings):
        return text, False
    return _cut(text, settings), True


def _cut(text: str, settings: SummarySettings) -> str:
    """Keep whole words up to both bounds, then an ellipsis."""
    words = text.split(" ")
    kept: list[str] = []
    for word in words:
        candidate = " ".join([*kept, word])
        if len(candidate.split()) > settings.max_words or len(candidate) + len(ELLIPSIS) > settings.max_chars:
            break
        kept.append(word)
    if len(kept) < CUT_MIN_WORDS:  # words longer than the bounds: cut inside the text instead
        return text[: settings.max_chars - len(ELLIPSIS)].rstrip() + ELLIPSIS
    return " ".join(kept).rstrip(" ,;:-") + ELLIPSIS


# ------------------------------------------------------------------------------------------------ the task
class SummaryAnswer(Answer):
    text: str = Field(min_length=1)


class SummarizeTask:
    """Summarize long texts and conversations; an escalated item that has a mini summary gets an abstractive one."""

    name: ClassVar[str] = "summarize"
    field: ClassVar[str] = "summary"

    def __init__(self, settings: Settings) -> None:
        self._summary = settings.summary
        self._min_confidence = settings.routing.summary_min_confidence
        self._model = load_summary_model()

    @classmethod
    def configure(cls, settings: Settings) -> SummarizeTask:
        return cls(settings)

    @classmethod
    def load(cls, settings: Settings, encoder: Encoder) -> SummarizeTask:
        return cls(settings)

    def run(self, batch: Batch) -> list[Summary | None]:
        out: list[Summary | None] = []
        for job, emb in zip(batch.jobs, batch.embeddings, strict=True):
            if not job.summarize:
                out.append(None)
                continue
            speakers = [job.speakers[s] for s in emb.segment_sources] if job.speakers else None
            out.append(
                summarize(
                    emb.segments,
                    emb.segment_vectors,
                    emb.vector,
                    speakers=speakers,
                    settings=self._summary,
                    model=self._model,
                )
            )
        return out

    def reasons(self, s: Summary | None) -> list[str]:
        return ["summarize.low_confidence"] if s is not None and s.text and s.confidence < self._min_confidence else []

    # ------------------------------------------------------------------------------- the large model's half
    def wanted(self, asked: Asked) -> bool:
        return asked.result.summary is not None and bool(asked.result.summary.text)

    def instruction(self, asked: Asked) -> str:
        return (
            f"- summary: an abstractive summary of the item in at most {self._summary.max_words} words "
            f"({self._summary.max_chars} characters), in the item's language, naming who said or decided what."
        )

    def answer_schema(self, asked: Asked) -> dict[str, Any]:
        return strict_object({"text": {"type": "string"}})

    def read(self, section: Mapping[str, Any], asked: Asked) -> SummaryAnswer:
        answer = read_section(SummaryAnswer, self.field, section)
        if not answer.text.strip():
            raise AnswerError("summary is empty")
        return answer

    def apply(self, answer: Answer, asked: Asked, restore: RestoreText) -> Summary:
        assert isinstance(answer, SummaryAnswer)
        return Summary(text=restore(answer.text.strip()), sentence_ids=[], confidence=1.0)

    def label(self, answer: Answer, asked: Asked, restore: RestoreText) -> dict[str, Any] | None:
        assert isinstance(answer, SummaryAnswer)
        return {"summary": restore(answer.text.strip())}
