"""Ingestion: every row kept, rejected with a reason, or counted as a duplicate."""

from __future__ import annotations

import gzip
import shutil
import zipfile
from pathlib import Path

import polars as pl
import pytest

from customer_intel import ingest
from customer_intel.columns import CANONICAL_COLUMNS
from customer_intel.params import load_params
from customer_intel.params.ingest import IngestParams
from customer_intel.paths import PARAMS_DIR

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"


def _run(path, tmp_path, **overrides) -> tuple[ingest.IngestReport, pl.DataFrame, pl.DataFrame]:
    p = IngestParams(**overrides)
    tmp_path.mkdir(parents=True, exist_ok=True)
    ev, rj = tmp_path / "events.parquet", tmp_path / "rejects.parquet"
    report = ingest.ingest(str(path), p, events_out=ev, rejects_out=rj)
    return report, pl.read_parquet(ev, hive_partitioning=False), pl.read_parquet(rj)


def test_crafted_bad_file_gives_each_reason_with_exact_counts(tmp_path):
    report, events, rejects = _run(FIXTURES / "bad_events.csv", tmp_path)
    assert report.rows_in == 15
    assert report.rejected == {
        "malformed_line": 2,  # a line with an extra field, a line with too few
        "unparseable_timestamp": 1,
        "unknown_event_type": 1,
        "null_user_id": 1,
        "null_product_id": 1,
        "invalid_price": 3,  # negative, inf, not a number
        "cancelled_order": 0,
        "filtered": 0,
    }
    assert report.duplicates == 1
    assert report.rows_kept == 5 == events.height
    assert report.rows_in == report.rows_kept + report.rows_rejected + report.duplicates
    assert sorted(rejects["reason"].value_counts().rows()) == sorted(
        (r, n) for r, n in report.rejected.items() if n
    )
    malformed = rejects.filter(pl.col("reason") == "malformed_line")
    assert sorted(malformed["line_number"].to_list()) == [14, 15]
    assert malformed["raw_line"].str.contains("1005").any()
    bad_ts = rejects.filter(pl.col("reason") == "unparseable_timestamp")
    assert bad_ts["raw_event_time"].to_list() == ["yesterday at noon"]
    summary = dict(report.summary().iter_rows())
    assert summary["rows_in"] == 15 and summary["rejected:invalid_price"] == 3


def test_canonical_schema_and_values(tmp_path):
    _, events, _ = _run(FIXTURES / "bad_events.csv", tmp_path)
    assert events.columns == list(CANONICAL_COLUMNS)
    assert events.schema["event_time"] == pl.Datetime("us", "UTC")
    first = events.sort("event_time").row(0, named=True)
    assert first["event_type"] == "view" and first["price"] == 100.5
    assert first["event_time"].isoformat() == "2019-10-01T00:00:00+00:00"
    assert events.filter(pl.col("user_id") == 502)["category_code"].to_list() == [None]
    # the stored layout: digit-only ids as the smallest integers, prices as Float32 (exact)
    assert events.schema["user_id"] == pl.Int32 and events.schema["price"] == pl.Float32
    assert events.schema["category_id"] == pl.Int64  # 2053013555631882655 needs 64 bits


def test_duplicates_can_be_kept(tmp_path):
    report, events, _ = _run(FIXTURES / "bad_events.csv", tmp_path, drop_duplicates=False)
    assert report.duplicates == 0 and events.height == 6


def test_filters_are_counted_and_bad_filters_name_the_key(tmp_path):
    report, events, _ = _run(FIXTURES / "bad_events.csv", tmp_path, filters=["price < 50"])
    assert report.rejected["filtered"] == 5  # filters apply before duplicates are dropped
    assert events["price"].max() < 50
    with pytest.raises(ValueError, match=r"ingest\.filters\[0\]: .*unknown column"):
        _run(FIXTURES / "bad_events.csv", tmp_path, filters=["amount < 50"])
    with pytest.raises(ValueError, match=r"ingest\.filters\[0\]: .*not allowed"):
        _run(FIXTURES / "bad_events.csv", tmp_path, filters=["read_text('/etc/passwd') IS NULL"])


def test_missing_column_lists_missing_and_present(tmp_path):
    with pytest.raises(
        ingest.InputError,
        match=r"lacks column\(s\) \['ts'\].*it has \['brand', .*'user_session'\]",
    ):
        _run(
            FIXTURES / "bad_events.csv",
            tmp_path,
            column_map={
                "event_time": "ts",
                "event_type": "event_type",
                "user_id": "user_id",
                "product_id": "product_id",
                "price": "price",
            },
        )


