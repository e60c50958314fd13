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


def _events(rows):
    """Purchase events (user_id, user_session, product_id, day offset from 2024-01-01) on DuckDB."""
    import ibis

    df = pl.DataFrame(
        rows, schema=["user_id", "user_session", "product_id", "day"], orient="row"
    ).with_columns(
        event_time=pl.datetime(2024, 1, 1, time_zone="UTC") + pl.duration(days=pl.col("day")),
        event_type=pl.lit("purchase"),
        category_code=pl.lit("c"),
    )
    return ibis.duckdb.connect().create_table("events", df.drop("day"))


def test_offline_evaluation_trains_before_the_cut_and_tests_after():
    from customer_intel.params.recommendations import RecommendationsParams

    rows = []
    for i in range(20):  # training: (a, b) bought together; p is the most popular item alone
        rows += [(100 + i, f"s{i}", "a", 1), (100 + i, f"s{i}", "b", 1)]
    for i in range(30):
        rows.append((200 + i, f"p{i}", "p", 2))
    rows += [(1, "u1", "a", 3), (1, "u1t", "b", 20)]  # the test customer: a before, b after
    rows += [(2, "u2t", "b", 20)]  # no training history: not a test user
    cfg = RecommendationsParams(min_support=2, test_days=7, eval_ks=[1, 2])
    metrics, split = recommend.offline_evaluation(_events(rows), cfg)
    assert split.test_users == 1 and split.train_baskets == 20 + 30 + 1
    assert split.train_rules == 2  # a -> b and b -> a
    at1 = {r["model"]: r for r in metrics.filter(pl.col("k") == 1).iter_rows(named=True)}
    assert at1["rules"]["hit_rate"] == 1.0  # rule a -> b
    assert at1["popularity"]["hit_rate"] == 0.0  # p is the most popular item
    assert "1 customers" in split.describe()
    assert "rules hit 100.0%" in recommend.describe_evaluation(metrics)


def test_offline_evaluation_errors_name_the_key():
    from customer_intel.params.recommendations import RecommendationsParams

    rows = [(1, "s", "a", 10)]
    with pytest.raises(ValueError, match="recommendations.test_days = 30: no purchase basket"):
        recommend.offline_evaluation(_events(rows), RecommendationsParams(test_days=30))
    with pytest.raises(ValueError, match="events table is empty"):
        recommend.offline_evaluation(
            _events(rows).filter(lambda t: t.user_id < 0), RecommendationsParams()
        )


def test_rank_by_must_be_lift_or_confidence():
    with pytest.raises(ValueError, match="recommendations.rank_by"):
        recommend.product_recommendations(RULES, POP, by="support")


def test_describe_sources_counts_rules_and_fallbacks():
    recs = recommend.product_recommendations(RULES, POP, top_n=3)
    text = recommend.describe_sources(recs, "item")
    # a, b have rules; c, d, e only fallbacks; a: 2 rules + 1 overall, b: 1 rule + 2 fallbacks
    assert text.startswith("5 products get recommendations; 2 (40%) have at least one from a rule")
    assert "of 15 rows, 3 come from rules" in text
