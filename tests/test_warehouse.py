"""The warehouse: every fact table equals a plain Polars computation on generated data."""

from __future__ import annotations

import os

import ibis
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from customer_intel import ingest, paths, synth, warehouse
from customer_intel.params.ingest import IngestParams


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    root = tmp_path_factory.mktemp("wh")
    sample = synth.generate(root / "sample", 20_000, seed=9)
    canonical = root / "events_canonical.parquet"
    ingest.ingest(
        str(sample.events_path),
        IngestParams(),
        events_out=canonical,
        rejects_out=root / "rejects.parquet",
    )
    wdir = root / "warehouse"
    types = warehouse.optimize_events(canonical, wdir / warehouse.EVENTS_DIR)
    warehouse.build(wdir)
    con = warehouse.connect(wdir)
    events = warehouse.scan_events(wdir / warehouse.EVENTS_DIR).collect()
    yield {
        "con": con,
        "events": events,
        "types": types,
        "canonical": canonical,
        "dir": wdir,
        "sample": sample,
    }
    con.disconnect()


def _table(wh, name, sort):
    return wh["con"].table(name).to_polars().sort(sort)


def test_optimized_events_keep_every_row_and_value(wh):
    # the plain computation: the generated CSV parsed by Polars, exact duplicates dropped
    source = (
        pl.read_csv(wh["sample"].events_path, infer_schema=False)
        .unique()
        .select(
            pl.col("event_time").str.to_datetime("%Y-%m-%d %H:%M:%S UTC", time_zone="UTC"),
            pl.col("user_id", "product_id").cast(pl.Int64),
            (pl.col("price").cast(pl.Float64) * 100).round().cast(pl.Int64),
        )
        .sort(pl.all())
    )
    ev = wh["events"]
    assert wh["types"] == {
        "user_id": "INTEGER",
        "product_id": "INTEGER",
        "category_id": "BIGINT",
        "price": "FLOAT",
    }
    assert ev.schema["user_id"] == pl.Int32 and ev.schema["price"] == pl.Float32
    assert ev.schema["event_type"] == pl.Enum(["view", "cart", "remove_from_cart", "purchase"])
    assert ev["event_date"].to_list() == ev["event_time"].dt.date().to_list()
    stored = ev.select(
        "event_time",
        pl.col("user_id", "product_id").cast(pl.Int64),
        (pl.col("price").cast(pl.Float64) * 100).round().cast(pl.Int64),
    ).sort(pl.all())
    assert_frame_equal(stored, source)
    files = sorted((wh["dir"] / warehouse.EVENTS_DIR).glob("event_date=*/*.parquet"))
    assert len(files) == ev["event_date"].n_unique()
    for f in files:  # each day sorted by user and time, and not a second copy of ingest's file
        day = pl.read_parquet(f, hive_partitioning=False)
        assert day.select("user_id", "event_time").equals(
            day.select("user_id", "event_time").sort("user_id", "event_time")
        )
        assert os.path.samefile(f, wh["canonical"] / f.parent.name / f.name)


def test_dim_users(wh):
    e = wh["events"]
    buy = pl.col("event_type") == "purchase"
    expected = (
        e.group_by("user_id")
        .agg(
            first_seen=pl.col("event_time").min(),
            last_seen=pl.col("event_time").max(),
            events=pl.len().cast(pl.Int64),
            sessions=pl.col("user_session").n_unique().cast(pl.Int64),
            views=(pl.col("event_type") == "view").sum().cast(pl.Int64),
            carts=(pl.col("event_type") == "cart").sum().cast(pl.Int64),
            purchases=buy.sum().cast(pl.Int64),
            revenue=pl.when(buy).then(pl.col("price").cast(pl.Float64)).otherwise(0.0).sum(),
        )
        .sort("user_id")
    )
    got = _table(wh, "dim_users", "user_id").select(expected.columns)
    assert_frame_equal(got, expected, check_dtypes=False, rel_tol=1e-9)


