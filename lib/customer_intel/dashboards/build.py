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


#: DuckDB's memory cap for this stage at most (below the warehouse's auto share of the free
#: memory): the per-session pass over 110M events held 3.4 GiB and the process 4.0 GB under
#: the auto cap of an idle 24 GB machine, 2.5 GB under this one, spilling, for 25% more time.
MEMORY_CAP = 2 * 2**30


def connect(run, engine: str = "duckdb") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection over the run's warehouse (``events``, ``all_events`` and its tables).

    Its memory cap is the warehouse's (:func:`customer_intel.warehouse.memory_limit_bytes`),
    at most :data:`MEMORY_CAP`.

    With ``engine`` duckdb it is :func:`customer_intel.warehouse.connect`'s. With spark the run
    has no DuckDB file, only the Parquet the Spark build wrote; this stage then reads that
    Parquet with an in-memory DuckDB (:func:`customer_intel.warehouse.connect_parquet`) instead
    of going through Spark: its SQL is DuckDB's (grouping sets, ``EXCLUDE``,
    ``quantile_cont``), its outputs are small aggregates, and both engines' warehouses hold
    the same rows, so the tables come out the same without a second, Spark dialect of them.
    """
    from customer_intel import warehouse

    cap = f"{min(warehouse.memory_limit_bytes(), MEMORY_CAP) // 2**20}MiB"
    wdir = run.warehouse_dir
    if engine != "spark":
        con = warehouse.connect(run, memory_limit=cap).con
    else:
        con = warehouse.connect_parquet(wdir, cap).con
    # the events' Parquet footers: their null counts answer quality_missing without a scan
    glob = str(wdir / warehouse.EVENTS_DIR / "**" / "*.parquet").replace("'", "''")
    con.execute(f"CREATE TEMP VIEW {_EVENTS_META} AS SELECT * FROM parquet_metadata('{glob}')")
    return con


#: Temp view of the events' Parquet metadata (:func:`connect`).
_EVENTS_META = "_dash_events_meta"

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
    """Create the temp views ``ev`` and ``_units`` and the table ``_segments``.

    ``ev``: events with their day, segment and top-level category; ``_units``: experiment,
    user_id (the events' id type) of each enrolled customer.

    ``con`` has the view ``events`` (rows with a user); ``segments`` is ``user_id, segment``
    (the RFM table) or None; ``experiments`` is :func:`experiment_units` or None.

    Raises
    ------
    ValueError
        ``segments`` names a user twice (each customer has one segment).
    """
    seg = segments if segments is not None else pl.DataFrame({"user_id": [], "segment": []})
    seg = seg.select("user_id", pl.col("segment").cast(pl.String))
    twice = seg.filter(pl.col("user_id").is_duplicated())["user_id"]
    if len(twice):
        raise ValueError(
            f"segments (rfm): user_id {twice[0]} has {int((twice == twice[0]).sum())} rows; "
            "each customer needs exactly one segment"
        )
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
        CREATE OR REPLACE TEMP VIEW _units AS
        SELECT experiment, TRY_CAST(user_id AS {id_type}) AS user_id FROM _experiment_units""")
    # the sums by segment and experiment are made again for these (see _sums)
    con.execute("DROP TABLE IF EXISTS _dash_sums")


#: Bits of one category mask column (UBIGINT); more categories take more columns.
_MASK_BITS = 64


