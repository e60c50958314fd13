"""Recommendations from association rules, with cold-start fallbacks, and their offline evaluation.

- :func:`product_recommendations`: for each product, its top-N partners by lift (or confidence)
  from single-item rules; products without rules get the most popular items of their category,
  then overall. Every row says which rule or fallback produced it.
- :func:`user_recommendations`: for each customer, the consequents of rules whose antecedent is
  among their most recent items, best first, excluding what they already bought (params); then
  the same fallbacks.
- :func:`evaluate`: hit rate, precision, recall and NDCG at k against what customers bought in a
  later test window, catalog coverage, novelty (mean self-information of recommended items,
  ``-log2`` of their share of purchases) and personalization (1 - mean pairwise overlap of users'
  lists, computed from item counts in O(users x k), never with an all-pairs matrix).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import ibis
import numpy as np
import polars as pl

from customer_intel import rules as _rules
from customer_intel.params.recommendations import RecommendationsParams

RULE = "rule"
CATEGORY = "popular in category"
OVERALL = "popular overall"


def popularity(basket_items: pl.DataFrame, catalog: pl.DataFrame | None = None) -> pl.DataFrame:
    """(basket_id, item) pairs in, one row per item out: item, baskets, share (, category).

    ``share`` is the item's baskets over all basket-item pairs (it is also the probability used
    for novelty). ``catalog`` (item, category) adds each item's category. Sorted by baskets
    descending, then item.
    """
    pop = basket_items.group_by("item").agg(baskets=pl.len())
    total = max(int(pop["baskets"].sum()), 1)
    pop = pop.with_columns(share=pl.col("baskets") / total)
    if catalog is not None:
        pop = pop.join(catalog.select("item", "category").unique("item"), on="item", how="left")
    return pop.sort(["baskets", "item"], descending=[True, False])


def _single_rules(rules: pl.DataFrame, by: str, min_support: float) -> pl.DataFrame:
    single = rules.filter(
        (pl.col("antecedents").list.len() == 1)
        & (pl.col("consequents").list.len() == 1)
        & (pl.col("support") >= min_support)
    )
    return single.select(
        item=pl.col("antecedents").list.first(),
        recommended=pl.col("consequents").list.first(),
        score=pl.col(by),
        lift=pl.col("lift"),
        confidence=pl.col("confidence"),
        support=pl.col("support"),
    )


def product_recommendations(
    rules: pl.DataFrame,
    pop: pl.DataFrame,
    *,
    top_n: int = 10,
    by: str = "lift",
    min_support: float = 0.0,
) -> pl.DataFrame:
    """Rules and popularity in, up to ``top_n`` rows per item out, best first.

    Partners come from single-item rules A -> C with support >= ``min_support``, ranked by
    ``by`` ("lift" or "confidence"); items short of ``top_n`` are filled with the most popular
    items of their category, then overall (never the item itself).

    Returns
    -------
    pl.DataFrame
        item, rank (1..top_n), recommended, score (the rule metric, or the item's popularity
        share for fallbacks), kind ("rule", "popular in category", "popular overall"), source
        (the rule with its lift and confidence, or the fallback).

    Raises
    ------
    ValueError
        If ``by`` is not "lift" or "confidence" (names ``recommendations.rank_by``).
    """
    if by not in ("lift", "confidence"):
        raise ValueError(f"recommendations.rank_by: expected lift or confidence, got {by!r}")
    r = _single_rules(rules, by, min_support).with_columns(
        source=pl.format(
            "rule: {} -> {} (lift {}, confidence {})",
            "item",
            "recommended",
            pl.col("lift").round(2),
            pl.col("confidence").round(2),
        )
    )
    from_rules = (
        r.sort(["item", "score", "recommended"], descending=[False, True, False])
        .group_by("item", maintain_order=True)
        .head(top_n)
        .select("item", "recommended", "score", "source")
    )
    fallback = _fallback(pop.select("item", "category"), pop, from_rules, top_n, key="item")
    out = pl.concat([from_rules.with_columns(kind=pl.lit(RULE)), fallback], how="diagonal_relaxed")
    return _rank(out, "item", top_n)


def _rank(df: pl.DataFrame, key: str, top_n: int) -> pl.DataFrame:
    order = {RULE: 0, CATEGORY: 1, OVERALL: 2}
    return (
        df.with_columns(_o=pl.col("kind").replace_strict(order, return_dtype=pl.Int8))
        .sort([key, "_o", "score"], descending=[False, False, True], nulls_last=True)
        .unique([key, "recommended"], keep="first", maintain_order=True)
        .group_by(key, maintain_order=True)
        .head(top_n)
        .with_columns(rank=pl.int_range(1, pl.len() + 1).over(key).cast(pl.Int32))
        .select(key, "rank", "recommended", "score", "kind", "source")
    )


def _fallback(
    targets: pl.DataFrame,
    pop: pl.DataFrame,
    have: pl.DataFrame,
    top_n: int,
    *,
    key: str,
    exclude: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Most popular items of the target's category, then overall, for targets short of top_n.

    ``targets`` has ``key`` and ``category``; ``exclude`` (key, recommended) lists items not to
    recommend (the item itself, what a customer bought).
    """
    counts = have.group_by(key).agg(n=pl.len())
    short = targets.join(counts, on=key, how="left").filter(pl.col("n").fill_null(0) < top_n)
    if short.is_empty():
        return pl.DataFrame(
            schema={
                key: targets.schema[key],
                "recommended": pl.String,
                "score": pl.Float64,
                "source": pl.String,
                "kind": pl.String,
            }
        )
    pool = top_n * 3
    by_cat = (
        pop.filter(pl.col("category").is_not_null())
        .group_by("category", maintain_order=True)
        .head(pool)
        .select("category", recommended="item", score="share")
    )
    cat = short.join(by_cat, on="category", how="inner").with_columns(
        kind=pl.lit(CATEGORY), source=pl.format("fallback: popular in category {}", "category")
    )
    overall = short.join(
        pop.head(pool).select(recommended="item", score="share"), how="cross"
    ).with_columns(kind=pl.lit(OVERALL), source=pl.lit("fallback: popular overall"))
    fb = pl.concat([cat, overall], how="diagonal_relaxed").select(
        key, "recommended", "score", "source", "kind"
    )
    if key == "item":
        fb = fb.filter(pl.col("item") != pl.col("recommended"))
    if exclude is not None:
        fb = fb.join(exclude, on=[key, "recommended"], how="anti")
    return fb


