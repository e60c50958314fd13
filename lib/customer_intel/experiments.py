"""A/B test statistics: pure functions over counts, NumPy arrays and Polars frames.

Conventions: group A is control, group B is treatment; differences are B - A; a relative lift
is (B - A) / A. ``alternative`` is ``two-sided``, ``larger`` (B > A) or ``smaller``. Every
function states its formula; the tests compare each with scipy / statsmodels.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ibis
import numpy as np
import polars as pl
from scipy import optimize, stats

from customer_intel import sqlexpr
from customer_intel.timeutil import parse_utc

ALTERNATIVES = ("two-sided", "larger", "smaller")


def _p_from_z(z: float, alternative: str) -> float:
    if alternative == "two-sided":
        return float(2 * stats.norm.sf(abs(z)))
    if alternative == "larger":
        return float(stats.norm.sf(z))
    if alternative == "smaller":
        return float(stats.norm.cdf(z))
    raise ValueError(
        f"experiments.alternative: expected one of {ALTERNATIVES}, got {alternative!r}"
    )


# -- binary metrics ---------------------------------------------------------------------------
def two_proportion_ztest(
    x_a: int, n_a: int, x_b: int, n_b: int, alternative: str = "two-sided"
) -> dict[str, float]:
    """Pooled two-proportion z-test.

    ``p = (x_a + x_b) / (n_a + n_b)``, ``se = sqrt(p (1 - p) (1/n_a + 1/n_b))``,
    ``z = (x_b/n_b - x_a/n_a) / se``; p-value from the standard normal.
    """
    pa, pb = x_a / n_a, x_b / n_b
    p = (x_a + x_b) / (n_a + n_b)
    se = math.sqrt(p * (1 - p) * (1 / n_a + 1 / n_b))
    z = (pb - pa) / se if se > 0 else 0.0
    return {"z": z, "p_value": _p_from_z(z, alternative)}


def _table(x_a: int, n_a: int, x_b: int, n_b: int) -> np.ndarray:
    return np.array([[x_a, n_a - x_a], [x_b, n_b - x_b]], dtype=float)


def chi_square(x_a: int, n_a: int, x_b: int, n_b: int, *, yates: bool = False) -> dict[str, float]:
    """Pearson chi-square test of the 2x2 table (1 degree of freedom).

    ``chi2 = sum((|O - E| - c)^2 / E)`` with expected counts ``E = row x col / total`` and
    ``c = 0.5`` with Yates' continuity correction (never more than ``|O - E|``), else 0.
    """
    obs = _table(x_a, n_a, x_b, n_b)
    exp = obs.sum(1, keepdims=True) * obs.sum(0, keepdims=True) / obs.sum()
    diff = np.abs(obs - exp)
    if yates:
        diff = np.maximum(diff - 0.5, 0.0)
    chi2 = float((diff**2 / exp).sum())
    return {"chi2": chi2, "p_value": float(stats.chi2.sf(chi2, 1))}


def g_test(x_a: int, n_a: int, x_b: int, n_b: int) -> dict[str, float]:
    """G-test (log-likelihood ratio) of the 2x2 table: ``G = 2 sum O ln(O / E)``, 1 df."""
    obs = _table(x_a, n_a, x_b, n_b)
    exp = obs.sum(1, keepdims=True) * obs.sum(0, keepdims=True) / obs.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(obs > 0, obs * np.log(obs / exp), 0.0)
    g = float(2 * terms.sum())
    return {"g": g, "p_value": float(stats.chi2.sf(g, 1))}


def odds_ratio(
    x_a: int, n_a: int, x_b: int, n_b: int, confidence: float = 0.95
) -> dict[str, float]:
    """Sample odds ratio of B vs A with Woolf's (log-normal) confidence interval.

    ``OR = (x_b (n_a - x_a)) / (x_a (n_b - x_b))``, by ``scipy.stats.contingency.odds_ratio``
    (``kind="sample"``). A group with no (or only) conversions has an odds ratio of 0 or
    infinity and an open interval (``nan`` where the bound does not exist), not an error.
    """
    from scipy.stats.contingency import odds_ratio as scipy_odds_ratio

    table = np.array([[x_b, n_b - x_b], [x_a, n_a - x_a]])
    with np.errstate(divide="ignore", invalid="ignore"):
        res = scipy_odds_ratio(table, kind="sample")
        ci = res.confidence_interval(confidence)
    return {
        "odds_ratio": float(res.statistic),
        "ci_low": float(ci.low),
        "ci_high": float(ci.high),
    }


def diff_ci_wald(
    x_a: int, n_a: int, x_b: int, n_b: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Wald interval of ``p_b - p_a``: ``d +- z sqrt(p_a(1-p_a)/n_a + p_b(1-p_b)/n_b)``."""
    pa, pb = x_a / n_a, x_b / n_b
    se = math.sqrt(pa * (1 - pa) / n_a + pb * (1 - pb) / n_b)
    z = stats.norm.ppf(0.5 + confidence / 2)
    return (pb - pa - z * se, pb - pa + z * se)


