"""Raw event files -> canonical events on Apache Spark (``ingest.engine: spark``).

The same contract as the Polars path (:mod:`customer_intel.ingest`): the same column mapping,
reject reasons and order of the checks, exact duplicates dropped, the same report, and the
same files: ``events_out/event_date=YYYY-MM-DD/part-0.parquet`` (ids in the smallest integer
type that holds them, ``price`` as Float32 where every value survives it, sorted by user and
time with ties in file order, zstd) and one ``rejects_out`` Parquet file. Always::

    rows_in == rows_kept + rows_rejected + duplicates

Reads CSV (plain or ``.gz``), Parquet and JSON lines; ZIP archives are refused at params
validation (:class:`customer_intel.params.ingest.IngestParams`). The raw files are read by
Spark; the driver reads only CSV headers, and the rejects (streamed into one file).

How each rule is carried over:

- CSV lines are read as text and numbered (the line number of a reject is the file's); a line
  whose field count (outside quoted sections) is not the header's is ``malformed_line``, an
  odd number of quotes is an error (a quoted field that spans lines), exactly the line scan of
  the Polars path; the other lines are parsed with ``from_csv``.
- Text is trimmed of blanks and tabs, empty is null; numbers are ``try_cast`` to double;
  timestamps are parsed with the Java form of ``timestamp_format``
  (:func:`customer_intel.timeutil.strptime_to_java`) in ``timezone``, and a local time that
  does not exist or is ambiguous there (a daylight-saving change) is unparseable, as in Polars.
- Filters are the same checked SQL (:mod:`customer_intel.sqlexpr`), rendered in Spark's dialect.
- An id is stored as an integer when every value is one printed plainly (the rule of
  :func:`customer_intel.layout.split_id`); the price type follows ``layout.storage_types``.
- Sessions are derived (when the source has none) over each user's events in time order.

What differs on disk: ``event_type`` is a plain (dictionary-encoded) text column, not a Polars
Enum (Spark has no Enum type; readers see the same values), and row groups are sized by Spark
(``parquet.block.size`` bytes), not by ``row_group_size`` rows.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from customer_intel import ingest, layout, sqlexpr
from customer_intel import spark as sparkmod
from customer_intel.columns import CANONICAL_COLUMNS, EVENT_TYPES, OPTIONAL_COLUMNS
from customer_intel.ingest import REASONS, IngestReport
from customer_intel.params.ingest import SPARK_FORMATS, IngestParams
from customer_intel.sources import InputError, Inputs, expand_inputs
from customer_intel.timeutil import strptime_to_java

#: monotonically_increasing_id() puts the partition index above bit 33.
_PARTITION_SHIFT = 33
#: Columns of the rejects file, in order (the raw fields follow).
_REJECT_COLUMNS = ("reason", "source_file", "line_number", "detail", "raw_line")
_INT_TYPES = (("int", pl.Int32, 31), ("bigint", pl.Int64, 63))


def _q(name: str) -> Any:
    """A source column by its exact name (dots, spaces and backticks are not syntax)."""
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def _numbered(df: Any, **aggs: Any) -> tuple[Any, int, dict[str, Any]]:
    """``df`` with ``_idx`` (0-based row number in read order), its row count, and ``aggs``.

    Spark gives no row number of a file; ``monotonically_increasing_id`` is the partition index
    and the row's place in its partition. One pass counts the rows of each partition; their
    running sum turns the id into a row number without moving rows to one task (a window over
    the whole file would). The partitions of one file are its splits in file order.

    ``aggs`` (name -> function of the columns and ``_within``, the place in the partition) are
    computed in the same pass, per partition; each is returned as a list of
    ``(offset of the partition, value)``.
    """
    from pyspark.sql import functions as F

    df = df.withColumn("_mid", F.monotonically_increasing_id())
    part = F.shiftright(F.col("_mid"), _PARTITION_SHIFT)
    within = F.col("_mid").bitwiseAND(F.lit((1 << _PARTITION_SHIFT) - 1))
    stats = (
        df.withColumn("_within", within)
        .groupBy(part.alias("p"))
        .agg(F.count(F.lit(1)).alias("n"), *[f().alias(k) for k, f in aggs.items()])
        .collect()
    )
    offsets, total, per = {}, 0, {k: [] for k in aggs}
    for row in sorted(stats, key=lambda r: r["p"]):
        offsets[row["p"]] = total
        for k in aggs:
            per[k].append((total, row[k]))
        total += row["n"]
    base = F.lit(0).cast("bigint")
    for p, off in offsets.items():
        base = F.when(part == p, F.lit(off).cast("bigint")).otherwise(base)
    return df.withColumn("_idx", base + within).drop("_mid"), total, per


def _text(c: Any) -> Any:
    """Text with surrounding blanks and tabs trimmed; empty -> null (``ingest._text``)."""
    from pyspark.sql import functions as F

    s = F.regexp_replace(c.cast("string"), r"^[ \t]+|[ \t]+$", "")
    return F.when(s != "", s)


def _to_double(c: Any, dtype: Any) -> Any:
    """Numbers as double; text that is no number -> null (``ingest._number``)."""
    from pyspark.sql import types as T

    if isinstance(dtype, T.StringType):
        return _text(c).try_cast("double")
    return c.cast("double")


def _local_to_utc(ts: Any, tz: str) -> Any:
    """A naive local time in ``tz`` as UTC; null where it does not exist or is ambiguous.

    Polars (``replace_time_zone(ambiguous="null", non_existent="null")``) rejects such times;
    Spark's ``to_utc_timestamp`` would pick an offset, so both are checked: the time must come
    back unchanged, and no other instant an hour away may show the same local time.
    """
    from pyspark.sql import functions as F

    if tz == "UTC":
        return ts
    utc = F.to_utc_timestamp(ts, tz)
    back = F.from_utc_timestamp(utc, tz)
    hour = F.expr("INTERVAL 1 HOUR")
    other = (F.from_utc_timestamp(utc + hour, tz) == ts) | (
        F.from_utc_timestamp(utc - hour, tz) == ts
    )
    return F.when((back == ts) & ~other, utc)


def _timestamp(c: Any, dtype: Any, p: IngestParams) -> Any:
    """Source timestamps -> UTC instants; unparseable -> null (``ingest._timestamp``)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if isinstance(dtype, T.TimestampType):  # an instant already
        return c
    if isinstance(dtype, T.TimestampNTZType):
        return _local_to_utc(c.cast("timestamp"), p.timezone)
    if isinstance(dtype, T.DateType):
        return _local_to_utc(c.cast("timestamp"), p.timezone)
    pattern = strptime_to_java(p.timestamp_format)
    ts = F.try_to_timestamp(_text(c), F.lit(pattern))
    if any(z in p.timestamp_format for z in ("%z", "%:z", "%#z")):
        return ts
    return _local_to_utc(ts, p.timezone)