def test_dim_products(wh):
    e = wh["events"]
    buy = pl.col("event_type") == "purchase"
    expected = (
        e.sort("event_time")
        .group_by("product_id")
        .agg(
            latest_price=pl.col("price").cast(pl.Float64).last(),
            views=(pl.col("event_type") == "view").sum().cast(pl.Int64),
            purchases=buy.sum().cast(pl.Int64),
            revenue=pl.when(buy).then(pl.col("price").cast(pl.Float64)).otherwise(0.0).sum(),
        )
        .sort("product_id")
    )
    got = _table(wh, "dim_products", "product_id")
    assert_frame_equal(
        got.select(expected.columns).drop("latest_price"),
        expected.drop("latest_price"),
        check_dtypes=False,
        rel_tol=1e-9,
    )
    # latest price: the price at the product's last event (ties broken arbitrarily, so compare sets)
    last = e.filter(pl.col("event_time") == pl.col("event_time").max().over("product_id"))
    allowed = last.group_by("product_id").agg(pl.col("price").cast(pl.Float64).unique().alias("ok"))
    joined = got.join(allowed, on="product_id")
    assert joined.select(pl.col("latest_price").is_in(pl.col("ok")).all()).item()


def test_fact_sessions(wh):
    e = wh["events"]
    buy = pl.col("event_type") == "purchase"
    expected = (
        e.group_by("user_session")
        .agg(
            user_id=pl.col("user_id").min(),
            session_start=pl.col("event_time").min(),
            session_end=pl.col("event_time").max(),
            events=pl.len().cast(pl.Int64),
            unique_products=pl.col("product_id").n_unique().cast(pl.Int64),
            has_cart=(pl.col("event_type") == "cart").any(),
            has_purchase=buy.any(),
            revenue=pl.when(buy).then(pl.col("price").cast(pl.Float64)).otherwise(0.0).sum(),
        )
        .with_columns(
            duration_s=(pl.col("session_end") - pl.col("session_start")).dt.total_seconds()
        )
        .sort("user_session")
    )
    got = _table(wh, "fact_sessions", "user_session").select(expected.columns)
    assert_frame_equal(got, expected, check_dtypes=False, rel_tol=1e-9)


def test_fact_daily_kpis(wh):
    e = wh["events"]
    buy = pl.col("event_type") == "purchase"
    daily = e.group_by("event_date").agg(
        events=pl.len(),
        dau=pl.col("user_id").n_unique(),
        views=(pl.col("event_type") == "view").sum(),
        carts=(pl.col("event_type") == "cart").sum(),
        purchases=buy.sum(),
        buyers=pl.col("user_id").filter(buy).n_unique(),
        revenue=pl.when(buy).then(pl.col("price").cast(pl.Float64)).otherwise(0.0).sum(),
    )
    sessions = (
        e.group_by("user_session")
        .agg(start=pl.col("event_time").min(), has_purchase=buy.any())
        .group_by(pl.col("start").dt.date().alias("event_date"))
        .agg(sessions=pl.len(), orders=pl.col("has_purchase").sum())
    )
    expected = (
        daily.join(sessions, on="event_date", how="left")
        .fill_null(0)
        .with_columns(conversion=pl.col("orders") / pl.col("sessions"))
        .sort("event_date")
    )
    got = _table(wh, "fact_daily_kpis", "event_date").select(expected.columns)
    assert_frame_equal(got, expected, check_dtypes=False, rel_tol=1e-9)


