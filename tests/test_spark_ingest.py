"""``ingest.engine: spark`` against the Polars path, on every crafted bad-input file.

For each file of ``tests/fixtures/bad_inputs``: the same row accounting (rows in, kept,
duplicates, rejects by reason), the same kept rows (every column, after sorting) and the same
rejects (reason, file, line, detail, raw fields); or the same error; ZIP archives are refused by
params validation. One SparkSession (local, 1 GB driver) serves the module.
"""

from __future__ import annotations

import re

import polars as pl
import pytest
from pydantic import ValidationError

from customer_intel import ingest, ingest_spark, spark
from customer_intel.params.ingest import IngestParams
from customer_intel.sources import InputError, expand_inputs
from test_bad_inputs import BAD, CASES

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(
        spark.requirements_problem() is not None,
        reason=f"engine spark unavailable: {spark.requirements_problem()}",
    ),
]

SETTINGS = {"master": "local[2]", "driver_memory": "1g", "shuffle_partitions": 2}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = spark.session(SETTINGS, tmp_path_factory.mktemp("spark"))
    yield s
    spark.shutdown_jvm()


def _both(path, p: IngestParams, tmp_path, session):
    """(Polars report, events, rejects) and the same from Spark, or the errors raised."""
    out = []
    for engine in ("polars", "spark"):
        d = tmp_path / engine
        events, rejects = d / "events", d / "rejects.parquet"
        try:
            with expand_inputs(str(path), p.format) as inputs:
                kw = {"events_out": events, "rejects_out": rejects, "work_dir": d / "work"}
                if engine == "polars":
                    report = ingest.ingest_files(inputs, p, **kw)
                else:
                    report = ingest_spark.ingest_files(inputs, p, spark=SETTINGS, **kw)
        except InputError as e:
            out.append(e)
            continue
        files = sorted(events.glob("event_date=*/part-0.parquet"))
        kept = pl.read_parquet(files, hive_partitioning=False) if files else None
        out.append((report, kept, pl.read_parquet(rejects)))
    return out


