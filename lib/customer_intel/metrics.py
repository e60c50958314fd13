"""Metrics declared in params, computed on the engine: Ibis expressions in, Polars frames out.

Each metric (:class:`customer_intel.params.metrics.MetricSpec`) reads a source (the warehouse's
``events``, a table another stage wrote, or a file with a column mapping), applies its derived
columns and ``filter`` (SQL checked by :mod:`customer_intel.sqlexpr`, run by the engine), adds
its time grains (``Day``, ``Week`` (Monday), ``Month``, ``Quarter``, ``Year``: the start date
of the period, UTC) and aggregates by ``group_by``. Row-level work runs on DuckDB through Ibis;
only the aggregated table (one row per group) comes back to Polars.

Score definitions (the tests hold each to a hand-computed table and a reference library):

``conversion``
    ``Positives`` and ``Negatives`` count rows whose ``outcome`` is in ``positive`` /
    ``negative`` (with ``unit``: distinct units, a unit with any positive row is positive, one
    with only negative rows negative); ``ConversionRate = Positives / (Positives + Negatives)``;
    ``StdErr = sqrt(r (1 - r) / Total)``; ``Revenue`` sums ``value`` over positive rows.
``engagement``
    the same counts; ``CTR`` over all rows, ``CTR_control`` over rows whose ``group_column`` is
    ``control_label``, ``CTR_test`` over the others, ``Lift = CTR_test / CTR_control - 1``.
``descriptive``
    per column: ``Count`` (non-null), ``Sum``, ``Mean``, exact ``Median``/``p25``/``p75``/
    ``p90``/``p95`` (linear interpolation, numpy's default), ``Std`` and ``Var`` with ddof 1,
    ``Skew`` = Bowley's quartile skewness ``(p75 + p25 - 2 p50) / (p75 - p25)``.
``model_scores``
    ``AUC`` (ROC) and ``AveragePrecision`` of ``score_column`` against ``outcome in positive``,
    exact and rank-based (ties count one half, as scikit-learn's ``roc_auc_score``; AP as
    ``average_precision_score``: precision at each distinct threshold weighted by the recall it
    adds), from per-score counts and cumulative sums on the engine: no sketch, no sample.
``experiment``
    per group and (control, other arm) pair: the counts, rates, pooled two-proportion z-test,
    G-test, Pearson chi-square (no continuity correction) and the odds ratio with Woolf's
    interval, by :mod:`customer_intel.experiments`.
``clv``
    per customer (rows whose ``outcome`` is in ``positive`` when the source has ``outcome``):
    recency and tenure in days before the source's last time, frequency = purchase days,
    monetary = value per purchase day, ``CLV = monetary * frequency / (tenure + 1) * 365.25 *
    lifespan_years`` (undiscounted); the table has their means per group and ``Customers``.
    Time grains group customers by the period of their first purchase (cohorts).
``forecast``
    see :mod:`customer_intel.forecast`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from pathlib import Path

import ibis
import polars as pl

from customer_intel import columns as C
from customer_intel import experiments, sqlexpr, warehouse
from customer_intel.params.metrics import TIME_GRAINS, MetricSpec

GRAIN_UNITS = {"Day": "D", "Week": "W", "Month": "M", "Quarter": "Q", "Year": "Y"}
QUANTILES = {"Median": 0.5, "p25": 0.25, "p75": 0.75, "p90": 0.9, "p95": 0.95}

__all__ = ["compute", "prepare", "read_source", "metric_table_name", "GRAIN_UNITS"]


def metric_table_name(name: str) -> str:
    """The run table of a metric."""
    return f"metric_{name}"


# -- sources ------------------------------------------------------------------------------------
def read_source(
    spec: MetricSpec, con: ibis.BaseBackend, *, table_path: Path | None = None, base_dir: Path
) -> ibis.Table:
    """The metric's rows as an Ibis table on ``con``.

    ``events`` is the warehouse view; a run table is read from ``table_path``; a file is read
    by DuckDB and its columns renamed by ``source.column_map`` (metric name -> file column).
    """
    kind = spec.source_kind()
    if kind == "events":
        return con.table("events")
    if kind == "table":
        if table_path is None:
            raise ValueError(f"metric {spec.name!r}: table {spec.source.table!r} was not found")
        return con.read_parquet(str(table_path))
    path = Path(spec.source.path).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if path.suffix == ".parquet":
        t = con.read_parquet(str(path))
    else:
        t = con.read_csv(str(path), delim=spec.source.separator)
    return t.rename({metric: col for metric, col in spec.source.column_map.items()})


# -- row preparation ---------------------------------------------------------------------------
_ALIASES = itertools.count()


def _sql(t: ibis.Table, select: str) -> ibis.Table:
    # each step names its input afresh: Ibis turns nested aliases into CTEs, which must differ
    name = f"src_{next(_ALIASES)}"
    return t.alias(name).sql(select.replace("FROM src", f"FROM {name}"), dialect="duckdb")


def prepare(t: ibis.Table, spec: MetricSpec) -> ibis.Table:
    """Derived columns, the filter and the time grains of ``group_by``, as Ibis expressions."""
    for name, text in spec.derived.items():
        tree = sqlexpr.check(text, t.columns, where=f"metrics.{spec.name}.derived.{name}")
        t = _sql(t, f'SELECT *, {sqlexpr.to_sql(tree)} AS "{name}" FROM src')
    if spec.filter:
        tree = sqlexpr.check(
            spec.filter, t.columns, where=f"metrics.{spec.name}.filter", boolean=True
        )
        t = _sql(t, f"SELECT * FROM src WHERE {sqlexpr.to_sql(tree)}")
    missing = sorted(
        {c for c in spec.group_columns() if c not in t.columns}
        | ({spec.time_column} - set(t.columns) if spec.grains() else set())
    )
    if missing:
        raise ValueError(
            f"metric {spec.name!r}: its source lacks column(s) {missing}; it has {t.columns}"
        )
    if spec.kind != "clv":  # clv groups customers by their first purchase instead
        t = add_grains(t, spec.grains(), spec.time_column)
    return t


def add_grains(t: ibis.Table, grains: Iterable[str], time_column: str) -> ibis.Table:
    """Add one date column per grain: the start of the period ``time_column`` falls in."""
    grains = list(grains)
    if not grains:
        return t
    return t.mutate(**{g: period_start(t, time_column, GRAIN_UNITS[g]) for g in grains})


def period_start(t: ibis.Table, time_column: str, unit: str) -> ibis.DateValue:
    """The first day of the ``unit`` period (an Ibis unit: D, W, M, ...) ``time_column`` is in.

    The events' ``event_time`` is read through ``event_date``, its UTC date (the day partition
    each event is stored in, :func:`warehouse.event_day`): DuckDB converts a time-zone-aware
    timestamp to a date through ICU, which took 11 of the 16 s of ``daily_conversion``'s query
    over 18M events.
    """
    if time_column == C.EVENT_TIME and C.EVENT_DATE in t.columns:
        day = warehouse.event_day(t)
        return day if unit == "D" else day.truncate(unit).cast("date")
    return t[time_column].cast("timestamp").truncate(unit).cast("date")


def _keys(spec: MetricSpec) -> list[str]:
    return [*spec.grains(), *spec.group_columns()]


def _label(t: ibis.Table, column: str, labels: list) -> ibis.BooleanValue:
    return t[column].isin(labels).fill_null(False)


def _agg(t: ibis.Table, keys: list[str], **aggs) -> ibis.Table:
    """Aggregate by ``keys``, or over the whole table when there are none."""
    return t.group_by(keys).agg(**aggs) if keys else t.aggregate(**aggs)


def _collect(expr: ibis.Table, keys: list[str]) -> pl.DataFrame:
    df = expr.to_polars()
    return df.sort(keys, nulls_last=True) if keys else df


# -- kinds -------------------------------------------------------------------------------------
def conversion(t: ibis.Table, spec: MetricSpec) -> pl.DataFrame:
    """Positives, negatives, conversion rate, its standard error and revenue per group."""
    keys = _keys(spec)
    t = t.mutate(
        _pos=_label(t, spec.outcome, spec.positive),
        _neg=_label(t, spec.outcome, spec.negative),
    )
    has_value = spec.value in t.columns
    t = t.mutate(_rev=t._pos.ifelse(t[spec.value].cast("float64"), 0.0) if has_value else 0.0)
    if spec.unit:
        t = t.group_by([*keys, spec.unit]).agg(
            _pos=t._pos.max(), _neg=t._neg.max(), _rev=t._rev.sum()
        )
        t = t.mutate(_neg=t._neg & ~t._pos)
    agg = _agg(
        t,
        keys,
        Positives=t._pos.cast("int64").sum(),
        Negatives=t._neg.cast("int64").sum(),
        Revenue=t._rev.sum(),
    )
    df = _collect(agg, keys)
    total = pl.col("Positives") + pl.col("Negatives")
    rate = pl.when(total > 0).then(pl.col("Positives") / total)
    df = df.with_columns(Total=total, ConversionRate=rate).with_columns(
        StdErr=(pl.col("ConversionRate") * (1 - pl.col("ConversionRate")) / pl.col("Total")).sqrt()
    )
    return df.select(*keys, *spec.chosen_scores())


def engagement(t: ibis.Table, spec: MetricSpec) -> pl.DataFrame:
    """CTR overall, of the test and control rows, and the lift of test over control."""
    keys = _keys(spec)
    pos = _label(t, spec.outcome, spec.positive)
    neg = _label(t, spec.outcome, spec.negative)
    ctl = (t[spec.group_column] == spec.control_label).fill_null(False)
    t = t.mutate(_pos=pos, _neg=neg, _ctl=ctl)
    agg = _agg(
        t,
        keys,
        Positives=t._pos.cast("int64").sum(),
        Negatives=t._neg.cast("int64").sum(),
        _pc=(t._pos & t._ctl).cast("int64").sum(),
        _nc=(t._neg & t._ctl).cast("int64").sum(),
        _pt=(t._pos & ~t._ctl).cast("int64").sum(),
        _nt=(t._neg & ~t._ctl).cast("int64").sum(),
    )
    df = _collect(agg, keys)

    def rate(p: str, n: str) -> pl.Expr:
        d = pl.col(p) + pl.col(n)
        return pl.when(d > 0).then(pl.col(p) / d)

    df = df.with_columns(
        Total=pl.col("Positives") + pl.col("Negatives"),
        CTR=rate("Positives", "Negatives"),
        CTR_test=rate("_pt", "_nt"),
        CTR_control=rate("_pc", "_nc"),
    ).with_columns(
        Lift=pl.when(pl.col("CTR_control") > 0).then(pl.col("CTR_test") / pl.col("CTR_control") - 1)
    )
    return df.select(*keys, *spec.chosen_scores())


def descriptive(t: ibis.Table, spec: MetricSpec) -> pl.DataFrame:
    """Count, sum, mean, exact quantiles, std/var (ddof 1) and Bowley skewness per column."""
    keys = _keys(spec)
    aggs = {}
    for c in spec.columns:
        x = t[c].cast("float64")
        aggs[f"{c}_Count"] = x.count()
        aggs[f"{c}_Sum"] = x.sum()
        aggs[f"{c}_Mean"] = x.mean()
        for name, q in QUANTILES.items():
            # DuckDB's quantile_cont: exact, linear interpolation between order statistics
            aggs[f"{c}_{name}"] = x.quantile(q)
        aggs[f"{c}_Std"] = x.std(how="sample")
        aggs[f"{c}_Var"] = x.var(how="sample")
    df = _collect(_agg(t, keys, **aggs), keys)
    skews = []
    for c in spec.columns:
        p25, p50, p75 = (pl.col(f"{c}_{n}") for n in ("p25", "Median", "p75"))
        iqr = p75 - p25
        skews.append(pl.when(iqr > 0).then((p75 + p25 - 2 * p50) / iqr).alias(f"{c}_Skew"))
    df = df.with_columns(skews)
    return df.select(*keys, *[f"{c}_{s}" for c in spec.columns for s in spec.chosen_scores()])


def model_scores(t: ibis.Table, spec: MetricSpec) -> pl.DataFrame:
    """Exact ROC AUC and average precision per group, from per-score counts on the engine.

    With ``n+``/``n-`` the positives/negatives at one distinct score ``s``:
    ``AUC = sum_s n+(s) (negatives below s + n-(s) / 2) / (P N)`` (the Mann-Whitney statistic,
    ties counted one half) and ``AP = sum_s n+(s) / P * precision(score >= s)``.
    """
    keys = _keys(spec)
    s = spec.score_column
    t = t.filter(t[s].notnull())
    t = t.mutate(_pos=_label(t, spec.outcome, spec.positive).cast("int64"))
    g = t.group_by([*keys, s]).agg(_np=t._pos.sum(), _n=t.count())
    g = g.mutate(_nn=g._n - g._np)
    up = ibis.cumulative_window(group_by=keys or None, order_by=g[s])
    down = ibis.cumulative_window(group_by=keys or None, order_by=ibis.desc(g[s]))
    g = g.mutate(
        _neg_below=g._nn.sum().over(up) - g._nn,
        _tp=g._np.sum().over(down),
        _fp=g._nn.sum().over(down),
    )
    g = g.mutate(
        _auc_part=g._np.cast("float64") * (g._neg_below + g._nn.cast("float64") / 2),
        _ap_part=g._np.cast("float64") * g._tp / (g._tp + g._fp),
    )
    agg = _agg(
        g,
        keys,
        Count=g._n.sum(),
        Positives=g._np.sum(),
        _auc=g._auc_part.sum(),
        _ap=g._ap_part.sum(),
    )
    df = _collect(agg, keys)
    neg = pl.col("Count") - pl.col("Positives")
    df = df.with_columns(
        AUC=pl.when((pl.col("Positives") > 0) & (neg > 0)).then(
            pl.col("_auc") / (pl.col("Positives") * neg)
        ),
        AveragePrecision=pl.when(pl.col("Positives") > 0).then(pl.col("_ap") / pl.col("Positives")),
    )
    return df.select(*keys, *spec.chosen_scores())


def experiment(t: ibis.Table, spec: MetricSpec) -> pl.DataFrame:
    """Per group and (control, arm) pair: counts, rates and the experiments module's tests."""
    keys = _keys(spec)
    arm = spec.group_column
    t = t.mutate(_pos=_label(t, spec.outcome, spec.positive).cast("int64"))
    counts = _collect(t.group_by([*keys, arm]).agg(_n=t.count(), _x=t._pos.sum()), keys)
    control = str(spec.control_label)
    counts = counts.with_columns(pl.col(arm).cast(pl.String))
    rows = []
    groups = counts.partition_by(keys, as_dict=True) if keys else {(): counts}
    for key, part in groups.items():
        arms = {r[arm]: (r["_x"], r["_n"]) for r in part.iter_rows(named=True)}
        if control not in arms:
            continue  # no control arm in this group: nothing to compare with
        x_a, n_a = arms[control]
        for other in sorted(a for a in arms if a != control and a is not None):
            x_b, n_b = arms[other]
            z = experiments.two_proportion_ztest(x_a, n_a, x_b, n_b)
            g = experiments.g_test(x_a, n_a, x_b, n_b)
            chi = experiments.chi_square(x_a, n_a, x_b, n_b)
            odds = experiments.odds_ratio(x_a, n_a, x_b, n_b, confidence=spec.confidence)
            rows.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "control": control,
                    "treatment": other,
                    "n_control": n_a,
                    "x_control": x_a,
                    "n_treatment": n_b,
                    "x_treatment": x_b,
                    "rate_control": x_a / n_a,
                    "rate_treatment": x_b / n_b,
                    "z": z["z"],
                    "z_p_value": z["p_value"],
                    "g": g["g"],
                    "g_p_value": g["p_value"],
                    "chi2": chi["chi2"],
                    "chi2_p_value": chi["p_value"],
                    "odds_ratio": odds["odds_ratio"],
                    "odds_ratio_ci_low": odds["ci_low"],
                    "odds_ratio_ci_high": odds["ci_high"],
                }
            )
    cols = [*keys, "control", "treatment", *spec.chosen_scores()]
    if not rows:
        raise ValueError(
            f"metric {spec.name!r}: no group has the control arm {control!r} in column "
            f"{arm!r} (arms seen: {sorted(map(str, counts[arm].unique().to_list()))})"
        )
    return pl.DataFrame(rows, infer_schema_length=None).select(cols)


