"""Storage types are the smallest that hold every value; nothing is changed on the way."""

from __future__ import annotations

import polars as pl

from customer_intel import layout


def _types(**cols):
    return layout.storage_types(pl.LazyFrame(cols))


def test_ids_become_the_smallest_integer_that_holds_them():
    t = _types(
        user_id=["1", "2147483647", None],
        product_id=["-2147483649", "5", "6"],
        category_id=[1, 2, None],
        price=[1.25, 9.99, 0.0],
    )
    assert t == {
        "user_id": pl.Int32,
        "product_id": pl.Int64,  # below the Int32 range
        "category_id": pl.Int32,
        "price": pl.Float32,
    }


def test_ids_that_an_integer_would_change_stay_text():
    for value in ("85123A", "007", "+5", " 5"):  # a letter, a leading zero, a sign, a blank
        t = _types(user_id=["1", value], product_id=["1", "2"], price=[1.0, 2.0])
        assert t["user_id"] == pl.String, value


def test_price_stays_64_bit_when_32_bits_would_change_a_cent():
    assert _types(user_id=[1], product_id=[1], price=[123456.78])["price"] == pl.Float32
    assert _types(user_id=[1], product_id=[1], price=[1234567.5])["price"] == pl.Float64
    assert _types(user_id=[1], product_id=[1], price=[0.1 + 16777216.0])["price"] == pl.Float64


def test_arrange_day_casts_sorts_and_keeps_values():
    day = pl.DataFrame(
        {
            "event_time": [3, 1, 2],
            "event_type": ["view", "purchase", "cart"],
            "user_id": ["20", "10", "10"],
            "price": [1.5, 2.25, 3.0],
        }
    )
    out = layout.arrange_day(day, {"user_id": pl.Int32, "price": pl.Float32})
    assert out["user_id"].to_list() == [10, 10, 20] and out["event_time"].to_list() == [1, 2, 3]
    assert out.schema["event_type"] == pl.Enum(["view", "cart", "remove_from_cart", "purchase"])
    assert out["price"].to_list() == [2.25, 3.0, 1.5]
    widened = layout.widen(out)
    assert widened.schema["user_id"] == pl.Int64 and widened.schema["event_type"] == pl.String
    assert layout.type_names(out.schema) == {"user_id": "INTEGER", "price": "FLOAT"}
