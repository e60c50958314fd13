"""A/B statistics against scipy / statsmodels to 1e-9 relative, and on planted experiments."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from scipy import stats
from scipy.stats.contingency import odds_ratio as scipy_odds_ratio
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_effectsize,
    proportions_ztest,
)

from customer_intel import experiment_units
from customer_intel import experiments as ex

from conftest import ingested_sample

REL = 1e-9
CASES = [(120, 1000, 150, 1000), (30, 400, 18, 390), (5012, 50_000, 5230, 50_100), (7, 50, 15, 48)]


@pytest.mark.parametrize(("xa", "na", "xb", "nb"), CASES)
@pytest.mark.parametrize("alternative", ["two-sided", "larger", "smaller"])
def test_two_proportion_ztest_equals_statsmodels(xa, na, xb, nb, alternative):
    ours = ex.two_proportion_ztest(xa, na, xb, nb, alternative)
    z, p = proportions_ztest([xb, xa], [nb, na], alternative=alternative)
    assert ours["z"] == pytest.approx(z, rel=REL)
    assert ours["p_value"] == pytest.approx(p, rel=REL)


@pytest.mark.parametrize(("xa", "na", "xb", "nb"), CASES)
def test_chi_square_g_test_and_odds_ratio_equal_scipy(xa, na, xb, nb):
    table = np.array([[xa, na - xa], [xb, nb - xb]])
    for yates in (False, True):
        chi2, p, _, _ = stats.chi2_contingency(table, correction=yates)
        ours = ex.chi_square(xa, na, xb, nb, yates=yates)
        assert ours["chi2"] == pytest.approx(chi2, rel=REL) and ours["p_value"] == pytest.approx(
            p, rel=REL
        )
    g, p, _, _ = stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")
    ours = ex.g_test(xa, na, xb, nb)
    assert ours["g"] == pytest.approx(g, rel=REL) and ours["p_value"] == pytest.approx(p, rel=REL)
    ref = scipy_odds_ratio(np.array([[xb, nb - xb], [xa, na - xa]]), kind="sample")
    ci = ref.confidence_interval(0.95)
    ours = ex.odds_ratio(xa, na, xb, nb)
    assert ours["odds_ratio"] == pytest.approx(ref.statistic, rel=REL)
    assert (ours["ci_low"], ours["ci_high"]) == pytest.approx((ci.low, ci.high), rel=REL)


@pytest.mark.parametrize(("xa", "na", "xb", "nb"), CASES)
def test_difference_intervals_equal_statsmodels(xa, na, xb, nb):
    for method, fn in (("wald", ex.diff_ci_wald), ("newcomb", ex.diff_ci_newcombe)):
        lo, hi = confint_proportions_2indep(xb, nb, xa, na, method=method, compare="diff")
        assert fn(xa, na, xb, nb) == pytest.approx((lo, hi), rel=REL)


def test_welch_and_mann_whitney_equal_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.lognormal(1, 1, 800), rng.lognormal(1.1, 1.2, 900)
    for alt, sp in (("two-sided", "two-sided"), ("larger", "greater"), ("smaller", "less")):
        ref = stats.ttest_ind(b, a, equal_var=False, alternative=sp)
        ours = ex.welch_ttest(a, b, alt)
        assert ours["t"] == pytest.approx(ref.statistic, rel=REL)
        assert ours["p_value"] == pytest.approx(ref.pvalue, rel=REL)
        assert ours["df"] == pytest.approx(ref.df, rel=REL)
        mw = stats.mannwhitneyu(b, a, alternative=sp)
        assert ex.mann_whitney(a, b, alt)["p_value"] == pytest.approx(mw.pvalue, rel=REL)
    ci = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    ours = ex.welch_ttest(a, b)
    assert (ours["ci_low"], ours["ci_high"]) == pytest.approx((ci.low, ci.high), rel=REL)
    d = ex.describe_groups({"a": a})
    assert d["skewness"][0] == pytest.approx(stats.skew(a), rel=REL)
    assert d["kurtosis"][0] == pytest.approx(stats.kurtosis(a), rel=REL)


def test_multiple_testing_equals_statsmodels():
    p = [0.01, 0.04, 0.03, 0.2, 0.005, 0.5, 0.049]
    for ours, ref in (("holm", "holm"), ("bh", "fdr_bh")):
        assert ex.adjust_pvalues(p, ours) == pytest.approx(multipletests(p, method=ref)[1], rel=REL)


@pytest.mark.parametrize(("base", "mde"), [(0.1, 0.1), (0.02, 0.25), (0.5, -0.05)])
def test_power_equals_statsmodels(base, mde):
    h = proportion_effectsize(base * (1 + mde), base)
    ref = NormalIndPower()
    for n in (500, 5000, 50_000):
        assert ex.power_two_proportions(base, mde, n) == pytest.approx(
            ref.power(effect_size=h, nobs1=n, alpha=0.05, ratio=1.0), rel=REL
        )
    n = ex.sample_size_per_group(base, mde, alpha=0.05, power=0.8)
    ref_n = ref.solve_power(effect_size=h, alpha=0.05, power=0.8, ratio=1.0)
    assert n == pytest.approx(ref_n, rel=1e-6)  # statsmodels' own root finder stops at ~1e-8
    assert ex.power_two_proportions(base, mde, n) == pytest.approx(0.8, rel=REL)
    mde_back = ex.mde_for_sample_size(base, n, alpha=0.05, power=0.8)
    assert abs(mde_back) == pytest.approx(abs(mde), rel=1e-6)
    curve = ex.power_curve(base, mde)
    assert curve["power"].is_sorted()


def test_srm_flags_51_49_with_100k_units_and_passes_50_50():
    bad = ex.srm_check({"control": 51_000, "treatment": 49_000}, {"control": 0.5, "treatment": 0.5})
    ref = stats.chisquare([51_000, 49_000], [50_000, 50_000])
    assert bad["p_value"] == pytest.approx(ref.pvalue, rel=REL) and bad["srm"]
    ok = ex.srm_check({"control": 50_100, "treatment": 49_900}, {"control": 0.5, "treatment": 0.5})
    assert not ok["srm"]
    text = ex.describe_readout(pl.DataFrame(), bad)
    assert text.startswith("WARNING: sample ratio mismatch")


def test_bayes_and_bootstrap_are_sane_and_seeded():
    b1 = ex.bayes_binary(100, 1000, 130, 1000, seed=1)
    assert b1 == ex.bayes_binary(100, 1000, 130, 1000, seed=1)
    # P(B > A) under flat priors agrees with the normal approximation of the two Betas
    za = (0.13 - 0.1) / np.sqrt(0.1 * 0.9 / 1000 + 0.13 * 0.87 / 1000)
    assert b1["prob_b_better"] == pytest.approx(stats.norm.cdf(za), abs=0.01)
    rng = np.random.default_rng(0)
    a, b = rng.binomial(1, 0.1, 5000), rng.binomial(1, 0.12, 5000)
    boot = ex.bootstrap_relative_lift(a, b, n_resamples=1000, seed=2)
    assert boot["ci_low"] < b.mean() / a.mean() - 1 < boot["ci_high"]


@pytest.mark.parametrize(
    "kind", ["binary", "counts", "zero-inflated continuous", "continuous without ties"]
)
def test_bootstrap_means_have_the_distribution_of_resampling_units(kind):
    """The shortcut draws (multinomial over distinct values; binomial split off the most
    frequent value) give the same distribution as drawing one index per unit: same centre and
    spread as theory (mean, population sd / sqrt(n)) and a two-sample KS test against the
    index-per-unit bootstrap does not tell them apart."""
    rng = np.random.default_rng(3)
    n = 400
    x = {
        "binary": rng.binomial(1, 0.15, n),
        "counts": rng.poisson(1.3, n),
        "zero-inflated continuous": np.where(rng.random(n) < 0.8, 0.0, rng.lognormal(3, 1, n)),
        "continuous without ties": rng.normal(50, 10, n),
    }[kind].astype(float)
    fast = ex.bootstrap_means(x, 20_000, np.random.default_rng(1))
    naive = x[np.random.default_rng(2).integers(0, n, (20_000, n))].mean(1)
    assert fast.mean() == pytest.approx(x.mean(), rel=0.01)
    assert fast.std() == pytest.approx(x.std() / np.sqrt(n), rel=0.03)
    assert stats.ks_2samp(fast, naive).pvalue > 0.001
    again = ex.bootstrap_means(x, 20_000, np.random.default_rng(1))
    assert np.array_equal(fast, again)  # seeded


def test_cuped_reduces_variance_and_stays_unbiased():
    rng = np.random.default_rng(5)
    n = 20_000
    x = rng.normal(10, 3, n)
    treat = rng.random(n) < 0.5
    y = 0.8 * x + rng.normal(0, 2, n) + 0.5 * treat
    adj, theta, reduction = ex.cuped(y, x)
    assert theta == pytest.approx(0.8, abs=0.05) and reduction > 0.5
    assert adj[treat].mean() - adj[~treat].mean() == pytest.approx(0.5, abs=0.1)
    assert ex.welch_ttest(adj[~treat], adj[treat])["ci_high"] - ex.welch_ttest(
        adj[~treat], adj[treat]
    )["ci_low"] < (
        ex.welch_ttest(y[~treat], y[treat])["ci_high"]
        - ex.welch_ttest(y[~treat], y[treat])["ci_low"]
    )


def test_cleanup_rules_are_counted():
    units = pl.DataFrame(
        {
            "user_id": [1, 1, 2, 3, 4],
            "experiment_group": ["control", "treatment", "control", "treatment", "control"],
            "variant": ["control", "treatment", "treatment", "treatment", "control"],
            "t": [1, 2, 3, 4, 5],
        }
    )
    kept, rep = ex.clean_units(
        units, unit="user_id", exclude=["experiment_group <> variant"], duplicates="drop_all"
    )
    assert rep.removed == {"exclude: experiment_group <> variant": 1, "duplicates (drop_all)": 2}
    assert kept["user_id"].to_list() == [3, 4]
    kept, rep = ex.clean_units(
        units, unit="user_id", exclude=[], duplicates="keep_first", order_by="t"
    )
    assert kept["user_id"].to_list() == [1, 2, 3, 4] and rep.removed["duplicates (keep_first)"] == 1
    with pytest.raises(ValueError, match=r"experiments\.exclude\[0\]"):
        ex.clean_units(units, unit="user_id", exclude=["grp = 1"])


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    ev, info = ingested_sample(tmp_path_factory.mktemp("exp"), 400_000, seed=12)
    truth = json.loads((info.truth_dir / "experiment.json").read_text())
    assign = pl.read_parquet(info.assignments_path)
    units = experiment_units.unit_outcomes(assign, ev, window_end=truth["window_end"], pre_days=14)
    return units, truth, pl.read_parquet(info.truth_dir / "users.parquet")


def test_unit_outcomes_match_the_planted_conversions(planted):
    units, _, truth = planted
    j = units.join(truth, on="user_id")
    assert (j["converted"] == j["converted_in_experiment"].cast(pl.Int8)).mean() > 0.999


def test_planted_lift_lies_in_the_reported_interval(planted):
    units, truth, _ = planted
    metrics = [
        {"name": "conversion", "column": "converted", "kind": "binary", "covariate": "pre_events"}
    ]
    res, _ = ex.analyze(units, metrics, n_resamples=500, seed=1)
    assert set(ex.READOUT_COLUMNS) <= set(res.columns)  # the notebook's view of the table
    r = res.row(0, named=True)
    rel_lo, rel_hi = r["ci_low"] / r["control"], r["ci_high"] / r["control"]
    assert rel_lo < truth["planted_relative_lift"] < rel_hi
    assert r["boot_rel_ci_low"] < truth["planted_relative_lift"] < r["boot_rel_ci_high"]
    assert r["cuped_variance_reduction"] > 0
    cuped_rel = r["cuped_diff"] / r["control"]
    assert abs(cuped_rel - r["rel_lift"]) < 0.05  # CUPED leaves the effect (nearly) unchanged


@pytest.mark.slow
def test_bootstrap_ci_covers_about_95_percent():
    rng = np.random.default_rng(11)
    hits = 0
    runs = 200
    for i in range(runs):
        a = rng.binomial(1, 0.2, 3000)
        b = rng.binomial(1, 0.22, 3000)
        boot = ex.bootstrap_relative_lift(a, b, n_resamples=1000, seed=i)
        hits += boot["ci_low"] < 0.1 < boot["ci_high"]
    assert 0.91 <= hits / runs <= 0.99


@pytest.mark.notebooks
def test_external_unit_table_needs_only_a_params_file(tmp_path):
    """06_experiments on an external CSV, driven by params/external_ab.yaml alone."""
    import papermill

    from customer_intel.params import load_params, stage_parameters
    from customer_intel.paths import NOTEBOOKS_DIR, PARAMS_DIR

    p = load_params(PARAMS_DIR / "external_ab.yaml", ["experiments.n_resamples=200"])
    papermill.execute_notebook(
        str(NOTEBOOKS_DIR / "06_experiments.ipynb"),
        str(tmp_path / "out.ipynb"),
        parameters=stage_parameters(p, "experiments", run_dir=tmp_path / "run"),
        kernel_name="python3",
        progress_bar=False,
        cwd=str(NOTEBOOKS_DIR),
    )
    results = pl.read_parquet(tmp_path / "run" / "tables" / "experiment_results.parquet")
    assert results["metric"].to_list() == ["conversion", "spend per visitor"]
    diag = pl.read_parquet(tmp_path / "run" / "tables" / "experiment_diagnostics.parquet")
    removed = dict(zip(diag["check"], diag["value"], strict=True))
    assert removed["removed: exclude: arm <> variant"] > 0
    assert removed["removed: duplicates (drop_all)"] > 0
    seg = pl.read_parquet(tmp_path / "run" / "tables" / "experiment_segments.parquet")
    assert set(seg["segment_value"]) == {"mobile", "desktop"}
    spend = results.filter(pl.col("metric") == "spend per visitor").row(0, named=True)
    assert spend["cuped_variance_reduction"] > 0.3  # pre_spend explains much of spend
    decision = pl.read_parquet(tmp_path / "run" / "tables" / "experiment_decision.parquet")
    assert decision["arm"].to_list() == ["B"] and decision["verdict"][0].startswith("B: ")
    srm = pl.read_parquet(tmp_path / "run" / "tables" / "experiment_segment_srm.parquet")
    assert set(srm["segment_value"]) == {"mobile", "desktop"}
    assert (tmp_path / "run" / "figures" / "experiment_effects.json").exists()


def test_labels_not_in_the_data_are_params_errors_naming_the_labels_found():
    units = pl.DataFrame({"arm": ["A", "B", "A", "B"], "converted": [1, 0, 0, 1]})
    metrics = [{"name": "c", "column": "converted", "kind": "binary"}]
    with pytest.raises(ValueError, match=r"experiments.control_label: label 'control' is not in"):
        ex.analyze(units, metrics, group="arm", control="control", treatment="B")
    with pytest.raises(ValueError, match=r"holds \['A', 'B'\]"):
        ex.analyze(units, metrics, group="arm", control="A", treatment="C")
    with pytest.raises(ValueError, match=r"intended_split: label\(s\) \['C'\] are not in the data"):
        ex.srm_check({"A": 2, "B": 2}, {"A": 0.4, "B": 0.4, "C": 0.2})


def test_a_group_without_conversions_gives_an_open_odds_ratio_not_an_error():
    zero = ex.odds_ratio(10, 100, 0, 100)  # treatment never converts
    assert zero["odds_ratio"] == 0.0 and zero["ci_low"] == 0.0 and np.isnan(zero["ci_high"])
    units = pl.DataFrame(
        {"g": ["control"] * 50 + ["treatment"] * 50, "converted": [1] * 5 + [0] * 95}
    )
    res, _ = ex.analyze(
        units,
        [{"name": "c", "column": "converted", "kind": "binary"}],
        group="g",
        n_resamples=200,
    )
    assert res["odds_ratio"][0] == 0.0


def test_unit_outcomes_on_a_hand_table_read_only_the_window_but_count_every_event_in_it():
    """The engine reads a bounded slice of the log; the outcomes equal the definitions."""
    import datetime as dt

    import ibis

    t = dt.datetime
    utc = dt.UTC
    assign = pl.DataFrame(
        {
            "user_id": [1, 2, 3],
            "experiment_group": ["control", "treatment", "treatment"],
            "assigned_at": [t(2019, 10, 10, tzinfo=utc), t(2019, 10, 12, tzinfo=utc),
                            t(2019, 10, 12, tzinfo=utc)],
        }
    )  # fmt: skip
    rows = [  # user, time, type, price
        (1, t(2019, 9, 20), "purchase", 50.0),  # before the pre-period: nowhere
        (1, t(2019, 10, 1), "view", 0.0),  # pre-period view
        (1, t(2019, 10, 2), "purchase", 7.0),  # pre-period purchase
        (1, t(2019, 10, 11), "view", 0.0),  # in window, not a purchase
        (1, t(2019, 10, 15), "purchase", 10.0),  # in window, after the last assignment
        (1, t(2019, 10, 25), "purchase", 99.0),  # after the window end
        (2, t(2019, 10, 11), "cart", 0.0),  # pre-period (1 day before its assignment)
        (2, t(2019, 10, 13), "view", 0.0),  # after the last assignment, a view: no outcome
        (2, t(2019, 10, 14), "purchase", 20.0),
        (2, t(2019, 10, 14, 1), "purchase", 5.0),
        (4, t(2019, 10, 14), "purchase", 3.0),  # not assigned
    ]
    events = pl.DataFrame(rows, schema=["user_id", "event_time", "event_type", "price"],
                          orient="row").with_columns(pl.col("event_time").dt.replace_time_zone("UTC"))  # fmt: skip
    con = ibis.duckdb.connect()
    ev = con.create_table("events", events)
    got = experiment_units.unit_outcomes(
        assign, ev, window_end=t(2019, 10, 20, tzinfo=utc), pre_days=14
    )
    got = got.sort("user_id").select(
        "user_id", "purchases", "revenue", "pre_purchases", "pre_revenue", "pre_events",
        "converted",
    )  # fmt: skip
    assert got.rows() == [
        (1, 1, 10.0, 1, 7.0, 2, 1),
        (2, 2, 25.0, 0, 0.0, 1, 1),
        (3, 0, 0.0, 0, 0.0, 0, 0),
    ]
    con.disconnect()


def test_outcome_window_end_is_the_params_value_else_last_assignment_plus_days_capped():
    import datetime as dt

    utc = dt.UTC
    assign = pl.DataFrame(
        {
            "assigned_at": [
                dt.datetime(2019, 10, 1, tzinfo=utc),
                dt.datetime(2019, 10, 5, tzinfo=utc),
            ]
        }
    )
    data_end = dt.datetime(2019, 10, 30, tzinfo=utc)
    end = experiment_units.outcome_window_end
    assert end(assign, data_end, None, 3) == dt.datetime(2019, 10, 8, tzinfo=utc)
    assert end(assign, data_end, None, 60) == data_end  # never past the data
    assert end(assign, data_end, "2019-10-10", 3) == dt.datetime(2019, 10, 10, tzinfo=utc)
    with pytest.raises(ValueError, match="experiments.window_end: expected an ISO date"):
        end(assign, data_end, "10/10/2019", 3)


def test_load_units_reads_an_external_unit_table_as_it_is(tmp_path):
    path = tmp_path / "ab.csv"
    path.write_text("user_id;experiment_group;converted\n1;control;0\n2;treatment;1\n")
    units, note = experiment_units.load_units(None, units_path=str(path), units_separator=";")
    assert units.rows() == [(1, "control", 0), (2, "treatment", 1)]
    assert note == "units read from ab.csv: 2 rows"


def test_days_elapsed_spans_first_to_last_assignment_plus_one_or_is_none():
    import datetime as dt

    units = pl.DataFrame(
        {"t": [dt.datetime(2019, 10, 1), dt.datetime(2019, 10, 3, 12)], "d": [None, None]}
    )
    assert ex.days_elapsed(units, "t") == pytest.approx(3.5)
    assert ex.days_elapsed(units, None) is None
    assert ex.days_elapsed(units, "assigned_at") is None  # an external table without times


def test_significance_by_row_names_arm_and_metric():
    results = pl.DataFrame(
        {
            "arm": ["B", "B", "C"],
            "metric": ["conv", "rev", "conv"],
            "significant": [True, False, True],
        }
    )
    got = ex.significance_by_row(results)
    assert got == {"B conv": True, "B rev": False, "C conv": True}


def test_one_dispatch_on_the_alternative_in_scipy_words():
    from customer_intel.experiments_stats import scipy_alternative

    assert [scipy_alternative(a) for a in ex.ALTERNATIVES] == ["two-sided", "greater", "less"]
    with pytest.raises(ValueError, match=r"experiments.alternative: expected one of"):
        scipy_alternative("greater")  # scipy's word is not a params value
    # the normal table: 1.96 two-sided and 1.645 one-sided are the 5% points
    assert ex.p_from_z(1.959964, "two-sided") == pytest.approx(0.05, rel=1e-5)
    assert ex.p_from_z(1.644854, "larger") == pytest.approx(0.05, rel=1e-5)
    assert ex.p_from_z(1.644854, "smaller") == pytest.approx(0.95, rel=1e-5)
