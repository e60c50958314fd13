"""Experiments beyond two-arm means (issue 20): sequential, ratio, quantile, capping, roles,
decision, several arms, segment SRM, days and power; each against a reference or a planted truth."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import polars as pl
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import zt_ind_solve_power
from statsmodels.stats.proportion import proportion_effectsize, proportions_ztest

from customer_intel import experiments as ex
from customer_intel import experiments_sequential as seq
from customer_intel import experiments_stats as st

REL = 1e-9


# -- confidence sequences ---------------------------------------------------------------------
def _gb_stat(s: float, ss: float, n: int) -> tuple[float, float, int]:
    return s / n, (ss - s * s / n) / (n - 1), n


def test_confidence_sequence_equals_growthbook_published_values():
    """gbstats' tests (packages/stats/tests/frequentist/test_tests.py, TestSequentialTTest):
    means with tuning 1000 -> 0.50336 [-0.55844, 1.56516], sd 0.33341; proportions 1396/3000
    vs 2422/3461 with the default 5000 -> 0.50386 [0.40098, 0.60675], sd 0.03386 (relative)."""
    (ma, va, na), (mb, vb, nb) = (
        _gb_stat(1396.87, 52377.9767, 3000),
        _gb_stat(2422.7, 134698.29, 3461),
    )
    r = seq.difference(ma, va, na, mb, vb, nb, relative=True, tuning=1000)
    got = [round(r[k], 5) for k in ("estimate", "low", "high", "se")]
    assert got == [0.50336, -0.55844, 1.56516, 0.33341]
    pa, pb = 1396 / 3000, 2422 / 3461
    r = seq.difference(pa, pa * (1 - pa), 3000, pb, pb * (1 - pb), 3461, relative=True)
    got = [round(r[k], 5) for k in ("estimate", "low", "high", "se")]
    assert got == [0.50386, 0.40098, 0.60675, 0.03386]
    assert r["low"] < r["fixed_low"] < r["fixed_high"] < r["high"]  # wider than one look
    assert seq.decision(r["low"], r["high"]) == "can stop"
    assert seq.decision(-0.1, 0.2) == "keep running"
    with pytest.raises(ValueError, match="sequential_tuning"):
        seq.mixing_rho(0.05, 0)


@pytest.mark.slow
def test_confidence_sequence_covers_under_continuous_monitoring():
    """A/A streams looked at every 100 units: the sequence excludes the truth in <= alpha of
    the runs at any look; the fixed interval read at every look does not (the peeking problem)."""
    rng = np.random.default_rng(7)
    runs, n, step, alpha = 1000, 4000, 100, 0.05
    looks = np.arange(step, n + 1, step)
    seq_miss = np.zeros(runs, bool)
    fix_miss = np.zeros(runs, bool)
    for start in range(0, runs, 250):
        a = rng.normal(1.0, 2.0, (250, n))
        b = rng.normal(1.0, 2.0, (250, n))
        for k in looks:
            ma, mb = a[:, :k].mean(1), b[:, :k].mean(1)
            se2 = a[:, :k].var(1, ddof=1) / k + b[:, :k].var(1, ddof=1) / k
            hw = np.array([seq.halfwidth(v, 2 * k, alpha=alpha, tuning=5000) for v in se2])
            d = mb - ma
            seq_miss[start : start + 250] |= np.abs(d) > hw
            fix_miss[start : start + 250] |= np.abs(d) > 1.96 * np.sqrt(se2)
    assert seq_miss.mean() <= alpha + 0.015  # coverage >= 1 - alpha (Monte Carlo slack)
    assert fix_miss.mean() > 2 * alpha  # peeking at the fixed interval inflates errors


# -- ratio, quantile and capping -------------------------------------------------------------
def test_ratio_delta_method_matches_a_unit_bootstrap():
    """Revenue per order, randomised by user: the delta-method variance equals the variance of
    a bootstrap that resamples users (orders move with their user) within 10%."""
    rng = np.random.default_rng(4)
    n = 3000
    orders = rng.poisson(2.0, n) + 1
    revenue = np.array([rng.gamma(2.0, 15.0 + 5 * (k > 2), k).sum() for k in orders])
    r, var = ex.ratio_delta(revenue, orders)
    assert r == pytest.approx(revenue.sum() / orders.sum(), rel=REL)
    idx = rng.integers(0, n, (4000, n))
    boot = revenue[idx].sum(1) / orders[idx].sum(1)
    assert var == pytest.approx(boot.var(ddof=1), rel=0.1)
    # the covariance term matters: dropping it (orders as if independent of revenue) is wrong
    mx, my = revenue.mean(), orders.mean()
    no_cov = (revenue.var(ddof=1) / my**2 + mx**2 * orders.var(ddof=1) / my**4) / n
    assert not no_cov == pytest.approx(boot.var(ddof=1), rel=0.5)


def test_ratio_metric_in_the_readout_finds_a_planted_lift():
    rng = np.random.default_rng(5)
    n = 4000
    arm = np.where(rng.random(n) < 0.5, "control", "treatment")
    sessions = rng.poisson(3, n) + 1
    orders = rng.binomial(sessions, np.where(arm == "treatment", 0.12, 0.10))
    units = pl.DataFrame({"g": arm, "orders": orders, "sessions": sessions})
    m = [{"name": "orders per session", "column": "orders", "denominator": "sessions",
          "kind": "ratio"}]  # fmt: skip
    res, _ = ex.analyze(units, m, group="g", n_resamples=100)
    r = res.row(0, named=True)
    assert r["control"] == pytest.approx(
        orders[arm == "control"].sum() / sessions[arm == "control"].sum()
    )
    assert r["ci_low"] < 0.02 < r["ci_high"] and r["p_value"] < 0.01
    assert r["prob_method"] == "normal approximation (delta method)"
    with pytest.raises(ValueError, match=r"metrics\[0\] \('x'\): denominator 'visits'"):
        ex.analyze(units, [{"name": "x", "column": "orders", "denominator": "visits",
                            "kind": "ratio"}], group="g")  # fmt: skip


def test_quantile_interval_is_scipys_order_statistic_interval():
    x = np.random.default_rng(1).lognormal(3, 1, 501)
    ci = stats.quantile_test(x, q=np.median(x), p=0.5).confidence_interval(0.95)
    assert st.quantile_interval(x, 0.5) == pytest.approx((ci.low, ci.high), rel=REL)
    s = np.sort(x)  # the exact interval lies on order statistics
    assert ci.low in s and ci.high in s


@pytest.mark.slow
@pytest.mark.parametrize("q", [0.5, 0.9])
def test_quantile_difference_interval_covers(q):
    """p50 / p90 of order value, treatment x1.1: the interval of the difference covers the
    true difference in about 95% of 400 generated experiments (order statistics are
    conservative, so allow up to 99.5%)."""
    rng = np.random.default_rng(int(q * 100))
    truth = (1.1 - 1) * stats.lognorm(1, scale=np.exp(3)).ppf(q)
    hits = 0
    for _ in range(400):
        a = rng.lognormal(3, 1, 800)
        b = 1.1 * rng.lognormal(3, 1, 800)
        row, _ = ex._arm_row(a, b, {"kind": "quantile", "quantile": q}, alternative="two-sided",
                             confidence=0.95, n_resamples=0, seed=0)  # fmt: skip
        hits += row["ci_low"] < truth < row["ci_high"]
    assert 0.93 <= hits / 400 <= 0.995


def test_capping_at_a_value_or_a_percentile_is_applied_and_reported():
    x = np.array([1.0, 2, 3, 4, 100])
    capped, cap, n = ex.cap_values(x, value=10)
    assert capped.tolist() == [1, 2, 3, 4, 10] and cap == 10 and n == 1
    capped, cap, n = ex.cap_values(x, percentile=0.5)
    assert cap == 3.0 and capped.tolist() == [1, 2, 3, 3, 3] and n == 2
    units = pl.DataFrame(
        {"g": ["control", "treatment"] * 5, "v": [1.0, 2, 3, 4, 5, 6, 7, 8, 9, 900]}
    )
    m = [{"name": "v", "column": "v", "kind": "continuous", "cap_value": 10.0}]
    res, _ = ex.analyze(units, m, group="g", n_resamples=100)
    r = res.row(0, named=True)
    assert r["capped_at"] == 10.0 and r["n_capped"] == 1
    assert r["treatment"] == pytest.approx((2 + 4 + 6 + 8 + 10) / 5)
    assert "capped at 10" in ex.describe_readout(res, {"srm": False})


def test_heavy_skew_is_flagged_with_the_capping_option():
    rng = np.random.default_rng(2)
    v = np.where(rng.random(4000) < 0.97, rng.exponential(10, 4000), rng.exponential(10, 4000))
    v[:3] = 50_000  # three whales
    units = pl.DataFrame({"g": np.where(np.arange(4000) % 2, "treatment", "control"), "v": v})
    res, _ = ex.analyze(units, [{"name": "v", "column": "v", "kind": "continuous"}], group="g",
                        n_resamples=100)  # fmt: skip
    assert "consider cap_percentile" in res["skew_note"][0]
    assert res["skewness"][0] == pytest.approx(stats.skew(v), rel=REL)
    assert "NOTE heavily skewed" in ex.describe_readout(res, {"srm": False})


# -- roles and the decision ------------------------------------------------------------------
def _row(metric, role, abs_lift, ci, p, *, margin=None, higher=True, arm="B", control=1.0):
    return {"arm": arm, "control_label": "A", "metric": metric, "role": role, "margin": margin,
            "higher_is_better": higher, "control": control, "abs_lift": abs_lift,
            "ci_low": ci[0], "ci_high": ci[1], "p_adjusted": p}  # fmt: skip


@pytest.mark.parametrize(
    ("rows", "decision", "text"),
    [
        ([_row("conv", "goal", 0.1, (0.05, 0.15), 0.001),
          _row("rev", "guardrail", -0.01, (-0.03, 0.01), 0.4, margin=0.05)],
         "ship", "B: ship: goal up, no guardrail harmed"),
        ([_row("conv", "goal", 0.1, (0.05, 0.15), 0.001),
          _row("rev", "guardrail", -0.10, (-0.14, -0.06), 0.001, margin=0.05)],
         "do not ship", "B: do not ship: guardrail rev down beyond its margin"),
        ([_row("conv", "goal", 0.1, (0.05, 0.15), 0.001),
          _row("rev", "guardrail", -0.04, (-0.09, 0.01), 0.2, margin=0.05)],
         "hold", "B: hold: goal up, but guardrail rev not shown to be within its margin"),
        ([_row("conv", "goal", 0.1, (0.05, 0.15), 0.001),
          _row("latency", "guardrail", 0.2, (0.1, 0.3), 0.001, higher=False)],
         "do not ship", "B: do not ship: guardrail latency down"),
        ([_row("conv", "goal", -0.1, (-0.15, -0.05), 0.001)],
         "do not ship", "B: do not ship: goal conv down"),
        ([_row("conv", "goal", 0.01, (-0.05, 0.07), 0.6),
          _row("rev", "secondary", -0.5, (-0.7, -0.3), 0.001)],
         "keep running", "B: keep running: no goal has moved yet"),
        ([_row("conv", "secondary", 0.1, (0.05, 0.15), 0.001)],
         "no decision", "B: no decision: no metric has the role goal"),
    ],
)  # fmt: skip
def test_decision_table_on_hand_made_cases(rows, decision, text):
    got = ex.experiment_decision(pl.DataFrame(rows), alpha=0.05).row(0, named=True)
    assert (got["decision"], got["verdict"]) == (decision, text)


def test_a_sample_ratio_mismatch_overrides_the_decision():
    rows = [_row("conv", "goal", 0.1, (0.05, 0.15), 0.001)]
    got = ex.experiment_decision(pl.DataFrame(rows), srm=True)
    assert got["decision"][0] == "do not trust"


# -- several arms, segments ------------------------------------------------------------------
@pytest.fixture(scope="module")
def three_arms():
    rng = np.random.default_rng(9)
    n = 9000
    arm = rng.choice(["ctl", "v1", "v2"], n)
    p = np.select([arm == "v1", arm == "v2"], [0.115, 0.10], 0.10)
    conv = rng.binomial(1, p)
    spend = conv * rng.gamma(2, np.where(arm == "v2", 30, 25))
    day = dt.date(2024, 1, 1) + np.array([dt.timedelta(days=int(d)) for d in rng.integers(0, 7, n)])
    device = rng.choice(["mobile", "desktop"], n)
    return pl.DataFrame(
        {
            "arm": arm,
            "converted": conv,
            "spend": spend,
            "day": pl.Series(list(day), dtype=pl.Date),
            "device": device,
        }
    )


METRICS = [
    {"name": "conversion", "column": "converted", "kind": "binary", "role": "goal"},
    {"name": "spend", "column": "spend", "kind": "continuous", "role": "guardrail", "margin": 0.1},
]


def test_three_arms_equal_statsmodels_per_pair_with_the_holm_correction(three_arms):
    """Every arm against control; the family adjusted is every arm x metric row (4 here)."""
    res, lifts = ex.analyze(three_arms, METRICS, group="arm", control="ctl",
                            treatment=["v1", "v2"], n_resamples=200)  # fmt: skip
    assert res.select("arm", "metric").rows() == [
        ("v1", "conversion"), ("v2", "conversion"), ("v1", "spend"), ("v2", "spend")]  # fmt: skip
    ref = []
    for r in res.iter_rows(named=True):
        a = three_arms.filter(pl.col("arm") == "ctl")[
            r["metric"] == "spend" and "spend" or "converted"
        ]
        b = three_arms.filter(pl.col("arm") == r["arm"])[a.name]
        if r["kind"] == "binary":
            _, p = proportions_ztest([b.sum(), a.sum()], [len(b), len(a)])
        else:
            p = stats.ttest_ind(b, a, equal_var=False).pvalue
        assert r["p_value"] == pytest.approx(p, rel=REL)
        ref.append(p)
    assert res["p_adjusted"].to_list() == pytest.approx(
        multipletests(ref, method="holm")[1], rel=REL
    )
    bh, _ = ex.analyze(three_arms, METRICS, group="arm", control="ctl", treatment=["v1", "v2"],
                       n_resamples=100, p_adjust="bh")  # fmt: skip
    assert bh["p_adjusted"].to_list() == pytest.approx(
        multipletests(ref, method="fdr_bh")[1], rel=REL
    )
    assert set(lifts) == {"conversion · v1", "conversion · v2", "spend · v1", "spend · v2"}
    decision = ex.experiment_decision(res)
    assert decision["arm"].to_list() == ["v1", "v2"]
    with pytest.raises(ValueError, match=r"treatment_labels\[1\]: label 'v3'"):
        ex.analyze(three_arms, METRICS, group="arm", control="ctl", treatment=["v1", "v3"])


def test_segment_srm_equals_scipy_per_segment():
    units = pl.DataFrame(
        {
            "g": ["A"] * 500 + ["B"] * 500 + ["A"] * 620 + ["B"] * 380,
            "device": ["mobile"] * 1000 + ["desktop"] * 1000,
        }  # fmt: skip
    )
    t = ex.segment_srm(units, ["device"], group="g", split={"A": 0.5, "B": 0.5})
    mob = t.filter(pl.col("segment_value") == "mobile").row(0, named=True)
    desk = t.filter(pl.col("segment_value") == "desktop").row(0, named=True)
    assert (mob["n_A"], mob["n_B"], mob["srm"]) == (500, 500, False)
    ref = stats.chisquare([620, 380])
    assert desk["p_value"] == pytest.approx(ref.pvalue, rel=REL) and desk["srm"]


def test_breakdown_by_any_segment_column_with_several_arms(three_arms):
    seg = ex.analyze_segments(three_arms, METRICS, ["device"], group="arm", control="ctl",
                              treatment=["v1", "v2"], n_resamples=100)  # fmt: skip
    assert seg.height == 2 * 2 * 2 and set(seg["segment_value"]) == {"mobile", "desktop"}
    assert set(ex.SEGMENT_COLUMNS) <= set(seg.columns)  # the notebook's view of the table
    assert seg["p_adjusted"].to_list() == pytest.approx(
        multipletests(seg["p_value"].to_list(), method="holm")[1], rel=REL)  # fmt: skip


# -- over time and power ---------------------------------------------------------------------
def test_daily_cumulative_effect_ends_at_the_full_readout(three_arms):
    daily = ex.experiment_daily(three_arms, METRICS, date_column="day", group="arm",
                                control="ctl", treatment=["v1", "v2"])  # fmt: skip
    assert daily["day"].n_unique() == 7
    last = daily.filter(pl.col("day") == pl.col("day").max(), pl.col("arm") == "v1",
                        pl.col("metric") == "conversion").row(0, named=True)  # fmt: skip
    res, _ = ex.analyze(three_arms, METRICS[:1], group="arm", control="ctl", treatment=["v1", "v2"],
                        n_resamples=100)  # fmt: skip
    assert last["abs_lift"] == pytest.approx(res["abs_lift"][0], rel=REL)
    assert last["n_control"] == res["n_control"][0]
    assert (daily["seq_ci_low"] <= daily["ci_low"]).all()
    assert (daily["seq_ci_high"] >= daily["ci_high"]).all()
    grow = daily.filter(pl.col("arm") == "v1", pl.col("metric") == "conversion")["n_control"]
    assert grow.is_sorted() and grow[0] < grow[-1]


def test_every_day_of_the_daily_view_equals_the_units_assigned_up_to_it(three_arms):
    """Each (day, arm, metric) row recomputed by hand from the units assigned by that day:
    means with Welch's standard error, a ratio by the delta method, a quantile of the buyers;
    the cap is taken over every unit, as in the readout."""
    units = three_arms.with_columns(orders=pl.col("converted") * 2 + pl.col("device").eq("mobile"))
    metrics = [
        {"name": "conversion", "column": "converted", "kind": "binary"},
        {"name": "spend", "column": "spend", "kind": "continuous", "cap_percentile": 0.99},
        {"name": "spend per order", "column": "spend", "denominator": "orders", "kind": "ratio"},
        {"name": "p50", "column": "spend", "kind": "quantile", "quantile": 0.5,
         "only_positive": True},
    ]  # fmt: skip
    daily = ex.experiment_daily(units, metrics, date_column="day", group="arm", control="ctl",
                                treatment=["v1", "v2"])  # fmt: skip
    assert daily.height == 7 * 2 * len(metrics)
    capped = ex.cap_values(units["spend"].to_numpy(), percentile=0.99)[0]
    units = units.with_columns(spend_capped=capped)
    for r in daily.iter_rows(named=True):
        upto = units.filter(pl.col("day") <= r["day"])
        a, b = (upto.filter(pl.col("arm") == arm) for arm in ("ctl", r["arm"]))
        assert (r["n_control"], r["n_treatment"]) == (a.height, b.height)
        if r["metric"] == "spend per order":
            (ra, va), (rb, vb) = (ex.ratio_delta(f["spend"].to_numpy(), f["orders"].to_numpy())
                                  for f in (a, b))  # fmt: skip
        elif r["metric"] == "p50":
            (ra, sa), (rb, sb) = (ex.quantile_se(f.filter(pl.col("spend") > 0)["spend"].to_numpy(),
                                                 0.5, 0.95) for f in (a, b))  # fmt: skip
            va, vb = sa**2, sb**2
        else:
            col = "converted" if r["metric"] == "conversion" else "spend_capped"
            xa, xb = a[col].to_numpy(), b[col].to_numpy()
            ra, rb = xa.mean(), xb.mean()
            va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
        assert (r["control"], r["treatment"]) == pytest.approx((ra, rb), rel=1e-9)
        se = np.sqrt(va + vb)
        assert r["ci_high"] - r["abs_lift"] == pytest.approx(stats.norm.isf(0.025) * se, rel=1e-9)


def test_power_check_equals_statsmodels_and_says_how_many_more_days():
    res = pl.DataFrame(
        {
            "arm": ["B"],
            "control_label": ["A"],
            "metric": ["conversion"],
            "kind": ["binary"],
            "n_control": [7000],
            "n_treatment": [7000],
            "control": [0.05],
            "se": [0.0037],
        }  # fmt: skip
    )
    got = ex.power_check(res, days_elapsed=7, mde=0.1, alpha=0.05, power=0.8).row(0, named=True)
    need = zt_ind_solve_power(effect_size=abs(proportion_effectsize(0.055, 0.05)), alpha=0.05,
                              power=0.8, ratio=1.0)  # fmt: skip
    assert got["units_needed_per_arm"] == pytest.approx(need, rel=1e-6)
    assert got["more_days"] == np.ceil((need - 7000) / 1000)
    assert got["note"].startswith("at this traffic (1,000 units/day per arm) you need ")


# -- wording ---------------------------------------------------------------------------------
def test_readout_names_arms_says_the_method_and_never_prints_zero_percent():
    assert ex.fmt_prob(0.0) == "< 0.1%" and ex.fmt_prob(1.0) == "> 99.9%"
    assert ex.fmt_prob(0.4567) == "45.7%" and ex.fmt_p(1e-9) == "< 0.001"
    units = pl.DataFrame(
        {
            "arm": ["old"] * 2000 + ["new"] * 2000,
            "c": [1] * 100 + [0] * 1900 + [1] * 300 + [0] * 1700,
            "v": np.r_[np.ones(2000), 2 * np.ones(2000)] + np.tile([0.0, 0.1], 2000),
        }  # fmt: skip
    )
    m = [{"name": "conv", "column": "c", "kind": "binary"},
         {"name": "value", "column": "v", "kind": "continuous"}]  # fmt: skip
    res, _ = ex.analyze(units, m, group="arm", control="old", treatment="new", n_resamples=200)
    text = ex.describe_readout(res, {"srm": False})
    assert "(old) vs" in text and "(new)" in text
    assert "P(new better) = > 99.9%, Bayesian Beta-Binomial posterior" in text
    assert "bootstrap of the means" in text
    assert not re.search(r"(?<![\d.])0(\.0)?%", text)  # no probability printed as 0%


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ({"name": "r", "column": "revenue", "kind": "ratio"}, "needs denominator"),
        ({"name": "q", "column": "revenue", "kind": "quantile"}, "needs quantile"),
        ({"name": "c", "column": "revenue", "kind": "continuous", "cap_value": 5,
          "cap_percentile": 0.9}, "not both"),
        ({"name": "m", "column": "converted", "kind": "binary", "margin": 0.05}, "set role: guardrail"),
        ({"name": "x", "column": "converted", "kind": "binary", "role": "boss"}, "role"),
    ],
)  # fmt: skip
def test_metric_specs_are_checked_before_anything_runs(metric, message):
    from customer_intel.params.experiments import ExperimentsParams

    with pytest.raises(ValueError, match=message):
        ExperimentsParams(metrics=[metric])
    with pytest.raises(ValueError, match="include the control"):
        ExperimentsParams(treatment_labels=["control", "b"])


def test_a_control_without_conversions_gives_an_infinite_odds_ratio_not_a_crash():
    got = st.odds_ratio(0, 100, 10, 100)
    assert got["odds_ratio"] == np.inf and np.isnan(got["ci_low"]) and got["ci_high"] == np.inf
    assert st.two_proportion_ztest(0, 100, 0, 100) == {"z": 0.0, "p_value": 1.0}


def test_a_metric_column_with_missing_values_is_an_error_that_says_how_to_exclude_them():
    units = pl.DataFrame({"g": ["control", "treatment", "control"], "v": [1.0, None, 2.0]})
    with pytest.raises(
        ValueError, match=r"metrics\[0\] \('v'\): column 'v' has 1 missing.*IS NULL"
    ):
        ex.analyze(units, [{"name": "v", "column": "v", "kind": "continuous"}], group="g")


def test_figures_over_time_and_by_role_carry_the_tables_values(three_arms):
    from customer_intel import plots

    daily = ex.experiment_daily(three_arms, METRICS, date_column="day", group="arm",
                                control="ctl", treatment=["v1", "v2"])  # fmt: skip
    fig = plots.experiment_over_time(daily, "conversion")
    effect = [t for t in fig.data if t.name == "v1: effect"][0]
    v1 = daily.filter(pl.col("arm") == "v1", pl.col("metric") == "conversion").sort("day")
    assert list(effect.y) == pytest.approx(v1["abs_lift"].to_list(), rel=REL)
    assert len(fig.data) == 2 * 4  # per arm: interval band, two sequence bounds, the effect
    res, _ = ex.analyze(three_arms, METRICS, group="arm", control="ctl", treatment=["v1", "v2"],
                        n_resamples=100)  # fmt: skip
    forest = plots.effects_forest(res)
    goal = [t for t in forest.data if t.name == "goal"][0]
    assert list(goal.y) == ["conversion (v1)", "conversion (v2)"]
    assert list(goal.x) == pytest.approx((res["abs_lift"] / res["control"]).to_list()[:2], rel=REL)
    margin = [t for t in forest.data if t.name == "non-inferiority margin"]
    assert [t.x[0] for t in margin] == [-0.1, -0.1]