def clv(t: ibis.Table, spec: MetricSpec) -> pl.DataFrame:
    """Recency, frequency, monetary, tenure and a simple CLV per customer, averaged per group."""
    keys_cols = spec.group_columns()
    if spec.outcome in t.columns and spec.positive:
        t = t.filter(_label(t, spec.outcome, spec.positive))
    ts = t[spec.time_column].cast("timestamp")
    t = t.mutate(_ts=ts, _day=ts.truncate("D"), _v=t[spec.value].cast("float64"))
    as_of = t._ts.max().as_scalar()
    c = t.group_by([*keys_cols, spec.customer]).agg(
        _first=t._ts.min(),
        _last=t._ts.max(),
        Frequency=t._day.nunique(),
        _value=t._v.sum(),
    )
    seconds_per_day = 86400.0
    c = c.mutate(
        Recency=(as_of.epoch_seconds() - c._last.epoch_seconds()) / seconds_per_day,
        Tenure=(as_of.epoch_seconds() - c._first.epoch_seconds()) / seconds_per_day,
        Monetary=c._value / c.Frequency,
    )
    c = c.mutate(CLV=c.Monetary * c.Frequency / (c.Tenure + 1) * 365.25 * spec.lifespan_years)
    c = add_grains(c, spec.grains(), "_first")
    keys = _keys(spec)
    agg = _agg(
        c,
        keys,
        Customers=c.count(),
        Recency=c.Recency.mean(),
        Frequency=c.Frequency.cast("float64").mean(),
        Monetary=c.Monetary.mean(),
        Tenure=c.Tenure.mean(),
        CLV=c.CLV.mean(),
    )
    return _collect(agg, keys).select(*keys, *spec.chosen_scores())


