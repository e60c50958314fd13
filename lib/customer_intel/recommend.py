"""Recommendations from association rules, with cold-start fallbacks, and their offline evaluation.

- :func:`product_recommendations`: for each product, its top-N partners by lift (or confidence)
  from single-item rules; products without rules get the most popular items of their category,
  then overall. Every row says which rule or fallback produced it.
- :func:`user_recommendations`: for each customer, the consequents of rules whose antecedent is
  among their most recent items, best first, excluding what they already bought (params); then
  the same fallbacks. :func:`user_recommendation_chunks` computes them a chunk of customers at
  a time from a history streamed off the engine, so memory does not grow with the customers.
- :func:`evaluate`: hit rate, precision, recall and NDCG at k against what customers bought in a
  later test window, catalog coverage, novelty (mean self-information of recommended items,
  ``-log2`` of their share of purchases) and personalization (1 - mean pairwise overlap of users'
  lists, computed exactly from item counts in O(users x k), never with an all-pairs matrix).
  :func:`offline_evaluation` runs it on a seeded sample of ``eval_users`` test customers when
  there are more.

Every ranking has a total order (equal scores are ordered by item id, customers by user_id), so
the same inputs give the same rows in the same order on every run.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import ibis
import numpy as np
import polars as pl

from customer_intel import columns as C
from customer_intel import rules as _rules
from customer_intel import warehouse
from customer_intel.params.recommendations import RecommendationsParams

RULE = "rule"
CATEGORY = "popular in category"
OVERALL = "popular overall"
_KIND_ORDER = {RULE: 0, CATEGORY: 1, OVERALL: 2}
#: Fallback pools: the ``POOL_FACTOR * top_n`` most popular items of a category, and overall.
POOL_FACTOR = 3
#: Rows of purchase history read from the engine per chunk of customers (whole customers).
CHUNK_ROWS = 100_000


def popularity(
    basket_items: pl.DataFrame | ibis.Table, catalog: pl.DataFrame | None = None
) -> pl.DataFrame:
    """(basket_id, item) pairs in, one row per item out: item, baskets, share (, category).

    ``basket_items`` is a Polars frame or an Ibis expression (counted on the engine, so only
    one row per item comes back). ``share`` is the item's baskets over all basket-item pairs
    (it is also the probability used for novelty). ``catalog`` (item, category) adds each
    item's category. Sorted by baskets descending, then item.
    """
    if isinstance(basket_items, pl.DataFrame):
        pop = basket_items.group_by("item").agg(baskets=pl.len())
    else:
        pop = basket_items.group_by("item").agg(baskets=basket_items.count()).to_polars()
    pop = pop.with_columns(pl.col("baskets").cast(pl.Int64))
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
    items of their category, then overall (never the item itself). Ties are broken by the
    recommended item, so the order is total.

    Returns
    -------
    pl.DataFrame
        item, rank (1..top_n), recommended, score (the rule metric, or the item's popularity
        share for fallbacks), kind ("rule", "popular in category", "popular overall"), source
        (the rule with its lift and confidence, or the fallback); sorted by item, rank.

    Raises
    ------
    ValueError
        If ``by`` is not "lift" or "confidence" (names ``recommendations.rank_by``).
    """
    _check_by(by)
    single = _single_rules(rules, by, min_support)
    fb = _Fallbacks.of(pop, top_n)
    codes = _dictionary(pop["item"], single["item"], single["recommended"], fb.lists["item"])
    # Targets: every item of the popularity table (and any antecedent missing from it, which
    # gets its rules but no fallback), in item order.
    targets = (
        pl.concat(
            [pop.select("item", "category", in_pop=pl.lit(True)), single.select("item")],
            how="diagonal",
        )
        .unique("item", keep="first", maintain_order=True)
        .sort("item")
        .pipe(_encode, "item", codes, "i")
        .with_row_index("k")
    )
    s = (
        single.pipe(_encode, "item", codes, "i")
        .pipe(_encode, "recommended", codes, "r")
        .join(targets.select("i", "k"), on="i", maintain_order="left")
        .sort(["k", "score", "r"], descending=[False, True, False])
    )
    s = s.filter(pl.Series(_within(s["k"].to_numpy()) < top_n))
    from_rules = s.select(
        "k",
        "r",
        "score",
        source=pl.format(
            "rule: {} -> {} (lift {}, confidence {})",
            "item",
            "recommended",
            pl.col("lift").round(2),
            pl.col("confidence").round(2),
        ),
    )
    n_items = codes.height
    k = targets["k"].to_numpy().astype(np.int64)
    out = _complete(
        from_rules,
        fb,
        fb.list_of(targets["category"]),
        np.where(targets["in_pop"].fill_null(False).to_numpy(), top_n, 0),
        extra=np.ones(len(k), np.int64),
        exclude=k * n_items + targets["i"].to_numpy(),
        codes=codes,
    )
    return out.select(
        targets["item"].gather(out["k"]).alias("item"),
        "rank",
        "recommended",
        "score",
        "kind",
        "source",
    )


