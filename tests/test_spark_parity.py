"""Parity: the smoke profile on engine spark writes the same tables as on engine duckdb.

One smoke run per engine (the DuckDB one is the suite's shared ``smoke_run``; the Spark one is
made here once for the module). Every warehouse table and every table of the run folder is
compared after sorting by its non-float columns: identical keys, integer, text, boolean,
date and time columns; floats within 1e-9 relative. Types may differ in width (Spark hands
back 64-bit integers and naive UTC timestamps where DuckDB keeps 32-bit ids and time zones),
values may not.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from customer_intel import spark, warehouse
from customer_intel.paths import PROJECT_ROOT

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(
        spark.requirements_problem() is not None,
        reason=f"engine spark unavailable: {spark.requirements_problem()}",
    ),
]

#: Tables that hold measured seconds, different on every run by nature.
MEASURED = {"query_timings"}
REL = 1e-9
#: Known engine differences, each with an absolute tolerance and the reason. Ibis compiles
#: epoch_seconds() to DuckDB's epoch(), which keeps the fraction of a second inside an
#: expression, and to Spark's unix_timestamp(), which truncates it (its backend cannot
#: extract microseconds either): rfm's exact recency (days) differs by under a second.
#: The weekly CLV metric's recency and tenure (days) are computed the same way.
KNOWN_GAPS = {
    ("rfm", "recency_exact_days"): 1 / 86_400,
    ("metric_weekly_clv", "Recency"): 1 / 86_400,
    ("metric_weekly_clv", "Tenure"): 1 / 86_400,
}
#: Relative gaps that follow from those: the weekly CLV divides by (tenure + 1) days, so a
#: sub-second tenure difference moves it by at most 1/86,400 of its value.
KNOWN_REL_GAPS = {("metric_weekly_clv", "CLV"): 1 / 86_400}


@pytest.fixture(scope="module")
def spark_run(tmp_path_factory) -> Path:
    """``run_all.py --params params/smoke.yaml -p common.engine=spark``; its run folder."""
    root = tmp_path_factory.mktemp("smoke_spark")
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "run_all.py"),
            "--params",
            str(PROJECT_ROOT / "params" / "smoke.yaml"),
            "-p",
            f"common.output_root={root}",
            "-p",
            "common.engine=spark",
            "--quiet-cells",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=PROJECT_ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return (root / "latest").resolve()


def _normal(df: pl.DataFrame) -> pl.DataFrame:
    """Widths and time zones made alike, values untouched; rows sorted by non-float columns."""
    cols = []
    for name, dtype in df.schema.items():
        c = pl.col(name)
        if dtype.is_integer():
            c = c.cast(pl.Int64)
        elif dtype.is_float():
            c = c.cast(pl.Float64)
        elif isinstance(dtype, pl.Datetime):
            c = c.dt.convert_time_zone("UTC") if dtype.time_zone else c.dt.replace_time_zone("UTC")
            c = c.dt.cast_time_unit("us")
        elif isinstance(dtype, pl.Enum | pl.Categorical):
            c = c.cast(pl.String)
        cols.append(c)
    df = df.select(cols)
    keys = [n for n, t in df.schema.items() if not t.is_float() and not t.is_nested()]
    return df.sort(keys, nulls_last=True) if keys else df


def assert_same(name: str, a: pl.DataFrame, b: pl.DataFrame) -> None:
    """Same columns, rows, keys and values (floats within :data:`REL`)."""
    assert sorted(a.columns) == sorted(b.columns), f"{name}: columns differ"
    a, b = _normal(a), _normal(b.select(a.columns))
    assert a.height == b.height, f"{name}: {a.height} rows with duckdb, {b.height} with spark"
    for col in a.columns:
        x, y = a[col], b[col]
        if x.dtype.is_float():
            both = x.is_null() | y.is_null()
            assert (x.is_null() == y.is_null()).all(), f"{name}.{col}: nulls differ"
            x, y = x.filter(~both), y.filter(~both)
            nan = x.is_nan() | y.is_nan()
            assert (x.is_nan() == y.is_nan()).all(), f"{name}.{col}: NaNs differ"
            x, y = x.filter(~nan), y.filter(~nan)
            inf = x.is_infinite() | y.is_infinite()
            assert (x.filter(inf) == y.filter(inf)).all(), f"{name}.{col}: infinities differ"
            x, y = x.filter(~inf), y.filter(~inf)
            rel = max(REL, KNOWN_REL_GAPS.get((name, col), 0.0))
            tol = (x.abs().clip(lower_bound=1e-300) * rel).to_numpy()
            tol = tol.clip(min=KNOWN_GAPS.get((name, col), 0.0))
            worst = ((x - y).abs().to_numpy() - tol).max() if len(x) else -1
            assert worst <= 0, f"{name}.{col}: floats differ beyond {REL} relative"
        else:
            assert x.dtype == y.dtype, f"{name}.{col}: {x.dtype} (duckdb) vs {y.dtype} (spark)"
            same = (x == y) | (x.is_null() & y.is_null())
            bad = (~same.fill_null(False)).arg_true()
            assert bad.len() == 0, (
                f"{name}.{col}: {bad.len()} values differ, first duckdb {x[bad[0]]!r} "
                f"spark {y[bad[0]]!r}"
            )


@pytest.mark.parametrize("table", warehouse.TABLES)
def test_warehouse_tables_are_the_same_on_both_engines(smoke_run, spark_run, table):
    con = duckdb.connect(
        str(smoke_run["run_dir"] / "warehouse" / warehouse.WAREHOUSE_FILE), read_only=True
    )
    try:
        ours = con.execute(f'SELECT * FROM "{table}"').pl()
    finally:
        con.close()
    parts = spark_run / "warehouse" / warehouse.PARQUET_TABLES_DIR / table
    assert not (spark_run / "warehouse" / warehouse.WAREHOUSE_FILE).exists(), "no DuckDB file"
    assert_same(table, ours, pl.read_parquet(parts / "*.parquet"))


def test_every_stage_table_is_the_same_on_both_engines(smoke_run, spark_run):
    first, second = smoke_run["run_dir"] / "tables", spark_run / "tables"
    names = sorted(p.stem for p in first.glob("*.parquet"))
    assert len(names) > 25
    assert names == sorted(p.stem for p in second.glob("*.parquet"))
    failures = []
    for name in names:
        if name in MEASURED:
            continue
        try:
            assert_same(
                name,
                pl.read_parquet(first / f"{name}.parquet"),
                pl.read_parquet(second / f"{name}.parquet"),
            )
        except AssertionError as e:
            failures.append(str(e).splitlines()[0])
    assert not failures, "tables that differ between engines:\n" + "\n".join(failures)


def test_assert_same_can_fail():
    a = pl.DataFrame({"k": [1, 2], "v": [1.0, 2.0], "s": ["x", "y"]})
    assert_same("t", a, a.reverse())  # order does not matter
    with pytest.raises(AssertionError, match="floats differ"):
        assert_same("t", a, a.with_columns(v=pl.Series([1.0, 2.0 + 1e-6])))
    with pytest.raises(AssertionError, match="values differ"):
        assert_same("t", a, a.with_columns(s=pl.Series(["x", "z"])))
    with pytest.raises(AssertionError, match="rows"):
        assert_same("t", a, a.head(1))
