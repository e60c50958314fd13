"""Canonical events -> optimized Parquet + a star-schema warehouse (stage 02_optimize).

Layout inside a run folder (``<run>/warehouse/``)::

    events/event_date=YYYY-MM-DD/*.parquet   optimized canonical events
    warehouse.duckdb                         dims and facts below

Optimized events: integer ids downcast to the smallest signed type that holds them (string ids
that are all digits become integers), ``price`` as Float32 when every value survives the round
trip to the cent, ``event_type`` as an enum, sorted by (event_date, user_id, event_time), zstd,
hive-partitioned by date, row groups of ``row_group_size`` rows.

Tables (built as Ibis expressions, so the same code runs on DuckDB or Spark):

``dim_users``
    user_id, first_seen, last_seen, events, sessions, views, carts, purchases, revenue
``dim_products``
    product_id, category_id, category_code, brand, latest_price, views, carts, purchases,
    revenue
``fact_sessions``
    user_session, user_id, session_start, session_end, duration_s, events, unique_products,
    has_cart, has_purchase, revenue
``fact_daily_kpis``
    event_date, events, dau, sessions, views, carts, purchases, orders (sessions with a
    purchase), buyers, revenue, conversion (= orders / sessions)
``fact_funnel``
    level ('overall' or 'day'), event_date (null for overall), step (view, cart, purchase),
    step_order, users (distinct users reaching the step), sessions, rate_from_previous,
    rate_from_first

Revenue is the sum of ``price`` over purchase events (price x quantity for order-line sources,
where ingestion already multiplied). :func:`connect` opens the warehouse read-only and
registers ``events`` as a temporary view, so dashboards and a running pipeline never block
each other on DuckDB's single-writer lock.
"""

from __future__ import annotations

import time
from pathlib import Path

import ibis
import polars as pl

from customer_intel.columns import EVENT_TYPES
from customer_intel.runs import StageRun

WAREHOUSE_FILE = "warehouse.duckdb"
EVENTS_DIR = "events"
TABLES = ("dim_users", "dim_products", "fact_sessions", "fact_daily_kpis", "fact_funnel")


_INT_TYPES = ((pl.Int32, "INTEGER", 31), (pl.Int64, "BIGINT", 63))  # type, name, value bits


def _storage_types(canonical: pl.LazyFrame) -> dict[str, tuple[pl.DataType, str]]:
    """The smallest storage types that hold every value of the data set.

    Ids become Int32 or Int64 (digit-only string ids too); price becomes Float32 when every
    value survives the round trip to the cent.
    """
    schema = canonical.collect_schema()
    ids = [c for c in ("user_id", "product_id", "category_id") if c in schema]
    aggs = []
    for col in ids:
        as_int = (
            pl.col(col) if schema[col].is_integer() else pl.col(col).str.to_integer(strict=False)
        )
        if schema[col] == pl.String:
            digits = pl.col(col).str.contains(r"^-?[0-9]+$").fill_null(True)
            aggs.append(
                (digits.all() & (as_int.null_count() == pl.col(col).null_count())).alias(
                    f"{col}:int"
                )
            )
        else:
            aggs.append(pl.lit(schema[col].is_integer()).alias(f"{col}:int"))
        aggs += [as_int.min().alias(f"{col}:min"), as_int.max().alias(f"{col}:max")]
    price = pl.col("price")
    exact32 = (price.cast(pl.Float32).cast(pl.Float64).round(2) == price.round(2)) & (
        price.abs() < 1e6
    )
    aggs.append(exact32.fill_null(True).all().alias("price:f32"))
    stats = canonical.select(aggs).collect().row(0, named=True)
    types: dict[str, tuple[pl.DataType, str]] = {}
    for col in ids:
        lo, hi = stats[f"{col}:min"], stats[f"{col}:max"]
        if not stats[f"{col}:int"] or lo is None:
            types[col] = (pl.String, "VARCHAR")
            continue
        types[col] = next(
            (t, name) for t, name, bits in _INT_TYPES if -(2**bits) <= lo and hi < 2**bits
        )
    types["price"] = (pl.Float32, "FLOAT") if stats["price:f32"] else (pl.Float64, "DOUBLE")
    return types


