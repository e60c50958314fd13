"""Metrics declared in params: each score on a hand-computed table and against a reference."""

from __future__ import annotations

import datetime as dt
import itertools
import math

import ibis
import numpy as np
import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

from customer_intel import metrics
from customer_intel.params import ParamsError, load_params
from customer_intel.params.metrics import MetricSpec
from customer_intel.paths import PARAMS_DIR

_NAMES = itertools.count()


def run_metric(df: pl.DataFrame, **spec) -> pl.DataFrame:
    con = ibis.duckdb.connect()
    con.raw_sql("SET TimeZone = 'UTC'")
    t = con.create_table(f"src_{next(_NAMES)}", df.to_arrow())
    return metrics.compute(t, MetricSpec(name="m", **spec))


# -- conversion / engagement -------------------------------------------------------------------
EVENTS = pl.DataFrame(
    {
        "g": ["a", "a", "a", "a", "b", "b", "b"],
        "s": ["s1", "s1", "s2", "s2", "s3", "s4", "s4"],
        "event_type": ["purchase", "view", "view", "cart", "purchase", "purchase", "view"],
        "price": [10.0, 1.0, 1.0, 1.0, 5.0, 7.0, 1.0],
    }
)


def test_conversion_counts_rows_by_label():
    out = run_metric(EVENTS, kind="conversion", group_by=["g"])
    se = math.sqrt(1 / 3 * 2 / 3 / 3)
    expected = pl.DataFrame(
        {
            "g": ["a", "b"],
            "Positives": [1, 2],
            "Negatives": [2, 1],  # the cart row is neither
            "Total": [3, 3],
            "ConversionRate": [1 / 3, 2 / 3],
            "StdErr": [se, se],
            "Revenue": [10.0, 12.0],
        }
    )
    assert_frame_equal(out, expected, check_dtypes=False)


def test_conversion_by_unit_counts_a_unit_with_any_positive_as_positive():
    out = run_metric(
        EVENTS,
        kind="conversion",
        group_by=["g"],
        unit="s",
        scores=["Positives", "Negatives", "ConversionRate", "Revenue"],
    )
    expected = pl.DataFrame(
        {
            "g": ["a", "b"],
            "Positives": [1, 2],  # s1 | s3, s4 (s4 also viewed: still positive)
            "Negatives": [1, 0],  # s2
            "ConversionRate": [0.5, 1.0],
            "Revenue": [10.0, 12.0],
        }
    )
    assert_frame_equal(out, expected, check_dtypes=False)


def test_engagement_ctr_and_lift_against_the_control_group():
    df = pl.DataFrame(
        {
            "arm": ["control"] * 4 + ["test"] * 3,
            "Outcome": ["Clicked", "Impression", "Impression", "Impression"]
            + ["Clicked", "Clicked", "Impression"],
        }
    )
    out = run_metric(
        df,
        kind="engagement",
        outcome="Outcome",
        positive=["Clicked"],
        negative=["Impression"],
        group_column="arm",
        control_label="control",
    )
    expected = pl.DataFrame(
        {
            "Positives": [3],
            "Negatives": [4],
            "Total": [7],
            "CTR": [3 / 7],
            "CTR_test": [2 / 3],
            "CTR_control": [1 / 4],
            "Lift": [(2 / 3) / (1 / 4) - 1],
        }
    )
    assert_frame_equal(out, expected, check_dtypes=False)


# -- descriptive -------------------------------------------------------------------------------
def test_descriptive_scores_on_a_hand_table():
    df = pl.DataFrame({"g": ["a"] * 5 + ["b"] * 3, "x": [1.0, 2, 3, 5, 10, 5, 5, None]})
    out = run_metric(df, kind="descriptive", group_by=["g"], columns=["x"])
    expected = pl.DataFrame(
        {
            "g": ["a", "b"],
            "x_Count": [5, 2],  # the missing value is not counted
            "x_Sum": [21.0, 10.0],
            "x_Mean": [4.2, 5.0],
            "x_Median": [3.0, 5.0],
            "x_p25": [2.0, 5.0],
            "x_p75": [5.0, 5.0],
            "x_p90": [8.0, 5.0],  # position 3.6: 5 + 0.6 * (10 - 5)
            "x_p95": [9.0, 5.0],
            "x_Std": [math.sqrt(12.7), 0.0],
            "x_Var": [12.7, 0.0],  # 50.8 / (5 - 1)
            "x_Skew": [1 / 3, None],  # (5 + 2 - 2 * 3) / (5 - 2); no spread: undefined
        }
    )
    assert_frame_equal(out, expected, check_dtypes=False)


