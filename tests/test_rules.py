"""Association rules on the engine: equal to mlxtend, planted bundles found, bounded memory."""

from __future__ import annotations

import subprocess
import sys

import ibis
import numpy as np
import pandas as pd
import polars as pl
import pytest
from mlxtend.frequent_patterns import apriori
from mlxtend.frequent_patterns import association_rules as mlxtend_rules
from mlxtend.preprocessing import TransactionEncoder

from customer_intel import ingest, rules, synth
from customer_intel.params.ingest import IngestParams

from conftest import ingested_sample

BASKETS = [
    ["a", "b", "c"],
    ["a", "b"],
    ["a", "c"],
    ["b", "c", "d"],
    ["a", "b", "c", "d"],
    ["d"],
    ["a", "d"],
    ["b", "c"],
    ["a", "b", "e"],
    ["c", "e"],
    ["a", "b", "c"],
    ["b", "d"],
]


def _bi(baskets):
    rows = [(f"t{i}", it) for i, t in enumerate(baskets) for it in t]
    con = ibis.duckdb.connect()
    return con.create_table("bi", pl.DataFrame(rows, schema=["basket_id", "item"], orient="row"))


@pytest.mark.parametrize("min_support", [0.15, 0.25, 2])
def test_itemsets_and_every_rule_metric_equal_mlxtend(min_support):
    te = TransactionEncoder()
    x = pd.DataFrame(te.fit(BASKETS).transform(BASKETS), columns=te.columns_)
    frac = min_support if min_support < 1 else min_support / len(BASKETS)
    ref_sets = apriori(x, min_support=frac - 1e-12, use_colnames=True, max_len=3)
    ref = mlxtend_rules(ref_sets, metric="confidence", min_threshold=0.0)
    ours_sets = rules.frequent_itemsets(_bi(BASKETS), min_support=min_support, max_len=3)
    ours = rules.association_rules(ours_sets)
    assert {
        tuple(s): v for s, v in zip(ours_sets["itemset"], ours_sets["support"], strict=True)
    } == pytest.approx(
        {
            tuple(sorted(s)): v
            for s, v in zip(ref_sets["itemsets"], ref_sets["support"], strict=True)
        },
        rel=1e-12,
    )
    key = lambda a, c: (tuple(sorted(a)), tuple(sorted(c)))  # noqa: E731
    ref_map = {key(r.antecedents, r.consequents): r for r in ref.itertuples()}
    assert len(ref_map) == ours.height
    for r in ours.iter_rows(named=True):
        m = ref_map[key(r["antecedents"], r["consequents"])]
        assert r["antecedent_support"] == pytest.approx(m._3, rel=1e-12)
        assert r["consequent_support"] == pytest.approx(m._4, rel=1e-12)
        for name in ("support", "confidence", "lift", "leverage"):
            assert r[name] == pytest.approx(getattr(m, name), rel=1e-12, abs=1e-15), name
        if np.isinf(m.conviction):
            assert np.isinf(r["conviction"])
        else:
            assert r["conviction"] == pytest.approx(m.conviction, rel=1e-12)


def test_thresholds_and_min_count():
    sets = rules.frequent_itemsets(_bi(BASKETS), min_support=0.15)
    strong = rules.association_rules(sets, min_confidence=0.6, min_lift=1.1)
    assert (strong["confidence"] >= 0.6).all() and (strong["lift"] >= 1.1).all()
    assert rules.min_count(0.25, 12) == 3 and rules.min_count(5, 12) == 5
    with pytest.raises(ValueError, match="recommendations.min_support"):
        rules.min_count(0, 10)


def test_large_baskets_are_skipped_or_capped_and_reported():
    con = ibis.duckdb.connect()
    ev = pl.DataFrame(
        {
            "user_session": ["s1"] * 5 + ["s2"] * 2,
            "product_id": ["1", "2", "3", "4", "5", "1", "2"],
            "event_type": ["purchase"] * 7,
            "user_id": [1] * 7,
        }
    )
    t = con.create_table("ev", ev)
    bi, rep = rules.baskets(t, max_basket_items=3, large_basket_rule="skip")
    assert rep.large_baskets == 1 and rep.baskets == 1 and rep.basket_items == 2
    assert "1 baskets larger than 3 items were skipped" in rep.describe()
    bi, rep = rules.baskets(t, max_basket_items=3, large_basket_rule="cap")
    assert rep.baskets == 2 and rep.basket_items == 5