def _classified(df: Any, p: IngestParams, source: str, file_no: int) -> Any:
    """Canonical columns, ``reason`` (null = keep) and provenance, as ``ingest._classified``.

    ``df`` holds the source columns and ``_line``. Ids are text here (an integer source's
    values printed): whether a column is stored as integers is decided over all kept rows.
    The checks run in the Polars path's order, so a row with two faults gets the same reason.
    """
    from pyspark.sql import functions as F

    schema = {f.name: f.dataType for f in df.schema.fields}
    m = p.column_map

    def src(canon: str) -> Any:
        return _q(m[canon])

    def text(canon: str) -> Any:
        return _text(src(canon)) if canon in m else F.lit(None).cast("string")

    if p.constant_event_type:
        etype = F.lit(p.constant_event_type)
    else:
        label = text("event_type")
        etype = F.lit(None).cast("string")
        for target in EVENT_TYPES:
            labels = [k for k, v in p.event_type_map.items() if v == target]
            if labels:
                etype = F.when(label.isin(labels), F.lit(target)).otherwise(etype)
    qty = _to_double(src("quantity"), schema[m["quantity"]]) if "quantity" in m else None
    price = _to_double(src("price"), schema[m["price"]])
    if p.price_is_unit_price and qty is not None:
        price = price * qty
    order = text("order_id")
    columns = {
        "event_time": _timestamp(src("event_time"), schema[m["event_time"]], p),
        "event_type": etype,
        "user_id": text("user_id"),
        "user_session": order if p.session_from_order else text("user_session"),
        "product_id": text("product_id"),
        "category_id": text("category_id"),
        "category_code": text("category_code"),
        "brand": text("brand"),
        "price": price,
    }
    if qty is not None:
        columns["quantity"] = qty
    if "order_id" in m:
        columns["order_id"] = order
    for c in p.carry_columns:
        columns[c] = _q(c).cast("string")
    cancelled = F.lit(False)
    if p.cancellation_column:
        prefix = F.regexp_replace(_q(p.cancellation_column).cast("string"), r"^\s+|\s+$", "")
        cancelled = F.coalesce(prefix.startswith(p.cancellation_prefix), F.lit(False))
        if qty is not None:
            cancelled = cancelled | F.coalesce(qty < 0, F.lit(False))
    raw = {f"_src_{c}": src(c).cast("string") for c in m}
    out = df.select(
        *[e.alias(n) for n, e in columns.items()],
        *[e.alias(n) for n, e in raw.items()],
        cancelled.alias("_cancelled"),
        F.col("_line"),
    )
    checks: list[tuple[Any, str]] = []
    if p.cancellation_rule == "reject":
        checks.append((F.col("_cancelled"), "cancelled_order"))
    pc = F.col("price")
    checks += [
        (F.col("event_time").isNull(), "unparseable_timestamp"),
        (F.col("event_type").isNull(), "unknown_event_type"),
        (F.col("user_id").isNull() & F.lit(p.require_user_id), "null_user_id"),
        (F.col("product_id").isNull(), "null_product_id"),
        (pc.isNull() | F.isnan(pc) | (F.abs(pc) == float("inf")) | (pc < 0), "invalid_price"),
    ]
    canonical = [*CANONICAL_COLUMNS, *OPTIONAL_COLUMNS, *p.carry_columns]
    for i, text_ in enumerate(p.filters):
        tree = sqlexpr.check(text_, canonical, where=f"ingest.filters[{i}]", boolean=True)
        cond = F.expr(sqlexpr.to_sql(tree, dialect="spark"))
        checks.append((~F.coalesce(cond, F.lit(False)), "filtered"))
    reason = F.lit(None).cast("string")
    for cond, name in reversed(checks):  # the first check that holds names the reason
        reason = F.when(cond, F.lit(name)).otherwise(reason)
    out = out.withColumn("reason", reason)
    rejected = F.col("reason").isNotNull()
    return out.select(
        *[F.col(n) for n in columns],
        "reason",
        F.lit(None).cast("string").alias("detail"),
        F.lit(None).cast("string").alias("raw_line"),
        *[F.when(rejected, F.col(f"_src_{c}")).alias(f"raw_{c}") for c in m],
        F.col("_line"),
        F.lit(source).alias("_source_file"),
        F.lit(file_no).alias("_file"),
    )


