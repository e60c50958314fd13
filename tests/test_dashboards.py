"""Dashboards without a browser: the no-run message, the precomputed tables against the
warehouse, the one definition of each number, filters, formats, salts, the server command."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import duckdb
import nbformat
import numpy as np
import polars as pl
import pytest
from nbclient import NotebookClient

from customer_intel import clustering, dashboards, runs
from customer_intel.contracts import Manifest
from customer_intel.dashboards import build, present
from customer_intel.dashboards.data import ALL, Filters, Period, RunData, kpis, secret_salt
from customer_intel.dashboards.pages import (
    Customers,
    Executive,
    Experiments,
    Growth,
    Quality,
    Reports,
)
from customer_intel.dashboards.pages.customers import standardized
from customer_intel.dashboards.pages.executive import conversion_note
from customer_intel.dashboards.pages.quality import day_gaps
from customer_intel.dashboards.widgets import best_depth, parse_number
from customer_intel.paths import DASHBOARDS_DIR, OUTPUTS_DIR, PROJECT_ROOT

PAGES = (Executive, Customers, Growth, Experiments, Quality, Reports)


def test_no_run_says_so_and_every_other_cell_is_silent(tmp_path):
    for cls in PAGES:
        page = cls(root=tmp_path, query="")
        assert not page.ok
        text = str(page.header())
        assert 'id="no-run"' in text and "make run" in text
        assert text.count("<h1") == 1
        for method in dir(cls):
            if method.startswith("_") or method in {"header", "missing", "experiments"}:
                continue
            attr = getattr(page, method)
            if callable(attr):
                assert attr() is None, f"{cls.__name__}.{method}"


@pytest.mark.notebooks
@pytest.mark.parametrize("name", dashboards.DASHBOARDS)
def test_dashboard_notebooks_run_cleanly_without_a_run(tmp_path, name, monkeypatch):
    monkeypatch.setenv(dashboards.ENV_OUTPUT_ROOT, str(tmp_path))
    monkeypatch.setenv("CUSTOMER_INTEL_PLOTLY_RENDERER", "none")
    nb = nbformat.read(DASHBOARDS_DIR / f"{name}.ipynb", as_version=4)
    NotebookClient(
        nb, kernel_name="python3", resources={"metadata": {"path": str(DASHBOARDS_DIR)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("no-run" in str(o.get("data", {})) for o in outputs)


# -- the dashboard_data stage ------------------------------------------------------------------
EVENTS = pl.DataFrame(
    {
        "event_time": [
            dt.datetime(2019, 11, 1, 10, 0, tzinfo=dt.UTC),
            dt.datetime(2019, 11, 1, 10, 5, tzinfo=dt.UTC),
            dt.datetime(2019, 11, 1, 10, 9, tzinfo=dt.UTC),
            dt.datetime(2019, 11, 1, 23, 50, tzinfo=dt.UTC),
            dt.datetime(2019, 11, 2, 0, 10, tzinfo=dt.UTC),  # same session, next day
            dt.datetime(2019, 11, 2, 9, 0, tzinfo=dt.UTC),
            dt.datetime(2019, 11, 2, 9, 1, tzinfo=dt.UTC),
        ],
        "event_type": ["view", "cart", "purchase", "view", "purchase", "view", "purchase"],
        "user_id": [1, 1, 1, 2, 2, 3, 3],
        "user_session": ["a", "a", "a", "b", "b", "c", "c"],
        "product_id": [10, 10, 10, 11, 12, 14, 13],
        "category_code": ["electronics.phone"] * 3
        + ["apparel.shoes", None, "electronics.tv", "electronics.tv"],
        "price": [100.0, 100.0, 100.0, 20.0, 5.0, 100.0, 300.0],
        "category_id": [1, 1, 1, 2, None, 3, 3],
        "brand": ["acme", "acme", "acme", None, None, "tvco", "tvco"],
    }
).with_columns(event_date=pl.col("event_time").dt.date())
SEGMENTS = pl.DataFrame({"user_id": [1, 3], "segment": ["Champions", "New"]})


#: users 1 and 2 in one experiment, users 2 and 3 in another (a customer may be in both)
UNITS = pl.DataFrame(
    {
        "user_id": [1, 2, 2, 3, 9],
        "experiment_name": ["gate", "gate", "banner", "banner", "banner"],
        "experiment_group": ["control", "treatment", "control", "treatment", "control"],
    }
)


def _connect(
    events: pl.DataFrame, units: pl.DataFrame | None = None, segments: pl.DataFrame = SEGMENTS
) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse over ``events`` (the star schema built as the stage builds it)."""
    import ibis

    from customer_intel import warehouse

    c = duckdb.connect()
    c.execute("SET TimeZone = 'UTC'")
    c.register("all_events_df", events.to_arrow())
    c.execute("CREATE VIEW all_events AS SELECT * FROM all_events_df")
    c.execute("CREATE VIEW events AS SELECT * FROM all_events WHERE user_id IS NOT NULL")
    ib = ibis.duckdb.from_connection(c)
    for name, expr in warehouse.star_schema(ib.table("events")).items():
        c.execute(f"CREATE TABLE {name} AS {ib.compile(expr)}")
    build.prepare(c, segments, build.experiment_units(units))
    return c


@pytest.fixture
def con():
    c = _connect(EVENTS, UNITS)
    yield c
    c.close()


