"""Customers: RFM segments, share of revenue, cluster profiles, a scoring form.

Segments in the selected period, their share of revenue, customer value (CLV, P(alive), customers
at risk, pseudonymised), cluster profiles and a form that scores a
customer with the saved segmentation model.
"""

from __future__ import annotations

from dataclasses import replace

import polars as pl

from customer_intel import plots
from customer_intel.dashboards import present, widgets
from customer_intel.dashboards.data import ALL, pseudonymize
from customer_intel.dashboards.pages.base import Page


def standardized(prof: pl.DataFrame, numeric: list[str]) -> pl.DataFrame:
    """Cluster means as z-scores across clusters.

    The formula of :func:`customer_intel.clustering.standardized_profiles` (a test holds them
    equal), written here because importing that module pulls scikit-learn into every page load (2-5
    s).
    """
    return prof.select(
        "cluster_name",
        *[
            ((pl.col(c) - pl.col(c).mean()) / pl.col(c).std().fill_null(1.0).clip(1e-12)).alias(c)
            for c in numeric
        ],
    )


class Customers(Page):
    """The customers dashboard."""

    name = "customers"
    preload = ("ipywidgets",)
    applies = "the segment table (dates, category, experiment); segment sizes are as of the run"

    def top_segment(self) -> present.Html | None:
        """The most valuable segment in one sentence (with data-values for tests)."""
        s = self.data.table("rfm_segments_summary") if self.ok else None
        if s is None:
            return None
        top = s.sort("revenue", descending=True).row(0, named=True)
        return present.Html(
            f'<p class="ci-block" id="top-segment" data-segment="{top["segment"]}" '
            f'data-share="{top["share"]!r}" data-revenue-share="{top["revenue_share"]!r}">'
            f"<b>{top['segment']}</b> are {present.pct(top['share'])} of buyers and bring "
            f"{present.pct(top['revenue_share'])} of revenue.</p>"
        )

    def segments_in_period(self) -> present.Html | None:
        """Buyers and revenue per segment in the selected dates and category."""
        if not self.ok or self.period is None:
            return None
        b = self.data.buyer_days(replace(self.filters, segment=ALL))
        if b is None:
            return self.missing("Segments by period")
        b = b.filter(pl.col("event_date").is_between(self.period.start, self.period.end))
        t = (
            b.group_by("segment")
            .agg(buyers=pl.col("user_id").n_unique(), revenue=pl.col("revenue").sum())
            .with_columns(revenue_share=pl.col("revenue") / pl.col("revenue").sum())
            .sort("revenue", descending=True)
        )
        c = self.currency
        scope = "" if self.filters.category == ALL else f", category {self.filters.category}"
        if self.filters.experiment is not None:
            scope += f", customers in the experiment {self.filters.experiment}"
        return present.table(
            t,
            {
                "segment": ("segment", None),
                "buyers": ("customers who bought", present.number),
                "revenue": ("revenue", lambda v: present.money(v, c)),
                "revenue_share": ("share of revenue", present.pct),
            },
            element_id="segments-period",
            title=f"Segments, {present.period(self.period)}{scope}",
            row_attrs=lambda r: {
                "data-segment": r["segment"],
                "data-buyers": r["buyers"],
                "data-revenue": repr(r["revenue"]),
                "class": "selected" if r["segment"] == self.filters.segment else "",
            },
        )

    def segment_sizes(self) -> present.Html | None:
        """RFM segment sizes (as of the run)."""
        s = self.data.table("rfm_segments_summary") if self.ok else None
        if not self.ok:
            return None
        if s is None:
            return self.missing("RFM segments")
        return present.figure(
            plots.segment_sizes(s),
            title="Customers per segment (as of the run)",
            element_id="chart-segments",
            data=s,
        )

    def revenue_share(self) -> present.Html | None:
        """Share of customers vs of revenue per segment."""
        s = self.data.table("rfm_segments_summary") if self.ok else None
        if not self.ok:
            return None
        if s is None:
            return self.missing("RFM segments")
        return present.figure(
            plots.revenue_share(s),
            title="Share of customers and of revenue per segment",
            element_id="chart-revenue-share",
            data=s.select("segment", "share", "revenue_share"),
        )

    def cluster_profiles(self) -> present.Html | None:
        """Standardised cluster profiles heatmap."""
        if not self.ok:
            return None
        prof = self.data.table("cluster_profiles")
        if prof is None:
            return self.missing("Cluster profiles")
        numeric = [
            c for c in prof.columns if c not in ("cluster", "cluster_name", "customers", "share")
        ]
        z = standardized(prof, numeric).rename({c: widgets.label(c) for c in numeric})
        fig = plots.cluster_heatmap(z)
        fig.update_traces(colorbar={"title": {"text": "vs average"}})
        return present.figure(
            fig,
            title="What each customer group looks like (compared with the average)",
            note="Red: above the average customer, blue: below (in standard deviations of each "
            "measure).",
            element_id="chart-clusters",
            height=360,
            data=prof,
        )

    def score_form(self):
        """A form: a customer's values -> predicted group, refusing bad input with a message."""
        if not self.ok:
            return None
        path = self.data.run / "models" / "segmentation.joblib"
        prof = self.data.table("cluster_profiles")
        if not path.exists() or prof is None:
            return self.missing("The segmentation model")
        return widgets.score_form(path, prof, self.currency)

    # -- customer value (BG/NBD + Gamma-Gamma, stage segmentation) -----------------------------
    def clv_distribution(self) -> present.Html | None:
        """Model CLV per customer (BG/NBD + Gamma-Gamma), a histogram (as of the run)."""
        if not self.ok:
            return None
        p = self.data.table("clv_predictions")
        if p is None:
            return self.missing("CLV predictions")
        return present.figure(
            plots.clv_distribution(p),
            title="Customer value the model expects (as of the run)",
            element_id="chart-clv",
            data=plots.clv_histogram(p),  # the bars: a page that does not grow with customers
        )

    def p_alive_matrix(self) -> present.Html | None:
        """Probability alive by repeat purchase periods and recency (BG/NBD)."""
        if not self.ok:
            return None
        m = self.data.table("clv_fr_matrix")
        if m is None:
            return self.missing("P(alive)")
        return present.figure(
            plots.clv_fr_matrix(m, value="p_alive"),
            title="Chance a customer is still active, by repeat purchases and last purchase",
            element_id="chart-p-alive",
            height=420,
            data=m,
        )

    def customers_at_risk(self) -> present.Html | None:
        """High-value customers with a low P(alive), pseudonymised unless allowed."""
        if not self.ok:
            return None
        t = self.data.table("clv_at_risk")
        if t is None:
            return self.missing("Customers at risk")
        if t.height == 0:
            return present.message(
                "No customer is at risk: the model gives every customer a high probability of "
                "still being active.",
                kind="note",
                element_id="customers-at-risk",
            )
        ids = t["user_id"].cast(pl.String)
        if not self.data.params.get("allow_raw_customer_ids", False):
            ids = pseudonymize(ids, self.data.salt)
        shown = t.with_columns(ids.alias("user_id"))
        c = self.currency
        return present.table(
            shown,
            {
                "user_id": ("customer", None),
                "value_so_far": ("value so far", lambda v: present.money(v, c)),
                "p_alive": ("chance still active", present.probability),
                "clv": ("model CLV", lambda v: present.money(v, c)),
            },
            element_id="customers-at-risk",
            title=f"Top {t.height} customers at risk (high value, low chance still active)",
            filename="customers_at_risk",
        )
