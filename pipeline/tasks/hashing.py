"""scikit-learn's HashingVectorizer (binary, l2, no alternate sign), in plain Python and numpy for the worker.

The moderation heads were fitted on `HashingVectorizer` features (word 1-2-grams and `char_wb` 2-5-grams); the
worker computes the same features without scikit-learn (and so without scipy): the same tokenization, the same
MurmurHash3 (x86, 32-bit, seed 0, signed) and the same bucket (`abs(h) % n_features`). A test compares it with
scikit-learn's own transform where scikit-learn is installed (tests/unit/test_hashing.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

_MASK = 0xFFFFFFFF
_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern
_WHITE_SPACES = re.compile(r"\s\s+")  # what char_wb collapses before splitting into words


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK


def _scramble(k: int) -> int:
    k = (k * 0xCC9E2D51) & _MASK
    return (_rotl(k, 15) * 0x1B873593) & _MASK


def murmurhash3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit of `data`, as a signed int (scikit-learn's `murmurhash3_bytes_s32`)."""
    h = seed & _MASK
    end = len(data) & ~3
    for i in range(0, end, 4):
        h ^= _scramble(int.from_bytes(data[i : i + 4], "little"))
        h = (_rotl(h, 13) * 5 + 0xE6546B64) & _MASK
    tail = data[end:]
    if tail:
        h ^= _scramble(int.from_bytes(tail, "little"))
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h - (1 << 32) if h & 0x80000000 else h


def bucket(feature: str, n_features: int) -> int:
    """The column scikit-learn's FeatureHasher gives `feature` (abs(-2**31) handled as it does)."""
    h = murmurhash3_32(feature.encode("utf-8"))
    if h == -(1 << 31):
        return (2147483647 - (n_features - 1)) % n_features
    return abs(h) % n_features


@lru_cache(maxsize=1 << 17)
def _cached_bucket(feature: str, n_features: int) -> int:
    return bucket(feature, n_features)


def word_ngrams(text: str, ngram_range: tuple[int, int]) -> list[str]:
    """analyzer="word" with lowercase=False: tokens of two or more word characters, then n-grams joined by a space."""
    tokens = _TOKEN.findall(text)
    low, high = ngram_range
    grams = list(tokens) if low == 1 else []
    for n in range(max(low, 2), min(high, len(tokens)) + 1):
        grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return grams


@lru_cache(maxsize=1 << 16)
def _word_char_grams(word: str, low: int, high: int) -> tuple[str, ...]:
    """char_wb n-grams of one word padded with spaces (a word shorter than n counts once, as scikit-learn does)."""
    padded = f" {word} "
    grams: list[str] = []
    for n in range(low, high + 1):
        offset = 0
        grams.append(padded[offset : offset + n])
        while offset + n < len(padded):
            offset += 1
            grams.append(padded[offset : offset + n])
        if offset == 0:
            break
    return tuple(grams)


def char_wb_ngrams(text: str, ngram_range: tuple[int, int]) -> list[str]:
    """analyzer="char_wb": character n-grams inside word boundaries."""
    low, high = ngram_range
    out: list[str] = []
    for word in _WHITE_SPACES.sub(" ", text).split():
        out.extend(_word_char_grams(word, low, high))
    return out


@dataclass(frozen=True)
class HashedRows:
    """A batch of hashed feature rows as coordinates (row, column, value); `rows @ matrix` is the sparse product."""

    rows: NDArray[np.int64]
    cols: NDArray[np.int64]
    values: NDArray[np.float64]
    shape: tuple[int, int]

    def __matmul__(self, matrix: NDArray[Any]) -> NDArray[np.float64]:
        contributions = matrix[self.cols].astype(np.float64) * self.values[:, None]
        # one bincount per output column: several times faster than np.add.at's unbuffered scatter
        columns = [
            np.bincount(self.rows, weights=contributions[:, k], minlength=self.shape[0]) for k in range(matrix.shape[1])
        ]
        return np.stack(columns, axis=1) if columns else np.zeros((self.shape[0], 0))

    def toarray(self) -> NDArray[np.float64]:
        dense = np.zeros(self.shape, dtype=np.float64)
        dense[self.rows, self.cols] = self.values
        return dense

    def to_csr(self) -> Any:
        """A scipy.sparse csr_matrix of the same rows (training and evaluation only: scipy is their dependency)."""
        from scipy.sparse import csr_matrix

        return csr_matrix((self.values, (self.rows, self.cols)), shape=self.shape)


def hstack(parts: Sequence[HashedRows]) -> HashedRows:
    """Side by side: the columns of each part follow the previous part's."""
    offsets = np.cumsum([0, *(p.shape[1] for p in parts[:-1])])
    return HashedRows(
        rows=np.concatenate([p.rows for p in parts]),
        cols=np.concatenate([p.cols + off for p, off in zip(parts, offsets, strict=True)]),
        values=np.concatenate([p.values for p in parts]),
        shape=(parts[0].shape[0], int(sum(p.shape[1] for p in parts))),
    )


def char_wb_buckets(text: str, ngram_range: tuple[int, int], n_features: int) -> list[int]:
    """The buckets of char_wb_ngrams(text), hashed once per distinct word (words recur; their grams do not change)."""
    out: list[int] = []
    for word in _WHITE_SPACES.sub(" ", text).split():
        out.extend(_word_char_buckets(word, ngram_range, n_features))
    return out


@lru_cache(maxsize=1 << 16)
def _word_char_buckets(word: str, ngram_range: tuple[int, int], n_features: int) -> tuple[int, ...]:
    return tuple(bucket(g, n_features) for g in _word_char_grams(word, *ngram_range))


def binary_l2_rows(grams_per_text: Iterable[Sequence[str]], n_features: int) -> HashedRows:
    """HashingVectorizer(binary=True, norm="l2", alternate_sign=False) over pre-analyzed texts: each distinct
    bucket of a row is 1 / sqrt(the row's distinct buckets)."""
    return binary_l2_bucket_rows(
        ([_cached_bucket(g, n_features) for g in grams] for grams in grams_per_text), n_features
    )


def binary_l2_bucket_rows(buckets_per_text: Iterable[Sequence[int]], n_features: int) -> HashedRows:
    """binary_l2_rows from the texts' buckets."""
    rows: list[NDArray[np.int64]] = []
    cols: list[NDArray[np.int64]] = []
    values: list[NDArray[np.float64]] = []
    count = 0
    for row, buckets_of_text in enumerate(buckets_per_text):
        count += 1
        buckets = np.unique(np.asarray(buckets_of_text, dtype=np.int64))
        if buckets.size == 0:
            continue
        rows.append(np.full(buckets.size, row, dtype=np.int64))
        cols.append(buckets)
        values.append(np.full(buckets.size, 1.0 / np.sqrt(buckets.size)))
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return HashedRows(empty, empty, np.zeros(0), (count, n_features))
    return HashedRows(np.concatenate(rows), np.concatenate(cols), np.concatenate(values), (count, n_features))