def optimize_events(
    canonical: Path, out_dir: Path, *, row_group_size: int = 122_880
) -> dict[str, str]:
    """Write canonical events as optimized, date-partitioned Parquet into ``out_dir``.

    ``canonical`` is the folder ingestion wrote (one file per ``event_date``); each day is
    read, cast to the smallest types that hold the whole data set (decided in one streaming
    scan first, so every day gets the same schema), sorted by (user_id, event_time) and
    written as zstd Parquet with dictionary-encoded strings and an Enum ``event_type``.
    Memory is bounded by one day.

    Returns the chosen storage type of each column.
    """
    days = sorted(Path(canonical).glob("event_date=*"))
    if not days:
        raise ValueError(
            f"no events to optimize in {canonical}: ingestion kept no rows (see the "
            "ingest_rejects table for why)"
        )
    types = _storage_types(pl.scan_parquet(canonical, hive_partitioning=True))
    casts = [pl.col(c).cast(t) for c, (t, _) in types.items()]
    out_dir.mkdir(parents=True, exist_ok=True)
    for day in days:
        target = out_dir / day.name
        target.mkdir()
        (
            pl.read_parquet(day, hive_partitioning=False)
            .with_columns(casts)
            .with_columns(pl.col("event_type").cast(pl.Enum(list(EVENT_TYPES))))
            .sort("user_id", "event_time")  # a user's events side by side: compresses, prunes
            .write_parquet(
                target / "part-0.parquet", compression="zstd", row_group_size=row_group_size
            )
        )
    return {c: name for c, (_, name) in types.items()}


def scan_events(events_dir: Path) -> pl.LazyFrame:
    """Lazily scan optimized events (hive partitions give ``event_date``)."""
    return pl.scan_parquet(events_dir / "**" / "*.parquet", hive_partitioning=True)


def size_report(
    source_files: list[Path],
    canonical: Path,
    events_dir: Path,
    *,
    sample_rows: int = 2_000_000,
) -> pl.DataFrame:
    """Bytes on disk and in memory, before and after optimization, per column and in total.

    In-memory sizes are measured with Polars on the first ``sample_rows`` rows (all of them for
    the sample data), before = canonical events as ingested (event types as text, ids and prices
    in 64 bits), after = the optimized
    types read back with ``event_type`` as an Enum and low-cardinality strings as Categorical.
    """
    before = (
        pl.scan_parquet(canonical, hive_partitioning=True)
        .head(sample_rows)
        .collect()
        .drop("event_date", strict=False)
        .with_columns(pl.col(pl.Enum).cast(pl.String))  # as the source gave it: text
    )
    after = (
        scan_events(events_dir)
        .head(sample_rows)
        .with_columns(
            pl.col("event_type").cast(pl.Enum(list(EVENT_TYPES))),
            pl.col("category_code", "brand").cast(pl.Categorical),
        )
        .collect()
    )
    rows = []
    for col in before.columns:
        b = before[col].estimated_size()
        a = after[col].estimated_size() if col in after.columns else 0
        rows.append({"item": f"memory: {col}", "before_bytes": b, "after_bytes": a})
    rows.append(
        {
            "item": "memory: total",
            "before_bytes": before.estimated_size(),
            "after_bytes": after.drop("event_date").estimated_size(),
        }
    )
    src_bytes = sum(Path(f).stat().st_size for f in source_files)
    parquet_bytes = sum(p.stat().st_size for p in events_dir.rglob("*.parquet"))
    rows.append(
        {
            "item": "disk: source files vs optimized Parquet",
            "before_bytes": src_bytes,
            "after_bytes": parquet_bytes,
        }
    )
    rows.append(
        {
            "item": "disk: canonical Parquet vs optimized Parquet",
            "before_bytes": sum(p.stat().st_size for p in Path(canonical).rglob("*.parquet")),
            "after_bytes": parquet_bytes,
        }
    )
    return pl.DataFrame(rows).with_columns(
        ratio=(pl.col("before_bytes") / pl.col("after_bytes").cast(pl.Float64)).round(2)
    )


# -- the star schema, as Ibis expressions ---------------------------------------------------
def dim_users(events: ibis.Table) -> ibis.Table:
    """One row per user: first/last seen, events, sessions, views, carts, purchases, revenue."""
    e = events
    is_buy = e.event_type == "purchase"
    return e.group_by("user_id").agg(
        first_seen=e.event_time.min(),
        last_seen=e.event_time.max(),
        events=e.count(),
        sessions=e.user_session.nunique(),
        views=(e.event_type == "view").sum(),
        carts=(e.event_type == "cart").sum(),
        purchases=is_buy.sum(),
        revenue=is_buy.ifelse(e.price.cast("float64"), 0.0).sum(),
    )