def test_daily_equals_distinct_counts_computed_with_polars():
    """Every grain of dash_daily against a plain Polars reference (n_unique per group) on
    random events: users and sessions that span several categories and days."""
    rng = np.random.default_rng(3)
    n = 4000
    users = rng.integers(1, 120, n)
    t0 = dt.datetime(2019, 11, 1, tzinfo=dt.UTC)
    events = pl.DataFrame(
        {
            "event_time": [t0 + dt.timedelta(minutes=int(m)) for m in rng.integers(0, 6 * 1440, n)],
            "event_type": rng.choice(["view", "view", "cart", "purchase"], n),
            "user_id": users,
            "user_session": [
                f"s{u}_{k}" for u, k in zip(users, rng.integers(0, 4, n), strict=True)
            ],
            "product_id": rng.integers(1, 40, n),
            "category_code": rng.choice(["a.x", "b.y", "c.z", None], n),
            "price": rng.uniform(1, 100, n).round(2),
            "category_id": rng.integers(1, 4, n),
            "brand": rng.choice(["p", "q"], n),
        }
    ).with_columns(event_date=pl.col("event_time").dt.date())
    segments = pl.DataFrame(
        {"user_id": list(range(1, 80)), "segment": ["S1", "S2", "S3"] * 26 + ["S1"]}
    )
    c = _connect(events, None, segments)
    try:
        mine = build.daily(c)
        ev = c.execute("SELECT * FROM ev").pl()
        starts = c.execute("SELECT user_session, session_start::DATE AS sd FROM fact_sessions").pl()
    finally:
        c.close()
    ev_s = ev.join(starts, on="user_session")
    buy = pl.col("event_type") == "purchase"
    for grain in (["segment", "category"], ["segment"], ["category"], []):
        ref = ev.group_by(["d", *grain]).agg(
            visitors=pl.col("user_id").n_unique(),
            buyers=pl.col("user_id").filter(buy).n_unique(),
            purchases=buy.sum(),
            revenue=pl.col("price").filter(buy).sum(),
        )
        ref_s = ev_s.group_by([pl.col("sd").alias("d"), *grain]).agg(
            sessions=pl.col("user_session").n_unique(),
            orders=pl.col("user_session").filter(buy).n_unique(),
        )
        rest = {c: ALL for c in ("segment", "category") if c not in grain}
        got = mine.filter(**rest).rename({"event_date": "d"})
        for r, cols in (
            (ref, ["visitors", "buyers", "purchases", "revenue"]),
            (ref_s, ["sessions", "orders"]),
        ):
            joined = r.join(got, on=["d", *grain], how="left", suffix="_mine")
            for col in cols:
                assert (
                    joined[col].cast(pl.Float64).round(6).to_list()
                    == joined[f"{col}_mine"].cast(pl.Float64).round(6).to_list()
                ), (grain, col)


def test_experiment_units_name_each_enrolled_customer_once():
    x = build.experiment_units(UNITS)
    assert x.rows() == [("banner", 2), ("banner", 3), ("banner", 9), ("gate", 1), ("gate", 2)]
    unnamed = build.experiment_units(UNITS.drop("experiment_name"))
    assert set(unnamed["experiment"]) == {build.UNNAMED_EXPERIMENT} and unnamed.height == 4
    assert build.experiment_units(UNITS.rename({"user_id": "session"})).is_empty()
    assert build.experiment_units(None).is_empty()


def test_daily_experiments_equal_daily_of_the_enrolled_customers_alone(con):
    """One definition: an experiment's rows are dash_daily computed on its customers' events
    (the sessions too: fact_sessions is the whole shop's, joined by session)."""
    per = build.daily_experiments(con)
    assert set(per["experiment"]) == {"gate", "banner"}
    for name, users in (("gate", [1, 2]), ("banner", [2, 3])):
        alone = _connect(EVENTS.filter(pl.col("user_id").is_in(users)))
        ref = build.daily(alone).sort("event_date", "segment", "category")
        alone.close()
        mine = (
            per.filter(experiment=name).drop("experiment").sort("event_date", "segment", "category")
        )
        assert mine.to_dicts() == ref.to_dicts(), name
    # the whole shop's rows are untouched by enrolment (user 2 is in both experiments)
    assert build.daily(con).filter(segment=ALL, category=ALL)["revenue"].sum() == 405.0


def test_daily_all_rows_equal_the_warehouse_daily_kpis(con):
    """One definition: the (all, all) rows are fact_daily_kpis, row for row."""
    d = build.daily(con).filter(segment=ALL, category=ALL).sort("event_date")
    ref = con.execute("SELECT * FROM fact_daily_kpis ORDER BY event_date").pl()
    for mine, theirs in (
        ("revenue", "revenue"),
        ("orders", "orders"),
        ("sessions", "sessions"),
        ("buyers", "buyers"),
        ("visitors", "dau"),
        ("views", "views"),
        ("purchases", "purchases"),
    ):
        assert d[mine].cast(pl.Float64).to_list() == ref[theirs].cast(pl.Float64).to_list(), mine


