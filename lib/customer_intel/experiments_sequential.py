"""Always-valid confidence sequences for a difference in means or proportions.

Hand-written because neither scipy nor statsmodels offers them. The form is the asymptotic
confidence sequence of Waudby-Smith, Arnold, Wu, Howard, Ramdas & Sekhon, "Time-uniform central
limit theory and asymptotic confidence sequences" (Annals of Statistics 2024, arXiv:2103.06476,
eq. 9, with the normal-mixture tuning of Howard et al. 2021, "Time-uniform, nonparametric,
nonasymptotic confidence sequences", Annals of Statistics 49(2)), as GrowthBook's stats
engine applies it to A/B tests: the per-unit variance is the variance of the estimated
difference times the total units ``N = n_a + n_b``, and

    rho^2 = (-2 ln(alpha) + ln(-2 ln(alpha) + 1)) / tuning
    half  = sqrt(s2) sqrt(2 (N rho^2 + 1) ln(sqrt(N rho^2 + 1) / alpha) / (N rho)^2)

The interval holds at every look at once with probability >= 1 - alpha, so a team can read
the experiment daily and stop as soon as it excludes 0. ``tuning`` is the total sample size
where the sequence is narrowest (GrowthBook's default 5,000). The tests check the published
GrowthBook values on a fixed input and the coverage under continuous monitoring.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def mixing_rho(alpha: float, tuning: float) -> float:
    """The normal-mixture parameter tuned so the sequence is tightest at ``tuning`` units."""
    if not 0 < alpha < 1:
        raise ValueError(f"experiments.alpha: must be in (0, 1), got {alpha}")
    if tuning <= 0:
        raise ValueError(f"experiments.sequential_tuning: must be positive, got {tuning}")
    la = -2 * math.log(alpha)
    return math.sqrt((la + math.log(la + 1)) / tuning)


def halfwidth(var_estimate: float, n_total: int, *, alpha: float, tuning: float) -> float:
    """Half-width of the two-sided confidence sequence around an estimate of variance ``var``."""
    if n_total < 1 or not np.isfinite(var_estimate):
        return float("nan")
    rho = mixing_rho(alpha, tuning)
    s2 = var_estimate * n_total
    nr2 = n_total * rho**2
    return math.sqrt(s2 * 2 * (nr2 + 1) * math.log(math.sqrt(nr2 + 1) / alpha)) / (n_total * rho)


def difference(
    mean_a: float,
    var_a: float,
    n_a: int,
    mean_b: float,
    var_b: float,
    n_b: int,
    *,
    relative: bool = False,
    alpha: float = 0.05,
    tuning: float = 5000.0,
) -> dict[str, float]:
    """Confidence sequence of ``mean_b - mean_a`` (or ``mean_b / mean_a - 1`` if ``relative``).

    ``var_a``/``var_b`` are per-unit variances (``p (1 - p)`` for a proportion); the relative
    difference's variance is by the delta method. Returns the estimate, its standard error,
    the sequence's bounds and the fixed-horizon z-interval's bounds for comparison.
    """
    if relative:
        est = mean_b / mean_a - 1 if mean_a else float("nan")
        var = (
            var_b / (n_b * mean_a**2) + var_a * mean_b**2 / (n_a * mean_a**4)
            if mean_a
            else float("nan")
        )
    else:
        est = mean_b - mean_a
        var = var_a / n_a + var_b / n_b
    hw = halfwidth(var, n_a + n_b, alpha=alpha, tuning=tuning)
    z = stats.norm.isf(alpha / 2)
    se = math.sqrt(var) if np.isfinite(var) else float("nan")
    return {
        "estimate": est,
        "se": se,
        "low": est - hw,
        "high": est + hw,
        "fixed_low": est - z * se,
        "fixed_high": est + z * se,
    }


def decision(low: float, high: float) -> str:
    """``can stop`` when the sequence excludes 0, else ``keep running``."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "keep running"
    return "can stop" if low > 0 or high < 0 else "keep running"
