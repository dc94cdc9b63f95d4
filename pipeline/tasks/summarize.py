"""Extractive summaries from sentence embeddings: centrality scoring, MMR selection, speaker coverage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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

if TYPE_CHECKING:
    from pipeline.engine.encoder import Encoder

Vectors = NDArray[np.float32]

ELLIPSIS = "…"
# Words that carry no content on their own: a turn made only of these ("ok", "yeah thanks", "oh right")
# is a backchannel or a pleasantry, and a summary line spent on it is a line lost.
FILLER_WORDS = frozenset(
    """ok okay k yeah yes yep yup ya no nope nah sure thanks thank thx ty you so much great cool right alright
    fine hi hello hey bye goodbye um uh hmm mm mhm oh ah good perfect lovely nice got it that s sounds will do
    done lol haha wow cheers morning afternoon evening deal too all well see take care welcome re not bad
    really me for yo man legend i m and the a of course exactly awesome anytime np""".split()  # noqa: SIM905 -- reads better as words
)
# Common function words: a sentence made mostly of them ("how can I help you today") says little.
STOP_WORDS = frozenset(
    """a an the and or but if so to of in on at by for with from as is are was were be been being am do does
    did have has had i you he she it we they me him her us them my your his its our their this that these
    those there here what which who whom how when where why can could would should will shall may might must
    just not no yes ok okay yeah also then than too very really about up down out over again all any some
    s t ll re ve d m get got go going let know think one""".split()  # noqa: SIM905 -- reads better as words
)
MIN_CONTENT_TOKENS = 4  # shorter sentences rarely carry a fact worth a summary line
CUT_MIN_CHARS = 20  # below this a cut sentence is no longer readable
LOW_CONFIDENCE = 0.5
# MMR only discourages repeats: a copy as relevant as its original can still outscore everything else.
# At this cosine two sentences say the same thing, so a near-copy of a chosen sentence is dropped outright.
DUPLICATE_COSINE = 0.95

# Relevance weights, chosen and measured on the bundled dialogue set (docs/summarization.md). Features are
# z-scored within the document (one unit = one standard deviation) except the 0..1 content-word count.
W_SEMANTIC = 0.5  # cosine to the document vector
W_LEXICAL = 0.5  # content words shared with other sentences
W_INFORMATIVE = 3.0  # content words in the sentence / INFORMATIVE_WORDS, capped at 1
INFORMATIVE_WORDS = 10
W_PLEASANTRY = 0.5  # cosine to the centroid of the document's filler turns
W_QUESTION = 0.5  # questions ask for facts; the answers carry them
W_EDGE = 0.5  # dialogue: sentences in the opening or closing EDGE_SHARE of the conversation
EDGE_SHARE = 0.15
W_LEAD = 0.3  # prose: a light preference for early sentences
W_SPEAKER = 0.1  # dialogue: bonus for a main speaker not yet heard in the summary
MAIN_SPEAKER_SHARE = 0.2  # a speaker with this share of the content words is a main one


@dataclass(frozen=True)
class _Candidates:
    """The sentences that may be selected, and what the scorer knows about them."""

    ids: list[int]  # indices into the segments
    vectors: Vectors
    relevance: NDArray[np.float64]  # in [0, 1]
    speakers: Sequence[str] | None  # one per segment (not per candidate), as given to `summarize`
    has_content: bool  # False when every sentence was filler and the pool fell back to all of them


# ------------------------------------------------------------------------------------------------ public
def summarize(
    segments: list[str],
    segment_vectors: Vectors,
    doc_vector: Vectors,
    *,
    speakers: list[str] | None,
    settings: SummarySettings,
) -> Summary:
    """Pick the sentences that best cover the document, without repeating themselves, within the bounds.

    `segments` are sentences (or dialogue sentences, `speakers[i]` saying `segments[i]`), `segment_vectors`
    their L2-normalised embeddings and `doc_vector` the document's. `sentence_ids` index into `segments`.
    """
    _check_shapes(segments, segment_vectors, speakers)
    present = [i for i, s in enumerate(segments) if s.strip()]
    if not present:
        return Summary(text="", sentence_ids=[], confidence=0.0, reasons=["empty input: nothing to summarize"])
    chosen, reasons = _choose(present, segments, segment_vectors, doc_vector, speakers=speakers, settings=settings)
    text, cut = _render(chosen, segments, speakers, settings.max_chars)
    if cut:
        reasons.append(f"the best sentence is longer than {settings.max_chars} characters: cut with {ELLIPSIS}")
    confidence = _confidence(segment_vectors[chosen], doc_vector)
    if confidence < LOW_CONFIDENCE:
        reasons.append(f"low coverage: the summary is far from the document's centroid ({confidence:.2f})")
    return Summary(text=text, sentence_ids=chosen, confidence=confidence, reasons=reasons)


def dialogue_segments(turns: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Cut (speaker, text) turns into sentences, each with its speaker: the input `summarize` expects."""
    segments: list[str] = []
    speakers: list[str] = []
    for speaker, text in turns:
        for sentence in split_sentences(text):
            segments.append(sentence)
            speakers.append(speaker)
    return segments, speakers


