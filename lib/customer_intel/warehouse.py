"""Canonical events -> optimized Parquet + a star-schema warehouse (stage 02_optimize).

Layout inside a run folder (``<run>/warehouse/``)::

    events/event_date=YYYY-MM-DD/*.parquet   optimized canonical events
    warehouse.duckdb                         dims and facts below (engine duckdb)
    tables/<table>/part-*.parquet            the same dims and facts (engine spark: no DuckDB)

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
import datetime as dt
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path

import duckdb
import ibis
import polars as pl

from customer_intel import columns as C
from customer_intel import layout, paths, progress
from customer_intel.runs import StageRun, link_tree

WAREHOUSE_FILE = "warehouse.duckdb"
EVENTS_DIR = "events"
#: Folder of the Parquet dims and facts the Spark engine writes (one folder of parts a table).
PARQUET_TABLES_DIR = "tables"
#: Spark's scratch folder, beside the warehouse in the run folder (removed when Spark stops).
SPARK_SCRATCH = ".spark"
TABLES = ("dim_users", "dim_products", "fact_sessions", "fact_daily_kpis", "fact_funnel")
#: Share of the available memory a DuckDB connection may use when ``memory_limit`` is auto.
AUTO_MEMORY_SHARE = 0.15
#: Environment variable naming a file that holds the number of threads this process's DuckDB
#: connections should use now (unset, or no number in the file: one per core). The runner
#: writes each stage's share of the cores there as stages start and end, and the stage's
#: connections follow it (:func:`configure_duckdb`): two copies of propensity's feature query
#: (110M events, 1M users each, 2 cores) took 95 s side by side with two threads each, as long
#: as one after the other (2 x 48 s), and 78 s with one thread each; a stage left alone gets
#: every core back.
THREADS_FILE_ENV = "CUSTOMER_INTEL_ENGINE_THREADS_FILE"
#: each process's DuckDB spill folder (its pid follows), in the system's temporary folder
SPILL_DIR_PREFIX = "customer_intel_duckdb_"
#: Seconds between two reads of the threads file by the thread that follows it.
THREADS_POLL_SECONDS = 0.5
#: A timed question (:func:`query_timings`) slower than this is run once, not ``repeat``
#: times: at 20M events the raw-event daily KPIs took 0.42 s, three times 1.3 s of the stage,
#: which every later stage waits for; the facts answer in milliseconds either way.
TIME_ONCE_SECONDS = 0.25
#: Events read together by one query of the warehouse build's day parts (whole days).
DAY_CHUNK_ROWS = 4_000_000


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
        link_tree(src, out_dir / src.parent.name / src.name)
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
        .drop(C.EVENT_DATE)
        .with_columns(pl.col(C.CATEGORY_CODE, C.BRAND).cast(pl.Categorical))
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
#
# Facts that group events by day (daily KPIs, the daily funnel) or by session are computed from
# per-day parts: each part groups one day's events, so on DuckDB the build reads one day at a
# time and its hash tables (distinct products per session, distinct users per day and step)
# hold a day, not the data set. Parts merge exactly: sums, minima, maxima and "any" combine;
# a distinct count combines by addition only within one day, so the few sessions that cross
# midnight get their distinct products counted again over their own events. The same
# expressions over all events at once (one job per table, as Spark runs them) give the same
# tables: :func:`star_schema` is that definition, and a test holds the two builds equal.
STEPS = ("view", "cart", "purchase")


def event_day(t: ibis.Table) -> ibis.DateValue:
    """Each event's UTC date: the ``event_date`` day partition where ``t`` has it.

    DuckDB converts a time-zone-aware ``event_time`` to a date through ICU, one call per event:
    for the 10.5M events of 500k users of the 110M sample, counting each user's distinct days
    took 3.6 s that way and 0.6 s from the partition column. Tables without the partition
    (a frame read outside the warehouse) fall back to ``event_time``'s date.
    """
    if C.EVENT_DATE in t.columns:
        return t[C.EVENT_DATE].cast("date")
    return t[C.EVENT_TIME].date()


@ibis.udf.scalar.builtin(name="epoch")
def _duckdb_epoch(t: ibis.expr.datatypes.Timestamp(timezone="UTC")) -> float:  # type: ignore[valid-type]
    """DuckDB's own ``EPOCH`` of a time-zone-aware timestamp (ibis does not compile to it)."""