def user_recommendations(
    history: pl.DataFrame,
    rules: pl.DataFrame,
    pop: pl.DataFrame,
    *,
    top_n: int = 10,
    by: str = "lift",
    recent_items: int = 5,
    exclude_purchased: bool = True,
    min_support: float = 0.0,
) -> pl.DataFrame:
    """Purchase history, rules and popularity in, up to ``top_n`` rows per customer out.

    Candidates are consequents of single-item rules whose antecedent is among the customer's
    ``recent_items`` most recently bought distinct items, ranked by ``by``; what the customer
    already bought is dropped when ``exclude_purchased``. Customers short of ``top_n`` get the
    most popular items of their most-bought category, then overall.

    Parameters
    ----------
    history : pl.DataFrame
        One row per purchase: user_id, item, event_time, category (see
        :func:`customer_intel.rules.purchase_history`).
    rules, pop : pl.DataFrame
        Association rules and item popularity (:func:`popularity` with a catalog).

    Returns
    -------
    pl.DataFrame
        user_id, rank, recommended, score, kind, source (as in :func:`product_recommendations`).
    """
    recent = (
        history.sort("event_time", descending=True)
        .unique(["user_id", "item"], keep="first", maintain_order=True)
        .group_by("user_id", maintain_order=True)
        .head(recent_items)
    )
    r = _single_rules(rules, by, min_support)
    cand = (
        recent.select("user_id", "item")
        .join(r, on="item")
        .with_columns(
            source=pl.format(
                "rule: {} -> {} (lift {})", "item", "recommended", pl.col("lift").round(2)
            )
        )
    )
    cand = cand.sort(["user_id", "score"], descending=[False, True]).unique(
        ["user_id", "recommended"], keep="first", maintain_order=True
    )
    bought = history.select("user_id", recommended="item").unique()
    if exclude_purchased:
        cand = cand.join(bought, on=["user_id", "recommended"], how="anti")
    from_rules = (
        cand.group_by("user_id", maintain_order=True)
        .head(top_n)
        .select("user_id", "recommended", "score", "source")
        .with_columns(kind=pl.lit(RULE))
    )
    fav = (
        history.filter(pl.col("category").is_not_null())
        .group_by("user_id", "category")
        .len()
        .sort(["user_id", "len", "category"], descending=[False, True, False])
        .unique("user_id", keep="first", maintain_order=True)
        .select("user_id", "category")
    )
    targets = history.select("user_id").unique().join(fav, on="user_id", how="left")
    fallback = _fallback(
        targets,
        pop,
        from_rules,
        top_n,
        key="user_id",
        exclude=bought if exclude_purchased else None,
    )
    return _rank(pl.concat([from_rules, fallback], how="diagonal_relaxed"), "user_id", top_n)