def test_descriptive_equals_numpy_per_group():
    rng = np.random.default_rng(3)
    df = pl.DataFrame({"g": rng.integers(0, 4, 2000), "x": rng.lognormal(3, 1, 2000)})
    out = run_metric(df, kind="descriptive", group_by=["g"], columns=["x"])
    for row in out.iter_rows(named=True):
        x = df.filter(pl.col("g") == row["g"])["x"].to_numpy()
        q = dict(zip((25, 50, 75, 90, 95), np.percentile(x, [25, 50, 75, 90, 95]), strict=True))
        assert row["x_p25"] == pytest.approx(q[25], rel=1e-11)
        assert row["x_Median"] == pytest.approx(q[50], rel=1e-11)
        assert row["x_p90"] == pytest.approx(q[90], rel=1e-11)
        assert row["x_p95"] == pytest.approx(q[95], rel=1e-11)
        assert row["x_Var"] == pytest.approx(np.var(x, ddof=1), rel=1e-9)
        assert row["x_Std"] == pytest.approx(np.std(x, ddof=1), rel=1e-9)
        assert row["x_Skew"] == pytest.approx((q[75] + q[25] - 2 * q[50]) / (q[75] - q[25]))


# -- model scores ------------------------------------------------------------------------------
def test_model_scores_hand_table_with_a_tie():
    df = pl.DataFrame({"p": [0.9, 0.8, 0.8, 0.1], "y": [1, 0, 1, 0]})
    out = run_metric(df, kind="model_scores", score_column="p", outcome="y", positive=[1])
    # pairs (pos, neg): 0.9>0.8, 0.9>0.1, 0.8=0.8 (a half), 0.8>0.1 -> 3.5 / 4
    # AP: threshold 0.9 precision 1 adds recall 1/2; 0.8 precision 2/3 adds 1/2
    expected = pl.DataFrame(
        {"Count": [4], "Positives": [2], "AUC": [0.875], "AveragePrecision": [0.5 + 1 / 3]}
    )
    assert_frame_equal(out, expected, check_dtypes=False)


def test_model_scores_equal_scikit_learn_per_group():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(7)
    n = 3000
    g = rng.integers(0, 3, n)
    y = rng.random(n) < 0.2 + 0.1 * g
    p = np.round(np.clip(0.3 * y + rng.normal(0.4, 0.2, n), 0, 1), 2)  # many ties
    df = pl.DataFrame({"g": g, "y": y.astype(int), "p": p})
    out = run_metric(
        df, kind="model_scores", group_by=["g"], score_column="p", outcome="y", positive=[1]
    )
    assert out.height == 3
    for row in out.iter_rows(named=True):
        m = g == row["g"]
        assert row["AUC"] == pytest.approx(roc_auc_score(y[m], p[m]), abs=1e-11)
        assert row["AveragePrecision"] == pytest.approx(
            average_precision_score(y[m], p[m]), abs=1e-11
        )


# -- experiment --------------------------------------------------------------------------------
def test_experiment_scores_equal_statsmodels_and_scipy():
    from scipy.stats import chi2_contingency
    from statsmodels.stats.contingency_tables import Table2x2
    from statsmodels.stats.proportion import proportions_ztest

    counts = {  # (segment, arm): (conversions, units)
        ("new", "control"): (30, 400),
        ("new", "B"): (45, 410),
        ("new", "C"): (28, 390),
        ("old", "control"): (80, 300),
        ("old", "B"): (95, 310),
    }
    rows = []
    for (seg, arm), (x, n) in counts.items():
        rows += [{"seg": seg, "arm": arm, "converted": int(i < x)} for i in range(n)]
    out = run_metric(
        pl.DataFrame(rows),
        kind="experiment",
        group_by=["seg"],
        group_column="arm",
        outcome="converted",
        positive=[1],
    )
    assert out.select("seg", "control", "treatment").rows() == [
        ("new", "control", "B"),
        ("new", "control", "C"),
        ("old", "control", "B"),
    ]
    for r in out.iter_rows(named=True):
        x_a, n_a = counts[(r["seg"], "control")]
        x_b, n_b = counts[(r["seg"], r["treatment"])]
        assert (r["x_control"], r["n_control"], r["x_treatment"], r["n_treatment"]) == (
            x_a,
            n_a,
            x_b,
            n_b,
        )
        z, pz = proportions_ztest([x_b, x_a], [n_b, n_a])
        assert r["z"] == pytest.approx(z, rel=1e-9) and r["z_p_value"] == pytest.approx(pz)
        table = np.array([[x_a, n_a - x_a], [x_b, n_b - x_b]])
        chi2, pc, *_ = chi2_contingency(table, correction=False)
        assert r["chi2"] == pytest.approx(chi2) and r["chi2_p_value"] == pytest.approx(pc)
        g, pg, *_ = chi2_contingency(table, correction=False, lambda_="log-likelihood")
        assert r["g"] == pytest.approx(g) and r["g_p_value"] == pytest.approx(pg)
        t22 = Table2x2(np.array([[x_b, n_b - x_b], [x_a, n_a - x_a]]))
        low, high = t22.oddsratio_confint(alpha=0.05)
        assert r["odds_ratio"] == pytest.approx(t22.oddsratio)
        assert (r["odds_ratio_ci_low"], r["odds_ratio_ci_high"]) == pytest.approx((low, high))


