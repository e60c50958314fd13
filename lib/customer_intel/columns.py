"""Canonical column names and event types: the one home of every name stages rely on."""

from typing import Final

EVENT_TIME: Final = "event_time"
EVENT_TYPE: Final = "event_type"
USER_ID: Final = "user_id"
USER_SESSION: Final = "user_session"
PRODUCT_ID: Final = "product_id"
CATEGORY_ID: Final = "category_id"
CATEGORY_CODE: Final = "category_code"
BRAND: Final = "brand"
PRICE: Final = "price"
QUANTITY: Final = "quantity"
ORDER_ID: Final = "order_id"
EVENT_DATE: Final = "event_date"

#: Event types, in funnel order. Stored as a Polars Enum with exactly these categories.
EVENT_TYPES: Final = ("view", "cart", "remove_from_cart", "purchase")

#: Columns every canonical event table has, in order.
CANONICAL_COLUMNS: Final = (
    EVENT_TIME,
    EVENT_TYPE,
    USER_ID,
    USER_SESSION,
    PRODUCT_ID,
    CATEGORY_ID,
    CATEGORY_CODE,
    BRAND,
    PRICE,
)
#: Optional canonical columns, present when the source has them.
OPTIONAL_COLUMNS: Final = (QUANTITY, ORDER_ID)
#: Columns that must never be null in a kept row.
REQUIRED_NON_NULL: Final = (EVENT_TIME, EVENT_TYPE, USER_ID, PRODUCT_ID, PRICE)

#: Columns of the per-buyer table that segmentation clusters by default (``cluster_source:
#: warehouse``): RFM values joined with warehouse behaviour.
BEHAVIOURAL_FEATURE_COLUMNS: Final = (
    USER_ID,
    "recency_days",
    "frequency",
    "monetary",
    "views",
    "carts",
    "sessions",
    "events",
)
#: Columns of the unit table built from the sample's assignments and the warehouse.
UNIT_OUTCOME_COLUMNS: Final = (
    USER_ID,
    "experiment_name",
    "experiment_group",
    "assigned_at",
    "purchases",
    "revenue",
    "pre_purchases",
    "pre_revenue",
    "pre_events",
    "converted",
    "pre_converted",
    "pre_buyer",
)
#: Group labels of the built-in sample's experiment.
SAMPLE_EXPERIMENT_LABELS: Final = ("control", "treatment")
#: Columns of a forecast metric's table: one row per day of history, backtest and forecast.
FORECAST_COLUMNS = (
    "date",
    "part",
    "actual",
    "forecast",
    "lower",
    "upper",
    "naive",
    "anomaly",
    "model_mape",
    "model_smape",
    "naive_mape",
    "naive_smape",
)
