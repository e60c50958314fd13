"""The ``metrics`` section: KPIs and reports declared in params (notebook ``07_metrics``).

A metric is a kind (``conversion``, ``engagement``, ``descriptive``, ``model_scores``,
``experiment``, ``clv``, ``forecast``), a source (the event log, a table another stage wrote,
or a file with a column mapping), a ``filter`` (SQL, checked by :mod:`customer_intel.sqlexpr`),
``group_by`` (time grains ``Day``/``Week``/``Month``/``Quarter``/``Year`` and columns) and the
scores it reports. A report draws one metric's table as a chart. Everything a params file can
get wrong (an unknown kind, score, column or metric) is refused here, before anything runs,
with the key that says it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from customer_intel import columns as C
from customer_intel.params._base import Section

KINDS = (
    "conversion",
    "engagement",
    "descriptive",
    "model_scores",
    "experiment",
    "clv",
    "forecast",
)
TIME_GRAINS = ("Day", "Week", "Month", "Quarter", "Year")
REPORT_TYPES = ("line", "bar", "bar_polar", "treemap", "heatmap", "funnel", "forecast")

#: The scores each kind can report, in the order its table has them.
SCORES: dict[str, tuple[str, ...]] = {
    "conversion": ("Positives", "Negatives", "Total", "ConversionRate", "StdErr", "Revenue"),
    "engagement": ("Positives", "Negatives", "Total", "CTR", "CTR_test", "CTR_control", "Lift"),
    "descriptive": (
        "Count",
        "Sum",
        "Mean",
        "Median",
        "p25",
        "p75",
        "p90",
        "p95",
        "Std",
        "Var",
        "Skew",
    ),
    "model_scores": ("Count", "Positives", "AUC", "AveragePrecision"),
    "experiment": (
        "n_control",
        "x_control",
        "n_treatment",
        "x_treatment",
        "rate_control",
        "rate_treatment",
        "z",
        "z_p_value",
        "g",
        "g_p_value",
        "chi2",
        "chi2_p_value",
        "odds_ratio",
        "odds_ratio_ci_low",
        "odds_ratio_ci_high",
    ),
    "clv": ("Customers", "Recency", "Frequency", "Monetary", "Tenure", "CLV"),
    "forecast": (),  # a fixed table: see customer_intel.columns.FORECAST_COLUMNS
}

#: Columns of the event log a metric may use (ingest's carry_columns are added by Params).
EVENT_COLUMNS = (*C.CANONICAL_COLUMNS, *C.OPTIONAL_COLUMNS, C.EVENT_DATE)

#: Columns of the tables other stages write that a metric may read as ``source: {table: ...}``.
RUN_TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "propensity_scores": ("user_id", "probability", "decile", "segment"),
    "propensity_test_scores": (
        "user_id",
        "probability",
        "decile",
        "label",
        "rfm_score",
        "has_prior_purchase",
        "primary_category",
    ),
    "experiment_units": C.UNIT_OUTCOME_COLUMNS,
    "rfm": (
        "user_id",
        "recency_days",
        "frequency",
        "monetary",
        "revenue",
        "r",
        "f",
        "m",
        "rfm_code",
        "rfm_score",
        "segment",
    ),
}


class Source(BaseModel):
    """Where a metric's rows come from: the event log (default), a run table, or a file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str | None = Field(None, description="a table another stage writes (e.g. rfm)")
    path: str | None = Field(None, description="a CSV/Parquet file (relative to the project)")
    separator: str = Field(",", min_length=1, max_length=1, description="the file's delimiter")
    column_map: dict[str, str] = Field(
        default_factory=dict, description="name used by the metric -> the file's column"
    )

    @model_validator(mode="after")
    def _one(self) -> Source:
        if self.table and self.path:
            raise ValueError("give either table or path, not both")
        if self.column_map and not self.path:
            raise ValueError("column_map maps a file's columns; it needs path")
        if self.table and self.table not in RUN_TABLE_COLUMNS:
            raise ValueError(
                f"table {self.table!r} is not one a metric can read; "
                f"expected one of {sorted(RUN_TABLE_COLUMNS)} (or a file by path)"
            )
        return self


