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


#: Events aggregated together by one query of :func:`daily` (whole days).
DAY_CHUNK_EVENTS = 4_000_000


def day_chunks(con: duckdb.DuckDBPyConnection, max_events: int) -> list[tuple[str, str]]:
    """``(first, last)`` ISO days of consecutive day ranges of about ``max_events`` events each.

    Every grouping set of :func:`daily` contains the day, so ranges of days are aggregated
    one after the other and their rows are disjoint: the distinct counts' hash tables hold a
    few days of events, not all of them (over all 110M events at once DuckDB ran out of its
    memory cap). A day larger than ``max_events`` is a range of its own.
    """
    counts = con.execute("SELECT d, count(*) FROM ev GROUP BY d ORDER BY d").fetchall()
    chunks: list[list] = []
    size = 0
    for day, n in counts:
        if chunks and size + n <= max_events:
            chunks[-1][1] = day
            size += n
        else:
            chunks.append([day, day])
            size = n
    return [(str(a), str(b)) for a, b in chunks]


#: The filter grains below the day: each grouping set of the dashboards' filters.
_GRAINS = (("segment", "category"), ("segment",), ("category",), ())


def _per_grain(
    level1: str, key: str, counts: dict[str, str | None], sums: tuple[str, ...], lead: str
) -> str:
    """SQL: rows per day and grain from ``level1`` (one row per day, segment, category, key).

    A distinct count is a plain count once the rows are grouped by the grain and the key: the
    key (a user, a session) is counted once per day and grain however many segments or
    categories it touched. ``counts`` maps an output column to the flag it counts (None: every
    key); ``sums`` are added up.
    """
    selects = []
    for grain in _GRAINS:
        cols = ", ".join((lead, *grain))
        labels = ", ".join(c if c in grain else f"'{ALL}' AS {c}" for c in ("segment", "category"))
        flags = [f for f in counts.values() if f]
        inner = ", ".join(
            [*(f"bool_or({f}) AS {f}" for f in flags), *(f"sum({x}) AS {x}" for x in sums)]
        )
        outer = ", ".join(
            [
                *(
                    f"count(*) FILTER (WHERE {f}) AS {c}" if f else f"count(*) AS {c}"
                    for c, f in counts.items()
                ),
                *(f"sum({x}) AS {x}" for x in sums),
            ]
        )
        selects.append(
            f"SELECT {lead}, {labels}, {outer} FROM (SELECT {cols}, {key}, {inner} FROM {level1} "
            f"GROUP BY {cols}, {key}) GROUP BY {cols}"
        )
    return " UNION ALL ".join(selects)


