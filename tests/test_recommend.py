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


# -- reference implementations and scale properties ------------------------------------------


def _random_tables(seed: int, n_users: int = 60, n_items: int = 30):
    """Small random rules, popularity and purchase history, full of ties on purpose."""
    import datetime as dt

    import numpy as np

    rng = np.random.default_rng(seed)
    items = [f"i{j:02d}" for j in range(n_items)]
    cats = ["c0", "c1", "c2", "c3", None]
    item_cat = {it: cats[rng.integers(len(cats))] for it in items}
    baskets = rng.integers(1, 6, n_items)  # few distinct counts: many equal shares
    pop = recommend.popularity(
        pl.DataFrame(
            [
                (f"b{j}-{n}", it)
                for j, (it, c) in enumerate(zip(items, baskets, strict=True))
                for n in range(c)
            ],
            schema=["basket_id", "item"],
            orient="row",
        ),
        pl.DataFrame({"item": items, "category": [item_cat[i] for i in items]}),
    )
    rule_rows = []
    for _ in range(80):
        a, c = rng.choice(n_items, 2, replace=False)
        rule_rows.append(([items[a]], [items[c]], float(rng.choice([1.5, 2.0, 3.0])), 0.01))
    rule_rows.append(([items[0], items[1]], [items[2]], 9.0, 0.01))  # not a single-item rule
    rules_df = (
        pl.DataFrame(
            rule_rows, schema=["antecedents", "consequents", "lift", "support"], orient="row"
        )
        .unique(["antecedents", "consequents"], keep="first", maintain_order=True)
        .with_columns(confidence=pl.col("lift") / 10)
    )
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    hist = []
    for u in range(n_users):
        n = int(rng.choice([1, 2, 3, 15]))  # some heavy buyers exhaust the fallback pools
        for _ in range(n):
            it = items[rng.integers(n_items)]
            cat = item_cat[it] if rng.random() > 0.1 else None
            hist.append((u * 7 % 101, t0 + dt.timedelta(hours=int(rng.integers(4))), it, cat))
    history = pl.DataFrame(
        hist, schema=["user_id", "event_time", "item", "category"], orient="row"
    ).sample(fraction=1.0, shuffle=True, seed=seed)
    return rules_df, pop, history


def _fallback_list(pop, category, top_n):
    pool = top_n * recommend.POOL_FACTOR
    overall = pop["item"].head(pool).to_list()
    in_cat = (
        pop.filter(pl.col("category") == category)["item"].head(pool).to_list()
        if category is not None
        else []
    )
    return [(it, recommend.CATEGORY) for it in in_cat] + [
        (it, recommend.OVERALL) for it in overall if it not in in_cat
    ]