def _daily_reference(ev: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """dash_daily by plain Polars distinct counts per grain (``ev``: the ``ev`` view's rows
    with ``sd``, the start day of the event's session, and any ``by`` columns)."""
    is_ = {t: pl.col("event_type") == t for t in ("view", "cart", "purchase")}
    parts = []
    for grain in (["segment", "category"], ["segment"], ["category"], []):
        rest = [pl.lit(ALL).alias(c) for c in ("segment", "category") if c not in grain]
        users = ev.group_by(["d", *by, *grain]).agg(
            visitors=pl.col("user_id").n_unique(),
            views=is_["view"].sum(),
            carts=is_["cart"].sum(),
            purchases=is_["purchase"].sum(),
            buyers=pl.col("user_id").filter(is_["purchase"]).n_unique(),
            revenue=pl.col("price").filter(is_["purchase"]).sum(),
        )
        s = pl.col("user_session")
        sessions = ev.group_by([pl.col("sd").alias("d"), *by, *grain]).agg(
            sessions=s.n_unique(),
            sessions_with_view=s.filter(is_["view"]).n_unique(),
            sessions_with_cart=s.filter(is_["cart"]).n_unique(),
            orders=s.filter(is_["purchase"]).n_unique(),
        )
        both = users.join(sessions, on=["d", *by, *grain], how="full", coalesce=True)
        parts.append(both.with_columns(rest))
    cols = ["visitors", "views", "carts", "purchases", "buyers", "revenue"]
    cols += ["sessions", "sessions_with_view", "sessions_with_cart", "orders"]
    return (
        pl.concat(parts, how="diagonal")
        .select(
            pl.col("d").alias("event_date"),
            *by,
            "segment",
            "category",
            *[
                pl.col(c).fill_null(0).cast(pl.Float64 if c == "revenue" else pl.Int64)
                for c in cols
            ],
        )
        .sort("event_date", *by, "segment", "category")
    )


def test_daily_equals_polars_with_shared_sessions_and_experiments():
    """Every column of every grain, for the whole shop and per experiment, against Polars
    distinct counts, on events where a session has users of two segments (a source's own
    session ids), a user touches several categories a day, sessions cross midnight, and a
    customer is in two experiments."""
    rng = np.random.default_rng(7)
    n = 3000
    users = rng.integers(1, 60, n)
    t0 = dt.datetime(2019, 11, 1, 20, tzinfo=dt.UTC)
    # sessions mostly per user; every tenth event goes to a session shared across users
    own = [f"s{u}_{k}" for u, k in zip(users, rng.integers(0, 3, n), strict=True)]
    shared = [f"shared{k}" for k in rng.integers(0, 6, n)]
    events = pl.DataFrame(
        {
            "event_time": [t0 + dt.timedelta(minutes=int(m)) for m in rng.integers(0, 3 * 1440, n)],
            "event_type": rng.choice(["view", "view", "cart", "purchase", "remove_from_cart"], n),
            "user_id": users,
            "user_session": [
                b if r < 0.1 else a for a, b, r in zip(own, shared, rng.random(n), strict=True)
            ],
            "product_id": rng.integers(1, 40, n),
            "category_code": rng.choice(["a.x", "b.y", "b", "c.z", "", None], n),
            # quarters: sums are exact in any order, so revenue compares with ==
            "price": rng.integers(4, 4_000, n) / 4,
            "category_id": rng.integers(1, 4, n),
            "brand": rng.choice(["p", "q"], n),
        }
    ).with_columns(event_date=pl.col("event_time").dt.date())
    segments = pl.DataFrame({"user_id": list(range(1, 40)), "segment": ["S1", "S2", "S3"] * 13})
    units = pl.DataFrame(
        {
            "user_id": [*range(1, 30), *range(20, 50)],
            "experiment_name": ["e1"] * 29 + ["e2"] * 30,
        }
    )
    c = _connect(events, units, segments)
    try:
        mine = build.daily(c)
        mine_x = build.daily_experiments(c)
        assert c.execute("SELECT count(*) FROM _dash_sessions WHERE multi IS NOT NULL").fetchone()[
            0
        ]
        ev = c.execute("SELECT * FROM ev").pl()
        starts = c.execute("SELECT user_session, session_start::DATE AS sd FROM fact_sessions").pl()
    finally:
        c.close()
    ev = ev.join(starts, on="user_session")
    assert mine.equals(_daily_reference(ev, []))
    enrolled = build.experiment_units(units).rename({"user_id": "uid"})
    ev_x = ev.join(enrolled, left_on="user_id", right_on="uid")
    assert mine_x.equals(_daily_reference(ev_x, ["experiment"]))


def test_a_customer_with_two_segments_is_refused():
    c = duckdb.connect()
    c.register("events_df", EVENTS.to_arrow())
    c.execute("CREATE VIEW events AS SELECT * FROM events_df")
    two = pl.DataFrame({"user_id": [1, 1], "segment": ["A", "B"]})
    with pytest.raises(ValueError, match="user_id 1 has 2 rows"):
        build.prepare(c, two)
    c.close()


def test_daily_by_segment_and_category_by_hand(con):
    d = build.daily(con)
    # 1 Nov: user 1 (Champions) bought a phone (100); user 2 (no purchase scored) viewed shoes
    champions = d.filter(
        event_date=dt.date(2019, 11, 1), segment="Champions", category="electronics"
    ).row(0, named=True)
    assert (champions["revenue"], champions["orders"], champions["sessions"]) == (100.0, 1, 1)
    # session b starts on 1 Nov and buys on 2 Nov: the order counts on its start day (as the
    # warehouse does), the revenue on the purchase's day
    nopurchase = d.filter(segment=build.NO_PURCHASE, category=ALL)
    assert nopurchase.filter(event_date=dt.date(2019, 11, 1))["orders"].to_list() == [1]
    assert nopurchase.filter(event_date=dt.date(2019, 11, 2))["revenue"].to_list() == [5.0]
    assert build.NO_CATEGORY in d["category"].to_list()


def test_buyer_days_products_and_quality_tables(con):
    b = build.buyer_days(con)
    assert b.height == 3 and b["revenue"].sum() == pytest.approx(405.0)
    labels = build.products(con)
    phone = labels.filter(product_id="10")["label"][0]
    assert "electronics › phone" in phone and "(#10)" in phone
    missing = dict(zip(*build.quality_missing(con).select("column", "missing"), strict=True))
    assert missing["category_code"] == 1 and missing["price"] == 0
    q = build.quality_events(con)
    assert q["events"].sum() == EVENTS.height
    prices = build.quality_prices(con, bins=5)
    assert prices["events"].sum() == EVENTS.height
    rejects = build.quality_rejects(pl.LazyFrame({"reason": ["bad price", "bad price", "no user"]}))
    assert rejects.rows() == [("bad price", 2), ("no user", 1)]


def test_price_histogram_percentile_is_quantile_cont_over_all_prices():
    """The 99th percentile read from counts per distinct price is DuckDB's quantile_cont over
    every price, to the bit (float32 prices with many repeats, odd and even counts)."""
    c = duckdb.connect()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 2000))
        step = [0.01, 0.37, 1.0, 3.3][seed % 4]
        prices = (rng.integers(0, 400, n) * step).astype("float32")
        prices[rng.random(n) < 0.05] = np.nan  # missing prices, stored as NULL below
        c.execute(
            "CREATE OR REPLACE TABLE all_events AS SELECT nullif(p, 'nan'::FLOAT) AS price "
            "FROM (SELECT unnest(?)::FLOAT AS p)",
            [prices.tolist()],
        )
        # the reference: quantile_cont over all prices, then each price's bin
        top = c.execute("SELECT quantile_cont(price, 0.99) FROM all_events").fetchone()[0]
        width = max(float(top), 1e-9) / 7
        ref = c.execute(f"""
            SELECT least(floor(greatest(price, 0) / {width}), 7)::INT AS b, count(*) AS events,
                   max(price)::DOUBLE AS hi
            FROM all_events WHERE price IS NOT NULL GROUP BY 1 ORDER BY 1""").pl()
        got = build.quality_prices(c, bins=7)
        assert got["events"].to_list() == ref["events"].to_list()
        assert got["price_from"].to_list() == (ref["b"] * width).to_list()
        assert got["price_to"][-1] == (
            ref["hi"][-1] if ref["b"][-1] == 7 else (ref["b"][-1] + 1) * width
        )
    c.close()


