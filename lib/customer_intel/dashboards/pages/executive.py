"""Executive overview: KPIs, trends, funnel, categories, customers, cohorts.

Headline KPIs (with the dates they compare), daily revenue and visitors, the session funnel,
categories, top customers, cohorts, and the days the metrics stage's revenue forecast did not
expect (its backtest's anomalies).
"""

from __future__ import annotations

import polars as pl

from customer_intel import plots
from customer_intel.dashboards import present
from customer_intel.dashboards.data import ALL, change, kpis, pseudonymize
from customer_intel.dashboards.pages.base import Page

#: A conversion change is called traffic-driven when sessions moved at least this much
#: (relative) in the opposite direction and orders moved less than sessions did.
TRAFFIC_SHIFT = 0.10


def conversion_note(cur: dict[str, float], prev: dict[str, float]) -> str | None:
    """A warning when a conversion change comes from traffic rather than from selling better.

    Conversion = orders / sessions: when sessions fall by 70% and orders by less, conversion
    rises without a single extra sale. Returns None when the change is not traffic-driven.
    """
    conv, sess, orders = (change(cur[k], prev[k]) for k in ("conversion", "sessions", "orders"))
    if conv is None or sess is None or orders is None:
        return None
    if abs(sess) >= TRAFFIC_SHIFT and conv * sess < 0 and abs(orders) < abs(sess):
        return (
            f"Driven by traffic: sessions {present.signed_pct(sess)}, orders "
            f"{present.signed_pct(orders)}. The rate {'rose' if conv > 0 else 'fell'} because "
            f"there were {'fewer' if sess < 0 else 'more'} visits, not because "
            f"{'more' if conv > 0 else 'fewer'} visitors bought."
        )
    return None


