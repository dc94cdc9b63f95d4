"""scikit-learn's HashingVectorizer without scikit-learn (pipeline/tasks/hashing.py): same hash, same features."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from pipeline.tasks.hashing import binary_l2_rows, bucket, char_wb_ngrams, murmurhash3_32, word_ngrams
from pipeline.tasks.moderation_heads import CHAR_FEATURES, LEXICAL_FEATURES, WORD_FEATURES, Lexical, normalise
from tests.unit.bundled_texts import bundled_texts

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


def test_murmurhash3_matches_the_reference_vectors() -> None:
    """Published MurmurHash3_x86_32 values (seed 0 unless given), as signed ints; every tail length covered."""
    assert murmurhash3_32(b"") == 0
    assert murmurhash3_32(b"", seed=1) == 0x514E28B7
    assert murmurhash3_32(b"\xff\xff\xff\xff") == 0x76293B50
    assert murmurhash3_32(b"!Ce\x87") == -(0x100000000 - 0xF55B516B)
    assert murmurhash3_32(b"!Ce") == 0x7E4A8634
    assert murmurhash3_32(b"!C") == -(0x100000000 - 0xA0F7B07A)
    assert murmurhash3_32(b"!") == 0x72661CF4
    assert murmurhash3_32(b"Hello, world!", seed=0x9747B28C) == 0x24884CBA


def test_char_wb_counts_a_short_word_once_and_pads_words() -> None:
    """char_wb pads words with spaces, collapses whitespace runs, and a word shorter than n yields one gram."""
    assert char_wb_ngrams("a  b", (2, 5)) == [" a", "a ", " a ", " b", "b ", " b "]
    assert word_ngrams("the cat sat", (1, 2)) == ["the", "cat", "sat", "the cat", "cat sat"]


def test_rows_are_binary_and_unit_length() -> None:
    """Each row holds distinct buckets with equal weight and norm 1; an empty text is an empty row."""
    rows = binary_l2_rows([["x", "x", "y"], []], 16)
    dense = rows.toarray()
    np.testing.assert_allclose(np.linalg.norm(dense, axis=1), [1.0, 0.0])
    assert sorted(dense[0][dense[0] > 0].round(6)) == [round(2**-0.5, 6)] * 2
    assert bucket("x", 16) == abs(murmurhash3_32(b"x")) % 16


@pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn is not installed ([train])")
def test_lexical_features_equal_sklearn_on_thousands_of_texts() -> None:
    """The moderation n-gram features equal scikit-learn's HashingVectorizers (as the heads were trained) on every
    bundled text and stressed variants, to 1e-12."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import HashingVectorizer

    texts = bundled_texts()
    common = {"alternate_sign": False, "norm": "l2", "binary": True, "lowercase": False}
    word = HashingVectorizer(analyzer="word", ngram_range=(1, 2), n_features=WORD_FEATURES, **common)
    char = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5), n_features=CHAR_FEATURES, **common)
    clean = [normalise(t) for t in texts]
    expected = hstack([word.transform(clean), char.transform(clean)], format="csr")
    ours = Lexical().features(texts)
    assert ours.shape == (len(texts), LEXICAL_FEATURES)
    diff = ours.to_csr() - expected
    assert abs(diff).max() < 1e-12
    rng = np.random.default_rng(3)
    coef = rng.normal(size=(LEXICAL_FEATURES, 4))
    np.testing.assert_allclose(ours @ coef, expected @ coef, atol=1e-9)