def test_experiment_without_the_control_arm_names_it():
    df = pl.DataFrame({"arm": ["x", "y"], "converted": [1, 0]})
    with pytest.raises(ValueError, match="control arm 'control' in column 'arm'"):
        run_metric(df, kind="experiment", group_column="arm", outcome="converted", positive=[1])


# -- clv ---------------------------------------------------------------------------------------
def test_clv_hand_table():
    d = dt.datetime
    df = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 2],
            "event_type": ["purchase", "purchase", "view", "purchase"],
            "event_time": [d(2019, 1, 1), d(2019, 1, 3), d(2019, 1, 3), d(2019, 1, 5)],
            "price": [10.0, 20.0, 99.0, 30.0],
        }
    ).with_columns(pl.col("event_time").dt.replace_time_zone("UTC"))
    out = run_metric(df, kind="clv", lifespan_years=1.0)
    # user 1: recency 2 days, tenure 4, 2 purchase days, 15 a day, CLV 15*2/5*365.25 = 2191.5
    # user 2: recency 0, tenure 0, 1 day, 30, CLV 30*1/1*365.25 = 10957.5
    expected = pl.DataFrame(
        {
            "Customers": [2],
            "Recency": [1.0],
            "Frequency": [1.5],
            "Monetary": [22.5],
            "Tenure": [2.0],
            "CLV": [(2191.5 + 10957.5) / 2],
        }
    )
    assert_frame_equal(out, expected, check_dtypes=False)


# -- time grains -------------------------------------------------------------------------------
def test_time_grains_start_each_period_in_utc():
    d = dt.datetime
    df = pl.DataFrame(
        {
            "event_time": [
                d(2019, 12, 31, 23, 30),
                d(2020, 1, 1, 0, 10),
                d(2020, 2, 15, 12),
                d(2020, 4, 1, 8),
            ],
            "event_type": ["purchase"] * 4,
            "price": [1.0, 2.0, 3.0, 4.0],
        }
    ).with_columns(pl.col("event_time").dt.replace_time_zone("UTC"))
    D = dt.date
    cases = {
        "Day": [D(2019, 12, 31), D(2020, 1, 1), D(2020, 2, 15), D(2020, 4, 1)],
        "Week": [D(2019, 12, 30), D(2020, 2, 10), D(2020, 3, 30)],  # Mondays
        "Month": [D(2019, 12, 1), D(2020, 1, 1), D(2020, 2, 1), D(2020, 4, 1)],
        "Quarter": [D(2019, 10, 1), D(2020, 1, 1), D(2020, 4, 1)],
        "Year": [D(2019, 1, 1), D(2020, 1, 1)],
    }
    # the warehouse's events also carry event_date, their UTC date: the grains are read
    # from it (no time zone conversion on the engine) and start on the same days
    stored = df.with_columns(event_date=pl.col("event_time").dt.date())
    for grain, starts in cases.items():
        for source in (df, stored):
            out = run_metric(source, kind="conversion", group_by=[grain], scores=["Positives"])
            assert out[grain].to_list() == starts, grain
            assert out["Positives"].sum() == 4
            assert out.schema[grain] == pl.Date
    week = run_metric(df, kind="conversion", group_by=["Week"], scores=["Revenue"])
    assert week["Revenue"].to_list() == [3.0, 3.0, 4.0]


def test_filter_and_derived_columns_run_on_the_engine():
    df = pl.DataFrame(
        {
            "category_code": ["a.x", "a.y", "b.z", None],
            "event_type": ["purchase"] * 4,
            "price": [1.0, 2.0, 4.0, 8.0],
        }
    )
    out = run_metric(
        df,
        kind="conversion",
        derived={"top": "COALESCE(SPLIT_PART(category_code, '.', 1), 'none')"},
        filter="price < 5",
        group_by=["top"],
        scores=["Revenue"],
    )
    assert out.rows() == [("a", 3.0), ("b", 4.0)]


