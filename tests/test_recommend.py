"""Recommendations and their evaluation metrics on hand-built examples."""

from __future__ import annotations

import math

import polars as pl
import pytest

from customer_intel import recommend

RULES = pl.DataFrame(
    {
        "antecedents": [["a"], ["a"], ["b"], ["a", "b"]],
        "consequents": [["b"], ["c"], ["a"], ["c"]],
        "support": [0.3, 0.1, 0.3, 0.05],
        "confidence": [0.6, 0.2, 0.5, 0.4],
        "lift": [2.0, 3.0, 2.0, 4.0],
    }
)
POP = pl.DataFrame(
    {
        "item": ["b", "a", "d", "c", "e"],
        "baskets": [50, 40, 30, 20, 10],
        "share": [50 / 150, 40 / 150, 30 / 150, 20 / 150, 10 / 150],
        "category": ["x", "x", "y", "x", "y"],
    }
)


def test_product_recommendations_rank_rules_then_fallbacks():
    recs = recommend.product_recommendations(RULES, POP, top_n=3)
    a = recs.filter(pl.col("item") == "a")
    assert a["recommended"].to_list() == ["c", "b", "d"]  # by lift, then popular overall
    assert a["kind"].to_list() == ["rule", "rule", "popular overall"]
    assert a["source"][0] == "rule: a -> c (lift 3.0, confidence 0.2)"
    d = recs.filter(pl.col("item") == "d")  # no rules: popular in its category y, then overall
    assert d["recommended"].to_list() == ["e", "b", "a"]
    assert d["kind"].to_list() == ["popular in category", "popular overall", "popular overall"]
    by_conf = recommend.product_recommendations(RULES, POP, top_n=1, by="confidence")
    assert by_conf.filter(pl.col("item") == "a")["recommended"].to_list() == ["b"]


def test_user_recommendations_exclude_bought_and_explain():
    history = pl.DataFrame(
        {
            "user_id": [1, 1, 2],
            "item": ["a", "b", "e"],
            "event_time": [1, 2, 3],
            "category": ["x", "x", "y"],
        }
    )
    recs = recommend.user_recommendations(history, RULES, POP, top_n=2)
    u1 = recs.filter(pl.col("user_id") == 1)
    assert u1["recommended"].to_list() == ["c", "d"]  # b excluded (bought); c by rule a -> c
    assert u1["kind"].to_list() == ["rule", "popular overall"]
    u2 = recs.filter(pl.col("user_id") == 2)
    assert u2["recommended"].to_list() == ["d", "b"] and u2["kind"][0] == "popular in category"


def test_evaluation_metrics_by_hand():
    recs = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 2],
            "rank": [1, 2, 3, 1, 2, 3],
            "recommended": ["a", "b", "c", "a", "d", "e"],
        }
    )
    truth = pl.DataFrame({"user_id": [1, 1, 2, 3], "item": ["b", "z", "x", "a"]})
    share = pl.DataFrame(
        {"item": ["a", "b", "c", "d", "e"], "share": [0.5, 0.25, 0.125, 0.0625, 0.0625]}
    )
    m = recommend.evaluate(recs, truth, ks=[1, 3], catalog_size=10, item_share=share)
    k1, k3 = m.row(0, named=True), m.row(1, named=True)
    # users 1, 2, 3 (3 has no list: a miss). k=3: user 1 hits b at rank 2.
    assert k3["users"] == 3
    assert k3["hit_rate"] == pytest.approx(1 / 3)
    assert k3["precision"] == pytest.approx((1 / 3 + 0 + 0) / 3)
    assert k3["recall"] == pytest.approx((1 / 2 + 0 + 0) / 3)
    ndcg_u1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))  # one hit at rank 2; 2 relevant items
    assert k3["ndcg"] == pytest.approx(ndcg_u1 / 3)
    assert k3["coverage"] == pytest.approx(5 / 10)
    # personalization: lists {a,b,c} and {a,d,e} share 1 of 3 items -> 1 - 1/3
    assert k3["personalization"] == pytest.approx(1 - 1 / 3)
    assert k3["novelty"] == pytest.approx(
        sum(-math.log2(s) for s in [0.5, 0.25, 0.125, 0.5, 0.0625, 0.0625]) / 6
    )
    assert k1["hit_rate"] == 0 and k1["personalization"] == pytest.approx(0.0)


def test_personalization_matches_the_all_pairs_definition():
    import itertools

    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for u in range(40):
        for r, it in enumerate(rng.choice(12, 4, replace=False), 1):
            rows.append((u, r, str(it)))
    recs = pl.DataFrame(rows, schema=["user_id", "rank", "recommended"], orient="row")
    truth = pl.DataFrame({"user_id": list(range(40)), "item": ["0"] * 40})
    share = pl.DataFrame({"item": [str(i) for i in range(12)], "share": [1 / 12] * 12})
    got = recommend.evaluate(recs, truth, ks=[4], catalog_size=12, item_share=share)[
        "personalization"
    ][0]
    lists = {u: set(g["recommended"]) for (u,), g in recs.group_by("user_id")}
    overlaps = [len(lists[a] & lists[b]) / 4 for a, b in itertools.combinations(lists, 2)]
    assert got == pytest.approx(1 - sum(overlaps) / len(overlaps), rel=1e-12)


def test_popularity_baseline_excludes_bought():
    users = pl.DataFrame({"user_id": [1]})
    hist = pl.DataFrame({"user_id": [1], "item": ["b"]})
    base = recommend.popularity_baseline(users, POP, hist, top_n=2)
    assert base["recommended"].to_list() == ["a", "d"]
