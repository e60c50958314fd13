"""The ``experiments`` section: where units come from, metrics, clean-up and the tests run."""

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from customer_intel.params._base import InputPath, IsoDate, Section


class Metric(BaseModel):
    """One metric of the readout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="name shown in the readout")
    column: str = Field(description="column of the unit table")
    kind: Literal["binary", "continuous", "count"] = Field(description="how it is tested")
    covariate: str | None = Field(None, description="pre-period column for CUPED")


DEFAULT_METRICS = [
    {"name": "conversion", "column": "converted", "kind": "binary", "covariate": "pre_events"},
    {
        "name": "revenue per user",
        "column": "revenue",
        "kind": "continuous",
        "covariate": "pre_revenue",
    },
    {
        "name": "purchases per user",
        "column": "purchases",
        "kind": "count",
        "covariate": "pre_purchases",
    },
]


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
    metrics: list[dict[str, str | None]] = Field(
        default_factory=lambda: [dict(m) for m in DEFAULT_METRICS],
        min_length=1,
        description="name, column, kind (binary/continuous/count), covariate (CUPED) per metric",
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
    p_adjust: Literal["holm", "bh"] = Field("holm", description="multiple-testing adjustment")
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
        if abs(sum(self.intended_split.values()) - 1) > 1e-6:
            raise ValueError(f"intended_split must sum to 1, got {self.intended_split}")
        return self
