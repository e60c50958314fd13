"""Growth: who will buy next, how many to contact, what to cross-sell.

Propensity deciles, gains and lift; the targeting depth (with the contact cost and margin
editable), and what to cross-sell.
"""

from __future__ import annotations

import polars as pl

from customer_intel import plots
from customer_intel.dashboards import present, widgets
from customer_intel.dashboards.data import ALL
from customer_intel.dashboards.pages.base import Page


class Growth(Page):
    """The growth dashboard."""

    name = "growth"
    preload = ("ipywidgets",)
    applies = "the cross-sell product list (category)"

    def _card(self) -> dict | None:
        card = self.data.propensity_card()
        return None if card is None else card.targeting.model_dump()

    def targeting(self) -> present.Html | None:
        """The recommended targeting depth and its expected profit (at the run's settings)."""
        if not self.ok:
            return None
        t = self._card()
        if t is None:
            return self.missing("The targeting recommendation")
        c = self.currency
        return present.Html(
            f'<div class="ci-block ci-result" id="targeting" data-depth="{t["depth"]}" '
            f'data-profit="{t["expected_profit"]!r}"><b>Recommended campaign:</b> contact the '
            f"top <b>{t['depth']:,}</b> customers ({present.pct(t['share'])}): expected profit "
            f"<b>{present.money(t['expected_profit'], c)}</b>, "
            f"{t['expected_conversions']:,.0f} expected conversions, at a contact cost of "
            f"{present.money(t['contact_cost'], c)} and a margin of "
            f"{present.money(t['margin'], c)} per conversion.<br>{t['recommendation']}</div>"
        )

    def campaign(self):
        """Edit the contact cost and margin: the best depth and the profit curve recomputed."""
        if not self.ok:
            return None
        profit, t = self.data.table("propensity_profit"), self._card()
        if profit is None or t is None:
            return self.missing("The profit curve")
        c = self.currency

        def draw(curve: pl.DataFrame, best: int) -> present.Html:
            return present.figure(
                plots.profit_by_depth(curve, best, currency=c),
                title="Expected profit by number of customers contacted",
                height=320,
                data=curve.select("depth", "share", "expected_conversions", "profit"),
            )

        return widgets.campaign_editor(
            profit, float(t["contact_cost"]), float(t["margin"]), c, draw
        )

    def propensity_deciles(self) -> present.Html | None:
        """Purchase rate by score decile (held-out customers)."""
        d = self.data.table("propensity_deciles") if self.ok else None
        if not self.ok:
            return None
        if d is None:
            return self.missing("Propensity")
        return present.figure(
            plots.deciles_bar(d),
            title="Who bought, by score group (1 = highest scores)",
            element_id="chart-deciles",
            data=d,
        )

    def _share(self, d: pl.DataFrame) -> list[float]:
        return (d["customers"].cum_sum() / d["customers"].sum()).to_list()

    def gains(self) -> present.Html | None:
        """Cumulative gains of the model from its decile table."""
        d = self.data.table("propensity_deciles") if self.ok else None
        if d is None:
            return None
        curve = pl.DataFrame(
            {"targeted": [0.0, *self._share(d)], "gain": [0.0, *d["cumulative_gain"].to_list()]}
        )
        return present.figure(
            plots.gains_chart({"model": curve}),
            title="Share of buyers reached by contacting the top-scored share of customers",
            element_id="chart-gains",
            data=curve,
        )

    def lift(self) -> present.Html | None:
        """Cumulative lift by decile."""
        d = self.data.table("propensity_deciles") if self.ok else None
        if d is None:
            return None
        curve = pl.DataFrame({"targeted": self._share(d), "lift": d["cumulative_lift"].to_list()})
        return present.figure(
            plots.lift_chart({"model": curve}),
            title="How many times better than contacting at random",
            element_id="chart-lift",
            data=curve,
        )

    def product_selector(self):
        """Pick a product: what to suggest with it, by product label."""
        if not self.ok:
            return None
        recs = self.data.table("product_recommendations")
        if recs is None:
            return self.missing("Product recommendations")
        products = self.data.table("dash_products")
        category_of = (
            {}
            if products is None
            else dict(zip(products["product_id"], products["category"], strict=True))
        )
        cat = None if self.filters.category == ALL else self.filters.category
        return widgets.product_selector(recs, self.data.product_labels(), category_of, cat)
