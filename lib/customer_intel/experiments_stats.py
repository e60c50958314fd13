"""Fixed-horizon A/B tests, by the reference libraries (scipy, statsmodels).

Conventions: group A is control, group B is treatment; differences are B - A; a relative lift
is (B - A) / A. ``alternative`` is ``two-sided``, ``larger`` (B > A) or ``smaller``.

Everything here calls scipy or statsmodels; what no library offers (Beta-Binomial readout,
CUPED, the fast bootstrap, delta-method ratios, confidence sequences) lives in
:mod:`customer_intel.experiments` and :mod:`customer_intel.experiments_sequential`, each with
its reference. The tests compare every function here with its library to 1e-9 (regression
tests of the wrapping: argument order, tails, labels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats
from scipy.stats.contingency import odds_ratio as scipy_odds_ratio
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_effectsize,
    proportions_ztest,
)

ALTERNATIVES = ("two-sided", "larger", "smaller")
_SCIPY_ALT = {"two-sided": "two-sided", "larger": "greater", "smaller": "less"}
P_ADJUST = {"holm": "holm", "bh": "fdr_bh", "fdr_bh": "fdr_bh"}


def check_alternative(alternative: str) -> str:
    """Return ``alternative`` or raise a params error naming the allowed values."""
    if alternative not in ALTERNATIVES:
        raise ValueError(
            f"experiments.alternative: expected one of {ALTERNATIVES}, got {alternative!r}"
        )
    return alternative


def scipy_alternative(alternative: str) -> str:
    """``alternative`` checked and in scipy's words: ``two-sided``, ``greater`` or ``less``.

    The one dispatch on the alternative hypothesis: every test below goes through it.
    """
    return _SCIPY_ALT[check_alternative(alternative)]


def p_from_z(z: float, alternative: str) -> float:
    """P-value of a standard normal statistic ``z`` under ``alternative``."""
    alt = scipy_alternative(alternative)
    if alt == "two-sided":
        return float(2 * stats.norm.sf(abs(z)))
    return float(stats.norm.sf(z) if alt == "greater" else stats.norm.cdf(z))


def _table(x_a: int, n_a: int, x_b: int, n_b: int) -> np.ndarray:
    return np.array([[x_a, n_a - x_a], [x_b, n_b - x_b]], dtype=float)


# -- binary metrics ---------------------------------------------------------------------------
def two_proportion_ztest(
    x_a: int, n_a: int, x_b: int, n_b: int, alternative: str = "two-sided"
) -> dict[str, float]:
    """Pooled two-proportion z-test of B vs A (``statsmodels proportions_ztest``).

    Where neither group varies (no conversions at all, or only conversions) the statistic is
    0 and the p-value 1, not ``nan``.
    """
    check_alternative(alternative)
    pooled = (x_a + x_b) / (n_a + n_b)
    if pooled in (0.0, 1.0):
        return {"z": 0.0, "p_value": 1.0}
    z, p = proportions_ztest([x_b, x_a], [n_b, n_a], alternative=alternative)
    return {"z": float(z), "p_value": float(p)}


def chi_square(x_a: int, n_a: int, x_b: int, n_b: int, *, yates: bool = False) -> dict[str, float]:
    """Pearson chi-square test of the 2x2 table (``scipy.stats.chi2_contingency``)."""
    obs = _table(x_a, n_a, x_b, n_b)
    if (obs.sum(0) == 0).any():
        return {"chi2": 0.0, "p_value": 1.0}
    res = stats.chi2_contingency(obs, correction=yates)
    return {"chi2": float(res.statistic), "p_value": float(res.pvalue)}


def g_test(x_a: int, n_a: int, x_b: int, n_b: int) -> dict[str, float]:
    """G-test (log-likelihood ratio) of the 2x2 table, 1 df (scipy ``chi2_contingency``)."""
    obs = _table(x_a, n_a, x_b, n_b)
    if (obs.sum(0) == 0).any():
        return {"g": 0.0, "p_value": 1.0}
    res = stats.chi2_contingency(obs, correction=False, lambda_="log-likelihood")
    return {"g": float(res.statistic), "p_value": float(res.pvalue)}


def odds_ratio(
    x_a: int, n_a: int, x_b: int, n_b: int, confidence: float = 0.95
) -> dict[str, float]:
    """Sample odds ratio of B vs A with Woolf's interval (``scipy.stats.contingency.odds_ratio``).

    A group with no (or only) conversions gives 0 or infinity and an open interval (``nan``
    where the bound does not exist), not an error.
    """
    table = np.array([[x_b, n_b - x_b], [x_a, n_a - x_a]])
    with np.errstate(divide="ignore", invalid="ignore"):
        res = scipy_odds_ratio(table, kind="sample")
        ci = res.confidence_interval(confidence)
    return {"odds_ratio": float(res.statistic), "ci_low": float(ci.low), "ci_high": float(ci.high)}


def _diff_ci(
    x_a: int, n_a: int, x_b: int, n_b: int, confidence: float, method: str
) -> tuple[float, float]:
    lo, hi = confint_proportions_2indep(
        x_b, n_b, x_a, n_a, method=method, compare="diff", alpha=1 - confidence
    )
    return float(lo), float(hi)


def diff_ci_wald(
    x_a: int, n_a: int, x_b: int, n_b: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Wald interval of ``p_b - p_a`` (statsmodels ``confint_proportions_2indep``, ``wald``)."""
    return _diff_ci(x_a, n_a, x_b, n_b, confidence, "wald")


