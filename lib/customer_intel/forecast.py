"""Daily forecasts with prediction intervals, backtested against "same day last week".

The model is statsmodels' ``ETSModel`` (additive error, damped additive trend, additive weekly
seasonality, heuristic initial states; intervals from the model's analytical state-space
variance). The backtest is a
rolling origin over the last ``backtest_days``: for each week the model is refit on the days
before it and forecasts that week (1-7 days ahead), and the seasonal-naive baseline forecasts each
day with the value seven days earlier, which is known at the same origin. Both are scored with
MAPE and sMAPE over the same days; a backtest day whose actual value falls outside the model's
interval is an anomaly.

``MAPE = mean(|a - f| / |a|) * 100`` over days with ``a != 0``;
``sMAPE = mean(2 |a - f| / (|a| + |f|)) * 100`` over days where ``|a| + |f| > 0``.
"""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import polars as pl

from customer_intel.columns import FORECAST_COLUMNS

SEASON = 7


class TooShort(ValueError):
    """The series has too few days for the model or the backtest."""


def mape(actual: np.ndarray, pred: np.ndarray) -> float:
    """Mean absolute percentage error (percent), over the days with a non-zero actual."""
    a, f = np.asarray(actual, float), np.asarray(pred, float)
    ok = a != 0
    return float(np.mean(np.abs(a[ok] - f[ok]) / np.abs(a[ok])) * 100) if ok.any() else np.nan


def smape(actual: np.ndarray, pred: np.ndarray) -> float:
    """Symmetric MAPE (percent, 0-200), over the days where actual or forecast is non-zero."""
    a, f = np.asarray(actual, float), np.asarray(pred, float)
    d = np.abs(a) + np.abs(f)
    ok = d > 0
    return float(np.mean(2 * np.abs(a[ok] - f[ok]) / d[ok]) * 100) if ok.any() else np.nan


def _fit(y: np.ndarray):
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    model = ETSModel(
        pd.Series(y.astype(float)),  # statsmodels' prediction frames need an indexed series
        error="add",
        trend="add",
        damped_trend=True,
        seasonal="add",
        seasonal_periods=SEASON,
        # initial level, trend and weekday states from a decomposition of the first weeks
        # instead of estimating them by maximum likelihood: 30x faster on two months of days
        # (8 s -> 0.25 s a fit) and it converges where the full estimation often does not
        initialization_method="heuristic",
    )
    with warnings.catch_warnings():
        # short series often end the optimiser early with a convergence warning; the fit is
        # still the best found, and the backtest says how good it is
        warnings.simplefilter("ignore")
        return model.fit(disp=False, maxiter=2000)


def ets_forecast(y: np.ndarray, horizon: int, interval: float) -> tuple[np.ndarray, ...]:
    """Mean, lower and upper bound of the next ``horizon`` values of the daily series ``y``."""
    if len(y) < 2 * SEASON + 4:
        raise TooShort(f"a forecast needs at least {2 * SEASON + 4} days of history, got {len(y)}")
    res = _fit(y)
    frame = res.get_prediction(start=len(y), end=len(y) + horizon - 1).summary_frame(
        alpha=1 - interval
    )
    return (
        frame["mean"].to_numpy(),
        frame["pi_lower"].to_numpy(),
        frame["pi_upper"].to_numpy(),
    )


def complete_days(daily: pl.DataFrame) -> pl.DataFrame:
    """``date, value`` with every day from the first to the last (missing days are 0)."""
    daily = daily.sort("date")
    days = pl.DataFrame(
        {"date": pl.date_range(daily["date"].min(), daily["date"].max(), "1d", eager=True)}
    )
    return days.join(daily, on="date", how="left").with_columns(pl.col("value").fill_null(0.0))


