"""Dashboards for stakeholders: read the last good run, never compute heavy things, never write.

A dashboard notebook makes one :class:`Dashboard` and calls one method per cell; each method
returns something to display (a plotly figure, an HTML block, a widget), or a short message when
the run lacks that output. When no successful run exists, :meth:`Dashboard.header` says so and
how to make one, and every other method returns nothing, so the page never shows a traceback.

Headline numbers are rendered with ``data-value`` attributes holding the exact value, so browser
tests can compare them with the run's tables.

``python -m customer_intel.dashboards`` serves ``notebooks/dashboards/`` with Voila on
127.0.0.1: sources stripped, preheated kernels, only the files the pages need.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl
import yaml

from customer_intel import plots, runs
from customer_intel.contracts import Manifest, PropensityCard
from customer_intel.paths import DASHBOARDS_DIR, OUTPUTS_DIR
from customer_intel.plots.theme import COLORS, styled

ENV_OUTPUT_ROOT = "CUSTOMER_INTEL_OUTPUT_ROOT"
DASHBOARDS = ("executive", "customers", "growth", "experiments", "reports")


def output_root() -> Path:
    """The output root the dashboards read (``$CUSTOMER_INTEL_OUTPUT_ROOT`` or ``outputs/``)."""
    return Path(os.environ.get(ENV_OUTPUT_ROOT) or OUTPUTS_DIR)


def latest_run(root: Path | None = None) -> Path | None:
    """The last successful run folder, or None."""
    link = (root or output_root()) / "latest"
    if not link.exists():
        return None
    run = link.resolve()
    try:
        manifest = runs.read_manifest(run)
    except (OSError, ValueError):
        return None
    return run if manifest.status == "success" else None


def pseudonymize(ids: pl.Series, salt: str) -> pl.Series:
    """Stable pseudonyms: ``C-`` + 10 hex digits of a salted BLAKE2b of the id."""
    return pl.Series(
        ids.name,
        [f"C-{hashlib.blake2b(f'{salt}:{v}'.encode(), digest_size=5).hexdigest()}" for v in ids],
    )


def money(v: float) -> str:
    """A money amount: thousands separators, 2 decimals."""
    return f"{v:,.2f}"


def pct(v: float) -> str:
    """A share as a percentage with one decimal."""
    return f"{v:.1%}"


def _card(key: str, label: str, value: float, shown: str, change: float | None) -> str:
    delta = ""
    if change is not None and np.isfinite(change):
        color = "#009E73" if change >= 0 else "#D55E00"
        delta = f'<div style="color:{color};font-size:13px">{change:+.1%} vs previous period</div>'
    return (
        f'<div class="kpi" id="kpi-{key}" data-value="{value!r}" style="display:inline-block;'
        f"min-width:150px;margin:6px 12px 6px 0;padding:10px 14px;border:1px solid #ddd;"
        f'border-radius:6px"><div style="color:#666;font-size:13px">{html.escape(label)}</div>'
        f'<div class="kpi-value" style="font-size:24px;font-weight:600">{shown}</div>{delta}</div>'
    )


def _html(text: str) -> Any:
    from IPython.display import HTML

    return HTML(text)


class Dashboard:
    """What one dashboard page shows, read from the last successful run."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or output_root()
        self.run = latest_run(self.root)
        self.manifest: Manifest | None = None
        self.params: dict[str, Any] = {}
        if self.run is not None:
            self.manifest = runs.read_manifest(self.run)
            self.params = self.manifest.params.get("dashboards", {})

    # -- reading ----------------------------------------------------------------------------
    def table(self, name: str) -> pl.DataFrame | None:
        """A table of the run, or None when the run lacks it."""
        if self.run is None:
            return None
        path = self.run / "tables" / f"{name}.parquet"
        return pl.read_parquet(path) if path.exists() else None

    def fact(self, name: str) -> pl.DataFrame | None:
        """A warehouse table (read-only connection: never blocks a running pipeline)."""
        import duckdb

        path = self.run / "warehouse" / "warehouse.duckdb" if self.run else None
        if path is None or not path.exists():
            # engine spark writes the tables as folders of Parquet parts, no DuckDB file
            parts = self.run / "warehouse" / "tables" / name if self.run else None
            if parts is not None and parts.is_dir():
                return pl.read_parquet(parts / "*.parquet")
            return None
        con = duckdb.connect(str(path), read_only=True)
        try:
            return con.execute(f'SELECT * FROM "{name}"').pl()
        except duckdb.CatalogException:
            return None
        finally:
            con.close()

    def events_sql(self, sql: str) -> pl.DataFrame:
        """A small read-only DuckDB query over the run's optimized events (``events`` view)."""
        import duckdb

        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            glob = str(self.run / "warehouse" / "events" / "**" / "*.parquet")
            con.execute(
                f"CREATE VIEW events AS SELECT * FROM read_parquet('{glob}', hive_partitioning=true)"
            )
            return con.execute(sql).pl()
        finally:
            con.close()

    def _missing(self, what: str) -> Any:
        return _html(
            f'<p class="missing" style="color:#666">{html.escape(what)} is not in this run.</p>'
        )

    # -- shared -----------------------------------------------------------------------------
    def header(self, title: str) -> Any:
        """Title, the run's date and data range -- or how to make a first run."""
        if self.run is None:
            return _html(
                f'<h2>{html.escape(title)}</h2><div id="no-run" style="padding:12px;border:1px solid #E69F00;'
                f'border-radius:6px;background:#fff8e6"><b>No successful run yet.</b> These dashboards '
                f"show the last run that finished successfully, and there is none in "
                f"<code>{html.escape(str(self.root))}</code>. Make one with <code>make run</code> "
                f"(or <code>python run_all.py --params params/default.yaml</code>), then reload this page.</div>"
            )
        span = "no warehouse in this run"
        if (self.run / "warehouse").exists():
            rng = self.events_sql("SELECT min(event_date) AS a, max(event_date) AS b FROM events")
            span = f"data from {rng['a'][0]} to {rng['b'][0]}"
        finished = (self.manifest.finished_at or "")[:16].replace("T", " ")
        return _html(
            f'<h2>{html.escape(title)}</h2><div id="run-info" data-run="{html.escape(self.run.name)}" '
            f'style="color:#555">Run <code>{html.escape(self.run.name)}</code>, finished {finished} UTC; '
            f"{span}.</div>"
        )

    # -- executive --------------------------------------------------------------------------
    def kpis(self) -> dict[str, dict[str, float | None]]:
        """Revenue, orders, customers, conversion and AOV: last period and change vs the one before."""
        days = int(self.params.get("period_days", 30))
        q = f"""
        WITH b AS (SELECT max(event_time) AS t1 FROM events),
        e AS (SELECT events.*, CASE WHEN event_time > t1 - INTERVAL {days} DAY THEN 'current'
                                     WHEN event_time > t1 - INTERVAL {2 * days} DAY THEN 'previous' END AS period
              FROM events, b)
        SELECT period,
               sum(CASE WHEN event_type = 'purchase' THEN price ELSE 0 END)::DOUBLE AS revenue,
               count(DISTINCT CASE WHEN event_type = 'purchase' THEN user_session END) AS orders,
               count(DISTINCT CASE WHEN event_type = 'purchase' THEN user_id END) AS customers,
               count(DISTINCT user_session) AS sessions
        FROM e WHERE period IS NOT NULL GROUP BY period"""
        rows = {r["period"]: r for r in self.events_sql(q).iter_rows(named=True)}
        out = {}
        for p in ("current", "previous"):
            r = rows.get(p, {"revenue": 0.0, "orders": 0, "customers": 0, "sessions": 0})
            out[p] = {
                "revenue": float(r["revenue"]),
                "orders": float(r["orders"]),
                "customers": float(r["customers"]),
                "conversion": r["orders"] / r["sessions"] if r["sessions"] else 0.0,
                "aov": r["revenue"] / r["orders"] if r["orders"] else 0.0,
            }
        return out

    def kpi_cards(self) -> Any:
        """Headline KPI cards with the change vs the previous period."""
        if self.run is None:
            return None
        k = self.kpis()
        cur, prev = k["current"], k["previous"]
        days = int(self.params.get("period_days", 30))

        def change(key: str) -> float | None:
            return (cur[key] / prev[key] - 1) if prev[key] else None

        cards = [
            _card(
                "revenue",
                f"Revenue, last {days} days",
                cur["revenue"],
                money(cur["revenue"]),
                change("revenue"),
            ),
            _card("orders", "Orders", cur["orders"], f"{cur['orders']:,.0f}", change("orders")),
            _card(
                "customers",
                "Customers who bought",
                cur["customers"],
                f"{cur['customers']:,.0f}",
                change("customers"),
            ),
            _card(
                "conversion",
                "Conversion (orders / sessions)",
                cur["conversion"],
                pct(cur["conversion"]),
                change("conversion"),
            ),
            _card("aov", "Average order value", cur["aov"], money(cur["aov"]), change("aov")),
        ]
        return _html('<div id="kpis">' + "".join(cards) + "</div>")

    def daily_trend(self) -> Any:
        """Daily revenue and DAU."""
        if self.run is None:
            return None
        k = self.fact("fact_daily_kpis")
        return plots.daily_kpis(k) if k is not None else self._missing("Daily KPIs")

    def funnel(self) -> Any:
        """The overall view -> cart -> purchase funnel."""
        if self.run is None:
            return None
        f = self.fact("fact_funnel")
        if f is None:
            return self._missing("The funnel")
        return plots.funnel(f.filter(pl.col("level") == "overall"))

    def top_categories(self) -> Any:
        """Top categories by revenue, with growth from the first to the second half of the data."""
        if self.run is None:
            return None
        n = int(self.params.get("top_n", 10))
        t = self.events_sql(f"""
            WITH b AS (SELECT min(event_time) AS t0, max(event_time) AS t1 FROM events)
            SELECT coalesce(category_code, '(no category)') AS category,
                   sum(price)::DOUBLE AS revenue,
                   sum(CASE WHEN event_time < t0 + (t1 - t0) / 2 THEN price ELSE 0 END)::DOUBLE AS first_half,
                   sum(CASE WHEN event_time >= t0 + (t1 - t0) / 2 THEN price ELSE 0 END)::DOUBLE AS second_half
            FROM events, b WHERE event_type = 'purchase' GROUP BY 1 ORDER BY revenue DESC LIMIT {n}""")
        t = t.with_columns(growth=pl.col("second_half") / pl.col("first_half") - 1)
        fig = go.Figure(
            go.Bar(
                x=t["revenue"].to_list(),
                y=t["category"].to_list(),
                orientation="h",
                marker_color=COLORS[0],
                text=[f"{g:+.0%}" if g == g and np.isfinite(g) else "new" for g in t["growth"]],
                textposition="outside",
                hovertemplate="%{y}: %{x:,.2f}<extra></extra>",
            )
        )
        fig.update_yaxes(autorange="reversed")
        fig.update_xaxes(
            title_text="revenue (label: growth, second half vs first half)", tickformat=",.0f"
        )
        return styled(fig, title=f"Top {n} categories by revenue")

    def top_customers(self) -> Any:
        """Top customers by revenue in the last period (pseudonymised unless allowed)."""
        if self.run is None:
            return None
        n = int(self.params.get("top_n", 10))
        days = int(self.params.get("period_days", 30))
        t = self.events_sql(f"""
            WITH b AS (SELECT max(event_time) AS t1 FROM events)
            SELECT user_id, sum(price)::DOUBLE AS revenue, count(DISTINCT user_session) AS orders
            FROM events, b WHERE event_type = 'purchase' AND event_time > t1 - INTERVAL {days} DAY
            GROUP BY user_id ORDER BY revenue DESC, user_id LIMIT {n}""")
        ids = t["user_id"].cast(pl.String)
        if not self.params.get("allow_raw_customer_ids", False):
            ids = pseudonymize(ids, str(self.params.get("pseudonym_salt", "customer-intel")))
        rows = "".join(
            f"<tr><td>{html.escape(i)}</td><td style='text-align:right'>{money(r)}</td>"
            f"<td style='text-align:right'>{o:,}</td></tr>"
            for i, r, o in zip(ids, t["revenue"], t["orders"], strict=True)
        )
        return _html(
            f'<h4>Top {n} customers, last {days} days</h4><table id="top-customers"><tr><th>customer</th>'
            f"<th>revenue</th><th>orders</th></tr>{rows}</table>"
        )

    def cohorts(self) -> Any:
        """Cohort retention heatmap."""
        c = self.table("cohort_retention")
        return (
            None
            if self.run is None
            else (plots.cohort_heatmap(c) if c is not None else self._missing("Cohorts"))
        )

    # -- customers --------------------------------------------------------------------------
    def segment_sizes(self) -> Any:
        """RFM segment sizes."""
        s = self.table("rfm_segments_summary")
        return (
            None
            if self.run is None
            else (plots.segment_sizes(s) if s is not None else self._missing("RFM segments"))
        )

    def revenue_share(self) -> Any:
        """Share of customers vs of revenue per segment, with headline numbers."""
        s = self.table("rfm_segments_summary")
        if self.run is None:
            return None
        return plots.revenue_share(s) if s is not None else self._missing("RFM segments")

    def top_segment(self) -> Any:
        """The most valuable segment in one sentence (with data-values for tests)."""
        s = self.table("rfm_segments_summary")
        if self.run is None or s is None:
            return None
        top = s.sort("revenue", descending=True).row(0, named=True)
        return _html(
            f'<p id="top-segment" data-segment="{html.escape(top["segment"])}" data-share="{top["share"]!r}" '
            f'data-revenue-share="{top["revenue_share"]!r}"><b>{html.escape(top["segment"])}</b> are '
            f"{pct(top['share'])} of buyers and bring {pct(top['revenue_share'])} of revenue.</p>"
        )

    def clv_distribution(self) -> Any:
        """Model CLV per customer (BG/NBD + Gamma-Gamma), a histogram."""
        if self.run is None:
            return None
        p = self.table("clv_predictions")
        return plots.clv_distribution(p) if p is not None else self._missing("CLV predictions")

    def p_alive_matrix(self) -> Any:
        """Probability alive by frequency and recency (BG/NBD)."""
        if self.run is None:
            return None
        m = self.table("clv_fr_matrix")
        return (
            plots.clv_fr_matrix(m, value="p_alive") if m is not None else self._missing("P(alive)")
        )

    def customers_at_risk(self) -> Any:
        """High-value customers with a low P(alive), pseudonymised unless allowed."""
        if self.run is None:
            return None
        t = self.table("clv_at_risk")
        if t is None:
            return self._missing("Customers at risk")
        if t.height == 0:
            return _html(
                '<p id="customers-at-risk">No customer is at risk: the model gives every customer '
                "a high probability of still being active.</p>"
            )
        ids = t["user_id"].cast(pl.String)
        if not self.params.get("allow_raw_customer_ids", False):
            ids = pseudonymize(ids, str(self.params.get("pseudonym_salt", "customer-intel")))
        rows = "".join(
            f"<tr><td>{html.escape(i)}</td><td style='text-align:right'>{money(v)}</td>"
            f"<td style='text-align:right'>{pct(a)}</td><td style='text-align:right'>{money(c)}</td>"
            "</tr>"
            for i, v, a, c in zip(ids, t["value_so_far"], t["p_alive"], t["clv"], strict=True)
        )
        return _html(
            f"<h4>Top {t.height} customers at risk (high value, low probability alive)</h4>"
            '<table id="customers-at-risk"><tr><th>customer</th><th>value so far</th>'
            f"<th>P(alive)</th><th>model CLV</th></tr>{rows}</table>"
        )

    def cluster_profiles(self) -> Any:
        """Standardised cluster profiles heatmap."""
        from customer_intel import clustering

        prof = self.table("cluster_profiles")
        if self.run is None:
            return None
        if prof is None:
            return self._missing("Cluster profiles")
        numeric = [c for c in prof.columns if c not in ("cluster", "segment", "customers", "share")]
        return plots.cluster_heatmap(clustering.standardized_profiles(prof, numeric))

    def score_form(self) -> Any:
        """A form: enter a customer's attributes -> predicted cluster and its description."""
        if self.run is None:
            return None
        import ipywidgets as widgets
        import joblib

        from customer_intel import clustering

        path = self.run / "models" / "segmentation.joblib"
        prof = self.table("cluster_profiles")
        if not path.exists() or prof is None:
            return self._missing("The segmentation model")
        model = joblib.load(path)
        typical = prof.select(model.spec.numeric).mean().row(0, named=True)
        inputs = {
            c: widgets.FloatText(
                value=round(float(typical[c] or 0), 2),
                description=c,
                style={"description_width": "150px"},
            )
            for c in model.spec.numeric
        }
        button = widgets.Button(description="Score this customer", button_style="primary")
        out = widgets.HTML(value='<div id="score-result"></div>')

        def score(_: Any = None) -> None:
            frame = pl.DataFrame({c: [w.value] for c, w in inputs.items()})
            pred = clustering.predict_segment(frame, model).row(0, named=True)
            row = prof.filter(pl.col("cluster") == pred["cluster"]).row(0, named=True)
            out.value = (
                f'<div id="score-result" data-cluster="{pred["cluster"]}" data-segment="{html.escape(pred["segment"])}">'
                f"Predicted cluster: <b>{html.escape(pred['segment'])}</b> — {pct(row['share'])} of customers, "
                f"average {model.value_column} {row[model.value_column]:,.2f}.</div>"
            )

        button.on_click(score)
        score()
        return widgets.VBox([*inputs.values(), button, out])

    # -- growth -----------------------------------------------------------------------------
    def propensity_deciles(self) -> Any:
        """Purchase rate by score decile (held-out users)."""
        d = self.table("propensity_deciles")
        return (
            None
            if self.run is None
            else (plots.deciles_bar(d) if d is not None else self._missing("Propensity"))
        )

    def gains(self) -> Any:
        """Cumulative gains of the model from its decile table."""
        d = self.table("propensity_deciles")
        if self.run is None:
            return None
        if d is None:
            return self._missing("Propensity")
        share = (d["customers"].cum_sum() / d["customers"].sum()).to_list()
        curve = pl.DataFrame(
            {"targeted": [0.0, *share], "gain": [0.0, *d["cumulative_gain"].to_list()]}
        )
        return plots.gains_chart({"LightGBM": curve})

    def lift(self) -> Any:
        """Cumulative lift by decile."""
        d = self.table("propensity_deciles")
        if self.run is None or d is None:
            return None
        share = (d["customers"].cum_sum() / d["customers"].sum()).to_list()
        return plots.lift_chart(
            {"LightGBM": pl.DataFrame({"targeted": share, "lift": d["cumulative_lift"].to_list()})}
        )

    def targeting(self) -> Any:
        """The recommended targeting depth and its expected profit."""
        if self.run is None:
            return None
        card_path = self.run / "models" / "propensity_card.json"
        if not card_path.exists():
            return self._missing("The targeting recommendation")
        t = runs.read_model(PropensityCard, card_path).targeting
        return _html(
            f'<div id="targeting" data-depth="{t.depth}" data-profit="{t.expected_profit!r}">'
            f"<b>Recommended campaign:</b> contact the top <b>{t.depth:,}</b> customers "
            f"({pct(t.share)}) — expected profit <b>{money(t.expected_profit)}</b>, "
            f"{t.expected_conversions:,.0f} expected conversions.<br>{html.escape(t.recommendation)}</div>"
        )

    def product_selector(self) -> Any:
        """Pick a product: its top recommendations and the rules behind them."""
        if self.run is None:
            return None
        import ipywidgets as widgets

        recs = self.table("product_recommendations")
        if recs is None:
            return self._missing("Product recommendations")
        with_rules = recs.filter(pl.col("kind") == "rule")["item"].unique().sort().to_list()
        options = with_rules[:500] or recs["item"].unique().sort().to_list()[:500]
        dd = widgets.Dropdown(
            options=options, description="product", style={"description_width": "80px"}
        )
        out = widgets.HTML()

        def show(_: Any = None) -> None:
            rows = recs.filter(pl.col("item") == dd.value).sort("rank")
            body = "".join(
                f"<tr><td>{r}</td><td>{html.escape(str(p))}</td><td>{html.escape(s)}</td></tr>"
                for r, p, s in zip(rows["rank"], rows["recommended"], rows["source"], strict=True)
            )
            out.value = (
                f'<table id="product-recs" data-item="{html.escape(str(dd.value))}"><tr><th>#</th>'
                f"<th>recommended</th><th>why</th></tr>{body}</table>"
            )

        dd.observe(show, names="value")
        show()
        return widgets.VBox([dd, out])

    # -- experiments ------------------------------------------------------------------------
    def decision_table(self) -> Any:
        """SRM warning first, then one row per metric in words."""
        if self.run is None:
            return None
        res, diag = self.table("experiment_results"), self.table("experiment_diagnostics")
        if res is None or diag is None:
            return self._missing("The experiment readout")
        d = dict(zip(diag["check"], diag["value"], strict=True))
        srm_p = d.get("SRM p-value", 1.0)
        threshold = float(self.manifest.params.get("experiments", {}).get("srm_threshold", 0.001))
        warn = ""
        if srm_p < threshold:
            warn = (
                f'<div id="srm-warning" style="padding:10px;border:2px solid #D55E00;background:#fdeee6">'
                f"<b>Do not trust this test yet:</b> the group sizes do not match the intended split "
                f"(sample ratio mismatch, p = {srm_p:.2g}). Assignment or logging is broken.</div>"
            )
        else:
            warn = f'<div id="srm-ok" style="color:#555">Sample ratio check passed (p = {srm_p:.2g}).</div>'
        from customer_intel.experiments import fmt_prob

        dec = self.table("experiment_decision")
        if dec is not None and dec.height:
            warn += "".join(
                f'<div class="decision" data-arm="{html.escape(str(r["arm"]))}" '
                f'data-decision="{html.escape(r["decision"])}"><b>{html.escape(r["verdict"])}</b></div>'
                for r in dec.iter_rows(named=True)
            )
        rows = "".join(
            f'<tr class="metric-row" data-metric="{html.escape(r["metric"])}" '
            f'data-arm="{html.escape(str(r.get("arm", "treatment")))}" data-rel-lift="{r["rel_lift"]!r}" '
            f'data-p-adjusted="{r["p_adjusted"]!r}"><td>{html.escape(r["metric"])}</td>'
            f"<td>{html.escape(str(r.get('arm', 'treatment')))}</td><td>{r['control']:.4g}</td>"
            f"<td>{r['treatment']:.4g}</td><td>{r['rel_lift']:+.1%}</td><td>[{r['ci_low']:.4g}, {r['ci_high']:.4g}]</td>"
            f"<td>{r['p_value']:.3g}</td><td>{r['p_adjusted']:.3g}</td>"
            f"<td>{'' if r.get('prob_b_better') is None else fmt_prob(r['prob_b_better'])}"
            f"{'' if not r.get('prob_method') else ' (' + html.escape(r['prob_method']) + ')'}</td>"
            f"<td>{html.escape(r.get('seq_decision') or '')}</td>"
            f"<td><b>{r['significant']}</b>: {html.escape(r['verdict'])}</td></tr>"
            for r in res.iter_rows(named=True)
        )
        return _html(
            warn
            + '<table id="decision-table"><tr><th>metric</th><th>arm</th><th>control</th><th>arm value</th><th>relative lift</th>'
            "<th>95% CI of the difference</th><th>p</th><th>adjusted p</th><th>P(arm better)</th>"
            f"<th>sequential</th><th>significant?</th></tr>{rows}</table>"
        )

    def effect_over_time(self) -> Any:
        """Cumulative effect by day of the first metric, with the confidence sequence."""
        if self.run is None:
            return None
        daily = self.table("experiment_daily")
        if daily is None or not daily.height:
            return self._missing("The daily experiment view")
        return plots.experiment_over_time(daily, daily["metric"][0])

    def lift_distributions(self) -> Any:
        """Bootstrap distributions of the relative lift."""
        b = self.table("experiment_bootstrap")
        if self.run is None:
            return None
        if b is None:
            return self._missing("Bootstrap lifts")
        lifts = {
            m: g["rel_lift"].to_numpy() for (m,), g in b.group_by("metric", maintain_order=True)
        }
        return plots.lift_distribution(lifts)

    def power_calculator(self) -> Any:
        """Sliders (baseline, MDE, alpha, power) -> sample size per group."""
        import ipywidgets as widgets

        from customer_intel import experiments

        style = {"description_width": "140px"}
        sliders = {
            "baseline": widgets.FloatSlider(
                value=0.10,
                min=0.005,
                max=0.9,
                step=0.005,
                readout_format=".3f",
                description="baseline rate",
                style=style,
            ),
            "mde": widgets.FloatSlider(
                value=0.10,
                min=0.01,
                max=1.0,
                step=0.01,
                readout_format=".2f",
                description="relative MDE",
                style=style,
            ),
            "alpha": widgets.FloatSlider(
                value=0.05,
                min=0.001,
                max=0.2,
                step=0.001,
                readout_format=".3f",
                description="alpha",
                style=style,
            ),
            "power": widgets.FloatSlider(
                value=0.80,
                min=0.5,
                max=0.99,
                step=0.01,
                readout_format=".2f",
                description="power",
                style=style,
            ),
        }
        out = widgets.HTML()

        def update(_: Any = None) -> None:
            v = {k: s.value for k, s in sliders.items()}
            try:
                n = experiments.sample_size_per_group(
                    v["baseline"], v["mde"], v["alpha"], v["power"]
                )
                text = f"<b>{int(np.ceil(n)):,}</b> units per group"
            except ValueError as e:
                n, text = float("nan"), html.escape(str(e))
            out.value = (
                f'<div id="power-result" data-n="{n!r}" data-baseline="{v["baseline"]!r}" '
                f'data-mde="{v["mde"]!r}" data-alpha="{v["alpha"]!r}" data-power="{v["power"]!r}">'
                f"{text}</div>"
            )

        for s in sliders.values():
            s.observe(update, names="value")
        update()
        return widgets.VBox([*sliders.values(), out])


