"""Figures of the experiments stage."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl

from customer_intel.plots.theme import COLORS, GROUP_COLORS, styled

__all__ = [
    "effects_forest",
    "experiment_over_time",
    "lift_distribution",
    "metric_by_group",
    "power_curve_chart",
]


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


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    return f"rgba({int(h[:2], 16)},{int(h[2:4], 16)},{int(h[4:], 16)},{alpha})"


def experiment_over_time(
    daily: pl.DataFrame, metric: str, *, title: str | None = None
) -> go.Figure:
    """Cumulative effect per day of one metric, per arm, from the ``experiment_daily`` table.

    The estimate, the fixed interval (shaded, valid at one planned look) and the confidence
    sequence (dashed, valid at every look).
    """
    d = daily.filter(pl.col("metric") == metric).sort("day")
    fig = go.Figure()
    for i, (arm,) in enumerate(d.select("arm").unique(maintain_order=True).iter_rows()):
        a = d.filter(pl.col("arm") == arm)
        colour = COLORS[i % len(COLORS)]
        x = a["day"].to_list()
        fig.add_trace(
            go.Scatter(
                x=x + x[::-1],
                y=a["ci_high"].to_list() + a["ci_low"].to_list()[::-1],
                fill="toself",
                fillcolor=_rgba(colour, 0.18),
                line={"width": 0},
                name=f"{arm}: 95% interval (one look)",
                hoverinfo="skip",
            )
        )
        for col, label in (("seq_ci_low", "confidence sequence"), ("seq_ci_high", None)):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=a[col].to_list(),
                    mode="lines",
                    line={"color": colour, "dash": "dash", "width": 1},
                    name=f"{arm}: {label} (any look)" if label else None,
                    showlegend=label is not None,
                )
            )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=a["abs_lift"].to_list(),
                mode="lines+markers",
                line={"color": colour},
                name=f"{arm}: effect",
            )
        )
    fig.add_hline(y=0, line_dash="dot", line_color="#999")
    fig.update_xaxes(title_text="assigned up to (day)")
    fig.update_yaxes(title_text=f"difference in {metric} (arm - control)")
    return styled(fig, title=title or f"{metric}: cumulative effect by day")


def effects_forest(results: pl.DataFrame, *, title: str | None = None) -> go.Figure:
    """Relative change and its interval per metric and arm, coloured by role.

    The interval is that of the difference over the control value; a guardrail's
    non-inferiority margin is drawn as a tick.
    """
    fig = go.Figure()
    role_colour = {"goal": COLORS[0], "guardrail": COLORS[5], "secondary": COLORS[8]}
    many = results["arm"].n_unique() > 1
    for role in ("goal", "guardrail", "secondary"):
        r = results.filter(pl.col("role") == role)
        if not r.height:
            continue
        labels = [f"{m} ({a})" if many else m for m, a in zip(r["metric"], r["arm"], strict=True)]
        ctrl = r["control"].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = r["abs_lift"].to_numpy() / ctrl
            lo = r["ci_low"].to_numpy() / ctrl
            hi = r["ci_high"].to_numpy() / ctrl
        fig.add_trace(
            go.Scatter(
                x=rel.tolist(),
                y=labels,
                mode="markers",
                marker={"color": role_colour[role], "size": 9},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": (hi - rel).tolist(),
                    "arrayminus": (rel - lo).tolist(),
                },  # fmt: skip
                name=role,
            )
        )
        for lab, m, better in zip(labels, r["margin"], r["higher_is_better"], strict=True):
            if m:
                fig.add_trace(
                    go.Scatter(
                        x=[-m if better else m], y=[lab], mode="markers",
                        marker={"symbol": "line-ns-open", "size": 16, "color": "#D55E00"},
                        name="non-inferiority margin", showlegend=False,
                    )
                )  # fmt: skip
    fig.add_vline(x=0, line_dash="dot", line_color="#999")
    fig.update_xaxes(title_text="relative change vs control (95% interval)", tickformat=".0%")
    fig = styled(fig, title=title or "Effects by metric and role")
    longest = max((len(str(y)) for t in fig.data for y in (t.y or ())), default=10)
    fig.update_yaxes(automargin=True)
    return fig.update_layout(margin={"l": min(40 + 7 * longest, 320)})