def _categories(con: duckdb.DuckDBPyConnection) -> int:
    """Create ``_dash_k`` (category_code, category, idx, bank, bit); return the mask columns.

    Each top-level category gets a bit: a category set is one UBIGINT per 64 categories
    (``bank``), so "which categories did this user or session touch" is an OR of bits, not a
    row per category. One row per distinct ``category_code`` (NULL included): the events
    find their category by a join on the code (dictionary-encoded, a few hundred values),
    cheaper than splitting 110M strings.
    """
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _dash_k AS
        WITH codes AS (
            SELECT category_code, coalesce(nullif(split_part(category_code::VARCHAR, '.', 1), ''),
                                           '{NO_CATEGORY}') AS category
            FROM (SELECT DISTINCT category_code FROM events)),
        cats AS (SELECT category, (row_number() OVER (ORDER BY category) - 1)::INT AS idx
                 FROM (SELECT DISTINCT category FROM codes))
        SELECT category_code, category, idx, idx // {_MASK_BITS} AS bank,
               (1::UBIGINT << (idx % {_MASK_BITS})) AS bit
        FROM codes JOIN cats USING (category)""")
    (n,) = con.execute("SELECT count(DISTINCT idx) FROM _dash_k").fetchone()
    return max(1, -(-n // _MASK_BITS))


def _masks(prefix: str, banks: int, where: str = "TRUE") -> list[str]:
    """SQL aggregates: the OR of the category bits of the rows matching ``where``, per bank."""
    return [
        f"coalesce(bit_or(CASE WHEN k.bank = {j} THEN k.bit ELSE 0::UBIGINT END) "
        f"FILTER (WHERE {where}), 0::UBIGINT) AS {prefix}{j}"
        for j in range(banks)
    ]


def _parts(con: duckdb.DuckDBPyConnection) -> int:
    """The per-user-day and per-session category sets, once per connection; mask columns.

    ``_dash_users``: one row per day and user: ``am*`` the categories of their events, ``pm*``
    those they bought in. ``_dash_sessions``: one row per session: its start day (the day of
    its first event, as ``fact_sessions.session_start``), its user, and the categories of
    its events (``am*``), views, carts and purchases. The start day is the least
    ``event_date`` (the UTC date of ``event_time``, as the connection's time zone is UTC):
    casting the time-zone-aware ``event_time`` goes through ICU and took this query from
    17.7 s to 32.9 s at 110M. A session with events of several users
    (possible in a source's own session ids) keeps its id in ``multi``; its categories per
    user are in ``_dash_session_users``. One pass over the events each, over all days: the
    daily tables are then group-bys of these rows, never of the events.
    """
    have = {
        r[0]
        for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
    }
    if "_dash_session_users" in have:
        return con.execute("SELECT max(bank) + 1 FROM _dash_k").fetchone()[0] or 1
    banks = _categories(con)
    join_k = "JOIN _dash_k k ON e.category_code IS NOT DISTINCT FROM k.category_code"
    bought = _masks("pm", banks, "e.event_type = 'purchase'")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _dash_users AS
        SELECT e.event_date::DATE AS d, e.user_id, {", ".join([*_masks("am", banks), *bought])}
        FROM events e {join_k} GROUP BY ALL""")
    flags = {"vm": "view", "cm": "cart", "pm": "purchase"}
    masks = [*_masks("am", banks)]
    for prefix, kind in flags.items():
        masks += _masks(prefix, banks, f"e.event_type = '{kind}'")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _dash_sessions AS
        SELECT min(e.event_date)::DATE AS d, min(e.user_id) AS user_id,
               CASE WHEN min(e.user_id) <> max(e.user_id) THEN e.user_session END AS multi,
               {", ".join(masks)}
        FROM events e {join_k} WHERE e.user_session IS NOT NULL GROUP BY e.user_session""")
    # rare or absent: read the events again only for such sessions
    (multi,) = con.execute("SELECT count(multi) FROM _dash_sessions").fetchone()
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _dash_session_users AS
        SELECT e.user_session AS multi, e.user_id, {", ".join(masks)}
        FROM events e {join_k}
        WHERE {"TRUE" if multi else "FALSE"}
          AND e.user_session IN (SELECT multi FROM _dash_sessions WHERE multi IS NOT NULL)
        GROUP BY ALL""")
    return banks