def _csv_source(s: Any, path: Path, p: IngestParams, needed: list[str], name: str) -> tuple:
    """One CSV file as (source columns + ``_line`` of its good lines, malformed lines, n lines).

    The line scan of ``ingest._broken_lines``, on Spark: fields are counted outside quoted
    sections; a line with an odd number of quotes is an error.
    """
    from pyspark.sql import functions as F

    sep = p.csv_separator
    header = ingest._csv_header(path, sep)
    ingest._check_columns(name, header, needed, sep)
    raw = F.coalesce(F.col("value"), F.lit(""))
    quotes = F.length(raw) - F.length(F.regexp_replace(raw, '"', ""))
    data = F.col("_mid") > 0  # the header is the first row of the first split
    lines, n, per = _numbered(
        s.read.text(str(path)),
        odd=lambda: F.min(F.when(data & (quotes % 2 == 1), F.col("_within"))),
        not_utf8=lambda: F.max(data & ~F.is_valid_utf8(raw)),
    )
    if any(v for _, v in per["not_utf8"]):  # Spark reads the bytes as they are
        raise InputError(ingest._not_utf8(path, name))  # says where UTF-8 stops
    odd = [off + v + 1 for off, v in per["odd"] if v is not None]
    if odd:
        raise InputError(
            f"{name}: line {min(odd)} has an unbalanced quote; a quoted field that spans "
            "lines is not supported (convert the file to Parquet, or fix the line)"
        )
    lines = lines.filter(F.col("_idx") > 0).select(
        (F.col("_idx") + 1).alias("_line"), raw.alias("raw")
    )
    raw = F.col("raw")
    unquoted = F.regexp_replace(raw, r'"(?:[^"]|"")*"', "")
    fields = F.length(unquoted) - F.length(F.regexp_replace(unquoted, _java_quote(sep), "")) + 1
    lines = lines.withColumn("_fields", fields.cast("int"))
    n_fields = len(header)
    broken = lines.filter(F.col("_fields") != n_fields).select(
        F.lit("malformed_line").alias("reason"),
        F.format_string(f"expected {n_fields} fields, found %d", F.col("_fields")).alias("detail"),
        F.col("raw").alias("raw_line"),
        F.col("_line"),
    )
    ddl = ", ".join(f"`_c{i}` STRING" for i in range(n_fields))
    options = {"sep": sep, "quote": '"', "escape": '"', "mode": "PERMISSIVE"}
    parsed = lines.filter(F.col("_fields") == n_fields).select(
        F.from_csv(F.col("raw"), ddl, options).alias("r"), "_line"
    )
    good = parsed.select(
        *[F.col(f"r._c{i}").alias(h) for i, h in enumerate(header) if h in needed], "_line"
    )
    return good, broken, max(n - 1, 0)


