"""The interactive forms of the dashboards (ipywidgets).

Each validates what people type and answers in words, never with a traceback or a silently reused
value.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable
from typing import Any

import polars as pl

from customer_intel.dashboards import present

#: Words for the model's columns on the scoring form (others: the column name in words).
FIELD_LABELS = {
    "recency_days": "Days since the last purchase",
    "frequency": "Purchases (days with a purchase)",
    "monetary": "Money spent",
    "views": "Product views",
    "carts": "Add-to-cart clicks",
    "sessions": "Visits (sessions)",
    "tenure_days": "Days since the first visit",
}
_STYLE = {"description_width": "initial"}
_RESULT = f"ci-result {present.NO_MATH}"


def label(column: str) -> str:
    """A column's name in words."""
    return FIELD_LABELS.get(column, column.replace("_", " ").capitalize())


def parse_number(
    text: str, what: str, *, minimum: float | None = 0.0
) -> tuple[float | None, str | None]:
    """``text`` as a number, or None and a message saying what is wrong, in words."""
    t = (text or "").strip().replace(",", "")
    if not t:
        return None, f"{what}: please enter a number."
    try:
        v = float(t)
    except ValueError:
        return None, f"{what}: {text.strip()!r} is not a number."
    if not math.isfinite(v):
        return None, f"{what}: please enter a finite number."
    if minimum is not None and v < minimum:
        return None, f"{what} cannot be below {minimum:g} (you entered {v:g})."
    return v, None


def _box(children: list[Any]) -> Any:
    import ipywidgets as w

    return w.VBox(children, layout=w.Layout(max_width="100%"))


def number_inputs(fields: dict[str, tuple[str, float]]) -> dict[str, Any]:
    """One text box per field: key -> (label, starting value)."""
    import ipywidgets as w

    return {
        k: w.Text(
            value=f"{v:g}",
            description=lab,
            style=_STYLE,
            layout=w.Layout(width="100%", max_width="480px"),
        )
        for k, (lab, v) in fields.items()
    }


def score_form(model_path: Any, profiles: pl.DataFrame, currency: str) -> Any:
    """Enter a customer's values -> the group the saved segmentation model gives them.

    The model (and scikit-learn) loads on the first press, not with the page: the form's
    fields come from the cluster profiles table.
    """
    import ipywidgets as w

    skip = {"cluster", "cluster_name", "customers", "share"}
    cols = [c for c in profiles.columns if c not in skip and profiles.schema[c].is_numeric()]
    typical = profiles.select(cols).mean().row(0, named=True)
    highs = profiles.select(cols).max().row(0, named=True)
    money_cols = {"monetary"}
    fields = {
        c: (
            label(c) + (f" ({currency})" if c in money_cols else ""),
            round(float(typical[c] or 0), 1),
        )
        for c in cols
    }
    inputs = number_inputs(fields)
    button = w.Button(description="Score this customer", button_style="primary")
    out = w.HTML(
        value=f'<div id="score-result" class="{_RESULT}">Enter the values and press '
        "<b>Score this customer</b>.</div>"
    )
    model: list[Any] = []

    def score(_: Any = None) -> None:
        values, errors = {}, []
        for c, box in inputs.items():
            v, err = parse_number(box.value, fields[c][0])
            values[c] = v
            if err:
                errors.append(err)
        if errors:
            out.value = (
                f'<div id="score-result" class="{_RESULT}" data-error="1">'
                + "".join(f'<div class="ci-error">{html.escape(e)}</div>' for e in errors)
                + "<div>Nothing was scored.</div></div>"
            )
            return
        import joblib

        from customer_intel import clustering

        if not model:
            model.append(joblib.load(model_path))
        m = model[0]
        frame = pl.DataFrame({c: [values.get(c, float(typical[c] or 0))] for c in m.spec.numeric})
        pred = clustering.predict_segment(frame, m).row(0, named=True)
        row = profiles.filter(pl.col("cluster") == pred["cluster"]).row(0, named=True)
        far = [fields[c][0] for c in cols if highs[c] and values[c] > 10 * float(highs[c])]
        warn = (
            f'<div class="ci-card-note">Far above any customer group the model knows: '
            f"{html.escape(', '.join(far))}. Treat the answer with care.</div>"
            if far
            else ""
        )
        value = row.get(m.value_column)
        spent = (
            f", who spent {present.money(value, currency)} on average" if value is not None else ""
        )
        out.value = (
            f'<div id="score-result" class="{_RESULT}" data-cluster="{pred["cluster"]}" '
            f'data-segment="{html.escape(pred["cluster_name"])}">This customer belongs with the '
            f"<b>{html.escape(pred['cluster_name'])}</b> group: {present.pct(row['share'])} of "
            f"customers{spent}.{warn}</div>"
        )

    button.on_click(score)
    return _box([*inputs.values(), button, out])