def epoch_seconds(t: ibis.TimestampValue) -> ibis.NumericValue:
    """Seconds since 1970-01-01 UTC of ``t``, with their fraction.

    Ibis compiles ``epoch_seconds()`` for DuckDB as ``EPOCH(CAST(t AS TIMESTAMP))``, and the
    cast of a time-zone-aware value goes through ICU: 1.7 s for 17.7M values against 0.19 s
    for ``EPOCH(t)`` itself, which is what DuckDB gets here (other engines keep Ibis's form).
    """
    if t.type().is_timestamp() and t.type().timezone and ibis.get_backend(t).name == "duckdb":
        return _duckdb_epoch(t)
    return t.epoch_seconds()


def _is(e: ibis.Table, event_type: str) -> ibis.BooleanValue:
    return e.event_type == event_type


def _revenue(e: ibis.Table) -> ibis.NumericValue:
    return _is(e, "purchase").ifelse(e.price.cast("float64"), 0.0)


def dim_users(events: ibis.Table) -> ibis.Table:
    """One row per user: first/last seen, events, sessions, views, carts, purchases, revenue."""
    e = events
    return e.group_by(C.USER_ID).agg(
        first_seen=e.event_time.min(),
        last_seen=e.event_time.max(),
        events=e.count(),
        sessions=e.user_session.nunique(),
        views=_is(e, "view").sum(),
        carts=_is(e, "cart").sum(),
        purchases=_is(e, "purchase").sum(),
        revenue=_revenue(e).sum(),
    )


def dim_products(events: ibis.Table) -> ibis.Table:
    """One row per product: category, brand, latest price, views, carts, purchases, revenue."""
    e = events
    return e.group_by(C.PRODUCT_ID).agg(
        category_id=e.category_id.arbitrary(),
        category_code=e.category_code.max(),
        brand=e.brand.max(),
        latest_price=e.price.cast("float64").argmax(e.event_time),
        views=_is(e, "view").sum(),
        carts=_is(e, "cart").sum(),
        purchases=_is(e, "purchase").sum(),
        revenue=_revenue(e).sum(),
    )


def session_parts(events: ibis.Table) -> ibis.Table:
    """Per day and session: the partial aggregates :func:`sessions_from_parts` merges.

    A session's distinct products are counted as the length of the distinct list of its
    products, not with ``COUNT(DISTINCT)``: sessions are short, and DuckDB's distinct
    aggregate keeps a hash table per group (this query took 2.2 s with it and 1.4 s with the
    list for a chunk of 3.7M events at 110M).
    """
    e = events
    return e.group_by([C.EVENT_DATE, C.USER_SESSION]).agg(
        user_id=e.user_id.min(),
        session_start=e.event_time.min(),
        session_end=e.event_time.max(),
        events=e.count(),
        unique_products=e.product_id.collect().unique().length().fill_null(0).cast("int64"),
        has_view=_is(e, "view").any(),
        has_cart=_is(e, "cart").any(),
        has_purchase=_is(e, "purchase").any(),
        revenue=_revenue(e).sum(),
    )


def sessions_from_parts(parts: ibis.Table, events: ibis.Table) -> ibis.Table:
    """``fact_sessions`` from :func:`session_parts` (the events recount multi-day sessions)."""
    p = parts
    s = p.group_by(C.USER_SESSION).agg(
        user_id=p.user_id.min(),
        session_start=p.session_start.min(),
        session_end=p.session_end.max(),
        events=p.events.sum(),
        products_by_day=p.unique_products.sum(),
        days=p.count(),
        has_view=p.has_view.any(),
        has_cart=p.has_cart.any(),
        has_purchase=p.has_purchase.any(),
        revenue=p.revenue.sum(),
    )
    multi = s.filter(s.days > 1).select(C.USER_SESSION)
    spanning = events.semi_join(multi, C.USER_SESSION)
    exact = spanning.group_by(C.USER_SESSION).agg(products_exact=spanning.product_id.nunique())
    s = s.left_join(exact, C.USER_SESSION).drop("user_session_right")
    return s.select(
        C.USER_SESSION,
        C.USER_ID,
        "session_start",
        "session_end",
        duration_s=s.session_end.epoch_seconds() - s.session_start.epoch_seconds(),
        events=s.events,
        unique_products=s.products_exact.fill_null(s.products_by_day),
        has_view=s.has_view,
        has_cart=s.has_cart,
        has_purchase=s.has_purchase,
        revenue=s.revenue,
    )


