"""How the dashboards say things: formats, HTML templates, offline charts, CSV.

Number formats for people, HTML from jinja2 templates, plotly figures drawn offline (the page's
local plotly.js), tables with a CSV download.

Figures are emitted as HTML (a ``div`` and ``Plotly.newPlot``) rather than plotly's
``application/vnd.plotly.v1+json`` mime bundle: Voila hands that renderer a plain JSON object,
and jupyterlab-plotly 7 then calls ``model.setData`` on it to cache a PNG snapshot, which
fails ("r.setData is not a function", one console error per chart) after re-drawing every
chart a second time as a PNG. The served template loads plotly.js from the server itself
(:mod:`customer_intel.dashboards.serve`); the static report embeds it.

That plotly.js is built for the dashboards (:data:`PLOTLY_JS`, ``make plotly-js`` from
``js/plotly-bundle``: plotly's core and the trace types in :data:`PLOTLY_TRACES`, at the version
of the plotly package's own bundle). Loading plotly.js was most of a page's browser time on this
2-core machine: the full 4.8 MB bundle took 1.6-1.9 s, plotly's cartesian partial bundle (which
has no treemap, polar bar or funnel, so the reports page needed the full one) 0.6-0.7 s, this one
(1.4 MB, one bundle for every page) 0.25 s. :func:`figure` refuses any other trace type by name,
so a chart the pages could not draw fails in the tests.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import jinja2
import polars as pl

TEMPLATES = Path(__file__).with_name("templates")
#: the dashboards' plotly.js (MIT, see ``plotly-LICENSE.txt`` beside it), built by
#: ``make plotly-js``; ``tests/test_dashboards.py`` keeps its version equal to the installed
#: plotly's full bundle and its traces equal to :data:`PLOTLY_TRACES`.
PLOTLY_JS = Path(__file__).with_name("voila") / "static" / "plotly-customer-intel.min.js"
#: The trace types :data:`PLOTLY_JS` draws: the pages' charts and every report type
#: (``metrics.reports``: line, bar, bar_polar, treemap, heatmap, funnel, forecast).
PLOTLY_TRACES = frozenset(
    {"bar", "barpolar", "box", "funnel", "heatmap", "histogram", "scatter", "treemap"}
)
ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(["j2", "html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
#: plotly.js config: no logo, no cloud/"edit in Chart Studio" buttons, a small toolbar shown
#: only on hover (it never covers the chart's title, which is HTML above the chart).
PLOTLY_CONFIG = {
    "displaylogo": False,
    "showSendToCloud": False,
    "showEditInChartStudio": False,
    "showLink": False,
    "responsive": True,
    "displayModeBar": "hover",
    "modeBarButtonsToRemove": ["sendDataToCloud", "lasso2d", "select2d", "autoScale2d"],
    "toImageButtonOptions": {"format": "png", "scale": 2},
}
_ids = itertools.count()


# -- numbers -----------------------------------------------------------------------------------
def money(v: float | None, currency: str = "USD", *, compact: bool = False) -> str:
    """A money amount for people: ``$1,234.56``, or ``$123.6K`` when ``compact``."""
    from babel.numbers import format_compact_currency, format_currency

    if v is None or not math.isfinite(v):
        return "–"
    if compact and abs(v) >= 10_000:
        return format_compact_currency(v, currency, locale="en_US", fraction_digits=1)
    return format_currency(v, currency, locale="en_US")


def number(v: float | None, *, compact: bool = True) -> str:
    """A count: ``1,234``, or ``123.6K`` when large."""
    from babel.numbers import format_compact_decimal

    if v is None or not math.isfinite(v):
        return "–"
    if compact and abs(v) >= 10_000:
        return format_compact_decimal(v, locale="en_US", fraction_digits=1)
    return f"{v:,.0f}"


def pct(v: float | None, digits: int = 1) -> str:
    """A share as a percentage: ``20.2%``."""
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}%}"


def signed_pct(v: float | None) -> str:
    """A relative change: ``+5.3%`` / ``−5.3%`` (a real minus sign)."""
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:+.1%}".replace("-", "−")


def p_value(p: float | None) -> str:
    """A p-value as people read it: ``< 0.001``, ``0.023``, ``0.41``."""
    if p is None or not math.isfinite(p):
        return "–"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def probability(p: float | None) -> str:
    """A probability without a false 100%: ``> 99.9%``, ``< 0.1%``, ``87.3%``."""
    if p is None or not math.isfinite(p):
        return "–"
    if p > 0.999:
        return "> 99.9%"
    if p < 0.001:
        return "< 0.1%"
    return f"{p:.1%}"


def day(d: Any) -> str:
    """A date as ``1 Nov 2019``."""
    return f"{d.day} {d:%b %Y}"


def period(p: Any) -> str:
    """A period as ``1 Nov – 30 Nov 2019`` (or one day)."""
    if p.start == p.end:
        return day(p.start)
    left = f"{p.start.day} {p.start:%b}" if p.start.year == p.end.year else day(p.start)
    return f"{left} – {day(p.end)}"


def words(name: str) -> str:
    """A column name as people write it: ``ConversionRate`` -> ``Conversion rate`` (AUC stays)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", str(name)).replace("_", " ").split()
    text = " ".join(w if len(w) > 1 and w.isupper() else w.lower() for w in spaced)
    return text[:1].upper() + text[1:]