def forecast_metric(t: ibis.Table, spec: MetricSpec, *, seed: int = 0) -> pl.DataFrame:
    """A daily series of the positive rows (revenue or orders), forecast with a backtest."""
    from customer_intel import forecast

    if spec.outcome in t.columns and spec.positive:
        t = t.filter(_label(t, spec.outcome, spec.positive))
    t = t.mutate(_day=period_start(t, spec.time_column, "D"), _v=t[spec.value].cast("float64"))
    daily = _collect(t.group_by("_day").agg(revenue=t._v.sum(), orders=t.count()), ["_day"])
    daily = daily.rename({"_day": "date"}).select("date", pl.col(spec.measure).alias("value"))
    return forecast.forecast_table(
        daily,
        horizon_days=spec.horizon_days,
        backtest_days=spec.backtest_days,
        interval=spec.interval,
    )


KIND_FUNCTIONS = {
    "conversion": conversion,
    "engagement": engagement,
    "descriptive": descriptive,
    "model_scores": model_scores,
    "experiment": experiment,
    "clv": clv,
    "forecast": forecast_metric,
}


#: significant digits kept in a metric's floating-point columns (see :func:`compute`)
SIGNIFICANT_DIGITS = 12


def compute(t: ibis.Table, spec: MetricSpec) -> pl.DataFrame:
    """One metric's table from its source rows (:func:`prepare` then the kind's function).

    Floating-point results keep :data:`SIGNIFICANT_DIGITS` significant digits: DuckDB's threads
    add partial sums in whatever order they finish, so a sum over many files differs in its
    last bits from run to run; rounding keeps two runs with the same params byte-identical.
    """
    out = KIND_FUNCTIONS[spec.kind](prepare(t, spec), spec)
    floats = [c for c, d in out.schema.items() if d == pl.Float64]
    return out.with_columns(pl.col(floats).round_sig_figs(SIGNIFICANT_DIGITS))