def fact_sessions(events: ibis.Table) -> ibis.Table:
    """One row per session: start, end, duration, events, products, view/cart/purchase, revenue."""
    return sessions_from_parts(session_parts(events), events)


def daily_parts(events: ibis.Table) -> ibis.Table:
    """Per day: events, DAU, views, carts, purchases, buyers, revenue (exact within the day)."""
    e = events
    return e.group_by(C.EVENT_DATE).agg(
        events=e.count(),
        dau=e.user_id.nunique(),
        views=_is(e, "view").sum(),
        carts=_is(e, "cart").sum(),
        purchases=_is(e, "purchase").sum(),
        buyers=_is(e, "purchase").ifelse(e.user_id, ibis.null()).nunique(),
        revenue=_revenue(e).sum(),
    )


def fact_daily_kpis(daily: ibis.Table, sessions: ibis.Table) -> ibis.Table:
    """One row per day: the day's counts, sessions (by start day), orders, conversion."""
    s = sessions.mutate(event_date=sessions.session_start.date())
    per_day = s.group_by(C.EVENT_DATE).agg(sessions=s.count(), orders=s.has_purchase.sum())
    out = daily.join(per_day, C.EVENT_DATE, how="left").drop("event_date_right")
    return out.mutate(
        sessions=out.sessions.fill_null(0),
        orders=out.orders.fill_null(0),
        conversion=(out.orders.fill_null(0) / out.sessions.nullif(0)).fill_null(0.0),
    ).order_by(C.EVENT_DATE)


def funnel_day_parts(events: ibis.Table) -> ibis.Table:
    """Per day and funnel step: distinct users and sessions reaching it."""
    e = events.filter(events.event_type.isin(list(STEPS)))
    e = e.mutate(step=e.event_type.cast("string"))
    return e.group_by([C.EVENT_DATE, "step"]).agg(
        users=e.user_id.nunique(), sessions=e.user_session.nunique()
    )


def fact_funnel(day_parts: ibis.Table, users: ibis.Table, sessions: ibis.Table) -> ibis.Table:
    """View -> cart -> purchase: distinct users and sessions per step, overall and per day.

    The overall level counts users from ``dim_users`` and sessions from ``fact_sessions`` (a
    user or session reaches a step if it has one such event), the daily level comes from
    :func:`funnel_day_parts`.
    """
    count = {"view": "views", "cart": "carts", "purchase": "purchases"}
    totals = users.aggregate(**{f"u_{s}": (users[count[s]] > 0).sum() for s in STEPS}).cross_join(
        sessions.aggregate(**{f"s_{s}": sessions[f"has_{s}"].sum() for s in STEPS})
    )
    overall = [
        totals.select(step=ibis.literal(s), users=totals[f"u_{s}"], sessions=totals[f"s_{s}"])
        for s in STEPS
    ]
    order = ibis.cases(*[(ibis._.step == s, i + 1) for i, s in enumerate(STEPS)])
    both = (
        ibis.union(*overall)
        .mutate(level=ibis.literal("overall"), event_date=ibis.null("date"))
        .select("level", C.EVENT_DATE, "step", "users", "sessions")
        .union(
            day_parts.mutate(level=ibis.literal("day")).select(
                "level", C.EVENT_DATE, "step", "users", "sessions"
            )
        )
    )
    both = both.mutate(step_order=order).select(
        "level", C.EVENT_DATE, "step", "step_order", "users", "sessions"
    )
    w = ibis.window(group_by=["level", C.EVENT_DATE], order_by="step_order")
    first = ibis.window(group_by=["level", C.EVENT_DATE])
    return both.mutate(
        rate_from_previous=(both.users / both.users.lag().over(w)).fill_null(1.0),
        rate_from_first=both.users / both.users.max().over(first),
    ).order_by(["level", C.EVENT_DATE, "step_order"])


def star_schema(events: ibis.Table) -> dict[str, ibis.Table]:
    """All warehouse tables as Ibis expressions over canonical events, in build order."""
    users = dim_users(events)
    sessions = fact_sessions(events)
    return {
        "dim_users": users,
        "dim_products": dim_products(events),
        "fact_sessions": sessions,
        "fact_daily_kpis": fact_daily_kpis(daily_parts(events), sessions),
        "fact_funnel": fact_funnel(funnel_day_parts(events), users, sessions),
    }


