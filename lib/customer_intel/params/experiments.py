"""The ``experiments`` section: where units come from, metrics, clean-up and the tests run."""

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from customer_intel.params._base import InputPath, IsoDate, Section


class Metric(BaseModel):
    """One metric of the readout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="name shown in the readout")
    column: str = Field(description="column of the unit table (the numerator of a ratio)")
    kind: Literal["binary", "continuous", "count", "ratio", "quantile"] = Field(
        description="how it is tested"
    )
    covariate: str | None = Field(None, description="pre-period column for CUPED")
    denominator: str | None = Field(None, description="ratio: column summed below the line")
    quantile: float | None = Field(None, gt=0, lt=1, description="quantile: which, e.g. 0.9")
    only_positive: bool = Field(False, description="quantile: over units with a value > 0 only")
    cap_value: float | None = Field(None, description="cap (winsorise) values above this")
    cap_percentile: float | None = Field(
        None, gt=0, lt=1, description="cap values above this percentile of all units (0-1)"
    )
    role: Literal["goal", "guardrail", "secondary"] = Field(
        "secondary", description="what the metric decides"
    )
    margin: float | None = Field(
        None, gt=0, lt=1, description="guardrail: non-inferiority margin, relative (0.05 = 5%)"
    )
    higher_is_better: bool = Field(True, description="direction of a good change")

    @model_validator(mode="after")
    def _check(self) -> "Metric":
        if self.kind == "ratio" and not self.denominator:
            raise ValueError("a ratio metric needs denominator (the column below the line)")
        if self.kind == "quantile" and self.quantile is None:
            raise ValueError("a quantile metric needs quantile (e.g. 0.9)")
        if self.cap_value is not None and self.cap_percentile is not None:
            raise ValueError("give cap_value or cap_percentile, not both")
        if self.margin is not None and self.role != "guardrail":
            raise ValueError("margin is a guardrail's non-inferiority margin; set role: guardrail")
        return self


DEFAULT_METRICS: list[dict[str, Any]] = [
    {"name": "conversion", "column": "converted", "kind": "binary", "covariate": "pre_events",
     "role": "goal"},
    {"name": "revenue per user", "column": "revenue", "kind": "continuous",
     "covariate": "pre_revenue", "role": "guardrail", "margin": 0.05, "cap_percentile": 0.999},
    {"name": "purchases per user", "column": "purchases", "kind": "count",
     "covariate": "pre_purchases"},
    {"name": "revenue per purchase", "column": "revenue", "kind": "ratio",
     "denominator": "purchases"},
    {"name": "spend per buyer p50", "column": "revenue", "kind": "quantile", "quantile": 0.5,
     "only_positive": True},
    {"name": "spend per buyer p90", "column": "revenue", "kind": "quantile", "quantile": 0.9,
     "only_positive": True},
]  # fmt: skip


class ExperimentsParams(Section):
    """Parameters of the experiments stage (notebook ``06_experiments``)."""

    COMMON_KEYS: ClassVar[tuple[str, ...]] = ("seed", "engine", "spark")

    units_path: InputPath = Field(
        None, description="external unit-level CSV/Parquet; null = sample assignments + warehouse"
    )
    units_separator: str = Field(",", min_length=1, max_length=1, description="its delimiter")
    experiment_name: str | None = Field(None, description="keep only this experiment; null = all")
    unit_column: str = Field("user_id", description="unit id column")
    group_column: str = Field("experiment_group", description="group column")
    control_label: str = Field("control", description="label of the control group")
    treatment_label: str = Field("treatment", description="label of the treatment group")
    treatment_labels: list[str] | None = Field(
        None, description="every arm compared with control; null = [treatment_label]"
    )
    intended_split: dict[str, float] = Field(
        default_factory=lambda: {"control": 0.5, "treatment": 0.5},
        description="intended share of units per group label",
    )
    window_end: IsoDate = Field(
        None, description="end of the outcome window (ISO); null = last assignment + window_days"
    )
    window_days: int = Field(
        14, ge=1, le=365, description="outcome window after the last assignment"
    )
    pre_days: int = Field(14, ge=1, le=365, description="pre-period length for covariates (days)")
    metrics: list[dict[str, Any]] = Field(
        default_factory=lambda: [dict(m) for m in DEFAULT_METRICS],
        min_length=1,
        description="name, column, kind (binary/continuous/count/ratio/quantile), covariate, "
        "role (goal/guardrail/secondary), margin, capping per metric",
    )
    date_column: str | None = Field(
        "assigned_at", description="assignment time, for the daily view; null = no daily view"
    )
    segments: list[str] = Field(
        default_factory=lambda: ["pre_buyer"], description="segment columns for breakdowns"
    )
    exclude: list[str] = Field(default_factory=list, description="SQL conditions of rows to remove")
    duplicates: Literal["keep_first", "drop_all"] = Field(
        "keep_first", description="repeated units"
    )
    alternative: Literal["two-sided", "larger", "smaller"] = Field("two-sided", description="H1")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="significance level")
    p_adjust: Literal["holm", "bh"] = Field(
        "holm", description="multiple-testing adjustment over every arm x metric"
    )
    sequential_tuning: float = Field(
        5000, gt=0, description="units (both arms) where the confidence sequence is narrowest"
    )
    skew_threshold: float = Field(5.0, gt=0, description="skewness above which a metric is flagged")
    static_images: bool = Field(True, description="also save each figure as PNG (kaleido)")
    n_resamples: int = Field(2000, ge=100, le=100_000, description="bootstrap resamples")
    srm_threshold: float = Field(0.001, gt=0, lt=0.5, description="SRM p-value alarm threshold")
    power_baseline: float | None = Field(
        None, gt=0, lt=1, description="baseline for the power curve; null = control rate"
    )
    power_mde: float = Field(0.10, gt=0, le=5, description="relative MDE for the power curve")
    power_target: float = Field(0.8, gt=0, lt=1, description="target power")

    @model_validator(mode="after")
    def _check(self) -> "ExperimentsParams":
        for i, m in enumerate(self.metrics):
            try:
                Metric.model_validate(m)
            except ValidationError as e:
                problems = "; ".join(
                    f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()
                )
                raise ValueError(f"metrics[{i}] {m!r}: {problems}") from None
        names = [m.get("name") for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metrics: names must be unique, got {names}")
        arms = self.treatment_labels or [self.treatment_label]
        if self.control_label in arms:
            raise ValueError(f"treatment_labels: {arms} include the control {self.control_label!r}")
        if abs(sum(self.intended_split.values()) - 1) > 1e-6:
            raise ValueError(f"intended_split must sum to 1, got {self.intended_split}")
        return self