def test_kpis_one_definition():
    daily = pl.DataFrame(
        {
            "event_date": [dt.date(2019, 11, d) for d in (1, 2, 3)],
            "revenue": [100.0, 50.0, 30.0],
            "orders": [2, 1, 1],
            "sessions": [10, 10, 5],
        }
    )
    buyers = pl.DataFrame(
        {"event_date": [dt.date(2019, 11, d) for d in (1, 2, 2, 3)], "user_id": [1, 1, 2, 3]}
    )
    k = kpis(daily, buyers, Period(dt.date(2019, 11, 1), dt.date(2019, 11, 2)))
    assert k == {
        "revenue": 150.0,
        "orders": 3.0,
        "sessions": 20.0,
        "customers": 2.0,  # user 1 on two days counts once
        "conversion": 3 / 20,
        "aov": 50.0,
    }
    assert Period(dt.date(2019, 11, 11), dt.date(2019, 11, 20)).before() == Period(
        dt.date(2019, 11, 1), dt.date(2019, 11, 10)
    )


def test_conversion_change_from_a_traffic_drop_says_so():
    prev = {"conversion": 0.02, "sessions": 1000.0, "orders": 20.0}
    cur = {"conversion": 0.06, "sessions": 300.0, "orders": 18.0}  # +200% from -70% sessions
    note = conversion_note(cur, prev)
    assert note and "traffic" in note and "−70.0%" in note
    better = {"conversion": 0.03, "sessions": 1000.0, "orders": 30.0}  # real improvement
    assert conversion_note(better, prev) is None


def test_filters_round_trip_and_refuse_nonsense():
    f = Filters.from_query("from=2019-11-01&to=2019-11-30&segment=Champions&category=electronics")
    assert (f.start, f.end, f.segment, f.category) == (
        dt.date(2019, 11, 1),
        dt.date(2019, 11, 30),
        "Champions",
        "electronics",
    )
    assert Filters.from_query(f.query()) == f
    bad = Filters.from_query("from=yesterday&to=2019-11-01&segment=")
    assert bad.start is None and bad.segment == ALL and "not a date" in bad.problems[0]
    swapped = Filters.from_query("from=2019-11-30&to=2019-11-01")
    assert swapped.start < swapped.end and swapped.problems
    x = Filters.from_query("experiment=gate&segment=Champions")
    assert x.experiment == "gate" and Filters.from_query(x.query()) == x
    assert "experiment=gate" in x.query() and "experiment" not in Filters().query()


def test_experiment_filter_narrows_every_number_to_the_enrolled_customers(tmp_path, con):
    daily, per = build.daily(con), build.daily_experiments(con)
    buyers, units = build.buyer_days(con), build.experiment_units(UNITS)
    _run(
        tmp_path,
        {"dashboards": {"period_days": 2}},
        {
            "dash_daily": daily,
            "dash_daily_experiments": per,
            "dash_buyer_days": buyers,
            "dash_experiment_units": units,
        },
    )
    data = RunData(tmp_path)
    assert data.experiments() == ["banner", "gate"]  # most customers first (3 vs 2)
    f = data.clean(Filters.from_query("experiment=gate"))
    assert f.experiment == "gate" and not f.problems
    period = data.period(f)
    got = kpis(data.daily(f), data.buyer_days(f), period)
    # by hand: users 1 and 2 bought 100 (1 Nov) and 5 (2 Nov) in sessions a and b (both 1 Nov)
    assert (got["revenue"], got["orders"], got["sessions"], got["customers"]) == (105, 2, 2, 2)
    page = Executive(tmp_path, query="experiment=gate")
    cards = str(page.kpi_cards())
    assert 'data-value="105.0"' in cards and "customers in the experiment gate" in cards
    assert "filter-experiment" in str(page.header())
    unknown = data.clean(Filters.from_query("experiment=nope"))
    assert unknown.experiment is None and "no experiment 'nope'" in unknown.problems[0]


def test_formats_for_people():
    assert present.money(123631.0, compact=True) == "$123.6K"
    assert present.money(1234.5) == "$1,234.50"
    assert present.number(123631) == "123.6K" and present.number(950) == "950"
    assert present.pct(0.2018) == "20.2%"
    assert present.signed_pct(-0.7) == "−70.0%"
    assert present.p_value(2.03e-11) == "< 0.001" and present.p_value(0.0234) == "0.023"
    assert present.probability(1.0) == "> 99.9%" and present.probability(0.0) == "< 0.1%"
    assert present.period(Period(dt.date(2019, 11, 1), dt.date(2019, 11, 30))) == (
        "1 Nov – 30 Nov 2019"
    )


def test_charts_are_html_with_an_offline_config():
    import plotly.graph_objects as go

    out = str(present.figure(go.Figure(go.Bar(x=[1], y=[2])), title="t", element_id="c1"))
    assert "Plotly.newPlot" in out and "https://" not in out
    assert '"showSendToCloud": false' in out and '"displaylogo": false' in out


def test_score_and_power_inputs_are_refused_in_words():
    assert parse_number("-5000", "Money spent") == (
        None,
        "Money spent cannot be below 0 (you entered -5000).",
    )
    assert parse_number("", "Visits")[1] == "Visits: please enter a number."
    assert parse_number("abc", "Visits")[1] == "Visits: 'abc' is not a number."
    assert parse_number("1,200", "Visits") == (1200.0, None)


def test_campaign_depth_recomputed():
    profit = pl.DataFrame({"depth": [0, 1, 2, 3], "expected_conversions": [0.0, 0.5, 0.8, 0.9]})
    curve = best_depth(profit, cost=1.0, margin=10.0)
    assert curve["profit"].to_list() == pytest.approx([0.0, 4.0, 6.0, 6.0])
    assert int(curve["depth"][int(curve["profit"].arg_max())]) == 2


def test_dashboard_z_scores_equal_the_clustering_module():
    prof = pl.DataFrame(
        {"cluster_name": ["a", "b", "c"], "x": [1.0, 2.0, 6.0], "y": [3.0, 3.0, 3.0]}
    )
    assert standardized(prof, ["x", "y"]).equals(clustering.standardized_profiles(prof, ["x", "y"]))