def _java_quote(ch: str) -> str:
    """A single character as a Java regex literal."""
    return "\\" + ch if not ch.isalnum() else ch


def _native_source(s: Any, path: Path, kind: str, needed: list[str], name: str) -> Any:
    """A Parquet or JSON lines file: its columns and ``_line`` (the row number in the file)."""
    from pyspark.sql import functions as F

    reader = s.read.parquet if kind == "parquet" else s.read.option("mode", "FAILFAST").json
    df = reader(str(path))
    ingest._check_columns(name, df.columns, needed)
    df, _, _ = _numbered(df.select(*[_q(c) for c in needed]))
    return df.withColumn("_line", F.col("_idx") + 1).drop("_idx")


def _storage_types(kept: Any) -> dict[str, str]:
    """Spark type of each id column and of ``price``, by ``layout.storage_types``' rules.

    An id is an integer when every value is one printed plainly (``layout.split_id``: digits,
    a leading ``-`` only, no leading zero); then the smallest of int and bigint that holds
    its range. ``price`` is float when every value survives Float32 to the cent.
    """
    from pyspark.sql import functions as F

    aggs = []
    for c in layout.ID_COLUMNS:
        v = F.col(c)
        plain = v.rlike(r"^(0|-?[1-9][0-9]*)$")
        as_int = F.when(plain, v.try_cast("bigint"))
        aggs += [
            F.sum(F.when(v.isNotNull() & as_int.isNull(), 1).otherwise(0)).alias(f"{c}:text"),
            F.min(as_int).alias(f"{c}:min"),
            F.max(as_int).alias(f"{c}:max"),
        ]
    price = F.col("price")
    exact32 = (F.bround(price.cast("float").cast("double"), 2) == F.bround(price, 2)) & (
        F.abs(price) < 1e6
    )
    aggs.append(F.min(F.coalesce(exact32, F.lit(True)).cast("int")).alias("price:f32"))
    aggs.append(F.count(F.lit(1)).alias("rows"))
    stats = kept.agg(*aggs).collect()[0].asDict()
    types: dict[str, str] = {}
    for c in layout.ID_COLUMNS:
        lo, hi = stats[f"{c}:min"], stats[f"{c}:max"]
        if stats[f"{c}:text"] or lo is None:
            types[c] = "string"
            continue
        types[c] = next(t for t, _, bits in _INT_TYPES if -(2**bits) <= lo and hi < 2**bits)
    types["price"] = "double" if stats["price:f32"] == 0 else "float"
    types["_rows"] = int(stats["rows"])
    return types