@pytest.mark.parametrize("kind", ["csv.gz", "parquet", "jsonl", "zip"])
def test_other_formats_give_the_same_events(tmp_path, kind):
    src = FIXTURES / "online_retail.csv"
    p = load_params(PARAMS_DIR / "online_retail.yaml").ingest
    base_report, base, _ = _run(src, tmp_path / "base", **p.model_dump() | {"input_path": None})
    frame = pl.read_csv(src, infer_schema=False)
    target = tmp_path / f"in.{kind}"
    if kind == "csv.gz":
        with src.open("rb") as f, gzip.open(target, "wb") as g:
            shutil.copyfileobj(f, g)
    elif kind == "parquet":
        frame.write_parquet(target)
    elif kind == "jsonl":
        frame.write_ndjson(target)
    else:
        with zipfile.ZipFile(target, "w") as z:
            z.write(src, "export/online_retail.csv")
    report, events, _ = _run(target, tmp_path / kind, **p.model_dump() | {"input_path": None})
    assert report.rows_kept == base_report.rows_kept
    assert sorted(events["price"].to_list()) == sorted(base["price"].to_list())


def test_order_lines_table_mapped_by_params_alone(tmp_path):
    p = load_params(PARAMS_DIR / "online_retail.yaml").ingest
    report, events, rejects = _run(FIXTURES / "online_retail.csv", tmp_path, **p.model_dump())
    assert report.rows_in == 11
    assert report.rejected["cancelled_order"] == 2  # C536379 and the negative-quantity return
    assert report.rejected["null_user_id"] == 1
    assert report.rejected["unparseable_timestamp"] == 1
    assert report.duplicates == 1
    assert report.rows_kept == 6
    assert set(events["event_type"]) == {"purchase"}
    line = events.filter(pl.col("product_id") == "84879").row(0, named=True)
    assert line["price"] == pytest.approx(32 * 1.69)  # unit price x quantity
    assert line["quantity"] == 32 and line["order_id"] == "536367"
    assert line["user_session"] == "536367"  # the invoice is the basket
    assert line["Country"] == "United Kingdom" and line["Description"].startswith("ASSORTED")
    # 8:34 in London on 1 Dec 2010 is 8:34 UTC (GMT)
    assert line["event_time"].isoformat() == "2010-12-01T08:34:00+00:00"


def test_sessions_are_derived_when_the_source_has_none(tmp_path):
    src = tmp_path / "nosession.csv"
    src.write_text(
        "ts,kind,item,cost,uid\n"
        "2020-01-01 10:00:00,view,1,1.0,7\n"
        "2020-01-01 10:20:00,view,2,1.0,7\n"
        "2020-01-01 10:51:00,view,3,1.0,7\n"
        "2020-01-01 10:52:00,view,3,1.0,8\n"
    )
    report, events, _ = _run(
        src,
        tmp_path,
        column_map={
            "event_time": "ts",
            "event_type": "kind",
            "product_id": "item",
            "price": "cost",
            "user_id": "uid",
        },
        timestamp_format="%Y-%m-%d %H:%M:%S",
    )
    assert report.rows_kept == 4
    by_time = events.sort("event_time")["user_session"].to_list()
    assert by_time[0] == by_time[1] != by_time[2]  # 31-minute gap starts a new session
    assert by_time[3] != by_time[2]  # another user
    _, events15, _ = _run(
        src,
        tmp_path / "g15",
        column_map={
            "event_time": "ts",
            "event_type": "kind",
            "product_id": "item",
            "price": "cost",
            "user_id": "uid",
        },
        timestamp_format="%Y-%m-%d %H:%M:%S",
        session_gap_minutes=15,
    )
    assert events15.filter(pl.col("user_id") == 7)["user_session"].n_unique() == 3


def test_rees46_extract_with_its_own_labels(tmp_path, rees46_head):
    report, events, rejects = _run(rees46_head, tmp_path)
    assert report.rows_in == 17_435
    assert report.rows_kept == 17_429 == events.height
    assert report.duplicates == 5
    assert report.rejected["malformed_line"] == 1 and report.rows_rejected == 1
    assert rejects["line_number"].to_list() == [17_436]  # the truncated last line (header = 1)
    assert dict(events["event_type"].value_counts().iter_rows()) == {
        "view": 17_051,
        "cart": 164,
        "purchase": 214,  # 17,055/165/214 less the 5 repeats
    }


def test_describe_reads_the_numbers(tmp_path):
    report, _, _ = _run(FIXTURES / "bad_events.csv", tmp_path)
    text = ingest.describe(report)
    assert text.startswith("15 rows read from 1 file(s): 5 kept") and "3 invalid price" in text


