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


_ODD_IDS = ["0", "7", "-7", "+7", "-0", "007", "-007", "00", "85123A", "1e3", "0x1F", "٣", "-"]
_ODD_IDS += ["9223372036854775807", "9223372036854775808", "-9223372036854775808", ""]


def test_split_id_is_exactly_the_print_back_check():
    """The split's integer part is non-null exactly where printing the integer back gives
    the same text (the slow check it replaces)."""
    import numpy as np

    rng = np.random.default_rng(0)
    alphabet = list("0123456789+-a ")
    random_ids = ["".join(rng.choice(alphabet, rng.integers(1, 5))) for _ in range(3_000)]
    ids = pl.DataFrame({"user_id": _ODD_IDS + random_ids + [None]})
    split = ids.with_columns(layout.split_id("user_id"), original=pl.col("user_id"))
    as_int = pl.col("original").str.to_integer(strict=False)
    printed_back = (as_int.cast(pl.String) == pl.col("original")).fill_null(False)
    check = split.select(ok=printed_back, split=pl.col("user_id").is_not_null())
    assert check["ok"].equals(check["split"], check_names=False)
    assert check["ok"].sum() > 300 and (~check["ok"]).sum() > 300  # both sides exercised
    # nothing is lost: the text part holds every value the integer part does not
    joined = pl.coalesce(pl.col("_user_id_text"), pl.col("user_id").cast(pl.String))
    assert split.select(joined)["_user_id_text"].equals(ids["user_id"], check_names=False)


def test_split_ids_give_the_same_types_and_values_as_text():
    for values in (["1", "2147483648", None], ["1", "007", "85123A"], ["-5", "3", "0"]):
        text = pl.DataFrame({"user_id": values, "price": [1.0, 2.0, 3.0]})
        split = text.with_columns(layout.split_id("user_id"))
        types = layout.storage_types(split.lazy())
        assert types == layout.storage_types(text.lazy()), values
        day = text.with_columns(event_time=pl.lit(1), event_type=pl.lit("view"))
        want = layout.arrange_day(day, types)
        got = layout.arrange_day(day.with_columns(layout.split_id("user_id")), types)
        assert got.equals(want) and "_user_id_text" not in got.columns, values


def test_write_days_types_sorts_finishes_and_writes_each_day_once(tmp_path):
    """Two staged days (text ids in the split form): one schema for both, sorted by user and
    time, ``finish`` sees the sorted day before the price cast, skipped columns are not read."""
    staged = tmp_path / "staging"
    t = pl.datetime(2024, 1, 1, 10, time_zone="UTC")
    days = {
        "2024-01-01": {"user_id": ["7", "3", "3"], "minute": [5, 9, 1], "price": [1.5, 2.25, 3.0]},
        "2024-01-02": {"user_id": ["12"], "minute": [0], "price": [4.0]},
    }
    for date, cols in days.items():
        frame = pl.DataFrame(cols).select(
            pl.col("user_id"),
            event_time=t + pl.duration(minutes=pl.col("minute")),
            event_type=pl.lit("view"),
            price=pl.col("price"),
            product_id=pl.lit("1"),
            note=pl.lit("only for rejects"),
        )
        folder = staged / f"_part={date}"
        folder.mkdir(parents=True)
        frame.lazy().pipe(layout.split_ids).collect().write_parquet(folder / "0.parquet")
    seen = []

    def finish(day: pl.DataFrame) -> pl.DataFrame:
        seen.append((day["user_id"].to_list(), day.schema["price"]))
        return day.head(2)  # drops a row, as deduplication would

    out = tmp_path / "events"
    counts = layout.write_days(
        sorted(staged.iterdir()),
        out,
        columns=["event_time", "user_id", "price", "event_type"],
        skip={"note"},
        finish=finish,
    )
    assert counts == (4, 3)
    assert seen == [([3, 3, 7], pl.Float64), ([12], pl.Float64)]
    first = pl.read_parquet(out / "event_date=2024-01-01" / "part-0.parquet")
    assert first.columns == ["event_time", "user_id", "price", "event_type"]
    assert first.schema["user_id"] == pl.Int32 and first.schema["price"] == pl.Float32
    assert first["user_id"].to_list() == [3, 3]
    assert first["price"].to_list() == [3.0, 2.25]  # user 3 at minute 1, then minute 9
    assert layout.write_days([], out, columns=["user_id"]) == (0, 0)
