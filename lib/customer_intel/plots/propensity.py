"""Figures of the propensity stage."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl

from customer_intel.plots.theme import COLORS, styled

__all__ = [
    "gains_chart",
    "lift_chart",
    "calibration_curve",
    "profit_chart",
    "importance_bar",
    "shap_beeswarm",
    "deciles_bar",
]


def gains_chart(curves: dict[str, pl.DataFrame], *, title: str | None = None) -> go.Figure:
    """Cumulative gains of several scores (``scoring.gains_curve`` each) and the random line."""
    fig = go.Figure(
        [go.Scatter(x=[0, 1], y=[0, 1], name="random", line={"dash": "dot", "color": "#999"})]
    )
    for i, (name, c) in enumerate(curves.items()):
        fig.add_trace(
            go.Scatter(
                x=c["targeted"].to_list(), y=c["gain"].to_list(), name=name, line_color=COLORS[i]
            )
        )
    fig.update_xaxes(title_text="share of customers targeted", tickformat=".0%")
    fig.update_yaxes(title_text="share of buyers reached", tickformat=".0%")
    return styled(fig, title=title or "Cumulative gains")


def lift_chart(curves: dict[str, pl.DataFrame], *, title: str | None = None) -> go.Figure:
    """Cumulative lift by targeting depth."""
    fig = go.Figure()
    for i, (name, c) in enumerate(curves.items()):
        d = c.filter(pl.col("targeted") >= 0.01)
        fig.add_trace(
            go.Scatter(
                x=d["targeted"].to_list(), y=d["lift"].to_list(), name=name, line_color=COLORS[i]
            )
        )
    fig.add_hline(y=1, line_dash="dot", line_color="#999")
    fig.update_xaxes(title_text="share of customers targeted", tickformat=".0%")
    fig.update_yaxes(title_text="lift over random")
    return styled(fig, title=title or "Cumulative lift")


def calibration_curve(tables: dict[str, pl.DataFrame], *, title: str | None = None) -> go.Figure:
    """Mean predicted vs observed rate per decile (``scoring.calibration_table`` each)."""
    hi = max(max(t["mean_predicted"].max(), t["observed_rate"].max()) for t in tables.values())
    fig = go.Figure(
        [go.Scatter(x=[0, hi], y=[0, hi], name="perfect", line={"dash": "dot", "color": "#999"})]
    )
    for i, (name, t) in enumerate(tables.items()):
        fig.add_trace(
            go.Scatter(
                x=t["mean_predicted"].to_list(),
                y=t["observed_rate"].to_list(),
                mode="lines+markers",
                name=name,
                line_color=COLORS[i],
            )
        )
    fig.update_xaxes(title_text="mean predicted probability")
    fig.update_yaxes(title_text="observed purchase rate")
    return styled(fig, title=title or "Calibration by decile")


def profit_chart(curve: pl.DataFrame, best: dict, *, title: str | None = None) -> go.Figure:
    """Expected profit over targeting depth with the optimum marked."""
    step = max(1, curve.height // 2000)
    c = curve.gather_every(step)
    fig = go.Figure(
        go.Scatter(
            x=c["depth"].to_list(),
            y=c["expected_profit"].to_list(),
            name="expected profit",
            line_color=COLORS[0],
        )
    )
    fig.add_vline(
        x=best["depth"],
        line_dash="dash",
        line_color="#D55E00",
        annotation_text=f"best: {best['depth']:,} customers",
    )
    fig.update_xaxes(title_text="customers contacted (by descending probability)")
    fig.update_yaxes(title_text="expected profit", tickformat=",.0f")
    return styled(fig, title=title or "Expected profit by targeting depth")


def importance_bar(
    importance: pl.DataFrame, shap_mean: pl.DataFrame | None = None, *, title: str | None = None
) -> go.Figure:
    """Feature importance by gain (and mean |SHAP| when given)."""
    imp = importance.sort("gain")
    fig = go.Figure(
        go.Bar(
            x=(imp["gain"] / imp["gain"].sum()).to_list(),
            y=imp["feature"].to_list(),
            orientation="h",
            name="share of gain",
            marker_color=COLORS[0],
        )
    )
    if shap_mean is not None:
        s = shap_mean.join(imp.select("feature"), on="feature", how="right")
        fig.add_trace(
            go.Bar(
                x=(s["mean_abs_shap"] / s["mean_abs_shap"].sum()).to_list(),
                y=s["feature"].to_list(),
                orientation="h",
                name="share of mean |SHAP|",
                marker_color=COLORS[1],
            )
        )
    fig.update_layout(barmode="group", height=max(350, 28 * imp.height))
    fig.update_xaxes(tickformat=".0%")
    return styled(fig, title=title or "What drives the score")


def shap_beeswarm(
    shap: pl.DataFrame,
    values: pl.DataFrame,
    *,
    max_points: int = 2000,
    seed: int = 0,
    title: str | None = None,
) -> go.Figure:
    """SHAP value per customer and feature, coloured by the feature's (rank-scaled) value."""
    feats = [c for c in shap.columns if c != "bias"]
    order = sorted(feats, key=lambda f: float(shap[f].abs().mean()))
    idx = np.random.default_rng(seed).permutation(shap.height)[:max_points]
    fig = go.Figure()
    for j, f in enumerate(order):
        sv = shap[f].to_numpy()[idx]
        v = values[f].to_numpy()[idx] if f in values.columns else None
        if v is not None and v.dtype.kind in "if":
            col = np.argsort(np.argsort(np.nan_to_num(v.astype(float)))) / max(len(v) - 1, 1)
        else:
            col = np.full(len(idx), 0.5)
        jitter = np.random.default_rng(j).uniform(-0.3, 0.3, len(idx))
        fig.add_trace(
            go.Scattergl(  # float32 arrays travel as typed arrays: a third of the JSON
                x=sv.astype(np.float32),
                y=(j + jitter).astype(np.float32),
                mode="markers",
                marker={
                    "color": col.astype(np.float32),
                    "colorscale": "RdBu_r",
                    "size": 3,
                    "showscale": j == 0,
                    "colorbar": {"title": "value (rank)"},
                },
                name=f,
                showlegend=False,
            )
        )
    fig.update_yaxes(tickvals=list(range(len(order))), ticktext=order)
    fig.update_xaxes(title_text="SHAP value (log-odds contribution)")
    fig.update_layout(height=max(400, 28 * len(order)))
    return styled(fig, title=title or "SHAP values per customer")


def deciles_bar(deciles: pl.DataFrame, *, title: str | None = None) -> go.Figure:
    """Purchase rate per score decile."""
    fig = go.Figure(
        go.Bar(
            x=deciles["decile"].to_list(),
            y=deciles["rate"].to_list(),
            text=[f"{v:.1%}" for v in deciles["rate"]],
            marker_color=COLORS[0],
        )
    )
    fig.update_xaxes(title_text="score decile (1 = highest)", dtick=1)
    fig.update_yaxes(title_text="purchase rate", tickformat=".0%")
    return styled(fig, title=title or "Purchase rate by decile")