def backtest(
    y: np.ndarray, backtest_days: int, interval: float
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rolling-origin backtest of the last ``backtest_days`` (shortened to leave 3 weeks).

    Returns the first backtest index, and the model's mean, lower, upper and the seasonal-naive
    forecasts of the days from it to the end.
    """
    n = len(y)
    days = min(backtest_days, n - (2 * SEASON + 4 + SEASON))
    if days < SEASON:
        raise TooShort(
            f"a backtest needs at least {3 * SEASON + 4 + SEASON} days of history, got {n}"
        )
    start = n - days
    mean, low, high = (np.empty(days) for _ in range(3))
    for origin in range(start, n, SEASON):
        h = min(SEASON, n - origin)
        m, lo, hi = ets_forecast(y[:origin], h, interval)
        i = origin - start
        mean[i : i + h], low[i : i + h], high[i : i + h] = m, lo, hi
    naive = y[start - SEASON : n - SEASON]  # the same day one week earlier
    return start, mean, low, high, naive


def forecast_table(
    daily: pl.DataFrame, *, horizon_days: int, backtest_days: int, interval: float
) -> pl.DataFrame:
    """History, backtest and forecast of a daily series (``date``, ``value``) in one table.

    Columns: :data:`FORECAST_COLUMNS`. ``part`` is ``history``, ``backtest`` or ``forecast``;
    the four error columns repeat the backtest's scores on every row.
    """
    daily = complete_days(daily)
    y = daily["value"].to_numpy().astype(float)
    start, bt_mean, bt_low, bt_high, naive = backtest(y, backtest_days, interval)
    f_mean, f_low, f_high = ets_forecast(y, horizon_days, interval)
    actual_bt = y[start:]
    scores = {
        "model_mape": mape(actual_bt, bt_mean),
        "model_smape": smape(actual_bt, bt_mean),
        "naive_mape": mape(actual_bt, naive),
        "naive_smape": smape(actual_bt, naive),
    }
    n = len(y)
    pad = [None] * start
    last: dt.date = daily["date"].max()
    future = [last + dt.timedelta(days=i + 1) for i in range(horizon_days)]
    hist = pl.DataFrame(
        {
            "date": daily["date"],
            "part": ["history"] * start + ["backtest"] * (n - start),
            "actual": y,
            "forecast": pad + bt_mean.tolist(),
            "lower": pad + bt_low.tolist(),
            "upper": pad + bt_high.tolist(),
            "naive": pad + naive.tolist(),
        },
        schema_overrides={c: pl.Float64 for c in ("forecast", "lower", "upper", "naive")},
    )
    fut = pl.DataFrame(
        {
            "date": future,
            "part": ["forecast"] * horizon_days,
            "actual": [None] * horizon_days,
            "forecast": f_mean,
            "lower": f_low,
            "upper": f_high,
            "naive": [None] * horizon_days,
        },
        schema=hist.schema,
    )
    out = pl.concat([hist, fut]).with_columns(
        anomaly=(pl.col("part") == "backtest")
        & ((pl.col("actual") < pl.col("lower")) | (pl.col("actual") > pl.col("upper"))),
        **{k: pl.lit(v, pl.Float64) for k, v in scores.items()},
    )
    return out.select(FORECAST_COLUMNS)


def anomalies(table: pl.DataFrame, metric: str) -> pl.DataFrame:
    """The backtest days outside the model's interval: metric, date, actual, forecast, bounds."""
    return table.filter(pl.col("anomaly")).select(
        pl.lit(metric).alias("metric"), "date", "actual", "forecast", "lower", "upper"
    )


def describe(table: pl.DataFrame, metric: str) -> str:
    """One sentence: does the forecast beat same-day-last-week, and how many anomalies."""
    r = table.row(0, named=True)
    better = r["model_mape"] < r["naive_mape"]
    n_bt = table.filter(pl.col("part") == "backtest").height
    n_anom = int(table["anomaly"].sum())
    return (
        f"{metric}: over the last {n_bt} days the forecast's MAPE was {r['model_mape']:.1f}% "
        f"(sMAPE {r['model_smape']:.1f}%) against {r['naive_mape']:.1f}% "
        f"(sMAPE {r['naive_smape']:.1f}%) for 'same day last week', so it "
        f"{'beats' if better else 'does not beat'} the baseline; {n_anom} day(s) fell outside "
        "its interval."
    )