def lead_n(segments: Sequence[str], n: int) -> list[int]:
    """LEAD-n baseline: the first n non-empty sentences."""
    return [i for i, s in enumerate(segments) if s.strip()][:n]


def longest_n(segments: Sequence[str], n: int) -> list[int]:
    """LONGEST-n baseline: the n longest sentences (by characters), returned in original order."""
    by_length = sorted((i for i, s in enumerate(segments) if s.strip()), key=lambda i: -len(segments[i]))
    return sorted(by_length[:n])


def render_lines(ids: Sequence[int], segments: Sequence[str], speakers: Sequence[str] | None) -> str:
    """Sentences as summary text: "Speaker: text" lines for dialogue, one paragraph for prose."""
    if speakers is None:
        return " ".join(segments[i].strip() for i in ids)
    return "\n".join(f"{speakers[i]}: {segments[i].strip()}" for i in ids)


def is_filler(sentence: str) -> bool:
    """True for backchannel and pleasantry turns: too short, or made only of filler words."""
    tokens = tokenize(sentence)
    return len(tokens) < MIN_CONTENT_TOKENS or all(t in FILLER_WORDS for t in tokens)


def _choose(
    present: list[int],
    segments: Sequence[str],
    vectors: Vectors,
    doc_vector: Vectors,
    *,
    speakers: Sequence[str] | None,
    settings: SummarySettings,
) -> tuple[list[int], list[str]]:
    """The segment indices to show, in original order, and why the choice is unusual when it is."""
    if len(present) < settings.min_sentences_to_summarize:
        reason = f"only {len(present)} sentence(s), fewer than {settings.min_sentences_to_summarize}: kept whole"
        return _fit_in_order(present, segments, speakers, settings), [reason]
    pool = _candidates(present, segments, vectors, doc_vector, speakers)
    reasons = [] if pool.has_content else ["only filler and very short sentences: nothing substantive to pick"]
    return sorted(_select(pool, segments, settings)), reasons


# ------------------------------------------------------------------------------------------------ scoring
def _check_shapes(segments: Sequence[str], vectors: Vectors, speakers: Sequence[str] | None) -> None:
    if len(vectors) != len(segments):
        raise ValueError(f"{len(segments)} segments but {len(vectors)} segment vectors")
    if speakers is not None and len(speakers) != len(segments):
        raise ValueError(f"{len(segments)} segments but {len(speakers)} speakers")


def _candidates(
    present: list[int],
    segments: Sequence[str],
    vectors: Vectors,
    doc_vector: Vectors,
    speakers: Sequence[str] | None,
) -> _Candidates:
    content = [i for i in present if not is_filler(segments[i])]
    filler = sorted(set(present) - set(content))
    ids = content or present  # all filler: better than nothing
    features = _Features(
        vectors=vectors[ids].astype(np.float64),
        texts=[segments[i] for i in ids],
        positions=np.asarray([i / len(segments) for i in ids], dtype=np.float64),
        doc_vector=doc_vector.astype(np.float64),
        filler_centroid=_unit(vectors[filler].astype(np.float64).mean(axis=0)) if content and filler else None,
        dialogue=speakers is not None,
    )
    return _Candidates(ids, vectors[ids], _relevance(features), speakers, has_content=bool(content))


@dataclass(frozen=True)
class _Features:
    vectors: NDArray[np.float64]
    texts: list[str]
    positions: NDArray[np.float64]  # 0 at the start of the document, towards 1 at its end
    doc_vector: NDArray[np.float64]
    filler_centroid: NDArray[np.float64] | None  # where this document's "ok / thanks / bye" turns sit
    dialogue: bool


def _relevance(f: _Features) -> NDArray[np.float64]:
    """A sentence's worth, scaled to [0, 1] within the document so MMR weighs it against cosine redundancy."""
    words = [[t for t in tokenize(text) if t not in STOP_WORDS] for text in f.texts]
    score = W_SEMANTIC * _z(f.vectors @ f.doc_vector) + W_LEXICAL * _z(_lexical_centrality(words))
    score += W_INFORMATIVE * np.minimum([len(w) for w in words], INFORMATIVE_WORDS) / INFORMATIVE_WORDS
    score -= W_QUESTION * np.asarray([t.rstrip().endswith("?") for t in f.texts], dtype=np.float64)
    if f.filler_centroid is not None:
        score -= W_PLEASANTRY * _z(f.vectors @ f.filler_centroid)
    if f.dialogue:  # openings and closings are greetings and goodbyes, whatever their words
        score -= W_EDGE * ((f.positions < EDGE_SHARE) | (f.positions > 1 - EDGE_SHARE))
    else:  # prose tends to state its point early
        score += W_LEAD * (1 - f.positions)
    low, high = float(score.min()), float(score.max())
    return (score - low) / (high - low) if high > low else np.ones_like(score)


def _lexical_centrality(words: Sequence[Sequence[str]]) -> NDArray[np.float64]:
    """For each sentence, how many other sentences share each of its content words (summed over words)."""
    frequency = Counter(w for ws in words for w in set(ws))
    return np.asarray([sum(frequency[w] - 1 for w in set(ws)) for ws in words], dtype=np.float64)


