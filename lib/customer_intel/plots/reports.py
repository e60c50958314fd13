"""Figures of the reports declared in params: one function per report type.

Each takes a metric's table and a :class:`customer_intel.params.metrics.ReportSpec` and returns a
figure; :func:`report_figure` picks the function by the report's ``type``. ``color``,
``facet_row`` and ``facet_col`` split the traces and panels as in plotly express.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import plotly.graph_objects as go
import polars as pl

from customer_intel.plots.theme import COLORS, SEQUENTIAL, TEMPLATE_NAME, styled

if TYPE_CHECKING:  # the params package is not needed to draw (a dashboard kernel skips it)
    from customer_intel.params.metrics import ReportSpec

__all__ = [
    "report_line",
    "report_bar",
    "report_bar_polar",
    "report_treemap",
    "report_heatmap",
    "report_funnel",
    "report_forecast",
    "report_figure",
    "report_figures",
]


def _px():
    """plotly.express, imported on the first report drawn.

    Not at module level: every other figure, and every dashboard page but the reports page,
    does without its import (0.1-0.3 s per page visit).
    """
    import plotly.express as px

    return px


def _common(r: ReportSpec) -> dict:
    # the house template from the start: with plotly's default one, px builds and merges that
    # large template into every figure first (half of a report's drawing time)
    out = {"color_discrete_sequence": list(COLORS), "template": TEMPLATE_NAME}
    for key in ("color", "facet_row", "facet_col"):
        if getattr(r, key):
            out[key] = getattr(r, key)
    return out


def _sorted(df: pl.DataFrame, r: ReportSpec) -> pl.DataFrame:
    keys = [c for c in (r.x, r.color, r.facet_row, r.facet_col) if c and c in df.columns]
    return df.sort(keys, nulls_last=True) if keys else df


def report_line(df: pl.DataFrame, r: ReportSpec) -> go.Figure:
    """A line per ``color`` value of ``y`` against ``x``."""
    fig = _px().line(_sorted(df, r), x=r.x, y=r.y, markers=True, **_common(r))
    return styled(fig, title=r.name)


def report_bar(df: pl.DataFrame, r: ReportSpec) -> go.Figure:
    """Bars of ``y`` per ``x`` (grouped by ``color``)."""
    fig = _px().bar(_sorted(df, r), x=r.x, y=r.y, barmode="group", **_common(r))
    return styled(fig, title=r.name)


def report_bar_polar(df: pl.DataFrame, r: ReportSpec) -> go.Figure:
    """A polar bar chart: ``x`` around the circle, ``y`` as the radius."""
    common = {k: v for k, v in _common(r).items() if k not in ("facet_row", "facet_col")}
    fig = _px().bar_polar(_sorted(df, r), theta=r.x, r=r.y, **common)
    return styled(fig, title=r.name)


def report_treemap(df: pl.DataFrame, r: ReportSpec) -> go.Figure:
    """Nested rectangles along ``path`` sized by ``y`` (rows with a missing level are left out)."""
    d = df.drop_nulls(r.path).filter(pl.col(r.y) > 0)
    kwargs = {"color": r.color} if r.color else {}
    fig = _px().treemap(d, path=r.path, values=r.y, **kwargs)
    return styled(fig, title=r.name)


def report_heatmap(df: pl.DataFrame, r: ReportSpec) -> go.Figure:
    """A grid of ``z`` with ``x`` across and ``y`` down."""
    d = df.pivot(on=r.x, index=r.y, values=r.z, aggregate_function="first", sort_columns=True)
    d = d.sort(r.y, nulls_last=True)
    cols = [c for c in d.columns if c != r.y]
    fig = go.Figure(
        go.Heatmap(
            z=d.select(cols).to_numpy(),
            x=cols,
            y=[str(v) for v in d[r.y]],
            colorscale=SEQUENTIAL,
            colorbar={"title": {"text": r.z}},
        )
    )
    fig.update_xaxes(title_text=r.x)
    fig.update_yaxes(title_text=r.y)
    return styled(fig, title=r.name)


def report_funnel(df: pl.DataFrame, r: ReportSpec) -> go.Figure:
    """Stages ``y`` with values ``x``, largest first."""
    d = df.sort(r.x, descending=True)
    fig = _px().funnel(d, x=r.x, y=r.y, **_common(r))
    return styled(fig, title=r.name)


def report_forecast(df: pl.DataFrame, r: ReportSpec) -> go.Figure:
    """Actuals, the backtest and forecast with their interval, seasonal naive, anomalies."""
    fig = go.Figure()
    hist = df.filter(pl.col("part") != "forecast")
    for part, name, dash in (("backtest", "backtest", "dot"), ("forecast", "forecast", None)):
        p = df.filter(pl.col("part") == part)
        if p.is_empty():
            continue
        x = p["date"].to_list()
        fig.add_trace(
            go.Scatter(
                x=x + x[::-1],
                y=p["upper"].to_list() + p["lower"].to_list()[::-1],
                fill="toself",
                fillcolor="rgba(0,114,178,0.15)",
                line={"width": 0},
                hoverinfo="skip",
                name=f"{name} interval",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x, y=p["forecast"].to_list(), name=name, line={"color": COLORS[0], "dash": dash}
            )
        )
    fig.add_trace(
        go.Scatter(
            x=hist["date"].to_list(),
            y=hist["actual"].to_list(),
            name="actual",
            line={"color": "#222"},
        )
    )
    bt = df.filter(pl.col("part") == "backtest")
    fig.add_trace(
        go.Scatter(
            x=bt["date"].to_list(),
            y=bt["naive"].to_list(),
            name="same day last week",
            line={"color": "#999", "dash": "dash"},
        )
    )
    an = df.filter(pl.col("anomaly"))
    fig.add_trace(
        go.Scatter(
            x=an["date"].to_list(),
            y=an["actual"].to_list(),
            mode="markers",
            marker={"color": COLORS[5], "size": 10, "symbol": "x"},
            name="anomaly",
        )
    )
    s = df.row(0, named=True)
    title = (
        f"{r.name} (backtest MAPE {s['model_mape']:.1f}% vs {s['naive_mape']:.1f}% for same day "
        "last week)"
    )
    return styled(fig, title=title)


_BY_TYPE = {
    "line": report_line,
    "bar": report_bar,
    "bar_polar": report_bar_polar,
    "treemap": report_treemap,
    "heatmap": report_heatmap,
    "funnel": report_funnel,
    "forecast": report_forecast,
}


def report_figure(df: pl.DataFrame, r: ReportSpec) -> go.Figure:
    """The figure of one report from its metric's table."""
    return _BY_TYPE[r.type](df, r)


def report_figures(
    reports: list[ReportSpec], tables: dict[str, pl.DataFrame]
) -> dict[str, go.Figure]:
    """Every report whose metric's table is there and has rows: {report name: figure}."""
    return {
        r.name: report_figure(tables[r.metric], r)
        for r in reports
        if r.metric in tables and not tables[r.metric].is_empty()
    }