def test_days_missing_or_near_empty():
    ev = pl.DataFrame(
        {
            "event_date": [dt.date(2019, 11, 1), dt.date(2019, 11, 2), dt.date(2019, 11, 4)],
            "events": [100, 5, 120],
        }
    )
    missing, thin = day_gaps(ev, dt.date(2019, 11, 1), dt.date(2019, 11, 4))
    assert missing == [dt.date(2019, 11, 3)] and thin == [dt.date(2019, 11, 2)]


def test_pseudonyms_are_stable_salted_and_not_the_id():
    ids = pl.Series("user_id", ["512000001", "512000002"])
    a = dashboards.pseudonymize(ids, "s1")
    assert a.to_list() == dashboards.pseudonymize(ids, "s1").to_list()
    assert a.to_list() != dashboards.pseudonymize(ids, "s2").to_list()
    assert all(x.startswith("C-") and "512000" not in x for x in a)


def test_secret_salt_is_made_once_per_deployment_unless_params_set_one(tmp_path):
    first = secret_salt(tmp_path)
    assert len(first) == 64 and secret_salt(tmp_path) == first
    path = tmp_path / ".secrets" / "pseudonym_salt"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert secret_salt(tmp_path / "other") != first
    assert secret_salt(tmp_path, "a-configured-salt-123") == "a-configured-salt-123"
    assert ".secrets/" in (OUTPUTS_DIR.parent / ".gitignore").read_text()


def test_a_failed_run_is_not_shown(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text('{"status": "failed"}')
    (tmp_path / "latest").symlink_to(run)
    assert dashboards.latest_run(tmp_path) is None
    assert RunData(tmp_path).run is None


def test_urls_and_command_bind_loopback_cull_and_keep_xsrf():
    urls = dashboards.urls("127.0.0.1", 8866)
    assert set(urls) == set(dashboards.DASHBOARDS)
    assert urls["growth"] == "http://127.0.0.1:8866/voila/render/growth.ipynb"
    cmd = dashboards.voila_command(host="127.0.0.1", port=8866)
    assert "--Voila.ip=127.0.0.1" in cmd and "--strip_sources=True" in cmd
    assert "--preheat_kernel=True" in cmd and "--template=customer_intel" in cmd
    assert f"--pool_size={dashboards.serve.POOL_SIZE}" in cmd
    assert "--KernelManager.transport=ipc" in cmd  # no TCP port a kernel can lose at start
    assert any(c.startswith("--MappingKernelManager.cull_idle_timeout=") for c in cmd)
    assert "--ServerApp.disable_check_xsrf=False" in cmd
    deny = next(c for c in cmd if c.startswith("--VoilaConfiguration.extension_denylist="))
    assert "'jupyterlab-plotly'" in deny  # a second plotly.js per visit


def test_a_kernel_stops_when_its_last_connection_closes_unless_one_comes_back(monkeypatch):
    import asyncio

    from customer_intel.dashboards import serve

    monkeypatch.setattr(serve, "CLOSE_GRACE", 0.05)
    stopped: list[str] = []

    class Recording(serve._closing_kernel_manager()):
        async def shutdown_kernel(self, kernel_id, *args, **kwargs):
            stopped.append(kernel_id)
            self._kernels.pop(kernel_id)
            self._kernel_connections.pop(kernel_id)

    async def scenario() -> None:
        km = Recording()
        for k in ("closed", "reconnected", "never-connected"):
            km._kernels[k] = object()
            km._kernel_connections[k] = 0
        for k in ("closed", "reconnected"):
            km.notify_connect(k)
            km.notify_connect(k)  # two connections (e.g. a widget channel)
            km.notify_disconnect(k)
        km.notify_disconnect("closed")  # the tab closed: the last connection is gone
        km.notify_disconnect("reconnected")
        km.notify_connect("reconnected")  # a websocket that came back within the grace
        await asyncio.sleep(0.3)

    asyncio.run(scenario())
    assert stopped == ["closed"]


def test_template_has_no_cdn_and_loads_local_plotly(tmp_path):
    from customer_intel.dashboards import serve

    root = serve.template_root(tmp_path)
    template = root / "voila" / "templates" / "customer_intel"
    index = (template / "index.html.j2").read_text()
    assert "cdn." not in index and "fontawesome" not in index.lower()
    assert f'static/{present.PLOTLY_JS.name}"></script>' in index
    assert (template / "static" / present.PLOTLY_JS.name).read_bytes() == (
        present.PLOTLY_JS.read_bytes()
    )


def test_pages_plotly_js_is_the_plotly_packages_version_with_the_declared_traces():
    """The built bundle draws what the installed plotly writes (same version), and exactly the
    trace types :data:`present.PLOTLY_TRACES` says, which are the ones its recipe registers."""
    import plotly

    full = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    with full.open() as f:
        version = re.search(r"plotly\.js[^\n]*? v(\d+\.\d+\.\d+)", f.read(300)).group(1)
    js = present.PLOTLY_JS.read_text()
    assert f'version="{version}"' in js
    assert set(re.findall(r'moduleType:"trace",name:"(\w+)"', js)) == present.PLOTLY_TRACES
    recipe = PROJECT_ROOT / "js" / "plotly-bundle"
    entry = (recipe / "entry.js").read_text()
    registered = set(re.findall(r"require\('plotly\.js/lib/(\w+)'\)", entry)) - {"core"}
    assert registered | {"scatter"} == present.PLOTLY_TRACES  # core registers scatter
    pinned = json.loads((recipe / "package.json").read_text())["dependencies"]["plotly.js"]
    assert pinned == version


def test_figure_refuses_a_trace_the_pages_cannot_draw():
    import plotly.graph_objects as go

    with pytest.raises(
        ValueError, match=r"'Map'.*scattergeo.*plotly-customer-intel.*make plotly-js"
    ):
        present.figure(go.Figure(go.Scattergeo(lon=[1], lat=[2])), title="Map")
    assert "Plotly.newPlot" in present.figure(go.Figure(go.Bar(x=[1])), title="ok").data
    funnel = go.Figure(go.Funnel(x=[3, 2], y=["a", "b"]))
    assert "funnel" in present.figure(funnel, title="Steps").data


def test_dashboards_read_the_latest_good_run_of_the_env_output_root(monkeypatch, tmp_path):
    good = tmp_path / "runs" / "good"
    good.mkdir(parents=True)
    manifest = Manifest(
        run_id="good",
        status="success",
        started_at="2026-11-27T00:00:00+00:00",
        params_file="params/default.yaml",
        params_hash="0",
        params={},
    )
    runs.write_model(manifest, good / "manifest.json")
    (tmp_path / "latest").symlink_to(good)
    monkeypatch.setenv(dashboards.ENV_OUTPUT_ROOT, str(tmp_path))
    assert dashboards.latest_run() == good.resolve()
    runs.write_model(manifest.model_copy(update={"status": "failed"}), good / "manifest.json")
    assert dashboards.latest_run() is None
    (good / "manifest.json").write_text('{"status": "success"}')  # not a manifest: not shown
    assert dashboards.latest_run() is None
    monkeypatch.delenv(dashboards.ENV_OUTPUT_ROOT)
    assert dashboards.output_root() == OUTPUTS_DIR


def _run(tmp_path, params: dict, tables: dict[str, pl.DataFrame] | None = None):
    """A run folder with a valid manifest (status success, ``params``) and ``tables``."""
    run = tmp_path / "runs" / "r1"
    (run / "tables").mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        run_id="r1",
        status="success",
        started_at="2026-11-27T00:00:00+00:00",
        params_file="params/default.yaml",
        params_hash="0",
        params=params,
    )
    runs.write_model(manifest, run / "manifest.json")
    if not (tmp_path / "latest").exists():
        (tmp_path / "latest").symlink_to(run)
    for name, frame in (tables or {}).items():
        frame.write_parquet(run / "tables" / f"{name}.parquet")
    return run


