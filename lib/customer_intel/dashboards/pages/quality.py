"""Data quality: events, missing values, rejects, duplicates, prices, sizes.

Events by type and day (with a warning for missing or near-empty days), missing values per column,
rejected rows by reason, duplicates, prices, storage sizes.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from customer_intel import plots
from customer_intel.dashboards import present
from customer_intel.dashboards.pages.base import Page

#: A day with fewer events than this share of the median day is called near-empty.
NEAR_EMPTY = 0.2


def day_gaps(
    events: pl.DataFrame, start: dt.date, end: dt.date
) -> tuple[list[dt.date], list[dt.date]]:
    """Days in [start, end] without any event, and days below NEAR_EMPTY x the median day."""
    per_day = events.group_by("event_date").agg(pl.col("events").sum())
    seen = dict(zip(per_day["event_date"], per_day["events"], strict=True))
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    missing = [d for d in days if d not in seen]
    median = float(per_day["events"].median() or 0)
    thin = [d for d in days if d in seen and seen[d] < NEAR_EMPTY * median]
    return missing, thin


class Quality(Page):
    """The data-quality dashboard."""

    name = "quality"
    applies = "events by day (dates)"

    def day_warning(self) -> present.Html | None:
        """Day warning."""
        if not self.ok or self.period is None:
            return None
        ev = self.data.table("dash_quality_events")
        if ev is None:
            return self.missing("Events by day")
        missing, thin = day_gaps(ev, self.data.days.start, self.data.days.end)
        if not missing and not thin:
            return present.message(
                "Every day from the first to the last has events; none is near-empty.",
                kind="note",
                element_id="days-ok",
            )
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} day(s) without any event: "
                + ", ".join(present.day(d) for d in missing[:10])
            )
        if thin:
            parts.append(
                f"{len(thin)} day(s) with under {NEAR_EMPTY:.0%} of a typical day's events: "
                + ", ".join(present.day(d) for d in thin[:10])
            )
        return present.message(
            "Check the input: " + "; ".join(parts) + ".", kind="warning", element_id="days-warning"
        )

    def events_by_day(self) -> present.Html | None:
        """Events by day."""
        if not self.ok or self.period is None:
            return None
        ev = self.data.table("dash_quality_events")
        if ev is None:
            return None
        ev = ev.filter(pl.col("event_date").is_between(self.period.start, self.period.end))
        return present.figure(
            plots.events_by_type(ev),
            title="Events per day, by type",
            element_id="chart-events",
            data=ev,
        )

    def row_accounting(self) -> present.Html | None:
        """Rows read, kept, rejected and duplicated (ingest_summary), and rejects by reason."""
        if not self.ok:
            return None
        s, r = self.data.table("ingest_summary"), self.data.table("dash_quality_rejects")
        if s is None:
            return self.missing("The ingest summary")
        words = {
            "rows_in": "rows read",
            "rows_kept": "rows kept",
            "rows_rejected": "rows rejected",
            "duplicates": "duplicate rows removed",
        }
        s = s.with_columns(
            what=pl.col("metric").replace_strict(
                words, default=pl.col("metric").str.replace_all("_", " ").str.replace(":", ": ")
            )
        )
        out = str(
            present.table(
                s,
                {"what": ("", None), "value": ("rows", lambda v: f"{v:,}")},
                element_id="ingest-summary",
                title="Rows from the input",
                csv=s.select("metric", "value"),
            )
        )
        if r is not None and r.is_empty():
            out += str(
                present.message("No input row was rejected.", kind="note", element_id="rejects")
            )
        elif r is not None:
            out += str(
                present.table(
                    r,
                    {"reason": ("reason", None), "rows": ("rows", lambda v: f"{v:,}")},
                    element_id="rejects",
                    title="Rejected rows by reason",
                )
            )
        return present.Html(out)

    def missing_values(self) -> present.Html | None:
        """Missing values."""
        m = self.data.table("dash_quality_missing") if self.ok else None
        if m is None:
            return None
        return present.table(
            m,
            {
                "column": ("column", None),
                "missing": ("missing values", lambda v: f"{v:,}"),
                "share": ("share", present.pct),
            },
            element_id="missing",
            title="Missing values per column (optimized events)",
        )

    def prices(self) -> present.Html | None:
        """Prices."""
        p = self.data.table("dash_quality_prices") if self.ok else None
        if p is None or p.is_empty():
            return None
        return present.figure(
            plots.price_histogram(p, currency=self.currency),
            title="Prices (every event; the last bar holds the top 1%)",
            element_id="chart-prices",
            data=p,
        )

    def storage(self) -> present.Html | None:
        """Storage."""
        s = self.data.table("optimize_sizes") if self.ok else None
        if s is None:
            return None
        return present.table(
            s,
            {
                "item": ("item", None),
                "before_bytes": ("before", lambda v: f"{v / 1e6:,.2f} MB"),
                "after_bytes": ("after", lambda v: f"{v / 1e6:,.2f} MB"),
                "ratio": ("smaller by", lambda v: f"{v:,.1f}×"),
            },
            element_id="storage",
            title="Storage before and after optimisation",
        )
