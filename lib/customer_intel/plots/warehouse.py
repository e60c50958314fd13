"""Figures of the ingest and optimize stages."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from customer_intel.plots.theme import COLORS, styled

__all__ = ["row_accounting", "daily_kpis", "funnel", "storage_sizes"]


def row_accounting(summary: pl.DataFrame, *, title: str | None = None) -> go.Figure:
    """Bar chart of rows kept, duplicates and rejects by reason (from ``ingest_summary``)."""
    s = summary.filter(
        pl.col("metric").is_in(["rows_kept", "duplicates"])
        | (pl.col("metric").str.starts_with("rejected:") & (pl.col("value") > 0))
    )
    fig = go.Figure(
        go.Bar(
            x=s["value"].to_list(),
            y=[m.replace("rejected:", "rejected: ") for m in s["metric"]],
            orientation="h",
            text=[f"{v:,}" for v in s["value"]],
            marker_color=COLORS[0],
        )
    )
    fig.update_xaxes(title_text="rows (log scale)", type="log")
    return styled(fig, title=title or "Where every input row went")


def daily_kpis(kpis: pl.DataFrame, *, title: str | None = None) -> go.Figure:
    """Daily revenue (bars) and daily active users (line) from ``fact_daily_kpis``."""
    k = kpis.sort("event_date")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Bar(
            x=k["event_date"].to_list(),
            y=k["revenue"].to_list(),
            name="revenue",
            marker_color=COLORS[0],
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=k["event_date"].to_list(),
            y=k["dau"].to_list(),
            name="DAU",
            mode="lines",
            line_color=COLORS[1],
        ),
        secondary_y=True,
    )
    fig.update_yaxes(title_text="revenue", tickformat=",.0f", secondary_y=False)
    fig.update_yaxes(title_text="daily active users", secondary_y=True, showgrid=False)
    return styled(fig, title=title or "Daily revenue and active users")


def funnel(funnel_overall: pl.DataFrame, *, title: str | None = None) -> go.Figure:
    """The view -> cart -> purchase funnel (distinct users per step)."""
    f = funnel_overall.sort("step_order")
    fig = go.Figure(
        go.Funnel(
            y=f["step"].to_list(),
            x=f["users"].to_list(),
            textinfo="value+percent initial",
            marker_color=list(COLORS[: f.height]),
        )
    )
    return styled(fig, title=title or "Funnel: users reaching each step")


def storage_sizes(sizes: pl.DataFrame, *, title: str | None = None) -> go.Figure:
    """Before/after bytes per column in memory (from ``warehouse.size_report``)."""
    s = sizes.filter(
        pl.col("item").str.starts_with("memory: ") & (pl.col("item") != "memory: total")
    )
    cols = [i.removeprefix("memory: ") for i in s["item"]]
    fig = go.Figure(
        [
            go.Bar(
                x=cols,
                y=s["before_bytes"].to_list(),
                name="plain types (64-bit numbers, text)",
                marker_color=COLORS[8],
            ),
            go.Bar(x=cols, y=s["after_bytes"].to_list(), name="optimized", marker_color=COLORS[0]),
        ]
    )
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="bytes in memory")
    return styled(fig, title=title or "In-memory size per column, before and after")