def memory_limit_bytes(limit: str = "auto") -> int:
    """Bytes of a DuckDB memory cap: ``auto`` is 15% of the memory available now.

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
    it makes large aggregations and copies hold more in memory); as many threads as the file
    :data:`THREADS_FILE_ENV` names says, now and whenever it changes.
    """
    cap = memory_limit_bytes(memory_limit)
    spill = Path(tempfile.gettempdir()) / f"{SPILL_DIR_PREFIX}{os.getpid()}"
    if not spill.exists():
        paths.remove_abandoned_temp_dirs(SPILL_DIR_PREFIX)
        spill.mkdir(parents=True)
        paths.claim_temp_dir(spill, os.getpid())
        atexit.register(shutil.rmtree, spill, ignore_errors=True)
    con.raw_sql("SET TimeZone = 'UTC'")
    con.raw_sql(f"SET memory_limit = '{cap // 2**20}MiB'")
    con.raw_sql(f"SET temp_directory = '{spill}'")
    con.raw_sql("SET preserve_insertion_order = false")
    if os.environ.get(THREADS_FILE_ENV):
        threads = engine_threads()
        if threads:
            con.raw_sql(f"SET threads = {threads}")
        _follow_threads(con.con, threads)
    # in a notebook DuckDB draws an ipywidgets progress bar per query: our own progress lines
    # report long steps, in the runner's log too
    con.raw_sql("SET enable_progress_bar = false")
    return cap


def engine_threads() -> int | None:
    """The threads the file :data:`THREADS_FILE_ENV` names asks for now; None: no such number."""
    path = os.environ.get(THREADS_FILE_ENV)
    try:
        text = Path(path).read_text().strip() if path else ""
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


#: The DuckDB connections that follow the threads file, with the thread count each has.
_FOLLOWING: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, int | None] = (
    weakref.WeakKeyDictionary()
)
_FOLLOWER: list[threading.Thread] = []
_FOLLOWER_LOCK = threading.Lock()


def _follow_threads(con: duckdb.DuckDBPyConnection, threads: int | None) -> None:
    """Keep ``con`` (set to ``threads``) at the count of the threads file while it is open.

    A daemon thread of the process reads the file every :data:`THREADS_POLL_SECONDS` and sets
    the new count on each open connection through a cursor of its own (a running query goes
    on; DuckDB's later tasks use the new count). Closed or collected connections drop out.
    """
    with _FOLLOWER_LOCK:
        _FOLLOWING[con] = threads
        if not _FOLLOWER:
            _FOLLOWER.append(threading.Thread(target=_follow, name="duckdb-threads", daemon=True))
            _FOLLOWER[0].start()


def _follow() -> None:
    while True:
        time.sleep(THREADS_POLL_SECONDS)
        threads = engine_threads()
        if threads is None:
            continue
        with _FOLLOWER_LOCK:
            behind = [c for c, n in _FOLLOWING.items() if n != threads]
        for con in behind:
            try:
                cursor = con.cursor()
                try:
                    cursor.execute(f"SET threads = {threads}")
                finally:
                    cursor.close()
            except duckdb.Error:  # closed: it no longer needs threads
                with _FOLLOWER_LOCK:
                    _FOLLOWING.pop(con, None)
                continue
            with _FOLLOWER_LOCK:
                if con in _FOLLOWING:
                    _FOLLOWING[con] = threads


