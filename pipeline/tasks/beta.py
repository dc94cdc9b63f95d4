"""The beta distribution's CDF (regularized incomplete beta) and quantile in numpy, for Clopper-Pearson bounds.

Threshold calibration (pipeline/tasks/risk.py) needs Beta quantiles; scipy would be 100 MB installed for this one
function. The CDF is the continued fraction of Numerical Recipes (`betacf`, modified Lentz), evaluated on the side
where it converges fast; the quantile is a bisection on it, which is slow per call but exact to the last bits and
cannot fail to converge (the CDF is monotone). tests/unit/test_beta.py compares both with scipy where installed.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]
_EPS = 1e-15
_TINY = 1e-300
_MAX_TERMS = 100_000  # converges in O(sqrt(max(a, b))) terms; a bound, never reached for counts below 10**9
_BISECTIONS = 64  # the interval [0, 1] halved 64 times: below float64 resolution near the answer


def _continued_fraction(a: Floats, b: Floats, x: Floats) -> Floats:
    """Numerical Recipes' betacf, all elements at once, until every one has converged."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    d = 1.0 - qab * x / qap
    d = 1.0 / np.where(np.abs(d) < _TINY, _TINY, d)
    h = d.copy()
    active = np.ones(x.shape, dtype=bool)
    for m in range(1, _MAX_TERMS + 1):
        m2 = 2.0 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / np.where(np.abs(d) < _TINY, _TINY, d)
            c = 1.0 + aa / c
            c = np.where(np.abs(c) < _TINY, _TINY, c)
            step = d * c
            h = np.where(active, h * step, h)
        active &= np.abs(step - 1.0) > _EPS
        if not active.any():
            break
    return h


def beta_cdf(x: Floats, a: Floats, b: Floats) -> Floats:
    """I_x(a, b), the regularized incomplete beta function, elementwise (a, b > 0; x in [0, 1])."""
    x, a, b = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(a, np.float64), np.asarray(b, np.float64))
    out = np.where(x >= 1.0, 1.0, 0.0)
    inner = (x > 0.0) & (x < 1.0)
    if not inner.any():
        return out
    xi, ai, bi = x[inner], a[inner], b[inner]
    log_beta = np.array([math.lgamma(p) + math.lgamma(q) - math.lgamma(p + q) for p, q in zip(ai, bi, strict=True)])
    front = np.exp(ai * np.log(xi) + bi * np.log1p(-xi) - log_beta)
    direct = xi < (ai + 1.0) / (ai + bi + 2.0)  # where the fraction converges fast; else use I_x(a,b) = 1 - I_1-x(b,a)
    swapped = ~direct
    value = np.empty_like(xi)
    if direct.any():
        value[direct] = front[direct] * _continued_fraction(ai[direct], bi[direct], xi[direct]) / ai[direct]
    if swapped.any():
        tail = _continued_fraction(bi[swapped], ai[swapped], 1.0 - xi[swapped])
        value[swapped] = 1.0 - front[swapped] * tail / bi[swapped]
    out[inner] = np.clip(value, 0.0, 1.0)
    return out


def beta_quantile(p: float, a: Floats, b: Floats) -> Floats:
    """The x with I_x(a, b) = p, elementwise, by bisection (scipy.stats.beta.ppf(p, a, b))."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    low, high = np.zeros(a.shape), np.ones(a.shape)
    for _ in range(_BISECTIONS):
        mid = 0.5 * (low + high)
        below = beta_cdf(mid, a, b) < p
        low, high = np.where(below, mid, low), np.where(below, high, mid)
    out: Floats = 0.5 * (low + high)
    return out