def test_fact_funnel(wh):
    e = wh["events"]
    got = _table(wh, "fact_funnel", ["level", "event_date", "step_order"])
    overall = got.filter(pl.col("level") == "overall")
    for step in ("view", "cart", "purchase"):
        users = e.filter(pl.col("event_type") == step)["user_id"].n_unique()
        sessions = e.filter(pl.col("event_type") == step)["user_session"].n_unique()
        row = overall.filter(pl.col("step") == step).row(0, named=True)
        assert (row["users"], row["sessions"]) == (users, sessions)
    v, c, p = overall.sort("step_order")["users"].to_list()
    assert overall.sort("step_order")["rate_from_previous"].to_list() == pytest.approx(
        [1.0, c / v, p / c]
    )
    day = e["event_date"].min()
    first_day = got.filter((pl.col("level") == "day") & (pl.col("event_date") == day))
    assert (
        first_day.filter(pl.col("step") == "view")["users"].item()
        == e.filter((pl.col("event_date") == day) & (pl.col("event_type") == "view"))[
            "user_id"
        ].n_unique()
    )


def test_read_only_connection_does_not_block_a_second_reader(wh):
    other = warehouse.connect(wh["dir"])
    assert other.table("dim_users").count().to_pyarrow().as_py() > 0
    other.disconnect()


def test_sizes_and_timings(wh, tmp_path):
    source_bytes = wh["sample"].events_path.stat().st_size
    sizes = warehouse.size_report(source_bytes, wh["dir"] / warehouse.EVENTS_DIR)
    disk = sizes.filter(pl.col("item").str.starts_with("disk: source")).row(0, named=True)
    assert disk["ratio"] > 3  # CSV -> zstd Parquet
    mem = sizes.filter(pl.col("item") == "memory: event_type").row(0, named=True)
    assert mem["after_bytes"] < mem["before_bytes"] / 3  # enum instead of strings
    assert "x smaller" in warehouse.describe_sizes(sizes)
    timings = warehouse.query_timings(wh["con"], repeat=1)
    assert timings.height == 5 and (timings["seconds"] > 0).all()
    # the questions read the last 7 days: the raw-event answer has one row per such day
    days = dict(zip(timings["question"], timings["rows"], strict=True))
    assert days["daily KPIs from raw events (last 7 days)"] == 7
    assert days["daily KPIs (fact_daily_kpis, last 7 days)"] == 7
    every = warehouse.query_timings(wh["con"], repeat=1, days=0)
    n_days = wh["con"].table("fact_daily_kpis").count().to_pyarrow().as_py()
    assert (
        dict(zip(every["question"], every["rows"], strict=True))[
            "daily KPIs from raw events (all days)"
        ]
        == n_days
        > 7
    )


def test_a_slow_timed_question_runs_once_and_a_quick_one_repeat_times(wh, monkeypatch):
    monkeypatch.setattr(warehouse, "TIME_ONCE_SECONDS", 3600.0)
    assert (warehouse.query_timings(wh["con"], repeat=3)["runs"] == 3).all()
    monkeypatch.setattr(warehouse, "TIME_ONCE_SECONDS", 0.0)
    assert (warehouse.query_timings(wh["con"], repeat=3)["runs"] == 1).all()


