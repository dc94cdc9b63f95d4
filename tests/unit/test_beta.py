"""The beta CDF and quantile without scipy (pipeline/tasks/beta.py), behind the Clopper-Pearson bounds."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from pipeline.tasks.beta import beta_cdf, beta_quantile
from pipeline.tasks.risk import clopper_pearson_upper

HAS_SCIPY = importlib.util.find_spec("scipy") is not None


def test_closed_forms() -> None:
    """Beta(1, 1) is uniform, Beta(a, 1) has CDF x**a, and Clopper-Pearson with no errors is 1 - delta**(1/n)."""
    x = np.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(beta_cdf(x, np.ones(11), np.ones(11)), x, atol=1e-14)
    np.testing.assert_allclose(beta_cdf(x, np.full(11, 3.0), np.ones(11)), x**3, atol=1e-14)
    for n in (1, 10, 1000):
        assert clopper_pearson_upper(0, n, 0.05) == pytest.approx(1 - 0.05 ** (1 / n), abs=1e-12)
    assert clopper_pearson_upper(5, 5, 0.05) == 1.0
    assert clopper_pearson_upper(0, 0, 0.05) == 1.0


def test_quantile_inverts_the_cdf() -> None:
    """I_q(a, b) = p at the quantile q, over small and large counts."""
    a = np.array([1.0, 2.0, 11.0, 300.0, 5.0])
    b = np.array([1.0, 50.0, 90.0, 9700.0, 20000.0])
    q = beta_quantile(0.995, a, b)
    np.testing.assert_allclose(beta_cdf(q, a, b), 0.995, atol=1e-12)


@pytest.mark.skipif(not HAS_SCIPY, reason="scipy is not installed ([train])")
def test_clopper_pearson_equals_scipy() -> None:
    """The numpy quantile (the bound without scipy) equals scipy.stats.beta.ppf's on random counts up to 50,000
    and several deltas, to 1e-9."""
    from scipy.stats import beta

    rng = np.random.default_rng(11)
    n = rng.integers(1, 50_000, size=200)
    errors = (rng.random(200) ** 3 * (n - 1)).astype(np.int64)
    a, b = (errors + 1).astype(np.float64), (n - errors).astype(np.float64)
    for delta in (0.1, 0.005, 1e-4):
        np.testing.assert_allclose(beta_quantile(1 - delta, a, b), beta.ppf(1 - delta, a, b), atol=1e-9, rtol=0)