# -- serving ------------------------------------------------------------------------------------
# -- metrics stage: forecast anomalies (executive) and the reports page ---------------------------
# Self-contained on purpose (issue 18): they read only the metrics stage's tables and the run's
# resolved params, so they move with the Dashboard class wherever it goes.
def forecast_anomalies(dash: Dashboard) -> Any:
    """The forecast backtest's anomalies: days whose actual value fell outside the interval."""
    if dash.run is None:
        return None
    t = dash.table("forecast_anomalies")
    if t is None:
        return dash._missing("The forecast (metrics stage)")
    if t.is_empty():
        return _html(
            '<div id="forecast-anomalies" data-n="0" style="color:#555">Forecast backtest: '
            "no day fell outside the forecast's prediction interval.</div>"
        )
    rows = "".join(
        f"<tr><td>{html.escape(r['metric'])}</td><td>{r['date']}</td>"
        f'<td class="actual" data-value="{r["actual"]!r}">{money(r["actual"])}</td>'
        f"<td>{money(r['lower'])} to {money(r['upper'])}</td>"
        f"<td>{'above' if r['actual'] > r['upper'] else 'below'}</td></tr>"
        for r in t.sort("date").iter_rows(named=True)
    )
    return _html(
        f'<div id="forecast-anomalies" data-n="{t.height}"><b>Anomalies</b>: {t.height} day(s) of '
        "the forecast backtest fell outside the prediction interval."
        '<table style="border-collapse:collapse"><tr><th>metric</th><th>day</th><th>actual</th>'
        f"<th>expected range</th><th></th></tr>{rows}</table></div>"
    )