def diff_ci_newcombe(
    x_a: int, n_a: int, x_b: int, n_b: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval of ``p_b - p_a`` (statsmodels, ``newcomb``)."""
    return _diff_ci(x_a, n_a, x_b, n_b, confidence, "newcomb")


# -- continuous and count metrics ------------------------------------------------------------
def welch_ttest(
    a: np.ndarray, b: np.ndarray, alternative: str = "two-sided", confidence: float = 0.95
) -> dict[str, float]:
    """Welch's t-test of ``mean(b) - mean(a)`` and its interval (``scipy.stats.ttest_ind``)."""
    alt = scipy_alternative(alternative)
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(b.mean() - a.mean())
    if a.var() == 0 and b.var() == 0:  # scipy gives nan; no spread means no evidence either way
        return {"t": 0.0, "df": float(len(a) + len(b) - 2), "p_value": 1.0, "diff": diff,
                "ci_low": diff, "ci_high": diff}  # fmt: skip
    res = stats.ttest_ind(b, a, equal_var=False, alternative=alt)
    ci = stats.ttest_ind(b, a, equal_var=False).confidence_interval(confidence)
    return {
        "t": float(res.statistic),
        "df": float(res.df),
        "p_value": float(res.pvalue),
        "diff": diff,
        "ci_low": float(ci.low),
        "ci_high": float(ci.high),
    }


def mann_whitney(a: np.ndarray, b: np.ndarray, alternative: str = "two-sided") -> dict[str, float]:
    """Mann-Whitney U test of b vs a (``scipy.stats.mannwhitneyu``)."""
    res = stats.mannwhitneyu(b, a, alternative=scipy_alternative(alternative))
    return {"u": float(res.statistic), "p_value": float(res.pvalue)}


def quantile_interval(x: np.ndarray, q: float, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval of the ``q`` quantile from order statistics.

    ``scipy.stats.quantile_test(...).confidence_interval``: the exact binomial interval
    (Conover 1999, section 3.2). A bound that the sample cannot reach is ``nan``.
    """
    ci = stats.quantile_test(
        np.asarray(x, float), q=float(np.quantile(x, q)), p=q
    ).confidence_interval(confidence)
    return float(ci.low), float(ci.high)


# -- several groups and several tests -------------------------------------------------------
def srm_check(
    counts: dict[str, int], split: dict[str, float], threshold: float = 0.001
) -> dict[str, Any]:
    """Sample ratio mismatch: chi-square goodness of fit of group sizes to the intended split.

    ``scipy.stats.chisquare``. A label of ``split`` that no unit has is a params error (it
    would read as a mismatch that blames the data).
    """
    absent = [g for g in split if counts.get(g, 0) == 0]
    if absent:
        raise ValueError(
            f"experiments.intended_split: label(s) {absent} are not in the data; it holds "
            f"{sorted(g for g, n in counts.items() if n)}"
        )
    groups = list(split)
    obs = np.array([counts.get(g, 0) for g in groups], float)
    expected = np.array([split[g] for g in groups], float)
    expected = expected / expected.sum() * obs.sum()
    res = stats.chisquare(obs, expected)
    p = float(res.pvalue)
    return {
        "chi2": float(res.statistic),
        "p_value": p,
        "srm": p < threshold,
        "observed": dict(zip(groups, obs.astype(int).tolist(), strict=True)),
        "expected": dict(zip(groups, expected.tolist(), strict=True)),
    }


def adjust_pvalues(p: Sequence[float], method: str = "holm") -> np.ndarray:
    """Holm (family-wise error) or Benjamini-Hochberg (false discovery rate), by statsmodels.

    ``nan`` p-values (a test that could not run) stay ``nan`` and do not count in the family.
    """
    if method not in P_ADJUST:
        raise ValueError(f"experiments.p_adjust: expected holm or bh, got {method!r}")
    p = np.asarray(p, float)
    out = np.full(len(p), np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method=P_ADJUST[method])[1]
    return out


# -- power ------------------------------------------------------------------------------------
def effect_size_h(p1: float, p2: float) -> float:
    """Cohen's h of ``p2`` vs ``p1`` (statsmodels ``proportion_effectsize``)."""
    return float(proportion_effectsize(p2, p1))


def power_two_proportions(
    baseline: float,
    mde_relative: float,
    n_per_group: float,
    alpha: float = 0.05,
    alternative: str = "two-sided",
) -> float:
    """Power of the two-proportion test with equal groups (``NormalIndPower`` on Cohen's h)."""
    h = abs(effect_size_h(baseline, baseline * (1 + mde_relative)))
    # |h|: a one-sided test's power in the direction of the effect (statsmodels' "larger")
    alt = "two-sided" if scipy_alternative(alternative) == "two-sided" else "larger"
    return float(
        NormalIndPower().power(
            effect_size=h, nobs1=n_per_group, alpha=alpha, ratio=1.0, alternative=alt
        )
    )


def sample_size_per_group(
    baseline: float,
    mde_relative: float,
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: str = "two-sided",
) -> float:
    """Units per group to detect a relative lift ``mde_relative`` on ``baseline`` with ``power``.

    Solves statsmodels' power function for n with Brent's method at a tighter tolerance than
    ``NormalIndPower.solve_power`` (whose root stops near 1e-8).
    """
    if not (0 < baseline < 1) or not (0 < baseline * (1 + mde_relative) < 1) or mde_relative == 0:
        raise ValueError(
            f"need 0 < baseline < 1, 0 < baseline x (1 + mde) < 1 and mde != 0; "
            f"got baseline {baseline}, mde {mde_relative}"
        )
    f = lambda n: power_two_proportions(baseline, mde_relative, n, alpha, alternative) - power  # noqa: E731
    return float(optimize.brentq(f, 1e-6, 1e12, xtol=1e-10, rtol=1e-14, maxiter=500))


def mde_for_sample_size(
    baseline: float,
    n_per_group: float,
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: str = "two-sided",
) -> float:
    """Smallest relative lift detectable with ``n_per_group`` units per group."""
    f = lambda m: power_two_proportions(baseline, m, n_per_group, alpha, alternative) - power  # noqa: E731
    hi = min((1 - 1e-9) / baseline - 1, 100.0)
    return float(optimize.brentq(f, 1e-9, hi, xtol=1e-12, rtol=1e-14, maxiter=500))


def units_for_standardized_effect(
    effect: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> float:
    """Units in the control arm to detect a standardised effect ``effect`` (``zt_ind_solve_power``).

    ``effect`` is the difference in means over the per-unit standard deviation (Cohen's d, or
    Cohen's h for proportions); ``ratio`` is arm size over control size.
    """
    from statsmodels.stats.power import zt_ind_solve_power

    if effect == 0 or not math.isfinite(effect):
        return float("inf")
    return float(zt_ind_solve_power(effect_size=abs(effect), alpha=alpha, power=power, ratio=ratio))
