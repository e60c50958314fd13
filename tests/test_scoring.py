"""Scoring: metrics, lift, deciles, calibration and profit by hand."""

from __future__ import annotations

import numpy as np
import pytest

from customer_intel import scoring

# 10 customers, scores already in descending order; 4 buyers (base rate 0.4)
Y = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0])
P = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1])


def test_metrics_by_hand():
    m = scoring.metrics(Y, P)
    # AUC = pairs (buyer, non-buyer) ranked right / all 4*6 pairs: the buyers at 0.9 and 0.8 beat
    # all 6 non-buyers, 0.6 beats 5, 0.3 beats 3 -> 20/24
    assert m["roc_auc"] == pytest.approx(20 / 24, rel=1e-12)
    # AP = mean precision at each buyer's rank (1, 2, 4, 7)
    assert m["average_precision"] == pytest.approx((1 + 1 + 3 / 4 + 4 / 7) / 4, rel=1e-12)
    squared = [0.01, 0.04, 0.49, 0.16, 0.25, 0.16, 0.49, 0.04, 0.0225, 0.01]
    assert m["brier"] == pytest.approx(sum(squared) / 10, rel=1e-12)
    likelihoods = [0.9, 0.8, 0.3, 0.6, 0.5, 0.6, 0.3, 0.8, 0.85, 0.9]  # p if bought else 1 - p
    assert m["log_loss"] == pytest.approx(-np.mean(np.log(likelihoods)), rel=1e-12)


def test_auc_counts_a_tie_as_half():
    # one buyer and one non-buyer share the score 0.5; the other buyer is on top
    m = scoring.metrics(np.array([1, 1, 0, 0]), np.array([0.9, 0.5, 0.5, 0.1]))
    assert m["roc_auc"] == pytest.approx((2 + 1.5) / 4)


def test_lift_at_k_by_hand():
    t = scoring.lift_at(Y, P, [0.1, 0.2, 0.5, 1.0])
    # top 1: 1 buyer -> precision 1, recall 1/4, lift 1/0.4 = 2.5
    # top 2: 2 -> 1.0, 0.5, 2.5; top 5: 3 -> 0.6, 0.75, 1.5; all: 4 -> 0.4, 1, 1
    assert t["positives"].to_list() == [1, 2, 3, 4]
    assert t["precision"].to_list() == pytest.approx([1.0, 1.0, 0.6, 0.4])
    assert t["recall"].to_list() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert t["lift"].to_list() == pytest.approx([2.5, 2.5, 1.5, 1.0])


def test_decile_table_by_hand():
    d = scoring.decile_table(Y, P[::-1][::-1])  # already sorted; 10 rows -> 1 per decile
    assert d["customers"].to_list() == [1] * 10
    assert d["positives"].to_list() == Y.tolist()
    assert d["lift"].to_list() == pytest.approx((Y / 0.4).tolist())
    assert d["cumulative_gain"].to_list() == pytest.approx(
        [0.25, 0.5, 0.5, 0.75, 0.75, 0.75, 1, 1, 1, 1]
    )
    shuffled = np.random.default_rng(1).permutation(10)
    d2 = scoring.decile_table(Y[shuffled], P[shuffled])
    assert d2["positives"].to_list() == Y.tolist()  # sorted by score, whatever the input order
    five = scoring.decile_table(Y, P, n_bins=5)
    assert five["positives"].to_list() == [2, 1, 0, 1, 0]
    assert five["rate"].to_list() == pytest.approx([1.0, 0.5, 0.0, 0.5, 0.0])


def test_gains_and_calibration():
    g = scoring.gains_curve(Y, P, points=11)
    assert g["gain"].to_list() == pytest.approx([0, 0.25, 0.5, 0.5, 0.75, 0.75, 0.75, 1, 1, 1, 1])
    c = scoring.calibration_table(Y, P, n_bins=5)
    assert c["mean_predicted"].to_list() == pytest.approx([0.85, 0.65, 0.45, 0.25, 0.125])
    assert c["observed_rate"].to_list() == pytest.approx([1.0, 0.5, 0.0, 0.5, 0.0])


def test_profit_curve_optimum_by_hand():
    # margin 10, cost 4: contact while 10 * p > 4, i.e. p > 0.4: the top 5 (0.9 .. 0.5)
    curve = scoring.profit_curve(P, contact_cost=4.0, margin=10.0)
    best = scoring.optimal_depth(curve)
    assert best["depth"] == 5
    assert best["expected_conversions"] == pytest.approx(0.9 + 0.8 + 0.7 + 0.6 + 0.5)
    assert best["expected_profit"] == pytest.approx(10 * 3.5 - 4 * 5)
    assert curve["expected_profit"][0] == 0
    never = scoring.optimal_depth(scoring.profit_curve(P, contact_cost=100.0, margin=10.0))
    assert never["depth"] == 0


def test_bounded_profit_curve_holds_the_exact_optimum_of_the_full_curve():
    rng = np.random.default_rng(5)
    p = rng.beta(0.6, 3.0, 250_000)
    p[rng.integers(0, len(p), 5_000)] = 0.05  # ties right at the break-even probability
    full = scoring.profit_curve(p, contact_cost=1.0, margin=20.0, max_points=None)
    assert full.height == len(p) + 1
    best = scoring.optimal_depth(full)
    for cap in (2000, 101, 3):
        curve = scoring.profit_curve(p, contact_cost=1.0, margin=20.0, max_points=cap)
        assert curve.height <= cap
        assert curve["depth"].is_sorted() and curve["depth"].n_unique() == curve.height
        assert curve["depth"][0] == 0 and curve["depth"][-1] == len(p)
        assert scoring.optimal_depth(curve) == best
        # every kept row is the full curve's row at that depth, to the bit
        assert curve.equals(full[curve["depth"].to_numpy()])
    assert scoring.profit_curve(p, contact_cost=1.0, margin=20.0).height <= scoring.PROFIT_POINTS
    with pytest.raises(ValueError, match="max_points"):
        scoring.profit_curve(p, contact_cost=1.0, margin=20.0, max_points=2)


def test_profit_optimum_at_the_ends():
    p = np.array([0.9, 0.8, 0.7])
    assert (
        scoring.optimal_depth(scoring.profit_curve(p, contact_cost=0.1, margin=1.0))["depth"] == 3
    )
    assert (
        scoring.optimal_depth(scoring.profit_curve(p, contact_cost=5.0, margin=1.0))["depth"] == 0
    )
