"""Frequent itemsets and association rules, computed on the engine with Apriori pruning.

Baskets are built from purchase events (optionally carts too) as distinct (basket, item) pairs,
where a basket is a session, an order id or a user-day, and an item is a product, a category or a
brand (params). Baskets with more than ``max_basket_items`` items are skipped or capped, and
the number affected is reported.

Counting is Apriori-style and stays on the engine: single items are counted first and only
frequent ones are kept; pairs are counted by a self-join *restricted to frequent items*; triples
only among items of frequent pairs and only for candidates whose three sub-pairs are frequent.
No basket's full set of pairs is ever materialised before pruning.

Rule metrics use the definitions of ``mlxtend.frequent_patterns.association_rules``:
support(A->C) = s(A u C); confidence = s(A u C) / s(A); lift = confidence / s(C);
leverage = s(A u C) - s(A) s(C); conviction = (1 - s(C)) / (1 - confidence) (inf when the
confidence is 1).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import ibis
import polars as pl

from customer_intel import columns as C
from customer_intel import sqlexpr, warehouse

BASKETS = ("session", "order", "user_day")
ITEMS = {"product": C.PRODUCT_ID, "category": C.CATEGORY_CODE, C.BRAND: C.BRAND}


@dataclass(frozen=True)
class BasketReport:
    """How baskets were formed: counts of baskets and of those skipped or capped."""

    baskets: int
    basket_items: int
    large_baskets: int
    rule: str
    max_basket_items: int
    excluded_rows: int = 0
    excluded_only_baskets: int = 0

    def describe(self) -> str:
        """One sentence, for the notebook."""
        verb = "skipped" if self.rule == "skip" else f"capped at {self.max_basket_items} items"
        text = (
            f"{self.baskets:,} baskets with {self.basket_items:,} basket-item pairs; "
            f"{self.large_baskets:,} baskets larger than {self.max_basket_items} items were {verb}."
        )
        if self.excluded_rows or self.excluded_only_baskets:
            text += (
                f" {self.excluded_rows:,} purchase rows of excluded items were left out; "
                f"{self.excluded_only_baskets:,} baskets held only excluded items and still count "
                "in the support's denominator."
            )
        return text


def baskets(
    events: ibis.Table,
    *,
    basket: str = "session",
    item: str = "product",
    include_carts: bool = False,
    max_basket_items: int = 50,
    large_basket_rule: str = "skip",
    before: dt.datetime | None = None,
    exclude_items: Sequence[str] = (),
    exclude_where: str | None = None,
) -> tuple[ibis.Table, BasketReport]:
    """Canonical events in, distinct (basket_id, item) string pairs out, plus a basket report.

    Parameters
    ----------
    events : ibis.Table
        Canonical events (event_type, user_id, user_session, event_time, product_id,
        category_code, brand; ``order_id`` when ``basket="order"``).
    basket : {"session", "order", "user_day"}
        What a basket is: ``user_session``, ``order_id`` (invoice of an order-lines table) or a
        customer's calendar day (UTC).
    item : {"product", "category", "brand"}
        Item level: ``product_id``, ``category_code`` or ``brand``; rows where it is null are
        dropped.
    include_carts : bool
        Count cart events as basket items too (default: purchases only).
    max_basket_items, large_basket_rule
        Baskets with more distinct items than ``max_basket_items`` are skipped whole
        (``"skip"``) or keep their first ``max_basket_items`` items in item order (``"cap"``);
        how many were affected is in the report.
    before : datetime, optional
        Keep only what was bought before this time: the baskets of ``events`` filtered to
        ``event_time < before`` (a pair counts when its item's first purchase in the basket
        is before it; basket sizes are those of the kept pairs).
    exclude_items, exclude_where
        Items left out of the baskets *after* the baskets are formed (postage, carrier bags,
        gift wrap): item values (compared as strings) and/or an SQL condition on the event
        columns (e.g. ``"description = 'POSTAGE'"``; checked like every expression in params).
        A basket that held only excluded items still counts as a basket, so supports keep the
        true number of baskets as their denominator; basket sizes count the kept items.

    Returns
    -------
    tuple[ibis.Table, BasketReport]
        An expression with columns basket_id, item (both strings) over a temporary table the
        engine holds while the expression is referenced, and the counts.

    Notes
    -----
    The distinct pairs (with each pair's first purchase time and its basket's size) are
    materialised once on the engine: the counts, the itemsets and popularity all read them
    again, and the distinct over basket ids is the costly part. Ibis memoizes that table by
    expression, so a second call on the same ``events`` with the same basket, item and
    ``include_carts`` (e.g. with ``before`` for an evaluation's training window) reuses it
    while the first result is still referenced, instead of scanning the events again.

    Raises
    ------
    ValueError
        For an unknown ``basket``, ``item`` or ``large_basket_rule``, or ``basket="order"`` on
        events without an ``order_id`` column.
    """
    e = _basket_events(events, basket, item, include_carts)  # checks basket and item first
    if large_basket_rule not in ("skip", "cap"):
        raise ValueError(
            f"recommendations.large_basket_rule: expected skip or cap, got {large_basket_rule!r}"
        )
    col = ITEMS[item]
    bid = e._basket
    n_universe = None
    if exclude_items or exclude_where:
        every = e if before is None else e.filter(e.event_time < ibis.literal(before))
        n_universe = int(every._basket.nunique().to_pyarrow().as_py() or 0)
        n_rows = e.count()
        e = _without_excluded(e, col, exclude_items, exclude_where)
        bid = e._basket
    if C.EVENT_TIME in e.columns:
        pairs = e.group_by(basket_id=bid, item=e[col].cast("string")).agg(
            first_time=e.event_time.min()
        )
    else:  # a bare (basket, item) table
        pairs = e.select(basket_id=bid, item=e[col].cast("string")).distinct()
    sized = pairs.join(pairs.group_by("basket_id").agg(n=pairs.count()), "basket_id").cache()
    if before is not None:
        if "first_time" not in sized.columns:
            raise ValueError("baskets(before=...) needs events with an event_time column")
        early = sized.filter(sized.first_time < ibis.literal(before)).drop("n")
        sized = early.join(early.group_by("basket_id").agg(n=early.count()), "basket_id")
    if large_basket_rule == "cap":
        w = ibis.window(group_by="basket_id", order_by="item")
        sized = sized.mutate(rk=ibis.row_number().over(w))
    n_large = int(
        sized.filter(sized.n > max_basket_items).basket_id.nunique().to_pyarrow().as_py() or 0
    )
    if large_basket_rule == "skip":
        kept = sized.filter(sized.n <= max_basket_items)
    else:
        kept = sized.filter(sized.rk < max_basket_items)
    kept = kept.select("basket_id", "item")
    if before is not None or large_basket_rule == "cap":
        kept = kept.cache()  # a join or a window over the pairs: computed once, not per read
    counts = kept.aggregate(b=kept.basket_id.nunique(), n=kept.count()).to_pyarrow().to_pylist()[0]
    n_baskets, excluded_rows, only_excluded = int(counts["b"] or 0), 0, 0
    if n_universe is not None:
        with_items = int(sized.basket_id.nunique().to_pyarrow().as_py() or 0)
        only_excluded = n_universe - with_items
        n_baskets += only_excluded
        excluded_rows = int(n_rows.to_pyarrow().as_py()) - int(e.count().to_pyarrow().as_py())
    return kept, BasketReport(
        n_baskets,
        int(counts["n"] or 0),
        n_large,
        large_basket_rule,
        max_basket_items,
        excluded_rows,
        only_excluded,
    )


def _basket_events(events: ibis.Table, basket: str, item: str, include_carts: bool) -> ibis.Table:
    """The purchase (and cart) events with an item, each with its basket id in ``_basket``."""
    if basket not in BASKETS:
        raise ValueError(f"recommendations.basket: expected one of {BASKETS}, got {basket!r}")
    if item not in ITEMS:
        raise ValueError(f"recommendations.item: expected one of {sorted(ITEMS)}, got {item!r}")
    types = ["purchase", "cart"] if include_carts else ["purchase"]
    e = events.filter(events.event_type.isin(types))
    e = e.filter(e[ITEMS[item]].notnull())
    if basket == "session":
        bid = e.user_session.cast("string")
    elif basket == "order":
        if C.ORDER_ID not in e.columns:
            raise ValueError(
                "recommendations.basket 'order' needs an order_id column (map it in ingest)"
            )
        bid = e.order_id.cast("string")
    else:
        bid = e.user_id.cast("string") + "|" + warehouse.event_day(e).cast("string")
    return e.mutate(_basket=bid)


def _without_excluded(
    e: ibis.Table, col: str, items: Sequence[str], where: str | None
) -> ibis.Table:
    """``e`` without the rows of excluded items: listed values, or rows matching ``where``."""
    if items:
        e = e.filter(~e[col].cast("string").isin([str(i) for i in items]))
    if where:
        tree = sqlexpr.check(where, e.columns, where="recommendations.exclude_where", boolean=True)
        # the text is DuckDB's dialect; Ibis transpiles it for another engine (Spark SQL)
        e = e.alias("_basket_rows").sql(
            f"SELECT * FROM _basket_rows WHERE NOT coalesce({sqlexpr.to_sql(tree)}, false)",
            dialect="duckdb",
        )
    return e


def min_count(min_support: float, n_baskets: int) -> int:
    """Support threshold and basket count in, the minimum number of baskets out.

    ``min_support`` below 1 is a fraction of ``n_baskets`` (rounded up, at least 1); 1 or more is
    an absolute count. Raises ValueError naming ``recommendations.min_support`` if it is <= 0.
    """
    if min_support <= 0:
        raise ValueError(f"recommendations.min_support: expected > 0, got {min_support}")
    return (
        max(1, math.ceil(min_support * n_baskets - 1e-9)) if min_support < 1 else int(min_support)
    )


def _with_at_least(basket_items: ibis.Table, n: int) -> ibis.Table:
    """The rows of baskets that keep at least ``n`` items (fewer cannot hold an n-itemset).

    Most baskets hold one item, so this shrinks the self-joins' hash tables several-fold (at
    100M events: the stage's peak memory 3.0 -> 2.3 GB).
    """
    sizes = basket_items.group_by("basket_id").agg(n=basket_items.count())
    return basket_items.semi_join(sizes.filter(sizes.n >= n), "basket_id")


def frequent_itemsets(
    basket_items: ibis.Table, *, min_support: float, max_len: int = 3, n_baskets: int | None = None
) -> pl.DataFrame:
    """(basket_id, item) pairs in, frequent itemsets (one row per itemset) out.

    Apriori on the engine: items are counted and filtered first; pairs come from a self-join of
    the baskets restricted to frequent items (and to baskets with two or more of them); triples
    only from baskets' frequent pairs, joined to a third frequent item and kept only when all
    three sub-pairs are frequent.

    Parameters
    ----------
    basket_items : ibis.Table
        Distinct basket_id, item pairs (from :func:`baskets`).
    min_support : float
        Fraction of baskets (< 1) or count of baskets (>= 1) an itemset must reach.
    max_len : int
        Largest itemset size, 1 to 3.
    n_baskets : int, optional
        Number of baskets (the support denominator); counted when not given.

    Returns
    -------
    pl.DataFrame
        itemset (sorted list[str]), length, count (baskets), support (count / n_baskets),
        sorted by length, then support descending, then itemset: a total order, so the same
        baskets give the same rows in the same order whatever order the engine returns them.
    """
    if not 1 <= max_len <= 3:
        raise ValueError(f"recommendations.max_len: expected 1..3, got {max_len}")
    bi = basket_items
    n = n_baskets if n_baskets is not None else int(bi.basket_id.nunique().to_pyarrow().as_py())
    k = min_count(min_support, n)
    c1 = bi.group_by("item").agg(count=bi.count())
    f1 = c1.filter(c1["count"] >= k)
    out = [f1.to_polars().select(pl.concat_list("item").alias("itemset"), "count")]
    if max_len >= 2:
        fb = _with_at_least(bi.semi_join(f1, "item"), 2)
        a, b = fb.view(), fb.view()
        j = a.join(b, (a.basket_id == b.basket_id) & (a.item < b.item))
        p2 = j.select(i1=a.item, i2=b.item).group_by(["i1", "i2"]).agg(count=ibis._.count())
        f2 = p2.filter(p2["count"] >= k)
        f2_pl = f2.to_polars()
        out.append(f2_pl.select(pl.concat_list("i1", "i2").alias("itemset"), "count"))
        if max_len >= 3 and f2_pl.height:
            pair_set = {(x, y) for x, y in zip(f2_pl["i1"], f2_pl["i2"], strict=True)}
            cands = []
            by_first: dict[str, list[str]] = {}
            for x, y in sorted(pair_set):
                by_first.setdefault(x, []).append(y)
            for x, ys in by_first.items():  # Apriori join: x<y<z with (x,y),(x,z),(y,z) frequent
                for y, z in combinations(sorted(ys), 2):
                    if (y, z) in pair_set:
                        cands.append((x, y, z))
            if cands:
                cand = ibis.memtable(
                    pl.DataFrame(cands, schema=["i1", "i2", "i3"], orient="row").to_arrow()
                )
                items2 = set(f2_pl["i1"]) | set(f2_pl["i2"])
                fb2 = _with_at_least(bi.filter(bi.item.isin(sorted(items2))), 3)
                x, y, z = fb2.view(), fb2.view(), fb2.view()
                t3 = x.join(y, (x.basket_id == y.basket_id) & (x.item < y.item)).select(
                    basket_id=x.basket_id, i1=x.item, i2=y.item
                )
                t3 = t3.semi_join(f2.select("i1", "i2"), ["i1", "i2"])
                t3 = t3.join(z, (t3.basket_id == z.basket_id) & (t3.i2 < z.item)).select(
                    t3.i1, t3.i2, i3=z.item
                )
                t3 = t3.semi_join(cand, ["i1", "i2", "i3"])
                p3 = t3.group_by(["i1", "i2", "i3"]).agg(count=ibis._.count())
                f3 = p3.filter(p3["count"] >= k).to_polars()
                out.append(f3.select(pl.concat_list("i1", "i2", "i3").alias("itemset"), "count"))
    res = (
        pl.concat(out)
        if out
        else pl.DataFrame(schema={"itemset": pl.List(pl.String), "count": pl.Int64})
    )
    return (
        res.with_columns(length=pl.col("itemset").list.len(), support=pl.col("count") / n)
        .select("itemset", "length", "count", "support")
        .sort(["length", "support", "itemset"], descending=[False, True, False])
    )


def association_rules(
    itemsets: pl.DataFrame, *, min_confidence: float = 0.0, min_lift: float = 0.0
) -> pl.DataFrame:
    """Frequent itemsets in, one row per rule A -> C (A, C non-empty, disjoint) out.

    Hand-written rather than calling mlxtend because mlxtend works on a dense one-hot basket
    matrix (and is a test-only dependency); the definitions are mlxtend's and the tests compare
    every metric with it. The itemsets are few (thousands), so this runs in Python.

    Parameters
    ----------
    itemsets : pl.DataFrame
        Output of :func:`frequent_itemsets` (itemset, count, support); every subset of an
        itemset must be present, as Apriori guarantees.
    min_confidence, min_lift : float
        Rules below either threshold are dropped.

    Returns
    -------
    pl.DataFrame
        antecedents, consequents (sorted list[str]), antecedent_support, consequent_support,
        support, confidence, lift, leverage, conviction (inf when confidence is 1), count;
        sorted by lift then support, descending, then by antecedents and consequents (a total
        order: equal metrics never leave the row order to chance).
    """
    sup = {
        tuple(s): v for s, v in zip(itemsets["itemset"].to_list(), itemsets["support"], strict=True)
    }
    cnt = {
        tuple(s): v for s, v in zip(itemsets["itemset"].to_list(), itemsets["count"], strict=True)
    }
    rows = []
    for items, s_ac in sup.items():
        if len(items) < 2:
            continue
        for r in range(1, len(items)):
            for ante in combinations(items, r):
                cons = tuple(i for i in items if i not in ante)
                s_a, s_c = sup[ante], sup[cons]  # subsets of a frequent itemset are frequent
                conf = s_ac / s_a
                lift = conf / s_c
                rows.append(
                    {
                        "antecedents": list(ante),
                        "consequents": list(cons),
                        "antecedent_support": s_a,
                        "consequent_support": s_c,
                        "support": s_ac,
                        "confidence": conf,
                        "lift": lift,
                        "leverage": s_ac - s_a * s_c,
                        "conviction": (1 - s_c) / (1 - conf) if conf < 1 else math.inf,
                        "count": cnt[items],
                    }
                )
    schema = {
        "antecedents": pl.List(pl.String),
        "consequents": pl.List(pl.String),
        "antecedent_support": pl.Float64,
        "consequent_support": pl.Float64,
        "support": pl.Float64,
        "confidence": pl.Float64,
        "lift": pl.Float64,
        "leverage": pl.Float64,
        "conviction": pl.Float64,
        "count": pl.Int64,
    }
    df = pl.DataFrame(rows, schema=schema)
    return df.filter((pl.col("confidence") >= min_confidence) & (pl.col("lift") >= min_lift)).sort(
        ["lift", "support", "antecedents", "consequents"], descending=[True, True, False, False]
    )


def purchase_history(
    events: ibis.Table, *, item: str = "product", start=None, end=None
) -> pl.DataFrame:
    """Canonical events in, one row per purchase event out: user_id, event_time, item, category.

    The Polars frame of :func:`purchases`, for small data and tests; at scale keep the
    expression on the engine and read it per chunk of users
    (:func:`customer_intel.recommend.user_recommendation_chunks`).
    """
    return purchases(events, item=item, start=start, end=end).to_polars()


def purchases(events: ibis.Table, *, item: str = "product", start=None, end=None) -> ibis.Table:
    """Canonical events in, an unexecuted expression of one row per purchase event out.

    Columns user_id, event_time, item (string), category: ``item`` is the item level (as in
    :func:`baskets`), ``category`` the product's category_code (or the item itself at
    category/brand level). ``start``/``end`` keep event_time in [start, end); rows without an
    item are dropped.
    """
    e = events.filter(events.event_type == "purchase")
    if start is not None:
        e = e.filter(e.event_time >= ibis.literal(start))
    if end is not None:
        e = e.filter(e.event_time < ibis.literal(end))
    col = ITEMS[item]
    e = e.filter(e[col].notnull())
    return e.select(
        C.USER_ID,
        C.EVENT_TIME,
        item=e[col].cast("string"),
        category=e.category_code if item == "product" else e[col].cast("string"),
    )


def catalog(events: ibis.Table, *, item: str = "product") -> pl.DataFrame:
    """Canonical events in, one row per item out: item, category.

    At product level the category is the product's most frequent category_code (equal counts:
    the first code in alphabetical order, a missing code last); at category or brand level it
    is the item itself.
    """
    col = ITEMS[item]
    e = events.filter(events[col].notnull())
    if item != "product":
        return (
            e.select(item=e[col].cast("string"))
            .distinct()
            .to_polars()
            .with_columns(category=pl.col("item"))
        )
    t = e.group_by([e[col], e.category_code]).agg(n=e.count())
    return (
        t.to_polars()
        .sort([col, "n", C.CATEGORY_CODE], descending=[False, True, False], nulls_last=True)
        .unique(col, keep="first", maintain_order=True)
        .select(item=pl.col(col).cast(pl.String), category=C.CATEGORY_CODE)
    )


def describe(rules_table: pl.DataFrame, itemsets: pl.DataFrame) -> str:
    """Rules and itemsets in, one sentence on how many rules there are and the strongest."""
    if rules_table.is_empty():
        return f"{itemsets.height:,} frequent itemsets but no rule passed the thresholds."
    top = rules_table.row(0, named=True)
    return (
        f"{itemsets.height:,} frequent itemsets give {rules_table.height:,} rules; the strongest, "
        f"{' + '.join(top['antecedents'])} -> {' + '.join(top['consequents'])}, has lift "
        f"{top['lift']:.1f} (bought together in {top['count']:,} baskets, confidence "
        f"{top['confidence']:.0%})."
    )