def dim_products(events: ibis.Table) -> ibis.Table:
    """One row per product: category, brand, latest price, views, carts, purchases, revenue."""
    e = events
    is_buy = e.event_type == "purchase"
    stats = e.group_by("product_id").agg(
        category_id=e.category_id.arbitrary(),
        category_code=e.category_code.max(),
        brand=e.brand.max(),
        latest_price=e.price.cast("float64").argmax(e.event_time),
        views=(e.event_type == "view").sum(),
        carts=(e.event_type == "cart").sum(),
        purchases=is_buy.sum(),
        revenue=is_buy.ifelse(e.price.cast("float64"), 0.0).sum(),
    )
    return stats


def fact_sessions(events: ibis.Table) -> ibis.Table:
    """One row per session: start, end, duration, events, products, cart/purchase, revenue."""
    e = events
    is_buy = e.event_type == "purchase"
    s = e.group_by("user_session").agg(
        user_id=e.user_id.min(),
        session_start=e.event_time.min(),
        session_end=e.event_time.max(),
        events=e.count(),
        unique_products=e.product_id.nunique(),
        has_cart=(e.event_type == "cart").any(),
        has_purchase=is_buy.any(),
        revenue=is_buy.ifelse(e.price.cast("float64"), 0.0).sum(),
    )
    return s.mutate(duration_s=(s.session_end.epoch_seconds() - s.session_start.epoch_seconds()))


def fact_daily_kpis(events: ibis.Table, sessions: ibis.Table) -> ibis.Table:
    """One row per day: events, DAU, sessions, carts, purchases, orders, revenue, conversion."""
    e = events
    is_buy = e.event_type == "purchase"
    daily = e.group_by("event_date").agg(
        events=e.count(),
        dau=e.user_id.nunique(),
        views=(e.event_type == "view").sum(),
        carts=(e.event_type == "cart").sum(),
        purchases=is_buy.sum(),
        buyers=is_buy.ifelse(e.user_id, ibis.null()).nunique(),
        revenue=is_buy.ifelse(e.price.cast("float64"), 0.0).sum(),
    )
    s = sessions.mutate(event_date=sessions.session_start.date())
    per_day = s.group_by("event_date").agg(sessions=s.count(), orders=s.has_purchase.sum())
    out = daily.join(per_day, "event_date", how="left").drop("event_date_right")
    return out.mutate(
        sessions=out.sessions.fill_null(0),
        orders=out.orders.fill_null(0),
        conversion=(out.orders.fill_null(0) / out.sessions.nullif(0)).fill_null(0.0),
    ).order_by("event_date")


def fact_funnel(events: ibis.Table) -> ibis.Table:
    """View -> cart -> purchase: distinct users and sessions per step, overall and per day."""
    e = events.filter(events.event_type.isin(["view", "cart", "purchase"]))
    order = ibis.cases((e.event_type == "view", 1), (e.event_type == "cart", 2), else_=3)
    e = e.mutate(step=e.event_type.cast("string"), step_order=order)
    overall = (
        e.group_by(["step", "step_order"])
        .agg(users=e.user_id.nunique(), sessions=e.user_session.nunique())
        .mutate(level=ibis.literal("overall"), event_date=ibis.null("date"))
    )
    daily = (
        e.group_by(["event_date", "step", "step_order"])
        .agg(users=e.user_id.nunique(), sessions=e.user_session.nunique())
        .mutate(level=ibis.literal("day"))
    )
    both = overall.select("level", "event_date", "step", "step_order", "users", "sessions").union(
        daily.select("level", "event_date", "step", "step_order", "users", "sessions")
    )
    w = ibis.window(group_by=["level", "event_date"], order_by="step_order")
    first = ibis.window(group_by=["level", "event_date"])
    return both.mutate(
        rate_from_previous=(both.users / both.users.lag().over(w)).fill_null(1.0),
        rate_from_first=both.users / both.users.max().over(first),
    ).order_by(["level", "event_date", "step_order"])


def star_schema(events: ibis.Table) -> dict[str, ibis.Table]:
    """All warehouse tables as Ibis expressions over canonical events."""
    sessions = fact_sessions(events)
    return {
        "dim_users": dim_users(events),
        "dim_products": dim_products(events),
        "fact_sessions": sessions,
        "fact_daily_kpis": fact_daily_kpis(events, sessions),
        "fact_funnel": fact_funnel(events),
    }


