"""CLV metrics with the definitions of ``lifetimes`` / pymc-marketing ``rfm_summary``.

Purchases are first combined per period (``period_days`` long, 1 = calendar days, counted
from the start of the day in UTC): several purchases on the same day are one transaction
whose value is their sum. Then, per customer:

``frequency``
    number of *repeat* purchase periods: distinct periods with a purchase - 1.
``recency_periods``
    periods between the first and the last purchase period (0 for one-time buyers).
``T_periods``
    periods between the first purchase period and the end of observation.
``monetary_value``
    mean value of the repeat periods (the first purchase period excluded; 0 for one-time
    buyers), exactly as ``rfm_summary`` computes it.
``avg_order_value``
    mean value over all purchase periods (first included).
``purchase_rate_per_period``
    ``(frequency + 1) / (T_periods + 1)``: purchase periods per period since acquisition.
``clv``
    ``avg_order_value * purchase_rate_per_period * periods in lifespan_years``: a simple,
    undiscounted lifetime value in the currency of ``price``.

Every duration column carries its unit in its name (``_periods`` with ``period_days`` stated,
``_days``); with the default ``period_days = 1`` periods are days.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

DAYS_PER_YEAR = 365.25


def clv_summary(
    purchases: pl.DataFrame,
    *,
    observation_end: dt.datetime,
    period_days: int = 1,
    lifespan_years: float = 3.0,
    value_col: str = "price",
) -> pl.DataFrame:
    """Per-customer CLV metrics from purchase rows (user_id, event_time, ``value_col``).

    Returns user_id, frequency, recency_periods, T_periods, monetary_value, avg_order_value,
    purchase_rate_per_period, clv, plus first_purchase and period_days.
    """
    missing = {"user_id", "event_time", value_col} - set(purchases.columns)
    if missing:
        raise ValueError(
            f"clv_summary: purchases lack column(s) {sorted(missing)}; "
            f"they have {purchases.columns}"
        )
    if period_days < 1:
        raise ValueError(f"segmentation.clv_period_days: expected >= 1, got {period_days}")
    end = pl.lit(observation_end).cast(pl.Datetime("us", "UTC"))
    day0 = pl.col("event_time").dt.truncate("1d")
    per = (
        purchases.filter(pl.col("event_time") <= end)
        .with_columns(day=day0)
        .with_columns(period=((pl.col("day") - pl.col("day").min()).dt.total_days() // period_days))
    )
    origin = per["day"].min()
    periods = per.group_by("user_id", "period").agg(value=pl.col(value_col).cast(pl.Float64).sum())
    end_period = (
        pl.lit(observation_end).cast(pl.Datetime("us", "UTC")).dt.truncate("1d") - pl.lit(origin)
    ).dt.total_days() // period_days
    out = (
        periods.sort("user_id", "period")
        .group_by("user_id", maintain_order=True)
        .agg(
            n_periods=pl.len(),
            first_period=pl.col("period").first(),
            last_period=pl.col("period").last(),
            total_value=pl.col("value").sum(),
            first_value=pl.col("value").first(),
        )
        .with_columns(
            frequency=(pl.col("n_periods") - 1).cast(pl.Int64),
            recency_periods=(pl.col("last_period") - pl.col("first_period")).cast(pl.Float64),
            T_periods=(end_period - pl.col("first_period")).cast(pl.Float64),
        )
        .with_columns(
            monetary_value=pl.when(pl.col("frequency") > 0)
            .then((pl.col("total_value") - pl.col("first_value")) / pl.col("frequency"))
            .otherwise(0.0),
            avg_order_value=pl.col("total_value") / pl.col("n_periods"),
            purchase_rate_per_period=pl.col("n_periods") / (pl.col("T_periods") + 1),
            first_purchase=pl.lit(origin) + pl.duration(days=pl.col("first_period") * period_days),
            period_days=pl.lit(period_days),
        )
        .with_columns(
            clv=pl.col("avg_order_value")
            * pl.col("purchase_rate_per_period")
            * (lifespan_years * DAYS_PER_YEAR / period_days)
        )
    )
    return out.select(
        "user_id",
        "frequency",
        "recency_periods",
        "T_periods",
        "monetary_value",
        "avg_order_value",
        "purchase_rate_per_period",
        "clv",
        "first_purchase",
        "period_days",
    ).sort("user_id")


def describe(clv: pl.DataFrame) -> str:
    """One sentence on repeat buying and the CLV distribution."""
    repeat = (clv["frequency"] > 0).mean()
    top = clv["clv"].sort(descending=True)
    share = top[: max(1, len(top) // 10)].sum() / max(top.sum(), 1e-12)
    return (
        f"{repeat:.0%} of buyers came back in another period; the top 10% by simple CLV hold "
        f"{share:.0%} of the total (median CLV {clv['clv'].median():,.2f})."
    )
