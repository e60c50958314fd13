"""RFM summaries for CLV models, computed on the engine, with lifetimes/pymc-marketing definitions.

Purchases are first combined per *period*: a calendar day (UTC) or a calendar week (Monday to
Sunday, as pandas' ``W-SUN`` periods that pymc-marketing's ``rfm_summary(time_unit="W")`` uses).
Several purchases in one period are one transaction whose value is their sum. Then, per customer:

``repeat_periods``
    number of *repeat* purchase periods: distinct periods with a purchase - 1.
``recency``
    periods between the first and the last purchase period (0 for one-time buyers).
``T``
    periods between the first purchase period and the period of the end of observation.
``monetary_value``
    mean value of the repeat periods (the first purchase period excluded; 0 for one-time
    buyers), exactly as ``rfm_summary`` computes it.

Purchases after ``observation_end`` (a timestamp) are ignored. With a calibration/holdout split
(``calibration_end``), the split is by period as in pymc-marketing's ``rfm_train_test_split``:
the whole period holding ``calibration_end`` is calibration; ``repeat_periods``/``recency``/``T``/
``monetary_value`` describe the calibration periods, only customers whose first purchase is in
calibration are kept, and ``holdout_purchase_periods`` (distinct purchase periods after calibration,
*all* counted, as the BG/NBD predicts them), ``holdout_monetary_value`` (their mean value) and
``holdout_T`` (periods after calibration up to the end) are added.

The aggregation is an Ibis expression (DuckDB or Spark do the work); the result, one row per
customer, comes back as Polars.

The ``clv`` table keeps the simple, model-free metrics beside these definitions: the same
summary with columns ``recency_periods``/``T_periods``, plus ``avg_order_value``,
``purchase_rate_per_period`` and an undiscounted ``clv`` (see :func:`clv_summary`).
"""

from __future__ import annotations

import datetime as dt

import ibis
import polars as pl

from customer_intel import columns as C
from customer_intel.timeutil import parse_utc

DAYS_PER_YEAR = 365.25

#: Period name -> its length in days.
PERIODS = {"day": 1, "week": 7}

SUMMARY_COLUMNS = (C.USER_ID, "repeat_periods", "recency", "T", "monetary_value")
HOLDOUT_COLUMNS = ("holdout_purchase_periods", "holdout_monetary_value", "holdout_T")


def _check_period(period: str) -> int:
    if period not in PERIODS:
        raise ValueError(
            f"segmentation.clv_period: expected one of {list(PERIODS)}, got {period!r}"
        )
    return PERIODS[period]


def period_index(when: dt.datetime | dt.date, period: str) -> int:
    """Index of the day or calendar week (Monday start) holding ``when`` (UTC), days since 1970."""
    days = _check_period(period)
    d = parse_utc(when).date() if isinstance(when, dt.datetime) else when
    if days == 7:
        d = d - dt.timedelta(days=d.weekday())  # the Monday starting its week
    return (d - dt.date(1970, 1, 1)).days // days


def period_start(index: int, period: str) -> dt.date:
    """First day of a period given by :func:`period_index`."""
    days = _check_period(period)
    if days == 7:
        # Mondays are 7k + 4 days after 1970-01-01 (a Thursday); floor(days / 7) = k
        return dt.date(1970, 1, 1) + dt.timedelta(days=7 * index + 4)
    return dt.date(1970, 1, 1) + dt.timedelta(days=index)


def period_purchases(
    purchases: ibis.Table,
    *,
    observation_end: dt.datetime,
    period: str = "day",
    value_col: str = C.PRICE,
) -> ibis.Table:
    """One row per customer and purchase period: user_id, pidx (period index), value (a sum).

    Takes purchase rows (user_id, event_time, ``value_col``) as an Ibis table; rows after
    ``observation_end`` are left out.
    """
    missing = {C.USER_ID, C.EVENT_TIME, value_col} - set(purchases.columns)
    if missing:
        raise ValueError(
            f"clv: purchases lack column(s) {sorted(missing)}; they have {list(purchases.columns)}"
        )
    days = _check_period(period)
    end = ibis.literal(parse_utc(observation_end))
    p = purchases.filter(purchases.event_time <= end)
    start = p.event_time.truncate("W" if days == 7 else "D")
    # whole days since 1970 of the period's first day (integer seconds / 86400 is exact)
    day_no = (start.epoch_seconds() / 86_400).round().cast("int64")
    p = p.mutate(pidx=((day_no - (4 if days == 7 else 0)) / days).floor().cast("int64"))
    return p.group_by(C.USER_ID, "pidx").agg(value=p[value_col].cast("float64").sum())


