"""Figures of the recommendations stage."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl

from customer_intel.plots.theme import COLORS, GROUP_COLORS, styled

__all__ = ["rules_scatter", "metric_comparison"]


def rules_scatter(rules: pl.DataFrame, *, top: int = 200, title: str | None = None) -> go.Figure:
    """Rules table in (support, confidence, lift, antecedents, consequents), a scatter out.

    The ``top`` rules by lift (then support, then the rule itself, so ties pick the same rules
    every time), at most ``top`` points whatever the number of rules: support (log axis) vs
    confidence, marker size and colour by lift, the rule in the hover text.
    """
    r = rules.sort(
        ["lift", "support", "antecedents", "consequents"], descending=[True, True, False, False]
    ).head(top)
    label = [
        f"{' + '.join(a)} -> {' + '.join(c)}"
        for a, c in zip(r["antecedents"], r["consequents"], strict=True)
    ]
    size = (
        (r["lift"].log1p() / max(float(r["lift"].log1p().max() or 1), 1e-9) * 30 + 5).to_list()
        if r.height
        else []
    )
    fig = go.Figure(
        go.Scatter(
            x=r["support"].to_list(),
            y=r["confidence"].to_list(),
            mode="markers",
            text=label,
            marker={
                "size": size,
                "color": r["lift"].to_list(),
                "colorscale": "Blues",
                "showscale": True,
                "colorbar": {"title": "lift"},
            },
            hovertemplate="%{text}<br>support %{x:.4f}<br>confidence %{y:.1%}",
        )
    )
    fig.update_xaxes(title_text="support", type="log")
    fig.update_yaxes(title_text="confidence", tickformat=".0%")
    return styled(fig, title=title or f"Top {min(top, rules.height)} rules by lift")


def metric_comparison(metrics: pl.DataFrame, *, title: str | None = None) -> go.Figure:
    """Metrics table (model, k, hit_rate, ..., personalization) in, grouped bars out.

    One bar group per metric, one bar per model and k.
    """
    names = ["hit_rate", "precision", "recall", "ndcg", "coverage", "personalization"]
    fig = go.Figure()
    for i, (model, g) in enumerate(metrics.group_by("model", maintain_order=True)):
        for k in g["k"].unique().sort():
            row = g.filter(pl.col("k") == k).row(0, named=True)
            fig.add_trace(
                go.Bar(
                    x=names,
                    y=[row[n] for n in names],
                    name=f"{model[0]} @{k}",
                    marker_color=GROUP_COLORS["baseline"]
                    if model[0] == "popularity"
                    else COLORS[i],
                )
            )
    fig.update_layout(barmode="group")
    fig.update_yaxes(tickformat=".0%")
    return styled(fig, title=title or "Offline evaluation: rules vs popularity")