def _reference_user_recs(history, rules_df, pop, *, top_n, recent_items, exclude):
    """The documented semantics, customer by customer, in plain Python."""
    share = dict(zip(pop["item"], pop["share"], strict=True))
    single = [
        (a[0], c[0], lift)
        for a, c, lift in zip(
            rules_df["antecedents"], rules_df["consequents"], rules_df["lift"], strict=True
        )
        if len(a) == 1 and len(c) == 1
    ]
    rows = []
    for u in sorted(set(history["user_id"])):
        h = history.filter(pl.col("user_id") == u)
        last: dict[str, object] = {}
        for it, t in zip(h["item"], h["event_time"], strict=True):
            last[it] = max(last.get(it, t), t)
        recent = [it for it, _ in sorted(last.items(), key=lambda kv: (-kv[1].timestamp(), kv[0]))]
        recent = recent[:recent_items]
        best: dict[str, tuple[float, str]] = {}
        for a, c, lift in single:
            if a in recent and (c not in best or (-lift, a) < (-best[c][0], best[c][1])):
                best[c] = (lift, a)
        cands = sorted(
            ((-s, c, a) for c, (s, a) in best.items() if not (exclude and c in last)),
        )[:top_n]
        out = [(c, -s, recommend.RULE) for s, c, a in cands]
        counts: dict[str, int] = {}
        for cat in h["category"].drop_nulls():
            counts[cat] = counts.get(cat, 0) + 1
        fav = min(counts, key=lambda c: (-counts[c], c)) if counts else None
        taken = {c for c, _, _ in out} | (set(last) if exclude else set())
        for it, kind in _fallback_list(pop, fav, top_n):
            if len(out) == top_n:
                break
            if it not in taken:
                out.append((it, share[it], kind))
                taken.add(it)
        rows += [(u, r, it, s, k) for r, (it, s, k) in enumerate(out, 1)]
    return pl.DataFrame(
        rows, schema=["user_id", "rank", "recommended", "score", "kind"], orient="row"
    ).with_columns(pl.col("rank").cast(pl.Int32))


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("exclude", [True, False])
def test_user_recommendations_equal_a_plain_reference(seed, exclude):
    """The windowed fallback (only top_n + bought entries per customer) changes nothing."""
    rules_df, pop, history = _random_tables(seed)
    got = recommend.user_recommendations(
        history, rules_df, pop, top_n=4, recent_items=2, exclude_purchased=exclude
    )
    want = _reference_user_recs(history, rules_df, pop, top_n=4, recent_items=2, exclude=exclude)
    assert (
        got.select(want.columns)
        .with_columns(pl.col("user_id").cast(pl.Int64))
        .equals(want.with_columns(pl.col("user_id").cast(pl.Int64)))
    )
    rule_rows = got.filter(pl.col("kind") == recommend.RULE)
    assert all(
        s.startswith("rule: ") and f" -> {r} (lift " in s
        for s, r in zip(rule_rows["source"], rule_rows["recommended"], strict=True)
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_product_recommendations_equal_a_plain_reference(seed):
    rules_df, pop, _ = _random_tables(seed)
    top_n = 4
    got = recommend.product_recommendations(rules_df, pop, top_n=top_n)
    share = dict(zip(pop["item"], pop["share"], strict=True))
    cat = dict(zip(pop["item"], pop["category"], strict=True))
    rows = []
    for it in sorted(pop["item"]):
        rs = sorted(
            (-lift, c[0])
            for a, c, lift in zip(
                rules_df["antecedents"].to_list(),
                rules_df["consequents"].to_list(),
                rules_df["lift"],
                strict=True,
            )
            if a == [it] and len(c) == 1
        )[:top_n]
        out = [(c, -s, recommend.RULE) for s, c in rs]
        taken = {c for c, _, _ in out} | {it}
        for other, kind in _fallback_list(pop, cat[it], top_n):
            if len(out) == top_n:
                break
            if other not in taken:
                out.append((other, share[other], kind))
                taken.add(other)
        rows += [(it, r, o, s, k) for r, (o, s, k) in enumerate(out, 1)]
    want = pl.DataFrame(
        rows, schema=["item", "rank", "recommended", "score", "kind"], orient="row"
    ).with_columns(pl.col("rank").cast(pl.Int32))
    assert got.select(want.columns).equals(want)


def _history_on_engine(history):
    import ibis

    return ibis.duckdb.connect().create_table("history", history)


@pytest.mark.parametrize("chunk_rows", [1, 7, 50, 10_000])
def test_chunked_user_recommendations_equal_one_call_row_for_row(tmp_path, chunk_rows):
    from customer_intel import runs

    rules_df, pop, history = _random_tables(4)
    one = recommend.user_recommendations(history, rules_df, pop, top_n=4, recent_items=2)
    parts = list(
        recommend.user_recommendation_chunks(
            _history_on_engine(history),
            rules_df,
            pop,
            top_n=4,
            recent_items=2,
            chunk_rows=chunk_rows,
        )
    )
    assert len(parts) >= (2 if chunk_rows < 50 else 1)
    assert pl.concat(parts).equals(one)
    run = runs.StageRun(tmp_path, "recommendations")
    n = run.write_table_parts(iter(parts), "user_recommendations")
    assert n == one.height and run.read_table("user_recommendations").equals(one)
    counts = recommend.source_counts(run.scan_table("user_recommendations"), "user_id")
    assert counts.describe() == recommend.describe_sources(one, "user_id")
    assert counts.rows == one.height


def test_chunks_of_an_empty_history_yield_one_empty_frame():
    _, pop, history = _random_tables(1)
    parts = list(
        recommend.user_recommendation_chunks(
            _history_on_engine(history.head(0)), RULES, pop, top_n=3
        )
    )
    assert len(parts) == 1 and parts[0].height == 0
    assert parts[0].columns == ["user_id", "rank", "recommended", "score", "kind", "source"]
    assert recommend.describe_sources(parts[0], "user_id") == "No customers to recommend for."


def test_personalization_is_exact_with_short_lists():
    import itertools

    import numpy as np

    rng = np.random.default_rng(7)
    rows = []
    for u in range(30):
        n = int(rng.integers(0, 6))  # some users have short lists, some none
        for r, it in enumerate(rng.choice(10, n, replace=False), 1):
            rows.append((u, r, str(it)))
    recs = pl.DataFrame(rows, schema=["user_id", "rank", "recommended"], orient="row")
    truth = pl.DataFrame({"user_id": list(range(30)), "item": ["0"] * 30})
    share = pl.DataFrame({"item": [str(i) for i in range(10)], "share": [0.1] * 10})
    for k in (3, 5):
        got = recommend.evaluate(recs, truth, ks=[k], catalog_size=10, item_share=share)
        lists = {
            u: set(g.filter(pl.col("rank") <= k)["recommended"])
            for (u,), g in recs.group_by("user_id")
        }
        overlaps = [len(lists[a] & lists[b]) / k for a, b in itertools.combinations(lists, 2)]
        assert got["personalization"][0] == pytest.approx(
            1 - sum(overlaps) / len(overlaps), rel=1e-12
        )


def test_sample_users_is_seeded_sorted_and_order_free():
    ids = pl.Series("user_id", [5, 3, 9, 1, 7, 3, 2])
    a = recommend.sample_users(ids, 3, seed=1)
    assert a.to_list() == sorted(a.to_list()) and set(a) <= set(ids) and a.len() == 3
    assert recommend.sample_users(ids.reverse(), 3, seed=1).equals(a)
    assert recommend.sample_users(ids, 10, seed=1).to_list() == [1, 2, 3, 5, 7, 9]


def _plain_offline_evaluation(events, cfg):
    """The evaluation done in memory on every test customer, as before sampling existed."""
    import datetime as dt

    import ibis

    from customer_intel import rules

    split = events.event_time.max().to_pyarrow().as_py() - dt.timedelta(days=cfg.test_days)
    train = events.filter(events.event_time < ibis.literal(split))
    bi, rep = rules.baskets(train)
    train_rules = rules.association_rules(
        rules.frequent_itemsets(bi, min_support=cfg.min_support, n_baskets=rep.baskets),
        min_confidence=cfg.min_confidence,
        min_lift=cfg.min_lift,
    )
    pop = recommend.popularity(bi.to_polars(), rules.catalog(train))
    hist = rules.purchase_history(events, end=split)
    truth = rules.purchase_history(events, start=split).join(
        hist.select("user_id").unique(), on="user_id", how="semi"
    )
    truth = truth.join(hist.select("user_id", "item").unique(), on=["user_id", "item"], how="anti")
    users = truth.select("user_id").unique()
    k = max(cfg.eval_ks)
    recs = {
        "rules": recommend.user_recommendations(
            hist.join(users, on="user_id", how="semi"), train_rules, pop, top_n=k
        ),
        "popularity": recommend.popularity_baseline(users, pop, hist, top_n=k),
    }
    return pl.concat(
        recommend.evaluate(r, truth, ks=cfg.eval_ks, catalog_size=pop.height, item_share=pop)
        .with_columns(model=pl.lit(name))
        .select("model", pl.exclude("model"))
        for name, r in recs.items()
    )


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory):
    from conftest import ingested_sample

    return ingested_sample(tmp_path_factory.mktemp("recs"), 60_000, seed=5)