_NOSESSION_MAP = {
    "event_time": "ts",
    "event_type": "kind",
    "product_id": "item",
    "price": "cost",
    "user_id": "uid",
}


def test_a_derived_session_goes_on_across_midnight(tmp_path):
    src = tmp_path / "midnight.csv"
    src.write_text(
        "ts,kind,item,cost,uid\n"
        "2020-01-02 00:10:00,view,2,1.0,7\n"  # rows out of time order on purpose
        "2020-01-01 23:50:00,view,1,1.0,7\n"
        "2020-01-02 00:50:00,view,3,1.0,7\n"
        "2020-01-03 09:00:00,view,3,1.0,7\n"
        "2020-01-02 09:00:00,view,3,1.0,8\n"
    )
    _, events, _ = _run(
        src, tmp_path, column_map=_NOSESSION_MAP, timestamp_format="%Y-%m-%d %H:%M:%S"
    )
    sessions = dict(
        events.select(pl.col("event_time").dt.strftime("%d %H:%M"), "user_session").iter_rows()
    )
    assert sessions == {
        "01 23:50": "7-1",
        "02 00:10": "7-1",  # 20 minutes after the last event, across midnight: same session
        "02 00:50": "7-2",  # 40 minutes later: a new one
        "03 09:00": "7-3",
        "02 09:00": "8-1",
    }


def test_csv_structure_blank_lines_quotes_and_padding(tmp_path):
    src = tmp_path / "messy.csv"
    src.write_bytes(
        b"event_time,event_type,product_id,category_id,category_code,brand,price,user_id,"
        b"user_session\r\n"
        b'2019-10-01 00:00:00 UTC,view,1,2,"kitchen, knives",acme,1.5,9,s\r\n'  # quoted sep
        b"\r\n"  # a blank line: counted as a broken line, not skipped silently
        b"2019-10-01 00:01:00 UTC , view , 1 ,2,,acme, 1.5 , 9 ,s\r\n"  # padded values
        b"2019-10-01 00:02:00 UTC,view,1,2,,acme,1.5,9,s,\r\n"  # a trailing separator
    )
    report, events, rejects = _run(src, tmp_path)
    assert report.rows_in == 4 and report.rows_kept == 2
    assert report.rejected["malformed_line"] == 2
    assert rejects.sort("line_number")["line_number"].to_list() == [3, 5]
    assert rejects.sort("line_number")["detail"].to_list() == [
        "expected 9 fields, found 1",
        "expected 9 fields, found 10",
    ]
    assert events.sort("event_time")["category_code"].to_list() == ["kitchen, knives", None]
    assert events["event_type"].to_list() == ["view", "view"] and events["price"].sum() == 3.0
    assert set(events["user_id"]) == {9} and set(events["user_session"]) == {"s"}


def test_a_quoted_line_break_is_a_clear_error(tmp_path):
    src = tmp_path / "multiline.csv"
    src.write_text(
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,"
        "user_session\n"
        '2019-10-01 00:00:00 UTC,view,1,2,"two\nlines",acme,1.5,9,s\n'
    )
    with pytest.raises(ingest.InputError, match=r"multiline\.csv: line 2 has an unbalanced"):
        _run(src, tmp_path)


def test_duplicates_across_files_and_near_duplicates(tmp_path):
    header = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
    row = "2019-10-01 00:00:00 UTC,view,1,2,,acme,{price},9,s\n"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text(header + row.format(price="1.5") * 3)
    (tmp_path / "in" / "b.csv").write_text(
        header + row.format(price="1.5") + row.format(price="1.50") + row.format(price="1.6")
    )
    report, events, _ = _run(tmp_path / "in" / "*.csv", tmp_path / "out")
    # 1.5 and 1.50 are the same price once parsed; 1.6 differs in one column only
    assert report.rows_in == 6 and report.duplicates == 4
    assert sorted(events["price"].cast(pl.Float64).round(2).to_list()) == [1.5, 1.6]


def test_semantic_rejects_carry_their_csv_line(tmp_path):
    _, _, rejects = _run(FIXTURES / "bad_events.csv", tmp_path)
    bad_ts = rejects.filter(pl.col("reason") == "unparseable_timestamp").row(0, named=True)
    assert bad_ts["line_number"] == 7 and bad_ts["source_file"].endswith("bad_events.csv")


_HEADER = (
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
)
_CLEAN_ROWS = [
    "2019-10-01 00:00:00 UTC,view,1005,2053013555631882655,electronics.phone,new balance,12.5,7,s1",
    '2019-10-01 00:01:00 UTC,cart,1005,2053013555631882655,"",samsung,12.5,7,s1',
    "2019-10-01 00:02:00 UTC,purchase,1006,2053013555631882655,,apple,3.25,8,s2",
]


