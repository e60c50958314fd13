"""RFM, CLV, clustering and cohorts: hand-computed tables and planted truth."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import ibis
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score

from customer_intel import clustering, cohorts, rfm, sources, sqlexpr, synth
from customer_intel import columns as C
from customer_intel.params import load_params
from customer_intel.params.segmentation import DEFAULT_RULES
from customer_intel.paths import PARAMS_DIR

UTC = dt.UTC
FIXTURES = Path(__file__).parent / "fixtures" / "segmentation"


def _purchases(rows):
    return (
        pl.DataFrame(rows, schema=["user_id", "ts", "price", "user_session"], orient="row")
        .with_columns(
            event_time=pl.col("ts").str.to_datetime().dt.replace_time_zone("UTC"),
            event_type=pl.lit("purchase"),
        )
        .drop("ts")
    )


# 10 customers, as_of 2020-01-31. Values worked out by hand below.
RFM_ROWS = [
    (1, "2020-01-30 10:00:00", 100.0, "a1"),
    (1, "2020-01-20 10:00:00", 50.0, "a2"),
    (1, "2020-01-10 10:00:00", 50.0, "a3"),  # r=1d f=3 m=200
    (2, "2020-01-29 10:00:00", 20.0, "b1"),
    (2, "2020-01-29 08:00:00", 20.0, "b2"),  # same day
    (3, "2020-01-01 10:00:00", 500.0, "c1"),  # long ago, big
    (4, "2020-01-25 10:00:00", 10.0, "d1"),
    (4, "2020-01-15 10:00:00", 10.0, "d2"),
    (5, "2020-01-05 10:00:00", 5.0, "e1"),
    (6, "2020-01-28 10:00:00", 60.0, "f1"),
    (6, "2020-01-18 10:00:00", 60.0, "f2"),
    (7, "2020-01-15 10:00:00", 40.0, "g1"),
    (8, "2020-01-30 10:00:00", 40.0, "h1"),
    (9, "2020-01-02 10:00:00", 15.0, "i1"),
    (10, "2020-01-20 10:00:00", 25.0, "j1"),
]


def test_rfm_scores_codes_and_ties_by_hand():
    con = ibis.duckdb.connect()
    t = con.create_table("p", _purchases(RFM_ROWS))
    base = rfm.rfm_base(t, as_of=dt.datetime(2020, 1, 31, 10, tzinfo=UTC))
    got = rfm.rfm_scores(base, bins=5).to_polars().sort("user_id")
    # recency days: 1:1, 2:2, 3:30, 4:6, 5:26, 6:3, 7:16, 8:1, 9:29, 10:11
    assert got["recency_days"].round(4).to_list() == [1, 2, 30, 6, 26, 3, 16, 1, 29, 11]
    # frequency = distinct purchase days: user 2's two purchases are one day
    assert got["frequency"].to_list() == [3, 1, 1, 2, 1, 2, 1, 1, 1, 1]
    assert got["monetary"].to_list() == [200, 40, 500, 20, 5, 120, 40, 40, 15, 25]
    # R: rank by recency descending (0-based): 30->0, 29->1, 26->2, 16->3, 11->4, 6->5, 3->6,
    # 2->7, 1,1->8 (tie); score = 1 + floor(5 * rank / 10)
    assert got["r"].to_list() == [5, 4, 1, 3, 2, 4, 2, 5, 1, 3]
    # F: 1 x7 (rank 0) -> 1; 2 x2 (rank 7) -> 4; 3 (rank 9) -> 5
    assert got["f"].to_list() == [5, 1, 1, 4, 1, 4, 1, 1, 1, 1]
    # M: 5->0, 15->1, 20->2, 25->3, 40 x3 ->4, 120->7, 200->8, 500->9
    assert got["m"].to_list() == [5, 3, 5, 2, 1, 4, 3, 3, 1, 2]
    assert got["rfm_code"].to_list()[:3] == ["555", "413", "115"]
    named = rfm.segment_by_rules(got, DEFAULT_RULES)
    # first matching rule: 555 Champions; 413 New (r>3, f<2); 115 Hibernating (r<3, f<2, m>2);
    # 342 Loyal (f>3); 211 no rule -> Other; 444 Champions; 213 Hibernating; 513 New; 111 Lost;
    # 312 no rule -> Other
    assert named["segment"].to_list() == [
        "Champions",
        "New Customers",
        "Hibernating",
        "Loyal",
        "Other",
        "Champions",
        "Hibernating",
        "New Customers",
        "Lost",
        "Other",
    ]
    coded = rfm.segment_by_codes(got, {"Premium Customer": ["555", "115"], "Lost": ["111"]})
    assert coded["segment"].to_list()[:3] == ["Premium Customer", "Other", "Premium Customer"]
    assert coded.filter(pl.col("rfm_code") == "111")["segment"].to_list() == ["Lost"]


def test_rfm_lines_orders_days_and_whole_day_recency_by_hand():
    """The retail tutorial's definitions: F as invoice lines, orders or days; recency as the
    floor of the day difference (325.58 days is 325), the exact value kept beside it."""
    rows = [  # user, time, price, order (invoice)
        (18102, "2011-12-09 10:00:00", 10.0, "inv1"),  # 3 lines in one invoice
        (18102, "2011-12-09 10:00:00", 12.0, "inv1"),
        (18102, "2011-12-09 10:00:00", 14.0, "inv1"),
        (18102, "2011-12-09 15:00:00", 5.0, "inv2"),  # another invoice, same day
        (18102, "2011-11-01 09:00:00", 7.0, "inv3"),  # another day
        (42, "2011-01-13 18:00:00", 3.0, "inv9"),
    ]
    con = ibis.duckdb.connect()
    t = con.create_table("p", _purchases(rows))
    as_of = dt.datetime(2011, 12, 10, 12, 0, tzinfo=UTC)
    freq = {
        how: dict(
            rfm.rfm_base(t, as_of=as_of, frequency=how)
            .to_polars()
            .select("user_id", "frequency")
            .iter_rows()
        )
        for how in ("lines", "orders", "days")
    }
    assert freq == {
        "lines": {18102: 5, 42: 1},
        "orders": {18102: 3, 42: 1},
        "days": {18102: 2, 42: 1},
    }
    base = rfm.rfm_base(t, as_of=as_of).to_polars().sort("user_id")
    # user 42: 2011-01-13 18:00 -> 2011-12-10 12:00 is 330 days and 18 hours = 330.75 days
    assert base["recency_days"].to_list() == [330, 0]  # 18102: 21 hours ago -> 0 whole days
    assert base["recency_exact_days"].to_list() == pytest.approx([330.75, 21 / 24])
    assert base.schema["recency_days"] == pl.Int64
    with pytest.raises(ValueError, match="rfm_frequency: expected one of"):
        rfm.rfm_base(t, as_of=as_of, frequency="visits")


def test_rfm_orders_and_average_monetary():
    con = ibis.duckdb.connect()
    t = con.create_table("p", _purchases(RFM_ROWS))
    base = rfm.rfm_base(
        t, as_of=dt.datetime(2020, 1, 31, 10, tzinfo=UTC), frequency="orders", monetary="average"
    )
    got = base.to_polars().sort("user_id")
    assert got["frequency"].to_list()[:2] == [3, 2]  # user 2: two orders on one day
    assert got["monetary"].to_list()[:2] == [pytest.approx(200 / 3), 20.0]


def test_cached_purchases_of_events_give_the_same_rfm_and_clv():
    """The segmentation stage reads ``purchases_of(events).cache()`` once for RFM and every CLV
    step: the projection must keep each column they read, and the cache must not change a row."""
    from customer_intel import clv

    buys = _purchases(RFM_ROWS).with_columns(product_id=pl.lit(1), brand=pl.lit("x"))
    views = buys.with_columns(event_type=pl.lit("view"), price=pl.col("price") * 10)
    con = ibis.duckdb.connect()
    events = con.create_table("events", pl.concat([views, buys]))
    cached = rfm.purchases_of(events).cache()
    assert tuple(cached.columns) == rfm.PURCHASE_COLUMNS
    assert cached.count().execute() == len(RFM_ROWS)
    reference = events.filter(events.event_type == "purchase")
    as_of = dt.datetime(2020, 1, 31, 10, tzinfo=UTC)
    for how in ("days", "orders", "lines"):
        want = rfm.rfm_base(reference, as_of=as_of, frequency=how, monetary="average")
        got = rfm.rfm_base(cached, as_of=as_of, frequency=how, monetary="average")
        assert got.to_polars().sort("user_id").equals(want.to_polars().sort("user_id"))
    for period in ("day", "week"):
        want = clv.clv_summary(reference, observation_end=as_of, period=period)
        assert clv.clv_summary(cached, observation_end=as_of, period=period).equals(want)


def test_segment_summary_and_rule_errors():
    rows = pl.DataFrame(
        {
            "r": [5, 1],
            "f": [5, 1],
            "m": [5, 1],
            "rfm_code": ["555", "111"],
            "recency_days": [1.0, 30.0],
            "frequency": [3, 1],
            "monetary": [90.0, 10.0],
            "revenue": [90.0, 10.0],
        }
    )
    s = rfm.segment_summary(rfm.segment_by_rules(rows, DEFAULT_RULES))
    assert s.row(0, named=True) | {} == {
        "segment": "Champions",
        "customers": 1,
        "share": 0.5,
        "avg_recency_days": 1.0,
        "avg_frequency": 3.0,
        "avg_monetary": 90.0,
        "revenue": 90.0,
        "revenue_share": 0.9,
    }
    with pytest.raises(
        sqlexpr.ExpressionError, match=r"segmentation\.rules\[0\] \(Bad\): .*unknown column"
    ):
        rfm.segment_by_rules(rows, [{"Bad": "recency > 3"}])
    with pytest.raises(ValueError, match="listed under both"):
        rfm.segment_by_codes(rows, {"A": ["555"], "B": ["555"]})


def test_cohort_retention_by_hand():
    ev = _purchases(
        [
            (1, "2020-01-03 10:00:00", 1.0, "a"),
            (1, "2020-02-03 10:00:00", 1.0, "b"),
            (2, "2020-01-20 10:00:00", 1.0, "c"),
            (2, "2020-03-01 10:00:00", 1.0, "d"),
            (3, "2020-02-10 10:00:00", 1.0, "e"),
        ]
    )
    r = cohorts.cohort_retention(ibis.duckdb.connect().create_table("e", ev), period="month")
    got = {(str(c), i): (a, n) for c, i, a, n, _ in r.iter_rows()}
    assert got == {
        ("2020-01-01", 0): (2, 2),
        ("2020-01-01", 1): (1, 2),
        ("2020-01-01", 2): (1, 2),
        ("2020-02-01", 0): (1, 1),
    }
    m = cohorts.retention_matrix(r)
    assert m.columns == ["cohort", "cohort_size", "p0", "p1", "p2"]


def test_weekly_visit_cohorts_on_the_engine_equal_a_polars_computation():
    """ISO weeks from Monday; the visit basis counts any event; 7 users by hand."""
    rows = [
        (1, "2020-01-06 09:00:00", "view"),  # Monday: week of Jan 6
        (1, "2020-01-12 23:00:00", "purchase"),  # Sunday: same week
        (1, "2020-01-13 00:30:00", "view"),  # next week
        (2, "2020-01-08 12:00:00", "cart"),
        (2, "2020-01-29 12:00:00", "view"),  # three weeks later
        (3, "2020-01-14 12:00:00", "view"),
        (3, "2020-01-15 12:00:00", "view"),
        (4, "2020-01-20 12:00:00", "purchase"),
        (5, "2020-01-07 12:00:00", "view"),
        (5, "2020-01-21 12:00:00", "purchase"),
        (6, "2020-01-13 12:00:00", "remove_from_cart"),
        (7, "2020-01-27 12:00:00", "view"),
    ]
    ev = pl.DataFrame(rows, schema=["user_id", "ts", "event_type"], orient="row").with_columns(
        event_time=pl.col("ts").str.to_datetime().dt.replace_time_zone("UTC")
    )
    got = cohorts.cohort_retention(
        ibis.duckdb.connect().create_table("e", ev), period="week", basis="visit"
    )
    per = ev.select("user_id", per=pl.col("event_time").dt.truncate("1w").dt.date()).unique()
    first = per.group_by("user_id").agg(cohort=pl.col("per").min())
    want = (
        per.join(first, on="user_id")
        .with_columns(period_index=((pl.col("per") - pl.col("cohort")).dt.total_days() // 7))
        .group_by("cohort", "period_index")
        .agg(active_users=pl.len())
        .join(first.group_by("cohort").agg(cohort_size=pl.len()), on="cohort")
        .sort("cohort", "period_index")
    )
    assert got["cohort"].to_list() == want["cohort"].to_list()
    assert got["period_index"].to_list() == want["period_index"].to_list()
    assert got["active_users"].to_list() == want["active_users"].to_list() == [3, 1, 1, 1, 2, 1, 1]
    assert got["cohort_size"].to_list() == [3, 3, 3, 3, 2, 1, 1]
    assert str(got["cohort"][0]) == "2020-01-06"


@pytest.fixture(scope="module")
def planted():
    attrs, truth = synth.generate_customers(3000, seed=5)
    spec = clustering.FeatureSpec(
        numeric=[
            "year_birth",
            "income",
            "kidhome",
            "teenhome",
            "mnt_electronics",
            "mnt_appliances",
            "mnt_computers",
            "mnt_furniture",
            "mnt_apparel",
            "mnt_other",
            "num_web_visits",
        ],
        filters=["2021 - year_birth < 90 AND income < 600000"],
        missing="drop",
    )
    features, removed = clustering.prepare_features(attrs, spec)
    return attrs, truth, spec, features, removed


def test_knee_finds_the_four_planted_types(planted):
    attrs, truth, spec, features, removed = planted
    assert removed["removed_by_filters"] > 0  # the absurd birth years and incomes
    x = clustering.curve_matrix(features.drop("user_id"), spec, sample=3000)
    sel = clustering.select_k(x, k_min=2, k_max=10, n_init=4, random_state=0)
    assert sel.knee == 4 and sel.k == 4
    model, labels = clustering.fit(
        features.drop("user_id"), spec, k=4, value_column="income", n_init=4
    )
    t = truth.join(features.select("user_id"), on="user_id", how="semi").sort("user_id")
    assert adjusted_rand_score(t["segment"], labels) >= 0.9
    prof = clustering.profiles(features, labels, model)
    assert prof["cluster_name"].to_list() == ["Platinum", "Gold", "Silver", "Bronze"]
    assert prof["income"].is_sorted(descending=True)
    # predict_segment on the training rows returns the fitted labels
    pred = clustering.predict_segment(
        attrs.join(features.select("user_id"), on="user_id", how="semi").sort("user_id"), model
    )
    assert (pred["cluster"].to_numpy() == labels).all()
    assert set(pred["cluster_name"]) == set(model.names.values())
    table = clustering.assignments(features["user_id"], labels, model)
    assert table.columns == ["user_id", "cluster", "cluster_name"]
    assert table["cluster_name"].to_list() == [model.names[int(k)] for k in labels]


def test_no_knee_reason_with_a_linear_inertia_curve(monkeypatch):
    class Flat:
        def __init__(self, n_clusters, **kw):
            self.k = n_clusters

        def fit(self, x):
            self.inertia_ = 100.0 - self.k  # a straight line: no knee
            self.labels_ = np.arange(len(x)) % self.k
            return self

    monkeypatch.setattr(clustering, "KMeans", Flat)
    sel = clustering.select_k(
        np.random.default_rng(0).normal(size=(50, 2)), k_min=2, k_max=6, n_init=1
    )
    assert sel.knee is None
    assert sel.reason.startswith("no knee in the inertia curve; using the best silhouette")
    best = int(sel.curve.sort("silhouette", descending=True)["k"][0])
    assert sel.k == best


@pytest.mark.parametrize("matrix_bytes", [clustering.SILHOUETTE_MATRIX_BYTES, 0])
def test_k_curve_silhouettes_equal_scikit_learns_on_the_sample(monkeypatch, matrix_bytes):
    """From the sample's distance matrix (computed once) or from the features in chunks."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    monkeypatch.setattr(clustering, "SILHOUETTE_MATRIX_BYTES", matrix_bytes)
    rng = np.random.default_rng(3)
    x = np.vstack([rng.normal(c, 0.5, size=(200, 3)) for c in (0, 4, 8)])
    sel = clustering.select_k(x, k_min=2, k_max=5, n_init=2, random_state=7, silhouette_sample=250)
    sample = np.random.default_rng(7).choice(len(x), 250, replace=False)
    for k, sil in zip(sel.curve["k"], sel.curve["silhouette"], strict=True):
        labels = KMeans(n_clusters=k, n_init=2, random_state=7).fit(x).labels_
        assert sil == pytest.approx(silhouette_score(x[sample], labels[sample]), abs=1e-12)