def build(
    warehouse_dir: Path,
    *,
    engine: str = "duckdb",
    memory_limit: str = "auto",
    spark: dict | None = None,
) -> dict[str, float]:
    """Create the dims and facts in ``warehouse_dir`` from its ``events/``; seconds per table.

    ``engine`` 'spark' builds them on a SparkSession made from ``spark`` (the params section)
    as Parquet under ``tables/`` (:func:`build_spark`); ``memory_limit`` is DuckDB's.

    Raises
    ------
    MemoryError
        DuckDB ran out of memory even with spilling; the message names the
        ``optimize.memory_limit`` parameter and a value to try.
    """
    if engine == "spark":
        return build_spark(warehouse_dir, spark)
    con = ibis.duckdb.connect(str(warehouse_dir / WAREHOUSE_FILE))
    cap = configure_duckdb(con, memory_limit)
    days = sorted((warehouse_dir / EVENTS_DIR).glob("event_date=*"))
    name = "events"
    try:
        events = register_events(con, warehouse_dir / EVENTS_DIR)
        timings = {"day parts": _build_day_parts(con, days)}
        tables = {
            "dim_users": lambda: dim_users(events),
            "dim_products": lambda: dim_products(events),
            "fact_sessions": lambda: sessions_from_parts(con.table("_session_parts"), events),
            "fact_daily_kpis": lambda: fact_daily_kpis(
                con.table("_daily_parts"), con.table("fact_sessions")
            ),
            "fact_funnel": lambda: fact_funnel(
                con.table("_funnel_day_parts"), con.table("dim_users"), con.table("fact_sessions")
            ),
        }
        with progress.Progress("warehouse: tables", total=len(tables), unit="tables") as bar:
            for name, expr in tables.items():
                t0 = time.perf_counter()
                con.create_table(name, expr(), overwrite=True)
                timings[name] = round(time.perf_counter() - t0, 3)
                bar.update(1, note=f"{name} {timings[name]:.1f} s")
        for temp in ("_session_parts", "_daily_parts", "_funnel_day_parts"):
            con.drop_table(temp, force=True)
        con.raw_sql("DROP VIEW IF EXISTS events")
        con.raw_sql("DROP VIEW IF EXISTS all_events")
        return timings
    except duckdb.OutOfMemoryException as e:
        raise MemoryError(out_of_memory_message(name, cap, e)) from None
    finally:
        con.disconnect()


def build_spark(warehouse_dir: Path, spark: dict | None = None) -> dict[str, float]:
    """The warehouse on Spark: each table one Spark job over all events, written as Parquet.

    The definitions are :func:`star_schema`'s (no per-day parts: Spark spreads one job over
    its executors and spills by itself, and keeps no temporary tables between jobs the way
    DuckDB does). ``dim_users`` and ``fact_sessions`` are read back from their Parquet for
    the facts built on them, so no table is computed twice. The session stays for the stage
    (its JVM keeps its scratch folder); the backend's ``disconnect`` ends it.
    """
    from customer_intel import spark as sparkmod

    out = warehouse_dir / PARQUET_TABLES_DIR
    con = sparkmod.backend(spark, _spark_scratch(warehouse_dir))
    # the session stays for the stage's connect(); the backend's disconnect() ends it
    all_events = con.read_parquet(str(warehouse_dir / EVENTS_DIR), table_name="all_events")
    events = all_events.filter(all_events.user_id.notnull())  # as the ``events`` view

    def built(name: str) -> ibis.Table:
        return con.read_parquet(str(out / name), table_name=name)

    tables = {
        "dim_users": lambda: dim_users(events),
        "dim_products": lambda: dim_products(events),
        "fact_sessions": lambda: fact_sessions(events),
        "fact_daily_kpis": lambda: fact_daily_kpis(daily_parts(events), built("fact_sessions")),
        "fact_funnel": lambda: fact_funnel(
            funnel_day_parts(events), built("dim_users"), built("fact_sessions")
        ),
    }
    timings: dict[str, float] = {}
    with progress.Progress("warehouse (spark): tables", total=len(tables), unit="tables") as bar:
        for name, expr in tables.items():
            t0 = time.perf_counter()
            con.to_parquet(expr(), out / name, mode="overwrite")
            timings[name] = round(time.perf_counter() - t0, 3)
            bar.update(1, note=f"{name} {timings[name]:.1f} s")
    return timings


def _spark_scratch(wdir: Path) -> Path:
    """Spark's scratch folder for a warehouse: beside it, in the run folder.

    A warehouse being written sits in a temporary folder (``.warehouse.*.tmp``) that is
    removed once renamed into place; the JVM keeps the scratch folder it started with for the
    whole stage, so the scratch goes beside that temporary folder, not inside it.
    """
    parent = Path(wdir).parent
    return (parent.parent if parent.name.endswith(".tmp") else parent) / SPARK_SCRATCH


def _day_chunks(days: list[Path], rows_per_chunk: int) -> list[list[Path]]:
    """Consecutive days grouped so that a group holds about ``rows_per_chunk`` events.

    A query per day costs tens of milliseconds of fixed overhead: 61 small days of a 1M-event
    sample took 6 s one by one and 1 s together. Large days still go one at a time.
    """
    import pyarrow.parquet as pq

    chunks: list[list[Path]] = []
    rows = 0
    for day in days:
        n = sum(pq.ParquetFile(f).metadata.num_rows for f in day.glob("*.parquet"))
        if chunks and rows + n <= rows_per_chunk:
            chunks[-1].append(day)
            rows += n
        else:
            chunks.append([day])
            rows = n
    return chunks


