"""The physical layout of events on disk: storage types, sort order, one file per day.

Ingestion (``ingest.ingest_files``) parses and classifies the rows, stages them by day (text ids
in the split form of :func:`split_id`) and hands the staged days to :func:`write_days` once,
which writes every day of events once, already in this layout;
``warehouse.optimize_events`` publishes those files into the warehouse without rewriting them.
Writing the events a second time only to downcast and sort them cost a fifth of the whole
ingest + optimize time and doubled the run folder's size.

Layout: ids as the smallest integer type that holds every value of the data set (digit-only
string ids too), ``price`` as Float32 when every value survives the round trip to the cent,
``event_type`` as an Enum, rows sorted by (user_id, event_time) so each user's events sit side
by side (dictionary and run-length encodings compress them, row-group statistics prune them),
zstd, ``<dir>/event_date=YYYY-MM-DD/part-0.parquet`` with row groups of ``row_group_size`` rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import polars as pl

from customer_intel import progress
from customer_intel.columns import EVENT_TYPES

ID_COLUMNS = ("user_id", "product_id", "category_id")
ROW_GROUP_SIZE = 122_880
#: zstd level of the event files. Level 1 instead of Polars' default 3: writing a day took a
#: fifth less CPU (20M events: 6.0 s against 7.7 s, more than half of ingest's last pass) for
#: 8% more bytes (348 MB against 321 MB), which read back as fast.
ZSTD_LEVEL = 1
_INT_TYPES = ((pl.Int32, "INTEGER", 31), (pl.Int64, "BIGINT", 63))  # type, name, value bits
_TYPE_NAMES = {
    pl.Int32: "INTEGER",
    pl.Int64: "BIGINT",
    pl.String: "VARCHAR",
    pl.Float32: "FLOAT",
    pl.Float64: "DOUBLE",
}


def _text_part(col: str) -> str:
    return f"_{col}_text"


def split_id(col: str) -> list[pl.Expr]:
    """A text id column as two: the integer where the text is exactly its digits, and the text.

    ``col`` becomes the integer where the text is one printed plainly (digits, a leading ``-``
    only, no leading zero) and null elsewhere; ``_<col>_text`` holds the text where it is not.
    Parsing ids once, in the streaming pass, is cheaper than checking the text later; the split
    form is what :func:`storage_types` and :func:`arrange_day` read. The check equals comparing
    the integer printed back with the text (a test holds them equal) without printing 100M
    integers.
    """
    text = pl.col(col)
    as_int = text.str.to_integer(strict=False)
    altered = (
        text.str.starts_with("+")
        | text.str.starts_with("-0")
        | (text.str.starts_with("0") & (text.str.len_bytes() > 1))
    )
    exact = as_int.is_not_null() & ~altered
    return [
        pl.when(exact).then(as_int).alias(col),
        pl.when(~exact).then(text).alias(_text_part(col)),
    ]


def split_ids(events: pl.LazyFrame) -> pl.LazyFrame:
    """``events`` with each text id column in the split form of :func:`split_id`.

    Integer id columns, and those already split, are left as they are.
    """
    schema = events.collect_schema()
    text = [
        c
        for c in ID_COLUMNS
        if c in schema and schema[c] == pl.String and _text_part(c) not in schema
    ]
    return events.with_columns(e for c in text for e in split_id(c)) if text else events


def storage_types(events: pl.LazyFrame) -> dict[str, pl.DataType]:
    """The smallest storage type of each id column and of ``price``, over the whole data set.

    Decided in one streaming scan so that every day gets the same schema. An id column may be
    integers, text, or in the split form of :func:`split_id`.
    """
    events = split_ids(events)  # one rule for which text is an integer: split_id's
    schema = events.collect_schema()
    ids = [c for c in ID_COLUMNS if c in schema]
    aggs = []
    for col in ids:
        if _text_part(col) in schema:  # integers, and text where there is no integer
            aggs.append(pl.col(_text_part(col)).is_null().all().alias(f"{col}:int"))
        else:
            aggs.append(pl.lit(schema[col].is_integer()).alias(f"{col}:int"))
        aggs += [pl.col(col).min().alias(f"{col}:min"), pl.col(col).max().alias(f"{col}:max")]
    price = pl.col("price")
    exact32 = (price.cast(pl.Float32).cast(pl.Float64).round(2) == price.round(2)) & (
        price.abs() < 1e6
    )
    aggs.append(exact32.fill_null(True).all().alias("price:f32"))
    stats = events.select(aggs).collect().row(0, named=True)
    types: dict[str, pl.DataType] = {}
    for col in ids:
        lo, hi = stats[f"{col}:min"], stats[f"{col}:max"]
        if not stats[f"{col}:int"] or lo is None:
            types[col] = pl.String
            continue
        types[col] = next(t for t, _, bits in _INT_TYPES if -(2**bits) <= lo and hi < 2**bits)
    types["price"] = pl.Float32 if stats["price:f32"] else pl.Float64
    return types


def type_names(schema: pl.Schema | dict[str, pl.DataType]) -> dict[str, str]:
    """SQL names of the storage types of the id columns and ``price`` (for reports)."""
    return {
        c: _TYPE_NAMES.get(dtype, str(dtype))
        for c, dtype in schema.items()
        if c in (*ID_COLUMNS, "price")
    }


def arrange_day(day: pl.DataFrame, types: dict[str, pl.DataType]) -> pl.DataFrame:
    """One day of events cast to ``types`` (Enum ``event_type``) and sorted by user and time.

    Id columns in the split form of :func:`split_id` are joined back first. The sort is
    stable: events of a user at the same instant keep their order.
    """
    split = [c for c in ID_COLUMNS if _text_part(c) in day.columns]
    day = day.with_columns(
        pl.coalesce(pl.col(_text_part(c)), pl.col(c).cast(pl.String)).alias(c)
        for c in split
        if types.get(c) == pl.String
    ).drop([_text_part(c) for c in split])
    return day.with_columns(
        *[pl.col(c).cast(t) for c, t in types.items() if c in day.columns],
        pl.col("event_type").cast(pl.Enum(list(EVENT_TYPES))),
    ).sort("user_id", "event_time", maintain_order=True)


def write_day(
    day: pl.DataFrame, out_dir: Path, date: str, *, row_group_size: int = ROW_GROUP_SIZE
) -> Path:
    """Write one day as ``out_dir/event_date=<date>/part-0.parquet`` (zstd, :data:`ZSTD_LEVEL`)."""
    target = out_dir / f"event_date={date}"
    target.mkdir(parents=True)
    path = target / "part-0.parquet"
    day.write_parquet(
        path, compression="zstd", compression_level=ZSTD_LEVEL, row_group_size=row_group_size
    )
    return path


def write_days(
    days: Sequence[Path],
    out_dir: Path,
    *,
    columns: Sequence[str],
    skip: Collection[str] = (),
    finish: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
    row_group_size: int = ROW_GROUP_SIZE,
    label: str = "layout: sort and write days",
) -> tuple[int, int]:
    """Lay out staged days of events and write each once, as :func:`write_day` does.

    ``days`` are folders named ``<key>=YYYY-MM-DD``, each holding the Parquet files of one day
    (id columns as integers, text, or in the split form of :func:`split_id`). The storage
    types are chosen over every day (:func:`storage_types`); then each day is read on its own
    (without the ``skip`` columns), cast and sorted (:func:`arrange_day`; ``price`` keeps its
    source precision), handed to ``finish`` (the caller's step on a sorted day: ingest drops
    duplicates and derives sessions there), cast to the storage type of ``price`` and written
    with those of ``columns`` it has, in that order. Memory is bounded by one day.

    Returns (rows read, rows written).
    """
    if not days:
        return 0, 0
    staged = pl.scan_parquet([d / "*.parquet" for d in days])
    types = storage_types(staged)
    # Float32 could merge prices that differ below a cent: the price cast comes after
    # ``finish`` (which may compare prices); the id casts are exact
    id_types = {c: t for c, t in types.items() if c != "price"}
    read = [c for c in staged.collect_schema().names() if c not in skip]
    out_dir.mkdir(parents=True, exist_ok=True)
    n_read = n_written = 0
    bar = progress.Progress(label, len(days), unit="days")
    for day in days:
        df = arrange_day(pl.read_parquet(day, columns=read), id_types)
        n_read += df.height
        if finish is not None:
            df = finish(df)
        df = df.with_columns(pl.col("price").cast(types["price"]))
        df = df.select([c for c in columns if c in df.columns])
        write_day(df, out_dir, day.name.split("=", 1)[1], row_group_size=row_group_size)
        n_written += df.height
        bar.update(1, rows=df.height)
    bar.close()
    return n_read, n_written


def widen(sample: pl.DataFrame) -> pl.DataFrame:
    """The same values in the types a plain reader would use: 64-bit numbers, text labels.

    The "before" side of the in-memory size comparison.
    """
    return sample.with_columns(
        pl.col(pl.Int8, pl.Int16, pl.Int32).cast(pl.Int64),
        pl.col(pl.Float32).cast(pl.Float64),
        pl.col(pl.Enum, pl.Categorical).cast(pl.String),
    )
