"""Figures of the segmentation stage."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl

from customer_intel.plots.theme import DIVERGING, SEQUENTIAL, color_map, styled

__all__ = [
    "segment_sizes",
    "revenue_share",
    "recency_monetary",
    "k_curve",
    "cluster_heatmap",
    "cluster_scatter",
    "cohort_heatmap",
]


def segment_sizes(summary: pl.DataFrame, *, title: str | None = None) -> go.Figure:
    """Customers per RFM segment (from ``rfm_segments_summary``)."""
    s = summary.sort("customers")
    fig = go.Figure(
        go.Bar(
            x=s["customers"].to_list(),
            y=s["segment"].to_list(),
            orientation="h",
            text=[f"{v:.0%}" for v in s["share"]],
            marker_color="#0072B2",
        )
    )
    fig.update_xaxes(title_text="customers")
    return styled(fig, title=title or "Customers per segment")


def revenue_share(summary: pl.DataFrame, *, title: str | None = None) -> go.Figure:
    """Share of customers vs share of revenue per segment."""
    s = summary.sort("revenue_share")
    fig = go.Figure(
        [
            go.Bar(
                x=s["share"].to_list(),
                y=s["segment"].to_list(),
                orientation="h",
                name="share of customers",
                marker_color="#999999",
            ),
            go.Bar(
                x=s["revenue_share"].to_list(),
                y=s["segment"].to_list(),
                orientation="h",
                name="share of revenue",
                marker_color="#0072B2",
            ),
        ]
    )
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="share", tickformat=".0%")
    return styled(fig, title=title or "Share of customers and of revenue per segment")


def recency_monetary(
    rfm: pl.DataFrame, *, max_points: int = 5000, seed: int = 0, title: str | None = None
) -> go.Figure:
    """Recency vs monetary per customer, coloured by segment (log y: spend is heavy-tailed)."""
    d = rfm.sample(min(max_points, rfm.height), seed=seed) if rfm.height > max_points else rfm
    segs = sorted(d["segment"].unique().to_list())
    cmap = color_map(segs)
    fig = go.Figure(
        [
            go.Scattergl(
                x=g["recency_days"].to_list(),
                y=g["monetary"].to_list(),
                mode="markers",
                name=seg,
                marker={"color": cmap[seg], "size": 5, "opacity": 0.6},
            )
            for seg in segs
            for g in [d.filter(pl.col("segment") == seg)]
        ]
    )
    fig.update_xaxes(title_text="days since last purchase")
    fig.update_yaxes(title_text="monetary (log scale)", type="log")
    return styled(fig, title=title or "Recency and spend by segment")


def k_curve(
    curve: pl.DataFrame, knee: int | None, k: int, *, title: str | None = None
) -> go.Figure:
    """Inertia (and silhouette) by k, with the knee and the chosen k marked."""
    fig = go.Figure(
        [
            go.Scatter(
                x=curve["k"].to_list(),
                y=curve["inertia"].to_list(),
                mode="lines+markers",
                name="inertia",
            ),
            go.Scatter(
                x=curve["k"].to_list(),
                y=curve["silhouette"].to_list(),
                mode="lines+markers",
                name="silhouette",
                yaxis="y2",
            ),
        ]
    )
    fig.add_vline(
        x=k,
        line_dash="dash",
        line_color="#D55E00",
        annotation_text=f"knee k={knee}" if knee else f"no knee; k={k} (silhouette)",
    )
    fig.update_layout(
        yaxis2={"overlaying": "y", "side": "right", "title": "silhouette", "showgrid": False}
    )
    fig.update_xaxes(title_text="k (clusters)", dtick=1)
    fig.update_yaxes(title_text="inertia (within-cluster sum of squares)")
    return styled(fig, title=title or "Choosing k: inertia curve and knee")


def cluster_heatmap(z_profiles: pl.DataFrame, *, title: str | None = None) -> go.Figure:
    """Standardised cluster profiles (z-scores of cluster means)."""
    cols = [c for c in z_profiles.columns if c != "cluster_name"]
    fig = go.Figure(
        go.Heatmap(
            z=z_profiles.select(cols).to_numpy(),
            x=cols,
            y=z_profiles["cluster_name"].to_list(),
            colorscale=DIVERGING,
            zmid=0,
            colorbar={"title": "z"},
        )
    )
    return styled(fig, title=title or "Cluster profiles (standardised means)")


def cluster_scatter(
    x2: np.ndarray, names: list[str], *, max_points: int = 5000, title: str | None = None
) -> go.Figure:
    """Customers in the first two principal components, coloured by cluster."""
    idx = np.arange(len(names))[:max_points]
    segs = sorted(set(names))
    cmap = color_map(segs)
    arr = np.asarray(names)[idx]
    fig = go.Figure(
        [
            go.Scattergl(
                x=x2[idx][arr == s, 0].tolist(),
                y=x2[idx][arr == s, 1].tolist(),
                mode="markers",
                name=s,
                marker={"color": cmap[s], "size": 4, "opacity": 0.6},
            )
            for s in segs
        ]
    )
    fig.update_xaxes(title_text="PC 1")
    fig.update_yaxes(title_text="PC 2")
    return styled(fig, title=title or "Clusters in principal-component space")


def cohort_heatmap(retention: pl.DataFrame, *, title: str | None = None) -> go.Figure:
    """Retention by cohort (rows) and periods since acquisition (columns)."""
    wide = retention.pivot(
        on="period_index", index="cohort", values="retention", sort_columns=True
    ).sort("cohort")
    cols = [c for c in wide.columns if c != "cohort"]
    z = wide.select(cols).to_numpy()
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[int(c) for c in cols],
            y=[str(c) for c in wide["cohort"]],
            colorscale=SEQUENTIAL,
            zmin=0,
            zmax=1,
            text=[[f"{v:.0%}" if v == v else "" for v in row] for row in z],
            texttemplate="%{text}",
            colorbar={"title": "retention"},
        )
    )
    fig.update_xaxes(title_text="periods since first purchase")
    fig.update_yaxes(title_text="cohort", autorange="reversed")
    return styled(fig, title=title or "Cohort retention")
