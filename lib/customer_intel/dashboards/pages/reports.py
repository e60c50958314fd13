"""Reports: every chart declared under ``metrics.reports``, from the metric tables.

The metrics stage (``07_metrics``) writes one table ``metric_<name>`` per declared metric; this
page draws each declared report from its table, in the order of the params. The date filter
applies to the reports whose x axis is a day (a date column such as ``Day`` or ``Week``); the
forecast keeps its future days, and segments/categories are not columns of the metric tables.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl

from customer_intel import plots
from customer_intel.dashboards import present
from customer_intel.dashboards.pages.base import Page

#: columns whose values are shares (0.25 = 25%): shown as percentages
_SHARE = re.compile(r"(rate|share|ratio|conversion|pct|percent)", re.I)


def for_people(fig: Any) -> Any:
    """Axis, legend and colour-bar titles in words; shares as percentages.

    A report's titles are its metric table's column names (``ConversionRate``); the numbers
    stay as the table holds them.
    """
    layout = fig.layout
    for key in [k for k in layout if k.startswith(("xaxis", "yaxis"))]:
        axis = layout[key]
        text = axis.title.text if axis.title else None
        if text:
            axis.title.text = present.words(text)
            if _SHARE.search(text) and not axis.tickformat and axis.type != "date":
                axis.tickformat = ".0%"
    if layout.legend and layout.legend.title and layout.legend.title.text:
        layout.legend.title.text = present.words(layout.legend.title.text)
    if layout.coloraxis and layout.coloraxis.colorbar and layout.coloraxis.colorbar.title.text:
        text = layout.coloraxis.colorbar.title.text
        layout.coloraxis.colorbar.title.text = present.words(text)
        if _SHARE.search(text):
            layout.coloraxis.colorbar.tickformat = ".0%"
    for trace in fig.data:
        bar = getattr(trace, "colorbar", None)
        if bar is not None and bar.title and bar.title.text:
            text = bar.title.text
            bar.title.text = present.words(text)
            if _SHARE.search(text):
                bar.tickformat = ".0%"
    return fig


class Reports(Page):
    """The reports dashboard."""

    name = "reports"
    preload = ("plotly.express",)
    applies = "the reports drawn by day (dates); segment, category and experiment do not apply"

    def _warm(self, root: Path | None) -> None:
        """Also draw the reports once, unfiltered, and drop them.

        plotly builds its classes, validators and templates on first use (about 1 s of the
        first page drawn in a kernel), so that happens before the visit. A failure here is left
        to the visit's own drawing, which shows it.
        """
        super()._warm(root)
        try:
            type(self)(root, query="").reports()
        except Exception:  # noqa: BLE001, S110 (the visit's own call reports it)
            pass

    def _specs(self) -> list:
        """The reports declared in the run's params (``metrics.reports``), typed."""
        from customer_intel.params.metrics import ReportSpec

        return [
            ReportSpec.model_validate(r) for r in self.data.section("metrics").get("reports", [])
        ]

    def _dated(self, table: pl.DataFrame, spec) -> pl.DataFrame:
        """The table's rows in the page's period when the report's x axis is a date."""
        x = spec.x
        if self.period is None or spec.type == "forecast" or not x or x not in table.columns:
            return table
        if table.schema[x] == pl.Date:
            col = pl.col(x)
        elif table.schema[x] == pl.Datetime or isinstance(table.schema[x], pl.Datetime):
            col = pl.col(x).dt.date()
        else:
            return table
        start, end = self.period.start, self.period.end
        return table.filter(col.is_between(start, end))

    def reports(self) -> present.Html | None:
        """Every configured report: its title, description and figure."""
        if not self.ok:
            return None
        specs = self._specs()
        if not specs:
            return present.Html(
                '<p class="ci-message ci-missing" id="no-reports">No report is configured: add one '
                "under <code>metrics.reports</code> in the params profile and run "
                "<code>run_all.py --only metrics</code>.</p>"
            )
        blocks = []
        for i, r in enumerate(specs):
            table = self.data.table(f"metric_{r.metric}")
            title = present.Html(
                f'<h3 class="ci-chart-title report" data-metric="{present.html.escape(r.metric)}">'
                f"{present.html.escape(r.name)}</h3>"
            )
            if table is None:
                blocks.append(str(title) + str(self.missing(f"The table of metric {r.metric!r}")))
                continue
            shown = self._dated(table, r)
            if shown.is_empty():
                why = (
                    "no rows in the chosen dates"
                    if not table.is_empty()
                    else "no rows in this run (see the table metrics_summary for why)"
                )
                blocks.append(
                    str(title)
                    + str(present.message(f"Metric {r.metric!r} has {why}.", kind="note"))
                )
                continue
            blocks.append(
                str(
                    present.figure(
                        for_people(plots.report_figure(shown, r)),
                        title=r.name,
                        title_class="report",
                        lead=r.description or None,
                        element_id=f"report-{i}",
                        data=shown,
                        height=420,
                    )
                )
            )
        return present.Html("".join(blocks))
