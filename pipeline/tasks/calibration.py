"""Temperature scaling and calibration error: turning raw scores into probabilities that mean what they say."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]


def softmax(logits: NDArray[np.floating], temperature: float = 1.0) -> Floats:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: Floats = e / e.sum(axis=-1, keepdims=True)
    return out


def nll(logits: NDArray[np.floating], y: NDArray[np.integer], temperature: float) -> float:
    p = softmax(logits, temperature)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))


def fit_temperature(logits: NDArray[np.floating], y: NDArray[np.integer], lo: float = 1e-3, hi: float = 100.0) -> float:
    """The temperature that minimises held-out negative log-likelihood (Guo et al., 2017).

    NLL is unimodal in log T for a fixed ranking, so a coarse log grid and a golden-section refinement suffice.
    """
    if len(y) == 0:
        raise ValueError("cannot fit a temperature on no examples")
    grid = np.geomspace(lo, hi, 60)
    losses = [nll(logits, y, t) for t in grid]
    best = int(np.argmin(losses))
    a, b = np.log(grid[max(best - 1, 0)]), np.log(grid[min(best + 1, len(grid) - 1)])
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if nll(logits, y, float(np.exp(c))) < nll(logits, y, float(np.exp(d))):
            b = d
        else:
            a = c
    return float(np.exp((a + b) / 2))


def expected_calibration_error(probs: NDArray[np.floating], y: NDArray[np.integer], bins: int = 10) -> float:
    """ECE: the gap between confidence and accuracy, averaged over equal-width confidence bins."""
    if len(y) == 0:
        return 0.0
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in pairwise(edges):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return float(ece)