def test_excluded_items_leave_baskets_after_they_are_formed_and_supports_equal_mlxtend():
    # o1 holds only postage: it is still a basket (4 baskets), as in the textbook's count
    con = ibis.duckdb.connect()
    ev = pl.DataFrame(
        {
            "order_id": ["o1", "o2", "o2", "o2", "o3", "o3", "o4", "o5"],
            "product_id": ["POST", "A", "B", "POST", "A", "B", "A", "BAG"],
            "description": ["POSTAGE", "a", "b", "POSTAGE", "a", "b", "a", "carrier bag"],
            "event_type": ["purchase"] * 8,
            "user_id": [1, 1, 1, 1, 2, 2, 3, 3],
        }
    )
    t = con.create_table("ev_x", ev)
    plain, plain_rep = rules.baskets(t, basket="order")
    assert plain_rep.baskets == 5 and plain_rep.excluded_rows == 0
    bi, rep = rules.baskets(
        t, basket="order", exclude_items=["POST"], exclude_where="description = 'carrier bag'"
    )
    assert (rep.baskets, rep.basket_items) == (5, 5)  # A,B in o2 and o3; A in o4
    assert (rep.excluded_rows, rep.excluded_only_baskets) == (3, 2)  # o1 and o5
    assert "2 baskets held only excluded items" in rep.describe()
    ours = rules.frequent_itemsets(bi, min_support=0.1, max_len=2, n_baskets=rep.baskets)
    # mlxtend on the one-hot table of the same five baskets (o1 and o5 are all False)
    onehot = pd.DataFrame(
        {"A": [False, True, True, True, False], "B": [False, True, True, False, False]}
    )
    ref = apriori(onehot, min_support=0.1, use_colnames=True)
    expected = {tuple(sorted(s)): v for s, v in zip(ref["itemsets"], ref["support"], strict=True)}
    got = {tuple(sorted(s)): v for s, v in zip(ours["itemset"], ours["support"], strict=True)}
    assert got == pytest.approx(expected)
    assert got[("A", "B")] == pytest.approx(2 / 5)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return ingested_sample(tmp_path_factory.mktemp("rules"), 300_000, seed=8)


def test_planted_bundles_are_top_rules_with_their_lift(generated):
    events, info = generated
    bi, rep = rules.baskets(events)
    sets = rules.frequent_itemsets(bi, min_support=0.001, max_len=2, n_baskets=rep.baskets)
    found = rules.association_rules(sets, min_lift=1.0)
    pairs = found.filter(pl.col("antecedents").list.first() < pl.col("consequents").list.first())
    bundles = pl.read_parquet(info.truth_dir / "bundles.parquet").filter(pl.col("support") >= 0.001)
    assert bundles.height >= 10
    top = pairs.head(3 * bundles.height)
    top_pairs = {(a[0], c[0]) for a, c in zip(top["antecedents"], top["consequents"], strict=True)}
    lifts = {
        (a[0], c[0]): v
        for a, c, v in zip(pairs["antecedents"], pairs["consequents"], pairs["lift"], strict=True)
    }
    for b in bundles.iter_rows(named=True):
        key = tuple(sorted((str(b["product_a"]), str(b["product_b"]))))
        assert key in top_pairs, f"planted bundle {key} not among the top rules"
        assert lifts[key] == pytest.approx(b["planted_lift"], rel=0.2)


