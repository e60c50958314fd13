"""Canonical events -> optimized Parquet + a star-schema warehouse (stage 02_optimize).

Layout inside a run folder (``<run>/warehouse/``)::

    events/event_date=YYYY-MM-DD/*.parquet   optimized canonical events
    warehouse.duckdb                         dims and facts below

Optimized events: the files ingestion wrote in the layout of :mod:`customer_intel.layout`
(smallest integer ids, Float32 prices where exact, Enum event types, sorted by user and time
within each day, zstd, hive-partitioned by date), hard-linked here by :func:`optimize_events`.

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

import atexit
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import ibis
import polars as pl

from customer_intel import layout, progress
from customer_intel.runs import StageRun

WAREHOUSE_FILE = "warehouse.duckdb"
EVENTS_DIR = "events"
TABLES = ("dim_users", "dim_products", "fact_sessions", "fact_daily_kpis", "fact_funnel")
#: Share of the available memory a DuckDB connection may use when ``memory_limit`` is auto.
AUTO_MEMORY_SHARE = 0.2


def optimize_events(canonical: Path, out_dir: Path) -> dict[str, str]:
    """Publish the events ingestion wrote into ``out_dir`` (the warehouse's ``events/``).

    Ingestion already wrote each day in the optimized layout (:mod:`customer_intel.layout`:
    smallest types, Enum event types, sorted, zstd, one file per day), so the files are
    hard-linked, not rewritten (copied where a link is impossible). Returns the storage type
    of each id column and of ``price``.
    """
    days = sorted(Path(canonical).glob("event_date=*/*.parquet"))
    if not days:
        raise ValueError(
            f"no events to optimize in {canonical}: ingestion kept no rows (see the "
            "ingest_rejects table for why)"
        )
    for src in days:
        target = out_dir / src.parent.name / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, target)
        except OSError:  # another file system
            shutil.copy2(src, target)
    return layout.type_names(pl.scan_parquet(days[0]).collect_schema())


def scan_events(events_dir: Path) -> pl.LazyFrame:
    """Lazily scan optimized events (hive partitions give ``event_date``)."""
    return pl.scan_parquet(events_dir / "**" / "*.parquet", hive_partitioning=True)


def size_report(
    source_bytes: int, events_dir: Path, *, sample_rows: int = 2_000_000
) -> pl.DataFrame:
    """Bytes on disk and in memory, before and after optimization, per column and in total.

    On disk: the bytes of the source files read (``ingest_sources``; an archive member counts
    as extracted) against the optimized Parquet. In memory, measured with Polars
    on the first ``sample_rows`` events (all of them for the sample data): before = the same
    values in the types a plain reader uses (64-bit numbers, text labels; see
    :func:`customer_intel.layout.widen`), after = the stored types read back, with
    ``category_code`` and ``brand`` as Categorical.
    """
    after = (
        scan_events(events_dir)
        .head(sample_rows)
        .collect()
        .drop("event_date")
        .with_columns(pl.col("category_code", "brand").cast(pl.Categorical))
    )
    before = layout.widen(after)
    rows = [
        {
            "item": f"memory: {col}",
            "before_bytes": before[col].estimated_size(),
            "after_bytes": after[col].estimated_size(),
        }
        for col in before.columns
    ]
    rows.append(
        {
            "item": "memory: total",
            "before_bytes": before.estimated_size(),
            "after_bytes": after.estimated_size(),
        }
    )
    rows.append(
        {
            "item": "disk: source files vs optimized Parquet",
            "before_bytes": source_bytes,
            "after_bytes": sum(p.stat().st_size for p in events_dir.rglob("*.parquet")),
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


def memory_limit_bytes(limit: str = "auto") -> int:
    """Bytes of a DuckDB memory cap: ``auto`` is a fifth of the memory available now.

    A share of what the machine has, not a constant: 2 GB failed the 110M-event build, while
    the same cap is a third of a small CI machine. ``"6GB"``, ``"1.5GiB"`` are taken as written.
    """
    if limit == "auto":
        import psutil

        return max(int(psutil.virtual_memory().available * AUTO_MEMORY_SHARE), 512 * 2**20)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT])(i?)B\s*", limit)
    if not m:
        raise ValueError(f"memory limit {limit!r}: expected 'auto' or a size such as '4GB'")
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** ("KMGT".index(m.group(2)) + 1))


def configure_duckdb(con: ibis.BaseBackend, memory_limit: str = "auto") -> int:
    """Settings every DuckDB connection of the project uses; returns the memory cap in bytes.

    UTC session time zone; a memory cap (:func:`memory_limit_bytes`) with spilling to a private
    temporary folder beyond it; no insertion order kept (nothing here relies on it, and keeping
    it makes large aggregations and copies hold more in memory).
    """
    cap = memory_limit_bytes(memory_limit)
    spill = Path(tempfile.gettempdir()) / "customer_intel_duckdb" / str(os.getpid())
    if not spill.exists():
        spill.mkdir(parents=True)
        atexit.register(shutil.rmtree, spill, ignore_errors=True)
    con.raw_sql("SET TimeZone = 'UTC'")
    con.raw_sql(f"SET memory_limit = '{cap // 2**20}MiB'")
    con.raw_sql(f"SET temp_directory = '{spill}'")
    con.raw_sql("SET preserve_insertion_order = false")
    # in a notebook DuckDB draws an ipywidgets progress bar per query: our own progress lines
    # report long steps, in the runner's log too
    con.raw_sql("SET enable_progress_bar = false")
    return cap


def build(
    warehouse_dir: Path, *, engine: str = "duckdb", memory_limit: str = "auto"
) -> dict[str, float]:
    """Create the dims and facts in ``warehouse_dir`` from its ``events/``; seconds per table.

    Raises
    ------
    MemoryError
        DuckDB ran out of memory even with spilling; the message names the
        ``optimize.memory_limit`` parameter and a value to try.
    """
    if engine != "duckdb":
        raise NotImplementedError(
            "engine 'spark' builds the same Ibis expressions on a SparkSession; it needs the "
            "pyspark extra (pip install -e '.[spark]'), which this environment does not install"
        )
    con = ibis.duckdb.connect(str(warehouse_dir / WAREHOUSE_FILE))
    cap = configure_duckdb(con, memory_limit)
    name = "events"
    try:
        events = con.read_parquet(
            str(warehouse_dir / EVENTS_DIR / "**" / "*.parquet"),
            table_name="events",
            hive_partitioning=True,
        )
        timings = {}
        with progress.Progress("warehouse: tables", total=len(TABLES), unit="tables") as bar:
            for name, expr in star_schema(events).items():
                if name == "fact_daily_kpis":  # fact_sessions is built by now: read, not redo
                    expr = fact_daily_kpis(events, con.table("fact_sessions"))
                t0 = time.perf_counter()
                con.create_table(name, expr, overwrite=True)
                timings[name] = round(time.perf_counter() - t0, 3)
                bar.update(1, note=f"{name} {timings[name]:.1f} s")
        con.raw_sql("DROP VIEW IF EXISTS events")
        return timings
    except duckdb.OutOfMemoryException as e:
        raise MemoryError(out_of_memory_message(name, cap, e)) from None
    finally:
        con.disconnect()


def out_of_memory_message(table: str, cap: int, error: Exception) -> str:
    """What to do when a warehouse table does not fit under ``cap`` bytes, in words."""
    import psutil

    available = psutil.virtual_memory().available
    suggest = min(max(cap * 2, 2**30), int(available * 0.6))
    advice = (
        f"try -p optimize.memory_limit={suggest // 2**20}MiB"
        if suggest > cap * 1.2
        else "free memory on this machine (or use one with more), then run again"
    )
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return (
        f"building warehouse table {table!r} ran out of memory under the DuckDB cap of "
        f"{cap // 2**20:,} MiB (optimize.memory_limit), even spilling to disk; {advice}. "
        f"DuckDB said: {first[:300]}"
    )


def connect(
    run: StageRun | Path, engine: str = "duckdb", *, memory_limit: str = "auto"
) -> ibis.BaseBackend:
    """Open a run's warehouse read-only, with ``events`` registered as a temporary view.

    The connection is capped like the build (:func:`configure_duckdb`), so a stage's queries
    over the events spill to disk instead of taking the machine's memory.
    """
    wdir = run.warehouse_dir if isinstance(run, StageRun) else Path(run)
    if engine != "duckdb":
        raise NotImplementedError(
            "engine 'spark' needs the pyspark extra (pip install -e '.[spark]'), which this "
            "environment does not install"
        )
    con = ibis.duckdb.connect(str(wdir / WAREHOUSE_FILE), read_only=True)
    configure_duckdb(con, memory_limit)
    con.read_parquet(
        str(wdir / EVENTS_DIR / "**" / "*.parquet"), table_name="events", hive_partitioning=True
    )
    return con


def query_timings(con: ibis.BaseBackend, repeat: int = 3) -> pl.DataFrame:
    """Time the usual questions against the warehouse (best of ``repeat``; once if over 1 s)."""
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
        best, n, runs = float("inf"), 0, 0
        # a query that takes over a second is timed once: repeating it would only tell the
        # warm-cache difference, at the price of minutes on a large warehouse
        while runs < repeat and (runs == 0 or best < 1.0):
            t0 = time.perf_counter()
            n = expr.to_pyarrow().num_rows
            best = min(best, time.perf_counter() - t0)
            runs += 1
        rows.append({"question": name, "rows": n, "seconds": round(best, 4), "runs": runs})
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