def _spec(html: str, element_id: str) -> dict:
    import json
    import re

    m = re.search(rf'id="{element_id}-spec">(.*?)</script>', html, re.S)
    return json.loads(m.group(1).replace("<\\/", "</"))


def _array(v):
    """A plotly JSON array (a list, or a typed array ``{dtype, bdata, shape}``) as numpy."""
    import base64

    import numpy as np

    if not isinstance(v, dict):
        return np.asarray(v)
    a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
    shape = v.get("shape")
    return a.reshape([int(n) for n in str(shape).split(",")]) if shape else a


def test_clv_cards_read_the_run_and_pseudonymise_customers_at_risk(tmp_path):
    run = _run(tmp_path, {"dashboards": {"pseudonym_salt": "s1-sixteen-chars"}})
    assert "not in this run" in str(Customers(root=tmp_path, query="").customers_at_risk())
    risk = pl.DataFrame(
        {
            "user_id": [512000001, 512000002],
            "value_so_far": [900.0, 500.0],
            "p_alive": [0.2, 0.4],
            "clv": [10.0, 30.0],
        }
    )
    risk.write_parquet(run / "tables" / "clv_at_risk.parquet")
    text = str(Customers(root=tmp_path, query="").customers_at_risk())
    pseudonyms = dashboards.pseudonymize(
        risk["user_id"].cast(pl.String), "s1-sixteen-chars"
    ).to_list()
    assert all(p in text for p in pseudonyms) and "512000001" not in text
    assert ">$900.00<" in text and ">20.0%<" in text
    import base64

    csv = base64.b64decode(text.split("base64,")[1].split('"')[0]).decode()
    assert "512000001" not in csv and pseudonyms[0] in csv  # the download is pseudonymised too
    risk.head(0).write_parquet(run / "tables" / "clv_at_risk.parquet")
    assert "No customer is at risk" in str(Customers(root=tmp_path, query="").customers_at_risk())
    pl.DataFrame({"clv": [1.0, 2.0, None], "clv_decile": [1, 10, None]}).write_parquet(
        run / "tables" / "clv_predictions.parquet"
    )
    page = Customers(root=tmp_path, query="")
    clv_html = str(page.clv_distribution())
    bars = _spec(clv_html, "chart-clv")["data"][0]
    x, y = _array(bars["x"]), _array(bars["y"])
    assert y.sum() == 2 and x.min() > 1.0 and x.max() < 2.0  # both customers, binned
    csv = base64.b64decode(clv_html.split("base64,")[1].split('"')[0]).decode()
    assert csv.splitlines()[0] == "clv_from,clv_to,customers"  # the bars, not each customer
    assert len(csv.splitlines()) == 1 + len(y)
    fr = pl.DataFrame(
        {
            "repeat_periods": [0.0, 0.0, 1.0, 1.0],
            "recency": [0.0, 5.0, 0.0, 5.0],
            "p_alive": [1.0, 1.0, 0.3, 0.9],
        }
    )
    fr.write_parquet(run / "tables" / "clv_fr_matrix.parquet")
    z = _array(_spec(str(page.p_alive_matrix()), "chart-p-alive")["data"][0]["z"])
    assert z.tolist() == [[1, 1], [0.3, 0.9]]