class MetricSpec(BaseModel):
    """One metric: its kind, source, filter, grouping and scores."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="table metric_<name>")
    kind: Literal[KINDS]  # type: ignore[valid-type]
    description: str = ""
    source: Source | None = None
    filter: str | None = Field(None, description="SQL condition rows must meet")
    derived: dict[str, str] = Field(default_factory=dict, description="{name: SQL expression}")
    group_by: list[str] = Field(default_factory=list, description="time grains and columns")
    time_column: str = Field(C.EVENT_TIME, description="column the time grains truncate")
    scores: list[str] | None = Field(None, description="scores to report; null = all of the kind")
    # conversion / engagement / experiment: outcome labels
    outcome: str = Field(C.EVENT_TYPE, description="column holding the outcome label")
    positive: list[Any] = Field(default_factory=lambda: ["purchase"], description="labels")
    negative: list[Any] = Field(default_factory=lambda: ["view"], description="labels")
    unit: str | None = Field(None, description="count distinct units (e.g. user_session)")
    value: str = Field(C.PRICE, description="revenue / monetary column")
    # engagement / experiment: arms
    group_column: str | None = Field(None, description="control/test or experiment arm column")
    control_label: Any = Field("control", description="label of the control arm")
    # descriptive
    columns: list[str] = Field(default_factory=list, description="numeric columns described")
    # model_scores
    score_column: str | None = Field(None, description="model score (higher = more likely)")
    # clv
    customer: str = Field(C.USER_ID, description="customer id column")
    lifespan_years: float = Field(3.0, gt=0, le=50)
    # experiment
    confidence: float = Field(0.95, gt=0.5, lt=1)
    # forecast
    measure: Literal["revenue", "orders"] = "revenue"
    horizon_days: int = Field(14, ge=1, le=365)
    backtest_days: int = Field(28, ge=7, le=365)
    interval: float = Field(0.95, gt=0.5, lt=1, description="prediction interval level")

    def source_kind(self) -> str:
        """``events``, ``table`` or ``file``."""
        s = self.source
        return "file" if s and s.path else "table" if s and s.table else "events"

    def grains(self) -> list[str]:
        """The time grains of ``group_by``."""
        return [g for g in self.group_by if g in TIME_GRAINS]

    def group_columns(self) -> list[str]:
        """The columns of ``group_by`` (not time grains)."""
        return [g for g in self.group_by if g not in TIME_GRAINS]

    def chosen_scores(self) -> list[str]:
        """The scores asked for, or every score of the kind."""
        return list(self.scores) if self.scores else list(SCORES[self.kind])

    def output_columns(self) -> list[str]:
        """The columns of ``metric_<name>``."""
        if self.kind == "forecast":
            return list(C.FORECAST_COLUMNS)
        keys = [*self.grains(), *self.group_columns()]
        if self.kind == "experiment":
            keys += ["control", "treatment"]
        if self.kind == "descriptive":
            return keys + [f"{c}_{s}" for c in self.columns for s in self.chosen_scores()]
        return keys + self.chosen_scores()


class ReportSpec(BaseModel):
    """One chart of a metric's table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    metric: str
    type: Literal[REPORT_TYPES]  # type: ignore[valid-type]
    x: str | None = None
    y: str | None = None
    z: str | None = Field(None, description="heatmap cell value")
    color: str | None = None
    facet_row: str | None = None
    facet_col: str | None = None
    path: list[str] = Field(default_factory=list, description="treemap levels")
    description: str = ""

    def referenced(self) -> dict[str, str]:
        """{key: column} of every column the report names."""
        out = {k: getattr(self, k) for k in ("x", "y", "z", "color", "facet_row", "facet_col")}
        out = {k: v for k, v in out.items() if v}
        out |= {f"path[{i}]": c for i, c in enumerate(self.path)}
        return out


_REQUIRED = {
    "line": ("x", "y"),
    "bar": ("x", "y"),
    "bar_polar": ("x", "y"),
    "heatmap": ("x", "y", "z"),
    "funnel": ("x", "y"),
    "treemap": ("path", "y"),
    "forecast": (),
}


def _read_header(path: str, separator: str) -> list[str]:
    import polars as pl

    p = Path(path)
    if p.suffix == ".parquet":
        return (
            pl.read_parquet_schema(p).names()
            if hasattr(pl, "read_parquet_schema")
            else list(pl.scan_parquet(p).collect_schema().names())
        )
    return pl.scan_csv(p, separator=separator, n_rows=0).collect_schema().names()


def _resolve(path: str, base_dir: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base_dir / p)


