"""Acquisition cohorts and their retention.

A customer's cohort is the month (or ISO week) of their first purchase (or first visit); for
each later period ``k`` (0 = the acquisition period) the retention is the share of the cohort
active in period ``k`` (purchased, or visited, by the same definition).
"""

from __future__ import annotations

import polars as pl

_TRUNC = {"month": "1mo", "week": "1w"}


def cohort_retention(
    activity: pl.DataFrame, *, period: str = "month", basis: str = "purchase"
) -> pl.DataFrame:
    """Retention by cohort and period from events (user_id, event_time, event_type).

    ``basis`` = ``purchase`` (cohort by first purchase, active = purchased) or ``visit``
    (first event of any type, active = any event). Returns long rows: cohort, period_index,
    active_users, cohort_size, retention.
    """
    if period not in _TRUNC:
        raise ValueError(f"segmentation.cohort_period: expected 'month' or 'week', got {period!r}")
    if basis not in ("purchase", "visit"):
        raise ValueError(
            f"segmentation.cohort_basis: expected 'purchase' or 'visit', got {basis!r}"
        )
    a = activity
    if basis == "purchase":
        a = a.filter(pl.col("event_type") == "purchase")
    a = a.select("user_id", per=pl.col("event_time").dt.truncate(_TRUNC[period]).dt.date()).unique()
    first = a.group_by("user_id").agg(cohort=pl.col("per").min())
    a = a.join(first, on="user_id")
    if period == "month":
        idx = (pl.col("per").dt.year() - pl.col("cohort").dt.year()) * 12 + (
            pl.col("per").dt.month() - pl.col("cohort").dt.month()
        )
    else:
        idx = (pl.col("per") - pl.col("cohort")).dt.total_days() // 7
    long = (
        a.with_columns(period_index=idx.cast(pl.Int32))
        .group_by("cohort", "period_index")
        .agg(active_users=pl.len())
    )
    sizes = first.group_by("cohort").agg(cohort_size=pl.len())
    return (
        long.join(sizes, on="cohort")
        .with_columns(retention=pl.col("active_users") / pl.col("cohort_size"))
        .sort("cohort", "period_index")
    )


def retention_matrix(retention: pl.DataFrame) -> pl.DataFrame:
    """Wide matrix: one row per cohort, one column per period index (``p0``, ``p1``, ...)."""
    return (
        retention.with_columns(col=pl.format("p{}", pl.col("period_index")))
        .pivot(on="col", index=["cohort", "cohort_size"], values="retention", sort_columns=False)
        .sort("cohort")
    )