def _wilson(x: int, n: int, z: float) -> tuple[float, float]:
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def diff_ci_newcombe(
    x_a: int, n_a: int, x_b: int, n_b: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval of ``p_b - p_a`` (his method 10), from Wilson intervals.

    With Wilson limits ``(l_a, u_a)`` and ``(l_b, u_b)`` and ``d = p_b - p_a``:
    ``low = d - sqrt((p_b - l_b)^2 + (u_a - p_a)^2)``,
    ``high = d + sqrt((u_b - p_b)^2 + (p_a - l_a)^2)``.
    """
    z = stats.norm.ppf(0.5 + confidence / 2)
    pa, pb = x_a / n_a, x_b / n_b
    la, ua = _wilson(x_a, n_a, z)
    lb, ub = _wilson(x_b, n_b, z)
    d = pb - pa
    return (
        d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2),
        d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2),
    )


def bayes_binary(
    x_a: int,
    n_a: int,
    x_b: int,
    n_b: int,
    *,
    prior: tuple[float, float] = (1.0, 1.0),
    draws: int = 200_000,
    seed: int = 0,
    credible: float = 0.95,
) -> dict[str, float]:
    """Beta-Binomial posteriors ``Beta(a0 + x, b0 + n - x)`` of each rate, by Monte Carlo.

    Returns P(B > A), the expected loss of choosing B (``E[max(p_a - p_b, 0)]``) and of
    choosing A, and the credible interval of the relative lift ``p_b / p_a - 1``.
    """
    rng = np.random.default_rng(seed)
    pa = rng.beta(prior[0] + x_a, prior[1] + n_a - x_a, draws)
    pb = rng.beta(prior[0] + x_b, prior[1] + n_b - x_b, draws)
    rel = pb / pa - 1
    q = (1 - credible) / 2
    return {
        "prob_b_better": float((pb > pa).mean()),
        "expected_loss_b": float(np.maximum(pa - pb, 0).mean()),
        "expected_loss_a": float(np.maximum(pb - pa, 0).mean()),
        "rel_lift_low": float(np.quantile(rel, q)),
        "rel_lift_high": float(np.quantile(rel, 1 - q)),
    }


# -- continuous and count metrics ------------------------------------------------------------
def describe_groups(
    values: dict[str, np.ndarray], percentiles: Sequence[float] = (5, 25, 50, 75, 95)
) -> pl.DataFrame:
    """Per group: n, mean, std (ddof 1), skewness, excess kurtosis, percentiles."""
    rows = []
    for g, v in values.items():
        v = np.asarray(v, dtype=float)
        row = {
            "group": g,
            "n": len(v),
            "mean": float(v.mean()),
            "std": float(v.std(ddof=1)),
            "skewness": float(stats.skew(v)),
            "kurtosis": float(stats.kurtosis(v)),
        }
        row |= {f"p{int(q)}": float(np.percentile(v, q)) for q in percentiles}
        rows.append(row)
    return pl.DataFrame(rows)


def welch_ttest(
    a: np.ndarray, b: np.ndarray, alternative: str = "two-sided", confidence: float = 0.95
) -> dict[str, float]:
    """Welch's t-test of mean(b) - mean(a) and its confidence interval.

    ``se = sqrt(s_a^2/n_a + s_b^2/n_b)``, ``t = (mean_b - mean_a) / se``, degrees of freedom
    by Welch-Satterthwaite ``se^4 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1))``.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    diff = b.mean() - a.mean()
    t = diff / se
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    if alternative == "two-sided":
        p = 2 * stats.t.sf(abs(t), df)
    elif alternative == "larger":
        p = stats.t.sf(t, df)
    elif alternative == "smaller":
        p = stats.t.cdf(t, df)
    else:
        raise ValueError(
            f"experiments.alternative: expected one of {ALTERNATIVES}, got {alternative!r}"
        )
    q = stats.t.ppf(0.5 + confidence / 2, df)
    return {
        "t": float(t),
        "df": float(df),
        "p_value": float(p),
        "diff": float(diff),
        "ci_low": float(diff - q * se),
        "ci_high": float(diff + q * se),
    }