def _build_day_parts(
    con: ibis.BaseBackend, days: list[Path], rows_per_chunk: int | None = None
) -> float:
    """The per-day parts of the facts, a few days' events at a time; seconds taken."""
    t0 = time.perf_counter()
    parts = {
        "_session_parts": session_parts,
        "_daily_parts": daily_parts,
        "_funnel_day_parts": funnel_day_parts,
    }
    with progress.Progress("warehouse: day parts", total=len(days), unit="days") as bar:
        for i, chunk in enumerate(_day_chunks(days, rows_per_chunk or DAY_CHUNK_ROWS)):
            ev = con.read_parquet(
                [str(day / "*.parquet") for day in chunk],
                table_name="_day_events",
                hive_partitioning=True,
            )
            ev = ev.filter(ev.user_id.notnull())  # as the ``events`` view
            for table, part in parts.items():
                if i == 0:
                    con.create_table(table, part(ev), temp=True, overwrite=True)
                else:
                    con.insert(table, part(ev))
            bar.update(len(chunk))
    con.raw_sql("DROP VIEW IF EXISTS _day_events")
    return round(time.perf_counter() - t0, 3)


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
    run: StageRun | Path,
    engine: str = "duckdb",
    *,
    memory_limit: str = "auto",
    spark: dict | None = None,
) -> ibis.BaseBackend:
    """Open a run's warehouse read-only, with ``events`` registered as a temporary view.

    The connection is capped like the build (:func:`configure_duckdb`), so a stage's queries
    over the events spill to disk instead of taking the machine's memory. With ``engine``
    'spark' it is an Ibis PySpark backend on a session made from ``spark`` (the params
    section; started here, stopped by the backend's ``disconnect``), with the same names:
    ``all_events``, ``events`` and the tables of the Parquet warehouse (:func:`build_spark`).
    """
    wdir = run.warehouse_dir if isinstance(run, StageRun) else Path(run)
    if engine == "spark":
        return connect_spark(wdir, spark)
    con = ibis.duckdb.connect(str(wdir / WAREHOUSE_FILE), read_only=True)
    configure_duckdb(con, memory_limit)
    register_events(con, wdir / EVENTS_DIR)
    return con


def connect_spark(wdir: Path, spark: dict | None = None) -> ibis.BaseBackend:
    """:func:`connect` on Spark: temporary views over the events and the Parquet tables."""
    from customer_intel import spark as sparkmod

    con = sparkmod.backend(spark, _spark_scratch(wdir))
    all_events = con.read_parquet(str(wdir / EVENTS_DIR), table_name="all_events")
    con.create_view("events", all_events.filter(all_events.user_id.notnull()), overwrite=True)
    for name in TABLES:
        if (wdir / PARQUET_TABLES_DIR / name).exists():
            con.read_parquet(str(wdir / PARQUET_TABLES_DIR / name), table_name=name)
    return con


def connect_parquet(wdir: Path, memory_limit: str = "auto") -> ibis.BaseBackend:
    """An in-memory DuckDB over the Parquet warehouse a Spark build wrote (:func:`build_spark`).

    The same names as :func:`connect`: ``all_events``, ``events`` and the tables under
    ``tables/<table>/``, for the DuckDB SQL of a stage whose outputs are small aggregates.
    """
    con = ibis.duckdb.connect()
    configure_duckdb(con, memory_limit)
    register_events(con, wdir / EVENTS_DIR)
    for name in TABLES:
        parts = wdir / PARQUET_TABLES_DIR / name
        if parts.is_dir():
            con.read_parquet(str(parts / "*.parquet"), table_name=name)
    return con


def last_event_time(events: ibis.Table) -> dt.datetime | None:
    """The latest ``event_time`` of ``events``; None when it has no events.

    With an ``event_date`` column (the warehouse's day partition: each event's UTC date) only
    the last day's times are read: at 110M events 0.9 s instead of 2.5 s for the maximum
    over every event, asked by four stages.
    """
    t = events
    if C.EVENT_DATE in t.columns:
        day = t[C.EVENT_DATE].max().to_pyarrow().as_py()
        if day is None:
            return None
        t = t.filter(t[C.EVENT_DATE] == day)
    return t[C.EVENT_TIME].max().to_pyarrow().as_py()