def test_bad_expression_names_the_params_key():
    df = pl.DataFrame({"user_id": [1], "year_birth": [1980]})
    spec = clustering.FeatureSpec(numeric=["age"], derived={"age": "2021 - yearbirth"})
    with pytest.raises(
        sqlexpr.ExpressionError, match=r"segmentation\.derived_columns\.age: .*unknown column"
    ):
        clustering.prepare_features(df, spec)
    spec = clustering.FeatureSpec(numeric=["year_birth"], filters=["year_birth <> "])
    with pytest.raises(
        sqlexpr.ExpressionError, match=r"segmentation\.row_filters\[0\]: cannot parse"
    ):
        clustering.prepare_features(df, spec)
    with pytest.raises(
        clustering.FeatureError,
        match=r"segmentation\.numeric_features: column\(s\) \['income'\]",
    ):
        clustering.prepare_features(df, clustering.FeatureSpec(numeric=["income"]))
    with pytest.raises(
        clustering.FeatureError, match=r"segmentation\.categorical_features: .*\['edu'\]"
    ):
        clustering.prepare_features(
            df, clustering.FeatureSpec(numeric=["year_birth"], categorical=["edu"])
        )


def test_a_filter_on_a_missing_value_leaves_the_row_to_the_missing_value_rule():
    # 6 customers: one above the income cap (a filter removal), two without an income
    df = pl.DataFrame(
        {
            "user_id": [1, 2, 3, 4, 5, 6],
            "income": [30_000, 700_000, None, 45_000, None, 52_000],
        }
    )
    spec = clustering.FeatureSpec(numeric=["income"], filters=["income < 600000"], missing="drop")
    kept, counts = clustering.prepare_features(df, spec)
    assert kept["user_id"].to_list() == [1, 4, 6]
    assert counts == {
        "rows_in": 6,
        "removed_by_filters": 1,
        "removed_missing": 2,
        "rows_out": 3,
    }
    imputed, counts = clustering.prepare_features(
        df, clustering.FeatureSpec(numeric=["income"], filters=["income < 600000"])
    )
    assert imputed.height == 5 and counts["removed_missing"] == 0