def test_sampled_evaluation_equals_the_full_one_when_the_sample_covers_everyone(small_sample):
    from customer_intel.params.recommendations import RecommendationsParams

    events, _ = small_sample
    cfg = RecommendationsParams(min_support=2)
    full = _plain_offline_evaluation(events, cfg)
    n_test = int(full["users"][0])
    assert n_test > 20
    for eval_users in (n_test, n_test + 1, 10**6):
        got, split = recommend.offline_evaluation(
            events, cfg.model_copy(update={"eval_users": eval_users}), seed=3
        )
        assert got.equals(full), eval_users
        assert not split.sampled and "sample" not in split.describe()
    got, split = recommend.offline_evaluation(
        events, cfg.model_copy(update={"eval_users": n_test // 2}), seed=3
    )
    assert split.sampled and split.test_users == n_test
    assert (got["users"] == n_test // 2).all()
    assert f"a random sample of {n_test // 2:,} of them (eval_users, seed 3)" in split.describe()
    assert "seeded random sample" in recommend.describe_evaluation(got, split)
    again, _ = recommend.offline_evaluation(
        events, cfg.model_copy(update={"eval_users": n_test // 2}), seed=3
    )
    assert again.equals(got)


def _stage(events, out_dir):
    """The library calls of notebooks/05_recommendations.ipynb, writing into ``out_dir``."""
    from customer_intel import plots, rules, runs
    from customer_intel.params.recommendations import RecommendationsParams

    cfg = RecommendationsParams(min_support=2, eval_users=40)
    run = runs.StageRun(out_dir, "recommendations")
    bi, rep = rules.baskets(events)
    itemsets = rules.frequent_itemsets(bi, min_support=cfg.min_support, n_baskets=rep.baskets)
    rules_table = rules.association_rules(itemsets, min_confidence=cfg.min_confidence)
    run.write_table(itemsets, "frequent_itemsets")
    run.write_table(rules_table, "association_rules")
    run.write_figure(plots.rules_scatter(rules_table, top=20), "rules_scatter")
    pop = recommend.popularity(bi, rules.catalog(events))
    run.write_table(recommend.product_recommendations(rules_table, pop), "product_recommendations")
    run.write_table_parts(
        recommend.user_recommendation_chunks(
            rules.purchases(events), rules_table, pop, chunk_rows=500
        ),
        "user_recommendations",
    )
    metrics, _ = recommend.offline_evaluation(events, cfg, seed=11)
    run.write_table(metrics, "recommendation_metrics")
    return run


def test_same_data_gives_byte_identical_tables_whatever_the_row_order(small_sample, tmp_path):
    """Issue 13: every sort has a total order, so two runs write the same bytes.

    The second run reads the events in another row order (as an engine may return them).
    """
    import ibis

    events, _ = small_sample
    shuffled = ibis.duckdb.connect().create_table(
        "events", events.to_polars().sample(fraction=1.0, shuffle=True, seed=1)
    )
    a, b = _stage(events, tmp_path / "a"), _stage(shuffled, tmp_path / "b")
    names = [
        "frequent_itemsets",
        "association_rules",
        "product_recommendations",
        "user_recommendations",
        "recommendation_metrics",
    ]
    for name in names:
        assert a.table_path(name).read_bytes() == b.table_path(name).read_bytes(), name
    assert (a.run_dir / "figures" / "rules_scatter.json").read_bytes() == (
        b.run_dir / "figures" / "rules_scatter.json"
    ).read_bytes()
    ties = a.read_table("user_recommendations").group_by("user_id", "score").len()
    assert (ties["len"] > 1).any(), "the sample should have tied scores to break"


def test_rules_scatter_has_bounded_points_and_a_total_order():
    from customer_intel import plots

    rules_df = pl.DataFrame(
        {
            "antecedents": [[f"a{i:04d}"] for i in range(1000)],
            "consequents": [["z"]] * 1000,
            "support": [0.01] * 1000,
            "confidence": [0.5] * 1000,
            "lift": [2.0] * 1000,  # all tied: the order falls back to the rule itself
        }
    )
    fig = plots.rules_scatter(rules_df.reverse(), top=50)
    assert len(fig.data[0].x) == 50
    assert fig.data[0].text[0] == "a0000 -> z" and fig.data[0].text[-1] == "a0049 -> z"
