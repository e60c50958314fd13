"""Experiments: decision table, lift distributions, power calculator.

The decision table in words (sample-ratio check first), lift distributions and a power calculator
that starts at the test's observed rate.
"""

from __future__ import annotations

from typing import Any

from customer_intel import plots
from customer_intel.dashboards import present, widgets
from customer_intel.dashboards.pages.base import Page


class Experiments(Page):
    """The experiments dashboard."""

    name = "experiments"
    filtered = False  # one readout per run: dates, segments and categories do not apply
    applies = ""

    @property
    def arms(self) -> tuple[str, str]:
        """The arms' own labels (e.g. gate_30 / gate_40), from the run's params."""
        e = self.data.section("experiments")
        return str(e.get("control_label", "control")), str(e.get("treatment_label", "treatment"))

    def _value(self, kind: str, v: float | None) -> str:
        if v is None:
            return "–"
        if kind == "binary":
            return present.pct(v, 2)
        if "revenue" in kind or kind == "continuous":
            return present.money(v, self.currency)
        return f"{v:,.3g}"

    def decision_table(self) -> present.Html | None:
        """Sample-ratio check first, then one row per metric in words."""
        if not self.ok:
            return None
        res, diag = self.data.table("experiment_results"), self.data.table("experiment_diagnostics")
        if res is None or diag is None:
            return self.missing("The experiment readout")
        d = dict(zip(diag["check"], diag["value"], strict=True))
        srm_p = d.get("SRM p-value", 1.0)
        threshold = float(self.data.section("experiments").get("srm_threshold", 0.001))
        a, b = self.arms
        if srm_p < threshold:
            warn = present.message(
                f"Do not trust this test yet: the groups' sizes do not match the intended split "
                f"(sample ratio mismatch, p {present.p_value(srm_p)}). Assignment or logging is "
                "broken; fix it before reading the results below.",
                kind="warning",
                element_id="srm-warning",
            )
        else:
            warn = present.message(
                f"The groups' sizes match the intended split (sample ratio check p = "
                f"{present.p_value(srm_p)}).",
                kind="note",
                element_id="srm-ok",
            )
        t = res.with_columns()
        table = present.table(
            t,
            {
                "metric": ("metric", None),
                "control": (a, None),
                "treatment": (b, None),
                "rel_lift": (f"change ({b} vs {a})", present.signed_pct),
                "ci_low": ("95% range of the change", None),
                "p_adjusted": ("p (adjusted)", present.p_value),
                "prob_b_better": (f"chance {b} is better", present.probability),
                "verdict": ("verdict", None),
            },
            element_id="decision-table",
            title="Results",
            csv=res,
            filename="experiment_results",
            row_attrs=lambda r: {
                "class": "metric-row",
                "data-metric": r["metric"],
                "data-rel-lift": repr(r["rel_lift"]),
                "data-p-adjusted": repr(r["p_adjusted"]),
            },
        )
        # the value columns depend on each row's kind: fill them in after the generic table
        text = table.data
        for r in res.iter_rows(named=True):
            kind = r.get("kind", "")
            lo, hi = r["ci_low"], r["ci_high"]
            for raw, shown in (
                (r["control"], self._value(kind, r["control"])),
                (r["treatment"], self._value(kind, r["treatment"])),
            ):
                text = text.replace(f">{raw}<", f">{shown}<", 1)
            text = text.replace(
                f">{lo}<", f">{self._value(kind, lo)} to {self._value(kind, hi)}<", 1
            )
        return present.Html(str(warn) + text)

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
        return present.figure(
            plots.lift_distribution(lifts),
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
        from customer_intel import experiments

        return widgets.power_calculator(self._observed_rate(), experiments.sample_size_per_group)