def rfm_summary(
    purchases: ibis.Table,
    *,
    observation_end: dt.datetime,
    period: str = "day",
    calibration_end: dt.datetime | None = None,
    value_col: str = C.PRICE,
) -> pl.DataFrame:
    """Per customer repeat_periods, recency, T, monetary_value (module docstring), on the engine.

    Takes purchase rows (user_id, event_time, ``value_col``) as an Ibis table and returns one row
    per customer, sorted by user_id: user_id, repeat_periods, recency, T, monetary_value,
    first_pidx (period index of the first purchase), total_value, and with ``calibration_end``
    also holdout_purchase_periods, holdout_monetary_value, holdout_T.
    """
    per = period_purchases(
        purchases, observation_end=observation_end, period=period, value_col=value_col
    )
    end_idx = period_index(observation_end, period)
    cal_idx = end_idx if calibration_end is None else period_index(calibration_end, period)
    if cal_idx > end_idx:
        raise ValueError(
            f"clv: calibration_end {calibration_end} is after the end of observation "
            f"{observation_end}"
        )
    cal = per.filter(per.pidx <= cal_idx)
    g = cal.group_by(C.USER_ID).agg(
        first_pidx=cal.pidx.min(),
        last_pidx=cal.pidx.max(),
        n=cal.count(),
        total_value=cal.value.sum(),
        first_value=cal.value.argmin(cal.pidx),
    )
    out = g.mutate(
        repeat_periods=(g.n - 1).cast("int64"),
        recency=(g.last_pidx - g.first_pidx).cast("float64"),
        T=(ibis.literal(cal_idx) - g.first_pidx).cast("float64"),
        monetary_value=ibis.ifelse(
            g.n > 1, (g.total_value - g.first_value) / (g.n - 1).cast("float64"), 0.0
        ),
    )
    cols = [*SUMMARY_COLUMNS, "first_pidx", "total_value"]
    if calibration_end is not None:
        h = per.filter(per.pidx > cal_idx)
        hg = h.group_by(C.USER_ID).agg(hf=h.count(), hv=h.value.sum())
        out = out.left_join(hg, C.USER_ID)
        hf = out.hf.fill_null(0)
        out = out.mutate(
            holdout_purchase_periods=hf.cast("int64"),
            holdout_monetary_value=ibis.ifelse(hf > 0, out.hv / hf.cast("float64"), 0.0),
            holdout_T=ibis.literal(float(end_idx - cal_idx)),
        )
        cols += list(HOLDOUT_COLUMNS)
    return out.select(*cols).to_polars().sort(C.USER_ID)


def clv_summary(
    purchases: ibis.Table,
    *,
    observation_end: dt.datetime,
    period: str = "day",
    lifespan_years: float = 3.0,
    value_col: str = C.PRICE,
) -> pl.DataFrame:
    """The ``clv`` table: the RFM summary plus simple, model-free CLV metrics.

    Takes purchase rows as an Ibis table; returns per customer user_id, repeat_periods,
    recency_periods, T_periods, monetary_value (as :func:`rfm_summary`), avg_order_value
    (mean over all purchase periods, first included), purchase_rate_per_period
    (``(repeat_periods + 1) / (T_periods + 1)``), clv (``avg_order_value *
    purchase_rate_per_period * periods in lifespan_years``, undiscounted, in the currency of
    ``value_col``),
    first_purchase (first day of the first purchase period) and period_days (1 or 7).
    """
    days = _check_period(period)
    s = rfm_summary(purchases, observation_end=observation_end, period=period, value_col=value_col)
    starts = [period_start(i, period) for i in s["first_pidx"].to_list()]
    return s.select(
        C.USER_ID,
        "repeat_periods",
        recency_periods=pl.col("recency"),
        T_periods=pl.col("T"),
        monetary_value=pl.col("monetary_value"),
        avg_order_value=pl.col("total_value") / (pl.col("repeat_periods") + 1),
        purchase_rate_per_period=(pl.col("repeat_periods") + 1) / (pl.col("T") + 1),
        # avg_order_value * purchase_rate_per_period * periods = total_value / (T + 1) * periods
        clv=pl.col("total_value") / (pl.col("T") + 1) * (lifespan_years * DAYS_PER_YEAR / days),
        first_purchase=pl.Series(starts, dtype=pl.Date),
        period_days=pl.lit(days),
    )


def describe(clv: pl.DataFrame) -> str:
    """One sentence on repeat buying and the CLV distribution."""
    repeat = (clv["repeat_periods"] > 0).mean()
    top = clv["clv"].sort(descending=True)
    share = top[: max(1, len(top) // 10)].sum() / max(top.sum(), 1e-12)
    return (
        f"{repeat:.0%} of buyers came back in another period; the top 10% by simple CLV hold "
        f"{share:.0%} of the total (median CLV {clv['clv'].median():,.2f})."
    )


def repeat_purchases_by_period(
    purchases: ibis.Table,
    *,
    observation_end: dt.datetime,
    period: str = "day",
    first_by: dt.datetime | None = None,
    value_col: str = C.PRICE,
) -> pl.DataFrame:
    """Repeat purchase periods per period (pidx, repeat_purchases), computed on the engine.

    A customer's purchase periods after their first one, counted in the period they fall in;
    with ``first_by``, only customers whose first purchase period is at or before its period
    (the calibration customers of a holdout split).
    """
    per = period_purchases(
        purchases, observation_end=observation_end, period=period, value_col=value_col
    )
    first = per.group_by(C.USER_ID).agg(first_pidx=per.pidx.min())
    j = per.join(first, C.USER_ID)
    j = j.filter(j.pidx > j.first_pidx)
    if first_by is not None:
        j = j.filter(j.first_pidx <= period_index(first_by, period))
    return j.group_by("pidx").agg(repeat_purchases=j.count()).to_polars().sort("pidx")
