"""Input discovery: globs and ZIP archives lose nothing and name every file they read or skip."""

from __future__ import annotations

import zipfile
from pathlib import Path

import polars as pl
import pytest

from customer_intel import ingest, sources
from customer_intel.params.ingest import IngestParams

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
HEADER = (
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
)


def _events_csv(n: int, user0: int) -> str:
    rows = [
        f"2019-10-01 00:{i // 60:02d}:{i % 60:02d} UTC,view,{1000 + i},1,,,1.5,{user0 + i},s{user0 + i}"
        for i in range(n)
    ]
    return "\n".join([HEADER, *rows]) + "\n"


def _ingest(path: str, tmp_path: Path):
    return ingest.ingest(
        path, IngestParams(), events_out=tmp_path / "e", rejects_out=tmp_path / "r.parquet"
    )


def test_zip_members_with_the_same_base_name_are_both_read(tmp_path):
    z = tmp_path / "data.zip"
    with zipfile.ZipFile(z, "w") as a:
        a.writestr("x/events.csv", _events_csv(300, 1_000))
        a.writestr("y/events.csv", _events_csv(400, 5_000))
    report = _ingest(str(z), tmp_path / "out")
    assert report.rows_in == 700 == report.rows_kept
    assert report.duplicates == 0
    assert report.files == [f"{z}!x/events.csv", f"{z}!y/events.csv"]


def test_two_archives_with_the_same_name_in_a_glob_are_both_read(tmp_path):
    for sub, user0 in (("a", 1_000), ("b", 5_000)):
        (tmp_path / sub).mkdir()
        with zipfile.ZipFile(tmp_path / sub / "data.zip", "w") as a:
            a.writestr("events.csv", _events_csv(250, user0))
    report = _ingest(str(tmp_path / "*" / "data.zip"), tmp_path / "out")
    assert report.rows_in == 500 == report.rows_kept
    assert len(set(report.files)) == 2


def test_dot_slash_members_are_data_and_metadata_is_skipped_and_listed(tmp_path):
    z = tmp_path / "mac.zip"
    with zipfile.ZipFile(z, "w") as a:
        a.writestr("./part1.csv", _events_csv(10, 1_000))
        a.writestr(".hidden/part2.csv", _events_csv(20, 2_000))
        a.writestr("__MACOSX/._part1.csv", "binary junk")
        a.writestr(".DS_Store", "junk")
        a.writestr("sub/._part3.csv", "junk")
    report = _ingest(str(z), tmp_path / "out")
    assert report.rows_in == 30 == report.rows_kept
    assert sorted(name for name, _ in report.skipped) == [
        f"{z}!.DS_Store",
        f"{z}!__MACOSX/._part1.csv",
        f"{z}!sub/._part3.csv",
    ]
    table = ingest.source_files(report)
    assert table.filter(pl.col("status").str.starts_with("skipped")).height == 3
    assert table.filter(pl.col("status") == "read")["bytes"].min() > 0
    assert "Skipped 3 archive member(s)" in ingest.describe(report)
    summary = dict(report.summary().iter_rows())
    assert summary["skipped_archive_members"] == 3


@pytest.mark.parametrize("member", ["../evil.csv", "/etc/evil.csv", "a/../../evil.csv"])
def test_zip_slip_member_paths_are_refused(tmp_path, member):
    z = tmp_path / "slip.zip"
    with zipfile.ZipFile(z, "w") as a:
        a.writestr(member, _events_csv(5, 1))
    with pytest.raises(sources.InputError, match=r"unsafe path"):
        _ingest(str(z), tmp_path / "out")
    assert not (tmp_path / "evil.csv").exists()


def test_header_only_file_in_a_glob_is_zero_rows(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "day1.csv").write_text(HEADER + "\n")
    (tmp_path / "in" / "day2.csv").write_text(_events_csv(12, 1))
    report = _ingest(str(tmp_path / "in" / "*.csv"), tmp_path / "out")
    assert report.rows_in == 12 == report.rows_kept and len(report.files) == 2


def test_corrupt_and_truncated_gzip_name_the_file(tmp_path):
    import gzip

    data = gzip.compress(_events_csv(2_000, 1).encode())
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(sources.InputError, match=r"cut\.csv\.gz: truncated or corrupt gzip"):
        _ingest(str(cut), tmp_path / "o1")
    fake = tmp_path / "fake.csv.gz"
    fake.write_text(_events_csv(5, 1))
    with pytest.raises(sources.InputError, match=r"fake\.csv\.gz: not gzip data"):
        _ingest(str(fake), tmp_path / "o2")


def test_every_row_rejected_writes_rejects_then_fails_with_counts(tmp_path):
    report = ingest.ingest(
        str(FIXTURES / "bad_events.csv"),
        IngestParams(timestamp_format="%d/%m/%Y"),
        events_out=tmp_path / "e",
        rejects_out=tmp_path / "r.parquet",
    )
    assert report.rows_kept == 0 and report.rows_in == 15
    assert pl.read_parquet(tmp_path / "r.parquet").height == report.rows_rejected
    with pytest.raises(sources.InputError, match=r"no row of 15 .*unparseable_timestamp 13"):
        ingest.require_rows_kept(report)


def test_a_huge_header_line_is_clipped_in_the_message(tmp_path):
    f = tmp_path / "oneline.csv"
    f.write_text("x" * 5_000_000)  # no newline: the whole file is the "header"
    with pytest.raises(sources.InputError) as err:
        _ingest(str(f), tmp_path / "o")
    assert len(str(err.value)) < 2_000 and "characters]" in str(err.value)
