"""Evaluating scores: metrics, lift, deciles, gains, calibration and profit-optimal targeting.

All functions take the true labels ``y`` (0/1) and scores ``p`` (higher = more likely) as
NumPy arrays, and return numbers or Polars frames. Ranking ties are broken by the order of the
input (a stable sort on ``-p``), so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC-AUC, average precision, Brier score and log loss (scikit-learn's definitions)."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "average_precision": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, clipped)),
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
    }


def _order(p: np.ndarray) -> np.ndarray:
    return np.argsort(-np.asarray(p, dtype=float), kind="stable")


def lift_at(y: np.ndarray, p: np.ndarray, fractions: Sequence[float]) -> pl.DataFrame:
    """Precision, recall and lift among the top ``fraction`` of customers by score.

    The top group is the first ``ceil(fraction * n)`` customers by descending score.
    ``lift = precision / base rate``.
    """
    y = np.asarray(y).astype(int)[_order(p)]
    n, positives = len(y), y.sum()
    base = positives / n
    rows = []
    for f in fractions:
        k = int(np.ceil(f * n))
        hits = int(y[:k].sum())
        precision = hits / k if k else 0.0
        rows.append(
            {
                "top_fraction": float(f),
                "customers": k,
                "positives": hits,
                "precision": precision,
                "recall": hits / positives if positives else 0.0,
                "lift": precision / base if base else float("nan"),
            }
        )
    return pl.DataFrame(rows)


def decile_table(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> pl.DataFrame:
    """Customers sorted by score, cut into ``n_bins`` groups of (nearly) equal size.

    Decile 1 holds the highest scores. Columns: decile, customers, positives, rate,
    mean_score, lift (rate / overall rate), cumulative_positives, cumulative_gain (share of
    all positives captured up to this decile), cumulative_lift.
    """
    order = _order(p)
    y = np.asarray(y).astype(int)[order]
    s = np.asarray(p, dtype=float)[order]
    n = len(y)
    decile = (np.arange(n) * n_bins // n) + 1
    df = pl.DataFrame({"decile": decile, "y": y, "p": s})
    base = y.mean() if n else 0.0
    out = (
        df.group_by("decile", maintain_order=True)
        .agg(customers=pl.len(), positives=pl.col("y").sum(), mean_score=pl.col("p").mean())
        .with_columns(rate=pl.col("positives") / pl.col("customers"))
        .with_columns(
            lift=pl.col("rate") / base,
            cumulative_positives=pl.col("positives").cum_sum(),
            cumulative_customers=pl.col("customers").cum_sum(),
        )
        .with_columns(
            cumulative_gain=pl.col("cumulative_positives") / max(int(y.sum()), 1),
            cumulative_lift=(pl.col("cumulative_positives") / pl.col("cumulative_customers"))
            / base,
        )
    )
    return out.select(
        "decile",
        "customers",
        "positives",
        "rate",
        "mean_score",
        "lift",
        "cumulative_positives",
        "cumulative_gain",
        "cumulative_lift",
    )


def gains_curve(y: np.ndarray, p: np.ndarray, points: int = 101) -> pl.DataFrame:
    """Share of customers targeted (by descending score) vs share of positives captured."""
    y = np.asarray(y).astype(int)[_order(p)]
    n = len(y)
    captured = np.r_[0, np.cumsum(y)] / max(y.sum(), 1)
    frac = np.linspace(0, 1, points)
    idx = np.round(frac * n).astype(int)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where(frac > 0, captured[idx] / frac, np.nan)
    return pl.DataFrame({"targeted": frac, "gain": captured[idx], "lift": lift})


def calibration_table(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> pl.DataFrame:
    """Mean predicted probability vs observed rate per score decile (1 = highest scores)."""
    d = decile_table(y, p, n_bins)
    return d.select(
        "decile", "customers", mean_predicted=pl.col("mean_score"), observed_rate=pl.col("rate")
    ).with_columns(
        relative_error=(pl.col("mean_predicted") - pl.col("observed_rate")).abs()
        / pl.col("observed_rate").clip(1e-12)
    )


#: Most rows of a profit curve: enough for a smooth line, small at any number of customers.
PROFIT_POINTS = 2000


def profit_curve(
    p: np.ndarray,
    *,
    contact_cost: float,
    margin: float,
    max_points: int | None = PROFIT_POINTS,
) -> pl.DataFrame:
    """Expected profit of contacting the top ``depth`` customers by probability.

    ``expected_profit(depth) = margin * sum(p of the contacted) - contact_cost * depth``.
    The profit is computed at every depth 0..n (one cumulative sum over the sorted
    probabilities); the table keeps at most ``max_points`` rows: evenly spaced depths including
    0 and n, plus the exact optimum (the smallest depth with the highest profit), so
    :func:`optimal_depth` of the table is the optimum over all depths. ``None`` keeps every
    depth. Probabilities must be calibrated for the profit to mean money.
    """
    s = np.sort(np.asarray(p, dtype=float))[::-1]
    n = len(s)
    conv = np.empty(n + 1)
    conv[0] = 0.0
    np.cumsum(s, out=conv[1:])
    del s
    profit = margin * conv
    profit -= contact_cost * np.arange(n + 1, dtype=float)
    if max_points is None or n + 1 <= max_points:
        depth = np.arange(n + 1)
    else:
        if max_points < 3:
            raise ValueError(
                f"max_points: expected at least 3 (the ends and the optimum), got {max_points}"
            )
        best = int(np.argmax(profit))  # the first maximum: the smallest best depth
        even = np.round(np.linspace(0, n, max_points - 1)).astype(np.int64)
        depth = np.unique(np.r_[even, best])
    return pl.DataFrame(
        {
            "depth": depth,
            "share": depth / max(n, 1),
            "expected_conversions": conv[depth],
            "expected_profit": profit[depth],
        }
    )


def optimal_depth(curve: pl.DataFrame) -> dict[str, float]:
    """The depth with the highest expected profit (the smallest such depth on ties)."""
    best = curve.row(int(curve["expected_profit"].arg_max()), named=True)
    return {
        "depth": int(best["depth"]),
        "share": float(best["share"]),
        "expected_conversions": float(best["expected_conversions"]),
        "expected_profit": float(best["expected_profit"]),
    }