def _normal(df: pl.DataFrame) -> pl.DataFrame:
    """Rows sorted; the Enum event type as its text (Spark writes text)."""
    return df.with_columns(pl.col(pl.Enum).cast(pl.String)).sort(pl.all(), nulls_last=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_spark_ingest_equals_polars_on_bad_input(name, tmp_path, session):
    path = BAD / name
    if name.endswith(".zip"):
        with pytest.raises(ValidationError, match="engine 'spark' reads .* not 'zip'"):
            IngestParams(engine="spark", input_path=str(path))
        return
    polars_out, spark_out = _both(path, IngestParams(), tmp_path, session)
    if isinstance(polars_out, Exception):
        assert isinstance(spark_out, InputError), spark_out
        assert re.search(CASES[name][1], str(spark_out)), str(spark_out)
        assert str(spark_out) == str(polars_out)
        return
    assert not isinstance(spark_out, Exception), spark_out
    (p_report, p_kept, p_rejects), (s_report, s_kept, s_rejects) = polars_out, spark_out
    assert s_report.summary().equals(p_report.summary())
    assert s_report.rows_in == p_report.rows_in > 0 or name in ("empty.csv", "header_only.csv")
    if p_kept is None:
        assert s_kept is None
    else:
        assert s_kept.schema == p_kept.with_columns(pl.col(pl.Enum).cast(pl.String)).schema
        assert _normal(s_kept).equals(_normal(p_kept))
    assert _normal(s_rejects).equals(_normal(p_rejects.select(s_rejects.columns)))
    assert s_rejects.columns == p_rejects.columns


def test_spark_ingest_keeps_file_order_sessions_types_and_filters(tmp_path, session):
    """Derived sessions across midnight, a text id, a Float64 price, a filter, a carry column,
    duplicates across two files, a time zone with a daylight-saving change: as on Polars."""
    rows = [
        # time (Europe/Berlin), type, user, product, price, note
        ("2019-10-26 23:50:00", "view", "7", "p1", "1.25", "a"),
        ("2019-10-27 00:10:00", "cart", "7", "p1", "1.25", "b"),  # same session, next day
        ("2019-10-27 02:30:00", "view", "7", "p2", "0.1234567", "c"),  # ambiguous: rejected
        ("2019-10-27 05:00:00", "purchase", "7", "p2", "3.50", "d"),  # new session
        ("2019-10-27 05:00:00", "purchase", "7", "p2", "3.50", "d"),  # duplicate
        ("2019-10-27 06:00:00", "view", "007", "p3", "2", "e"),  # text user id
        ("2019-10-27 06:00:00", "view", "8", "p3", "200", "f"),  # filtered (price >= 100)
        ("2019-03-31 02:30:00", "view", "8", "p3", "2", "g"),  # does not exist: rejected
    ]
    header = "ts,kind,uid,pid,amount,note\n"
    lines = [",".join(r) + "\n" for r in rows]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text(header + "".join(lines[:5]))
    (tmp_path / "in" / "b.csv").write_text(header + "".join(lines[4:]))  # line 5 again
    p = IngestParams(
        column_map={
            "event_time": "ts",
            "event_type": "kind",
            "user_id": "uid",
            "product_id": "pid",
            "price": "amount",
        },
        timestamp_format="%Y-%m-%d %H:%M:%S",
        timezone="Europe/Berlin",
        filters=["price < 100"],
        carry_columns=["note"],
    )
    polars_out, spark_out = _both(tmp_path / "in" / "*.csv", p, tmp_path, session)
    (p_report, p_kept, p_rejects), (s_report, s_kept, s_rejects) = polars_out, spark_out
    assert p_report.rejected["unparseable_timestamp"] == 2
    assert p_report.rejected["filtered"] == 1 and p_report.duplicates == 2
    assert s_report.summary().equals(p_report.summary())
    assert s_kept.schema == p_kept.with_columns(pl.col(pl.Enum).cast(pl.String)).schema
    # kept rows in the same order (user, time, then file order), sessions numbered alike
    assert s_kept.equals(p_kept.with_columns(pl.col(pl.Enum).cast(pl.String)))
    # by day (UTC), then user: 2019-10-26 23:50 and 10-27 00:10 in Berlin are both on the 26th
    assert s_kept["user_session"].to_list() == ["7-1", "7-1", "007-1", "7-2"]
    assert _normal(s_rejects).equals(_normal(p_rejects))


def test_spark_ingest_reads_parquet_and_json_lines(tmp_path, session):
    """Typed sources: integer ids stay integers, timestamps typed as instants."""
    frame = pl.DataFrame(
        {
            "event_time": ["2019-10-01 00:00:00 UTC", "2019-10-01 00:00:01 UTC", "bad"],
            "event_type": ["view", "purchase", "view"],
            "user_id": [1, 2, 3],
            "user_session": ["s1", "s2", "s3"],
            "product_id": [10, 11, 12],
            "category_id": [None, None, None],
            "category_code": ["a", None, "c"],
            "brand": ["x", "y", None],
            "price": [1.5, -1.0, 2.0],
        },
        schema_overrides={"category_id": pl.Int64},
    )
    for kind, write in (("parquet", frame.write_parquet), ("jsonl", frame.write_ndjson)):
        path = tmp_path / f"events.{kind}"
        write(path)
        polars_out, spark_out = _both(path, IngestParams(), tmp_path / kind, session)
        (p_report, p_kept, p_rejects), (s_report, s_kept, s_rejects) = polars_out, spark_out
        assert p_report.rows_kept == 1 and p_report.rows_rejected == 2
        assert s_report.summary().equals(p_report.summary()), kind
        assert _normal(s_kept).equals(_normal(p_kept)), kind
        assert _normal(s_rejects).equals(_normal(p_rejects)), kind


def test_stage_on_spark_counts_the_jvm_in_its_peak_memory(tmp_path):
    """The real 01_ingest notebook run by the runner, on Polars and on Spark: the local JVM (a
    child of the stage's kernel) is in the manifest's peak RSS and in its children's part."""
    import yaml

    from customer_intel import pipeline
    from customer_intel.params import load_params
    from customer_intel.stages import STAGES

    entries = {}
    for engine in ("polars", "spark"):
        profile = tmp_path / f"{engine}.yaml"
        profile.write_text(
            yaml.safe_dump(
                {
                    "common": {"output_root": str(tmp_path / engine)},
                    "ingest": {"input_path": str(BAD / "duplicates.csv"), "engine": engine},
                    "spark": SETTINGS,
                }
            )
        )
        stages = tuple(s for s in STAGES if s.name == "ingest")
        result = pipeline.Runner(load_params(profile), profile, stages=stages).run()
        assert result.exit_code == 0, result.message
        entries[engine] = entry = result.manifest["stages"]["ingest"]
        assert entry["rows_in"] == 13 and entry["rows_out"] == 10
        assert entry["peak_rss_mb"] >= entry["children_peak_rss_mb"] + 100, entry  # + kernel
    print({e: (v["peak_rss_mb"], v["children_peak_rss_mb"]) for e, v in entries.items()})
    # a JVM with a 1 GB heap takes hundreds of MiB more than the Polars stage's children
    # (a headless browser draws the figure in both)
    polars, spark_ = entries["polars"], entries["spark"]
    assert spark_["children_peak_rss_mb"] > polars["children_peak_rss_mb"] + 300, entries
    assert spark_["peak_rss_mb"] > polars["peak_rss_mb"] + 300, entries


def test_spark_ingest_numbers_lines_across_file_splits(tmp_path, session):
    """A CSV read as many splits (2 KiB each): line numbers, file order of ties and derived
    sessions as on Polars -- the kept rows equal in their written order, not only sorted."""
    import random

    rng = random.Random(7)
    lines = ["t,k,u,p,price,extra"]
    for i in range(3_000):
        ts = f"2019-10-0{1 + i % 3} {rng.randrange(24):02d}:{rng.randrange(60):02d}:00"
        row = [ts, rng.choice(["view", "cart", "buy"]), str(rng.randrange(40)), str(i % 97)]
        row += [rng.choice(["1.5", "2", "-1", "x"]), rng.choice(["a", "b"])]
        if i % 401 == 0:
            row.append("oops")  # one field too many: malformed_line
        lines.append(",".join(row))
        if i % 113 == 0:
            lines.append(lines[-1])  # an exact duplicate
    (tmp_path / "big.csv").write_text("\n".join(lines) + "\n")
    p = IngestParams(
        column_map={
            "event_time": "t",
            "event_type": "k",
            "user_id": "u",
            "product_id": "p",
            "price": "price",
        },
        event_type_map={"view": "view", "cart": "cart", "buy": "purchase"},
        timestamp_format="%Y-%m-%d %H:%M:%S",
        carry_columns=["extra"],
    )
    session.conf.set("spark.sql.files.maxPartitionBytes", "2048")
    try:
        assert session.read.text(str(tmp_path / "big.csv")).rdd.getNumPartitions() > 20
        polars_out, spark_out = _both(tmp_path / "big.csv", p, tmp_path, session)
    finally:
        session.conf.unset("spark.sql.files.maxPartitionBytes")
    (p_report, p_kept, p_rejects), (s_report, s_kept, s_rejects) = polars_out, spark_out
    assert p_report.rejected["malformed_line"] == 9 and p_report.duplicates == 9
    assert s_report.summary().equals(p_report.summary())
    assert s_kept.equals(p_kept.with_columns(pl.col(pl.Enum).cast(pl.String)))
    assert _normal(s_rejects).equals(_normal(p_rejects))