def test_experiments_page_shows_each_arm_its_decision_method_and_sequential_readout(tmp_path):
    results = pl.DataFrame(
        {
            "arm": ["gate_40", "gate_40", "gate_50"],
            "control_label": ["gate_30"] * 3,
            "metric": ["conversion", "revenue per user", "conversion"],
            "kind": ["binary", "continuous", "binary"],
            "control": [0.10, 2.5, 0.10],
            "treatment": [0.12, 2.4, 0.09],
            "rel_lift": [0.2, -0.04, -0.1],
            "ci_low": [0.01, -0.3, -0.03],
            "ci_high": [0.03, 0.1, 0.01],
            "p_value": [0.001, 0.4, 0.2],
            "p_adjusted": [0.003, 0.4, 0.4],
            "prob_b_better": [0.9995, 0.3, 0.1],
            "prob_method": ["Beta-Binomial", "bootstrap", "Beta-Binomial"],
            "seq_decision": ["can stop", "keep running", "keep running"],
            "verdict": ["significant", "not significant", "not significant"],
        }
    )
    decision = pl.DataFrame(
        {
            "arm": ["gate_40", "gate_50"],
            "decision": ["ship", "keep running"],
            "verdict": ["gate_40: ship: goal up", "gate_50: keep running: no goal has moved yet"],
        }
    )
    diag = pl.DataFrame({"check": ["SRM p-value"], "value": [0.5]})
    daily = pl.DataFrame(
        {
            "metric": ["conversion"] * 4,
            "arm": ["gate_40", "gate_40", "gate_50", "gate_50"],
            "day": [dt.date(2019, 11, 1), dt.date(2019, 11, 2)] * 2,
            "units": [100, 200, 100, 200],
            "abs_lift": [0.01, 0.02, -0.01, -0.01],
            "ci_low": [-0.05, -0.01, -0.06, -0.03],
            "ci_high": [0.07, 0.05, 0.04, 0.01],
            "seq_ci_low": [-0.09, -0.04, -0.1, -0.05],
            "seq_ci_high": [0.11, 0.08, 0.08, 0.03],
        }
    )
    _run(
        tmp_path,
        {"experiments": {"control_label": "gate_30", "treatment_label": "gate_40"}},
        {
            "experiment_results": results,
            "experiment_decision": decision,
            "experiment_diagnostics": diag,
        },
    )
    page = Experiments(root=tmp_path, query="")
    text = str(page.decision_table())
    assert 'id="srm-ok"' in text
    assert text.index('data-arm="gate_40" data-decision="ship"') < text.index("decision-table")
    assert "gate_50: keep running: no goal has moved yet" in text
    rows = text.split('class="metric-row"')[1:]
    assert [r.split('data-arm="')[1].split('"')[0] for r in rows] == [
        "gate_40",
        "gate_40",
        "gate_50",
    ]
    assert "&gt; 99.9% (Beta-Binomial)" in rows[0] and "can stop" in rows[0]
    assert "30.0% (bootstrap)" in rows[1] and "$2.40" in rows[1]
    assert page.arms == ("gate_30", "gate_40")
    assert "not in this run" in str(page.effect_over_time())
    daily.write_parquet(tmp_path / "runs" / "r1" / "tables" / "experiment_daily.parquet")
    chart = str(Experiments(root=tmp_path, query="").effect_over_time())
    assert 'id="chart-lift-over-time"' in chart and "conversion" in chart
    # the experiment filter: the readout says which experiment it is of
    units = pl.DataFrame({"experiment": ["gates"] * 3, "user_id": [1, 2, 3]})
    units.write_parquet(tmp_path / "runs" / "r1" / "tables" / "dash_experiment_units.parquet")
    shown = str(Experiments(root=tmp_path, query="experiment=gates").decision_table())
    assert 'data-experiment="gates" data-units="3"' in shown and "3 customers" in shown
    assert 'data-experiment="gates"' in str(Experiments(root=tmp_path, query="").decision_table())
    pooled = pl.concat([units, pl.DataFrame({"experiment": ["banner"], "user_id": [4]})])
    pooled.write_parquet(tmp_path / "runs" / "r1" / "tables" / "dash_experiment_units.parquet")
    text = str(Experiments(root=tmp_path, query="experiment=banner").decision_table())
    assert "pools 2 experiments" in text and 'data-experiment="banner" data-units="1"' in text


def test_forecast_anomalies_on_the_executive_page(tmp_path):
    run = _run(tmp_path, {"dashboards": {"currency": "EUR"}})
    assert "not in this run" in str(Executive(root=tmp_path, query="").forecast_anomalies())
    anomalies = pl.DataFrame(
        {
            "metric": ["revenue_forecast", "revenue_forecast"],
            "date": [dt.date(2019, 11, 20), dt.date(2019, 11, 3)],
            "actual": [50.0, 900.0],
            "lower": [100.0, -200.0],
            "upper": [300.0, 400.0],
        }
    )
    anomalies.head(0).write_parquet(run / "tables" / "forecast_anomalies.parquet")
    text = str(Executive(root=tmp_path, query="").forecast_anomalies())
    assert 'data-n="0"' in text and "no day fell outside" in text
    anomalies.write_parquet(run / "tables" / "forecast_anomalies.parquet")
    text = str(Executive(root=tmp_path, query="").forecast_anomalies())
    assert 'data-n="2"' in text and text.count('class="num actual"') == 2
    assert text.index("3 Nov 2019") < text.index("20 Nov 2019")  # by day
    row = text.split("20 Nov 2019")[1].split("</tr>")[0]
    assert "€50.00" in row and "€100.00 to €300.00" in row and "below" in row
    first = text.split("3 Nov 2019")[1].split("</tr>")[0]
    assert "above" in first and "€0.00 to €400.00" in first  # revenue is never below 0
    assert "Revenue forecast" in text and "revenue_forecast<" not in text


def test_reports_page_draws_each_declared_report_and_filters_dated_ones(tmp_path):
    reports = [
        {"name": "Daily revenue", "metric": "daily", "type": "line", "x": "Day", "y": "Revenue"},
        {"name": "By brand", "metric": "brands", "type": "bar", "x": "brand", "y": "Revenue"},
        {"name": "Not computed", "metric": "absent", "type": "bar", "x": "a", "y": "b"},
    ]
    days = [dt.date(2019, 11, d) for d in (1, 2, 3, 4)]
    daily_kpis = pl.DataFrame(
        {
            "event_date": days,
            "segment": [ALL] * 4,
            "category": [ALL] * 4,
            "revenue": [1.0, 2.0, 3.0, 4.0],
        }
    )
    _run(
        tmp_path,
        {"metrics": {"reports": reports}},
        {
            "metric_daily": pl.DataFrame({"Day": days, "Revenue": [10.0, 20.0, 30.0, 40.0]}),
            "metric_brands": pl.DataFrame({"brand": ["a", "b"], "Revenue": [5.0, 7.0]}),
            "dash_daily": daily_kpis,
        },
    )
    text = str(Reports(root=tmp_path, query="from=2019-11-02&to=2019-11-03").reports())
    import re

    titles = re.findall(r'<h3 class="ci-chart-title report"[^>]*>([^<]*)</h3>', text)
    assert titles == ["Daily revenue", "By brand", "Not computed"]
    y = _array(_spec(text, "report-0")["data"][0]["y"])
    assert y.tolist() == [20.0, 30.0]  # the chosen days only
    x = _array(_spec(text, "report-1")["data"][0]["x"])
    assert sorted(x.tolist()) == ["a", "b"]  # not dated: all rows
    assert "metric 'absent'" in text.replace("&#39;", "'") and "not in this run" in text
    empty = str(Reports(root=tmp_path, query="").reports())
    assert "report-0" in empty  # the default period (the last 30 days) holds them all
    _run(tmp_path, {"metrics": {"reports": []}})
    assert 'id="no-reports"' in str(Reports(root=tmp_path, query="").reports())