# -- validation --------------------------------------------------------------------------------
def _profile(tmp_path, metrics_list, reports=()):
    p = tmp_path / "p.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "extends": str(PARAMS_DIR / "default.yaml"),
                "metrics": {"metrics": metrics_list, "reports": list(reports)},
            }
        )
    )
    return p


GOOD = {"name": "c", "kind": "conversion", "group_by": ["Day", "brand"]}


@pytest.mark.parametrize(
    ("metric", "report", "message"),
    [
        (
            {**GOOD, "filter": "colour = 'red'"},
            None,
            r"metrics\[0\] \(c\)\.filter: .*unknown column\(s\) \['colour'\]",
        ),
        ({**GOOD, "filter": "price"}, None, r"metrics\[0\] \(c\)\.filter: .*not a condition"),
        (
            {**GOOD, "kind": "churn"},
            None,
            r"metrics\.metrics: .*metrics\[0\]\.kind: Input should be",
        ),
        ({**GOOD, "scores": ["AUC"]}, None, r"metrics\[0\] \(c\)\.scores: unknown score"),
        ({**GOOD, "group_by": ["Hour"]}, None, r"metrics\[0\] \(c\)\.group_by: unknown column"),
        (
            GOOD,
            {"name": "r", "metric": "nope", "type": "line", "x": "Day", "y": "Total"},
            r"reports\[0\] \(r\)\.metric: unknown metric 'nope'",
        ),
        (
            GOOD,
            {"name": "r", "metric": "c", "type": "line", "x": "Day", "y": "CTR"},
            r"reports\[0\] \(r\)\.y: column 'CTR' is not in the table of metric 'c'",
        ),
        (
            GOOD,
            {"name": "r", "metric": "c", "type": "heatmap", "x": "Day", "y": "brand"},
            r"reports\[0\] \(r\)\.z: a heatmap report needs z",
        ),
        (
            GOOD,
            {"name": "r", "metric": "c", "type": "chart", "x": "Day", "y": "Total"},
            r"reports\[0\]\.type: Input should be",
        ),
    ],
)
def test_bad_metrics_and_reports_are_refused_at_load_naming_the_key(
    tmp_path, metric, report, message
):
    path = _profile(tmp_path, [metric], [report] if report else [])
    with pytest.raises(ParamsError, match=message) as e:
        load_params(path)
    assert str(path) in str(e.value)


def test_default_profile_metrics_and_reports_validate():
    p = load_params(PARAMS_DIR / "default.yaml")
    kinds = {m.kind for m in p.metrics.metric_specs()}
    assert {"conversion", "descriptive", "model_scores", "experiment", "forecast"} <= kinds
    assert {r.type for r in p.metrics.report_specs()} >= {"line", "treemap", "forecast"}


