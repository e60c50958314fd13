"""Stage ``dashboard_data``: the small tables every dashboard page reads, built once per run.

The pages do no heavy query: whatever they show is aggregated here, at the grain of their
filters (day x customer segment x top-level category, with ``(all)`` roll-up rows, so a
distinct count is exact for "all segments" / "all categories"). The definitions are the
warehouse's (:mod:`customer_intel.warehouse`): revenue is the sum of ``price`` over purchase
events by event day; sessions and orders (sessions with a purchase) count by the session's
start day (``fact_sessions``); conversion is orders / sessions. ``tests/test_dashboards.py``
holds the ``(all, all)`` rows equal to ``fact_daily_kpis``.

Tables (all under ``tables/``)::

    dash_daily          event_date, segment, category, visitors, views, carts, purchases, buyers,
                        revenue, sessions, sessions_with_view, sessions_with_cart, orders
    dash_daily_experiments  experiment + the columns of dash_daily: the same numbers over the
                        customers each experiment enrolled (the experiment filter)
    dash_experiment_units   experiment, user_id: who each experiment enrolled (from the
                        experiments stage's ``experiment_units``, when its units are customers)
    dash_buyer_days     event_date, user_id, segment, category, revenue, purchases
                        (one row per buyer, day and category: exact distinct buyers and
                        top customers for any filter)
    dash_products       product_id, category, label (category, brand, price) per product
    dash_quality_events event_date, event_type, events (all rows, also those without a user)
    dash_quality_missing column, rows, missing, share
    dash_quality_prices  price_from, price_to, events (purchase and view prices)
    dash_quality_rejects reason, rows
"""

from __future__ import annotations

import duckdb
import polars as pl

ALL = "(all)"
#: Segment of a visitor who has not bought (RFM scores buyers only).
NO_PURCHASE = "No purchase yet"
#: Category of an event whose product has no category code.
NO_CATEGORY = "no category"