def test_marketing_campaign_profile_clusters_an_external_tsv():
    p = load_params(PARAMS_DIR / "marketing_campaign.yaml").segmentation
    table = sources.read_table_file(p.attributes_path, separator=p.attributes_separator)
    spec = clustering.FeatureSpec(
        numeric=p.numeric_features,
        categorical=p.categorical_features,
        derived=p.derived_columns,
        value_maps=p.value_maps,
        filters=p.row_filters,
        missing=p.missing,
        id_column=p.id_column,
    )
    features, removed = clustering.prepare_features(table, spec)
    assert removed["rows_in"] == 400 and removed["rows_out"] < 400
    assert set(table.pipe(sqlexpr.polars_columns, p.derived_columns, where="x").columns) >= {
        "age",
        "spent",
        "children",
    }
    x = clustering.curve_matrix(features.drop("ID"), spec, sample=400)
    sel = clustering.select_k(x, k_min=2, k_max=8, n_init=3, random_state=0)
    model, labels = clustering.fit(
        features.drop("ID"), spec, k=sel.k, value_column="spent", n_init=3
    )
    truth = (
        pl.read_csv(FIXTURES / "marketing_campaign_truth.csv")
        .join(features.select("ID"), on="ID", how="semi")
        .sort("ID")
    )
    assert sel.k == 4
    assert adjusted_rand_score(truth["segment"], labels) > 0.85


