"""Figures of the experiments stage."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl

from customer_intel.plots.theme import GROUP_COLORS, styled

__all__ = ["lift_distribution", "metric_by_group", "power_curve_chart"]


def lift_distribution(lifts: dict[str, np.ndarray], *, title: str | None = None) -> go.Figure:
    """Bootstrap distributions of the relative lift, one per metric."""
    fig = go.Figure()
    for name, v in lifts.items():
        fig.add_trace(
            go.Histogram(
                x=v[np.isfinite(v)].tolist(),
                name=name,
                opacity=0.6,
                histnorm="probability density",
                nbinsx=60,
            )
        )
    fig.add_vline(x=0, line_dash="dot", line_color="#999")
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text="relative lift (treatment / control - 1)", tickformat=".0%")
    return styled(fig, title=title or "Bootstrap distribution of the relative lift")


def metric_by_group(
    units: pl.DataFrame,
    column: str,
    group: str,
    *,
    max_points: int = 20000,
    seed: int = 0,
    title: str | None = None,
) -> go.Figure:
    """Box plot of a continuous metric per group (log axis when it is heavy-tailed)."""
    d = (
        units.sample(min(max_points, units.height), seed=seed)
        if units.height > max_points
        else units
    )
    fig = go.Figure()
    for g in sorted(d[group].unique().to_list()):
        v = d.filter(pl.col(group) == g)[column].to_list()
        fig.add_trace(go.Box(y=v, name=str(g), marker_color=GROUP_COLORS.get(str(g)), boxmean=True))
    fig.update_yaxes(title_text=column)
    return styled(fig, title=title or f"{column} by group")


def power_curve_chart(
    curve: pl.DataFrame,
    *,
    target: float = 0.8,
    n_actual: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Power by units per group, with the target power and the experiment's size marked."""
    fig = go.Figure(
        go.Scatter(
            x=curve["n_per_group"].to_list(),
            y=curve["power"].to_list(),
            name="power",
            line_color=GROUP_COLORS["treatment"],
        )
    )
    fig.add_hline(y=target, line_dash="dot", line_color="#999", annotation_text=f"{target:.0%}")
    if n_actual:
        fig.add_vline(
            x=n_actual, line_dash="dash", line_color="#D55E00", annotation_text="this test"
        )
    fig.update_xaxes(title_text="units per group")
    fig.update_yaxes(title_text="power", tickformat=".0%", range=[0, 1.02])
    return styled(fig, title=title or "Power curve")