class Executive(Page):
    """The executive overview."""

    name = "executive"
    applies = "every number and chart except cohorts and the forecast anomalies"

    def kpi_cards(self) -> present.Html | None:
        """Revenue, orders, customers, sessions, conversion, AOV: this period vs the one before."""
        if not self.ok or self.period is None:
            return None
        daily, buyers = self.data.daily(self.filters), self.data.buyer_days(self.filters)
        if daily is None or buyers is None:
            return self.missing("Daily KPIs")
        before = self.period.before()
        cur, prev = kpis(daily, buyers, self.period), kpis(daily, buyers, before)
        covered = before.start >= self.data.days.start
        c = self.currency

        def card(key, label, shown, note=None):
            return {
                "key": key,
                "label": label,
                "value": repr(cur[key]),
                "shown": shown,
                "change": change(cur[key], prev[key]) if covered else None,
                "note": note,
            }

        cards = [
            card("revenue", "Revenue", present.money(cur["revenue"], c, compact=True)),
            card("orders", "Orders", present.number(cur["orders"])),
            card("customers", "Customers who bought", present.number(cur["customers"])),
            card("sessions", "Sessions (visits)", present.number(cur["sessions"])),
            card(
                "conversion",
                "Conversion (orders / sessions)",
                present.pct(cur["conversion"]),
                conversion_note(cur, prev) if covered else None,
            ),
            card("aov", "Average order value", present.money(cur["aov"], c)),
        ]
        scope = self._scope()
        if not covered:
            scope = (scope + " · " if scope else "") + "no data before this period: no changes"
        return present.render(
            "kpis", cards=cards, current_period=self.period, previous_period=before, scope=scope
        )

    def _scope(self) -> str:
        parts = []
        if self.filters.experiment is not None:
            parts.append(f"customers in the experiment {self.filters.experiment}")
        if self.filters.segment != ALL:
            parts.append(f"segment {self.filters.segment}")
        if self.filters.category != ALL:
            parts.append(f"category {self.filters.category}")
        return ", ".join(parts)

    def _in_period(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(pl.col("event_date").is_between(self.period.start, self.period.end))

    def daily_trend(self) -> present.Html | None:
        """Daily revenue and visitors over the selected period."""
        if not self.ok or self.period is None:
            return None
        d = self.data.daily(self.filters)
        if d is None:
            return self.missing("Daily KPIs")
        d = self._in_period(d).sort("event_date")
        return present.figure(
            plots.daily_revenue_visitors(d, currency=self.currency),
            title="Revenue and visitors per day",
            element_id="chart-daily",
            data=d.select("event_date", "revenue", "visitors", "sessions", "orders"),
        )

    def funnel(self) -> present.Html | None:
        """Sessions that viewed, carted, bought, in the selected period."""
        if not self.ok or self.period is None:
            return None
        d = self.data.daily(self.filters)
        if d is None:
            return self.missing("The funnel")
        d = self._in_period(d)
        return present.figure(
            plots.session_funnel(d),
            title="From visit to purchase (sessions)",
            element_id="chart-funnel",
            height=300,
            data=pl.DataFrame(
                {
                    "step": ["viewed a product", "added to cart", "bought"],
                    "sessions": [
                        int(d["sessions_with_view"].sum()),
                        int(d["sessions_with_cart"].sum()),
                        int(d["orders"].sum()),
                    ],
                }
            ),
        )

    def top_categories(self) -> present.Html | None:
        """Categories by revenue in the period, with growth vs the period before."""
        if not self.ok or self.period is None:
            return None
        d = self.data.daily_rows(self.filters)
        if d is None:
            return self.missing("Categories")
        n = int(self.data.params.get("top_n", 10))
        rows = d.filter((pl.col("segment") == self.filters.segment) & (pl.col("category") != ALL))
        if self.filters.category != ALL:
            rows = rows.filter(pl.col("category") == self.filters.category)
        before = self.period.before()
        cur = self._in_period(rows).group_by("category").agg(pl.col("revenue").sum())
        prev = (
            rows.filter(pl.col("event_date").is_between(before.start, before.end))
            .group_by("category")
            .agg(previous=pl.col("revenue").sum())
        )
        cats = (
            cur.join(prev, on="category", how="left")
            .with_columns(pl.col("previous").fill_null(0.0))
            .sort(["revenue", "category"], descending=[True, False])
            .head(n)
        )
        covered = before.start >= self.data.days.start
        labels = [
            present.signed_pct(r / p - 1) if p and covered else ("new" if covered else "")
            for r, p in zip(cats["revenue"], cats["previous"], strict=True)
        ]
        cats = cats.with_columns(growth_label=pl.Series(labels, dtype=pl.String))
        return present.figure(
            plots.category_revenue(cats, currency=self.currency),
            title=f"Top {n} categories by revenue",
            note="Label: change vs the previous period of the same length." if covered else None,
            element_id="chart-categories",
            height=max(260, 34 * cats.height + 90),
            data=cats.select("category", "revenue", "previous"),
        )

    def top_customers(self) -> present.Html | None:
        """Top customers by revenue in the period (pseudonymised unless allowed)."""
        if not self.ok or self.period is None:
            return None
        b = self.data.buyer_days(self.filters)
        if b is None:
            return self.missing("Top customers")
        n = int(self.data.params.get("top_n", 10))
        t = (
            self._in_period(b)
            .group_by("user_id")
            .agg(pl.col("revenue").sum(), pl.col("purchases").sum(), pl.col("segment").first())
            .sort(["revenue", "user_id"], descending=[True, False])
            .head(n)
        )
        ids = t["user_id"].cast(pl.String)
        if not self.data.params.get("allow_raw_customer_ids", False):
            ids = pseudonymize(ids, self.data.salt)
        t = t.with_columns(customer=ids)
        c = self.currency
        return present.table(
            t,
            {
                "customer": ("customer", None),
                "segment": ("segment", None),
                "revenue": ("revenue", lambda v: present.money(v, c)),
                "purchases": ("items bought", lambda v: f"{v:,}"),
            },
            element_id="top-customers",
            title=f"Top {n} customers, {present.period(self.period)}",
            csv=t.select("customer", "segment", "revenue", "purchases"),
        )

    def cohorts(self) -> present.Html | None:
        """Cohort retention (all customers: the cohorts table has no filter grain)."""
        if not self.ok:
            return None
        c = self.data.table("cohort_retention")
        if c is None:
            return self.missing("Cohorts")
        return present.figure(
            plots.cohort_heatmap(c),
            title="Customers coming back, by first-purchase week (all customers, all dates)",
            element_id="chart-cohorts",
            height=420,
            data=c,
        )

    def forecast_anomalies(self) -> present.Html | None:
        """The forecast backtest's anomalies: days whose actual value fell outside the interval.

        From the metrics stage's ``forecast_anomalies`` table (whole shop; the filters do not
        apply: the forecast is of the shop's total).
        """
        if not self.ok:
            return None
        t = self.data.table("forecast_anomalies")
        if t is None:
            return self.missing("The forecast (metrics stage)")
        c = self.currency
        rows = [
            {
                "metric": present.words(r["metric"]),
                "day": present.day(r["date"]),
                "actual": r["actual"],
                "actual_shown": present.money(r["actual"], c),
                # revenue is never below zero, whatever the interval's lower end says
                "range": f"{present.money(max(r['lower'], 0.0), c)} to "
                f"{present.money(r['upper'], c)}",
                "side": "above" if r["actual"] > r["upper"] else "below",
            }
            for r in t.sort("date").iter_rows(named=True)
        ]
        return present.render(
            "anomalies", rows=rows, csv=present.csv_link(t, "forecast_anomalies") if rows else ""
        )