def test_load_customers_by_cluster_source(tmp_path):
    rfm_table = pl.DataFrame(
        {"user_id": [1, 2], "recency_days": [3, 40], "frequency": [2, 1], "monetary": [9.0, 4.0]}
    )
    dim_users = pl.DataFrame(
        {"user_id": [2, 1, 3], "views": [5, 7, 1], "carts": [0, 2, 0], "sessions": [1, 3, 1],
         "events": [6, 11, 1], "first_seen": [None, None, None]}
    )  # fmt: skip
    got = clustering.load_customers("warehouse", rfm_table=rfm_table, dim_users=dim_users, run=None)
    assert got.sort("user_id").rows() == [(1, 3, 2, 9.0, 7, 2, 3, 11), (2, 40, 1, 4.0, 5, 0, 1, 6)]
    assert got.columns == list(C.BEHAVIOURAL_FEATURE_COLUMNS)
    lazy = ibis.memtable(dim_users.to_arrow())  # an engine table is collected
    assert (
        clustering.load_customers("warehouse", rfm_table=rfm_table, dim_users=lazy, run=None)
        .sort("user_id")
        .equals(got.sort("user_id"))
    )

    class Run:
        def read_table(self, name):
            return pl.DataFrame({"table": [name]})

    sample = clustering.load_customers(
        "sample_customers", rfm_table=rfm_table, dim_users=None, run=Run()
    )
    assert sample["table"].to_list() == ["sample_customers"]
    path = tmp_path / "attrs.tsv"
    path.write_text("id\tage\n7\t31\n")
    attrs = clustering.load_customers(
        "attributes", rfm_table=rfm_table, dim_users=None, run=None,
        attributes_path=str(path), attributes_separator="\t",
    )  # fmt: skip
    assert attrs.rows() == [(7, 31)]
    with pytest.raises(ValueError, match="segmentation.cluster_source: .* got 'crm'"):
        clustering.load_customers("crm", rfm_table=rfm_table, dim_users=None, run=None)