def _check_by(by: str) -> None:
    if by not in ("lift", "confidence"):
        raise ValueError(f"recommendations.rank_by: expected lift or confidence, got {by!r}")


def _dictionary(*values: pl.Series) -> pl.DataFrame:
    """Strings in, a dictionary out: value (sorted, unique, no null) and code (0, 1, ...).

    Codes keep the strings' order, so sorting by code is sorting by the string.
    """
    return (
        pl.concat([v.cast(pl.String) for v in values])
        .drop_nulls()
        .unique()
        .sort()
        .to_frame("value")
        .with_row_index("code")
        .with_columns(pl.col("code").cast(pl.Int64))
    )


def _encode(df: pl.DataFrame, col: str, codes: pl.DataFrame, name: str) -> pl.DataFrame:
    """Add the dictionary code of the string column ``col`` as ``name`` (null if absent)."""
    return df.join(
        codes.rename({"value": col, "code": name}), on=col, how="left", maintain_order="left"
    )


def _within(keys: np.ndarray) -> np.ndarray:
    """Sorted group keys in, each row's position within its group (0, 1, ...) out."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, np.int64)
    first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))


def _isin(values: np.ndarray, among: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is among ``among`` (integers; a hash set, not a sort)."""
    return pl.Series(values).is_in(pl.Series(among).implode()).to_numpy()


@dataclass(frozen=True)
class _Fallbacks:
    """The cold-start lists, one per category, built once from the popularity table.

    ``lists`` has list_id, pos (0, 1, ...), item, score, kind, source, sorted by list_id and
    pos: list 0 is the ``POOL_FACTOR * top_n`` most popular items overall; each category with
    items has a list of its most popular items (as many), then the overall ones not among
    them. ``codes`` maps a category to its list_id; a target whose category has no list (or
    who has none) gets list 0.
    """

    lists: pl.DataFrame
    codes: pl.DataFrame
    offsets: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, pop: pl.DataFrame, top_n: int) -> _Fallbacks:
        pool = top_n * POOL_FACTOR
        overall = pop.head(pool).select(
            "item",
            score="share",
            kind=pl.lit(OVERALL),
            source=pl.lit("fallback: popular overall"),
        )
        by_cat = (
            pop.filter(pl.col("category").is_not_null())
            .group_by("category", maintain_order=True)
            .head(pool)
            .select("category", "item", score="share")
        )
        codes = (
            by_cat.select("category")
            .unique(maintain_order=True)
            .with_row_index("list_id", offset=1)
            .with_columns(pl.col("list_id").cast(pl.Int64))
        )
        in_cat = by_cat.join(codes, on="category", maintain_order="left").with_columns(
            kind=pl.lit(CATEGORY), source=pl.format("fallback: popular in category {}", "category")
        )
        then_overall = codes.join(overall, how="cross").join(
            in_cat.select("list_id", "item"), on=["list_id", "item"], how="anti"
        )
        lists = (
            pl.concat(
                [overall.with_columns(list_id=pl.lit(0, pl.Int64)), in_cat, then_overall],
                how="diagonal",
            )
            .with_columns(_o=pl.col("kind").replace_strict(_KIND_ORDER, return_dtype=pl.Int8))
            .sort(["list_id", "_o", "score", "item"], descending=[False, False, True, False])
            .select("list_id", "item", "score", "kind", "source")
        )
        lengths = np.bincount(lists["list_id"].to_numpy(), minlength=codes.height + 1)
        offsets = np.cumsum(lengths) - lengths
        return cls(lists, codes, offsets, lengths)

    def list_of(self, categories: pl.Series) -> np.ndarray:
        """Categories in, the list_id of each out (0 where the category has no list)."""
        return (
            categories.cast(pl.String)
            .to_frame("category")
            .join(self.codes, on="category", how="left", maintain_order="left")["list_id"]
            .fill_null(0)
            .to_numpy()
        )


