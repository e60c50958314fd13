"""The one look of every figure: template, colour sequence, number formats."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

#: Colour sequence used for categories, in order (colour-blind friendly, Okabe-Ito based).
COLORS = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
    "#999999",
)
#: Diverging and sequential scales for heatmaps.
SEQUENTIAL = "Blues"
DIVERGING = "RdBu_r"
#: Fixed colours for groups that mean the same thing in every figure.
GROUP_COLORS = {"control": "#999999", "treatment": "#0072B2", "baseline": "#999999"}

MONEY = ",.2f"
INTEGER = ",d"
PERCENT = ".1%"

TEMPLATE_NAME = "customer_intel"

pio.templates[TEMPLATE_NAME] = go.layout.Template(
    layout=go.Layout(
        font={"family": "Helvetica, Arial, sans-serif", "size": 13, "color": "#222"},
        title={"x": 0.0, "xanchor": "left", "font": {"size": 16}},
        colorway=list(COLORS),
        paper_bgcolor="white",
        plot_bgcolor="white",
        # automargin: long tick labels (segment names, categories) widen the margin instead
        # of being cut at the figure's edge (they were, in every static image)
        xaxis={
            "showgrid": True,
            "gridcolor": "#eee",
            "zeroline": False,
            "linecolor": "#bbb",
            "automargin": True,
        },
        yaxis={
            "showgrid": True,
            "gridcolor": "#eee",
            "zeroline": False,
            "linecolor": "#bbb",
            "automargin": True,
        },
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        hoverlabel={"namelength": -1},
    )
)


# The offline renderer, chosen here rather than detected on the first figure shown: the
# detection imports nbformat's JSON-schema validator (2.4 s), which then happened inside the
# first plotting cell of every stage; the pipeline's kernels import this module ahead.
# plotly_mimetype is what JupyterLab gets anyway, and never a CDN-loading "*_connected" one.
# The dashboards never go through a renderer (they emit HTML, see customer_intel.dashboards.
# present) and their server sets CUSTOMER_INTEL_PLOTLY_RENDERER=none for its kernels: choosing
# a renderer imports jsonschema, whose rfc3987 grammar alone took 3.6 s of every page load.
if os.environ.get("CUSTOMER_INTEL_PLOTLY_RENDERER", "plotly_mimetype") != "none":
    pio.renderers.default = os.environ.get("CUSTOMER_INTEL_PLOTLY_RENDERER", "plotly_mimetype")


def styled(fig: go.Figure, *, title: str | None = None, height: int | None = None) -> go.Figure:
    """Apply the house template (and optionally a title and height) to a figure."""
    fig.update_layout(template=TEMPLATE_NAME)
    if title is not None:
        fig.update_layout(title_text=title)
    if height is not None:
        fig.update_layout(height=height)
    return fig


def color_map(labels: list[str]) -> dict[str, str]:
    """A stable label -> colour mapping for categorical traces."""
    return {
        label: GROUP_COLORS.get(label, COLORS[i % len(COLORS)]) for i, label in enumerate(labels)
    }


def histogram_bars(lo: Any, hi: Any, counts: Any, *, noun: str, color: str = COLORS[0]) -> go.Bar:
    """Bars of a histogram binned elsewhere: bin ``[lo, hi)`` holds ``counts`` ``noun``.

    One bar per bin, whatever the number of values binned (the figure does not grow with the
    data); the hover names the bin's range.
    """
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    return go.Bar(
        x=(lo + hi) / 2,
        y=np.asarray(counts),
        width=hi - lo,
        marker_color=color,
        customdata=np.column_stack([lo, hi]),
        hovertemplate=f"%{{customdata[0]:,.2f}} to %{{customdata[1]:,.2f}}: %{{y:,}} {noun}"
        "<extra></extra>",
    )
