"""Forecasts: error measures by hand, and the model beats same-day-last-week on planted data."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from customer_intel import forecast


def test_mape_and_smape_by_hand():
    a = np.array([100.0, 200.0, 0.0, 50.0])
    f = np.array([110.0, 150.0, 10.0, 50.0])
    # MAPE skips the zero actual: (10/100 + 50/200 + 0) / 3
    assert forecast.mape(a, f) == pytest.approx((0.1 + 0.25 + 0) / 3 * 100)
    # sMAPE: 2*10/210, 2*50/350, 2*10/10, 0
    assert forecast.smape(a, f) == pytest.approx((20 / 210 + 100 / 350 + 2 + 0) / 4 * 100)


def _planted(days: int = 91, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    weekly = np.array([0, 60, 120, 160, 120, 40, -150])
    y = 1000 + 12 * t + weekly[t % 7] + rng.normal(0, 25, days)
    start = dt.date(2024, 1, 1)
    return pl.DataFrame({"date": [start + dt.timedelta(days=int(i)) for i in t], "value": y})


def test_the_forecast_beats_seasonal_naive_on_a_planted_trend_and_week():
    daily = _planted()
    out = forecast.forecast_table(daily, horizon_days=14, backtest_days=28, interval=0.95)
    assert out.columns == list(forecast.FORECAST_COLUMNS)
    assert out.filter(pl.col("part") == "backtest").height == 28
    fut = out.filter(pl.col("part") == "forecast")
    assert fut.height == 14 and fut["date"][0] == daily["date"].max() + dt.timedelta(days=1)
    assert (fut["lower"] < fut["forecast"]).all() and (fut["forecast"] < fut["upper"]).all()
    r = out.row(0, named=True)
    # "same day last week" lags the trend by 7 days x 12 a day = 84 (~5%); the model follows it
    assert r["model_mape"] < r["naive_mape"] * 0.8, r
    assert r["model_smape"] < r["naive_smape"]
    # the naive column is the value seven days earlier
    bt = out.filter(pl.col("part") == "backtest")
    earlier = daily.filter(pl.col("date").is_in([d - dt.timedelta(days=7) for d in bt["date"]]))
    assert bt["naive"].to_list() == pytest.approx(earlier["value"].to_list())
    # the planted future: trend and weekday pattern without noise, inside the interval
    t = np.arange(91, 105)
    weekly = np.array([0, 60, 120, 160, 120, 40, -150])
    truth = 1000 + 12 * t + weekly[t % 7]
    inside = (fut["lower"].to_numpy() <= truth) & (truth <= fut["upper"].to_numpy())
    assert inside.mean() >= 0.9


def test_a_planted_spike_is_an_anomaly():
    daily = _planted(seed=1)
    spike_day = daily["date"][-5]
    daily = daily.with_columns(
        value=pl.when(pl.col("date") == spike_day).then(pl.col("value") * 3).otherwise("value")
    )
    out = forecast.forecast_table(daily, horizon_days=7, backtest_days=28, interval=0.99)
    anomalies = forecast.anomalies(out, "revenue")
    assert spike_day in anomalies["date"].to_list()
    assert anomalies.height <= 3  # at 99% the ordinary days stay inside
    assert "beats" in forecast.describe(out, "revenue")


def test_missing_days_count_as_zero_and_short_series_are_refused():
    daily = pl.DataFrame({"date": [dt.date(2024, 1, 1), dt.date(2024, 1, 3)], "value": [1.0, 2.0]})
    assert forecast.complete_days(daily)["value"].to_list() == [1.0, 0.0, 2.0]
    with pytest.raises(ValueError, match="backtest needs at least"):
        forecast.forecast_table(_planted(20), horizon_days=7, backtest_days=28, interval=0.95)