def popularity_baseline(
    users: pl.DataFrame,
    pop: pl.DataFrame,
    history: pl.DataFrame,
    *,
    top_n: int,
    exclude_purchased: bool = True,
) -> pl.DataFrame:
    """Users in, the ``top_n`` most popular items per user out: user_id, recommended, score, rank.

    With ``exclude_purchased``, items in the user's ``history`` (user_id, item) are skipped.
    """
    cands = (
        users.select("user_id")
        .unique()
        .join(pop.head(top_n * 3).select(recommended="item", score="share"), how="cross")
    )
    if exclude_purchased:
        cands = cands.join(
            history.select("user_id", recommended="item").unique(),
            on=["user_id", "recommended"],
            how="anti",
        )
    return (
        cands.sort(["user_id", "score"], descending=[False, True])
        .group_by("user_id", maintain_order=True)
        .head(top_n)
        .with_columns(rank=pl.int_range(1, pl.len() + 1).over("user_id").cast(pl.Int32))
    )


def evaluate(
    recs: pl.DataFrame,
    truth: pl.DataFrame,
    *,
    ks: Sequence[int],
    catalog_size: int,
    item_share: pl.DataFrame,
) -> pl.DataFrame:
    """Ranked lists and later purchases in, one row of metrics per k out.

    Hand-written rather than with scikit-learn's ``ndcg_score``/``top_k_accuracy_score``, which
    need a dense users x items score matrix; here everything is a join on (user, item).

    Parameters
    ----------
    recs : pl.DataFrame
        user_id, rank (1 = best), recommended.
    truth : pl.DataFrame
        user_id, item: what each test user bought in the test window. Users in ``truth``
        without a list count as misses; users not in ``truth`` are ignored.
    ks : sequence of int
        Cut-offs.
    catalog_size : int
        Number of recommendable items (coverage denominator).
    item_share : pl.DataFrame
        item, share: training popularity; novelty is the mean of ``-log2(share)`` over
        recommended items (unseen items get the smallest share).

    Returns
    -------
    pl.DataFrame
        k, users, hit_rate (share of users with >= 1 hit), precision (hits / k), recall
        (hits / relevant items), ndcg (binary relevance, log2 discount), coverage (distinct
        recommended items / catalog_size), novelty, personalization (1 - mean over pairs of
        users of |overlap| / k, from per-item counts: sum_i C(c_i, 2) / (k C(u, 2))).
    """
    users = truth.select("user_id").unique()
    n_users = users.height
    rows = []
    relevant = truth.select("user_id", recommended="item").unique().with_columns(hit=pl.lit(True))
    n_rel = relevant.group_by("user_id").agg(n_rel=pl.len())
    for k in ks:
        top = recs.filter(pl.col("rank") <= k).join(users, on="user_id", how="semi")
        j = top.join(relevant, on=["user_id", "recommended"], how="left").with_columns(
            hit=pl.col("hit").fill_null(False)
        )
        per = j.group_by("user_id").agg(
            hits=pl.col("hit").sum(),
            dcg=(
                pl.col("hit").cast(pl.Float64) / (pl.col("rank") + 1).cast(pl.Float64).log(2)
            ).sum(),
        )
        per = users.join(per, on="user_id", how="left").join(n_rel, on="user_id").fill_null(0)
        ideal = per["n_rel"].to_numpy().clip(max=k)
        idcg = np.array([sum(1 / math.log2(i + 2) for i in range(int(m))) for m in ideal])
        hits = per["hits"].to_numpy()
        ndcg = np.where(idcg > 0, per["dcg"].to_numpy() / np.where(idcg > 0, idcg, 1), 0.0)
        counts = top.group_by("recommended").agg(c=pl.len())["c"].to_numpy().astype(float)
        lists = top["user_id"].n_unique()
        pairs = lists * (lists - 1) / 2
        overlap = (counts * (counts - 1) / 2).sum() / (k * pairs) if pairs else 0.0
        info = top.join(
            item_share.select(recommended="item", share="share"), on="recommended", how="left"
        )
        novelty = (
            float(
                (-np.log2(info["share"].fill_null(info["share"].min() or 1e-9).to_numpy())).mean()
            )
            if info.height
            else float("nan")
        )
        rows.append(
            {
                "k": k,
                "users": n_users,
                "hit_rate": float((hits > 0).mean()) if n_users else 0.0,
                "precision": float((hits / k).mean()) if n_users else 0.0,
                "recall": float((hits / per["n_rel"].to_numpy()).mean()) if n_users else 0.0,
                "ndcg": float(ndcg.mean()) if n_users else 0.0,
                "coverage": top["recommended"].n_unique() / max(catalog_size, 1),
                "novelty": novelty,
                "personalization": 1.0 - overlap,
            }
        )
    return pl.DataFrame(rows)