def _z(values: NDArray[np.float64]) -> NDArray[np.float64]:
    spread = float(values.std())
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


# ----------------------------------------------------------------------------------------------- selection
def _select(pool: _Candidates, segments: Sequence[str], settings: SummarySettings) -> list[int]:
    """Greedy MMR within the bounds; returns segment indices."""
    sims = pool.vectors.astype(np.float64) @ pool.vectors.T.astype(np.float64)
    main = _main_speakers(pool, segments)
    chosen: list[int] = []  # positions in pool
    remaining = set(range(len(pool.ids)))
    while remaining and len(chosen) < settings.max_sentences:
        best = max(
            sorted(remaining),
            key=lambda j: _mmr_gain(j, chosen, pool=pool, sims=sims, main=main, lam=settings.redundancy),
        )
        remaining.discard(best)
        if _rendered_length([*chosen, best], segments, pool) <= settings.max_chars:
            chosen.append(best)
            remaining -= {j for j in remaining if sims[j, best] >= DUPLICATE_COSINE}
        elif not chosen and all(_rendered_length([j], segments, pool) > settings.max_chars for j in remaining):
            chosen.append(best)  # nothing fits whole: keep the best one, `_render` cuts it
            break
    return [pool.ids[c] for c in chosen]


def _mmr_gain(
    j: int, chosen: list[int], *, pool: _Candidates, sims: NDArray[np.float64], main: set[str], lam: float
) -> float:
    """Relevance (plus a new main voice) weighted by `lam`, minus redundancy with the chosen by 1 - `lam`."""
    redundancy = max((float(sims[j, c]) for c in chosen), default=0.0)
    relevance = float(pool.relevance[j])
    if pool.speakers is not None:
        voice = pool.speakers[pool.ids[j]]
        if voice in main and all(pool.speakers[pool.ids[c]] != voice for c in chosen):
            relevance += W_SPEAKER
    return lam * relevance - (1 - lam) * redundancy


def _main_speakers(pool: _Candidates, segments: Sequence[str]) -> set[str]:
    """Speakers holding at least MAIN_SPEAKER_SHARE of the content words: the ones a summary should hear."""
    if pool.speakers is None:
        return set()
    words = Counter[str]()
    for i in pool.ids:
        words[pool.speakers[i]] += sum(t not in STOP_WORDS for t in tokenize(segments[i]))
    total = sum(words.values()) or 1
    return {speaker for speaker, n in words.items() if n / total >= MAIN_SPEAKER_SHARE}


def _rendered_length(positions: list[int], segments: Sequence[str], pool: _Candidates) -> int:
    return len(render_lines(sorted(pool.ids[p] for p in positions), segments, pool.speakers))


def _fit_in_order(
    present: list[int], segments: Sequence[str], speakers: Sequence[str] | None, settings: SummarySettings
) -> list[int]:
    """A short text is its own summary: keep its sentences from the start while they fit."""
    kept: list[int] = []  # the first one alone may not fit: `_render` then cuts it
    for i in present:
        if len(render_lines([*kept, i], segments, speakers)) > settings.max_chars:
            break
        kept.append(i)
    return kept or present[:1]


# ------------------------------------------------------------------------------------------------- output
def _render(
    ids: list[int], segments: Sequence[str], speakers: Sequence[str] | None, max_chars: int
) -> tuple[str, bool]:
    text = render_lines(ids, segments, speakers)
    if len(text) <= max_chars:
        return text, False
    return _cut_at_word(text, max_chars), True


def _cut_at_word(text: str, max_chars: int) -> str:
    room = max_chars - len(ELLIPSIS)
    head = text[:room]
    space = head.rfind(" ")
    if space >= CUT_MIN_CHARS and not text[room].isspace():
        head = head[:space]
    return head.rstrip(" ,;:-") + ELLIPSIS


def _confidence(chosen: Vectors, doc_vector: Vectors) -> float:
    """Cosine of the summary centroid to the document vector, rescaled so that 0.5 -> 0 and 1 -> 1."""
    if len(chosen) == 0:
        return 0.0
    cosine = float(_unit(chosen.astype(np.float64).mean(axis=0)) @ doc_vector.astype(np.float64))
    return float(np.clip((cosine - 0.5) / 0.5, 0.0, 1.0))


def _unit(vector: NDArray[np.float64]) -> NDArray[np.float64]:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


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
                summarize(emb.segments, emb.segment_vectors, emb.vector, speakers=speakers, settings=self._summary)
            )
        return out

    def reasons(self, s: Summary | None) -> list[str]:
        return ["summarize.low_confidence"] if s is not None and s.text and s.confidence < self._min_confidence else []

    # ------------------------------------------------------------------------------- the large model's half
    def wanted(self, asked: Asked) -> bool:
        return asked.result.summary is not None and bool(asked.result.summary.text)

    def instruction(self, asked: Asked) -> str:
        return (
            f"- summary: an abstractive summary of the item in at most {self._summary.max_sentences} sentences and "
            f"{self._summary.max_chars} characters, in the item's language."
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
