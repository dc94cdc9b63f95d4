"""ROUGE-1, ROUGE-2 and ROUGE-L F1 as published figures compute them: the `rouge-score` package, stemming on.

Summaries are scored with `rouge_score.rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)`,
F-measure, so Minnow's figures can be set beside published ones (docs/summarization.md, "Metric"). The token-level
helpers below (`stemmed_tokens`, `rouge_n`, `rouge_l`) compute the same numbers from pre-tokenized text; the oracle
labels the summary model is fitted on use them to avoid re-tokenizing every candidate set, and
`tests/unit/test_rouge.py` holds them equal to the package.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")

# Lowercase runs of letters and digits: rouge-score's tokenization without its stemmer. Punctuation and speaker
# colons carry no content.
_TOKEN = re.compile(r"[a-z0-9]+")
_STEM_MIN_CHARS = 4  # rouge-score stems only tokens longer than 3 characters


def tokenize(text: str) -> list[str]:
    """Lowercase alphanumeric tokens: "Dr. Patel's 9:15" -> ["dr", "patel", "s", "9", "15"]."""
    return _TOKEN.findall(text.lower())


@lru_cache(maxsize=1)
def _scorer() -> Any:
    from rouge_score import rouge_scorer  # the evaluation's dependency; the worker never scores ROUGE

    return rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)


@lru_cache(maxsize=65536)
def _stem(token: str) -> str:
    stemmer = _scorer()._tokenizer._stemmer  # the very Porter stemmer rouge-score applies
    return str(stemmer.stem(token)) if len(token) >= _STEM_MIN_CHARS else token


def stemmed_tokens(text: str) -> list[str]:
    """The tokens rouge-score compares: lowercase alphanumerics, Porter-stemmed when longer than 3 characters."""
    return [t for t in (_stem(t) for t in tokenize(text)) if t]


def _f1(overlap: int, candidate_total: int, reference_total: int) -> float:
    if overlap == 0 or candidate_total == 0 or reference_total == 0:
        return 0.0
    precision = overlap / candidate_total
    recall = overlap / reference_total
    return 2 * precision * recall / (precision + recall)


def ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(candidate: Sequence[str], reference: Sequence[str], n: int) -> float:
    """N-gram overlap F1; each reference n-gram can be matched as often as it occurs (clipped counts)."""
    cand, ref = ngrams(candidate, n), ngrams(reference, n)
    overlap = sum((cand & ref).values())
    return _f1(overlap, sum(cand.values()), sum(ref.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length, one row of the dynamic programme at a time."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: Sequence[str], reference: Sequence[str]) -> float:
    """LCS-based F1 (beta = 1) over the whole text (rouge-score's `rougeL`, not the per-sentence `rougeLsum`)."""
    return _f1(lcs_length(candidate, reference), len(candidate), len(reference))


def rouge_scores(candidate: str, reference: str | Sequence[str]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 by rouge-score (stemming on); several references are averaged."""
    references = [reference] if isinstance(reference, str) else list(reference)
    if not references:
        raise ValueError("at least one reference summary is needed")
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for ref in references:
        scored = _scorer().score(ref, candidate)  # rouge-score takes (target, prediction)
        for key in ROUGE_KEYS:
            totals[key] += float(scored[key].fmeasure)
    return {key: total / len(references) for key, total in totals.items()}


def corpus_rouge(pairs: Iterable[tuple[str, str | Sequence[str]]]) -> dict[str, float]:
    """Mean of the per-pair scores over (candidate, reference(s)) pairs; zeros for an empty corpus."""
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    count = 0
    for candidate, reference in pairs:
        for key, value in rouge_scores(candidate, reference).items():
            totals[key] += value
        count += 1
    return {key: (total / count if count else 0.0) for key, total in totals.items()}