def describe_evaluation(metrics: pl.DataFrame) -> str:
    """Metrics (model, k, ...) in, one sentence comparing rules and popularity at the largest k."""
    k = int(metrics["k"].max())
    at = {r["model"]: r for r in metrics.filter(pl.col("k") == k).iter_rows(named=True)}
    r, p = at.get("rules"), at.get("popularity")
    if not r or not p:
        return ""
    return (
        f"At k = {k}, rules hit {r['hit_rate']:.1%} of test customers against {p['hit_rate']:.1%} "
        f"for the popularity baseline (NDCG {r['ndcg']:.3f} vs {p['ndcg']:.3f}), covering "
        f"{r['coverage']:.1%} of the catalogue vs {p['coverage']:.1%}, with personalization "
        f"{r['personalization']:.2f} vs {p['personalization']:.2f}; {r['users']:,} test customers."
    )


@dataclass(frozen=True)
class Split:
    """The temporal split of an offline evaluation: where it cut and how many it tested."""

    split: dt.datetime
    train_baskets: int
    train_rules: int
    test_users: int

    def describe(self) -> str:
        """One sentence, for the notebook."""
        return (
            f"Trained on {self.train_baskets:,} baskets before {self.split:%Y-%m-%d %H:%M} "
            f"({self.train_rules:,} rules); {self.test_users:,} customers who bought before and "
            "after the cut are the test set."
        )


