"""Raw event files -> canonical events, with every row accounted for.

Reads CSV, CSV.gz, Parquet, JSON lines or a ZIP of those (a path or a glob), maps the source's
columns and labels to the canonical schema (``customer_intel.columns``) through params, and
classifies every row: kept, rejected with a ``reason``, or an exact duplicate. Always::

    rows_in == rows_kept + rows_rejected + duplicates

The work runs in Polars, in two passes whose memory does not grow with the input: a streaming
pass maps and classifies every row and stages it by event date, then each day is deduplicated,
sorted and written on its own (see :func:`ingest_files`), so a 15 GB CSV goes through with
bounded memory. CSV lines with the wrong number of fields (a truncated last line, a stray
separator) are found by a line scan before parsing and become rejects with reason
``malformed_line``, their line number and raw text.

Reject reasons: ``malformed_line``, ``unparseable_timestamp``, ``unknown_event_type``,
``null_user_id``, ``null_product_id``, ``invalid_price`` (null, negative or not finite),
``cancelled_order`` (order-line tables, by params), ``filtered`` (a params filter excluded it).
Filters are SQL conditions checked by :mod:`customer_intel.sqlexpr`, never evaluated as Python.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from customer_intel import layout, progress, sqlexpr
from customer_intel.columns import CANONICAL_COLUMNS, EVENT_TYPES, OPTIONAL_COLUMNS
from customer_intel.params.ingest import IngestParams
from customer_intel.sources import InputError, Inputs, expand_inputs

REASONS = (
    "malformed_line",
    "unparseable_timestamp",
    "unknown_event_type",
    "null_user_id",
    "null_product_id",
    "invalid_price",
    "cancelled_order",
    "filtered",
)


@dataclass
class IngestReport:
    """Row accounting of one ingestion, and the files read (and skipped, with the reason)."""

    files: list[str]
    rows_in: int
    rows_kept: int
    duplicates: int
    rejected: dict[str, int] = field(default_factory=dict)
    file_bytes: list[int] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (archive member, reason)
    kept_without_user: int = 0  # kept rows with no user id (``require_user_id: false``)

    @property
    def rows_rejected(self) -> int:
        """All rejected rows, whatever the reason."""
        return sum(self.rejected.values())

    def check(self) -> None:
        """Raise if any row is unaccounted for."""
        total = self.rows_kept + self.rows_rejected + self.duplicates
        if total != self.rows_in:
            raise AssertionError(
                f"row accounting broken: {self.rows_in} in != {self.rows_kept} kept + "
                f"{self.rows_rejected} rejected + {self.duplicates} duplicates"
            )

    def summary(self) -> pl.DataFrame:
        """One row per metric: rows_in, rows_kept, duplicates, rows_rejected, rejected:<reason>."""
        rows = [
            ("rows_in", self.rows_in),
            ("rows_kept", self.rows_kept),
            ("duplicates", self.duplicates),
            ("rows_rejected", self.rows_rejected),
            *[(f"rejected:{r}", self.rejected.get(r, 0)) for r in REASONS],
            ("files", len(self.files)),
            ("skipped_archive_members", len(self.skipped)),
            ("kept_without_user", self.kept_without_user),
        ]
        return pl.DataFrame(rows, schema=["metric", "value"], orient="row")


_UNIT_SEP = "\x1f"  # a byte no text CSV uses: reading with it as separator yields whole lines
_STAGING_ROW_GROUP = 50_000
_REJECTED = "rejected"  # staging partition of rejected rows (kept rows are staged by date)


@dataclass
class _Source:
    """One input file, scanned lazily, with its structurally broken lines already taken out."""

    frame: pl.LazyFrame
    rows: int | None  # rows (lines) in the file, when known before the scan
    malformed: pl.DataFrame  # the broken lines: line_number, detail, raw_line
    padded: bool = True  # some text value may start or end with a blank (trim each value)


def _csv_header(path: Path, sep: str) -> list[str]:
    frame = pl.read_csv(path, separator=sep, n_rows=0, infer_schema=False)
    return frame.columns


def _broken_lines(path: Path, n_fields: int, sep: str, name: str) -> tuple[int, pl.DataFrame, bool]:
    """Data lines of a CSV, those whose field count is not ``n_fields``, and any padding.

    The third value tells whether some field may start or end with a blank.

    Hand-written because neither Polars (it pads short lines with nulls) nor DuckDB (one more
    full parse and a second engine) gives the line numbers of ragged lines in the same row order
    as the Polars scan that reads the file. Reading each line as one string and counting the
    separators outside quoted sections costs about a fifth of the full parse. The same scan
    looks for a blank next to a separator, a quote or a line end: when there is none (the usual
    case), no value needs trimming, and skipping the per-value trim saves a third of the parse.
    A false alarm (a quoted text with `` "``) only costs that time back.
    """
    lines = pl.scan_csv(
        path,
        has_header=False,
        separator=_UNIT_SEP,
        quote_char=None,
        new_columns=["raw"],
        infer_schema=False,
        skip_lines=1,
        truncate_ragged_lines=True,
    ).with_row_index("i")
    raw = pl.col("raw").fill_null("")
    quotes = raw.str.count_matches('"', literal=True)
    unquoted = pl.when(quotes > 0).then(raw.str.replace_all(r'"(?:[^"]|"")*"', "")).otherwise(raw)
    fields = unquoted.str.count_matches(sep, literal=True) + 1
    odd = quotes % 2 == 1
    flagged = lines.filter((fields != n_fields) | odd).select(
        "i", raw_line=raw, fields=fields.cast(pl.UInt32), odd=odd
    )
    # a blank beside a separator or a quote (one regex: faster here than Aho-Corasick), or at
    # either end of the line
    beside = f'[ \\t][{re.escape(sep)}"]|[{re.escape(sep)}"][ \\t]'
    ends = [raw.str.starts_with(b) | raw.str.ends_with(b) for b in (" ", "\t")]
    padded = (raw.str.contains(beside) | pl.any_horizontal(ends)).any()
    # two queries over one scan (collect_all shares it); select(pl.len()) would load the file
    broken, summary = pl.collect_all([flagged, lines.select(last=pl.col("i").max(), padded=padded)])
    last = summary["last"].item()
    n = 0 if last is None else int(last) + 1
    if broken["odd"].any():
        first = int(broken.filter("odd")["i"][0]) + 2
        raise InputError(
            f"{name}: line {first} has an unbalanced quote; a quoted field that spans lines is "
            "not supported (convert the file to Parquet, or fix the line)"
        )
    broken = broken.select(
        (pl.col("i").cast(pl.Int64) + 2).alias("line_number"),
        pl.format("expected {} fields, found {}", pl.lit(n_fields), "fields").alias("detail"),
        "raw_line",
    )
    return n, broken, bool(summary["padded"].item())


def _scan(path: Path, kind: str, sep: str, needed: list[str], name: str) -> _Source:
    """Scan one file lazily; CSV lines with the wrong number of fields are taken out.

    ``name`` is how messages call the file (an extracted archive member has a temporary path).
    """
    none = pl.DataFrame(
        schema={"line_number": pl.Int64, "detail": pl.String, "raw_line": pl.String}
    )
    try:
        if kind == "csv.gz":
            with path.open("rb") as fh:
                if fh.read(2) != b"\x1f\x8b":
                    raise InputError(
                        f"{name}: not gzip data (its .gz extension says it should be); "
                        "decompress it or set ingest.format: csv"
                    )
        if kind in ("csv", "csv.gz"):
            if kind == "csv" and path.stat().st_size == 0:  # an empty export: zero rows
                empty = pl.LazyFrame(schema={c: pl.String for c in needed})
                return _Source(empty.with_columns(_line=pl.lit(0, pl.Int64)), 0, none, False)
            header = _csv_header(path, sep)
            _check_columns(name, header, needed, sep)
            if _has_no_data_lines(path):  # a header-only file (a day without events)
                empty = pl.LazyFrame(schema={c: pl.String for c in header})
                return _Source(empty.with_columns(_line=pl.lit(0, pl.Int64)), 0, none, False)
            n, broken, padded = _broken_lines(path, len(header), sep, name)
            frame = pl.scan_csv(
                path,
                separator=sep,
                infer_schema=False,
                truncate_ragged_lines=True,
            ).with_row_index("_row")
            if broken.height:
                skip = (broken["line_number"] - 2).cast(pl.UInt32)
                frame = frame.filter(~pl.col("_row").is_in(skip.implode()))
            line = (pl.col("_row").cast(pl.Int64) + 2).alias("_line")
            return _Source(frame.with_columns(line).drop("_row"), n, broken, padded)
        if kind == "parquet":
            frame = pl.scan_parquet(path)
        elif kind == "jsonl":
            frame = pl.scan_ndjson(path, infer_schema_length=10_000)
        else:
            raise InputError(f"unsupported format {kind!r}")
        _check_columns(name, frame.collect_schema().names(), needed)
    except (pl.exceptions.PolarsError, OSError) as e:
        if "utf-8" in str(e).lower() or "utf8" in str(e).lower():
            raise InputError(_not_utf8(path, name)) from None
        what = "truncated or corrupt gzip data" if kind == "csv.gz" else f"cannot read it as {kind}"
        raise InputError(f"{name}: {what} ({_clip(str(e))})") from None
    line = (pl.col("_row").cast(pl.Int64) + 1).alias("_line")  # row number in the file
    return _Source(frame.with_row_index("_row").with_columns(line).drop("_row"), None, none)


def _has_no_data_lines(path: Path) -> bool:
    """Whether a CSV (plain or gzip) has nothing after its header line."""
    import gzip

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as fh:
        fh.readline()
        return not any(line.strip() for line in iter(lambda: fh.readline(), b""))


def _check_columns(name: str, present: list[str], needed: list[str], sep: str = ",") -> None:
    message = missing_columns_message(name, present, needed, sep)
    if message:
        raise InputError(message)


def missing_columns_message(name: str, present: list[str], needed: list[str], sep: str) -> str:
    """Which mapped columns a file lacks, what it has, and a separator hint ("" if none lack)."""
    missing = [c for c in needed if c not in present]
    if not missing:
        return ""
    hint = ""
    if len(present) == 1:
        other = next((c for c in (";", "\t", "|", ",") if c != sep and c in present[0]), None)
        if other:
            hint = f"; its header is one column: is the separator {other!r}? (ingest.csv_separator)"
    return (
        f"{name} lacks column(s) {missing} named in params (ingest.column_map/"
        f"carry_columns/cancellation_column); it has {_clip(str(sorted(present)))}{hint}"
    )


def _not_utf8(path: Path, name: str) -> str:
    """Where a file stops being UTF-8 (line and byte), and what to do about it."""
    import codecs
    import gzip

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    decoder = codecs.getincrementaldecoder("utf-8")()
    with opener(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError as e:
                return (
                    f"{name}: line {number} is not UTF-8 (byte {line[e.start]:#04x} at position "
                    f"{e.start + 1}); convert the file to UTF-8 first, e.g. "
                    "iconv -f latin1 -t utf-8 (CSV is read as UTF-8)"
                )
    return f"{name}: not UTF-8 text; convert the file to UTF-8 first"


def _clip(text: str, limit: int = 300) -> str:
    """A value quoted in a message, cut to ``limit`` characters (a 50 MB line is a value)."""
    return text if len(text) <= limit else f"{text[: limit - 1]}… [{len(text):,} characters]"


@dataclass(frozen=True)
class _Mapping:
    """What classification reads from the ``ingest`` params, as plain values.

    How source columns and labels become the canonical ones, and which rows are rejected.
    """

    column_map: dict[str, str]  # canonical name -> source column
    event_type_map: dict[str, str]  # source label -> canonical event type
    constant_event_type: str | None
    timestamp_format: str
    timezone: str
    price_is_unit_price: bool
    session_from_order: bool
    carry_columns: tuple[str, ...]
    cancellation_column: str | None
    cancellation_prefix: str
    reject_cancelled: bool
    require_user_id: bool
    filters: tuple[str, ...]

    @classmethod
    def from_params(cls, p: IngestParams) -> _Mapping:
        return cls(
            column_map=dict(p.column_map),
            event_type_map=dict(p.event_type_map),
            constant_event_type=p.constant_event_type,
            timestamp_format=p.timestamp_format,
            timezone=p.timezone,
            price_is_unit_price=p.price_is_unit_price,
            session_from_order=p.session_from_order,
            carry_columns=tuple(p.carry_columns),
            cancellation_column=p.cancellation_column,
            cancellation_prefix=p.cancellation_prefix,
            reject_cancelled=p.cancellation_rule == "reject",
            require_user_id=p.require_user_id,
            filters=tuple(p.filters),
        )

    def needed_columns(self) -> list[str]:
        """The source columns every input file must have."""
        needed = list(dict.fromkeys(self.column_map.values()))
        needed += [c for c in self.carry_columns if c not in needed]
        if self.cancellation_column and self.cancellation_column not in needed:
            needed.append(self.cancellation_column)
        return needed


def _text(e: pl.Expr, padded: bool = True) -> pl.Expr:
    """Text with surrounding blanks trimmed; empty -> null.

    The trim runs only where a value starts or ends with a blank (it is then taken from the
    stripped copy): twice as fast as stripping every value, which matters on 100M rows. With
    ``padded=False`` (the source is known to hold no padded value) only ``""`` becomes null.
    """
    s = e.cast(pl.String)
    if not padded:
        return pl.when(s != "").then(s)
    blank = (" ", "\t")
    needs_trim = pl.any_horizontal(
        [s.str.starts_with(b) for b in blank] + [s.str.ends_with(b) for b in blank] + [s == ""]
    )
    stripped = s.str.strip_chars(" \t")
    return pl.when(needs_trim).then(pl.when(stripped != "").then(stripped)).otherwise(s)


def _number(e: pl.Expr, dtype: pl.DataType, padded: bool = True) -> pl.Expr:
    if dtype == pl.String:
        return _text(e, padded).cast(pl.Float64, strict=False)
    return e.cast(pl.Float64, strict=False)


def _timestamp(
    e: pl.Expr, dtype: pl.DataType, fmt: str, timezone: str, padded: bool = True
) -> pl.Expr:
    """Source timestamps -> Datetime(us, UTC); unparseable -> null.

    ``fmt`` parses text; ``timezone`` is where times without an offset were recorded.
    """
    if isinstance(dtype, pl.Datetime):
        ts = e.dt.cast_time_unit("us")
        if dtype.time_zone is None:
            ts = ts.dt.replace_time_zone(timezone, ambiguous="null", non_existent="null")
    elif dtype == pl.Date:
        ts = e.cast(pl.Datetime("us")).dt.replace_time_zone(timezone)
    else:
        ts = _text(e, padded).str.to_datetime(fmt, strict=False, time_unit="us")
        if not any(z in fmt for z in ("%z", "%:z", "%#z")):
            ts = ts.dt.replace_time_zone(timezone, ambiguous="null", non_existent="null")
    return ts.dt.convert_time_zone("UTC")


def _event_type(label: pl.Expr, event_type_map: dict[str, str]) -> pl.Expr:
    """Source labels -> the canonical Enum; an unmapped label -> null."""
    # one branch per canonical type (is_in streams; Expr.replace holds the data in memory)
    etype = pl.lit(None, pl.String)
    for target in EVENT_TYPES:
        labels = [k for k, v in event_type_map.items() if v == target]
        if labels:
            etype = pl.when(label.is_in(labels)).then(pl.lit(target)).otherwise(etype)
    return etype.cast(pl.Enum(list(EVENT_TYPES)))


def _canonical_columns(
    schema: pl.Schema, m: _Mapping, padded: bool
) -> tuple[dict[str, pl.Expr], pl.Expr]:
    """Expressions for the canonical columns (and carried ones) of a source with ``schema``.

    Also returns whether each row is a cancelled order line (by the cancellation column, or a
    negative quantity).
    """
    cm = m.column_map

    def src(canon: str) -> pl.Expr:
        return pl.col(cm[canon])

    def text(canon: str) -> pl.Expr:
        return _text(src(canon), padded) if canon in cm else pl.lit(None, pl.String)

    def ident(canon: str) -> pl.Expr:  # integer ids stay integers; anything else is text
        if schema[cm[canon]].is_integer():
            return src(canon).cast(pl.Int64)
        return text(canon)

    if m.constant_event_type:
        etype = pl.lit(m.constant_event_type).cast(pl.Enum(list(EVENT_TYPES)))
    else:
        etype = _event_type(text("event_type"), m.event_type_map)
    qty = _number(src("quantity"), schema[cm["quantity"]], padded) if "quantity" in cm else None
    price = _number(src("price"), schema[cm["price"]], padded)
    if m.price_is_unit_price and qty is not None:
        price = price * qty
    order = text("order_id")
    event_time = _timestamp(
        src("event_time"), schema[cm["event_time"]], m.timestamp_format, m.timezone, padded
    )
    columns = {
        "event_time": event_time,
        "event_type": etype,
        "user_id": ident("user_id"),
        "user_session": order if m.session_from_order else text("user_session"),
        "product_id": ident("product_id"),
        "category_id": ident("category_id") if "category_id" in cm else pl.lit(None, pl.Int64),
        "category_code": text("category_code"),
        "brand": text("brand"),
        "price": price,
    }
    if qty is not None:
        columns["quantity"] = qty
    if "order_id" in cm:
        columns["order_id"] = order
    for c in m.carry_columns:
        columns[c] = pl.col(c).cast(pl.String)
    cancelled = pl.lit(False)
    if m.cancellation_column:
        prefix = pl.col(m.cancellation_column).cast(pl.String).str.strip_chars()
        cancelled = prefix.str.starts_with(m.cancellation_prefix).fill_null(False)
        if qty is not None:
            cancelled = cancelled | (qty < 0).fill_null(False)
    return columns, cancelled


def _reject_reason(m: _Mapping) -> pl.Expr:
    """The first failed check of a canonical row (``REASONS``), or null to keep the row."""
    checks: list[tuple[pl.Expr, str]] = []
    if m.reject_cancelled:  # first: it explains the negative price of a return
        checks.append((pl.col("_cancelled"), "cancelled_order"))
    price = pl.col("price")
    checks += [
        (pl.col("event_time").is_null(), "unparseable_timestamp"),
        (pl.col("event_type").is_null(), "unknown_event_type"),
        (pl.col("user_id").is_null() & pl.lit(m.require_user_id), "null_user_id"),
        (pl.col("product_id").is_null(), "null_product_id"),
        (price.is_null() | ~price.is_finite() | (price < 0), "invalid_price"),
    ]
    canonical = [*CANONICAL_COLUMNS, *OPTIONAL_COLUMNS, *m.carry_columns]
    for i, text in enumerate(m.filters):
        tree = sqlexpr.check(text, canonical, where=f"ingest.filters[{i}]", boolean=True)
        checks.append((~pl.sql_expr(sqlexpr.to_sql(tree)).fill_null(False), "filtered"))
    reason = pl.when(checks[0][0]).then(pl.lit(checks[0][1]))
    for cond, name in checks[1:]:
        reason = reason.when(cond).then(pl.lit(name))
    return reason.otherwise(pl.lit(None, pl.String))


def _classified(
    frame: pl.LazyFrame, m: _Mapping, padded: bool = True, source: str = ""
) -> pl.LazyFrame:
    """Canonical columns, ``reason`` (null = keep), ``_part``; provenance for rejects.

    Only rejected rows fill their raw fields, ``_line`` and ``_source_file`` (``source``);
    ``_part`` is the staging partition: the event date, or ``rejected``.

    ``padded=False`` when the source is known to hold no value with surrounding blanks.
    """
    columns, cancelled = _canonical_columns(frame.collect_schema(), m, padded)
    raw = {f"_src_{c}": pl.col(s).cast(pl.String) for c, s in m.column_map.items()}
    out = frame.select(**columns, **raw, _cancelled=cancelled, _line=pl.col("_line"))
    out = out.with_columns(reason=_reject_reason(m))
    rejected = pl.col("reason").is_not_null()
    return out.with_columns(
        *[pl.when(rejected).then(pl.col(f"_src_{c}")).alias(f"raw_{c}") for c in m.column_map],
        # where a row came from is kept for rejects only (kept rows need only their order)
        _line=pl.when(rejected).then(pl.col("_line")),
        _source_file=pl.when(rejected).then(pl.lit(source)),
        _part=pl.when(rejected)
        .then(pl.lit(_REJECTED))
        .otherwise(pl.col("event_time").dt.date().cast(pl.String)),
    ).drop([f"_src_{c}" for c in m.column_map] + ["_cancelled"])


def _drop_duplicates(day: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """``day`` without exact duplicates on ``keys`` (the first of each kept, in file order).

    ``day`` is sorted by (user_id, event_time) with ties in file order. Exact duplicates share
    their user and time, so they sit in runs of equal (user_id, event_time); only the rows of
    such runs (a few in a thousand) are compared in full. Hashing every row to find them, or a
    ``unique`` over every column, costs more than sorting the day.
    """
    same = pl.col("user_id").eq_missing(pl.col("user_id").shift(1)) & (
        pl.col("event_time") == pl.col("event_time").shift(1)
    )
    same = same.fill_null(False)
    in_run = day.select(same | same.shift(-1).fill_null(False)).to_series()
    if not in_run.any():
        return day
    candidates = day.select(*keys, _i=pl.int_range(pl.len(), dtype=pl.UInt32)).filter(in_run)
    repeats = candidates.filter(~pl.struct(keys).is_first_distinct())["_i"]
    return day.filter(pl.repeat(True, day.height, eager=True).scatter(repeats, False))


def _derive_sessions(day: pl.DataFrame, carry: pl.DataFrame, gap_minutes: int) -> pl.DataFrame:
    """Number each user's sessions (30-minute inactivity by default) across days.

    ``day`` is one date sorted by (user_id, event_time); ``carry`` holds each user's last event
    time and session count from the days before (so a session that crosses midnight goes on).
    """
    gap = pl.duration(minutes=gap_minutes)
    d = day.join(carry, on="user_id", how="left")
    first = pl.col("user_id") != pl.col("user_id").shift(1)
    previous = (
        pl.when(first.fill_null(True))
        .then(pl.col("_last"))
        .otherwise(pl.col("event_time").shift(1))
    )
    new = previous.is_null() | ((pl.col("event_time") - previous) > gap)
    d = d.with_columns(_new=new.cast(pl.Int64))
    d = d.with_columns(_k=pl.col("_n").fill_null(0) + pl.col("_new").cum_sum().over("user_id"))
    return d.with_columns(user_session=pl.format("{}-{}", pl.col("user_id"), pl.col("_k"))).drop(
        "_last", "_n", "_new"
    )


def _write_rejects(
    malformed: pl.DataFrame, rejected_dir: Path, mapped: list[str], rejects_out: Path
) -> dict[str, int]:
    """Write every rejected row (streamed from staging) to ``rejects_out``; count by reason."""
    raw_names = [f"raw_{c}" for c in mapped]
    parts = [
        malformed.lazy().select(
            pl.lit("malformed_line").alias("reason"),
            "source_file",
            "line_number",
            "detail",
            "raw_line",
            *[pl.lit(None, pl.String).alias(c) for c in raw_names],
        )
    ]
    if rejected_dir.exists():
        parts.append(
            pl.scan_parquet(rejected_dir).select(
                "reason",
                pl.col("_source_file").alias("source_file"),
                pl.col("_line").alias("line_number"),
                pl.lit(None, pl.String).alias("detail"),
                pl.lit(None, pl.String).alias("raw_line"),
                *raw_names,
            )
        )
    pl.concat(parts).sink_parquet(rejects_out, compression="zstd")
    counts = pl.scan_parquet(rejects_out).group_by("reason").len().collect()
    return dict(counts.iter_rows())


class _FinishDay:
    """Ingest's step on each day once it is sorted: drop exact duplicates, derive sessions.

    ``keys`` are the columns on which duplicates are exact (None: keep duplicates);
    ``session_gap_minutes`` derives sessions (None: the source has them). Sessions go on
    across midnight: each user's last event and session count are carried to the next day.
    """

    def __init__(self, keys: list[str] | None, session_gap_minutes: int | None) -> None:
        self.keys = keys
        self.gap = session_gap_minutes
        self.carry: pl.DataFrame | None = None

    def __call__(self, day: pl.DataFrame) -> pl.DataFrame:
        if self.keys is not None:
            day = _drop_duplicates(day, [k for k in self.keys if k in day.columns])
        if self.gap is None:
            return day
        if self.carry is None:
            self.carry = pl.DataFrame(
                schema={
                    "user_id": day.schema["user_id"],
                    "_last": pl.Datetime("us", "UTC"),
                    "_n": pl.Int64,
                }
            )
        day = _derive_sessions(day, self.carry, self.gap)
        last = day.group_by("user_id").agg(_last=pl.col("event_time").max(), _n=pl.col("_k").max())
        self.carry = pl.concat([self.carry.join(last, on="user_id", how="anti"), last])
        return day.drop("_k")


def _scan_all(inputs: Inputs, names: list[str], sep: str, needed: list[str]) -> list[_Source]:
    """Scan every input file (lazily; CSV lines with the wrong number of fields taken out)."""
    sources = []
    with progress.Progress("ingest: line scan", total=len(inputs.files), unit="files") as bar:
        for f, name in zip(inputs.files, names, strict=True):
            sources.append(_scan(f, inputs.kind, sep, needed, name))
            bar.update(1, rows=sources[-1].rows or 0)
    return sources


def _stage(frames: list[pl.LazyFrame], staging: Path, what: str) -> list[Path]:
    """Stream every classified row once into ``staging``, partitioned by ``_part``.

    Returns the day partitions (``_part=YYYY-MM-DD``, sorted); rejected rows are in
    ``_part=rejected``. Text ids are staged in the split form the layout reads
    (:func:`customer_intel.layout.split_ids`). ``what`` names the inputs in an error.
    """
    bar = progress.Progress("ingest: parse, classify and stage by day", unit="passes")
    try:
        pl.concat([layout.split_ids(f) for f in frames], how="vertical_relaxed").sink_parquet(
            pl.PartitionBy(staging, key="_part", include_key=False),
            compression="lz4",
            # each open day buffers a row group: small groups keep a 2-month input near 1 GB
            # (Polars' default took 1.4 GB at 20M events, 2.3 GB at 110M) at the same speed
            row_group_size=_STAGING_ROW_GROUP,
            mkdir=True,
        )
    except (pl.exceptions.PolarsError, OSError) as e:
        raise InputError(f"cannot read {what}: {_clip(str(e))}") from None
    bar.done = 1  # one streaming pass: nothing to report until it ends
    bar.close()
    parts = sorted(staging.glob("_part=*")) if staging.exists() else []
    return [d for d in parts if d.name != f"_part={_REJECTED}"]


def ingest_files(
    inputs: Inputs,
    p: IngestParams,
    *,
    events_out: Path,
    rejects_out: Path,
    work_dir: Path,
    row_group_size: int = layout.ROW_GROUP_SIZE,
) -> IngestReport:
    """Ingest the input files into ``events_out`` (canonical events) and ``rejects_out``.

    The flow goes one way, in two passes, both streaming or bounded by one day of events:

    1. parse and classify: every row is read once, mapped to the canonical schema and
       classified; rows are staged (LZ4 Parquet) partitioned by event date, rejected rows in a
       partition of their own, which becomes ``rejects_out``;
    2. the staged days are handed to :func:`customer_intel.layout.write_days`, which chooses
       the storage types for the whole data set, sorts each day by user and time, lets this
       module finish it (exact duplicates are dropped: they share their user and event time,
       hence their day and their place in the sort; sessions are derived when the source has
       none, carried across midnight) and writes it to
       ``events_out/event_date=YYYY-MM-DD/part-0.parquet``: the events are written once.

    Parameters
    ----------
    inputs
        Input files, their format and names (from :func:`customer_intel.sources.expand_inputs`).
    p
        The ``ingest`` params.
    events_out
        Folder to write (callers pass a temporary path and rename on success).
    rejects_out
        Parquet file of rejected rows: reason, source_file, line_number, detail, raw_line and
        the raw source fields.
    work_dir
        Scratch folder for the staging files.
    row_group_size
        Rows per Parquet row group of the written events.

    Returns
    -------
    IngestReport
        Rows in, kept, rejected by reason, duplicates; ``report.check()`` has passed.
    """
    names = [inputs.name(f) for f in inputs.files]
    work_dir.mkdir(parents=True, exist_ok=True)
    events_out.mkdir(parents=True, exist_ok=True)  # empty when every row is rejected
    mapping = _Mapping.from_params(p)
    # 1. parse and classify
    sources = _scan_all(inputs, names, p.csv_separator, mapping.needed_columns())
    frames = [
        _classified(s.frame, mapping, s.padded, name)
        for s, name in zip(sources, names, strict=True)
    ]
    staging = work_dir / "staging"
    days = _stage(frames, staging, f"{_clip(str(names))} as {inputs.kind}")
    malformed = pl.concat(
        [
            s.malformed.with_columns(source_file=pl.lit(name))
            for s, name in zip(sources, names, strict=True)
        ]
    )
    rejected_dir = staging / f"_part={_REJECTED}"
    by_reason = _write_rejects(malformed, rejected_dir, list(p.column_map), rejects_out)
    # 2. finished days, laid out and written once
    derive = "user_session" not in p.column_map and not p.session_from_order
    written = [*CANONICAL_COLUMNS, *OPTIONAL_COLUMNS, *p.carry_columns]
    # exact duplicates agree on every column read, carried ones too (two lines differing only
    # in a description are two lines); derived sessions come after deduplication
    keys = [c for c in written if not (derive and c == "user_session")]
    finish = _FinishDay(
        keys if p.drop_duplicates else None, p.session_gap_minutes if derive else None
    )
    n_staged, n_kept = layout.write_days(
        days,
        events_out,
        columns=written,
        # columns that only rejected rows fill (null here) are not read: a day's sort would
        # carry them along, at twice the memory and four times the time of the sort without
        skip={"reason", "_line", "_source_file", *(f"raw_{c}" for c in p.column_map)},
        finish=finish,
        row_group_size=row_group_size,
        label="ingest: sort, deduplicate and write days",
    )
    n_lines = sum(s.rows for s in sources if s.rows is not None)
    n_rejected = sum(by_reason.values())
    rows_in = n_staged + n_rejected
    if inputs.kind in ("csv", "csv.gz") and rows_in != n_lines:
        raise InputError(
            f"{n_lines:,} data lines in {_clip(str(names))} but {rows_in:,} rows read: "
            "a line break inside a quoted field? (not supported; convert to Parquet)"
        )
    report = IngestReport(
        files=names,
        rows_in=int(rows_in),
        rows_kept=int(n_kept),
        duplicates=int(n_staged - n_kept),
        rejected={r: int(by_reason.get(r, 0)) for r in REASONS},
        file_bytes=[Path(f).stat().st_size for f in inputs.files],
        skipped=list(inputs.skipped),
        kept_without_user=0 if p.require_user_id else _rows_without_user(events_out),
    )
    report.check()
    return report


def _rows_without_user(events_dir: Path) -> int:
    files = sorted(events_dir.rglob("*.parquet"))
    if not files:
        return 0
    return int(
        pl.scan_parquet(files).filter(pl.col("user_id").is_null()).select(pl.len()).collect().item()
    )


def ingest(
    path_or_glob: str,
    p: IngestParams,
    *,
    events_out: Path,
    rejects_out: Path,
    work_dir: Path | None = None,
    spark: dict | None = None,
) -> IngestReport:
    """Expand ``path_or_glob`` (extracting ZIPs) and ingest it; see :func:`ingest_files`.

    ``ingest.engine: spark`` reads on Spark instead (:mod:`customer_intel.ingest_spark`, on a
    session made from ``spark``, the params section), with the same outputs and report.
    """
    if p.engine == "spark":
        from customer_intel import ingest_spark

        return ingest_spark.ingest_path(
            path_or_glob, p, events_out=events_out, rejects_out=rejects_out,
            work_dir=work_dir, spark=spark,
        )  # fmt: skip
    with expand_inputs(path_or_glob, p.format) as inputs:
        tmp = Path(tempfile.mkdtemp(prefix="ingest_work_", dir=work_dir))
        try:
            return ingest_files(
                inputs,
                p,
                events_out=events_out,
                rejects_out=rejects_out,
                work_dir=tmp,
                row_group_size=p.row_group_size,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def describe(report: IngestReport) -> str:
    """One sentence on the row accounting, for the notebook."""
    parts = ", ".join(f"{n:,} {r.replace('_', ' ')}" for r, n in report.rejected.items() if n)
    return (
        f"{report.rows_in:,} rows read from {len(report.files)} file(s): {report.rows_kept:,} kept "
        f"({report.rows_kept / max(report.rows_in, 1):.2%}), {report.duplicates:,} exact "
        f"duplicates dropped, {report.rows_rejected:,} rejected"
        + (f" ({parts})." if parts else ".")
        + (
            f" Skipped {len(report.skipped)} archive member(s) that are not data: "
            + "; ".join(f"{name} ({why})" for name, why in report.skipped[:10])
            + ("; ..." if len(report.skipped) > 10 else "")
            if report.skipped
            else ""
        )
        + (
            f" {report.kept_without_user:,} kept rows have no user id: they count in baskets "
            "and are left out of every per-customer table."
            if report.kept_without_user
            else ""
        )
    )


def source_files(report: IngestReport) -> pl.DataFrame:
    """One row per input file: name, bytes read and status (``read``, or ``skipped: why``)."""
    skipped = [name for name, _ in report.skipped]
    return pl.DataFrame(
        {
            "file": [*report.files, *skipped],
            "bytes": [*report.file_bytes, *[None] * len(skipped)],
            "status": ["read"] * len(report.files) + [f"skipped: {r}" for _, r in report.skipped],
        },
        schema={"file": pl.String, "bytes": pl.Int64, "status": pl.String},
    )


def require_rows_kept(report: IngestReport) -> None:
    """Raise when ingestion kept no row at all, with the counts by reason.

    Called after the rejects and the summary are written, so the reason is in the run folder.
    """
    if report.rows_kept:
        return
    reasons = ", ".join(f"{r} {n:,}" for r, n in report.rejected.items() if n)
    dups = f", exact duplicates {report.duplicates:,}" if report.duplicates else ""
    raise InputError(
        f"no row of {report.rows_in:,} read from {len(report.files)} file(s) was kept "
        f"(rejected: {reasons or 'none'}{dups}); the ingest_rejects table has every row "
        "with its reason: check ingest.column_map, event_type_map and timestamp_format"
    )
