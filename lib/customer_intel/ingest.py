"""Raw event files -> canonical events, with every row accounted for.

Reads CSV, CSV.gz, Parquet, JSON lines or a ZIP of those (a path or a glob), maps the source's
columns and labels to the canonical schema (``customer_intel.columns``) through params, and
classifies every row: kept, rejected with a ``reason``, or an exact duplicate. Always::

    rows_in == rows_kept + rows_rejected + duplicates

The work runs in DuckDB, streaming, with a memory cap (it spills to disk beyond it), so a 15 GB
CSV goes through in bounded memory. DuckDB's CSV reader records structurally broken lines
(wrong number of fields, a truncated last line) in its reject tables instead of failing; those
become rejects with reason ``malformed_line`` and their line number.

Reject reasons: ``malformed_line``, ``unparseable_timestamp``, ``unknown_event_type``,
``null_user_id``, ``null_product_id``, ``invalid_price`` (null, negative or not finite),
``cancelled_order`` (order-line tables, by params), ``filtered`` (a params filter excluded it).
Filters are SQL conditions checked by :mod:`customer_intel.sqlexpr`, never evaluated as Python.
"""

from __future__ import annotations

import glob
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from customer_intel import sqlexpr
from customer_intel.columns import CANONICAL_COLUMNS, EVENT_TYPES, OPTIONAL_COLUMNS
from customer_intel.params.ingest import IngestParams

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
_FORMATS = {
    ".csv": "csv",
    ".gz": "csv.gz",
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".zip": "zip",
}


class IngestError(ValueError):
    """The input cannot be ingested as configured (missing file or column, bad format)."""


@dataclass
class IngestReport:
    """Row accounting of one ingestion."""

    files: list[str]
    rows_in: int
    rows_kept: int
    duplicates: int
    rejected: dict[str, int] = field(default_factory=dict)
    file_bytes: list[int] = field(default_factory=list)

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
        ]
        return pl.DataFrame(rows, schema=["metric", "value"], orient="row")


def detect_format(path: str | Path, fmt: str = "auto") -> str:
    """The input format from params, or from the file extension when ``auto``."""
    if fmt != "auto":
        return fmt
    suffix = Path(str(path)).suffix.lower()
    if suffix not in _FORMATS:
        raise IngestError(
            f"cannot tell the format of {path} from its extension; set ingest.format "
            f"(one of {sorted(set(_FORMATS.values()))})"
        )
    return _FORMATS[suffix]


@contextmanager
def expand_inputs(path_or_glob: str, fmt: str = "auto") -> Iterator[tuple[list[Path], str]]:
    """Yield the input files and their format; a ZIP is extracted to a temporary folder."""
    files = sorted(Path(p) for p in glob.glob(str(path_or_glob), recursive=True))
    if not files:
        raise IngestError(f"ingest.input_path: no file matches {path_or_glob!r}")
    formats = {detect_format(f, fmt) for f in files}
    if len(formats) > 1:
        raise IngestError(f"ingest.input_path matches files of several formats {sorted(formats)}")
    (kind,) = formats
    if kind != "zip":
        yield files, kind
        return
    tmp = Path(tempfile.mkdtemp(prefix="ingest_zip_"))
    try:
        inner: list[Path] = []
        for z in files:
            with zipfile.ZipFile(z) as archive:
                for member in archive.infolist():
                    if member.is_dir() or member.filename.startswith(("__MACOSX", ".")):
                        continue
                    target = tmp / z.stem / Path(member.filename).name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as src, target.open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    inner.append(target)
        kinds = {detect_format(p) for p in inner}
        if len(kinds) != 1 or "zip" in kinds:
            raise IngestError(f"the ZIP archive(s) {files} hold files of formats {sorted(kinds)}")
        yield sorted(inner), kinds.pop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _source_sql(files: list[Path], kind: str, sep: str) -> str:
    names = "[" + ", ".join(_lit(str(f)) for f in files) + "]"
    if kind in ("csv", "csv.gz"):
        return (
            f"read_csv({names}, header=true, all_varchar=true, store_rejects=true, "
            f"delim={_lit(sep)}, filename='_source_file')"
        )
    if kind == "parquet":
        return f"read_parquet({names}, filename='_source_file', union_by_name=true)"
    if kind == "jsonl":
        return (
            f"read_json({names}, format='newline_delimited', filename='_source_file', "
            "union_by_name=true)"
        )
    raise IngestError(f"unsupported format {kind!r}")


