"""Figures of the dashboards (built with :mod:`customer_intel.plots.theme`).

Count axes start at zero (never a negative tick), and labels are whole words: the dashboards
draw titles in HTML above each chart, so these figures carry none of their own.
"""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from customer_intel.plots.theme import COLORS, histogram_bars, styled

__all__ = [
    "daily_revenue_visitors",
    "session_funnel",
    "category_revenue",
    "events_by_type",
    "price_histogram",
    "profit_by_depth",
]


def daily_revenue_visitors(daily: pl.DataFrame, *, currency: str = "USD") -> go.Figure:
    """Revenue (bars) and visitors (line, right axis) per day from ``dash_daily`` rows."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(
        x=daily["event_date"].to_list(),
        y=daily["revenue"].to_list(),
        name="revenue",
        marker_color=COLORS[0],
        hovertemplate=f"%{{x|%d %b %Y}}: %{{y:,.2f}} {currency}<extra>revenue</extra>",
    )
    fig.add_scatter(
        x=daily["event_date"].to_list(),
        y=daily["visitors"].to_list(),
        name="visitors",
        mode="lines",
        line={"color": COLORS[1], "width": 2},
        secondary_y=True,
        hovertemplate="%{x|%d %b %Y}: %{y:,} visitors<extra></extra>",
    )
    fig.update_yaxes(title_text=f"revenue ({currency})", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="visitors", rangemode="tozero", secondary_y=True, showgrid=False)
    fig.update_yaxes(tickformat="~s")
    # its own round ticks (a tick synced to the revenue grid read "70.3446" visitors)
    fig.update_yaxes(tickmode="auto", tickformat=",~r", secondary_y=True)
    return styled(fig)


def session_funnel(daily: pl.DataFrame) -> go.Figure:
    """Sessions with a view -> with a cart -> with a purchase (orders), from ``dash_daily``.

    Drawn as horizontal bars, widest first, each labelled with its count and its share of the
    first step: the pages' plotly.js (the cartesian bundle) has no funnel trace.
    """
    steps = ["viewed a product", "added to cart", "bought"]
    values = [
        int(daily["sessions_with_view"].sum()),
        int(daily["sessions_with_cart"].sum()),
        int(daily["orders"].sum()),
    ]
    first = values[0] or 1
    fig = go.Figure(
        go.Bar(
            y=steps,
            x=values,
            orientation="h",
            text=[f"{v:,}<br>{v / first:.0%}" for v in values],
            textposition="auto",
            marker={"color": [COLORS[0], COLORS[4], COLORS[2]]},
            hovertemplate="%{y}: %{x:,} sessions<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(rangemode="tozero", showticklabels=False, showgrid=False)
    return styled(fig)


def category_revenue(cats: pl.DataFrame, *, currency: str = "USD") -> go.Figure:
    """Horizontal bars: revenue per category (``category``, ``revenue``, ``growth_label``)."""
    fig = go.Figure(
        go.Bar(
            x=cats["revenue"].to_list(),
            y=cats["category"].to_list(),
            orientation="h",
            marker_color=COLORS[0],
            text=cats["growth_label"].to_list(),
            textposition="auto",
            cliponaxis=False,
            hovertemplate=f"%{{y}}: %{{x:,.2f}} {currency}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text=f"revenue ({currency})", rangemode="tozero", tickformat="~s")
    return styled(fig)


def events_by_type(events: pl.DataFrame) -> go.Figure:
    """Stacked bars: rows per day and event type (``event_date``, ``event_type``, ``events``)."""
    fig = go.Figure()
    for i, (t, g) in enumerate(events.group_by("event_type", maintain_order=True)):
        fig.add_bar(
            x=g["event_date"].to_list(),
            y=g["events"].to_list(),
            name=str(t[0]),
            marker_color=COLORS[i % len(COLORS)],
        )
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title_text="events", rangemode="tozero", tickformat="~s")
    return styled(fig)


def price_histogram(prices: pl.DataFrame, *, currency: str = "USD") -> go.Figure:
    """Bars of a precomputed price histogram (``price_from``, ``price_to``, ``events``)."""
    fig = go.Figure(
        histogram_bars(prices["price_from"], prices["price_to"], prices["events"], noun="events")
    )
    fig.update_xaxes(title_text=f"price ({currency})", rangemode="tozero")
    fig.update_yaxes(title_text="events", rangemode="tozero", tickformat="~s")
    return styled(fig)


def profit_by_depth(curve: pl.DataFrame, best_depth: int, *, currency: str = "USD") -> go.Figure:
    """Expected campaign profit by how many customers are contacted (``depth``, ``profit``)."""
    fig = go.Figure(
        go.Scatter(
            x=curve["depth"].to_list(),
            y=curve["profit"].to_list(),
            mode="lines",
            line={"color": COLORS[0]},
            hovertemplate=f"contact %{{x:,}}: %{{y:,.2f}} {currency}<extra></extra>",
        )
    )
    fig.add_vline(x=best_depth, line_dash="dash", line_color=COLORS[5])
    fig.update_xaxes(title_text="customers contacted (highest scores first)", rangemode="tozero")
    fig.update_yaxes(title_text=f"expected profit ({currency})", tickformat="~s")
    return styled(fig)