def build(
    warehouse_dir: Path, *, engine: str = "duckdb", memory_limit: str = "2GB"
) -> dict[str, float]:
    """Create the dims and facts in ``warehouse_dir`` from its ``events/``; seconds per table."""
    if engine != "duckdb":
        raise NotImplementedError(
            "engine 'spark' builds the same Ibis expressions on a SparkSession; it needs the "
            "pyspark extra (pip install -e '.[spark]'), which this environment does not install"
        )
    con = ibis.duckdb.connect(str(warehouse_dir / WAREHOUSE_FILE))
    try:
        con.raw_sql("SET TimeZone = 'UTC'")
        con.raw_sql(f"SET memory_limit = '{memory_limit}'")  # validated by the params model
        events = con.read_parquet(
            str(warehouse_dir / EVENTS_DIR / "**" / "*.parquet"),
            table_name="events",
            hive_partitioning=True,
        )
        timings = {}
        for name, expr in star_schema(events).items():
            t0 = time.perf_counter()
            con.create_table(name, expr, overwrite=True)
            timings[name] = round(time.perf_counter() - t0, 3)
        con.raw_sql("DROP VIEW IF EXISTS events")
        return timings
    finally:
        con.disconnect()


def connect(run: StageRun | Path, engine: str = "duckdb") -> ibis.BaseBackend:
    """Open a run's warehouse read-only, with ``events`` registered as a temporary view."""
    wdir = run.warehouse_dir if isinstance(run, StageRun) else Path(run)
    if engine != "duckdb":
        raise NotImplementedError(
            "engine 'spark' needs the pyspark extra (pip install -e '.[spark]'), which this "
            "environment does not install"
        )
    con = ibis.duckdb.connect(str(wdir / WAREHOUSE_FILE), read_only=True)
    con.raw_sql("SET TimeZone = 'UTC'")
    con.read_parquet(
        str(wdir / EVENTS_DIR / "**" / "*.parquet"), table_name="events", hive_partitioning=True
    )
    return con


def query_timings(con: ibis.BaseBackend, repeat: int = 3) -> pl.DataFrame:
    """Time the usual questions against the warehouse (best of ``repeat``)."""
    events = con.table("events")
    kpis = con.table("fact_daily_kpis")
    buys = events.filter(events.event_type == "purchase")
    questions = {
        "daily KPIs (fact_daily_kpis)": kpis.order_by("event_date"),
        "daily KPIs from raw events": fact_daily_kpis(events, fact_sessions(events)),
        "RFM base (per-user purchases)": buys.group_by("user_id").agg(
            last=buys.event_time.max(), orders=buys.user_session.nunique(), spend=buys.price.sum()
        ),
        "funnel (fact_funnel)": con.table("fact_funnel").filter(lambda t: t.level == "overall"),
        "top 10 categories by revenue": buys.group_by("category_code")
        .agg(revenue=buys.price.sum())
        .order_by(ibis.desc("revenue"))
        .limit(10),
    }
    rows = []
    for name, expr in questions.items():
        best, n = float("inf"), 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            n = expr.to_pyarrow().num_rows
            best = min(best, time.perf_counter() - t0)
        rows.append({"question": name, "rows": n, "seconds": round(best, 4)})
    return pl.DataFrame(rows)


def describe_sizes(sizes: pl.DataFrame) -> str:
    """One sentence on the storage savings (from :func:`size_report`)."""
    disk = sizes.filter(pl.col("item").str.starts_with("disk: source")).row(0, named=True)
    mem = sizes.filter(pl.col("item") == "memory: total").row(0, named=True)
    return (
        f"On disk the optimized Parquet takes {disk['after_bytes'] / 1e6:,.1f} MB against "
        f"{disk['before_bytes'] / 1e6:,.1f} MB of source files ({disk['ratio']:.1f}x smaller); "
        f"in memory the optimized types need {mem['after_bytes'] / 1e6:,.1f} MB instead of "
        f"{mem['before_bytes'] / 1e6:,.1f} MB ({mem['ratio']:.2f}x)."
    )


def describe_funnel(funnel_overall: pl.DataFrame) -> str:
    """One sentence on the overall funnel (``fact_funnel`` rows with level 'overall')."""
    f = {r["step"]: r for r in funnel_overall.iter_rows(named=True)}
    v, c, p = (f.get(s, {}).get("users", 0) for s in ("view", "cart", "purchase"))
    return (
        f"Of {v:,} users who viewed a product, {c:,} ({c / max(v, 1):.1%}) added one to a cart "
        f"and {p:,} ({p / max(v, 1):.1%}) bought."
    )