def _classified_sql(source: str, columns: dict[str, str], p: IngestParams) -> str:
    """SELECT of canonical columns plus ``reason`` (NULL = keep) for every source row."""
    missing = sorted(
        {src for src in p.column_map.values() if src not in columns}
        | {c for c in p.carry_columns if c not in columns}
        | ({p.cancellation_column} - set(columns) if p.cancellation_column else set())
    )
    if missing:
        present = sorted(c for c in columns if c != "_source_file")
        raise IngestError(
            f"the input lacks column(s) {missing} named in params (ingest.column_map/"
            f"carry_columns); it has {present}"
        )
    m = p.column_map

    def src(canon: str) -> str:
        return _q(m[canon]) if canon in m else "NULL"

    def text(canon: str) -> str:
        return f"NULLIF(TRIM(CAST({src(canon)} AS VARCHAR)), '')" if canon in m else "NULL::VARCHAR"

    ts_type = columns.get(m["event_time"], "VARCHAR").upper()
    if "TIMESTAMP" in ts_type and "TIME ZONE" in ts_type:
        ts = f"CAST({src('event_time')} AS TIMESTAMPTZ)"
    elif "TIMESTAMP" in ts_type or ts_type == "DATE":
        ts = f"timezone({_lit(p.timezone)}, CAST({src('event_time')} AS TIMESTAMP))"
    else:
        ts = (
            f"timezone({_lit(p.timezone)}, try_strptime("
            f"TRIM(CAST({src('event_time')} AS VARCHAR)), {_lit(p.timestamp_format)}))"
        )
    if p.constant_event_type:
        etype = _lit(p.constant_event_type)
    else:
        cases = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in p.event_type_map.items())
        etype = f"CASE TRIM(CAST({src('event_type')} AS VARCHAR)) {cases} ELSE NULL END"
    qty = f"TRY_CAST({src('quantity')} AS DOUBLE)" if "quantity" in m else "NULL::DOUBLE"
    price = f"TRY_CAST({src('price')} AS DOUBLE)"
    if p.price_is_unit_price:
        price = f"({price} * {qty})"
    order = text("order_id")
    session = order if p.session_from_order else text("user_session")
    cancelled = "FALSE"
    if p.cancellation_column:
        col = f"CAST({_q(p.cancellation_column)} AS VARCHAR)"
        cancelled = f"coalesce(starts_with({col}, {_lit(p.cancellation_prefix)}), FALSE)"
        if "quantity" in m:
            cancelled = f"({cancelled} OR coalesce({qty} < 0, FALSE))"
    carry = "".join(f", CAST({_q(c)} AS VARCHAR) AS {_q(c)}" for c in p.carry_columns)
    raw = ", ".join(f"CAST({_q(s)} AS VARCHAR) AS {_q('raw_' + c)}" for c, s in m.items())
    return f"""
    SELECT
        {ts} AS event_time,
        {etype} AS event_type,
        {text("user_id")} AS user_id,
        {session} AS user_session,
        {text("product_id")} AS product_id,
        {text("category_id")} AS category_id,
        {text("category_code")} AS category_code,
        {text("brand")} AS brand,
        {price} AS price,
        {qty} AS quantity,
        {order} AS order_id
        {carry},
        {raw},
        _source_file,
        {cancelled} AS _cancelled
    FROM {source}
    """


def _reason_sql(p: IngestParams, canonical: list[str]) -> str:
    checks = []
    if p.cancellation_rule == "reject":  # first: it explains the negative price of a return
        checks.append(("_cancelled", "cancelled_order"))
    checks += [
        ("event_time IS NULL", "unparseable_timestamp"),
        ("event_type IS NULL", "unknown_event_type"),
        ("user_id IS NULL", "null_user_id"),
        ("product_id IS NULL", "null_product_id"),
        ("price IS NULL OR NOT isfinite(price) OR price < 0", "invalid_price"),
    ]
    for i, text in enumerate(p.filters):
        tree = sqlexpr.check(text, canonical, where=f"ingest.filters[{i}]", boolean=True)
        checks.append((f"NOT coalesce(({sqlexpr.to_sql(tree)}), FALSE)", "filtered"))
    whens = " ".join(f"WHEN {cond} THEN {_lit(reason)}" for cond, reason in checks)
    return f"CASE {whens} ELSE NULL END"


