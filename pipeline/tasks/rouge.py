"""ROUGE-1, ROUGE-2 and ROUGE-L F1 in pure Python, for scoring summaries against references."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")

# Lowercase runs of letters and digits, as the reference ROUGE scripts do without stemming; punctuation and
# speaker colons carry no content and would otherwise count as matches.
_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lowercase alphanumeric tokens: "Dr. Patel's 9:15" -> ["dr", "patel", "s", "9", "15"]."""
    return _TOKEN.findall(text.lower())


def _f1(overlap: int, candidate_total: int, reference_total: int) -> float:
    if overlap == 0 or candidate_total == 0 or reference_total == 0:
        return 0.0
    precision = overlap / candidate_total
    recall = overlap / reference_total
    return 2 * precision * recall / (precision + recall)


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(candidate: Sequence[str], reference: Sequence[str], n: int) -> float:
    """N-gram overlap F1; each reference n-gram can be matched as often as it occurs (clipped counts)."""
    cand, ref = _ngrams(candidate, n), _ngrams(reference, n)
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
    """LCS-based F1 (beta = 1) over the whole text, not per sentence."""
    return _f1(lcs_length(candidate, reference), len(candidate), len(reference))


def rouge_scores(candidate: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 of one candidate against one reference."""
    cand, ref = tokenize(candidate), tokenize(reference)
    return {"rouge1": rouge_n(cand, ref, 1), "rouge2": rouge_n(cand, ref, 2), "rougeL": rouge_l(cand, ref)}


def corpus_rouge(pairs: Iterable[tuple[str, str]]) -> dict[str, float]:
    """Mean of the per-pair scores over (candidate, reference) pairs; zeros for an empty corpus."""
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    count = 0
    for candidate, reference in pairs:
        for key, value in rouge_scores(candidate, reference).items():
            totals[key] += value
        count += 1
    return {key: (total / count if count else 0.0) for key, total in totals.items()}