def connect(run, engine: str = "duckdb") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection over the run's warehouse (``events``, ``all_events`` and its tables).

    With ``engine`` duckdb it is :func:`customer_intel.warehouse.connect`'s. With spark the run
    has no DuckDB file, only the Parquet the Spark build wrote (``events/`` and
    ``tables/<table>/``); this stage then reads that Parquet with an in-memory DuckDB instead
    of going through Spark: its SQL is DuckDB's (grouping sets, ``EXCLUDE``,
    ``quantile_cont``), its outputs are small aggregates, and both engines' warehouses hold
    the same rows, so the tables come out the same without a second, Spark dialect of them.
    """
    from customer_intel import warehouse

    if engine != "spark":
        return warehouse.connect(run).con
    import ibis

    wdir = run.warehouse_dir
    con = ibis.duckdb.connect()
    warehouse.configure_duckdb(con)
    warehouse.register_events(con, wdir / warehouse.EVENTS_DIR)
    for name in warehouse.TABLES:
        parts = wdir / warehouse.PARQUET_TABLES_DIR / name
        if parts.is_dir():
            con.read_parquet(str(parts / "*.parquet"), table_name=name)
    return con.con


def _sets(keys: str) -> str:
    return (
        f"GROUPING SETS (({keys}, segment, category), ({keys}, segment), ({keys}, category), "
        f"({keys}))"
    )


def _cube_labels() -> str:
    return (
        f"CASE WHEN GROUPING(segment) = 1 THEN '{ALL}' ELSE segment END AS segment, "
        f"CASE WHEN GROUPING(category) = 1 THEN '{ALL}' ELSE category END AS category"
    )


#: The experiment of units whose table names none (an external unit table).
UNNAMED_EXPERIMENT = "A/B test"


def experiment_units(units: pl.DataFrame | None) -> pl.DataFrame:
    """``dash_experiment_units``: experiment, user_id of each customer an experiment enrolled.

    From the experiments stage's ``experiment_units``: the experiment is its
    ``experiment_name``, else :data:`UNNAMED_EXPERIMENT` (an external unit table that names
    none). Empty when there are no units or they are not customers (no ``user_id`` column:
    the other pages cannot then be narrowed to an experiment).
    """
    if units is None or "user_id" not in units.columns:
        return pl.DataFrame(schema={"experiment": pl.String, "user_id": pl.Int64})
    experiment = (
        pl.col("experiment_name").cast(pl.String)
        if "experiment_name" in units.columns
        else pl.lit(UNNAMED_EXPERIMENT)
    )
    return (
        units.select(experiment=experiment, user_id="user_id")
        .unique(maintain_order=True)
        .sort("experiment", "user_id")
    )


def prepare(
    con: duckdb.DuckDBPyConnection,
    segments: pl.DataFrame | None,
    experiments: pl.DataFrame | None = None,
) -> None:
    """Create the temp views ``ev`` and ``ev_experiments``.

    ``ev``: events with their day, segment and top-level category; ``ev_experiments``: ``ev``
    with ``experiment``, one row per event and experiment its customer was enrolled in.

    ``con`` has the views ``events`` (rows with a user) and ``fact_sessions``; ``segments``
    is ``user_id, segment`` (the RFM table) or None; ``experiments`` is
    :func:`experiment_units` or None.
    """
    seg = segments if segments is not None else pl.DataFrame({"user_id": [], "segment": []})
    seg = seg.select("user_id", pl.col("segment").cast(pl.String))
    con.register("_segments", seg.to_arrow())
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW ev AS
        SELECT e.event_date::DATE AS d, e.event_type::VARCHAR AS event_type, e.user_id,
               e.user_session, e.product_id, e.price::DOUBLE AS price,
               coalesce(nullif(split_part(e.category_code::VARCHAR, '.', 1), ''),
                        '{NO_CATEGORY}') AS category,
               coalesce(s.segment, '{NO_PURCHASE}') AS segment
        FROM events e LEFT JOIN _segments s ON e.user_id = s.user_id""")
    x = experiments if experiments is not None else experiment_units(None)
    con.register("_experiment_units", x.to_arrow())
    # the units' ids as the events' type (an external unit table may hold them as text)
    id_type = next(r[1] for r in con.execute("DESCRIBE events").fetchall() if r[0] == "user_id")
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW ev_experiments AS
        SELECT ev.*, x.experiment
        FROM ev JOIN (SELECT experiment, TRY_CAST(user_id AS {id_type}) AS user_id
                      FROM _experiment_units) x ON ev.user_id = x.user_id""")


def daily(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """``dash_daily`` (see the module docstring) from the ``ev`` view and ``fact_sessions``."""
    return _daily(con, "ev", "d")


def daily_experiments(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """``dash_daily_experiments``: ``dash_daily`` per experiment, over its enrolled customers."""
    return _daily(con, "ev_experiments", "d, experiment")


def _daily(con: duckdb.DuckDBPyConnection, source: str, keys: str) -> pl.DataFrame:
    """The daily numbers of ``source`` (``ev`` or ``ev_experiments``) grouped by ``keys``."""
    sets = _sets(keys)
    extra = keys.removeprefix("d").strip(", ")
    lead = f"coalesce(a.{extra}, b.{extra}) AS {extra}, " if extra else ""
    on = f" AND a.{extra} = b.{extra}" if extra else ""
    by_event = f"""
        SELECT {keys}, {_cube_labels()},
               count(DISTINCT user_id) AS visitors,
               count(*) FILTER (WHERE event_type = 'view') AS views,
               count(*) FILTER (WHERE event_type = 'cart') AS carts,
               count(*) FILTER (WHERE event_type = 'purchase') AS purchases,
               count(DISTINCT user_id) FILTER (WHERE event_type = 'purchase') AS buyers,
               coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0)::DOUBLE AS revenue
        FROM {source} GROUP BY {sets}"""
    by_session = f"""
        SELECT {keys}, {_cube_labels()},
               count(DISTINCT user_session) AS sessions,
               count(DISTINCT user_session) FILTER (WHERE event_type = 'view')
                   AS sessions_with_view,
               count(DISTINCT user_session) FILTER (WHERE event_type = 'cart')
                   AS sessions_with_cart,
               count(DISTINCT user_session) FILTER (WHERE event_type = 'purchase') AS orders
        FROM (SELECT ev.* EXCLUDE (d), s.session_start::DATE AS d
              FROM {source} ev JOIN fact_sessions s USING (user_session))
        GROUP BY {sets}"""
    out = con.execute(f"""
        SELECT coalesce(a.d, b.d) AS event_date, {lead}coalesce(a.segment, b.segment) AS segment,
               coalesce(a.category, b.category) AS category,
               coalesce(visitors, 0) AS visitors, coalesce(views, 0) AS views,
               coalesce(carts, 0) AS carts, coalesce(purchases, 0) AS purchases,
               coalesce(buyers, 0) AS buyers, coalesce(revenue, 0.0) AS revenue,
               coalesce(sessions, 0) AS sessions,
               coalesce(sessions_with_view, 0) AS sessions_with_view,
               coalesce(sessions_with_cart, 0) AS sessions_with_cart,
               coalesce(orders, 0) AS orders
        FROM ({by_event}) a FULL OUTER JOIN ({by_session}) b
          ON a.d = b.d{on} AND a.segment = b.segment AND a.category = b.category
        ORDER BY ALL""").pl()
    keys_out = ("event_date", "experiment", "segment", "category", "revenue")
    ints = [c for c in out.columns if c not in keys_out]
    return out.with_columns(pl.col(ints).cast(pl.Int64))


def buyer_days(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """``dash_buyer_days``: revenue and purchases per buyer, day and category."""
    return con.execute("""
        SELECT d AS event_date, user_id, segment, category,
               sum(price)::DOUBLE AS revenue, count(*)::BIGINT AS purchases
        FROM ev WHERE event_type = 'purchase' GROUP BY ALL ORDER BY 1, 2, 4""").pl()


def products(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """``dash_products``: a human label per product (category, brand, price), from dim_products."""
    return con.execute(f"""
        SELECT product_id::VARCHAR AS product_id,
               coalesce(nullif(split_part(category_code::VARCHAR, '.', 1), ''), '{NO_CATEGORY}')
                   AS category,
               concat_ws(' · ',
                   coalesce(replace(category_code::VARCHAR, '.', ' › '), 'product'),
                   brand::VARCHAR,
                   CASE WHEN latest_price IS NOT NULL THEN printf('%.2f', latest_price) END)
                   || ' (#' || product_id::VARCHAR || ')' AS label,
               revenue::DOUBLE AS revenue, views::BIGINT AS views
        FROM dim_products ORDER BY revenue DESC, views DESC, product_id""").pl()


def quality_events(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """``dash_quality_events``: rows per day and event type (all rows, with or without user)."""
    return con.execute("""
        SELECT event_date::DATE AS event_date, event_type::VARCHAR AS event_type,
               count(*)::BIGINT AS events
        FROM all_events GROUP BY ALL ORDER BY 1, 2""").pl()


def quality_missing(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """``dash_quality_missing``: missing values per column of the optimized events."""
    cols = [r[0] for r in con.execute("DESCRIBE all_events").fetchall() if r[0] != "event_date"]
    sel = ", ".join(f'count(*) - count("{c}") AS "{c}"' for c in cols)
    rows, *missing = con.execute(f"SELECT count(*), {sel} FROM all_events").fetchone()
    return pl.DataFrame(
        {"column": cols, "rows": [rows] * len(cols), "missing": missing},
        schema={"column": pl.String, "rows": pl.Int64, "missing": pl.Int64},
    ).with_columns(share=pl.col("missing") / pl.col("rows").clip(lower_bound=1))


def quality_prices(con: duckdb.DuckDBPyConnection, bins: int) -> pl.DataFrame:
    """``dash_quality_prices``: a histogram of prices.

    ``bins`` equal bins up to the 99th percentile and one bin for the rest (so one extreme price
    does not flatten the chart).
    """
    top = con.execute("SELECT quantile_cont(price, 0.99) FROM all_events").fetchone()[0]
    if top is None:
        return pl.DataFrame(
            schema={"price_from": pl.Float64, "price_to": pl.Float64, "events": pl.Int64}
        )
    width = max(float(top), 1e-9) / bins
    out = con.execute(f"""
        SELECT least(floor(greatest(price, 0) / {width}), {bins})::INT AS b, count(*) AS events,
               max(price)::DOUBLE AS hi
        FROM all_events WHERE price IS NOT NULL GROUP BY 1 ORDER BY 1""").pl()
    return out.select(
        price_from=pl.col("b") * width,
        price_to=pl.when(pl.col("b") == bins)
        .then(pl.col("hi"))
        .otherwise((pl.col("b") + 1) * width),
        events=pl.col("events").cast(pl.Int64),
    )


def quality_rejects(rejects: pl.LazyFrame) -> pl.DataFrame:
    """``dash_quality_rejects``: rejected input rows per reason."""
    return (
        rejects.group_by("reason")
        .agg(rows=pl.len().cast(pl.Int64))
        .sort("rows", descending=True)
        .collect()
    )