def offline_evaluation(
    events: ibis.Table, cfg: RecommendationsParams
) -> tuple[pl.DataFrame, Split]:
    """Rules vs popularity on a temporal split: canonical events in, metrics per model and k out.

    Everything (baskets, itemsets, rules, popularity) is learned on events before the last
    ``cfg.test_days`` days. Test users are customers who purchased both before and after the cut;
    their relevant items are what they bought after it (minus what they had bought before when
    ``cfg.exclude_purchased``). Both models recommend ``max(cfg.eval_ks)`` items.

    Parameters
    ----------
    events : ibis.Table
        Canonical events (event_time, event_type, user_id, user_session, product_id, ...).
    cfg : RecommendationsParams
        The stage's params section.

    Returns
    -------
    tuple[pl.DataFrame, Split]
        Metrics with columns model ("rules" or "popularity"), k, users, hit_rate, precision,
        recall, ndcg, coverage, novelty, personalization; and the split's description.
    """
    data_end = events.event_time.max().to_pyarrow().as_py()
    if data_end is None:
        raise ValueError("recommendations: the events table is empty; nothing to evaluate")
    split = data_end - dt.timedelta(days=cfg.test_days)
    train = events.filter(events.event_time < ibis.literal(split))
    train_bi, report = _rules.baskets(
        train,
        basket=cfg.basket,
        item=cfg.item,
        include_carts=cfg.include_carts,
        max_basket_items=cfg.max_basket_items,
        large_basket_rule=cfg.large_basket_rule,
    )
    if report.baskets == 0:
        raise ValueError(
            f"recommendations.test_days = {cfg.test_days}: no purchase basket before {split}; "
            "expected training data before the test window"
        )
    train_rules = _rules.association_rules(
        _rules.frequent_itemsets(
            train_bi, min_support=cfg.min_support, max_len=cfg.max_len, n_baskets=report.baskets
        ),
        min_confidence=cfg.min_confidence,
        min_lift=cfg.min_lift,
    )
    train_pop = popularity(train_bi.to_polars(), _rules.catalog(train, item=cfg.item))
    train_history = _rules.purchase_history(events, item=cfg.item, end=split)
    truth = _rules.purchase_history(events, item=cfg.item, start=split).join(
        train_history.select("user_id").unique(), on="user_id", how="semi"
    )
    if cfg.exclude_purchased:
        truth = truth.join(
            train_history.select("user_id", "item").unique(), on=["user_id", "item"], how="anti"
        )
    test_users = truth.select("user_id").unique()
    k_max = max(cfg.eval_ks)
    candidates = {
        "rules": user_recommendations(
            train_history.join(test_users, on="user_id", how="semi"),
            train_rules,
            train_pop,
            top_n=k_max,
            by=cfg.rank_by,
            recent_items=cfg.recent_items,
            exclude_purchased=cfg.exclude_purchased,
        ),
        "popularity": popularity_baseline(
            test_users,
            train_pop,
            train_history,
            top_n=k_max,
            exclude_purchased=cfg.exclude_purchased,
        ),
    }
    metrics = pl.concat(
        [
            evaluate(
                recs, truth, ks=cfg.eval_ks, catalog_size=train_pop.height, item_share=train_pop
            )
            .with_columns(model=pl.lit(name))
            .select("model", pl.exclude("model"))
            for name, recs in candidates.items()
        ]
    )
    return metrics, Split(split, report.baskets, train_rules.height, test_users.height)


def describe_sources(recs: pl.DataFrame, key: str) -> str:
    """One sentence on how many products or customers got rules vs fallbacks.

    ``recs`` is a product (``key="item"``) or user (``key="user_id"``) recommendation table.
    """
    who = "products" if key == "item" else "customers"
    n = recs[key].n_unique()
    if n == 0:
        return f"No {who} to recommend for."
    with_rule = recs.filter(pl.col("kind") == RULE)[key].n_unique()
    share = recs.group_by("kind").len()
    by_kind = dict(zip(share["kind"], share["len"], strict=True))
    return (
        f"{n:,} {who} get recommendations; {with_rule:,} ({with_rule / n:.0%}) have at least one "
        f"from a rule; of {recs.height:,} rows, {by_kind.get(RULE, 0):,} come from rules, "
        f"{by_kind.get(CATEGORY, 0):,} from category popularity and {by_kind.get(OVERALL, 0):,} "
        "from overall popularity."
    )