def register_events(con: ibis.BaseBackend, events_dir: Path) -> ibis.Table:
    """Views over the event Parquet: ``all_events``, and ``events`` = the rows with a user.

    Rows without a user id exist only when ingest ran with ``require_user_id: false``; they
    belong in baskets (``all_events``) and in no per-customer table, so every stage reads
    ``events`` unless it forms baskets.
    """
    con.read_parquet(
        str(events_dir / "**" / "*.parquet"), table_name="all_events", hive_partitioning=True
    )
    con.raw_sql(
        "CREATE OR REPLACE TEMP VIEW events AS SELECT * FROM all_events WHERE user_id IS NOT NULL"
    )
    return con.table("events")


def query_timings(con: ibis.BaseBackend, repeat: int = 3, days: int = 7) -> pl.DataFrame:
    """Time the usual questions against the warehouse (best of ``repeat``; once if slow).

    Each question reads the last ``days`` days of events (0: all), from the facts and from the
    raw events alike, so the comparison is fair and its cost does not grow with the history.
    """
    events = con.table("events")
    kpis = con.table("fact_daily_kpis")
    span = "all days"
    if days:
        last = events.event_date.max().to_pyarrow().as_py()
        if last is not None:
            first = ibis.literal(last - dt.timedelta(days=days - 1))
            events = events.filter(events.event_date >= first)
            kpis = kpis.filter(kpis.event_date >= first)
            span = f"last {days} day{'s' if days > 1 else ''}"
    buys = events.filter(events.event_type == "purchase")
    questions = {
        f"daily KPIs (fact_daily_kpis, {span})": kpis.order_by(C.EVENT_DATE),
        f"daily KPIs from raw events ({span})": fact_daily_kpis(
            daily_parts(events), fact_sessions(events)
        ),
        f"RFM base (per-user purchases, {span})": buys.group_by(C.USER_ID).agg(
            last=buys.event_time.max(), orders=buys.user_session.nunique(), spend=buys.price.sum()
        ),
        "funnel (fact_funnel)": con.table("fact_funnel").filter(lambda t: t.level == "overall"),
        f"top 10 categories by revenue ({span})": buys.group_by(C.CATEGORY_CODE)
        .agg(revenue=buys.price.sum())
        .order_by(ibis.desc("revenue"))
        .limit(10),
    }
    rows = []
    for name, expr in questions.items():
        best, n, runs = float("inf"), 0, 0
        # a query slower than TIME_ONCE_SECONDS is timed once: repeating it would only tell
        # the warm-cache difference, at the price of seconds on the run's critical path
        while runs < repeat and (runs == 0 or best < TIME_ONCE_SECONDS):
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
    if disk["ratio"] >= 1:
        change = f"{disk['ratio']:.1f}x smaller"
    else:  # tiny inputs: Parquet's per-file overhead outweighs compression
        change = f"{1 / disk['ratio']:.1f}x larger, as small files are"
    return (
        f"On disk the optimized Parquet takes {disk['after_bytes'] / 1e6:,.1f} MB against "
        f"{disk['before_bytes'] / 1e6:,.1f} MB of source files ({change}); "
        f"in memory the optimized types need {mem['after_bytes'] / 1e6:,.1f} MB instead of "
        f"{mem['before_bytes'] / 1e6:,.1f} MB ({mem['ratio']:.2f}x)."
    )


def describe_funnel(funnel_overall: pl.DataFrame) -> str:
    """One sentence on the overall funnel (``fact_funnel`` rows with level 'overall').

    Only the steps the data has are described, and a share is given only against a step that
    has users (an order table has purchases only: no views to divide by).
    """
    f = {r["step"]: r for r in funnel_overall.iter_rows(named=True)}
    v, c, p = (int(f.get(s, {}).get("users", 0) or 0) for s in ("view", "cart", "purchase"))
    if v:
        said = [f"{c:,} ({c / v:.1%}) added one to a cart"] if c else []
        said.append(f"{p:,} ({p / v:.1%}) bought" if p <= v else f"{p:,} bought")
        text = f"Of {v:,} users who viewed a product, " + " and ".join(said) + "."
        if c and p:
            text += f" Buyers are {p / c:.0%} as many as the users who added to a cart."
        return text
    if not (c or p):
        return "The data has no view, cart or purchase events."
    steps = [f"{c:,} users added to a cart"] if c else []
    steps.append(f"{p:,} users bought")
    return "The data has no view events (an order table, for example): " + " and ".join(steps) + "."