def test_spark_engine_without_pyspark_is_a_clear_error(wh, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark -> ImportError
    with pytest.raises(RuntimeError, match="engine 'spark': PySpark is not installed"):
        warehouse.connect(wh["dir"], engine="spark")


def test_optimizing_nothing_says_why(tmp_path):
    with pytest.raises(ValueError, match="ingestion kept no rows"):
        warehouse.optimize_events(tmp_path / "empty", tmp_path / "events")


def test_memory_limit_auto_is_a_share_of_available_memory_and_sizes_parse():
    import psutil

    auto = warehouse.memory_limit_bytes("auto")
    available = psutil.virtual_memory().available
    assert 0.1 * available < auto <= 0.2 * available
    assert warehouse.memory_limit_bytes("2GB") == 2_000_000_000
    assert warehouse.memory_limit_bytes("1.5GiB") == int(1.5 * 2**30)
    assert warehouse.memory_limit_bytes("512MiB") == 512 * 2**20
    with pytest.raises(ValueError, match="expected 'auto' or a size"):
        warehouse.memory_limit_bytes("lots")


@pytest.fixture(scope="module")
def larger_events(tmp_path_factory):
    """200k events: enough that a build capped at a few MB must spill (or give up)."""
    root = tmp_path_factory.mktemp("wh_small_cap")
    sample = synth.generate(root / "sample", 200_000, seed=2)
    canonical = root / "events_canonical.parquet"
    ingest.ingest(
        str(sample.events_path), IngestParams(), events_out=canonical, rejects_out=root / "r.pq"
    )
    full = root / "full"
    warehouse.optimize_events(canonical, full / warehouse.EVENTS_DIR)
    warehouse.build(full)
    return canonical, full


@pytest.mark.parametrize("cap", ["24MB", "48MB"])
def test_build_under_a_small_memory_cap_spills_or_names_the_parameter(larger_events, tmp_path, cap):
    """A build capped far below what it holds either completes by spilling to disk, with the
    same tables as an uncapped build, or fails with a message naming optimize.memory_limit and
    a value to try -- never a raw DuckDB error."""
    canonical, full = larger_events
    wdir = tmp_path / "w"
    warehouse.optimize_events(canonical, wdir / warehouse.EVENTS_DIR)
    try:
        warehouse.build(wdir, memory_limit=cap)
    except MemoryError as e:
        assert "optimize.memory_limit" in str(e) and "try -p optimize.memory_limit=" in str(e)
        return
    capped, uncapped = warehouse.connect(wdir), warehouse.connect(full)
    try:
        for name, key in [("dim_users", "user_id"), ("fact_sessions", "user_session")]:
            assert_frame_equal(
                capped.table(name).to_polars().sort(key), uncapped.table(name).to_polars().sort(key)
            )
    finally:
        capped.disconnect()
        uncapped.disconnect()


def test_build_that_cannot_fit_names_the_parameter(larger_events, tmp_path):
    canonical, _ = larger_events
    wdir = tmp_path / "w"
    warehouse.optimize_events(canonical, wdir / warehouse.EVENTS_DIR)
    with pytest.raises(
        MemoryError, match=r"optimize\.memory_limit.*try -p optimize\.memory_limit="
    ):
        warehouse.build(wdir, memory_limit="1MB")


def test_build_by_day_equals_the_one_expression_definition(wh):
    """The build reads one day at a time and merges parts; star_schema() computes each table
    over all events at once (as Spark runs it). Every table is the same."""
    con = ibis.duckdb.connect()
    events = con.read_parquet(
        str(wh["dir"] / warehouse.EVENTS_DIR / "**" / "*.parquet"), hive_partitioning=True
    )
    keys = {
        "dim_users": ["user_id"],
        "dim_products": ["product_id"],
        "fact_sessions": ["user_session"],
        "fact_daily_kpis": ["event_date"],
        "fact_funnel": ["level", "event_date", "step_order"],
    }
    for name, expr in warehouse.star_schema(events).items():
        want = expr.to_polars().sort(keys[name], nulls_last=True)
        got = wh["con"].table(name).to_polars().sort(keys[name], nulls_last=True)
        assert_frame_equal(got.select(want.columns), want, check_dtypes=False, rel_tol=1e-9)


@pytest.mark.parametrize("chunk_rows", [1, 1_000_000], ids=["a query per day", "days together"])
def test_a_session_across_midnight_counts_each_product_once(tmp_path, monkeypatch, chunk_rows):
    """Parts are per day: a session crossing midnight must be merged, and its distinct products
    recounted (a product viewed before and after midnight is one product, not two)."""
    ev = pl.DataFrame(
        {
            "event_time": [
                "2019-10-01 23:50:00",
                "2019-10-01 23:55:00",
                "2019-10-02 00:05:00",
                "2019-10-02 00:10:00",
                "2019-10-02 10:00:00",
            ],
            "event_type": ["view", "view", "view", "purchase", "view"],
            "user_id": [1, 1, 1, 1, 2],
            "user_session": ["s1", "s1", "s1", "s1", "s2"],
            "product_id": [10, 11, 10, 10, 12],
            "category_id": [1, 1, 1, 1, 1],
            "category_code": [None] * 5,
            "brand": [None] * 5,
            "price": [5.0, 6.0, 5.0, 5.0, 7.0],
        }
    ).with_columns(pl.col("event_time").str.to_datetime().dt.replace_time_zone("UTC"))
    wdir = tmp_path / "w"
    for (day,), part in ev.group_by(pl.col("event_time").dt.date()):
        folder = wdir / warehouse.EVENTS_DIR / f"event_date={day}"
        folder.mkdir(parents=True)
        part.write_parquet(folder / "part-0.parquet")
    monkeypatch.setattr(warehouse, "DAY_CHUNK_ROWS", chunk_rows)
    warehouse.build(wdir)
    con = warehouse.connect(wdir)
    s = con.table("fact_sessions").to_polars().sort("user_session")
    assert s["unique_products"].to_list() == [2, 1]  # products 10 and 11; not 3
    assert s["events"].to_list() == [4, 1] and s["revenue"].to_list() == [5.0, 0.0]
    assert s["duration_s"].to_list() == [1200, 0]
    daily = con.table("fact_daily_kpis").to_polars().sort("event_date")
    assert daily["sessions"].to_list() == [1, 1]  # a session counts on the day it started
    overall = con.table("fact_funnel").filter(lambda t: t.level == "overall").to_polars()
    assert overall.sort("step_order")["sessions"].to_list() == [2, 0, 1]
    con.disconnect()


def test_last_event_time_reads_the_last_day_and_equals_the_maximum(wh):
    events = wh["con"].table("events")
    want = wh["events"]["event_time"].max()
    assert warehouse.last_event_time(events) == want
    # without the day partition: the maximum over every event
    assert warehouse.last_event_time(events.drop("event_date")) == want
    assert warehouse.last_event_time(events.filter(events.user_id < 0)) is None


def test_event_day_reads_the_day_partition_and_equals_the_utc_date_of_each_event(wh):
    from customer_intel import cohorts, metrics, propensity, rules

    events = wh["con"].table("events")
    bare = events.drop("event_date")  # the same events without the partition column
    days = events.select("event_time", d=warehouse.event_day(events)).to_polars()
    assert days["d"].equals(days["event_time"].dt.date(), check_names=False)
    assert warehouse.event_day(bare).op() != warehouse.event_day(events).op()

    # what reads the day gives the same answer with the partition as without it
    cutoff, _ = propensity.split_times(events)
    names = ["active_days", "sessions", "primary_category"]
    batches = propensity.feature_batches(events, cutoff, names, batch_users=1_500)
    with_partition = pl.concat(list(batches)).sort("user_id")
    assert with_partition["active_days"].max() > 1
    assert with_partition.equals(
        propensity.features(bare, cutoff, names).to_polars().sort("user_id")
    )
    for period in ("week", "month"):
        assert cohorts.cohort_retention(events, period=period, basis="visit").equals(
            cohorts.cohort_retention(bare, period=period, basis="visit")
        )
    weeks = [
        t.select("event_time", w=metrics.period_start(t, "event_time", "W"))
        .to_polars()
        .sort(pl.all())
        for t in (events, bare)
    ]
    assert weeks[0]["w"].dt.weekday().unique().to_list() == [1]  # Mondays
    assert weeks[0].equals(weeks[1])
    baskets = [
        rules.baskets(t, basket="user_day")[0].to_polars().sort(pl.all()) for t in (events, bare)
    ]
    assert baskets[0].height > 0 and baskets[0].equals(baskets[1])


def test_epoch_seconds_equal_ibis_own_without_a_cast_of_each_time_zone_aware_value(wh):
    events = wh["con"].table("events")
    got = events.select(
        "event_time",
        ours=warehouse.epoch_seconds(events.event_time),
        ibis_own=events.event_time.epoch_seconds().cast("float64"),
    ).to_polars()
    want = got["event_time"].dt.epoch("us") / 1e6  # with the microseconds
    assert got["ours"].equals(want, check_names=False)
    assert (got["ours"] == got["ibis_own"]).all()
    sql = ibis.to_sql(events.select(x=warehouse.epoch_seconds(events.event_time)))
    assert "EPOCH(" in sql and "CAST" not in sql  # no per-value time-zone conversion
    # a time without a time zone keeps ibis's form
    naive = events.event_time.cast("timestamp")
    assert warehouse.epoch_seconds(naive).op() == naive.epoch_seconds().op()


def test_funnel_sentence_reads_right_without_views_or_carts():
    f = lambda steps: pl.DataFrame({"step": list(steps), "users": list(steps.values())})  # noqa: E731
    assert warehouse.describe_funnel(f({"purchase": 4339})) == (
        "The data has no view events (an order table, for example): 4,339 users bought."
    )
    text = warehouse.describe_funnel(f({"view": 1000, "cart": 100, "purchase": 60}))
    assert text.startswith("Of 1,000 users who viewed a product, 100 (10.0%) added one to a cart")
    assert "60 (6.0%) bought" in text and "60% as many" in text
    assert "%" not in warehouse.describe_funnel(f({}))


def test_connections_follow_the_runners_threads_file(monkeypatch, tmp_path):
    """A stage's kernel gets the path of its threads file (kernels.engine_threads_code, run at
    begin()); each DuckDB connection it opens starts at the count in the file and follows it
    while open, as the runner rewrites it when stages start and end."""
    import time

    from customer_intel import kernels

    def threads(con) -> int:
        return con.raw_sql("SELECT current_setting('threads')").fetchone()[0]

    def connection():
        con = ibis.duckdb.connect()
        warehouse.configure_duckdb(con, "1GB")
        return con

    def reaches(con, n: int) -> bool:
        deadline = time.monotonic() + 10
        while threads(con) != n and time.monotonic() < deadline:
            time.sleep(0.02)
        return threads(con) == n

    monkeypatch.setattr(warehouse, "THREADS_POLL_SECONDS", 0.02)
    monkeypatch.setenv(warehouse.THREADS_FILE_ENV, "")  # restored after the test
    monkeypatch.delenv(warehouse.THREADS_FILE_ENV)
    default = threads(connection())
    share = tmp_path / "propensity"
    share.write_text("1")
    assert kernels.engine_threads_code(None) == ""  # no runner: one thread per core
    exec(kernels.engine_threads_code(share), {})
    assert os.environ[warehouse.THREADS_FILE_ENV] == str(share)
    first, second = connection(), connection()
    assert threads(first) == threads(second) == 1
    share.write_text("3")  # the stage beside it ended
    assert reaches(first, 3) and reaches(second, 3)
    first.disconnect()  # a closed connection drops out; the open one still follows
    share.write_text("2")
    assert reaches(second, 2)
    share.write_text("")  # no number: connections keep what they have
    assert threads(connection()) == default and threads(second) == 2


def test_a_connection_removes_the_spill_folders_of_ended_processes(monkeypatch, tmp_path):
    """A killed process runs no exit handler: its spill folder stays. The next connection's
    setup removes the folders of processes that have ended, and no other."""
    import subprocess
    import sys
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    prefix = warehouse.SPILL_DIR_PREFIX
    dead = tmp_path / f"{prefix}{ended.stdout.strip()}"
    (dead / "spilled").mkdir(parents=True)
    (dead / "spilled" / "block.tmp").write_bytes(b"x" * 1024)
    paths.claim_temp_dir(dead, int(ended.stdout))
    live = tmp_path / f"{prefix}{os.getppid()}"
    live.mkdir()
    paths.claim_temp_dir(live, os.getppid())
    other = tmp_path / f"{prefix}notes"  # names no owner
    other.mkdir()
    warehouse.configure_duckdb(ibis.duckdb.connect(), "1GB")
    assert not dead.exists()
    assert live.is_dir() and other.is_dir()
    assert (tmp_path / f"{prefix}{os.getpid()}").is_dir()  # its own, removed at its exit