def test_dashboard_data_reads_a_spark_runs_parquet_warehouse_the_same(con, tmp_path):
    """engine spark leaves no DuckDB file, only Parquet (``events/<day>/``, ``tables/<t>/``):
    the stage reads it and writes the same tables as from the DuckDB warehouse."""
    from types import SimpleNamespace

    from customer_intel import warehouse

    wdir = tmp_path / "warehouse"
    for d, part in EVENTS.group_by("event_date"):
        folder = wdir / warehouse.EVENTS_DIR / f"event_date={d[0]}"
        folder.mkdir(parents=True)
        part.drop("event_date").write_parquet(folder / "part-00000.parquet")
    for name in warehouse.TABLES:
        folder = wdir / warehouse.PARQUET_TABLES_DIR / name
        folder.mkdir(parents=True)
        con.execute(f"SELECT * FROM {name}").pl().write_parquet(folder / "part-00000.parquet")
    spark = build.connect(SimpleNamespace(warehouse_dir=wdir), "spark")
    build.prepare(spark, SEGMENTS)
    order = ["event_date", "segment", "category"]
    mine = build.daily(spark).sort(order)
    ref = build.daily(con).sort(order)
    assert mine.select(ref.columns).equals(ref)
    # from the Parquet footers' null counts (spark) and by counting (the in-memory con)
    assert spark.execute("SELECT count(stats_null_count) FROM _dash_events_meta").fetchone()[0]
    assert build.quality_missing(spark).equals(build.quality_missing(con))
    spark.close()


@pytest.mark.parametrize("alternative", ["two-sided", "larger"])
def test_power_calculator_sample_size_equals_the_statsmodels_one(alternative):
    """The page's stdlib sample size is the library's (statsmodels NormalIndPower + brentq)."""
    from customer_intel import experiments_stats
    from customer_intel.dashboards import power

    for baseline, mde, alpha, target in [
        (0.2, 0.1, 0.05, 0.8),
        (0.053, 0.1, 0.05, 0.8),
        (0.5, -0.3, 0.01, 0.9),
        (0.01, 2.0, 0.1, 0.5),
        (0.9, 0.05, 0.05, 0.99),
    ]:
        ref = experiments_stats.sample_size_per_group(baseline, mde, alpha, target, alternative)
        got = power.sample_size_per_group(baseline, mde, alpha, target, alternative)
        assert got == pytest.approx(ref, rel=1e-9), (baseline, mde, alpha, target)
        assert power.power_two_proportions(
            baseline, mde, 123.0, alpha, alternative
        ) == pytest.approx(
            experiments_stats.power_two_proportions(baseline, mde, 123.0, alpha, alternative),
            rel=1e-12,
        )
    with pytest.raises(ValueError, match="baseline"):
        power.sample_size_per_group(1.5, 0.1)


def test_cross_sell_reasons_in_words_not_rule_statistics():
    from customer_intel.dashboards.widgets import rule_words

    words = rule_words("rule: 11079594 -> 98071663 (lift 8.67, confidence 0.18)")
    assert words == "also bought by 18% of the chosen product's buyers (8.7 times the usual rate)"
    assert "lift" not in words and "confidence" not in words
    assert rule_words("rule: a -> b") == "often bought together"


def test_report_titles_in_words_and_rates_as_percentages():
    import plotly.graph_objects as go

    from customer_intel.dashboards.pages.reports import for_people
    from customer_intel.dashboards.present import words

    assert words("ConversionRate") == "Conversion rate" and words("AUC") == "AUC"
    assert words("rate_treatment") == "Rate treatment"
    fig = go.Figure(go.Heatmap(z=[[0.1]], colorbar={"title": {"text": "ConversionRate"}}))
    fig.update_layout(xaxis_title="Day", yaxis_title="ConversionRate", legend_title="category")
    for_people(fig)
    assert fig.layout.yaxis.title.text == "Conversion rate" and fig.layout.yaxis.tickformat == ".0%"
    assert fig.layout.xaxis.tickformat is None and fig.layout.legend.title.text == "Category"
    assert fig.data[0].colorbar.title.text == "Conversion rate"
    assert fig.data[0].colorbar.tickformat == ".0%"


def test_a_preheated_kernel_warms_its_page_before_the_visit_and_reads_the_visits_url(
    tmp_path, monkeypatch
):
    """In a kernel Voila preheated, the page imports (and the reports page draws once) before
    it waits; what it then shows is read after the visit arrived, with the visit's filters."""
    import customer_intel.dashboards.pages.base as base

    days = [dt.date(2019, 11, d) for d in (1, 2, 3, 4)]
    reports = [{"name": "Daily", "metric": "daily", "type": "line", "x": "Day", "y": "Revenue"}]
    _run(
        tmp_path,
        {"metrics": {"reports": reports}},
        {
            "metric_daily": pl.DataFrame({"Day": days, "Revenue": [10.0, 20.0, 30.0, 40.0]}),
            "dash_daily": pl.DataFrame(
                {"event_date": days, "segment": [ALL] * 4, "category": [ALL] * 4}
                | {"revenue": [1.0, 2.0, 3.0, 4.0]}
            ),
        },
    )
    calls = []
    monkeypatch.setattr(base, "wait_for_visit", lambda: calls.append("visit"))
    real_reports = Reports.reports
    monkeypatch.setattr(Reports, "reports", lambda self: calls.append("draw") or real_reports(self))
    monkeypatch.setenv("QUERY_STRING", "from=2019-11-03&to=2019-11-04")
    monkeypatch.delenv("VOILA_PREHEAT", raising=False)
    page = Reports(root=tmp_path)  # not preheated: no warm-up, no wait
    assert calls == []
    monkeypatch.setenv("VOILA_PREHEAT", "True")
    page = Reports(root=tmp_path)
    assert calls == ["draw", "visit"]  # drawn once (warm-up) before waiting for the visit
    assert "plotly.express" in __import__("sys").modules
    assert page.filters.query() == Filters.from_query("from=2019-11-03&to=2019-11-04").query()
    y = _array(_spec(str(page.reports()), "report-0")["data"][0]["y"])
    assert y.tolist() == [30.0, 40.0]  # the visit's own dates
    # a warm-up that fails is left to the visit's own drawing, which shows it
    monkeypatch.setattr(Reports, "reports", lambda self: 1 / 0)
    Reports(root=tmp_path)
