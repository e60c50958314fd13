"""The power calculator's sample size, with the standard library only.

The experiments page's calculator answers as soon as the page opens; the library's
:func:`customer_intel.experiments_stats.sample_size_per_group` (statsmodels'
``NormalIndPower`` solved with scipy's Brent) made each visit of the page import scipy and
statsmodels first, several seconds of a page meant to open in two. This is the same
computation written out with :class:`statistics.NormalDist` (hand-written for that reason only;
``tests/test_dashboards.py`` holds it equal to the library's, to 1e-9):

power(n) = Phi(h sqrt(n/2) - z) + Phi(-h sqrt(n/2) - z), z = Phi^-1(1 - alpha/2), with Cohen's
h = |2 asin(sqrt(p2)) - 2 asin(sqrt(p1))| for p1 = baseline, p2 = baseline (1 + mde); for a
one-sided test z = Phi^-1(1 - alpha) and the second term is dropped. n solves power(n) = target
by bisection on log n (power rises with n).
"""

from __future__ import annotations

import math
from statistics import NormalDist

_N = NormalDist()


def power_two_proportions(
    baseline: float,
    mde_relative: float,
    n_per_group: float,
    alpha: float = 0.05,
    alternative: str = "two-sided",
) -> float:
    """Power of the two-proportion z-test with ``n_per_group`` units in each of two groups."""
    p2 = baseline * (1 + mde_relative)
    h = abs(2 * math.asin(math.sqrt(p2)) - 2 * math.asin(math.sqrt(baseline)))
    shift = h * math.sqrt(n_per_group / 2)
    if alternative == "two-sided":
        z = _N.inv_cdf(1 - alpha / 2)
        return _N.cdf(shift - z) + _N.cdf(-shift - z)
    return _N.cdf(shift - _N.inv_cdf(1 - alpha))


def sample_size_per_group(
    baseline: float,
    mde_relative: float,
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: str = "two-sided",
) -> float:
    """Units per group to detect a relative change ``mde_relative`` on ``baseline``."""
    if not (0 < baseline < 1) or not (0 < baseline * (1 + mde_relative) < 1) or mde_relative == 0:
        raise ValueError(
            f"need 0 < baseline < 1, 0 < baseline x (1 + mde) < 1 and mde != 0; "
            f"got baseline {baseline}, mde {mde_relative}"
        )
    lo, hi = math.log(1e-6), math.log(1e12)
    for _ in range(200):  # far past float precision on log n
        mid = (lo + hi) / 2
        if power_two_proportions(baseline, mde_relative, math.exp(mid), alpha, alternative) < power:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)
