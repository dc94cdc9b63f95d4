"""Hashed word and character n-grams of a text: the lexical channel of a trained head, in numpy at run time.

Sentence embeddings blur the few words that tell fine-grained intents apart ("card" vs "virtual card", "top up"
vs "top-up failed"); a bag of hashed n-grams keeps them. The features are scikit-learn's HashingVectorizer idea
reimplemented with a stable hash (zlib.crc32; Python's own `hash` is salted per process), so the worker scores them
with numpy alone and a head file means the same on every machine.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

# Bump when the features change (tokens, n-grams, hash, weighting): heads fitted under another recipe are refused.
LEXICAL_RECIPE = "minnow-lexical-1"
HASH_BITS = 18  # 262,144 buckets per channel; only the buckets seen in training are kept in a head
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (3, 4, 5)  # inside word boundaries (" top ", "top-up" -> " top", "top-", ...), like char_wb
_WORD = re.compile(r"\w+")
_CHANNELS = 2  # words, characters: each L2-normalised and weighted 1/sqrt(2), so a text's vector has norm 1


@dataclass(frozen=True)
class Sparse:
    """Hashed features of a batch of texts as coordinates: row (text), bucket and value."""

    rows: NDArray[np.int64]
    buckets: NDArray[np.int64]
    values: NDArray[np.float64]
    n: int


def _bucket(feature: str) -> int:
    return zlib.crc32(feature.encode("utf-8")) & ((1 << HASH_BITS) - 1)


@lru_cache(maxsize=1 << 16)
def _word_grams(word: str) -> tuple[int, ...]:
    """The character n-gram buckets of one word, offset into the second channel (words recur: hashed once)."""
    padded = f" {word} "
    offset = 1 << HASH_BITS
    return tuple(offset + _bucket(padded[i : i + n]) for n in CHAR_NGRAMS for i in range(len(padded) - n + 1))


def text_features(text: str) -> dict[int, float]:
    """Bucket -> value for one text: sublinear counts (1 + log tf), per channel L2-normalised.

    Buckets of the character channel are offset by 2**HASH_BITS so that the two channels never collide."""
    words = _WORD.findall(text.lower())
    grams = [" ".join(words[i : i + n]) for n in WORD_NGRAMS for i in range(len(words) - n + 1)]
    channels = (
        Counter(_bucket("w" + g) for g in grams),
        Counter(b for word in words for b in _word_grams(word)),
    )
    out: dict[int, float] = {}
    for counts in channels:
        if not counts:
            continue
        weights = {b: 1.0 + math.log(c) for b, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values()) * _CHANNELS)
        out.update({b: w / norm for b, w in weights.items()})
    return out


def batch_features(texts: Sequence[str]) -> Sparse:
    rows: list[int] = []
    buckets: list[int] = []
    values: list[float] = []
    for r, text in enumerate(texts):
        feats = text_features(text)
        rows += [r] * len(feats)
        buckets += feats.keys()
        values += feats.values()
    return Sparse(np.asarray(rows, dtype=np.int64), np.asarray(buckets, dtype=np.int64), np.asarray(values), len(texts))


def columns(features: Sparse, kept: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Each feature's column among the `kept` buckets (sorted), and which features have one (others weigh 0)."""
    col = np.searchsorted(kept, features.buckets)
    found = col < len(kept)
    found[found] = kept[col[found]] == features.buckets[found]
    return col, found


def scores(features: Sparse, kept: NDArray[np.int64], weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """The lexical logits: (texts, labels) from the weights of the kept buckets, `weights` shaped (kept, labels)."""
    col, found = columns(features, kept)
    rows = features.rows[found]  # in order: batch_features lists each text's features together
    out = np.zeros((features.n, weights.shape[1]))
    if len(rows):
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        out[rows[starts]] = np.add.reduceat(weights[col[found]] * features.values[found, None], starts, axis=0)
    return out
