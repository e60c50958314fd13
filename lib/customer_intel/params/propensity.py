"""The ``propensity`` section: split, features, LightGBM, evaluation and targeting."""

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from customer_intel.params._base import Section

DEFAULT_FEATURES = [
    "events",
    "views",
    "carts",
    "purchases",
    "sessions",
    "active_span_days",
    "days_since_last_event",
    "avg_session_duration_s",
    "unique_products",
    "cart_to_view",
    "rfm_score",
    "has_prior_purchase",
    "tenure_days",
    "primary_category",
    "preferred_brand",
]

#: Feature names that were renamed: old -> (new, why). A profile still using an old name gets
#: an error naming the new one (``recency_days`` is rfm's whole days since the last purchase).
RENAMED_FEATURES = {
    "recency_days": (
        "days_since_last_event",
        "days since the last event of any type; rfm's recency_days counts days since the "
        "last purchase",
    ),
}


class PropensityParams(Section):
    """Parameters of the propensity stage (notebook ``04_propensity``)."""

    COMMON_KEYS: ClassVar[tuple[str, ...]] = ("seed", "engine", "spark")

    label_days: int = Field(30, ge=1, le=365, description="prediction window length (days)")
    observation_days: int | None = Field(
        None, ge=1, description="observation window length before the cutoff; null = all history"
    )
    end: str | None = Field(None, description="end of the label window (ISO); null = last event")
    features: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FEATURES),
        min_length=1,
        description="feature names (customer_intel.propensity.FEATURES)",
    )

    test_share: float = Field(0.25, gt=0, lt=0.6, description="share of users held out for metrics")
    calibration_share: float = Field(0.15, gt=0, lt=0.5, description="share used to calibrate")
    validation_share: float = Field(0.15, gt=0, lt=0.5, description="share used for early stopping")
    max_train_users: int | None = Field(
        500_000,
        ge=100,
        description="most users for train, validation and calibration (a sample stratified by "
        "label when more are available; the test share is always complete); null = all",
    )
    n_estimators: int = Field(2000, ge=10, le=20000, description="maximum boosting rounds")
    learning_rate: float = Field(0.03, gt=0, le=1, description="LightGBM learning rate")
    num_leaves: int = Field(7, ge=2, le=1024, description="leaves per tree")
    min_child_samples: int = Field(100, ge=1, description="minimum users per leaf")
    subsample: float = Field(0.8, gt=0, le=1, description="row subsample per tree")
    colsample_bytree: float = Field(0.8, gt=0, le=1, description="feature subsample per tree")
    reg_lambda: float = Field(1.0, ge=0, description="L2 regularisation")
    min_data_per_group: int = Field(200, ge=1, description="users per categorical level")
    cat_smooth: float = Field(50.0, ge=0, description="smoothing of categorical splits")
    early_stopping_rounds: int = Field(50, ge=1, description="rounds without improvement")
    imbalance: Literal["none", "scale_pos_weight", "balanced"] = Field(
        "none", description="class imbalance handling"
    )
    calibration: Literal["isotonic", "sigmoid"] = Field("isotonic", description="calibration")
    shap_sample: int = Field(
        20_000,
        ge=100,
        description="test users (a seeded random sample) whose SHAP values are computed",
    )
    lift_fractions: list[float] = Field(
        default_factory=lambda: [0.01, 0.05, 0.1, 0.2], description="top fractions for lift@k"
    )
    contact_cost: float = Field(1.0, ge=0, description="cost of contacting one customer")
    margin: float = Field(20.0, gt=0, description="margin earned per conversion")

    def lgb_params(self) -> dict[str, float | int]:
        """The LightGBM classifier's parameters (``propensity.fit_model``'s ``lgb_params``).

        Row subsampling is drawn afresh for every tree (``subsample_freq`` 1): LightGBM ignores
        ``subsample`` otherwise.
        """
        keys = (
            "n_estimators",
            "learning_rate",
            "num_leaves",
            "min_child_samples",
            "subsample",
            "colsample_bytree",
            "reg_lambda",
            "min_data_per_group",
            "cat_smooth",
        )
        return {k: getattr(self, k) for k in keys} | {"subsample_freq": 1}

    @field_validator("features")
    @classmethod
    def _no_renamed_feature(cls, names: list[str]) -> list[str]:
        for old in names:
            if old in RENAMED_FEATURES:
                new, why = RENAMED_FEATURES[old]
                raise ValueError(f"feature {old!r} is now called {new!r} ({why}); rename it")
        return names