def _complete(
    from_rules: pl.DataFrame,
    fb: _Fallbacks,
    target_list: np.ndarray,
    fill_to: np.ndarray,
    *,
    extra: np.ndarray,
    exclude: np.ndarray,
    codes: pl.DataFrame,
) -> pl.DataFrame:
    """Rule rows plus fallbacks up to ``fill_to`` items per target, ranked.

    Targets are numbered 0..T-1 in output order. ``from_rules`` (k, r (item code), score,
    source) holds at most ``fill_to`` rows per target k, best first; ``target_list`` is each
    target's fallback list, ``exclude`` the keys ``k * len(codes) + item code`` of items a
    target must not get, of which at most ``extra[k]`` can be in its list. A target short of
    ``m`` items takes the first ``m`` entries of its list that are neither excluded nor already
    recommended by a rule; those lie within the first ``fill_to + extra`` entries, so only
    these are generated (not the whole pool per target), with array arithmetic.

    Returns k, rank, recommended, score, kind, source sorted by k then rank: rules first (by
    score, then item), then category popularity, then overall popularity.
    """
    n_codes = codes.height
    rule_k = from_rules["k"].to_numpy().astype(np.int64)
    want = fill_to - np.bincount(rule_k, minlength=len(target_list))
    limit = np.where(want > 0, np.minimum(fb.lengths[target_list], fill_to + extra), 0)
    k = np.repeat(np.arange(len(target_list), dtype=np.int64), limit)
    pos = np.arange(len(k)) - np.repeat(np.cumsum(limit) - limit, limit)
    row = np.repeat(fb.offsets[target_list], limit) + pos
    item_code = _encode(fb.lists.select("item"), "item", codes, "c")["c"].to_numpy()
    taken = np.concatenate([rule_k * n_codes + from_rules["r"].to_numpy(), exclude])
    if len(taken) and len(k):
        ok = ~_isin(k * n_codes + item_code[row], taken)
        k, row = k[ok], row[ok]
    keep = _within(k) < want[k]
    k, row = k[keep], row[keep]
    # Both parts are sorted by k: a stable sort of the concatenation merges them, rules first.
    table = pl.concat(
        [
            from_rules.select(
                recommended=codes["value"].gather(from_rules["r"]),
                score="score",
                kind=pl.lit(RULE),
                source="source",
            ),
            fb.lists.select(recommended="item", score="score", kind="kind", source="source"),
        ]
    )
    all_k = np.concatenate([rule_k, k])
    order = np.argsort(all_k, kind="stable")
    k_out = all_k[order]
    idx = np.concatenate([np.arange(len(rule_k)), len(rule_k) + row])[order]
    return table[idx].select(
        k=pl.Series(k_out, dtype=pl.Int64),
        rank=pl.Series(_within(k_out) + 1, dtype=pl.Int32),
        recommended="recommended",
        score="score",
        kind="kind",
        source="source",
    )


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
    ``recent_items`` most recently bought distinct items (equal times: by item), ranked by
    ``by`` (equal scores: by item; a consequent reached by several rules keeps the best, equal
    ones the first antecedent); what the customer already bought is dropped when
    ``exclude_purchased``. Customers short of ``top_n`` get the most popular items of their
    most-bought category (equal counts: the first category), then overall.

    Each customer's list depends only on that customer's rows, so the history can be split by
    customer and the parts' results concatenated (:func:`user_recommendation_chunks`).

    Parameters
    ----------
    history : pl.DataFrame
        One row per purchase: user_id, item, event_time, category (see
        :func:`customer_intel.rules.purchases`), in any order.
    rules, pop : pl.DataFrame
        Association rules and item popularity (:func:`popularity` with a catalog).

    Returns
    -------
    pl.DataFrame
        user_id, rank, recommended, score, kind, source (as in :func:`product_recommendations`),
        sorted by user_id then rank.
    """
    _check_by(by)
    return _user_recs(
        history,
        _single_rules(rules, by, min_support),
        _Fallbacks.of(pop, top_n),
        top_n=top_n,
        recent_items=recent_items,
        exclude_purchased=exclude_purchased,
    )


def _user_recs(
    history: pl.DataFrame,
    single: pl.DataFrame,
    fb: _Fallbacks,
    *,
    top_n: int,
    recent_items: int,
    exclude_purchased: bool,
) -> pl.DataFrame:
    history = history.drop_nulls("item")
    users = history[C.USER_ID].unique().sort()
    codes = _dictionary(history["item"], single["item"], single["recommended"], fb.lists["item"])
    cats = _dictionary(history["category"], fb.codes["category"])
    n_codes = codes.height
    h = (
        history.join(users.to_frame().with_row_index("k"), on=C.USER_ID, maintain_order="left")
        .pipe(_encode, "item", codes, "i")
        .pipe(_encode, "category", cats, "c")
        .select(pl.col("k").cast(pl.Int64), "i", "c", C.EVENT_TIME)
    )
    last = h.group_by("k", "i").agg(t=pl.col(C.EVENT_TIME).max())
    bought = last["k"].to_numpy() * n_codes + last["i"].to_numpy()
    recent = last.sort(["k", "t", "i"], descending=[False, True, False])
    recent = recent.filter(pl.Series(_within(recent["k"].to_numpy()) < recent_items))
    s = single.pipe(_encode, "item", codes, "i").pipe(_encode, "recommended", codes, "r")
    cand = (
        recent.select("k", "i")
        .join(s.select("i", "r", "score", "lift"), on="i")
        .sort(["k", "score", "r", "i"], descending=[False, True, False, False])
        .unique(["k", "r"], keep="first", maintain_order=True)
    )
    if exclude_purchased:
        cand = cand.filter(~_isin(cand["k"].to_numpy() * n_codes + cand["r"].to_numpy(), bought))
    cand = cand.filter(pl.Series(_within(cand["k"].to_numpy()) < top_n))
    from_rules = cand.select(
        "k",
        "r",
        "score",
        source=pl.format(
            "rule: {} -> {} (lift {})",
            codes["value"].gather(cand["i"]),
            codes["value"].gather(cand["r"]),
            pl.col("lift").round(2),
        ),
    )
    fav = (
        h.filter(pl.col("c").is_not_null())
        .group_by("k", "c")
        .len()
        .sort(["k", "len", "c"], descending=[False, True, False])
    )
    fav = fav.filter(pl.Series(_within(fav["k"].to_numpy()) == 0))
    cat_list = fb.list_of(cats["value"])
    target_list = np.zeros(users.len(), np.int64)
    target_list[fav["k"].to_numpy()] = cat_list[fav["c"].to_numpy()]
    n_bought = np.bincount(last["k"].to_numpy(), minlength=users.len())
    out = _complete(
        from_rules,
        fb,
        target_list,
        np.full(users.len(), top_n),
        extra=n_bought if exclude_purchased else np.zeros(users.len(), np.int64),
        exclude=bought if exclude_purchased else np.zeros(0, np.int64),
        codes=codes,
    )
    return out.select(
        users.gather(out["k"]).alias(C.USER_ID),
        "rank",
        "recommended",
        "score",
        "kind",
        "source",
    )


def user_recommendation_chunks(
    history: ibis.Table,
    rules: pl.DataFrame,
    pop: pl.DataFrame,
    *,
    top_n: int = 10,
    by: str = "lift",
    recent_items: int = 5,
    exclude_purchased: bool = True,
    min_support: float = 0.0,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[pl.DataFrame]:
    """Purchase history on the engine in, :func:`user_recommendations` per chunk of customers out.

    The engine streams the history ordered by user_id; about ``chunk_rows`` rows at a time
    (whole customers: the last customer of a batch waits for the next one) are turned into
    recommendations, so memory holds one chunk, never every customer's list. The chunks come
    in user_id order and, concatenated, equal ``user_recommendations`` of the whole history
    row for row. At least one frame is yielded (empty when nobody bought).

    Parameters
    ----------
    history : ibis.Table
        user_id, event_time, item, category (:func:`customer_intel.rules.purchases`).
    rules, pop, top_n, by, recent_items, exclude_purchased, min_support
        As in :func:`user_recommendations`.
    chunk_rows : int
        Purchase rows per chunk (memory per chunk grows with it; results do not change).
    """
    _check_by(by)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows: expected >= 1, got {chunk_rows}")
    single = _single_rules(rules, by, min_support)
    fb = _Fallbacks.of(pop, top_n)

    def recs(part: pl.DataFrame) -> pl.DataFrame:
        return _user_recs(
            part,
            single,
            fb,
            top_n=top_n,
            recent_items=recent_items,
            exclude_purchased=exclude_purchased,
        )

    cols = [C.USER_ID, C.EVENT_TIME, "item", "category"]
    stream = history.select(*cols).order_by(C.USER_ID)
    reader = stream.to_pyarrow_batches(chunk_size=min(chunk_rows, 100_000))
    pending: list[pl.DataFrame] = []
    n_pending = 0
    yielded = False
    for batch in reader:
        if batch.num_rows == 0:
            continue
        pending.append(pl.from_arrow(batch))
        n_pending += batch.num_rows
        if n_pending < chunk_rows:
            continue
        part = pl.concat(pending)
        last_user = part[C.USER_ID][-1]
        done = part.filter(pl.col(C.USER_ID) != last_user)
        if done.height == 0:  # one customer with more than chunk_rows purchases: keep reading
            pending, n_pending = [part], part.height
            continue
        yield recs(done)
        yielded = True
        rest = part.filter(pl.col(C.USER_ID) == last_user)
        pending, n_pending = [rest], rest.height
    if n_pending or not yielded:
        part = (
            pl.concat(pending)
            if pending
            else pl.from_arrow(stream.schema().to_pyarrow().empty_table())
        )
        yield recs(part)


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
    Items are taken in the popularity table's order (baskets, then item); sorted by user, rank.
    """
    cands = (
        users.select(C.USER_ID)
        .unique()
        .join(
            pop.head(top_n * POOL_FACTOR)
            .select(recommended="item", score="share")
            .with_row_index("_p"),
            how="cross",
        )
    )
    if exclude_purchased:
        cands = cands.join(
            history.select(C.USER_ID, recommended="item").unique(),
            on=[C.USER_ID, "recommended"],
            how="anti",
        )
    return (
        cands.sort([C.USER_ID, "_p"])
        .group_by(C.USER_ID, maintain_order=True)
        .head(top_n)
        .with_columns(rank=pl.int_range(1, pl.len() + 1).over(C.USER_ID).cast(pl.Int32))
        .drop("_p")
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
    need a dense users x items score matrix; here everything is a join on (user, item), and
    means are taken over users in user_id order, so the same inputs give the same bits.

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
        recommended items / catalog_size), novelty, personalization.

    Notes
    -----
    Personalization is 1 - the mean, over all pairs of users with a list, of |overlap| / k. It
    is computed exactly, not on a sample of pairs: the overlaps summed over all pairs equal
    sum_i C(c_i, 2), where c_i is the number of lists holding item i, so it is
    ``1 - sum_i C(c_i, 2) / (k C(u, 2))`` in O(users x k) time and O(items) memory, never an
    all-pairs matrix (integer sums, so no rounding depends on row order).
    """
    users = truth.select(C.USER_ID).unique().sort(C.USER_ID)
    n_users = users.height
    rows = []
    relevant = truth.select(C.USER_ID, recommended="item").unique().with_columns(hit=pl.lit(True))
    n_rel = relevant.group_by(C.USER_ID).agg(n_rel=pl.len())
    for k in ks:
        top = recs.filter(pl.col("rank") <= k).join(
            users, on=C.USER_ID, how="semi", maintain_order="left"
        )
        j = top.join(
            relevant, on=[C.USER_ID, "recommended"], how="left", maintain_order="left"
        ).with_columns(hit=pl.col("hit").fill_null(False))
        per = j.group_by(C.USER_ID).agg(
            hits=pl.col("hit").sum(),
            dcg=(
                pl.col("hit").cast(pl.Float64) / (pl.col("rank") + 1).cast(pl.Float64).log(2)
            ).sum(),
        )
        per = (
            users.join(per, on=C.USER_ID, how="left", maintain_order="left")
            .join(n_rel, on=C.USER_ID, maintain_order="left")
            .fill_null(0)
        )
        ideal = per["n_rel"].to_numpy().clip(max=k)
        idcg_of = np.array([sum(1 / math.log2(i + 2) for i in range(m)) for m in range(k + 1)])
        idcg = idcg_of[ideal]
        hits = per["hits"].to_numpy()
        ndcg = np.where(idcg > 0, per["dcg"].to_numpy() / np.where(idcg > 0, idcg, 1), 0.0)
        counts = top.group_by("recommended").agg(c=pl.len())["c"].to_numpy().astype(np.int64)
        lists = top[C.USER_ID].n_unique()
        pairs = lists * (lists - 1) // 2
        overlap = int((counts * (counts - 1) // 2).sum()) / (k * pairs) if pairs else 0.0
        info = top.join(
            item_share.select(recommended="item", share="share"),
            on="recommended",
            how="left",
            maintain_order="left",
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


def describe_evaluation(metrics: pl.DataFrame, split: Split | None = None) -> str:
    """Metrics (model, k, ...) in, one sentence comparing rules and popularity at the largest k.

    With the ``split``, the sentence says when the test customers were a sample.
    """
    k = int(metrics["k"].max())
    at = {r["model"]: r for r in metrics.filter(pl.col("k") == k).iter_rows(named=True)}
    r, p = at.get("rules"), at.get("popularity")
    if not r or not p:
        return ""
    who = f"{r['users']:,} test customers"
    if split is not None and split.sampled:
        who += f" (a seeded random sample of the {split.test_users:,})"
    return (
        f"At k = {k}, rules hit {r['hit_rate']:.1%} of test customers against {p['hit_rate']:.1%} "
        f"for the popularity baseline (NDCG {r['ndcg']:.3f} vs {p['ndcg']:.3f}), covering "
        f"{r['coverage']:.1%} of the catalogue vs {p['coverage']:.1%}, with personalization "
        f"{r['personalization']:.2f} vs {p['personalization']:.2f}; {who}."
    )


@dataclass(frozen=True)
class Split:
    """The temporal split of an offline evaluation: where it cut and how many it tested."""

    split: dt.datetime
    train_baskets: int
    train_rules: int
    test_users: int
    evaluated_users: int | None = None  # None: all test users
    seed: int | None = None

    @property
    def sampled(self) -> bool:
        """Whether the metrics are on a sample of the test users."""
        return self.evaluated_users is not None and self.evaluated_users < self.test_users

    def describe(self) -> str:
        """One sentence, for the notebook."""
        text = (
            f"Trained on {self.train_baskets:,} baskets before {self.split:%Y-%m-%d %H:%M} "
            f"({self.train_rules:,} rules); {self.test_users:,} customers who bought before and "
            "after the cut are the test set"
        )
        if self.sampled:
            return (
                f"{text}; the metrics are on a random sample of {self.evaluated_users:,} of them "
                f"(eval_users, seed {self.seed})."
            )
        return f"{text}."


def sample_users(users: pl.Series, n: int, seed: int) -> pl.Series:
    """Ids in, ``n`` of them drawn without replacement out (all of them if there are no more).

    The ids are sorted first and the draw uses NumPy's PCG64 generator seeded with ``seed``, so
    the same ids and seed give the same sample whatever order the engine returned them in.
    Returned sorted.
    """
    users = users.unique().sort()
    if n >= users.len():
        return users
    idx = np.sort(np.random.default_rng(seed).choice(users.len(), size=n, replace=False))
    return users.gather(idx)


def offline_evaluation(
    events: ibis.Table,
    cfg: RecommendationsParams,
    *,
    seed: int = 0,
    basket_events: ibis.Table | None = None,
) -> tuple[pl.DataFrame, Split]:
    """Rules vs popularity on a temporal split: canonical events in, metrics per model and k out.

    Everything (baskets, itemsets, rules, popularity) is learned on events before the last
    ``cfg.test_days`` days. Test users are customers who purchased both before and after the cut;
    their relevant items are what they bought after it (minus what they had bought before when
    ``cfg.exclude_purchased``). Both models recommend ``max(cfg.eval_ks)`` items. The test users
    are found on the engine; when there are more than ``cfg.eval_users``, the metrics are
    computed on a random sample of that many (:func:`sample_users` with ``seed``), and only the
    sample's purchases leave the engine, so memory does not grow with the number of customers.

    Parameters
    ----------
    events : ibis.Table
        Canonical events (event_time, event_type, user_id, user_session, product_id, ...).
    cfg : RecommendationsParams
        The stage's params section.
    seed : int
        Seed of the test-user sample (the run's ``common.seed``).
    basket_events : ibis.Table, optional
        The events baskets are formed from, when they include rows without a user id (the
        warehouse's ``all_events``); default ``events``.

    Returns
    -------
    tuple[pl.DataFrame, Split]
        Metrics with columns model ("rules" or "popularity"), k, users, hit_rate, precision,
        recall, ndcg, coverage, novelty, personalization; and the split's description.
    """
    data_end = warehouse.last_event_time(events)
    if data_end is None:
        raise ValueError("recommendations: the events table is empty; nothing to evaluate")
    split = data_end - dt.timedelta(days=cfg.test_days)
    train = events.filter(events.event_time < ibis.literal(split))
    train_bi, report = _rules.baskets(  # reuses the stage's basket table while it is referenced
        events if basket_events is None else basket_events,
        basket=cfg.basket,
        item=cfg.item,
        include_carts=cfg.include_carts,
        max_basket_items=cfg.max_basket_items,
        large_basket_rule=cfg.large_basket_rule,
        before=split,
        exclude_items=cfg.exclude_items,
        exclude_where=cfg.exclude_where,
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
    train_pop = popularity(train_bi, _rules.catalog(train, item=cfg.item))
    # Which (customer, item) pairs were bought before and after the cut, for the customers who
    # bought after it (the only possible test users). The truth is the pairs bought after it
    # (and not before, with exclusion) by customers who bought anything before; only those
    # pairs stay on the engine.
    bought = _rules.purchases(events, item=cfg.item)
    after = _rules.purchases(events, item=cfg.item, start=split).select(C.USER_ID).distinct()
    bought = bought.semi_join(after, C.USER_ID)
    early = bought.event_time < ibis.literal(split)
    pairs = bought.group_by([C.USER_ID, "item"]).agg(before=early.max(), after=(~early).max())
    new = pairs.after & ~pairs.before if cfg.exclude_purchased else pairs.after
    truth_all = (
        pairs.filter(new)
        .semi_join(pairs.filter(pairs.before), C.USER_ID)
        .select(C.USER_ID, "item")
        .cache()
    )
    test_ids = truth_all.select(C.USER_ID).distinct().to_polars()[C.USER_ID]
    sample = sample_users(test_ids, cfg.eval_users, seed)
    keep = ibis.memtable(sample.to_frame().to_arrow())
    before = _rules.purchases(events, item=cfg.item, end=split)
    train_history = before.semi_join(keep, C.USER_ID).to_polars()
    truth = truth_all.semi_join(keep, C.USER_ID).to_polars()
    test_users = sample.to_frame()
    k_max = max(cfg.eval_ks)
    candidates = {
        "rules": user_recommendations(
            train_history,
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
    n_test = test_ids.n_unique()
    return metrics, Split(split, report.baskets, train_rules.height, n_test, sample.len(), seed)


@dataclass(frozen=True)
class SourceCounts:
    """Where a recommendation table's rows came from: rules, category or overall popularity."""

    who: str
    targets: int
    with_rule: int
    rows: int
    by_kind: dict[str, int]

    def describe(self) -> str:
        """One sentence, for the notebook."""
        n = self.targets
        if n == 0:
            return f"No {self.who} to recommend for."
        return (
            f"{n:,} {self.who} get recommendations; {self.with_rule:,} "
            f"({self.with_rule / n:.0%}) have at least one from a rule; of {self.rows:,} rows, "
            f"{self.by_kind.get(RULE, 0):,} come from rules, {self.by_kind.get(CATEGORY, 0):,} "
            f"from category popularity and {self.by_kind.get(OVERALL, 0):,} from overall "
            "popularity."
        )


def source_counts(recs: pl.DataFrame | pl.LazyFrame, key: str) -> SourceCounts:
    """A product (``key="item"``) or user (``key="user_id"``) recommendation table in, counts out.

    A LazyFrame (e.g. ``StageRun.scan_table``) is aggregated by Polars' streaming engine,
    reading only the ``key`` and ``kind`` columns: the table is never loaded whole.
    """
    lf = recs.lazy().select(key, "kind")
    totals = lf.select(
        targets=pl.col(key).n_unique(),
        with_rule=pl.col(key).filter(pl.col("kind") == RULE).n_unique(),
        rows=pl.len(),
    )
    kinds = lf.group_by("kind").agg(n=pl.len())
    t, k = pl.collect_all([totals, kinds], engine="streaming")
    row = t.row(0, named=True)
    return SourceCounts(
        "products" if key == "item" else "customers",
        int(row["targets"]),
        int(row["with_rule"]),
        int(row["rows"]),
        {kind: int(n) for kind, n in zip(k["kind"], k["n"], strict=True)},
    )


def describe_sources(recs: pl.DataFrame | pl.LazyFrame, key: str) -> str:
    """One sentence on how many products or customers got rules vs fallbacks.

    ``recs`` is a product (``key="item"``) or user (``key="user_id"``) recommendation table,
    in memory or scanned (see :func:`source_counts`).
    """
    return source_counts(recs, key).describe()