def check_metric(m: MetricSpec, known: list[str], where: str) -> None:
    """Check a metric's columns, filter, derived columns, scores and kind-specific keys."""
    from customer_intel import sqlexpr

    cols = list(known)
    for name, text in m.derived.items():
        sqlexpr.check(text, cols, where=f"{where}.derived.{name}")
        cols.append(name)
    if m.filter is not None:
        sqlexpr.check(m.filter, cols, where=f"{where}.filter", boolean=True)

    def need(key: str, col: str | None) -> None:
        if col is None:
            raise ValueError(f"{where}.{key}: a {m.kind} metric needs {key}")
        if col not in cols:
            raise ValueError(f"{where}.{key}: unknown column {col!r}; available: {sorted(cols)}")

    for g in m.group_columns():
        need("group_by", g)
    if m.grains() or m.kind in ("forecast", "clv"):
        need("time_column", m.time_column)
    bad = sorted(set(m.scores or ()) - set(SCORES[m.kind]))
    if bad:
        raise ValueError(
            f"{where}.scores: unknown score(s) {bad} for kind {m.kind!r}; "
            f"expected some of {list(SCORES[m.kind])}"
        )
    if m.kind in ("conversion", "engagement", "experiment", "model_scores"):
        need("outcome", m.outcome)
        if not m.positive:
            raise ValueError(f"{where}.positive: give at least one positive outcome label")
        if m.kind in ("conversion", "engagement") and not m.negative:
            raise ValueError(f"{where}.negative: give at least one negative outcome label")
    if m.kind == "conversion":
        if m.unit:
            need("unit", m.unit)
        if "Revenue" in m.chosen_scores():
            need("value", m.value)
    if m.kind in ("engagement", "experiment"):
        need("group_column", m.group_column)
    if m.kind == "descriptive":
        if not m.columns:
            raise ValueError(f"{where}.columns: a descriptive metric needs numeric columns")
        for c in m.columns:
            need("columns", c)
    if m.kind == "model_scores":
        need("score_column", m.score_column)
    if m.kind in ("clv", "forecast"):
        need("value", m.value)
    if m.kind == "clv":
        need("customer", m.customer)
    if m.kind == "forecast" and m.group_by:
        raise ValueError(f"{where}.group_by: a forecast is of the whole daily series; remove it")


class MetricsParams(Section):
    """Parameters of the metrics stage (notebook ``07_metrics``)."""

    COMMON_KEYS: ClassVar[tuple[str, ...]] = ("seed", "engine", "spark")

    metrics: list[dict[str, Any]] = Field(
        default_factory=list, description="metric definitions (name, kind, source, ...)"
    )
    reports: list[dict[str, Any]] = Field(
        default_factory=list, description="charts of metric tables (name, metric, type, ...)"
    )

    def metric_specs(self) -> list[MetricSpec]:
        """The metrics as typed models (validated at load)."""
        return [MetricSpec.model_validate(m) for m in self.metrics]

    def report_specs(self) -> list[ReportSpec]:
        """The reports as typed models (validated at load)."""
        return [ReportSpec.model_validate(r) for r in self.reports]

    @field_validator("metrics")
    @classmethod
    def _check_metrics(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        specs = [_typed(MetricSpec, m, f"metrics[{i}]") for i, m in enumerate(value)]
        names = [m.name for m in specs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"the metric name(s) {dup} are used more than once")
        return value

    @field_validator("reports")
    @classmethod
    def _check_reports(
        cls, value: list[dict[str, Any]], info: ValidationInfo
    ) -> list[dict[str, Any]]:
        if "metrics" not in info.data:
            return value  # the metrics are invalid: that error is reported already
        specs = [MetricSpec.model_validate(m) for m in info.data["metrics"]]
        by_name = {m.name: m for m in specs}
        for i, r in enumerate(value):
            rep = _typed(ReportSpec, r, f"reports[{i}]")
            where = f"reports[{i}] ({rep.name})"
            if rep.metric not in by_name:
                raise ValueError(
                    f"{where}.metric: unknown metric {rep.metric!r}; defined: {sorted(by_name)}"
                )
            metric = by_name[rep.metric]
            if (rep.type == "forecast") != (metric.kind == "forecast"):
                raise ValueError(
                    f"{where}.type: a forecast report draws a forecast metric and only that "
                    f"(metric {metric.name!r} is {metric.kind!r}, the report {rep.type!r})"
                )
            for key in _REQUIRED[rep.type]:
                if not getattr(rep, key):
                    raise ValueError(f"{where}.{key}: a {rep.type} report needs {key}")
            available = metric.output_columns()
            for key, col in rep.referenced().items():
                if col not in available:
                    raise ValueError(
                        f"{where}.{key}: column {col!r} is not in the table of metric "
                        f"{metric.name!r}; it has {available}"
                    )
        return value

    def check_sources(self, event_columns: list[str], base_dir: Path) -> None:
        """Check every metric against its source's columns (the Params model calls this)."""
        for i, m in enumerate(self.metric_specs()):
            where = f"metrics[{i}] ({m.name})"
            kind = m.source_kind()
            if kind == "events":
                known = list(event_columns)
            elif kind == "table":
                known = list(RUN_TABLE_COLUMNS[m.source.table])
            else:
                path = _resolve(m.source.path, base_dir)
                if not Path(path).exists():
                    raise ValueError(f"{where}.source.path: file not found: {path!r}")
                header = _read_header(path, m.source.separator)
                missing = sorted(set(m.source.column_map.values()) - set(header))
                if missing:
                    raise ValueError(
                        f"{where}.source.column_map: {path} lacks column(s) {missing}; "
                        f"it has {header}"
                    )
                back = {v: k for k, v in m.source.column_map.items()}
                known = [back.get(h, h) for h in header]
            check_metric(m, known, where)


def _typed(model: type[BaseModel], raw: Any, where: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{where}.{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()
        )
        raise ValueError(problems) from None