def _sessions(df: Any, gap_minutes: int) -> Any:
    """Number each user's sessions (``gap_minutes`` of inactivity) over all their events.

    ``ingest._derive_sessions`` does this a day at a time, carrying each user's last event
    across midnight; over the whole data set at once the numbers are the same.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("user_id").orderBy("event_time", "_file", "_line")
    previous = F.lag("event_time").over(order)
    gap = F.unix_micros(F.col("event_time")) - F.unix_micros(previous)
    new = (previous.isNull() | (gap > gap_minutes * 60 * 1_000_000)).cast("long")
    k = F.sum(new).over(order.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    return df.withColumn(
        "user_session", F.concat(F.col("user_id").cast("string"), F.lit("-"), k.cast("string"))
    )


def _move_days(written: Path, events_out: Path) -> None:
    """Spark's one file per day as ``events_out/event_date=YYYY-MM-DD/part-0.parquet``."""
    for day in sorted(written.glob("event_date=*")):
        files = sorted(day.glob("part-*.parquet"))
        if len(files) != 1:  # a day is written by one task (repartitioned by day)
            raise RuntimeError(f"expected one file in {day}, found {len(files)}")
        target = events_out / day.name
        target.mkdir(parents=True)
        shutil.move(str(files[0]), target / "part-0.parquet")


