"""Checks of a params profile against what it names, before anything runs.

The params models check each key on its own (type, range, choices). This module checks what
needs more than the key, so that ``run_all.py`` (and ``--dry-run``) exits with code 2 before
the first stage instead of failing inside one:

- every SQL expression (ingest filters, segment rules, derived columns, row filters, exclusion
  rules) is parsed and allow-listed (:func:`customer_intel.sqlexpr.check`; nothing is run) and
  may only name columns the table it applies to has;
- the external tables named in params are opened just enough to know their columns (the
  header of each input file, inside ZIP archives too) and, for an A/B unit table, the labels
  of its group column: every mapped column, feature, metric, label and expression column must
  be there;
- the output root can be written.

Every problem is collected and reported at once, each as ``file: key.path: what is wrong``.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from customer_intel import columns as cols
from customer_intel.params import Params, ParamsError

Problem = tuple[tuple[str, ...], str]


def check(params: Params, origin: Mapping[tuple, str] | None = None, *, source: str = "") -> None:
    """Raise :class:`~customer_intel.params.ParamsError` listing every problem found.

    ``origin`` maps key paths to the file (or ``-p``) that set them, as
    :func:`customer_intel.params.load_params_with_origin` returns it; ``source`` names the
    profile for keys it does not list.
    """
    problems: list[Problem] = []
    for step in (_ingest, _segmentation, _recommendations, _experiments, _output_root):
        try:
            problems += step(params)
        except Exception as e:  # a check must never hide the real message behind a crash
            problems.append(((step.__name__.strip("_"),), f"could not be checked: {e}"))
    if problems:
        raise ParamsError(_format(problems, origin or {}, source))


def _format(problems: list[Problem], origin: Mapping[tuple, str], source: str) -> str:
    lines = []
    for key, message in problems:
        plain = tuple(k.split("[", 1)[0] for k in key)  # filters[0] was set as filters
        where = source
        for n in range(len(plain), 0, -1):
            if plain[:n] in origin:
                where = origin[plain[:n]]
                break
        lines.append(f"{where}: {'.'.join(key)}: {message}")
    return "invalid params:\n  " + "\n  ".join(lines)


def _expressions(
    items: Iterable[tuple[tuple[str, ...], str, bool]], columns: Iterable[str] | None
) -> list[Problem]:
    """Check ``(key path, expression, is_condition)`` items; ``columns=None``: names unknown."""
    from customer_intel import sqlexpr

    problems: list[Problem] = []
    known = None if columns is None else list(columns)
    for key, text, boolean in items:
        where = ".".join(key)
        try:
            sqlexpr.check(text, known if known is not None else [], where=where, boolean=boolean)
        except sqlexpr.ExpressionError as e:
            if known is None and "unknown column" in str(e):
                continue  # the table's columns are not known before the run
            problems.append((key, str(e).removeprefix(f"{where}: ")))
    return problems


# -- headers of external tables ---------------------------------------------------------------
def _csv_header(read_line: Callable[[], bytes], sep: str) -> list[str]:
    import csv

    line = read_line().decode("utf-8-sig", errors="replace").rstrip("\r\n")
    return next(csv.reader([line], delimiter=sep), [])


def table_columns(path: Path, *, separator: str = ",", name: str | None = None) -> list[str]:
    """The column names of a CSV (plain, .gz), TSV, Parquet or JSON-lines file."""
    name = name or str(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if suffix in (".jsonl", ".json", ".ndjson"):
        with path.open("rb") as fh:
            first = fh.readline()
        return list(json.loads(first)) if first.strip() else []
    if suffix == ".tsv" and separator == ",":
        separator = "\t"
    opener = gzip.open if suffix == ".gz" else open
    with opener(path, "rb") as fh:
        return _csv_header(fh.readline, separator)


def _input_headers(path_or_glob: str, separator: str) -> dict[str, list[str] | Exception]:
    """Columns of every input file (members of ZIP archives included), by file name."""
    from customer_intel.sources import matching_files, metadata_reason

    out: dict[str, list[str] | Exception] = {}
    for f in matching_files(path_or_glob):
        if f.suffix.lower() != ".zip":
            try:
                out[str(f)] = table_columns(f, separator=separator)
            except (OSError, UnicodeError, ValueError) as e:  # gzip header, bad JSON ...
                out[str(f)] = e
            continue
        with zipfile.ZipFile(f) as archive:
            for member in archive.infolist():
                if member.is_dir() or metadata_reason(member.filename):
                    continue
                inner = Path(member.filename)
                with archive.open(member) as fh:
                    if inner.suffix.lower() in (".csv", ".tsv", ".txt"):
                        out[f"{f}!{member.filename}"] = _csv_header(fh.readline, separator)
                    elif inner.suffix.lower() in (".jsonl", ".json", ".ndjson"):
                        out[f"{f}!{member.filename}"] = list(json.loads(fh.readline()))
    return out


# -- sections ---------------------------------------------------------------------------------
def _ingest(params: Params) -> list[Problem]:
    p = params.ingest
    known = [*cols.CANONICAL_COLUMNS, *cols.OPTIONAL_COLUMNS, *p.carry_columns]
    problems = _expressions(
        ((("ingest", f"filters[{i}]"), t, True) for i, t in enumerate(p.filters)), known
    )
    if p.input_path:
        needed = sorted(
            {*p.column_map.values(), *p.carry_columns}
            | ({p.cancellation_column} if p.cancellation_column else set())
        )
        from customer_intel.ingest import missing_columns_message

        for name, header in _input_headers(p.input_path, p.csv_separator).items():
            if isinstance(header, Exception):
                problems.append(
                    (("ingest", "input_path"), f"{name}: cannot read its header: {header}")
                )
                continue
            message = missing_columns_message(name, header, needed, p.csv_separator)
            if message and header:  # an empty file has no header: it is zero rows
                problems.append((("ingest", "column_map"), message))
    return problems


def _recommendations(params: Params) -> list[Problem]:
    r = params.recommendations
    if not r.exclude_where:
        return []
    known = [*cols.CANONICAL_COLUMNS, *cols.OPTIONAL_COLUMNS, *params.ingest.carry_columns]
    return _expressions([(("recommendations", "exclude_where"), r.exclude_where, True)], known)


def _clustered_columns(params: Params) -> list[str] | None:
    s = params.segmentation
    if s.cluster_source == "warehouse":
        return list(cols.BEHAVIOURAL_FEATURE_COLUMNS)
    if s.cluster_source == "attributes" and s.attributes_path:
        return table_columns(Path(s.attributes_path), separator=s.attributes_separator)
    if s.cluster_source == "sample_customers" and not params.ingest.input_path:
        from customer_intel import synth
        from customer_intel.paths import resolve

        folder = synth.sample_dir(
            resolve(params.common.data_dir), params.ingest.sample_events, params.common.seed
        )
        if (folder / "customers.csv").exists():
            return table_columns(folder / "customers.csv")
    return None  # not known before the run (the sample is generated by 01_ingest)


def _segmentation(params: Params) -> list[Problem]:
    s = params.segmentation
    problems = _expressions(
        (
            (("segmentation", f"segment_rules[{i}]", name), cond, True)
            for i, rule in enumerate(s.segment_rules)
            for name, cond in rule.items()
        ),
        ["r", "f", "m"],
    )
    table = _clustered_columns(params)
    names = list(table) if table is not None else None
    for name, text in s.derived_columns.items():
        problems += _expressions([(("segmentation", "derived_columns", name), text, False)], names)
        if names is not None:
            names.append(name)
    problems += _expressions(
        ((("segmentation", f"row_filters[{i}]"), t, True) for i, t in enumerate(s.row_filters)),
        names,
    )
    if names is not None:
        for key in ("numeric_features", "categorical_features", "log_features"):
            unknown = [c for c in getattr(s, key) if c not in names]
            if unknown:
                problems.append(
                    (
                        ("segmentation", key),
                        f"column(s) {unknown} not in the clustered table "
                        f"({s.cluster_source}); it has {_clip(names)}",
                    )
                )
        for key in ("id_column", "value_column"):
            if getattr(s, key) not in names:
                problems.append(
                    (
                        ("segmentation", key),
                        f"column {getattr(s, key)!r} not in the clustered table "
                        f"({s.cluster_source}); it has {_clip(names)}",
                    )
                )
    return problems


def _experiments(params: Params) -> list[Problem]:
    e = params.experiments
    if e.units_path:
        path = Path(e.units_path)
        names = table_columns(path, separator=e.units_separator)
        labels = _labels(path, e.group_column, e.units_separator) if e.group_column in names else []
        what = str(path)
    else:
        names = list(cols.UNIT_OUTCOME_COLUMNS)
        labels = list(cols.SAMPLE_EXPERIMENT_LABELS) if not params.ingest.input_path else []
        what = "the unit table built from the sample's assignments"
    problems = _expressions(
        ((("experiments", f"exclude[{i}]"), t, True) for i, t in enumerate(e.exclude)), names
    )
    needed = {
        "unit_column": [e.unit_column],
        "group_column": [e.group_column],
        "segments": list(e.segments),
    }
    for i, m in enumerate(e.metrics):
        needed[f"metrics[{i}]"] = [c for c in (m.get("column"), m.get("covariate")) if c]
    for key, wanted in needed.items():
        missing = [c for c in wanted if c not in names]
        if missing:
            problems.append(
                (("experiments", key), f"column(s) {missing} not in {what}; it has {_clip(names)}")
            )
    if labels:
        found = f"the group column {e.group_column!r} holds {_clip(labels)}"
        for key in ("control_label", "treatment_label"):
            if getattr(e, key) not in labels:
                problems.append(
                    (("experiments", key), f"label {getattr(e, key)!r} not in the data: {found}")
                )
        absent = [k for k in e.intended_split if k not in labels]
        if absent:
            problems.append(
                (("experiments", "intended_split"), f"label(s) {absent} not in the data: {found}")
            )
    return problems


def _labels(path: Path, column: str, separator: str) -> list[str]:
    """Distinct values of one column of an external table (a one-column scan)."""
    import polars as pl

    if path.suffix.lower() == ".parquet":
        frame = pl.scan_parquet(path)
    else:
        sep = "\t" if path.suffix.lower() == ".tsv" and separator == "," else separator
        frame = pl.scan_csv(path, separator=sep, infer_schema=False)
    values = frame.select(pl.col(column).cast(pl.String).unique()).collect()[column]
    return sorted(str(v) for v in values.drop_nulls().head(1000))


def _output_root(params: Params) -> list[Problem]:
    from customer_intel.paths import resolve

    root = resolve(params.common.output_root)
    probe = root
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return [(("common", "output_root"), f"{root}: {probe} is not a folder")]
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".write_check_"):
            pass
    except OSError as e:
        return [(("common", "output_root"), f"{root} cannot be written ({e.strerror} in {probe})")]
    if not os.access(probe, os.W_OK | os.X_OK):
        return [(("common", "output_root"), f"{root} cannot be written")]
    return []


def _clip(values: Any, limit: int = 300) -> str:
    text = str(values)
    return text if len(text) <= limit else text[: limit - 1] + f"… [{len(values)} names]"