def product_selector(
    recs: pl.DataFrame, labels: dict[str, str], category_of: dict[str, str], category: str | None
) -> Any:
    """Pick a product: what to suggest with it, in product labels, rules first."""
    import ipywidgets as w

    counts = (
        recs.filter(pl.col("kind") == "rule")
        .group_by("item")
        .len()
        .sort(["len", "item"], descending=[True, False])
    )
    items = counts["item"].to_list() or recs["item"].unique().sort().to_list()
    if category:
        items = [i for i in items if category_of.get(i) == category] or items
    items = items[:300]
    options = [(labels.get(i, f"product #{i}"), i) for i in items]
    dd = w.Dropdown(
        options=options,
        description="Product",
        style=_STYLE,
        layout=w.Layout(width="min(640px, 100%)"),
    )
    out = w.HTML()

    def why(kind: str, source: str) -> str:
        if kind == "rule":
            return rule_words(source)
        return "popular " + kind.replace("popular ", "in ").replace("in overall", "overall")

    def show(_: Any = None) -> None:
        rows = recs.filter(pl.col("item") == dd.value).sort("rank")
        rules = rows.filter(pl.col("kind") == "rule")
        shown = (
            rules
            if rules.height >= 3
            else pl.concat([rules, rows.filter(pl.col("kind") != "rule").head(3 - rules.height)])
        )
        body = "".join(
            f'<tr data-product="{html.escape(str(p))}"><td class="num">{i}</td>'
            f"<td>{html.escape(labels.get(str(p), f'product #{p}'))}</td>"
            f"<td>{html.escape(why(k, s))}</td></tr>"
            for i, (p, k, s) in enumerate(
                zip(shown["recommended"], shown["kind"], shown["source"], strict=True), 1
            )
        )
        csv = present.csv_link(
            shown.select("recommended", "kind", "score").with_columns(
                label=pl.col("recommended").replace_strict(labels, default=None)
            ),
            "cross-sell",
        )
        out.value = (
            f'<div class="ci-scroll {present.NO_MATH}"><table class="ci-table" id="product-recs" '
            f'data-item="{html.escape(str(dd.value))}" data-rules="{rules.height}">'
            f"<thead><tr><th>#</th><th>suggest</th><th>why</th></tr></thead>"
            f"<tbody>{body}</tbody></table></div><div class='ci-download'>{csv}</div>"
        )

    dd.observe(show, names="value")
    show()
    return _box([dd, out])


def rule_words(source: str) -> str:
    """An association rule's ``source`` (``rule: a -> b (lift 8.67, confidence 0.18)``) in words.

    >>> rule_words("rule: 1 -> 2 (lift 8.67, confidence 0.18)")
    "also bought by 18% of the chosen product's buyers (8.7 times the usual rate)"
    """
    found = dict(re.findall(r"(lift|confidence)\s*=?\s*([0-9.]+)", source))
    if "confidence" not in found:
        return "often bought together"
    share = present.pct(float(found["confidence"]), 0)
    words = f"also bought by {share} of the chosen product's buyers"
    if "lift" in found:
        words += f" ({float(found['lift']):.2g} times the usual rate)"
    return words