def ingest_files(
    files: list[Path],
    kind: str,
    p: IngestParams,
    *,
    events_out: Path,
    rejects_out: Path,
    work_dir: Path,
) -> IngestReport:
    """Ingest ``files`` into ``events_out`` (canonical Parquet) and ``rejects_out``.

    Parameters
    ----------
    files, kind
        Input files and their format (from :func:`expand_inputs`).
    p
        The ``ingest`` params.
    events_out, rejects_out
        Parquet files to write (callers pass temporary paths and rename on success).
    work_dir
        Scratch folder for DuckDB's spill files and the staging Parquet.

    Returns
    -------
    IngestReport
        Rows in, kept, rejected by reason, duplicates; ``report.check()`` has passed.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = {_lit(p.memory_limit)}")
        con.execute(f"SET temp_directory = {_lit(str(work_dir / 'spill'))}")
        con.execute("SET preserve_insertion_order = false")
        source = _source_sql(files, kind, p.csv_separator)
        try:
            described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        except duckdb.Error as e:
            raise IngestError(f"cannot read {[str(f) for f in files]} as {kind}: {e}") from None
        columns = {row[0]: row[1] for row in described}
        classified = _classified_sql(source, columns, p)
        canonical = [*CANONICAL_COLUMNS, *OPTIONAL_COLUMNS, *p.carry_columns]
        reason = _reason_sql(p, canonical)
        staging = work_dir / "staging.parquet"
        # Raw source fields are kept only on rejected rows (they are what a reject report needs);
        # on kept rows they would double the staging data for nothing.
        raw_keep = ", ".join(
            f"CASE WHEN reason IS NOT NULL THEN {_q('raw_' + c)} END AS {_q('raw_' + c)}"
            for c in p.column_map
        )
        raw_drop = ", ".join(_q("raw_" + c) for c in p.column_map)
        con.execute(
            f"COPY (SELECT * EXCLUDE ({raw_drop}), {raw_keep} FROM "
            f"(SELECT *, {reason} AS reason FROM ({classified}))) TO {_lit(str(staging))} "
            "(FORMAT parquet, COMPRESSION zstd)"
        )
        malformed = 0
        if kind in ("csv", "csv.gz"):
            malformed = con.execute(
                "SELECT count(DISTINCT (file_id, line)) FROM reject_errors"
            ).fetchone()[0]
        staged = f"read_parquet({_lit(str(staging))})"
        by_reason = dict(
            con.execute(f"SELECT reason, count(*) FROM {staged} GROUP BY reason").fetchall()
        )
        n_ok = by_reason.pop(None, 0)
        event_enum = "ENUM(" + ", ".join(_lit(t) for t in EVENT_TYPES) + ")"
        keys = ", ".join([*CANONICAL_COLUMNS, *OPTIONAL_COLUMNS])
        dedup = f"QUALIFY row_number() OVER (PARTITION BY {keys}) = 1" if p.drop_duplicates else ""
        kept = f"SELECT * FROM {staged} WHERE reason IS NULL {dedup}"
        gap = int(p.session_gap_minutes)
        if "user_session" in p.column_map or p.session_from_order:
            sessioned = f"SELECT * FROM ({kept})"
        else:
            sessioned = f"""
            SELECT * REPLACE (user_id || '-' || CAST(sum(_new) OVER (PARTITION BY user_id
                ORDER BY event_time ROWS UNBOUNDED PRECEDING) AS VARCHAR) AS user_session)
            FROM (SELECT *, CASE WHEN event_time - lag(event_time) OVER (PARTITION BY user_id
                ORDER BY event_time) <= INTERVAL {gap} MINUTE THEN 0 ELSE 1 END AS _new
                FROM ({kept}))"""
        optional = [c for c in OPTIONAL_COLUMNS if c in p.column_map]
        carry = [_q(c) for c in p.carry_columns]
        select = ", ".join(
            [
                "event_time",
                f"CAST(event_type AS {event_enum}) AS event_type",
                *CANONICAL_COLUMNS[2:],  # user_id .. price
                *optional,
                *carry,
            ]
        )
        con.execute(
            f"COPY (SELECT {select} FROM ({sessioned})) TO {_lit(str(events_out))} "
            "(FORMAT parquet, COMPRESSION zstd)"
        )
        n_kept = con.execute(
            f"SELECT count(*) FROM read_parquet({_lit(str(events_out))})"
        ).fetchone()[0]
        raw_cols = [c for c in con.execute(f"DESCRIBE SELECT * FROM {staged}").fetchall()]
        raw_names = [c[0] for c in raw_cols if c[0].startswith("raw_")]
        raw_select = ", ".join(_q(c) for c in raw_names)
        structural = (
            "SELECT NULL::VARCHAR AS reason_dummy"
            if kind not in ("csv", "csv.gz")
            else f"""SELECT 'malformed_line' AS reason, s.file_path AS source_file,
                   CAST(e.line AS BIGINT) AS line_number,
                   e.error_type || ': ' || e.error_message AS detail, e.csv_line AS raw_line,
                   {", ".join("NULL::VARCHAR AS " + _q(c) for c in raw_names)}
               FROM (SELECT DISTINCT ON (file_id, line) * FROM reject_errors) e
               JOIN reject_scans s USING (scan_id, file_id)"""
        )
        semantic = (
            f"SELECT reason, _source_file AS source_file, NULL::BIGINT AS line_number, "
            f"NULL::VARCHAR AS detail, NULL::VARCHAR AS raw_line, {raw_select} "
            f"FROM {staged} WHERE reason IS NOT NULL"
        )
        rejects_sql = (
            semantic
            if kind not in ("csv", "csv.gz")
            else f"{structural} UNION ALL BY NAME {semantic}"
        )
        con.execute(
            f"COPY ({rejects_sql}) TO {_lit(str(rejects_out))} (FORMAT parquet, COMPRESSION zstd)"
        )
    finally:
        con.close()
    rejected = {r: int(by_reason.get(r, 0)) for r in REASONS}
    rejected["malformed_line"] = int(malformed)
    report = IngestReport(
        files=[str(f) for f in files],
        rows_in=int(n_ok + sum(by_reason.values()) + malformed),
        rows_kept=int(n_kept),
        duplicates=int(n_ok - n_kept),
        rejected=rejected,
        file_bytes=[Path(f).stat().st_size for f in files],
    )
    report.check()
    return report


def ingest(
    path_or_glob: str,
    p: IngestParams,
    *,
    events_out: Path,
    rejects_out: Path,
    work_dir: Path | None = None,
) -> IngestReport:
    """Expand ``path_or_glob`` (extracting ZIPs) and ingest it; see :func:`ingest_files`."""
    with expand_inputs(path_or_glob, p.format) as (files, kind):
        tmp = Path(tempfile.mkdtemp(prefix="ingest_work_", dir=work_dir))
        try:
            return ingest_files(
                files, kind, p, events_out=events_out, rejects_out=rejects_out, work_dir=tmp
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
    )


def resolve_source(p: IngestParams, *, data_dir: str, seed: int) -> tuple[str, Path | None]:
    """The input path or glob to ingest, and the generated sample's folder when there is one.

    With no ``input_path`` the built-in sample (``sample_events`` events, ``seed``) is generated
    once and cached under ``<data_dir>/raw/``.
    """
    from customer_intel import synth  # the generator is only needed without an input path
    from customer_intel.paths import resolve

    if p.input_path:
        return p.input_path, None
    folder = synth.ensure_sample(resolve(data_dir), p.sample_events, seed)
    return str(folder / "events.csv"), folder


def sample_side_tables(sample_folder: Path | None) -> dict[str, pl.DataFrame]:
    """The generated sample's assignments and customers tables (copied into the run).

    Later stages read them from the run folder, never from ``data/`` (and never ``truth/``).
    """
    if sample_folder is None:
        return {}
    return {
        "sample_assignments": pl.read_parquet(sample_folder / "assignments.parquet"),
        "sample_customers": pl.read_csv(sample_folder / "customers.csv", try_parse_dates=True),
    }


def source_files(report: IngestReport) -> pl.DataFrame:
    """One row per ingested file: path and bytes on disk."""
    return pl.DataFrame(
        {"file": report.files, "bytes": report.file_bytes},
        schema={"file": pl.String, "bytes": pl.Int64},
    )


def read_table_file(path: str | Path, *, separator: str = ",") -> pl.DataFrame:
    """Read an external table (CSV, TSV, Parquet) named in params, e.g. customer attributes."""
    path = Path(path)
    if not path.exists():
        raise IngestError(f"file not found: {path}")
    if path.suffix.lower() == ".parquet":
        return pl.read_parquet(path)
    sep = "\t" if path.suffix.lower() == ".tsv" and separator == "," else separator
    try:
        return pl.read_csv(path, separator=sep, try_parse_dates=True, infer_schema_length=10_000)
    except pl.exceptions.PolarsError as e:
        raise IngestError(f"cannot read {path} as a table (separator {sep!r}): {e}") from None