def _sums(con: duckdb.DuckDBPyConnection) -> None:
    """``_dash_sums``: views, carts, purchases, revenue per day, xset, segment and category.

    Made once per :func:`prepare` (it depends on the segments and the units).

    A customer's experiment set (``xset``, 0: none) is the list of experiments enrolling
    them (``_dash_xset_names``): one pass over the events serves ``dash_daily`` (all sets
    added up) and ``dash_daily_experiments`` (the sets holding each experiment), where a
    join to the units per experiment would read the events again.
    """
    have = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = '_dash_sums'"
    ).fetchone()[0]
    if have:
        return
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _dash_xsets AS
        SELECT user_id, list_sort(list(DISTINCT experiment)) AS experiments,
               (dense_rank() OVER (ORDER BY list_sort(list(DISTINCT experiment))))::INT AS xset
        FROM _units WHERE user_id IS NOT NULL GROUP BY user_id""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _dash_xset_names AS
        SELECT DISTINCT xset, unnest(experiments) AS experiment FROM _dash_xsets""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _dash_sums AS
        SELECT t.event_date::DATE AS d, coalesce(x.xset, 0) AS xset,
               coalesce(g.segment, '{NO_PURCHASE}') AS segment, k.category,
               count(*) FILTER (WHERE t.event_type = 'view') AS views,
               count(*) FILTER (WHERE t.event_type = 'cart') AS carts,
               count(*) FILTER (WHERE t.event_type = 'purchase') AS purchases,
               coalesce(sum(t.price::DOUBLE) FILTER (WHERE t.event_type = 'purchase'), 0)
                   AS revenue
        FROM events t JOIN _dash_k k ON t.category_code IS NOT DISTINCT FROM k.category_code
        LEFT JOIN _segments g ON t.user_id = g.user_id
        LEFT JOIN _dash_xsets x ON t.user_id = x.user_id
        GROUP BY ALL""")


def _mask_cols(prefixes: tuple[str, ...], banks: int) -> list[str]:
    return [f"{p}{j}" for p in prefixes for j in range(banks)]


def _expand(combos: str, lead: str, counts: dict[str, str], banks: int) -> str:
    """SQL: counts per day (and ``by``), segment, category from rows of ``combos``.

    ``combos`` holds ``lead, segment, <masks>, n``: n keys (users or sessions) with those
    category sets. A key counts for a category when its bit is set in the mask named by
    ``counts`` (output column -> mask prefix), and for the ``(all)`` category when any bit
    is. Both are sums over ``combos`` rows: a key is one row per segment, so it is counted
    once per grain however many categories it touched.
    """

    def bit(prefix: str) -> str:
        cases = " ".join(f"WHEN {j} THEN c.{prefix}{j}" for j in range(banks))
        return f"(CASE k.bank {cases} END & k.bit) <> 0"

    def anyset(prefix: str) -> str:
        return " OR ".join(f"c.{prefix}{j} <> 0" for j in range(banks))

    per_cat = ", ".join(f"sum(c.n) FILTER (WHERE {bit(p)}) AS {col}" for col, p in counts.items())
    per_all = ", ".join(
        f"sum(c.n) FILTER (WHERE {anyset(p)}) AS {col}" for col, p in counts.items()
    )
    lead_c = ", ".join(f"c.{x.strip()}" for x in lead.split(","))
    return f"""
        SELECT {lead_c}, c.segment, k.category, {per_cat}
        FROM {combos} c JOIN (SELECT DISTINCT category, bank, bit FROM _dash_k) k
          ON {bit(next(iter(counts.values())))}
        GROUP BY ALL
        UNION ALL
        SELECT {lead_c}, c.segment, '{ALL}' AS category, {per_all}
        FROM {combos} c GROUP BY ALL"""


def _daily(con: duckdb.DuckDBPyConnection, by: str) -> pl.DataFrame:
    """``dash_daily`` (``by`` "") or ``dash_daily_experiments`` (``by`` "experiment").

    Visitors and buyers are counted from ``_dash_users`` and sessions from ``_dash_sessions``
    (:func:`_parts`): rows with the same day, segment and category set are first counted
    together (a few hundred thousand combinations instead of millions of users and
    sessions), then each category's bit decides where they count (:func:`_expand`). A user
    has one segment, so the ``(all)`` segment adds up the segments' rows; a session of
    several users is counted once per segment of its users and once overall. The sums
    (views, carts, purchases, revenue) come from :func:`_sums` and roll up by addition.
    Written without ``COUNT(DISTINCT)`` over grouping sets (DuckDB took 700 s for the 110M
    events that way) and without a range of days at a time (28 ranges of 4M events took
    521 s): at 110M both tables together took 120 s of CPU, equal to the per-range ones.
    """
    banks = _parts(con)
    lead = f"d, {by}" if by else "d"
    units = "JOIN _units x ON t.user_id = x.user_id" if by else ""
    xcol = "x.experiment, " if by else ""
    seg = f"coalesce(g.segment, '{NO_PURCHASE}')"
    join_seg = "LEFT JOIN _segments g ON t.user_id = g.user_id"
    um = ", ".join(f"t.{c}" for c in _mask_cols(("am", "pm"), banks))
    sm_names = _mask_cols(("am", "vm", "cm", "pm"), banks)
    sm = ", ".join(f"t.{c}" for c in sm_names)
    sm_or = ", ".join(f"bit_or(t.{c}) AS {c}" for c in sm_names)
    # users: one segment each, so the (all) segment is the sum of the segments' rows
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _dash_uc AS
        SELECT t.d, {xcol}{seg} AS segment, {um}, count(*) AS n
        FROM _dash_users t {join_seg} {units} GROUP BY ALL""")
    um_names = ", ".join(_mask_cols(("am", "pm"), banks))
    users = f"""(SELECT * FROM _dash_uc UNION ALL
                 SELECT {lead}, '{ALL}' AS segment, {um_names}, sum(n) AS n
                 FROM _dash_uc GROUP BY ALL)"""
    # sessions of one user like users; a session of several users is one row per segment
    # (and experiment) of its users with their categories ORed, and one row for (all)
    multi_days = "(SELECT multi, d FROM _dash_sessions WHERE multi IS NOT NULL)"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _dash_sc AS
        SELECT t.d, {xcol}{seg} AS segment, {sm}, count(*) AS n
        FROM _dash_sessions t {join_seg} {units} WHERE t.multi IS NULL GROUP BY ALL""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _dash_sm AS
        SELECT s.d, {xcol}t.multi, {seg} AS segment, {sm_or}
        FROM _dash_session_users t JOIN {multi_days} s USING (multi) {join_seg} {units}
        GROUP BY ALL""")
    sm_plain = ", ".join(sm_names)
    sessions = f"""(
        SELECT * FROM _dash_sc
        UNION ALL SELECT {lead}, segment, {sm_plain}, count(*) AS n FROM _dash_sm GROUP BY ALL
        UNION ALL SELECT {lead}, '{ALL}' AS segment, {sm_plain}, sum(n) AS n
                  FROM _dash_sc GROUP BY ALL
        UNION ALL SELECT {lead}, '{ALL}' AS segment, {sm_plain}, count(*) AS n
                  FROM (SELECT {lead}, multi, {sm_or} FROM _dash_sm t GROUP BY ALL)
                  GROUP BY ALL)"""
    by_user = _expand(users, lead, {"visitors": "am", "buyers": "pm"}, banks)
    by_session = _expand(
        sessions,
        lead,
        {"sessions": "am", "sessions_with_view": "vm", "sessions_with_cart": "cm", "orders": "pm"},
        banks,
    )
    # each event has one segment and one category: the sums roll up by addition
    _sums(con)
    xsets = "JOIN _dash_xset_names x USING (xset)" if by else ""
    sums = f"""
        WITH f AS (
            SELECT t.d, {xcol}t.segment, t.category, sum(t.views) AS views,
                   sum(t.carts) AS carts, sum(t.purchases) AS purchases,
                   sum(t.revenue) AS revenue
            FROM _dash_sums t {xsets} GROUP BY ALL)
        SELECT {lead}, coalesce(segment, '{ALL}') AS segment, coalesce(category, '{ALL}')
                   AS category,
               sum(views) AS views, sum(carts) AS carts, sum(purchases) AS purchases,
               sum(revenue) AS revenue
        FROM f GROUP BY GROUPING SETS (({lead}, segment, category), ({lead}, segment),
                                       ({lead}, category), ({lead}))"""
    keys = ["d", *([by] if by else []), "segment", "category"]
    on = " AND ".join(f"a.{k} = b.{k}" for k in keys)
    out_by = f"coalesce(a.{by}, b.{by}) AS {by}, " if by else ""
    out = con.execute(f"""
        WITH u AS ({by_user}), m AS ({sums}),
             a AS (SELECT * FROM u JOIN m USING ({", ".join(keys)})),
             b AS ({by_session})
        SELECT coalesce(a.d, b.d) AS event_date, {out_by}coalesce(a.segment, b.segment) AS segment,
               coalesce(a.category, b.category) AS category,
               coalesce(visitors, 0) AS visitors, coalesce(views, 0) AS views,
               coalesce(carts, 0) AS carts, coalesce(purchases, 0) AS purchases,
               coalesce(buyers, 0) AS buyers, coalesce(revenue, 0.0)::DOUBLE AS revenue,
               coalesce(sessions, 0) AS sessions,
               coalesce(sessions_with_view, 0) AS sessions_with_view,
               coalesce(sessions_with_cart, 0) AS sessions_with_cart,
               coalesce(orders, 0) AS orders
        FROM a FULL OUTER JOIN b ON {on}""").pl()
    for t in ("_dash_uc", "_dash_sc", "_dash_sm"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    keys[0] = "event_date"
    ints = [c for c in out.columns if c not in (*keys, "revenue")]
    return out.sort(keys).with_columns(pl.col(ints).cast(pl.Int64))


def daily(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """``dash_daily`` (see the module docstring) from ``events`` and the prepared segments."""
    return _daily(con, "")


def daily_experiments(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """``dash_daily_experiments``: ``dash_daily`` per experiment, over its enrolled customers."""
    return _daily(con, "experiment")


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
    """``dash_quality_missing``: missing values per column of the optimized events.

    From the null counts in the events' Parquet footers when :func:`connect` found them for
    every row group and column (reading 110M rows to count them took 12 s of CPU), else
    counted.
    """
    cols = [r[0] for r in con.execute("DESCRIBE all_events").fetchall() if r[0] != "event_date"]
    (rows,) = con.execute("SELECT count(*) FROM all_events").fetchone()
    have = con.execute(
        f"SELECT count(*) FROM duckdb_views() WHERE view_name = '{_EVENTS_META}'"
    ).fetchone()[0]
    stats = {}
    if have:
        stats = dict(
            con.execute(f"""
                SELECT path_in_schema, sum(stats_null_count) FROM {_EVENTS_META}
                GROUP BY 1 HAVING count(*) = count(stats_null_count)""").fetchall()
        )
    if all(c in stats for c in cols):
        missing = [int(stats[c]) for c in cols]
    else:
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

    One pass over the events: the rows per distinct price (prices repeat: 110M events had
    few distinct ones), from which both the percentile and the bins are read. The percentile
    is ``quantile_cont``'s: the two order statistics around its position are found by
    cumulative counts and DuckDB interpolates between them itself (``quantile_cont`` over
    those two values at the position's fraction), so the value is the same to the bit as
    ``quantile_cont`` over all prices, which sorted 110M values (27 s of CPU).
    """
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _dash_prices AS
        SELECT price AS x, count(*) AS n FROM all_events WHERE price IS NOT NULL GROUP BY 1""")
    lo, hi, frac = con.execute("""
        WITH cum AS (SELECT x, sum(n) OVER (ORDER BY x) AS upto FROM _dash_prices),
        pos AS (SELECT (sum(n) - 1) * 0.99::DOUBLE AS rn FROM _dash_prices)
        SELECT (SELECT min(x) FROM cum WHERE upto > floor(rn)),
               (SELECT min(x) FROM cum WHERE upto > ceil(rn)), rn - floor(rn)
        FROM pos""").fetchone()
    top = (
        None
        if lo is None
        else con.execute(
            f"SELECT quantile_cont(x, {frac!r}) FROM _dash_prices WHERE x IN (?, ?)", [lo, hi]
        ).fetchone()[0]
    )
    if top is None:
        con.execute("DROP TABLE _dash_prices")
        return pl.DataFrame(
            schema={"price_from": pl.Float64, "price_to": pl.Float64, "events": pl.Int64}
        )
    width = max(float(top), 1e-9) / bins
    out = con.execute(f"""
        SELECT least(floor(greatest(x, 0) / {width}), {bins})::INT AS b, sum(n) AS events,
               max(x)::DOUBLE AS hi
        FROM _dash_prices GROUP BY 1 ORDER BY 1""").pl()
    con.execute("DROP TABLE _dash_prices")
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
