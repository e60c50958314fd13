"""The ``segmentation`` section: RFM, CLV, clustering and cohorts."""

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from customer_intel.params._base import InputPath, IsoDate, Section
from customer_intel.rfm_defaults import DEFAULT_CODES, DEFAULT_RULES


class SegmentationParams(Section):
    """Parameters of the segmentation stage (notebook ``03_segmentation``)."""

    COMMON_KEYS: ClassVar[tuple[str, ...]] = ("seed", "engine", "spark")

    as_of: IsoDate = Field(None, description="reference date (ISO); null = the last event")
    rfm_frequency: Literal["days", "orders", "lines"] = Field(
        "days", description="what F counts: purchase days, orders, or lines (purchase events)"
    )
    rfm_monetary: Literal["total", "average"] = Field("total", description="what M measures")
    bins: int = Field(5, ge=2, le=10, description="score levels (5 = quintiles)")
    segment_method: Literal["rules", "codes"] = Field("rules", description="how segments are named")
    segment_rules: list[dict[str, str]] = Field(
        default_factory=lambda: [dict(r) for r in DEFAULT_RULES],
        description="ordered {name: SQL condition on r, f, m}; first match wins",
    )
    segment_codes: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_CODES.items()},
        description="{name: [R-F-M codes]}; unlisted codes are 'Other'",
    )
    clv_period: Literal["day", "week"] = Field(
        "day", description="CLV period: calendar day or calendar week (Monday-Sunday), UTC"
    )
    clv_lifespan_years: float = Field(3.0, gt=0, le=50, description="lifespan for the simple CLV")
    clv_holdout_days: int = Field(
        21, ge=1, le=3650, description="last days held out to validate the BG/NBD fit"
    )
    clv_pareto_nbd: bool = Field(
        False, description="also fit Pareto/NBD to compare with BG/NBD (slower near no dropout)"
    )
    clv_predict_days: int = Field(30, ge=1, le=3650, description="expected purchases horizon")
    clv_horizon_months: int = Field(12, ge=1, le=120, description="months summed in model CLV")
    clv_discount_rate_monthly: float = Field(
        0.01, ge=0, lt=1, description="monthly discount rate of model CLV"
    )
    clv_margin: float = Field(1.0, gt=0, le=1, description="profit margin applied to model CLV")
    clv_at_risk_p_alive: float = Field(
        0.5, gt=0, lt=1, description="P(alive) below which a customer counts as at risk"
    )
    clv_at_risk_top: int = Field(20, ge=1, le=10_000, description="at-risk customers listed")
    clv_max_corr: float = Field(
        0.3, gt=0, lt=1, description="frequency-monetary correlation that triggers a warning"
    )
    cluster_source: Literal["warehouse", "sample_customers", "attributes"] = Field(
        "warehouse", description="customer table to cluster"
    )
    attributes_path: InputPath = Field(None, description="CSV/TSV/Parquet of customer attributes")
    attributes_separator: str = Field(",", min_length=1, max_length=1, description="its delimiter")
    id_column: str = Field("user_id", description="customer id column of the clustered table")
    numeric_features: list[str] = Field(
        default_factory=lambda: [
            "recency_days",
            "frequency",
            "monetary",
            "views",
            "carts",
            "sessions",
        ],
        min_length=1,
        description="numeric columns to cluster on",
    )
    categorical_features: list[str] = Field(default_factory=list, description="one-hot columns")
    derived_columns: dict[str, str] = Field(
        default_factory=dict, description="{name: SQL expression} computed before clustering"
    )
    value_maps: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="{column: {value: new value}} for categoricals"
    )
    row_filters: list[str] = Field(
        default_factory=list, description="SQL conditions rows must meet"
    )
    missing: Literal["impute", "drop"] = Field(
        "impute", description="missing values: median or drop"
    )
    log_features: list[str] = Field(
        default_factory=lambda: ["frequency", "monetary", "views", "carts", "sessions"],
        description="heavy-tailed columns transformed with log1p before scaling",
    )
    pca_components: int | None = Field(None, ge=1, le=50, description="PCA components; null = none")
    k_min: int = Field(2, ge=2, le=30, description="smallest number of clusters tried")
    k_max: int = Field(10, ge=3, le=40, description="largest number of clusters tried")
    n_init: int = Field(10, ge=1, le=50, description="k-means++ restarts per k")
    curve_sample: int = Field(50_000, ge=100, description="customers used for the k curve")
    silhouette_sample: int = Field(5_000, ge=100, description="customers used for silhouettes")
    minibatch_threshold: int = Field(200_000, ge=1_000, description="MiniBatchKMeans above this")
    value_column: str = Field("monetary", description="column that ranks clusters for naming")
    cohort_period: Literal["month", "week"] = Field("week", description="cohort granularity")
    cohort_basis: Literal["purchase", "visit"] = Field(
        "purchase", description="cohort by first purchase (or first visit)"
    )

    @model_validator(mode="after")
    def _checks(self) -> "SegmentationParams":
        if self.k_min >= self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must be smaller than k_max ({self.k_max})")
        if self.cluster_source == "attributes" and not self.attributes_path:
            raise ValueError("cluster_source 'attributes' needs attributes_path")
        return self
