"""Experiments: decision per arm, results table, effect over time, lifts, power calculator.

The sample-ratio check first, the ship decision per arm in words (``experiment_decision``),
one row per arm x metric with the chance the arm is better (and how it was computed) and the
sequential readout, the effect by day, lift distributions and a power calculator that starts at
the test's observed rate.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import polars as pl

from customer_intel import plots
from customer_intel.dashboards import present, widgets
from customer_intel.dashboards.pages.base import Page


class Experiments(Page):
    """The experiments dashboard."""

    name = "experiments"
    preload = ("ipywidgets",)
    applies = (
        "which experiment is shown (the readout covers the whole test: dates, segments and "
        "categories do not apply)"
    )

    def _experiment_shown(self) -> present.Html:
        """Which experiment the readout below is of, and how many customers it enrolled.

        The run has one readout (the experiments stage's units); the experiment filter picks
        the experiment it is said to be of. When the units pooled several experiments (params
        ``experiments.experiment_name`` null) the page says so instead of passing the pooled
        readout off as the chosen experiment's.
        """
        names = self.data.experiments()
        if not names:
            return present.Html("")
        chosen = self.filters.experiment or (names[0] if len(names) == 1 else None)
        n = None if chosen is None else self.data.enrolled(chosen).height
        if len(names) == 1:
            text = (
                f"Experiment <b>{html.escape(chosen)}</b>: {n:,} customers enrolled. "
                "Every number below is this experiment's."
            )
        else:
            listed = ", ".join(html.escape(x) for x in names)
            text = (
                f"This run's readout pools {len(names)} experiments ({listed}): the numbers "
                "below are not one experiment's. Run the experiments stage with "
                "<code>experiment_name</code> set to read one alone."
            )
            if chosen is not None:
                text = f"Chosen: <b>{html.escape(chosen)}</b> ({n:,} customers enrolled). " + text
        attrs = f' data-experiment="{html.escape(chosen)}" data-units="{n}"' if chosen else ""
        return present.Html(f'<p class="ci-block" id="experiment-shown"{attrs}>{text}</p>')

    @property
    def arms(self) -> tuple[str, str]:
        """The control's and the (first) arm's own labels (e.g. gate_30 / gate_40).

        From the results table (one row per arm x metric) when it names them, else the params.
        """
        res = self.data.table("experiment_results") if self.ok else None
        if res is not None and {"arm", "control_label"} <= set(res.columns) and res.height:
            return str(res["control_label"][0]), str(res["arm"][0])
        e = self.data.section("experiments")
        return str(e.get("control_label", "control")), str(e.get("treatment_label", "treatment"))

    def _money_metrics(self) -> set[str]:
        """Metrics in money: those of a money column (revenue, price), whatever their kind.

        A mean, a ratio such as revenue per purchase, a quantile of spend.
        """
        money = {"revenue", "price", "monetary", "spend", "amount", "value"}
        metrics = self.data.section("experiments").get("metrics") or []
        named = {str(m.get("name")) for m in metrics if str(m.get("column")) in money}
        return named | {"revenue per user", "revenue per purchase"}

    def _value(self, kind: str, v: float | None, metric: str = "") -> str:
        if v is None or v != v:  # None or NaN (e.g. no interval for a quantile)
            return "–"
        if kind == "binary":
            return present.pct(v, 2)
        if "revenue" in kind or kind == "continuous" or metric in self._money_metrics():
            return present.money(v, self.currency)
        return f"{v:,.3g}"

    def _srm(self, diag) -> present.Html:
        d = dict(zip(diag["check"], diag["value"], strict=True))
        srm_p = d.get("SRM p-value", 1.0)
        threshold = float(self.data.section("experiments").get("srm_threshold", 0.001))
        if srm_p < threshold:
            return present.message(
                f"Do not trust this test yet: the groups' sizes do not match the intended split "
                f"(sample ratio mismatch, p {present.p_value(srm_p)}). Assignment or logging is "
                "broken; fix it before reading the results below.",
                kind="warning",
                element_id="srm-warning",
            )
        return present.message(
            f"The groups' sizes match the intended split (sample ratio check p = "
            f"{present.p_value(srm_p)}).",
            kind="note",
            element_id="srm-ok",
        )

    def _decisions(self) -> present.Html:
        """The ship decision per arm in one sentence each (table ``experiment_decision``)."""
        dec = self.data.table("experiment_decision")
        if dec is None or not dec.height:
            return present.Html("")
        return present.render("decisions", rows=dec.select("arm", "decision", "verdict").to_dicts())

    def decision_table(self) -> present.Html | None:
        """Sample-ratio check first, the decision per arm, then one row per arm x metric."""
        if not self.ok:
            return None
        res, diag = self.data.table("experiment_results"), self.data.table("experiment_diagnostics")
        if res is None or diag is None:
            return self.missing("The experiment readout")
        a, _ = self.arms
        shown = []
        for r in res.iter_rows(named=True):
            kind = r.get("kind") or ""
            arm = str(r.get("arm") or self.arms[1])
            method = r.get("prob_method")
            prob = r.get("prob_b_better")
            shown.append(
                {
                    "metric": r["metric"],
                    "arm": arm,
                    "control": self._value(kind, r["control"], r["metric"]),
                    "treatment": self._value(kind, r["treatment"], r["metric"]),
                    "change": present.signed_pct(r["rel_lift"]),
                    "range": " to ".join(
                        self._value(kind, r[k], r["metric"]) for k in ("ci_low", "ci_high")
                    ).replace("-", "−"),
                    "p": present.p_value(r["p_adjusted"]),
                    "prob": present.probability(prob)
                    + (f" ({method})" if method and prob is not None else ""),
                    "sequential": r.get("seq_decision") or "",
                    "verdict": r["verdict"],
                    "_rel_lift": r["rel_lift"],
                    "_p_adjusted": r["p_adjusted"],
                }
            )
        table = present.table(
            pl.DataFrame(shown, infer_schema_length=None),
            {
                "metric": ("metric", None),
                "arm": ("arm", None),
                "control": (a, None),
                "treatment": ("arm's value", None),
                "change": (f"change vs {a}", None),
                "range": ("95% range of the difference", None),
                "p": ("p (adjusted)", None),
                "prob": ("chance the arm is better (method)", None),
                "sequential": ("sequential readout (any look)", None),
                "verdict": ("verdict", None),
            },
            element_id="decision-table",
            title="Results",
            csv=res,
            filename="experiment_results",
            row_attrs=lambda r: {
                "class": "metric-row",
                "data-metric": r["metric"],
                "data-arm": r["arm"],
                "data-rel-lift": repr(r["_rel_lift"]),
                "data-p-adjusted": repr(r["_p_adjusted"]),
            },
        )
        return present.Html(
            str(self._experiment_shown())
            + str(self._srm(diag))
            + str(self._decisions())
            + table.data
        )

    def effect_over_time(self) -> present.Html | None:
        """Cumulative effect by day of the first metric, per arm, with the confidence sequence."""
        if not self.ok:
            return None
        daily = self.data.table("experiment_daily")
        if daily is None or not daily.height:
            return self.missing("The daily experiment view")
        metric = daily["metric"][0]
        fig = plots.experiment_over_time(daily, metric)
        a, b = self.arms
        res = self.data.table("experiment_results")
        kinds = dict(zip(res["metric"], res["kind"], strict=False)) if res is not None else {}
        # the metric is in the chart's title; the axis title stays short enough for the chart's
        # height (a vertical title longer than the plot is cut at both ends)
        if kinds.get(metric) == "binary":  # a difference of rates: percentage points
            fig.update_yaxes(tickformat=".0%", title_text=f"{b} minus {a} (% points)")
        else:
            fig.update_yaxes(title_text=f"{b} minus {a}")
        return present.figure(
            fig,
            title=f"The change in {metric} day by day (cumulative, with the anytime-valid range)",
            element_id="chart-lift-over-time",
            data=daily,
        )

    def lift_distributions(self) -> present.Html | None:
        """Bootstrap distributions of the relative lift."""
        if not self.ok:
            return None
        bs = self.data.table("experiment_bootstrap")
        if bs is None:
            return self.missing("Bootstrap lifts")
        lifts = {
            m: g["rel_lift"].to_numpy() for (m,), g in bs.group_by("metric", maintain_order=True)
        }
        a, b = self.arms
        fig = plots.lift_distribution(lifts)
        # the middle 98% of the resamples: a long tail squeezed every histogram to one side
        every = np.concatenate([v[np.isfinite(v)] for v in lifts.values()] or [np.zeros(1)])
        lo, hi = np.quantile(every, [0.01, 0.99]) if every.size else (0.0, 0.0)
        pad = 0.05 * (hi - lo or 1.0)
        fig.update_xaxes(title_text=f"change of {b} vs {a}", range=[lo - pad, hi + pad])
        fig.update_yaxes(title_text="how likely (relative)")
        return present.figure(
            fig,
            title=f"How large the change of {b} over {a} could be (bootstrap)",
            element_id="chart-lifts",
            data=bs,
        )

    def _observed_rate(self) -> float:
        """The control arm's rate of the first binary metric (the power calculator starts there)."""
        res = self.data.table("experiment_results") if self.ok else None
        if res is not None and "kind" in res.columns:
            binary = res.filter(res["kind"] == "binary")
            if binary.height and 0 < float(binary["control"][0]) < 1:
                return float(binary["control"][0])
        return 0.10

    def power_calculator(self) -> Any:
        """Rates and risks in percent -> units needed per group, with messages in words."""
        if not self.ok:
            return None
        from customer_intel.dashboards import power

        return widgets.power_calculator(self._observed_rate(), power.sample_size_per_group)