def _daily_range(
    con: duckdb.DuckDBPyConnection, first: str, last: str, source: str = "ev", by: str = ""
) -> pl.DataFrame:
    """:func:`daily` for the days ``first`` to ``last`` (events by event day, sessions by start).

    ``source`` is the view read (``ev`` or ``ev_experiments``), ``by`` an extra key column
    beside the day (``experiment``) or "".

    Written without ``COUNT(DISTINCT)`` over grouping sets (DuckDB took 700 s for the 110M
    events that way): the events are first reduced to one row per day, segment, category and
    user (or session), then each grain counts those rows (:func:`_per_grain`).
    """
    lead = f"d, {by}" if by else "d"
    users = f"""(SELECT {lead}, segment, category, user_id,
               count(*) FILTER (WHERE event_type = 'view') AS views,
               count(*) FILTER (WHERE event_type = 'cart') AS carts,
               count(*) FILTER (WHERE event_type = 'purchase') AS purchases,
               coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0)::DOUBLE AS revenue,
               bool_or(event_type = 'purchase') AS bought
        FROM {source} WHERE d BETWEEN DATE '{first}' AND DATE '{last}' GROUP BY ALL)"""
    by_event = _per_grain(
        "u",
        "user_id",
        {"visitors": None, "buyers": "bought"},
        ("views", "carts", "purchases", "revenue"),
        lead,
    )
    # the sessions that start in the range; their events lie between the range's first day
    # and the last day one of them ends (the day bounds only prune files: the join decides,
    # and one day of margin each side absorbs any time-zone difference of the casts)
    starts = f"""
        SELECT user_session, start_day, end_day FROM _session_days
        WHERE start_day BETWEEN DATE '{first}' AND DATE '{last}'"""
    (last_end,) = con.execute(f"SELECT max(end_day) FROM ({starts})").fetchone()
    last_end = str(last_end or last)
    s_lead = f"s.start_day AS d, ev.{by}" if by else "s.start_day AS d"
    sessions = f"""(SELECT {s_lead}, segment, category, user_session,
               bool_or(event_type = 'view') AS with_view,
               bool_or(event_type = 'cart') AS with_cart,
               bool_or(event_type = 'purchase') AS with_order
        FROM {source} ev JOIN ({starts}) s USING (user_session)
        WHERE ev.d BETWEEN DATE '{first}' - 1 AND DATE '{last_end}' + 1 GROUP BY ALL)"""
    by_session = _per_grain(
        "v",
        "user_session",
        {
            "sessions": None,
            "sessions_with_view": "with_view",
            "sessions_with_cart": "with_cart",
            "orders": "with_order",
        },
        (),
        lead,
    )
    out_by = f"coalesce(a.{by}, b.{by}) AS {by}, " if by else ""
    on = f" AND a.{by} = b.{by}" if by else ""
    return con.execute(f"""
        WITH u AS MATERIALIZED {users}, v AS MATERIALIZED {sessions}
        SELECT coalesce(a.d, b.d) AS event_date, {out_by}coalesce(a.segment, b.segment) AS segment,
               coalesce(a.category, b.category) AS category,
               coalesce(visitors, 0) AS visitors, coalesce(views, 0) AS views,
               coalesce(carts, 0) AS carts, coalesce(purchases, 0) AS purchases,
               coalesce(buyers, 0) AS buyers, coalesce(revenue, 0.0)::DOUBLE AS revenue,
               coalesce(sessions, 0) AS sessions,
               coalesce(sessions_with_view, 0) AS sessions_with_view,
               coalesce(sessions_with_cart, 0) AS sessions_with_cart,
               coalesce(orders, 0) AS orders
        FROM ({by_event}) a FULL OUTER JOIN ({by_session}) b
          ON a.d = b.d{on} AND a.segment = b.segment AND a.category = b.category""").pl()


def daily(con: duckdb.DuckDBPyConnection, max_events: int = DAY_CHUNK_EVENTS) -> pl.DataFrame:
    """``dash_daily`` (see the module docstring) from the ``ev`` view and ``fact_sessions``.

    Computed over ranges of days of about ``max_events`` events (:func:`day_chunks`), so its
    memory does not grow with the number of days.
    """
    return _daily(con, "ev", "", max_events)


def daily_experiments(
    con: duckdb.DuckDBPyConnection, max_events: int = DAY_CHUNK_EVENTS
) -> pl.DataFrame:
    """``dash_daily_experiments``: ``dash_daily`` per experiment, over its enrolled customers."""
    return _daily(con, "ev_experiments", "experiment", max_events)


def _daily(con: duckdb.DuckDBPyConnection, source: str, by: str, max_events: int) -> pl.DataFrame:
    # each session's start and end day, once, sorted by start: a range's sessions are then
    # read from a few row groups (filtering fact_sessions by a cast took 4 s a range at 110M)
    con.execute("""
        CREATE TEMP TABLE IF NOT EXISTS _session_days AS
        SELECT user_session, session_start::DATE AS start_day, session_end::DATE AS end_day
        FROM fact_sessions ORDER BY start_day""")
    keys = ["event_date", *([by] if by else []), "segment", "category"]
    chunks = day_chunks(con, max_events) or [("1970-01-01", "1970-01-01")]
    out = pl.concat([_daily_range(con, a, b, source, by) for a, b in chunks]).sort(keys)
    ints = [c for c in out.columns if c not in (*keys, "revenue")]
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