# -- another table through params alone --------------------------------------------------------
def test_an_interaction_history_export_works_through_params_alone(tmp_path):
    """A Pega-style interaction history (one row per decision) mapped by ``column_map``."""
    rng = np.random.default_rng(11)
    n = 4000
    channel = rng.choice(["Web", "Email"], n)
    group = rng.choice(["Test", "Control"], n, p=[0.8, 0.2])
    propensity = rng.random(n)
    clicked = rng.random(n) < np.where(group == "Test", 0.05 + 0.2 * propensity, 0.08)
    t0 = dt.datetime(2024, 3, 1)
    csv = tmp_path / "ih.csv"
    pl.DataFrame(
        {
            "pxOutcome": np.where(clicked, "Clicked", "Impression"),
            "pyChannel": channel,
            "pyIssue": rng.choice(["Sales", "Retention"], n),
            "pyGroup": rng.choice(["Cards", "Loans"], n),
            "ModelControlGroup": group,
            "pyPropensity": propensity,
            "ExperimentName": "NBA",
            "ExperimentGroup": np.where(group == "Test", "treatment", "control"),
            "pxOutcomeTime": [
                (t0 + dt.timedelta(hours=int(h))).strftime("%Y-%m-%d %H:%M:%S")
                for h in rng.integers(0, 24 * 28, n)
            ],
        }
    ).write_csv(csv)
    source = {
        "path": str(csv),
        "column_map": {
            "outcome": "pxOutcome",
            "channel": "pyChannel",
            "control_group": "ModelControlGroup",
            "propensity": "pyPropensity",
            "arm": "ExperimentGroup",
            "outcome_time": "pxOutcomeTime",
        },
    }
    common = {
        "source": source,
        "outcome": "outcome",
        "positive": ["Clicked"],
        "negative": ["Impression"],
    }
    path = _profile(
        tmp_path,
        [
            {
                "name": "ctr",
                "kind": "engagement",
                "group_by": ["Week", "channel"],
                "time_column": "outcome_time",
                "group_column": "control_group",
                "control_label": "Control",
                **common,
            },
            {
                "name": "auc",
                "kind": "model_scores",
                "group_by": ["channel"],
                "score_column": "propensity",
                **common,
            },
            {
                "name": "ab",
                "kind": "experiment",
                "group_by": ["pyIssue"],
                "group_column": "arm",
                **common,
            },
        ],
        [
            {
                "name": "CTR",
                "metric": "ctr",
                "type": "line",
                "x": "Week",
                "y": "CTR",
                "color": "channel",
            }
        ],
    )
    params = load_params(path)
    specs = params.metrics.metric_specs()
    con = metrics.local_connection()
    tables, summary = metrics.compute_all(
        specs, con, table_path=lambda name: None, base_dir=tmp_path
    )
    assert summary["rows"].to_list() == [tables[s.name].height for s in specs]
    ctr = tables["ctr"]
    assert set(ctr["channel"]) == {"Web", "Email"} and ctr["Week"].n_unique() >= 4
    web = channel == "Web"
    is_test = group == "Test"
    expected = clicked[web & is_test].mean() / clicked[web & ~is_test].mean() - 1
    assert ctr.filter(pl.col("channel") == "Web").height >= 4  # one row per week
    overall = metrics.compute(
        metrics.read_source(specs[0], con, base_dir=tmp_path),
        specs[0].model_copy(update={"group_by": ["channel"]}),
    ).filter(pl.col("channel") == "Web")
    assert overall["Lift"][0] == pytest.approx(expected, rel=1e-11)
    from sklearn.metrics import roc_auc_score

    auc = tables["auc"].filter(pl.col("channel") == "Email")["AUC"][0]
    em = channel == "Email"
    assert auc == pytest.approx(roc_auc_score(clicked[em], propensity[em]), abs=1e-11)
    assert set(tables["ab"]["treatment"]) == {"treatment"}


def test_a_file_source_missing_a_mapped_column_is_refused_at_load(tmp_path):
    csv = tmp_path / "ih.csv"
    csv.write_text("pxOutcome,pyChannel\nClicked,Web\n")
    path = _profile(
        tmp_path,
        [
            {
                "name": "x",
                "kind": "conversion",
                "outcome": "outcome",
                "source": {"path": str(csv), "column_map": {"outcome": "Outcome"}},
            }
        ],
    )
    with pytest.raises(
        ParamsError, match=r"source\.column_map: .* lacks column\(s\) \['Outcome'\]"
    ):
        load_params(path)


def test_a_metric_whose_table_or_history_is_missing_is_skipped_with_the_reason(
    tmp_path, monkeypatch
):
    d = dt.datetime
    events = pl.DataFrame(
        {
            "event_time": [d(2024, 1, 1) + dt.timedelta(days=i) for i in range(10)],
            "event_type": ["purchase"] * 10,
            "price": [1.0] * 10,
        }
    ).with_columns(pl.col("event_time").dt.replace_time_zone("UTC"))
    con = metrics.local_connection()
    con.create_table("events", events.to_arrow(), temp=True)
    specs = [
        MetricSpec(
            name="units",
            kind="experiment",
            source={"table": "experiment_units"},
            group_column="experiment_group",
            outcome="converted",
            positive=[1],
        ),
        MetricSpec(name="fc", kind="forecast"),
        MetricSpec(name="daily", kind="conversion", group_by=["Day"]),
    ]
    asked = []
    compute = metrics.compute
    monkeypatch.setattr(
        metrics, "compute", lambda src, spec: (asked.append(spec.name), compute(src, spec))[1]
    )

    def no_table(name):  # as in a run where no stage made it
        asked.append(f"table {name}")

    tables, summary = metrics.compute_all(specs, con, table_path=no_table, base_dir=tmp_path)
    # other stages' tables are asked for last (the stage may wait for them there); the
    # results keep the order of the specs
    assert asked == ["fc", "daily", "table experiment_units"]
    assert list(tables) == list(summary["metric"]) == ["units", "fc", "daily"]
    notes = dict(zip(summary["metric"], summary["note"], strict=True))
    assert notes["units"] == "skipped: no stage made table 'experiment_units' in this run"
    assert notes["fc"].startswith("skipped: a backtest needs at least")
    assert notes["daily"] == ""
    assert tables["units"].is_empty() and "odds_ratio" in tables["units"].columns
    assert tables["daily"].height == 10
