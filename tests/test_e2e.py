"""End to end: run_all.py on the smoke profile into a temporary output root."""

from __future__ import annotations

import json

import polars as pl
import pytest

from customer_intel import pipeline, runs
from customer_intel.contracts import PropensityCard

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
    """Every line of the generated CSV is kept, rejected or a duplicate, in the summary table and
    in the manifest, and the kept rows are the rows the warehouse holds."""
    m = smoke_run["manifest"]
    summary = dict(
        pl.read_parquet(smoke_run["run_dir"] / "tables" / "ingest_summary.parquet").iter_rows()
    )
    source = pl.read_parquet(smoke_run["run_dir"] / "tables" / "ingest_sources.parquet")
    (path,) = source["file"].to_list()
    with open(path, "rb") as fh:
        lines = sum(1 for _ in fh) - 1  # the header
    assert summary["rows_in"] == lines == m["stages"]["ingest"]["rows_in"]
    assert summary["rows_in"] == (
        summary["rows_kept"] + summary["rows_rejected"] + summary["duplicates"]
    )
    assert summary["rows_rejected"] == sum(
        v for k, v in summary.items() if k.startswith("rejected:")
    )
    assert (
        m["stages"]["ingest"]["rows_out"]
        == summary["rows_kept"]
        == m["stages"]["optimize"]["rows_in"]
    )


def test_every_stage_table_is_readable(smoke_run):
    for path in (smoke_run["run_dir"] / "tables").glob("*.parquet"):
        pl.scan_parquet(path).collect_schema()


def test_the_propensity_card_is_the_typed_document_the_dashboards_read(smoke_run):
    path = smoke_run["run_dir"] / "models" / "propensity_card.json"
    card = runs.read_model(PropensityCard, path)
    scores = pl.read_parquet(smoke_run["run_dir"] / "tables" / "propensity_scores.parquet")
    assert 0 < card.targeting.depth <= scores.height
    assert card.windows.label_days > 0 and card.features
    broken = json.loads(path.read_text())
    del broken["targeting"]["depth"]  # a reader must not guess: a missing key is refused
    with pytest.raises(ValueError, match="depth"):
        PropensityCard.model_validate(broken)


def test_every_figure_has_a_static_copy_and_shows_in_a_viewer_without_javascript(smoke_run):
    """Issue 21.7: each figure is kept as JSON and PNG, and each displayed plotly figure is
    followed by its PNG, so nbconvert, GitHub and an e-mailed notebook show the chart."""
    run_dir = smoke_run["run_dir"]
    figures = sorted((run_dir / "figures").glob("*.json"))
    assert len(figures) >= 20
    no_png = [f.name for f in figures if not f.with_suffix(".png").is_file()]
    assert not no_png, f"figures without a static copy: {no_png}"
    for nb_path in sorted((run_dir / "notebooks").glob("0*.ipynb")):
        nb = json.loads(nb_path.read_text())
        for i, cell in enumerate(nb["cells"]):
            kinds = [set(o.get("data", {})) for o in cell.get("outputs", [])]
            for j, k in enumerate(kinds):
                if "application/vnd.plotly.v1+json" in k:
                    after = set().union(*kinds[j + 1 :]) if j + 1 < len(kinds) else set()
                    assert "image/png" in after, f"{nb_path.name} cell {i}: no static image"
