"""Each report type builds a figure with the expected traces from a metric's table."""

from __future__ import annotations

import datetime as dt

import plotly.graph_objects as go
import polars as pl
import pytest

from customer_intel import forecast, plots
from customer_intel.dashboards.present import PLOTLY_TRACES
from customer_intel.params.metrics import ReportSpec

D = [dt.date(2024, 1, d) for d in (1, 2, 3)]
CONV = pl.DataFrame(
    {
        "Day": D * 2,
        "category": ["a"] * 3 + ["b"] * 3,
        "device": ["web", "app", "web", "app", "web", "app"],
        "ConversionRate": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        "Positives": [1, 2, 3, 4, 5, 6],
    }
)


def _r(**kw) -> ReportSpec:
    return ReportSpec(name="r", metric="m", **kw)


def test_line_has_one_trace_per_colour_and_facets_split_panels():
    fig = plots.report_line(CONV, _r(type="line", x="Day", y="ConversionRate", color="category"))
    assert [t.name for t in fig.data] == ["a", "b"]
    assert all(isinstance(t, go.Scatter) for t in fig.data)
    assert list(fig.data[1].y) == [0.4, 0.5, 0.6]
    faceted = plots.report_line(
        CONV, _r(type="line", x="Day", y="ConversionRate", color="category", facet_col="device")
    )
    assert len(faceted.data) == 4  # 2 categories x 2 panels
    assert {a.text for a in faceted.layout.annotations} == {"device=web", "device=app"}


def test_bar_and_bar_polar():
    totals = CONV.group_by("category").agg(pl.col("Positives").sum()).sort("category")
    bar = plots.report_bar(totals, _r(type="bar", x="category", y="Positives"))
    assert isinstance(bar.data[0], go.Bar) and list(bar.data[0].y) == [6, 15]
    polar = plots.report_bar_polar(totals, _r(type="bar_polar", x="category", y="Positives"))
    assert isinstance(polar.data[0], go.Barpolar) and list(polar.data[0].r) == [6, 15]


def test_treemap_heatmap_and_funnel():
    tm = plots.report_treemap(CONV, _r(type="treemap", path=["category", "device"], y="Positives"))
    assert isinstance(tm.data[0], go.Treemap)
    assert sorted(tm.data[0].labels) == ["a", "app", "app", "b", "web", "web"]
    assert sum(v for v, p in zip(tm.data[0].values, tm.data[0].parents, strict=True) if not p) == 21
    hm = plots.report_heatmap(CONV, _r(type="heatmap", x="Day", y="category", z="ConversionRate"))
    assert isinstance(hm.data[0], go.Heatmap)
    assert hm.data[0].z.tolist() == [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]
    assert list(hm.data[0].y) == ["a", "b"]
    fn = plots.report_funnel(
        CONV.filter(pl.col("Day") == D[0]), _r(type="funnel", x="Positives", y="category")
    )
    assert isinstance(fn.data[0], go.Funnel) and list(fn.data[0].x) == [4, 1]


def test_forecast_report_draws_actuals_intervals_naive_and_anomalies():
    import numpy as np

    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(70)]
    t = np.arange(70)
    y = (
        100
        + t
        + np.array([0, 5, 10, 15, 10, 5, -20])[t % 7]
        + np.random.default_rng(0).normal(0, 2, 70)
    )
    y[-3] *= 2  # an anomaly
    table = forecast.forecast_table(
        pl.DataFrame({"date": days, "value": y}), horizon_days=7, backtest_days=21, interval=0.95
    )
    fig = plots.report_figure(table, _r(type="forecast"))
    names = [tr.name for tr in fig.data]
    assert names == [
        "backtest interval",
        "backtest",
        "forecast interval",
        "forecast",
        "actual",
        "same day last week",
        "anomaly",
    ]
    assert days[-3] in list(fig.data[-1].x)
    assert {t.type for t in fig.data} <= PLOTLY_TRACES
    assert "backtest MAPE" in fig.layout.title.text


@pytest.mark.parametrize("kind", ["line", "bar", "bar_polar", "treemap", "heatmap", "funnel"])
def test_report_figure_dispatches_every_type(kind):
    spec = {
        "line": dict(x="Day", y="Positives"),
        "bar": dict(x="Day", y="Positives"),
        "bar_polar": dict(x="category", y="Positives"),
        "treemap": dict(path=["category"], y="Positives"),
        "heatmap": dict(x="Day", y="category", z="Positives"),
        "funnel": dict(x="Positives", y="category"),
    }[kind]
    fig = plots.report_figure(CONV, _r(type=kind, **spec))
    assert fig.data and fig.layout.title.text == "r"
    assert {t.type for t in fig.data} <= PLOTLY_TRACES  # the dashboards' plotly.js draws it


def test_every_report_type_is_drawn_by_the_dashboards_plotly_js():
    from customer_intel.params.metrics import REPORT_TYPES

    assert set(REPORT_TYPES) == {"line", "bar", "bar_polar", "treemap", "heatmap", "funnel"} | {
        "forecast"  # the forecast test above
    }