@pytest.mark.slow
def test_rules_step_memory_stays_within_a_plain_purchase_table(tmp_path):
    """1M events: the rules step's peak RSS is within a small factor of loading purchases."""
    info = synth.generate(tmp_path / "s", 1_000_000, seed=3)
    canonical = tmp_path / "events.parquet"
    ingest.ingest(
        str(info.events_path),
        IngestParams(),
        events_out=canonical,
        rejects_out=tmp_path / "rj.parquet",
    )
    common = (
        "import sys, ibis, polars as pl; from customer_intel import rules; "
        "from customer_intel.runs import peak_rss_mb; "
    )
    plain = common + (
        "pl.read_parquet(sys.argv[1]).filter(pl.col('event_type') == 'purchase');"
        "print(peak_rss_mb())"
    )
    engine = common + (
        "con = ibis.duckdb.connect(); ev = con.read_parquet(sys.argv[1]);"
        "bi, rep = rules.baskets(ev); s = rules.frequent_itemsets(bi, min_support=0.0005, n_baskets=rep.baskets);"
        "rules.association_rules(s); print(peak_rss_mb())"
    )
    rss = [
        float(
            subprocess.run(
                [sys.executable, "-c", code, str(canonical)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[-1]
        )
        for code in (plain, engine)
    ]
    assert rss[1] < 2.0 * rss[0], rss


def test_order_lines_dataset_gives_rules_per_invoice(tmp_path):
    """The online_retail profile: invoices become baskets through params alone."""
    from customer_intel.params import load_params
    from customer_intel.paths import PARAMS_DIR

    p = load_params(PARAMS_DIR / "online_retail.yaml")
    ev = tmp_path / "ev.parquet"
    ingest.ingest(p.ingest.input_path, p.ingest, events_out=ev, rejects_out=tmp_path / "rj.parquet")
    con = ibis.duckdb.connect()
    events = con.read_parquet(str(ev), table_name="events")
    bi, rep = rules.baskets(events, basket=p.recommendations.basket)
    assert rep.baskets == 3  # invoices 536365, 536366, 536367 (the others were rejected)
    found = rules.association_rules(
        rules.frequent_itemsets(bi, min_support=1, n_baskets=rep.baskets)
    )
    assert {"85123A", "71053"} <= set(found["antecedents"].explode()) | set(
        found["consequents"].explode()
    )


def test_basket_and_itemset_errors_name_the_key():
    con = ibis.duckdb.connect()
    t = con.create_table(
        "ev",
        pl.DataFrame(
            {"user_session": ["s"], "product_id": ["1"], "event_type": ["purchase"], "user_id": [1]}
        ),
    )
    with pytest.raises(ValueError, match="recommendations.basket: expected one of"):
        rules.baskets(t, basket="week")
    with pytest.raises(ValueError, match="recommendations.item: expected one of"):
        rules.baskets(t, item="colour")
    with pytest.raises(ValueError, match="recommendations.large_basket_rule"):
        rules.baskets(t, large_basket_rule="drop")
    with pytest.raises(ValueError, match="needs an order_id column"):
        rules.baskets(t, basket="order")
    with pytest.raises(ValueError, match="recommendations.max_len: expected 1..3"):
        rules.frequent_itemsets(_bi(BASKETS), min_support=0.1, max_len=4)


def test_user_day_and_brand_baskets():
    import datetime as dt

    con = ibis.duckdb.connect()
    t0 = dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC)
    ev = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 2],
            "user_session": ["s1", "s2", "s3", "s4"],
            "brand": ["x", "y", "z", "x"],
            "product_id": ["1", "2", "3", "4"],
            "event_type": ["purchase", "purchase", "cart", "purchase"],
            "event_time": [t0, t0 + dt.timedelta(hours=5), t0, t0 + dt.timedelta(days=1)],
        }
    )
    t = con.create_table("ev", ev)
    bi, rep = rules.baskets(t, basket="user_day", item="brand")
    assert rep.baskets == 2  # user 1 on Jan 1 (brands x, y: two sessions, one day), user 2
    got = sorted(bi.to_polars().group_by("basket_id").agg(pl.col("item").sort())["item"].to_list())
    assert got == [["x"], ["x", "y"]]
    bi, rep = rules.baskets(t, basket="user_day", item="brand", include_carts=True)
    assert rep.basket_items == 4  # the cart of brand z joins user 1's day


def test_itemsets_rules_and_catalog_have_a_total_order():
    """Issue 13: equal supports and lifts never leave the row order to the engine."""
    sets = rules.frequent_itemsets(_bi(BASKETS), min_support=0.15)
    again = rules.frequent_itemsets(_bi(BASKETS[::-1]), min_support=0.15)
    assert sets.equals(again)
    tied = sets.filter(pl.col("length") == 1)
    assert (
        tied.equals(tied.sort(["support", "itemset"], descending=[True, False]))
        and tied["support"].is_duplicated().any()
    )
    found, found_again = rules.association_rules(sets), rules.association_rules(again[::-1])
    assert found.equals(found_again)
    assert found.select("lift", "support").is_duplicated().any()
    con = ibis.duckdb.connect()
    ev = con.create_table(
        "ev",
        pl.DataFrame(
            {
                "product_id": [1, 1, 1, 1, 2, 2],
                "category_code": ["z.cat", "a.cat", "z.cat", "a.cat", None, None],
            }
        ),
    )
    cat = rules.catalog(ev).sort("item")
    assert cat.rows() == [("1", "a.cat"), ("2", None)]  # equal counts: the first code


@pytest.mark.parametrize("rule", ["skip", "cap"])
def test_baskets_before_a_time_equal_baskets_of_the_earlier_events(generated, rule):
    """The evaluation's training baskets come from the stage's basket table (``before=``)."""
    events, _ = generated
    cut = events.event_time.max().to_pyarrow().as_py() - pd.Timedelta(days=9).to_pytimedelta()
    whole, _ = rules.baskets(events, max_basket_items=3, large_basket_rule=rule)
    got, got_rep = rules.baskets(events, max_basket_items=3, large_basket_rule=rule, before=cut)
    want, want_rep = rules.baskets(
        events.filter(events.event_time < cut), max_basket_items=3, large_basket_rule=rule
    )
    assert got_rep == want_rep and want_rep.large_baskets > 0
    assert (
        got.to_polars().sort("basket_id", "item").equals(want.to_polars().sort("basket_id", "item"))
    )
    assert whole.count().to_pyarrow().as_py() > got.count().to_pyarrow().as_py()