def mann_whitney(a: np.ndarray, b: np.ndarray, alternative: str = "two-sided") -> dict[str, float]:
    """Mann-Whitney U test of b vs a.

    scipy's implementation (tie-corrected normal approximation, or exact for small samples):
    hand-writing its tie and continuity corrections would only add risk.
    """
    alt = {"two-sided": "two-sided", "larger": "greater", "smaller": "less"}[alternative]
    res = stats.mannwhitneyu(b, a, alternative=alt)
    return {"u": float(res.statistic), "p_value": float(res.pvalue)}


def bootstrap_means(
    x: np.ndarray, n_resamples: int, rng: np.random.Generator, *, batch: int = 200
) -> np.ndarray:
    """Means of ``n_resamples`` bootstrap resamples of ``x`` (``len(x)`` draws with replacement).

    Drawn exactly as resampling units would be, but without drawing one index per unit where
    the data allow a shortcut with the same distribution (numpy and scipy only offer the
    index-per-unit way, which costs ``n_resamples x len(x)`` draws: 3.6 billion for 2,000
    resamples of 1.8M units):

    - few distinct values (binary and count metrics): the resample is a multinomial draw of
      how often each distinct value is taken, ``(counts @ values) / n``;
    - otherwise, the most frequent value (0 for revenue per user) and the rest: how many draws
      fall on the rest is binomial, and only those draws pick a unit among the rest.
    """
    x = np.asarray(x, dtype=float)
    n = len(x)
    out = np.empty(n_resamples)
    if n == 0:
        out.fill(np.nan)
        return out
    values, counts = np.unique(x, return_counts=True)
    if len(values) <= 64:
        draws = rng.multinomial(n, counts / n, size=n_resamples)
        return (draws @ values) / n
    top = int(np.argmax(counts))
    v0, rest = values[top], x[x != values[top]]
    k = rng.binomial(n, len(rest) / n, size=n_resamples)
    for start in range(0, n_resamples, batch):
        ks = k[start : start + batch]
        idx = rng.integers(0, len(rest), int(ks.sum()), dtype=np.int64 if n >= 2**31 else np.int32)
        starts = np.minimum(np.r_[0, np.cumsum(ks)[:-1]], max(len(idx) - 1, 0))
        sums = np.add.reduceat(rest[idx], starts) if len(idx) else 0.0
        sums = np.where(ks > 0, sums, 0.0)  # reduceat gives a value, not 0, for empty runs
        out[start : start + batch] = (v0 * (n - ks) + sums) / n
    return out