def ingest_files(
    inputs: Inputs,
    p: IngestParams,
    *,
    events_out: Path,
    rejects_out: Path,
    work_dir: Path,
    spark: Any = None,
) -> IngestReport:
    """Ingest the input files on Spark; the contract of :func:`customer_intel.ingest.ingest_files`.

    Two passes over the raw files (number the rows, checking CSV lines on the way; classify
    every row and stage it as Parquet, kept and rejected apart), then two over the kept rows
    (storage types; duplicates, sessions and the days written sorted) and one over the rejects
    (streamed by the driver into ``rejects_out``).

    Parameters
    ----------
    inputs
        Input files and their format (:func:`customer_intel.sources.expand_inputs`).
    p
        The ``ingest`` params.
    events_out, rejects_out
        As for the Polars path.
    work_dir
        Scratch folder for the staging files (on a cluster: a folder every executor sees).
    spark
        The ``spark`` params section; the session is :func:`customer_intel.spark.session`'s.
    """
    from pyspark.sql import functions as F

    kind = inputs.kind
    if kind not in SPARK_FORMATS:
        raise InputError(f"engine 'spark' reads {list(SPARK_FORMATS)}, not {kind!r}")
    s = sparkmod.session(spark, work_dir / "spark")
    # strings Spark cannot parse are null (try_* functions), never an error or a guess
    s.conf.set("spark.sql.legacy.timeParserPolicy", "CORRECTED")
    names = [inputs.name(f) for f in inputs.files]
    work_dir.mkdir(parents=True, exist_ok=True)
    events_out.mkdir(parents=True, exist_ok=True)
    needed = ingest._Mapping.from_params(p).needed_columns()
    frames, n_lines = [], 0
    try:
        for no, (path, name) in enumerate(zip(inputs.files, names, strict=True)):
            frame = _source(s, path, kind, p, needed, name, no)
            if frame is not None:
                frames.append(frame[0])
                n_lines += frame[1]
        staging = work_dir / "staging"
        if frames:
            union = frames[0]
            for f in frames[1:]:
                union = union.unionByName(f)
            status = F.when(F.col("reason").isNull(), "kept").otherwise("rejected")
            union.withColumn("_status", status).write.partitionBy("_status").parquet(
                str(staging), compression="lz4"
            )
    except InputError:
        raise
    except Exception as e:  # a Spark read error: corrupt gzip, broken JSON, bad Parquet
        raise InputError(_read_error(kind, names, e)) from None

    by_reason = _write_rejects(s, staging / "_status=rejected", list(p.column_map), rejects_out)
    n_staged = n_kept = 0
    kept_dir = staging / "_status=kept"
    if kept_dir.exists():
        n_staged, n_kept = _write_days(s, kept_dir, p, work_dir / "days", events_out)
    rows_in = n_staged + sum(by_reason.values())
    if kind in ("csv", "csv.gz") and rows_in != n_lines:
        raise InputError(
            f"{n_lines:,} data lines in {ingest._clip(str(names))} but {rows_in:,} rows read"
        )
    report = IngestReport(
        files=names,
        rows_in=int(rows_in),
        rows_kept=int(n_kept),
        duplicates=int(n_staged - n_kept),
        rejected={r: int(by_reason.get(r, 0)) for r in REASONS},
        file_bytes=[Path(f).stat().st_size for f in inputs.files],
        skipped=list(inputs.skipped),
        kept_without_user=0 if p.require_user_id else ingest._rows_without_user(events_out),
    )
    report.check()
    return report


def _source(
    s: Any, path: Path, kind: str, p: IngestParams, needed: list[str], name: str, no: int
) -> tuple[Any, int] | None:
    """One file classified (malformed lines included as rejects) and its data lines."""
    from pyspark.sql import functions as F

    if kind == "csv.gz":
        with path.open("rb") as fh:
            if fh.read(2) != b"\x1f\x8b":
                raise InputError(
                    f"{name}: not gzip data (its .gz extension says it should be); "
                    "decompress it or set ingest.format: csv"
                )
        if path.suffix.lower() != ".gz":  # Spark picks the codec by the extension
            raise InputError(f"{name}: gzip data must end in .gz for engine 'spark'")
    if kind in ("csv", "csv.gz"):
        if kind == "csv" and path.stat().st_size == 0:
            return None
        header = ingest._csv_header(path, p.csv_separator)
        ingest._check_columns(name, header, needed, p.csv_separator)
        if ingest._has_no_data_lines(path):
            return None
        good, broken, n = _csv_source(s, path, p, needed, name)
        out = _classified(good, p, name, no)
        malformed = broken.select(
            *[
                F.lit(None).cast(t).alias(c)
                for c, t in out.dtypes
                if c not in ("reason", "detail", "raw_line", "_line", "_source_file", "_file")
            ],
            "reason",
            "detail",
            "raw_line",
            "_line",
            F.lit(name).alias("_source_file"),
            F.lit(no).alias("_file"),
        )
        return out.unionByName(malformed), n
    return _classified(_native_source(s, path, kind, needed, name), p, name, no), 0