def power_calculator(
    baseline: float, sample_size: Callable[[float, float, float, float], float]
) -> Any:
    """Baseline rate, effect, significance and power -> units needed per group, in words."""
    import ipywidgets as w

    fields = {
        "baseline": ("Current rate (%)", round(baseline * 100, 2)),
        "mde": ("Smallest change worth finding (% of the rate)", 10.0),
        "alpha": ("False-alarm risk (%)", 5.0),
        "power": ("Chance to find it if real (%)", 80.0),
    }
    inputs = number_inputs(fields)
    out = w.HTML()

    def update(_: Any = None) -> None:
        v, errors = {}, []
        for k, box in inputs.items():
            x, err = parse_number(box.value, fields[k][0], minimum=None)
            v[k] = x
            if err:
                errors.append(err)
        if not errors:
            if not 0 < v["baseline"] < 100:
                errors.append("The current rate must be between 0% and 100%.")
            if not 0 < v["alpha"] < 50:
                errors.append("The false-alarm risk must be between 0% and 50% (5% is usual).")
            if not 50 <= v["power"] < 100:
                errors.append("The chance to find it must be between 50% and 100% (80% is usual).")
            if v["mde"] == 0:
                errors.append("The change worth finding cannot be 0%.")
            elif 0 < v["baseline"] < 100 and not 0 < v["baseline"] * (1 + v["mde"] / 100) < 100:
                errors.append(
                    f"A change of {v['mde']:g}% on a rate of {v['baseline']:g}% would take the "
                    "rate outside 0–100%; choose a smaller change."
                )
        attrs = " ".join(f'data-{k}="{(x / 100 if x is not None else "")!r}"' for k, x in v.items())
        if errors:
            out.value = (
                f'<div id="power-result" class="{_RESULT}" data-n="nan" {attrs}>'
                + "".join(f'<div class="ci-error">{html.escape(e)}</div>' for e in errors)
                + "</div>"
            )
            return
        n = sample_size(v["baseline"] / 100, v["mde"] / 100, v["alpha"] / 100, v["power"] / 100)
        out.value = (
            f'<div id="power-result" class="{_RESULT}" data-n="{n!r}" {attrs}>You need '
            f"<b>{math.ceil(n):,}</b> units in each group ({math.ceil(n) * 2:,} in all) to have "
            f"a {v['power']:g}% chance of detecting a change from {v['baseline']:g}% to "
            f"{v['baseline'] * (1 + v['mde'] / 100):.3g}%.</div>"
        )

    for box in inputs.values():
        box.continuous_update = False
        box.observe(update, names="value")
    update()
    return _box([*inputs.values(), out])


def campaign_editor(
    profit: pl.DataFrame, cost: float, margin: float, currency: str, draw: Callable[..., Any]
) -> Any:
    """Contact cost and margin -> the most profitable number of customers to contact.

    Recomputed recomputed from the model's expected conversions at each depth.
    """
    import ipywidgets as w

    fields = {
        "cost": (f"Cost of contacting one customer ({currency})", cost),
        "margin": (f"Margin per conversion ({currency})", margin),
    }
    inputs = number_inputs(fields)
    button = w.Button(description="Recompute", button_style="primary")
    out = w.HTML()
    chart = w.Output()

    def update(_: Any = None) -> None:
        v, errors = {}, []
        for k, box in inputs.items():
            x, err = parse_number(box.value, fields[k][0])
            v[k] = x
            if err:
                errors.append(err)
        if not errors and v["margin"] <= 0:
            errors.append("The margin per conversion must be above 0.")
        if errors:
            out.value = (
                f'<div id="targeting-edit" class="{_RESULT}">'
                + "".join(f'<div class="ci-error">{html.escape(e)}</div>' for e in errors)
                + "</div>"
            )
            return
        curve = best_depth(profit, v["cost"], v["margin"])
        best = curve.row(int(curve["profit"].arg_max()), named=True)
        out.value = (
            f'<div id="targeting-edit" class="{_RESULT}" data-depth="{best["depth"]}" '
            f'data-profit="{best["profit"]!r}">Contact the top <b>{best["depth"]:,}</b> customers '
            f"({present.pct(best['share'])}): expected profit "
            f"<b>{present.money(best['profit'], currency)}</b> from "
            f"{best['expected_conversions']:,.0f} expected conversions.</div>"
        )
        # replace the chart's output directly (no "with chart:" capture, which waits on the
        # kernel's output hooks and stalled a page under nbclient)
        chart.outputs = ()
        chart.append_display_data(draw(curve, best["depth"]))

    button.on_click(update)
    update()
    return _box([*inputs.values(), button, out, chart])


def best_depth(profit: pl.DataFrame, cost: float, margin: float) -> pl.DataFrame:
    """``propensity_profit`` with ``profit`` = expected conversions x margin - depth x cost."""
    return profit.with_columns(
        profit=pl.col("expected_conversions") * margin - pl.col("depth") * cost
    )
