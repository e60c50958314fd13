"""Figures of the CLV models (BG/NBD, Gamma-Gamma): validation, matrices, distribution."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl

from customer_intel.plots.theme import SEQUENTIAL, histogram_bars, styled

__all__ = [
    "clv_calibration_holdout",
    "clv_fr_matrix",
    "clv_tracking",
    "clv_distribution",
    "clv_histogram",
]


def clv_calibration_holdout(
    table: pl.DataFrame, *, period: str = "day", title: str | None = None
) -> go.Figure:
    """Mean predicted vs actual holdout purchases by calibration repeat periods (clv_holdout)."""
    x = table["repeat_periods_group"].to_list()
    fig = go.Figure(
        [
            go.Scatter(x=x, y=table["actual_mean"].to_list(), name="actual", mode="lines+markers"),
            go.Scatter(
                x=x,
                y=table["predicted_mean"].to_list(),
                name="predicted (BG/NBD)",
                mode="lines+markers",
                line={"dash": "dash"},
            ),
        ]
    )
    if "predicted_pareto_mean" in table.columns:
        fig.add_scatter(
            x=x,
            y=table["predicted_pareto_mean"].to_list(),
            name="predicted (Pareto/NBD)",
            mode="lines+markers",
            line={"dash": "dot"},
        )
    fig.update_xaxes(title_text=f"repeat purchase {period}s in calibration", type="category")
    fig.update_yaxes(title_text=f"mean purchase {period}s in holdout")
    return styled(fig, title=title or "Calibration vs holdout")


def clv_fr_matrix(
    matrix: pl.DataFrame, *, value: str = "expected_purchases", title: str | None = None
) -> go.Figure:
    """A repeat periods × recency heatmap of ``value`` for a customer observed the longest T.

    Takes ``clv_fr_matrix``; ``value`` is expected_purchases or p_alive.
    """
    wide = matrix.pivot(on="recency", index="repeat_periods", values=value, sort_columns=True).sort(
        "repeat_periods"
    )
    cols = [c for c in wide.columns if c != "repeat_periods"]
    z = wide.select(cols).to_numpy()
    is_p = value == "p_alive"
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[float(c) for c in cols],
            y=wide["repeat_periods"].to_list(),
            colorscale=SEQUENTIAL,
            zmin=0 if is_p else None,
            zmax=1 if is_p else None,
            colorbar={"title": "P(alive)" if is_p else "expected"},
        )
    )
    fig.update_xaxes(title_text="recency (periods from first to last purchase)")
    fig.update_yaxes(title_text="repeat purchase periods")
    default = "Probability alive" if is_p else "Expected purchases, next period"
    return styled(fig, title=title or f"{default} by repeat purchase periods and recency")


def clv_tracking(
    tracking: pl.DataFrame, *, dates: list | None = None, title: str | None = None
) -> go.Figure:
    """Expected vs actual cumulative repeat purchases over time (``clv_tracking``).

    The end of calibration is marked; ``dates`` labels the periods (default: their index).
    """
    x = dates if dates is not None else tracking["pidx"].to_list()
    fig = go.Figure(
        [
            go.Scatter(x=x, y=tracking["actual_cum"].to_list(), name="actual", mode="lines"),
            go.Scatter(
                x=x,
                y=tracking["expected_cum"].to_list(),
                name="expected (BG/NBD)",
                mode="lines",
                line={"dash": "dash"},
            ),
        ]
    )
    hold = tracking["holdout"].to_numpy()
    if hold.any() and not hold.all():
        cut = x[int(np.argmax(hold)) - 1]
        fig.add_vline(x=cut, line_dash="dot", line_color="#999999")
        fig.add_annotation(x=cut, y=1, yref="paper", text="end of calibration", showarrow=False)
    fig.update_yaxes(title_text="cumulative repeat purchases")
    return styled(fig, title=title or "Tracking: cumulative repeat purchases")


#: Bins of the CLV histogram.
CLV_BINS = 60


def clv_histogram(preds: pl.DataFrame, *, bins: int = CLV_BINS) -> pl.DataFrame:
    """``clv_from, clv_to, customers``: NumPy's ``bins`` equal bins of the finite CLVs.

    The data of :func:`clv_distribution` (and of its CSV download on the dashboard): ``bins``
    rows whatever the number of customers; no row when there is no finite value.
    """
    return _histogram(_finite_clv(preds), bins)


def _finite_clv(preds: pl.DataFrame) -> pl.Series:
    v = preds["clv"].drop_nulls()
    return v.filter(v.is_finite())


def _histogram(v: pl.Series, bins: int) -> pl.DataFrame:
    if not len(v):
        schema = {"clv_from": pl.Float64, "clv_to": pl.Float64, "customers": pl.Int64}
        return pl.DataFrame(schema=schema)
    counts, edges = np.histogram(v.to_numpy(), bins=bins)
    return pl.DataFrame({"clv_from": edges[:-1], "clv_to": edges[1:], "customers": counts})


def clv_distribution(
    preds: pl.DataFrame, *, bins: int = CLV_BINS, title: str | None = None
) -> go.Figure:
    """Histogram of model CLV per customer (``clv_predictions``), with the median marked.

    Binned here (:func:`clv_histogram`), so the figure holds ``bins`` bars whatever the number
    of customers: plotly's own histogram carried every customer's value into the notebook,
    the PNG and the dashboard page.
    """
    v = _finite_clv(preds)  # once, for the bars and the median
    h = _histogram(v, bins)
    fig = go.Figure(histogram_bars(h["clv_from"], h["clv_to"], h["customers"], noun="customers"))
    if len(v):
        med = float(v.median())
        fig.add_vline(x=med, line_dash="dot", line_color="#D55E00")
        fig.add_annotation(x=med, y=1, yref="paper", text=f"median {med:,.2f}", showarrow=False)
    fig.update_xaxes(title_text="CLV (discounted, margin applied)")
    fig.update_yaxes(title_text="customers", type="log")
    return styled(fig, title=title or "CLV distribution")