ENV.filters.update(
    money=money,
    number=number,
    pct=pct,
    signed_pct=signed_pct,
    p_value=p_value,
    probability=probability,
    day=day,
    period=period,
)


# -- output objects ----------------------------------------------------------------------------
#: classes that keep the page's LaTeX typesetter off our text: "$1.00 and $20.00" is money, not
#: an inline formula (it was set as "1.00andamarginof20.00")
NO_MATH = "tex2jax_ignore mathjax_ignore"


class Html:
    """An HTML block a notebook cell displays (``text/html``)."""

    def __init__(self, text: str) -> None:
        self.data = text

    def _repr_html_(self) -> str:
        return f'<div class="{NO_MATH}">{self.data}</div>'

    def __str__(self) -> str:
        return self.data


def render(template: str, **context: Any) -> Html:
    """Render ``templates/<template>.html.j2``."""
    return Html(ENV.get_template(f"{template}.html.j2").render(**context))


def message(text: str, *, kind: str = "missing", element_id: str | None = None) -> Html:
    """A short sentence in place of a block (``kind``: missing, warning, note)."""
    return render("message", text=text, kind=kind, element_id=element_id)


def csv_link(frame: pl.DataFrame, filename: str) -> str:
    """An ``<a download>`` with the table as CSV in a data URI (nothing leaves the page)."""
    data = base64.b64encode(frame.write_csv().encode()).decode()
    return (
        f'<a class="csv" download="{html.escape(filename)}.csv" '
        f'href="data:text/csv;charset=utf-8;base64,{data}">Download CSV</a>'
    )


def table(
    frame: pl.DataFrame,
    columns: dict[str, tuple[str, Any]],
    *,
    element_id: str,
    title: str | None = None,
    csv: pl.DataFrame | None = None,
    filename: str | None = None,
    row_attrs: Any = None,
) -> Html:
    """A table with a CSV download.

    ``columns`` maps a column to (header, formatter); the download holds ``csv`` (default: the
    shown columns, unformatted). ``row_attrs(row) -> dict`` adds data attributes.
    """
    rows = []
    for r in frame.iter_rows(named=True):
        cells = [
            (fmt(r[c]) if fmt else ("" if r[c] is None else str(r[c])))
            for c, (_, fmt) in columns.items()
        ]
        attrs = row_attrs(r) if row_attrs else {}
        rows.append({"cells": cells, "attrs": attrs})
    numeric = [frame.schema[c].is_numeric() for c in columns]
    download = csv if csv is not None else frame.select(list(columns))
    return render(
        "table",
        element_id=element_id,
        title=title,
        headers=[h for h, _ in columns.values()],
        numeric=numeric,
        rows=rows,
        csv=csv_link(download, filename or element_id),
    )


def figure(
    fig: Any,
    *,
    title: str,
    element_id: str | None = None,
    data: pl.DataFrame | None = None,
    height: int = 380,
    note: str | None = None,
    lead: str | None = None,
    title_class: str = "",
) -> Html:
    """A plotly figure as HTML, drawn by the page's local plotly.js.

    ``lead`` is a sentence between the title and the chart; ``title_class`` an extra class of
    the title (e.g. ``report``, which the browser tests look for). A trace type the pages'
    plotly.js cannot draw is refused, named.

    Under an HTML title (which wraps on a phone instead of being clipped), with the chart's data as
    a CSV download.
    """
    from plotly.utils import PlotlyJSONEncoder

    missing = sorted({t.type for t in fig.data} - PLOTLY_TRACES)
    if missing:
        raise ValueError(
            f"chart {title!r}: trace type(s) {missing} are not in the pages' plotly.js "
            f"({PLOTLY_JS.name}, which draws {sorted(PLOTLY_TRACES)}; add them in "
            "js/plotly-bundle/entry.js and run make plotly-js)"
        )
    fig.update_layout(title_text=None, height=height, autosize=True, width=None)
    fig.update_layout(margin={"l": 8, "r": 28, "t": 36, "b": 8})  # r: room for the last tick
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    div_id = element_id or f"chart-{next(_ids)}"
    spec = fig.to_plotly_json() | {"config": PLOTLY_CONFIG}
    spec = json.dumps(spec, cls=PlotlyJSONEncoder)
    link = csv_link(data, div_id) if data is not None else ""
    return render(
        "figure",
        title=title,
        spec=spec.replace("</", "<\\/"),
        height=height,
        csv=link,
        note=note,
        lead=lead,
        title_class=title_class,
        element_id=div_id,
    )
