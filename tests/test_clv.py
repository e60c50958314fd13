"""CLV: the RFM summary (pymc-marketing's table, daily and calendar-weekly), BG/NBD and
Gamma-Gamma against lifetimes on CDNOW and the published values, recovery of planted
parameters, holdout validation and tracking."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import ibis
import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from customer_intel import clv, clv_models, synth_btyd

UTC = dt.UTC
END = dt.datetime(2015, 2, 7, tzinfo=UTC)

# pymc-marketing tests/clv/test_utils.py TestRFM.transaction_data (from lifetimes' tests), plus
# customer 7: a single purchase on the last day of observation, and a purchase after the end.
RFM_ROWS = [
    (1, "2015-01-01", 1),
    (1, "2015-02-06", 2),
    (2, "2015-01-01", 2),
    (3, "2015-01-01", 3),
    (3, "2015-01-02", 1),
    (3, "2015-01-05", 5),
    (4, "2015-01-16", 6),
    (4, "2015-02-02", 3),
    (4, "2015-02-05", 3),
    (4, "2015-02-05", 6),
    (5, "2015-01-16", 3),
    (5, "2015-01-17", 1),
    (5, "2015-01-18", 8),
    (6, "2015-02-02", 5),
    (7, "2015-02-07", 4),
    (7, "2015-02-07 00:00:01", 100),  # after observation_end: ignored
]


@pytest.fixture(scope="module")
def con():
    c = ibis.duckdb.connect()
    c.raw_sql("SET TimeZone = 'UTC'")
    yield c
    c.disconnect()


def _table(con, rows, name):
    df = pl.DataFrame(rows, schema=["user_id", "d", "price"], orient="row").with_columns(
        event_time=pl.col("d")
        .str.to_datetime()
        .dt.replace_time_zone("UTC")
        .dt.cast_time_unit("us"),
        price=pl.col("price").cast(pl.Float64),
    )
    return con.create_table(name, df.drop("d").to_arrow(), overwrite=True)


@pytest.fixture(scope="module")
def rfm_rows(con):
    return _table(con, RFM_ROWS, "rfm_rows")


def _frame(rows, cols):
    return pl.DataFrame(rows, schema=cols, orient="row").with_columns(
        pl.col(c).cast(pl.Float64)
        for c in cols
        if c not in ("user_id", "repeat_periods", "holdout_purchase_periods")
    )


def test_rfm_summary_daily_equals_pymc_marketing(rfm_rows):
    got = clv.rfm_summary(rfm_rows, observation_end=END)
    # pymc-marketing's expected values (test_rfm_summary_monetary_values_and_first_transactions)
    expected = _frame(
        [
            [1, 1, 36.0, 37.0, 2],
            [2, 0, 0.0, 37.0, 0],
            [3, 2, 4.0, 37.0, 3],
            [4, 2, 20.0, 22.0, 6],
            [5, 2, 2.0, 22.0, 4.5],
            [6, 0, 0.0, 5.0, 0],
            [7, 0, 0.0, 0.0, 0],  # one purchase, on the last day
        ],
        ["user_id", "repeat_periods", "recency", "T", "monetary_value"],
    )
    assert_frame_equal(got.select(expected.columns), expected)
    assert got["total_value"].to_list() == [3, 2, 9, 18, 12, 5, 4]


def test_rfm_summary_calendar_weeks_equals_pymc_marketing(rfm_rows):
    got = clv.rfm_summary(rfm_rows, observation_end=END, period="week")
    # test_rfm_summary_non_daily_frequency (time_unit="W": weeks Monday..Sunday); monetary by
    # hand: 1 -> week of 02-02 holds 2; 3 -> week of 01-05 holds 5; 4 -> week of 02-02 holds
    # 3 + 3 + 6; 5's three purchases share the week of 01-12
    expected = _frame(
        [
            [1, 1, 5.0, 5.0, 2],
            [2, 0, 0.0, 5.0, 0],
            [3, 1, 1.0, 5.0, 5],
            [4, 1, 3.0, 3.0, 12],
            [5, 0, 0.0, 3.0, 0],
            [6, 0, 0.0, 0.0, 0],
            [7, 0, 0.0, 0.0, 0],
        ],
        ["user_id", "repeat_periods", "recency", "T", "monetary_value"],
    )
    assert_frame_equal(got.select(expected.columns), expected)
    # 2015-01-01 (a Thursday) is in the week starting Monday 2014-12-29
    assert clv.period_start(got["first_pidx"][0], "week") == dt.date(2014, 12, 29)


def test_rfm_summary_calibration_holdout_equals_pymc_marketing(rfm_rows):
    cal_end = dt.datetime(2015, 2, 1, tzinfo=UTC)
    got = clv.rfm_summary(rfm_rows, observation_end=END, calibration_end=cal_end)
    # test_rfm_train_test_split_with_monetary_value; customers 6 and 7 start after calibration
    expected = _frame(
        [
            [1, 0, 0.0, 31.0, 0, 1, 2, 6.0],
            [2, 0, 0.0, 31.0, 0, 0, 0, 6.0],
            [3, 2, 4.0, 31.0, 3, 0, 0, 6.0],
            [4, 0, 0.0, 16.0, 0, 2, 6, 6.0],
            [5, 2, 2.0, 16.0, 4.5, 0, 0, 6.0],
        ],
        [
            "user_id",
            "repeat_periods",
            "recency",
            "T",
            "monetary_value",
            "holdout_purchase_periods",
            "holdout_monetary_value",
            "holdout_T",
        ],
    )
    assert_frame_equal(got.select(expected.columns), expected)
    weekly = clv.rfm_summary(rfm_rows, observation_end=END, calibration_end=cal_end, period="week")
    # test_rfm_train_test_split_works_with_specific_frequency
    assert weekly["repeat_periods"].to_list() == [0, 0, 1, 0, 0]
    assert weekly["T"].to_list() == [4, 4, 4, 2, 2]
    assert weekly["holdout_purchase_periods"].to_list() == [1, 0, 0, 1, 0]
    assert weekly["holdout_T"].to_list() == [1] * 5
    with pytest.raises(ValueError, match="calibration_end .* after the end"):
        clv.rfm_summary(rfm_rows, observation_end=cal_end, calibration_end=END)


def test_rfm_summary_errors_name_the_column_and_period(con, rfm_rows):
    with pytest.raises(ValueError, match=r"lack column\(s\) \['price'\]"):
        clv.rfm_summary(rfm_rows.drop("price"), observation_end=END)
    with pytest.raises(ValueError, match="segmentation.clv_period: expected one of"):
        clv.rfm_summary(rfm_rows, observation_end=END, period="month")


def test_simple_clv_metrics_by_hand(con):
    t = _table(
        con,
        [
            (1, "2020-01-01 09:00:00", 10.0),
            (1, "2020-01-01 18:00:00", 20.0),  # one period
            (1, "2020-01-11 10:00:00", 40.0),
            (2, "2020-01-05 10:00:00", 5.0),
            (3, "2020-01-02 10:00:00", 7.0),
            (3, "2020-01-31 10:00:00", 9.0),
        ],
        "simple",
    )
    got = clv.clv_summary(
        t, observation_end=dt.datetime(2020, 1, 31, 12, tzinfo=UTC), lifespan_years=1
    )
    expected = pl.DataFrame(
        {
            "user_id": [1, 2, 3],
            "repeat_periods": [1, 0, 1],
            "recency_periods": [10.0, 0.0, 29.0],
            "T_periods": [30.0, 26.0, 29.0],
            "monetary_value": [40.0, 0.0, 9.0],
            "avg_order_value": [35.0, 5.0, 8.0],
            "purchase_rate_per_period": [2 / 31, 1 / 27, 2 / 30],
            "first_purchase": [dt.date(2020, 1, 1), dt.date(2020, 1, 5), dt.date(2020, 1, 2)],
        }
    )
    assert_frame_equal(got.select(expected.columns), expected, check_dtypes=False)
    assert got["clv"].to_list() == pytest.approx(
        [35 * 2 / 31 * 365.25, 5 / 27 * 365.25, 8 * 2 / 30 * 365.25]
    )
    weekly = clv.clv_summary(
        t, observation_end=dt.datetime(2020, 1, 31, 12, tzinfo=UTC), period="week"
    )
    # 2020-01-01 is a Wednesday (week of 2019-12-30); 2020-01-31 a Friday (week of 01-27): 4 weeks
    assert weekly.filter(pl.col("user_id") == 1)["T_periods"].item() == 4.0
    assert weekly["period_days"].unique().to_list() == [7]


# ---------------------------------------------------------------- models vs lifetimes on CDNOW

CDNOW = Path(__file__).parent / "fixtures" / "clv" / "cdnow_summary.csv"  # see SOURCE.txt


@pytest.fixture(scope="module")
def cdnow():
    d = pd.read_csv(CDNOW)
    return pl.DataFrame(
        {
            "user_id": d["ID"].to_numpy(),
            "repeat_periods": d["x"].to_numpy(),
            "recency": d["t_x"].to_numpy(),
            "T": d["T"].to_numpy(),
            "monetary_value": d["zbar"].to_numpy(),
        }
    )


@pytest.fixture(scope="module")
def cdnow_fits(cdnow):
    return clv_models.fit_bgnbd(cdnow), clv_models.fit_gamma_gamma(cdnow)


def test_fits_equal_the_published_cdnow_values_and_lifetimes(cdnow, cdnow_fits):

    bg, gg = cdnow_fits
    assert bg.status == "converged" and gg.status == "converged"
    # Fader, Hardie & Lee (2005): r = 0.243, alpha = 4.414, a = 0.793, b = 2.426;
    # "RFM and CLV" (2005): p = 6.25, q = 3.74, v = 15.44
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for k, v in published.items():
        assert bg.params[k] == pytest.approx(v, abs=1e-3)
    for k, v in {"p": 6.25, "q": 3.74, "v": 15.44}.items():
        assert gg.params[k] == pytest.approx(v, abs=0.01)
    assert bg.log_likelihood == pytest.approx(-9582.4, abs=0.05)  # the paper's log-likelihood
    # the same as lifetimes' fitters (skipped without lifetimes)
    lifetimes = pytest.importorskip("lifetimes")  # archived: a test-only reference
    BetaGeoFitter, GammaGammaFitter = lifetimes.BetaGeoFitter, lifetimes.GammaGammaFitter
    x, tx, T, m = (
        cdnow[c].to_numpy() for c in ("repeat_periods", "recency", "T", "monetary_value")
    )
    ref = BetaGeoFitter().fit(x, tx, T)  # numpy in: lifetimes' input checks break on pandas 3
    for k in published:
        assert bg.params[k] == pytest.approx(ref.params_[k], rel=1e-4)
        assert bg.se[k] == pytest.approx(ref.summary.loc[k, "se(coef)"], rel=1e-3)
    rep = cdnow.filter(pl.col("repeat_periods") > 0)
    gref = GammaGammaFitter().fit(
        rep["repeat_periods"].to_numpy(), rep["monetary_value"].to_numpy()
    )
    for k in ("p", "q", "v"):
        assert gg.params[k] == pytest.approx(gref.params_[k], rel=1e-4)
        assert gg.se[k] == pytest.approx(gref.summary.loc[k, "se(coef)"], rel=1e-3)
    ll = clv_models.bgnbd_log_likelihood(np.array([ref.params_[k] for k in published]), x, tx, T)
    assert ll.sum() == pytest.approx(bg.log_likelihood, abs=1e-4)


def test_formulas_equal_lifetimes(cdnow, cdnow_fits):
    lifetimes = pytest.importorskip("lifetimes")  # archived: a test-only reference
    BetaGeoFitter, GammaGammaFitter = lifetimes.BetaGeoFitter, lifetimes.GammaGammaFitter

    bg, gg = cdnow_fits
    x, tx, T, m = (
        cdnow[c].to_numpy() for c in ("repeat_periods", "recency", "T", "monetary_value")
    )
    ref = BetaGeoFitter()
    ref.params_ = pd.Series(bg.params)
    ref.predict = ref.conditional_expected_number_of_purchases_up_to_time  # set by fit()
    np.testing.assert_allclose(
        clv_models.p_alive(bg.params, x, tx, T),
        ref.conditional_probability_alive(x, tx, T),
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        clv_models.expected_purchases(bg.params, 39, x, tx, T),
        ref.conditional_expected_number_of_purchases_up_to_time(39, x, tx, T),
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        clv_models.expected_purchases_new(bg.params, np.array([1.0, 10, 78])),
        ref.expected_number_of_purchases_up_to_time(np.array([1.0, 10, 78])),
        rtol=1e-10,
    )
    gref = GammaGammaFitter()
    gref.params_ = pd.Series(gg.params)
    np.testing.assert_allclose(
        clv_models.expected_average_value(gg.params, x, m),
        gref.conditional_expected_average_profit(pd.Series(x), pd.Series(m)).to_numpy(),
        rtol=1e-10,
    )
    # CLV: lifetimes with freq="W" (CDNOW's periods are weeks), 12 months, 1% a month
    head = cdnow.head(50)
    xs, txs, Ts, ms = (
        head[c].to_numpy() for c in ("repeat_periods", "recency", "T", "monetary_value")
    )
    ref_clv = gref.customer_lifetime_value(
        ref,
        pd.Series(xs),
        pd.Series(txs),
        pd.Series(Ts),
        pd.Series(ms),
        time=12,
        discount_rate=0.01,
        freq="W",
    ).to_numpy()
    got = clv_models.customer_lifetime_value(
        bg.params, gg.params, xs, txs, Ts, ms, period_days=7, months=12, discount_rate_monthly=0.01
    )
    np.testing.assert_allclose(got, ref_clv, rtol=1e-8)
    half = clv_models.customer_lifetime_value(
        bg.params, gg.params, xs, txs, Ts, ms, period_days=7, margin=0.5
    )
    np.testing.assert_allclose(half, 0.5 * got, rtol=1e-12)


def test_p_alive_by_hand_with_the_published_parameters():
    # P(alive | x, t_x, T) = 1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))
    bg = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    # customer 1 of CDNOW: x = 2, t_x = 30.43, T = 38.86
    by_hand = 1 / (1 + 0.793 / 3.426 * ((4.414 + 38.86) / (4.414 + 30.43)) ** 2.243)
    assert clv_models.p_alive(bg, 2, 30.43, 38.86) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(0.7266, abs=1e-4)
    assert clv_models.p_alive(bg, 0, 0, 38.86) == 1.0  # never bought again: no evidence of death
    # expected value with x = 0 is the population mean p v / (q - 1)
    gg = {"p": 6.25, "q": 3.74, "v": 15.44}
    assert clv_models.expected_average_value(gg, 0, 0) == pytest.approx(6.25 * 15.44 / 2.74)


def test_hessian_fallback_agrees_with_numdifftools(cdnow):
    rep = cdnow.filter(pl.col("repeat_periods") > 0)
    x, m = rep["repeat_periods"].to_numpy(), rep["monetary_value"].to_numpy()
    th = np.array([6.25, 3.74, 15.44])

    def nll(t):
        return -clv_models.gamma_gamma_log_likelihood(t, x, m).sum()

    h1, how1 = clv_models.hessian(nll, th)
    h2, how2 = clv_models.hessian(nll, th, prefer_numdifftools=False)
    assert (how1, how2) == ("numdifftools", "finite differences")
    np.testing.assert_allclose(h2, h1, rtol=1e-3)


# ---------------------------------------------------------------- planted truth


def test_fit_recovers_planted_parameters_within_three_standard_errors(con):
    truth = synth_btyd.BTYDTruth()
    purchases, exact = synth_btyd.btyd_sample(4000, truth, seed=1)
    t = con.create_table("btyd", purchases.to_arrow(), overwrite=True)
    daily = clv.rfm_summary(
        t,
        observation_end=dt.datetime(2021, 1, 1, tzinfo=UTC)
        - dt.timedelta(days=1)
        + dt.timedelta(days=1),
    )
    for summary in (exact, daily):  # continuous time, and calendar days through the engine
        bg, gg = clv_models.fit_bgnbd(summary), clv_models.fit_gamma_gamma(summary)
        assert bg.ok and gg.ok, (bg.message, gg.message)
        for fit, names in ((bg, "r alpha a b"), (gg, "p q v")):
            for k in names.split():
                planted = getattr(truth, k)
                assert abs(fit.params[k] - planted) < 3 * fit.se[k], (k, fit.params[k], fit.se[k])
        assert abs(gg.extra["freq_monetary_corr"]) < 0.1  # planted independence
    # a fit to another truth misses these parameters (so the check above can fail)
    _, other = synth_btyd.btyd_sample(4000, synth_btyd.BTYDTruth(r=1.5, a=2.0), seed=1)
    bg = clv_models.fit_bgnbd(other)
    assert abs(bg.params["r"] - truth.r) > 3 * bg.se["r"]


def test_no_dropout_is_reported_at_the_boundary_and_tiny_data_as_failed():
    _, s = synth_btyd.btyd_sample(3000, synth_btyd.BTYDTruth(a=0.01, b=1000.0), seed=2)
    bg = clv_models.fit_bgnbd(s)
    assert bg.status == "at_boundary" and "no dropout in the data" in bg.message
    assert np.isnan(bg.se["a"])
    _, small = synth_btyd.btyd_sample(800, synth_btyd.BTYDTruth(a=0.01, b=1000.0), seed=2)
    pn = clv_models.fit_pareto_nbd(small)
    assert pn.status == "at_boundary" and "Pareto/NBD: no dropout in the data" in pn.message
    tiny = s.head(5)
    bg, gg = clv_models.fit_bgnbd(tiny), clv_models.fit_gamma_gamma(tiny)
    assert bg.status == gg.status == "failed" and "at least 10" in bg.message
    preds = clv_models.predictions(tiny, bg, gg)
    assert preds["clv"].null_count() == 5 and preds["clv_decile"].null_count() == 5
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['recency'\]"):
        clv_models.fit_bgnbd(s.drop("recency"))
    with pytest.raises(ValueError, match="recency > T"):
        clv_models.fit_bgnbd(s.with_columns(recency=pl.col("T") + 1))


def test_independence_note_warns_when_spend_follows_frequency():
    _, s = synth_btyd.btyd_sample(2000, seed=3)
    gg = clv_models.fit_gamma_gamma(s)
    assert "plausible" in clv_models.independence_note(gg)
    skewed = s.with_columns(
        monetary_value=pl.col("monetary_value") * (1 + pl.col("repeat_periods"))
    )
    gg2 = clv_models.fit_gamma_gamma(skewed)
    assert gg2.extra["freq_monetary_corr"] > 0.3
    assert clv_models.independence_note(gg2).startswith(
        "Warning: repeat purchase periods and monetary value"
    )


# ---------------------------------------------------------------- outputs and validation


def test_predictions_deciles_segments_and_at_risk_by_hand():
    s = pl.DataFrame(
        {
            "user_id": [1, 2, 3, 4],
            "repeat_periods": [0, 2, 2, 5],
            "recency": [0.0, 5.0, 30.0, 30.0],
            "T": [40.0, 40.0, 40.0, 31.0],
            "monetary_value": [0.0, 10.0, 20.0, 30.0],
            "total_value": [5.0, 40.0, 60.0, 200.0],
        }
    )
    bg = clv_models.Fit(
        "BG/NBD",
        ("r", "alpha", "a", "b"),
        {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
        {},
        "converged",
        "",
        0.0,
        4,
    )
    gg = clv_models.Fit(
        "Gamma-Gamma",
        ("p", "q", "v"),
        {"p": 6.25, "q": 3.74, "v": 15.44},
        {},
        "converged",
        "",
        0.0,
        4,
    )
    p = clv_models.predictions(s, bg, gg, predict_days=28, period_days=7, months=6)
    assert p["expected_purchases"].to_list() == pytest.approx(
        clv_models.expected_purchases(
            bg.params, 4, s["repeat_periods"], s["recency"], s["T"]
        ).tolist()
    )
    # 4 customers: rank 1..4 -> deciles 1 + floor(10 (rank - 1) / 4) = 1, 3, 6, 8
    order = p.sort("clv")["clv_decile"].to_list()
    assert order == [1, 3, 6, 8]
    # customer 2 bought twice early and not since: low P(alive); 4 is alive and worth most
    risk = clv_models.at_risk(p, max_p_alive=0.5, top=5)
    assert risk["user_id"].to_list() == [2]
    rfm_table = pl.DataFrame({"user_id": [1, 2, 3, 4], "segment": ["A", "A", "B", "B"]})
    seg = clv_models.clv_by_segment(p, rfm_table)
    assert seg["customers"].to_list() == [2, 2] and seg["clv_share"].sum() == pytest.approx(1.0)
    assert seg.select(pl.sum_horizontal(pl.col("^decile_.*$")))["decile_1"].to_list() == [2, 2]


def test_holdout_validation_and_tracking_on_planted_data(con):
    purchases, _ = synth_btyd.btyd_sample(3000, seed=5)
    t = con.create_table("btyd_h", purchases.to_arrow(), overwrite=True)
    end = dt.datetime(2020, 12, 30, tzinfo=UTC)
    cal_end = end - dt.timedelta(days=90)
    cal = clv.rfm_summary(t, observation_end=end, calibration_end=cal_end)
    bg = clv_models.fit_bgnbd(cal)
    table, m = clv_models.holdout_validation(cal, bg, max_repeat_periods=5)
    assert table["repeat_periods_group"].to_list()[-1] == "5+"
    assert table["customers"].sum() == cal.height == m["customers"]
    assert m["holdout_periods"] == 90
    assert m["total_actual"] == cal["holdout_purchase_periods"].sum()
    pred = clv_models.expected_purchases(
        bg.params, 90, cal["repeat_periods"], cal["recency"], cal["T"]
    )
    assert m["total_predicted"] == pytest.approx(pred.sum())
    assert m["mae"] == pytest.approx(
        np.abs(pred - cal["holdout_purchase_periods"].to_numpy()).mean()
    )
    assert abs(m["total_error_pct"]) < 10  # the model is the truth here
    assert m["mae"] < m["naive_mae"]
    assert "holdout of 90 days" in clv_models.describe_holdout(m, "day")
    pareto = clv_models.fit_pareto_nbd(cal)
    table2, m2 = clv_models.holdout_validation(cal, bg, pareto=pareto, max_repeat_periods=5)
    ppred = clv_models.pareto_expected_purchases(
        pareto.params, 90, cal["repeat_periods"], cal["recency"], cal["T"]
    )
    assert m2["pareto_total_predicted"] == pytest.approx(ppred.sum())
    assert table2["predicted_pareto_mean"].dot(table2["customers"]) == pytest.approx(ppred.sum())
    assert "Pareto/NBD predicts" in clv_models.describe_holdout(m2, "day")
    repeats = clv.repeat_purchases_by_period(t, observation_end=end, first_by=cal_end)
    end_idx, cal_idx = clv.period_index(end, "day"), clv.period_index(cal_end, "day")
    tr = clv_models.tracking(cal, repeats, bg, calibration_end_pidx=cal_idx, end_pidx=end_idx)
    # actual: every repeat period of the calibration customers up to the end
    assert (
        tr["actual_cum"][-1] == cal["repeat_periods"].sum() + cal["holdout_purchase_periods"].sum()
    )
    # expected: the sum over customers of E[X(end - first)]
    ages = end_idx - cal["first_pidx"].to_numpy()
    assert tr["expected_cum"][-1] == pytest.approx(
        clv_models.expected_purchases_new(bg.params, ages).sum()
    )
    assert tr.filter(pl.col("pidx") == cal_idx)["holdout"].item() is False
    assert abs(tr["expected_cum"][-1] / tr["actual_cum"][-1] - 1) < 0.1
    fr = clv_models.fr_matrix(bg, cal, t=30)
    assert fr["T"].unique().to_list() == [cal["T"].max()]
    assert fr.filter(pl.col("repeat_periods") == 0)["p_alive"].unique().to_list() == [1.0]


def test_pareto_nbd_equals_the_published_cdnow_fit_and_lifetimes(cdnow):

    fit = clv_models.fit_pareto_nbd(cdnow)
    assert fit.status == "converged"
    # Fader, Hardie & Lee (2005) report r = 0.55, alpha = 10.58, s = 0.61, beta = 11.67, LL -9595.0
    for k, v in {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}.items():
        assert fit.params[k] == pytest.approx(v, abs=2e-3)
    assert fit.log_likelihood == pytest.approx(-9595.0, abs=0.05)
    assert all(np.isfinite(v) and v > 0 for v in fit.se.values())
    ParetoNBDFitter = pytest.importorskip("lifetimes").ParetoNBDFitter
    x, tx, T = (cdnow[c].to_numpy() for c in ("repeat_periods", "recency", "T"))
    ref = ParetoNBDFitter().fit(x, tx, T)
    for k in fit.names:
        assert fit.params[k] == pytest.approx(ref.params_[k], rel=1e-3)
    ref.params_ = pd.Series(fit.params)
    np.testing.assert_allclose(
        clv_models.pareto_p_alive(fit.params, x, tx, T),
        ref.conditional_probability_alive(x, tx, T),
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        clv_models.pareto_expected_purchases(fit.params, 39, x, tx, T),
        ref.conditional_expected_number_of_purchases_up_to_time(39, x, tx, T),
        rtol=1e-9,
    )


def test_the_clv_histogram_holds_its_bins_not_every_customer():
    """The bars are NumPy's histogram of the finite values, whatever the number of customers:
    plotly's own histogram carried each customer's value into the notebook, PNG and page."""
    import json

    from customer_intel import plots

    rng = np.random.default_rng(5)
    values = rng.lognormal(5, 1, 200_000)
    preds = pl.DataFrame({"clv": [*values, None, float("nan"), float("inf")]})
    fig = plots.clv_distribution(preds, bins=60)
    (bars,) = fig.data
    # counted by hand: 60 equal bins from the least to the largest value, the last one closed
    edges = np.linspace(values.min(), values.max(), 61)
    s = pl.Series(values)
    counts = np.array(
        [
            int(((s >= lo) & ((s < hi) if i < 59 else (s <= hi))).sum())
            for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True))
        ]
    )
    assert np.array_equal(np.asarray(bars.y), counts) and counts.sum() == len(values)
    assert np.allclose(np.asarray(bars.x), (edges[:-1] + edges[1:]) / 2)
    assert np.allclose(np.asarray(bars.width), np.diff(edges))
    assert f"median {np.median(values):,.2f}" in json.dumps(fig.to_plotly_json()["layout"])
    h = plots.clv_histogram(preds, bins=60)
    assert h["customers"].to_list() == counts.tolist()
    assert np.allclose(h["clv_from"].to_numpy(), edges[:-1])
    assert np.allclose(h["clv_to"].to_numpy(), edges[1:])
    small = plots.clv_distribution(preds.head(1_000), bins=60)
    assert len(fig.to_json()) < 1.2 * len(small.to_json())  # no larger with 200x the customers
    empty = plots.clv_distribution(pl.DataFrame({"clv": [None]}, schema={"clv": pl.Float64}))
    assert len(empty.data[0].x) == 0
    assert (
        plots.clv_histogram(pl.DataFrame({"clv": [None]}, schema={"clv": pl.Float64})).height == 0
    )
