"""End to end: run_all.py on the smoke profile into a temporary output root."""

from __future__ import annotations

import polars as pl
import pytest

from customer_intel import pipeline

pytestmark = pytest.mark.e2e


def test_smoke_run_succeeds_and_manifest_records_every_stage(smoke_run):
    m = smoke_run["manifest"]
    assert m["status"] == "success"
    assert list(m["stages"]) == [s.name for s in pipeline.STAGES]
    for name, entry in m["stages"].items():
        assert entry["status"] == "success", name
        assert entry["wall_seconds"] > 0, name
        assert entry["peak_rss_mb"] > 0, name
        assert entry["outputs"], f"{name} recorded no outputs"
        for rel in entry["outputs"]:
            assert (smoke_run["run_dir"] / rel).exists(), f"{name}: {rel} missing"
    assert m["versions"]["lightgbm"] != "not installed"
    assert m["params"]["common"]["output_root"] == str(smoke_run["output_root"])
    assert (smoke_run["run_dir"] / "run.log").stat().st_size > 0
    assert "Run folder:" in smoke_run["stdout"]


def test_smoke_run_row_accounting(smoke_run):
    ingest = smoke_run["manifest"]["stages"]["ingest"]
    summary = pl.read_parquet(smoke_run["run_dir"] / "tables" / "ingest_summary.parquet")
    assert summary.height > 0
    assert ingest["rows_in"] and ingest["rows_out"]


def test_every_stage_table_is_readable(smoke_run):
    for path in (smoke_run["run_dir"] / "tables").glob("*.parquet"):
        pl.scan_parquet(path).collect_schema()