def empty_table(spec: MetricSpec) -> pl.DataFrame:
    """A metric's table with its columns and no rows (for a metric that could not run)."""
    return pl.DataFrame(schema={c: pl.Null for c in spec.output_columns()})


def compute_all(
    specs: list[MetricSpec],
    con: ibis.BaseBackend,
    *,
    table_path: Callable[[str], Path | None],
    base_dir: Path,
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Every metric's table, and a summary (metric, kind, source, table, rows, note).

    ``table_path`` gives the file of a run table a metric reads (``source.table``), or None
    when no stage made it in this run: that metric gets an empty table and the reason in
    ``note``, as does a forecast whose series is too short, and the others still run. The
    metrics over other stages' tables are computed last (the stage may start while their
    makers run beside it, :func:`source_table` waits for them); the results keep the order of
    ``specs``.
    """
    from customer_intel.forecast import TooShort

    out, notes = {}, {}
    for spec in sorted(specs, key=lambda s: s.source_kind() == "table"):
        kind = spec.source_kind()
        notes[spec.name] = ""
        path = table_path(spec.source.table) if kind == "table" else None
        if kind == "table" and path is None:
            notes[spec.name] = f"skipped: no stage made table {spec.source.table!r} in this run"
            out[spec.name] = empty_table(spec)
            continue
        src = read_source(spec, con, table_path=path, base_dir=base_dir)
        try:
            out[spec.name] = compute(src, spec)
        except TooShort as e:
            notes[spec.name] = f"skipped: {e}"
            out[spec.name] = empty_table(spec)
    summary = [
        {
            "metric": spec.name,
            "kind": spec.kind,
            "source": "events"
            if spec.source_kind() == "events"
            else spec.source.table or spec.source.path,
            "table": metric_table_name(spec.name),
            "rows": out[spec.name].height,
            "note": notes[spec.name],
        }
        for spec in specs
    ]
    schema = {
        "metric": pl.String,
        "kind": pl.String,
        "source": pl.String,
        "table": pl.String,
        "rows": pl.Int64,
        "note": pl.String,
    }
    return {spec.name: out[spec.name] for spec in specs}, pl.DataFrame(summary, schema=schema)


def grains() -> tuple[str, ...]:
    """The time grains ``group_by`` accepts."""
    return TIME_GRAINS


# -- the stage's plumbing -----------------------------------------------------------------------
def reads_events(specs: list[MetricSpec]) -> bool:
    """Whether any metric reads the warehouse's event log (the stage then connects to it)."""
    return any(s.source_kind() == "events" for s in specs)