def bootstrap_relative_lift(
    a: np.ndarray,
    b: np.ndarray,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Bootstrap (resampling units within each group) of ``mean(b) / mean(a) - 1``.

    Resampled means come from :func:`bootstrap_means`. Returns the percentile CI, the share of
    resamples with B > A, and the resampled lifts.
    """
    rng = np.random.default_rng(seed)
    ma = bootstrap_means(a, n_resamples, rng)
    mb = bootstrap_means(b, n_resamples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        lifts = mb / ma - 1
    q = (1 - confidence) / 2
    return {
        "ci_low": float(np.nanquantile(lifts, q)),
        "ci_high": float(np.nanquantile(lifts, 1 - q)),
        "prob_b_better": float(np.mean(lifts > 0)),
        "lifts": lifts,
    }


def cuped(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """CUPED: ``y - theta (x - mean(x))`` with ``theta = cov(y, x) / var(x)`` on pooled data.

    Returns the adjusted outcome, theta and the variance reduction ``1 - var(adj) / var(y)``.
    The adjustment has mean zero, so the difference in means stays unbiased.
    """
    y, x = np.asarray(y, float), np.asarray(x, float)
    vx = x.var(ddof=1)
    theta = float(np.cov(y, x, ddof=1)[0, 1] / vx) if vx > 0 else 0.0
    adj = y - theta * (x - x.mean())
    return adj, theta, float(1 - adj.var(ddof=1) / y.var(ddof=1)) if y.var() > 0 else 0.0


def check_labels(units: pl.DataFrame, group: str, labels: dict[str, str]) -> None:
    """Raise a params error naming the labels found when a configured label is not in the data.

    ``labels`` maps the params key (``control_label``, ...) to the label it sets.
    """
    if group not in units.columns:
        raise ValueError(
            f"experiments.group_column: {group!r} is not a column of the unit table; it has "
            f"{units.columns}"
        )
    found = sorted(str(v) for v in units[group].drop_nulls().unique().to_list())
    for key, label in labels.items():
        if label not in found:
            raise ValueError(
                f"experiments.{key}: label {label!r} is not in the data; the group column "
                f"{group!r} holds {found}"
            )


def srm_check(
    counts: dict[str, int], split: dict[str, float], threshold: float = 0.001
) -> dict[str, Any]:
    """Sample ratio mismatch: chi-square goodness of fit of group sizes to the intended split.

    A label of ``split`` that no unit has is a params error (it would read as a mismatch that
    blames the data).
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
    chi2 = float(((obs - expected) ** 2 / expected).sum())
    p = float(stats.chi2.sf(chi2, len(groups) - 1))
    return {
        "chi2": chi2,
        "p_value": p,
        "srm": p < threshold,
        "observed": dict(zip(groups, obs.astype(int).tolist(), strict=True)),
        "expected": dict(zip(groups, expected.tolist(), strict=True)),
    }


def adjust_pvalues(p: Sequence[float], method: str = "holm") -> np.ndarray:
    """Holm (step-down, family-wise error) or Benjamini-Hochberg (false discovery rate)."""
    p = np.asarray(p, float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ranked)
    elif method in ("bh", "fdr_bh"):
        adj = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    else:
        raise ValueError(f"experiments.p_adjust: expected holm or bh, got {method!r}")
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


# -- power ------------------------------------------------------------------------------------
def effect_size_h(p1: float, p2: float) -> float:
    """Cohen's h: ``2 asin(sqrt(p2)) - 2 asin(sqrt(p1))``."""
    return 2 * math.asin(math.sqrt(p2)) - 2 * math.asin(math.sqrt(p1))


def power_two_proportions(
    baseline: float,
    mde_relative: float,
    n_per_group: float,
    alpha: float = 0.05,
    alternative: str = "two-sided",
) -> float:
    """Power of the two-proportion test with equal groups (normal approximation on Cohen's h).

    ``power = Phi(|h| sqrt(n/2) - z_crit) [+ Phi(-|h| sqrt(n/2) - z_crit) two-sided]``.
    """
    h = abs(effect_size_h(baseline, baseline * (1 + mde_relative)))
    d = h * math.sqrt(n_per_group / 2)
    if alternative == "two-sided":
        zc = stats.norm.isf(alpha / 2)
        return float(stats.norm.sf(zc - d) + stats.norm.cdf(-zc - d))
    zc = stats.norm.isf(alpha)
    return float(stats.norm.sf(zc - d))


def sample_size_per_group(
    baseline: float,
    mde_relative: float,
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: str = "two-sided",
) -> float:
    """Units per group to detect a relative lift ``mde_relative`` on ``baseline`` with ``power``.

    Solves :func:`power_two_proportions` = ``power`` for n (Brent's method, tight tolerance).
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


def power_curve(
    baseline: float,
    mde_relative: float,
    alpha: float = 0.05,
    n_max: int | None = None,
    points: int = 60,
) -> pl.DataFrame:
    """Power by sample size per group (up to 2x the size needed for 80% power)."""
    n80 = sample_size_per_group(baseline, mde_relative, alpha, 0.8)
    ns = np.unique(np.linspace(max(10, n80 / 50), n_max or 2.5 * n80, points).round())
    return pl.DataFrame(
        {
            "n_per_group": ns,
            "power": [power_two_proportions(baseline, mde_relative, n, alpha) for n in ns],
        }
    )


# -- the unit table ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CleanReport:
    """Rows removed by each clean-up rule."""

    rows_in: int
    removed: dict[str, int]
    rows_out: int


def clean_units(
    units: pl.DataFrame,
    *,
    unit: str,
    exclude: Sequence[str],
    duplicates: str = "keep_first",
    order_by: str | None = None,
) -> tuple[pl.DataFrame, CleanReport]:
    """Apply exclusion rules (SQL conditions; matching rows are removed) and the duplicate rule.

    ``duplicates``: ``keep_first`` (by ``order_by`` if given) or ``drop_all`` units seen twice.
    """
    removed: dict[str, int] = {}
    df = units
    n0 = df.height
    for i, text in enumerate(exclude):
        tree = sqlexpr.check(text, df.columns, where=f"experiments.exclude[{i}]", boolean=True)
        before = df.height
        df = df.filter(~pl.sql_expr(sqlexpr.to_sql(tree)).fill_null(False))
        removed[f"exclude: {text}"] = before - df.height
    before = df.height
    if duplicates == "keep_first":
        if order_by:
            df = df.sort(order_by)
        df = df.unique(unit, keep="first", maintain_order=True)
    elif duplicates == "drop_all":
        df = df.filter(pl.col(unit).is_unique())
    else:
        raise ValueError(
            f"experiments.duplicates: expected keep_first or drop_all, got {duplicates!r}"
        )
    removed[f"duplicates ({duplicates})"] = before - df.height
    return df, CleanReport(n0, removed, df.height)


def unit_outcomes(
    assignments: pl.DataFrame,
    events: ibis.Table,
    *,
    window_end: Any,
    pre_days: int = 14,
) -> pl.DataFrame:
    """Assigned users with outcomes from the engine.

    For each assignment (user_id, assigned_at, ...): ``converted`` (a purchase between
    ``assigned_at`` and ``window_end``), ``revenue`` and ``purchases`` in that window, and the
    same measured over the ``pre_days`` before ``assigned_at`` (``pre_converted``,
    ``pre_revenue``, ``pre_purchases``) plus ``pre_events``.
    """
    con = events._find_backend()
    a = assignments.select("user_id", "assigned_at").unique("user_id")
    if con.name == "pyspark":
        # Ibis' PySpark backend has no temporary tables: the assignments go to Spark as an
        # in-memory table (a temporary view of the driver's frame), which joins the same way
        at = ibis.memtable(a.to_arrow())
    else:
        con.create_table("_assignments", a, temp=True, overwrite=True)
        at = con.table("_assignments")
    end = ibis.literal(window_end)
    # Read only what an outcome can use, before the join: events from the earliest pre-period
    # to the window's end, and after the last assignment only purchases. The engine prunes
    # row groups by these bounds (and filters by type on the scan), which at 110M events
    # reads a fraction of the log; the results are the same as joining every event.
    e = events.select("user_id", "event_time", "event_type", "price")
    if a.height:
        first = a["assigned_at"].min() - dt.timedelta(days=pre_days)
        last = a["assigned_at"].max()
        e = e.filter(
            e.event_time >= ibis.literal(first),
            e.event_time <= end,
            (e.event_type == "purchase") | (e.event_time < ibis.literal(last)),
        )
    e = e.mutate(user_id=e.user_id.cast(at.user_id.type()))
    j = e.join(at, "user_id")
    in_win = (j.event_time >= j.assigned_at) & (j.event_time <= end)
    pre = (j.event_time < j.assigned_at) & (
        j.event_time >= j.assigned_at - ibis.interval(days=pre_days)
    )
    buy = j.event_type == "purchase"
    agg = (
        j.group_by("user_id")
        .agg(
            purchases=(in_win & buy).sum(),
            revenue=(in_win & buy).ifelse(j.price.cast("float64"), 0.0).sum(),
            pre_purchases=(pre & buy).sum(),
            pre_revenue=(pre & buy).ifelse(j.price.cast("float64"), 0.0).sum(),
            pre_events=pre.sum(),
        )
        .to_polars()
    )
    out = assignments.join(agg, on="user_id", how="left").with_columns(
        pl.col("purchases", "pre_purchases", "pre_events").fill_null(0).cast(pl.Int64),
        pl.col("revenue", "pre_revenue").fill_null(0.0),
    )
    return out.with_columns(
        converted=(pl.col("purchases") > 0).cast(pl.Int8),
        pre_converted=(pl.col("pre_purchases") > 0).cast(pl.Int8),
        pre_buyer=pl.when(pl.col("pre_purchases") > 0)
        .then(pl.lit("bought before"))
        .otherwise(pl.lit("no purchase before")),
    )


def outcome_window_end(
    assignments: pl.DataFrame, data_end: Any, window_end: str | None, window_days: int
) -> Any:
    """End of the outcome window: params, else last assignment + ``window_days`` (<= data end)."""
    if window_end:
        return parse_utc(window_end, key="experiments.window_end")
    last = assignments["assigned_at"].max() + dt.timedelta(days=window_days)
    return min(last, data_end)


def diagnostics(
    units: pl.DataFrame,
    clean: CleanReport,
    srm: dict[str, Any],
    results: pl.DataFrame,
    *,
    power_target: float,
    mde: float,
    alpha: float,
) -> pl.DataFrame:
    """Checks and context as (check, value, note) rows: sizes, clean-up, SRM, power, CUPED."""
    rows = [("units analysed", float(clean.rows_out), f"of {clean.rows_in} rows read")]
    rows += [(f"removed: {k}", float(v), "clean-up rule") for k, v in clean.removed.items()]
    rows += [
        ("SRM chi-square", srm["chi2"], f"observed {srm['observed']}"),
        ("SRM p-value", srm["p_value"], "sample ratio mismatch" if srm["srm"] else "no mismatch"),
    ]
    for r in results.iter_rows(named=True):
        if r["kind"] == "binary" and 0 < r["control"] < 1:
            n = min(r["n_control"], r["n_treatment"])
            pw = power_two_proportions(r["control"], mde, n, alpha)
            rows.append((f"power: {r['metric']}", pw, f"to detect {mde:+.0%} with {n:,} per group"))
            rows.append(
                (
                    f"MDE at {power_target:.0%} power: {r['metric']}",
                    mde_for_sample_size(r["control"], n, alpha, power_target),
                    "relative lift",
                )
            )
        if r.get("cuped_variance_reduction") is not None:
            rows.append(
                (
                    f"CUPED variance reduction: {r['metric']}",
                    r["cuped_variance_reduction"],
                    f"covariate {r.get('cuped_covariate')}",
                )
            )
    return pl.DataFrame(rows, schema=["check", "value", "note"], orient="row")


def _metric_rows(
    units: pl.DataFrame,
    metric: dict,
    *,
    group: str,
    control: str,
    treatment: str,
    alternative: str,
    confidence: float,
    n_resamples: int,
    seed: int,
) -> tuple[dict[str, Any], np.ndarray]:
    col, kind = metric["column"], metric["kind"]
    a = units.filter(pl.col(group) == control)[col].cast(pl.Float64).to_numpy()
    b = units.filter(pl.col(group) == treatment)[col].cast(pl.Float64).to_numpy()
    ma, mb = float(a.mean()), float(b.mean())
    row: dict[str, Any] = {
        "metric": metric["name"],
        "kind": kind,
        "n_control": len(a),
        "n_treatment": len(b),
        "control": ma,
        "treatment": mb,
        "abs_lift": mb - ma,
        "rel_lift": (mb / ma - 1) if ma else float("nan"),
    }
    boot = bootstrap_relative_lift(a, b, n_resamples=n_resamples, seed=seed, confidence=confidence)
    row |= {"boot_rel_ci_low": boot["ci_low"], "boot_rel_ci_high": boot["ci_high"]}
    if kind == "binary":
        xa, xb = int(a.sum()), int(b.sum())
        z = two_proportion_ztest(xa, len(a), xb, len(b), alternative)
        lo, hi = diff_ci_newcombe(xa, len(a), xb, len(b), confidence)
        wlo, whi = diff_ci_wald(xa, len(a), xb, len(b), confidence)
        bayes = bayes_binary(xa, len(a), xb, len(b), seed=seed, credible=confidence)
        row |= {
            "test": "two-proportion z",
            "statistic": z["z"],
            "p_value": z["p_value"],
            "ci_low": lo,
            "ci_high": hi,
            "wald_ci_low": wlo,
            "wald_ci_high": whi,
            "chi2_p": chi_square(xa, len(a), xb, len(b))["p_value"],
            "chi2_yates_p": chi_square(xa, len(a), xb, len(b), yates=True)["p_value"],
            "g_test_p": g_test(xa, len(a), xb, len(b))["p_value"],
            **{
                (k if k == "odds_ratio" else f"or_{k}"): v
                for k, v in odds_ratio(xa, len(a), xb, len(b), confidence).items()
            },
            "prob_b_better": bayes["prob_b_better"],
            "expected_loss_b": bayes["expected_loss_b"],
            "bayes_rel_low": bayes["rel_lift_low"],
            "bayes_rel_high": bayes["rel_lift_high"],
        }
    else:
        w = welch_ttest(a, b, alternative, confidence)
        mw = mann_whitney(a, b, alternative)
        row |= {
            "test": "Welch t",
            "statistic": w["t"],
            "p_value": w["p_value"],
            "ci_low": w["ci_low"],
            "ci_high": w["ci_high"],
            "mann_whitney_p": mw["p_value"],
            "prob_b_better": boot["prob_b_better"],
        }
    cov = metric.get("covariate")
    if cov:
        ya = units[col].cast(pl.Float64).to_numpy()
        adj, theta, reduction = cuped(ya, units[cov].cast(pl.Float64).to_numpy())
        is_b = (units[group] == treatment).to_numpy()
        is_a = (units[group] == control).to_numpy()
        wc = welch_ttest(adj[is_a], adj[is_b], alternative, confidence)
        row |= {
            "cuped_covariate": cov,
            "cuped_theta": theta,
            "cuped_variance_reduction": reduction,
            "cuped_diff": wc["diff"],
            "cuped_ci_low": wc["ci_low"],
            "cuped_ci_high": wc["ci_high"],
            "cuped_p_value": wc["p_value"],
        }
    return row, boot["lifts"]


def analyze(
    units: pl.DataFrame,
    metrics: Sequence[dict],
    *,
    group: str = "experiment_group",
    control: str = "control",
    treatment: str = "treatment",
    alternative: str = "two-sided",
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int = 0,
    p_adjust: str = "holm",
) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """The decision table: one row per metric, with adjusted p-values and a verdict in words.

    Raises
    ------
    ValueError
        The control or treatment label is not a value of the group column (the message lists
        the labels found), or a metric's column is missing.
    """
    check_labels(units, group, {"control_label": control, "treatment_label": treatment})
    rows, lifts = [], {}
    for m in metrics:
        if m["column"] not in units.columns:
            raise ValueError(
                f"experiments.metrics: column {m['column']!r} not in the unit table; "
                f"it has {units.columns}"
            )
        row, boot = _metric_rows(
            units,
            m,
            group=group,
            control=control,
            treatment=treatment,
            alternative=alternative,
            confidence=1 - alpha,
            n_resamples=n_resamples,
            seed=seed,
        )
        rows.append(row)
        lifts[m["name"]] = boot
    df = pl.DataFrame(rows, infer_schema_length=None)
    df = df.with_columns(p_adjusted=pl.Series(adjust_pvalues(df["p_value"].to_list(), p_adjust)))
    return df.with_columns(
        significant=pl.when(pl.col("p_adjusted") < alpha)
        .then(pl.lit("yes"))
        .otherwise(pl.lit("no")),
        verdict=pl.when(pl.col("p_adjusted") >= alpha)
        .then(pl.lit("no detectable difference"))
        .when(pl.col("abs_lift") > 0)
        .then(pl.lit("treatment is better"))
        .otherwise(pl.lit("treatment is worse")),
    ), lifts


def analyze_segments(
    units: pl.DataFrame, metrics: Sequence[dict], segments: Sequence[str], **kw: Any
) -> pl.DataFrame:
    """The decision table per value of each segment column, p-values adjusted across all rows."""
    parts = []
    for seg in segments:
        if seg not in units.columns:
            raise ValueError(f"experiments.segments: column {seg!r} not in the unit table")
        for (value,), sub in units.group_by(seg, maintain_order=True):
            if sub[kw.get("group", "experiment_group")].n_unique() < 2:
                continue
            table, _ = analyze(
                sub, metrics, **(kw | {"n_resamples": min(kw.get("n_resamples", 2000), 500)})
            )
            parts.append(table.with_columns(segment=pl.lit(seg), segment_value=pl.lit(str(value))))
    if not parts:
        return pl.DataFrame()
    out = pl.concat(parts, how="diagonal_relaxed")
    alpha = kw.get("alpha", 0.05)
    return out.with_columns(
        p_adjusted=pl.Series(adjust_pvalues(out["p_value"].to_list(), kw.get("p_adjust", "holm")))
    ).with_columns(
        significant=pl.when(pl.col("p_adjusted") < alpha)
        .then(pl.lit("yes"))
        .otherwise(pl.lit("no"))
    )


def describe_readout(results: pl.DataFrame, srm: dict[str, Any]) -> str:
    """The readout in words, a failed sample-ratio check first."""
    parts = []
    if srm["srm"]:
        expected = {k: round(v) for k, v in srm["expected"].items()}
        parts.append(
            f"WARNING: sample ratio mismatch (p = {srm['p_value']:.2g}): the groups are "
            f"{srm['observed']} where the design expected {expected}. "
            "Assignment or logging is broken; do not trust the results below until it is explained."
        )
    for r in results.iter_rows(named=True):
        parts.append(
            f"{r['metric']}: {r['control']:.4g} (control) vs {r['treatment']:.4g} (treatment), "
            f"{r['rel_lift']:+.1%} relative; 95% CI of the difference [{r['ci_low']:.4g}, "
            f"{r['ci_high']:.4g}], adjusted p = {r['p_adjusted']:.3g} -> {r['verdict']}"
            + (
                f" (P(treatment better) = {r['prob_b_better']:.0%})"
                if r.get("prob_b_better") is not None
                else ""
            )
            + "."
        )
    return "\n".join(parts)


def lifts_table(lifts: dict[str, np.ndarray]) -> pl.DataFrame:
    """Bootstrap lifts as long rows (metric, resample, rel_lift), for dashboards."""
    return (
        pl.concat(
            [
                pl.DataFrame({"metric": name, "resample": np.arange(len(v)), "rel_lift": v})
                for name, v in lifts.items()
            ]
        )
        if lifts
        else pl.DataFrame(
            schema={"metric": pl.String, "resample": pl.Int64, "rel_lift": pl.Float64}
        )
    )
