"""Acquisition cohorts and their retention, computed on the engine.

A customer's cohort is the month (or ISO week, starting Monday) of their first purchase (or
first visit); for each later period ``k`` (0 = the acquisition period) the retention is the
share of the cohort active in period ``k`` (purchased, or visited, by the same definition).
Only the small result (one row per cohort and period) leaves the engine, so the visit basis
over every event costs no memory in Python.
"""

from __future__ import annotations

import ibis
import polars as pl

from customer_intel import columns as C
from customer_intel import warehouse

_UNIT = {"month": "M", "week": "W"}


def cohort_retention(
    events: ibis.Table, *, period: str = "month", basis: str = "purchase"
) -> pl.DataFrame:
    """Retention by cohort and period from events (user_id, event_time, event_type).

    ``basis`` = ``purchase`` (cohort by first purchase, active = purchased) or ``visit``
    (first event of any type, active = any event). Returns long rows: cohort, period_index,
    active_users, cohort_size, retention, sorted by cohort and period index.
    """
    if period not in _UNIT:
        raise ValueError(f"segmentation.cohort_period: expected 'month' or 'week', got {period!r}")
    if basis not in ("purchase", "visit"):
        raise ValueError(
            f"segmentation.cohort_basis: expected 'purchase' or 'visit', got {basis!r}"
        )
    e = events.filter(events.event_type == "purchase") if basis == "purchase" else events
    a = e.select(C.USER_ID, per=warehouse.event_day(e).truncate(_UNIT[period]).cast("date"))
    a = a.distinct()
    first = a.group_by(C.USER_ID).agg(cohort=a.per.min())
    j = a.join(first, C.USER_ID)
    if period == "month":
        idx = (j.per.year() - j.cohort.year()) * 12 + (j.per.month() - j.cohort.month())
    else:
        idx = j.per.delta(j.cohort, unit="day") // 7
    j = j.mutate(period_index=idx.cast("int32"))
    long = j.group_by(["cohort", "period_index"]).agg(active_users=j.count())
    sizes = first.group_by("cohort").agg(cohort_size=first.count())
    out = long.join(sizes, "cohort").to_polars()
    return (
        out.select("cohort", "period_index", "active_users", "cohort_size")
        .with_columns(
            pl.col("active_users", "cohort_size").cast(pl.UInt32),
            retention=pl.col("active_users") / pl.col("cohort_size"),
        )
        .sort("cohort", "period_index")
    )


def retention_matrix(retention: pl.DataFrame) -> pl.DataFrame:
    """Wide matrix: one row per cohort, one column per period index (``p0``, ``p1``, ...)."""
    return (
        retention.with_columns(col=pl.format("p{}", pl.col("period_index")))
        .pivot(on="col", index=["cohort", "cohort_size"], values="retention", sort_columns=False)
        .sort("cohort")
    )