def local_connection(memory_limit: str = "auto") -> ibis.BaseBackend:
    """An in-memory DuckDB connection configured like the warehouse's (UTC, memory cap)."""
    from customer_intel.warehouse import configure_duckdb

    con = ibis.duckdb.connect()
    configure_duckdb(con, memory_limit)
    return con


def source_table(run, name: str) -> Path | None:
    """The file of run table ``name`` that a metric reads, or None when no stage made it.

    Waits while a stage running beside this one may still write it (the stage's tables from
    other stages are late inputs: :meth:`customer_intel.runs.StageRun.await_table`).
    """
    return run.table_path(name) if run.await_table(name) is not None else None


def write_all(run, specs: list[MetricSpec], tables: dict[str, pl.DataFrame], summary) -> None:
    """Write ``metric_<name>`` per metric, ``metrics_summary`` and ``forecast_anomalies``."""
    from customer_intel import forecast

    for spec in specs:
        run.write_table(tables[spec.name], metric_table_name(spec.name))
    run.write_table(summary, "metrics_summary")
    parts = [forecast.anomalies(tables[s.name], s.name) for s in specs if s.kind == "forecast"]
    empty = pl.DataFrame(
        schema={
            "metric": pl.String,
            "date": pl.Date,
            "actual": pl.Float64,
            "forecast": pl.Float64,
            "lower": pl.Float64,
            "upper": pl.Float64,
        }
    )
    run.write_table(pl.concat([empty, *parts]), "forecast_anomalies")


def describe_forecasts(specs: list[MetricSpec], tables: dict[str, pl.DataFrame]) -> str:
    """One sentence per forecast metric (backtest against same day last week, anomalies)."""
    from customer_intel import forecast

    lines = [
        forecast.describe(tables[s.name], s.name)
        if not tables[s.name].is_empty()
        else f"{s.name}: no forecast (see metrics_summary's note)"
        for s in specs
        if s.kind == "forecast"
    ]
    return "\n".join(lines) or "No forecast is configured."