def report_specs(dash: Dashboard) -> list:
    """The reports declared in the run's params (``metrics.reports``), typed."""
    from customer_intel.params.metrics import ReportSpec

    section = dash.manifest.params.get("metrics", {}) if dash.manifest else {}
    return [ReportSpec.model_validate(r) for r in section.get("reports", [])]


def show_reports(dash: Dashboard) -> Any:
    """Every configured report: its title, description and figure, from the metric tables."""
    from IPython.display import display

    if dash.run is None:
        return None
    specs = report_specs(dash)
    if not specs:
        return _html(
            '<p id="no-reports">No report is configured: add one under <code>metrics.reports'
            "</code> in the params profile and run <code>run_all.py --only metrics</code>.</p>"
        )
    for r in specs:
        table = dash.table(f"metric_{r.metric}")
        display(
            _html(
                f'<h3 class="report" data-metric="{html.escape(r.metric)}">{html.escape(r.name)}'
                f'</h3><p style="color:#555">{html.escape(r.description)}</p>'
            )
        )
        if table is None:
            display(dash._missing(f"The table of metric {r.metric!r}"))
        elif table.is_empty():
            display(
                _html(
                    f'<p style="color:#666">Metric {html.escape(r.metric)!r} has no rows in '
                    "this run (see the table metrics_summary for why).</p>"
                )
            )
        else:
            display(plots.report_figure(table, r))
    return None