def _read_error(kind: str, names: list[str], e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    what = "truncated or corrupt gzip data" if kind == "csv.gz" else f"cannot read it as {kind}"
    who = names[0] if len(names) == 1 else ingest._clip(str(names))
    return f"{who}: {what} ({ingest._clip(text)})"


def _write_rejects(s: Any, rejected: Path, mapped: list[str], rejects_out: Path) -> dict[str, int]:
    """Every rejected row into the one file ``rejects_out`` (streamed); counts by reason."""
    raw_names = [f"raw_{c}" for c in mapped]
    schema = {
        "reason": pl.String,
        "source_file": pl.String,
        "line_number": pl.Int64,
        "detail": pl.String,
        "raw_line": pl.String,
        **{c: pl.String for c in raw_names},
    }
    if not rejected.exists():
        pl.DataFrame(schema=schema).write_parquet(rejects_out, compression="zstd")
        return {}
    pl.scan_parquet(rejected / "*.parquet").select(
        "reason",
        pl.col("_source_file").alias("source_file"),
        pl.col("_line").cast(pl.Int64).alias("line_number"),
        "detail",
        "raw_line",
        *raw_names,
    ).cast(schema).sink_parquet(rejects_out, compression="zstd")
    counts = pl.scan_parquet(rejects_out).group_by("reason").len().collect()
    return dict(counts.iter_rows())


def _write_days(
    s: Any, kept_dir: Path, p: IngestParams, written: Path, events_out: Path
) -> tuple[int, int]:
    """Storage types, duplicates dropped, sessions derived, days written sorted.

    Returns (rows staged, rows kept).
    """
    from pyspark.sql import functions as F

    kept = s.read.parquet(str(kept_dir))
    types = _storage_types(kept)
    n_staged = types.pop("_rows")
    derive = "user_session" not in p.column_map and not p.session_from_order
    keys = [
        c
        for c in (*CANONICAL_COLUMNS, *OPTIONAL_COLUMNS, *p.carry_columns)
        if c in kept.columns and not (derive and c == "user_session")
    ]
    # ids in their storage types before the duplicates are found (as the Polars path); the
    # price keeps its source precision until then
    df = kept.select(
        *[F.col(c).cast(types[c]).alias(c) if c in layout.ID_COLUMNS else F.col(c) for c in keys],
        "_file",
        "_line",
    )
    if p.drop_duplicates:
        df = df.dropDuplicates(keys)
    df = df.withColumn("price", F.col("price").cast(types["price"]))
    if derive:
        df = _sessions(df, p.session_gap_minutes)
    order = [
        c for c in (*CANONICAL_COLUMNS, *OPTIONAL_COLUMNS, *p.carry_columns) if c in df.columns
    ]
    day = F.date_format(F.col("event_time"), "yyyy-MM-dd")
    (
        df.withColumn("event_date", day)
        .repartition("event_date")
        .sortWithinPartitions("event_date", "user_id", "event_time", "_file", "_line")
        .select(*order, "event_date")
        .write.partitionBy("event_date")
        .parquet(str(written), compression="zstd")
    )
    _move_days(written, events_out)
    files = sorted(events_out.glob("event_date=*/*.parquet"))
    n_kept = pl.scan_parquet(files).select(pl.len()).collect().item() if files else 0
    return n_staged, int(n_kept)


def ingest_path(
    path_or_glob: str,
    p: IngestParams,
    *,
    events_out: Path,
    rejects_out: Path,
    work_dir: Path | None = None,
    spark: Any = None,
) -> IngestReport:
    """Expand ``path_or_glob`` and ingest it on Spark; see :func:`ingest_files`.

    The session is stopped at the end unless it was running before the call.
    """
    running = "session" in sparkmod._active
    with expand_inputs(path_or_glob, p.format) as inputs:
        tmp = Path(tempfile.mkdtemp(prefix="ingest_spark_", dir=work_dir))
        try:
            return ingest_files(
                inputs,
                p,
                events_out=events_out,
                rejects_out=rejects_out,
                work_dir=tmp,
                spark=spark,
            )
        finally:
            if not running:
                sparkmod.stop()
            shutil.rmtree(tmp, ignore_errors=True)
