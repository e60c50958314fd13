"""The bad-input campaign: every crafted input is fully accounted for or refused with a clear
error that names the file (and the line or key) -- never a silent loss.

Each case: what ``run_all.py --dry-run`` says (exit 2 when the problem can be known before
anything runs), then what ingestion does: either an error with its key words, or
``rows_in`` equal to the file's own data-line count and to kept + rejected + duplicates.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from customer_intel import ingest, pipeline
from customer_intel.params.ingest import IngestParams
from customer_intel.paths import PARAMS_DIR
from customer_intel.sources import InputError

BAD = Path(__file__).parent / "fixtures" / "bad_inputs"

#: file -> (dry-run exit code, expected ingest outcome): an error's key words (a regex), or a
#: dict of exact counts (kept, duplicates and rejects by reason).
CASES = {
    "truncated_last_line.csv": (0, {"kept": 10, "malformed_line": 1}),
    "extra_field.csv": (0, {"kept": 10, "malformed_line": 1}),
    "semicolon_delimited.csv": (2, r"semicolon_delimited\.csv lacks column.*separator ';'"),
    "missing_column.csv": (2, r"missing_column\.csv lacks column\(s\) \['price'\]"),
    "bad_timestamps.csv": (0, {"kept": 10, "unparseable_timestamp": 3}),
    "bad_prices.csv": (0, {"kept": 10, "invalid_price": 5}),
    "unknown_labels.csv": (0, {"kept": 10, "unknown_event_type": 3}),
    "null_ids.csv": (0, {"kept": 10, "null_user_id": 1, "null_product_id": 1}),
    "duplicates.csv": (0, {"kept": 10, "duplicates": 3}),
    "empty.csv": (0, {"kept": 0}),
    "header_only.csv": (0, {"kept": 0}),
    "latin1.csv": (0, r"latin1\.csv: line 7 is not UTF-8 .*iconv"),
    "bom.csv": (0, {"kept": 10}),
    "crlf.csv": (0, {"kept": 10}),
    "quoted_delimiters.csv": (0, {"kept": 11}),
    "quoted_newline.csv": (0, r"quoted_newline\.csv: line 7 has an unbalanced quote.*Parquet"),
    "corrupt.csv.gz": (0, r"corrupt\.csv\.gz: truncated or corrupt gzip"),
    "not_gzip.csv.gz": (2, r"not_gzip\.csv\.gz: not gzip data"),
    "same_named_members.zip": (0, {"kept": 10}),
    "dot_slash_members.zip": (0, {"kept": 10}),
    "zip_slip.zip": (0, r"zip_slip\.zip: member '\.\./\.\./evil\.csv' has an unsafe path"),
}


def _data_lines(path: Path) -> int:
    """Data lines as a reader of the raw bytes counts them (headers excluded)."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            return sum(
                max(z.read(m).count(b"\n") - 1, 0)
                for m in z.namelist()
                if not m.startswith("__MACOSX")
            )
    return max(path.read_bytes().count(b"\n") - 1, 0)


def test_every_crafted_file_has_a_case():
    assert sorted(p.name for p in BAD.iterdir()) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_accounted_for_or_named(name, tmp_path, capsys):
    code, outcome = CASES[name]
    path = BAD / name
    dry = pipeline.main(
        [
            "--dry-run",
            "--params",
            str(PARAMS_DIR / "default.yaml"),
            "-p",
            f"ingest.input_path={path}",
        ]
    )
    err = capsys.readouterr().err
    assert dry == code, err
    if code == 2:
        assert name in err and ("ingest.column_map" in err or "ingest.input_path" in err)
    run = lambda: ingest.ingest(  # noqa: E731
        str(path), IngestParams(), events_out=tmp_path / "e", rejects_out=tmp_path / "r.parquet"
    )
    if isinstance(outcome, str):
        with pytest.raises(InputError, match=outcome) as e:
            run()
        assert len(str(e.value)) < 1_500
        return
    report = run()
    assert report.rows_in == _data_lines(path)
    assert report.rows_in == report.rows_kept + report.rows_rejected + report.duplicates
    assert report.rows_kept == outcome["kept"]
    assert report.duplicates == outcome.get("duplicates", 0)
    assert {r: n for r, n in report.rejected.items() if n} == {
        r: n for r, n in outcome.items() if r not in ("kept", "duplicates")
    }


def test_a_glob_that_matches_nothing_is_refused_before_anything_runs(capsys):
    code = pipeline.main(["--dry-run", "-p", f"ingest.input_path={BAD}/nothing_*.csv"])
    assert code == 2 and "ingest.input_path: no file matches the pattern" in capsys.readouterr().err