@pytest.mark.parametrize(
    "padded_row",
    [
        " 2019-10-01 00:00:00 UTC,view,1005,2053013555631882655,electronics.phone,new balance,12.5,7,s1",
        "2019-10-01 00:00:00 UTC, view,1005,2053013555631882655,electronics.phone,new balance,12.5,7,s1",
        "2019-10-01 00:00:00 UTC,view,1005 ,2053013555631882655,electronics.phone,new balance,12.5,7,s1",
        '2019-10-01 00:00:00 UTC,view,1005,2053013555631882655,electronics.phone," new balance",12.5,7,s1',
        "2019-10-01 00:00:00 UTC,view,1005,2053013555631882655,electronics.phone,new balance,12.5,7,s1\t",
    ],
)
def test_padded_values_are_trimmed_and_clean_files_skip_the_trim(tmp_path, padded_row):
    """The line scan spots any blank beside a separator, quote or line end; then every value
    is trimmed. A file without one skips the trim and reads the same values."""
    clean, padded = tmp_path / "clean.csv", tmp_path / "padded.csv"
    clean.write_text(_HEADER + "\n".join(_CLEAN_ROWS) + "\n")
    padded.write_text(_HEADER + "\n".join([padded_row, *_CLEAN_ROWS[1:]]) + "\n")
    assert ingest._broken_lines(clean, 9, ",", "clean.csv")[2] is False
    assert ingest._broken_lines(padded, 9, ",", "padded.csv")[2] is True
    _, want, _ = _run(clean, tmp_path / "c")
    report, got, _ = _run(padded, tmp_path / "p")
    assert report.rows_kept == 3 and report.rows_rejected == 0
    assert got.equals(want)
    first = want.filter(pl.col("event_type") == "view").row(0, named=True)
    assert first["brand"] == "new balance" and first["product_id"] == 1005
    assert want["category_code"].null_count() == 2  # "" and an empty field are both missing


def test_duplicates_match_a_plain_unique_keep_first(tmp_path):
    """Dropping duplicates keeps exactly what ``unique(keep='first')`` over every column read keeps.

    Few users, products and seconds make many exact duplicates, interleaved with rows that
    differ in one column at the same user and instant, or only in a carried column (a
    description): those are not duplicates.
    """
    import numpy as np

    rng = np.random.default_rng(7)
    n = 5_000
    src = pl.DataFrame(
        {
            "event_time": [f"2019-10-0{d} 00:00:0{s} UTC" for d, s in rng.integers(1, 3, (n, 2))],
            "event_type": rng.choice(["view", "cart"], n),
            "product_id": rng.integers(1, 4, n),
            "category_id": 5,
            "category_code": rng.choice(["a.b", ""], n),
            "brand": "acme",
            "price": rng.choice(["1.5", "1.50", "2.25"], n),
            "user_id": rng.integers(1, 6, n),
            "user_session": "s",
            "note": rng.choice(["gift", "plain"], n),
        }
    )
    path = tmp_path / "dups.csv"
    src.write_csv(path)
    report, events, _ = _run(path, tmp_path / "out", carry_columns=["note"])
    typed = pl.read_csv(path, schema_overrides={"category_code": pl.String}).with_columns(
        pl.col("event_time").str.to_datetime("%Y-%m-%d %H:%M:%S UTC", time_zone="UTC")
    )
    keys = [*CANONICAL_COLUMNS, "note"]
    want = typed.unique(subset=keys, keep="first", maintain_order=True)
    assert report.duplicates == n - want.height > 3_000
    assert typed.unique(subset=list(CANONICAL_COLUMNS)).height < want.height  # notes differ
    got = events.select(
        pl.col("user_id").cast(pl.Int64), "event_time", pl.col("product_id").cast(pl.Int64), "note"
    ).sort(pl.all())
    ref = want.select("user_id", "event_time", "product_id", "note").sort(pl.all())
    assert (
        got.group_by(pl.all())
        .len()
        .sort(pl.all())
        .equals(ref.group_by(pl.all()).len().sort(pl.all()))
    )


def test_a_carried_column_named_like_a_reject_field_is_kept(tmp_path):
    path = tmp_path / "extra.csv"
    path.write_text(
        _HEADER.rstrip("\n")
        + ",raw_note\n"
        + "\n".join(f"{r},n{i}" for i, r in enumerate(_CLEAN_ROWS))
        + "\n"
    )
    _, events, _ = _run(path, tmp_path / "out", carry_columns=["raw_note"])
    assert sorted(events["raw_note"].to_list()) == ["n0", "n1", "n2"]