def voila_command(*, host: str, port: int, pool_size: int) -> list[str]:
    """The Voila command line: tree of notebooks/dashboards, sources stripped, preheated kernels."""
    return [
        sys.executable,
        "-m",
        "voila",
        str(DASHBOARDS_DIR),
        "--no-browser",
        f"--Voila.ip={host}",
        f"--port={port}",
        "--strip_sources=True",
        f"--preheat_kernel={pool_size > 0}",
        f"--pool_size={pool_size}",
        "--VoilaConfiguration.file_allowlist=['.*\\.(png|jpg|gif|svg)']",
        "--ServerApp.disable_check_xsrf=False",
    ]


def urls(host: str, port: int) -> dict[str, str]:
    """One URL per dashboard."""
    return {name: f"http://{host}:{port}/voila/render/{name}.ipynb" for name in DASHBOARDS}


def main(argv: list[str] | None = None) -> int:
    """``python -m customer_intel.dashboards``: serve the dashboards of the last good run."""
    ap = argparse.ArgumentParser(prog="python -m customer_intel.dashboards")
    ap.add_argument("--output-root", type=Path, default=OUTPUTS_DIR)
    ap.add_argument("--port", type=int)
    ap.add_argument("--pool-size", type=int)
    args = ap.parse_args(argv)
    run = latest_run(args.output_root)
    params: dict[str, Any] = {}
    if run is not None:
        params = yaml.safe_load((run / "params" / "resolved.yaml").read_text()).get(
            "dashboards", {}
        )
    host = params.get("host", "127.0.0.1")
    port = args.port or int(params.get("port", 8866))
    pool = args.pool_size if args.pool_size is not None else int(params.get("pool_size", 1))
    env = os.environ | {ENV_OUTPUT_ROOT: str(args.output_root.resolve())}
    print(
        "No successful run yet: the dashboards will say so (make one with `make run`)."
        if run is None
        else f"Serving run {run.name}"
    )
    for name, url in urls(host, port).items():
        print(f"  {name:<12} {url}")
    cmd = voila_command(host=host, port=port, pool_size=pool)
    sys.stdout.flush()
    # become Voila (exec, not a child): a signal to this process reaches the server itself,
    # which shuts its kernels down; a child would be orphaned with its kernels still running
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    sys.exit(main())
