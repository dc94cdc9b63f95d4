"""What the summary model knows about each candidate sentence, and about a finished summary.

A candidate is one sentence of one segment (a dialogue turn, or a prose window): turns are what the engine embeds,
so a sentence shares its turn's vector and adds its own words, position and role. The features are plain numbers
over numpy arrays; `pipeline/tasks/summary_model.py` weighs them with the shipped weights.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.engine.text import split_sentences
from pipeline.tasks.rouge import tokenize

Matrix = NDArray[np.float64]

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
# When and how much: the facts a reader of a chat summary looks for ("Friday at 6", "£20", "two tickets").
_QUANTITY = re.compile(
    r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|twenty|hundred|thousand|half|dozen|"
    r"today|tomorrow|tonight|yesterday|monday|tuesday|wednesday|thursday|friday|saturday|sunday|weekend|"
    r"morning|evening|week|month|year|pm|am|o'clock|dollars?|pounds?|euros?|bucks)\b",
    re.IGNORECASE,
)
_CAPITALISED = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+")

FEATURES = (
    "cos_doc",  # cosine of the sentence's segment to the document vector
    "cos_doc_z",  # the same, z-scored within the document
    "cos_neighbours",  # mean cosine to the segments before and after
    "cos_max_other",  # highest cosine to any other segment: said again elsewhere
    "position",  # 0 at the first segment, 1 at the last
    "first_segment",
    "second_segment",
    "last_segment",
    "first_in_segment",  # the segment's opening sentence
    "log_words",
    "content_words",  # content words / 10, capped at 1
    "lexical_centrality",  # log1p of how many other sentences share each content word, summed
    "question",
    "answer",  # opens the turn right after another speaker's question
    "filler",
    "quantity",  # numbers, days, times, amounts
    "capitalised",  # capitalised words inside the sentence (names, places), / 3 capped at 1
    "mentions_speaker",  # names another speaker of the dialogue
    "speaker_first",  # the speaker's first turn
    "speaker_share",  # the speaker's share of the dialogue's words
    "speaker_change",  # a different speaker from the segment before
    "log_segments",  # document length (an interaction term for position)
    "segment_word_share",  # this segment's words / the document's
    "dialogue",  # 1 for a dialogue, 0 for prose
)


@dataclass(frozen=True)
class Candidates:
    """One document's candidate sentences: where each comes from, its words and its features."""

    segment: list[int]  # the segment (turn) each sentence comes from
    texts: list[str]
    tokens: list[list[str]]  # lowercase alphanumeric tokens
    features: Matrix  # (n, len(FEATURES))


def candidates(
    segments: Sequence[str],
    vectors: NDArray[np.float32],
    doc_vector: NDArray[np.float32],
    speakers: Sequence[str] | None,
) -> Candidates:
    """Cut every non-empty segment into sentences and describe each one (FEATURES, in that order)."""
    seg_of: list[int] = []
    texts: list[str] = []
    first: list[bool] = []
    for i, segment in enumerate(segments):
        for k, sentence in enumerate(split_sentences(segment)):
            seg_of.append(i)
            texts.append(sentence)
            first.append(k == 0)
    tokens = [tokenize(t) for t in texts]
    if not texts:
        return Candidates([], [], [], np.zeros((0, len(FEATURES))))
    return Candidates(
        seg_of,
        texts,
        tokens,
        _features(segments, vectors, doc_vector, speakers, seg_of=seg_of, texts=texts, first=first),
    )


def _features(
    segments: Sequence[str],
    vectors: NDArray[np.float32],
    doc_vector: NDArray[np.float32],
    speakers: Sequence[str] | None,
    *,
    seg_of: list[int],
    texts: list[str],
    first: list[bool],
) -> Matrix:
    tokens = [tokenize(t) for t in texts]
    n_seg = len(segments)
    v = vectors.astype(np.float64)
    sims = v @ v.T
    cos_doc = v @ doc_vector.astype(np.float64)
    neighbours = np.zeros(n_seg)
    max_other = np.zeros(n_seg)
    for i in range(n_seg):
        around = [sims[i, j] for j in (i - 1, i + 1) if 0 <= j < n_seg]
        neighbours[i] = float(np.mean(around)) if around else 0.0
        others = np.delete(sims[i], i)
        max_other[i] = float(others.max()) if len(others) else 0.0
    spread = float(cos_doc.std())
    cos_z = (cos_doc - cos_doc.mean()) / spread if spread > 0 else np.zeros(n_seg)

    seg_words = np.asarray([len(tokenize(s)) for s in segments], dtype=np.float64)
    total_words = max(float(seg_words.sum()), 1.0)
    voices = list(speakers) if speakers is not None else [""] * n_seg
    share: dict[str, float] = {}
    for voice, words in zip(voices, seg_words, strict=True):
        share[voice] = share.get(voice, 0.0) + float(words)
    names = {tokenize(v)[0] for v in set(voices) if tokenize(v)}
    first_turn_of: dict[str, int] = {}
    for i, voice in enumerate(voices):
        first_turn_of.setdefault(voice, i)

    content = [[t for t in ts if t not in STOP_WORDS] for ts in tokens]
    frequency = Counter(w for ws in content for w in set(ws))
    rows = []
    for n, (i, ts) in enumerate(zip(seg_of, tokens, strict=True)):
        text_words = content[n]
        prev_question = i > 0 and segments[i - 1].rstrip().endswith("?") and voices[i - 1] != voices[i]
        sentence = " ".join(ts)
        raw = texts[n]
        rows.append(
            [
                cos_doc[i],
                cos_z[i],
                neighbours[i],
                max_other[i],
                i / (n_seg - 1) if n_seg > 1 else 0.0,
                float(i == 0),
                float(i == 1),
                float(i == n_seg - 1),
                float(first[n]),
                float(np.log1p(len(ts))),
                min(len(text_words), 10) / 10,
                float(np.log1p(sum(frequency[w] - 1 for w in set(text_words)))),
                float(raw.rstrip().endswith("?")),
                float(prev_question and first[n]),
                float(is_filler_tokens(ts)),
                float(bool(_QUANTITY.search(sentence))),
                min(len(_CAPITALISED.findall(raw)), 3) / 3,
                float(any(t in names and t != _first_token(voices[i]) for t in ts)),
                float(first_turn_of[voices[i]] == i) if speakers is not None else 0.0,
                share[voices[i]] / total_words if speakers is not None else 0.0,
                float(i > 0 and voices[i] != voices[i - 1]) if speakers is not None else 0.0,
                float(np.log1p(n_seg)),
                seg_words[i] / total_words,
                float(speakers is not None),
            ]
        )
    return np.asarray(rows, dtype=np.float64)


def _first_token(voice: str) -> str:
    ts = tokenize(voice)
    return ts[0] if ts else ""


def is_filler_tokens(tokens: Sequence[str]) -> bool:
    """Backchannel and pleasantry: too short, or made only of filler words."""
    return len(tokens) < MIN_CONTENT_TOKENS or all(t in FILLER_WORDS for t in tokens)


def is_filler(sentence: str) -> bool:
    """True for backchannel and pleasantry turns: too short, or made only of filler words."""
    return is_filler_tokens(tokenize(sentence))
