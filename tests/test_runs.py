"""Run-folder I/O: atomic writes, stage records, scratch mode reading the last good run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import plotly.graph_objects as go
import plotly.io as pio
import polars as pl
import pytest

from customer_intel import runs


def test_tables_figures_and_records_round_trip(tmp_path):
    run = runs.open_stage(tmp_path / "run", "segmentation")
    df = pl.DataFrame({"user_id": [1, 2], "r": [5, 1]})
    run.write_table(df, "rfm")
    run.write_table(df.lazy().filter(pl.col("r") > 1), "rfm_lazy")
    run.write_figure(go.Figure(go.Bar(x=["a"], y=[1])), "sizes")
    with run.output("models", "m.txt") as tmp:
        tmp.write_text("model")
    record = run.finish(rows_in=2, rows_out={"rfm": 2}, metrics={"k": 4})
    assert run.read_table("rfm").equals(df)
    assert run.read_table("rfm_lazy")["user_id"].to_list() == [1]
    assert pio.from_json((tmp_path / "run/figures/sizes.json").read_text()).data[0].type == "bar"
    assert record["outputs"] == [
        "figures/sizes.json",
        "models/m.txt",
        "tables/rfm.parquet",
        "tables/rfm_lazy.parquet",
    ]
    saved = json.loads((tmp_path / "run/stages/segmentation.json").read_text())
    assert saved["rows_out"] == {"rfm": 2} and saved["metrics"] == {"k": 4}
    assert saved["kernel_peak_rss_mb"] > 0


def test_failed_write_leaves_previous_file_and_no_temporaries(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), runs.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


def test_table_written_in_parts_keeps_their_order_and_appears_only_when_complete(tmp_path):
    run = runs.open_stage(tmp_path / "run", "recommendations")
    parts = [pl.DataFrame({"user_id": [i, i], "rank": [1, 2]}) for i in (3, 1, 2)]
    assert run.write_table_parts(iter(parts), "user_recs") == 6
    assert run.read_table("user_recs").equals(pl.concat(parts))
    assert run.finish()["outputs"] == ["tables/user_recs.parquet"]

    def failing():
        yield parts[0]
        raise RuntimeError("chunk failed")

    with pytest.raises(RuntimeError, match="chunk failed"):
        run.write_table_parts(failing(), "user_recs")
    assert run.read_table("user_recs").equals(pl.concat(parts)), "the old table is kept"
    assert sorted(p.name for p in (tmp_path / "run/tables").iterdir()) == ["user_recs.parquet"]

    other = pl.DataFrame({"user_id": [1], "rank": ["one"]})
    with pytest.raises(ValueError, match=r"table 'mixed': a part has columns"):
        run.write_table_parts(iter([parts[0], other]), "mixed")
    assert not (tmp_path / "run/tables/mixed.parquet").exists()
    with pytest.raises(ValueError, match=r"table 'none': no part to write and no schema"):
        run.write_table_parts(iter([]), "none")
    schema = pl.Schema({"user_id": pl.Int64, "rank": pl.Int32})
    assert run.write_table_parts(iter([]), "empty", schema=schema) == 0
    assert run.read_table("empty").schema == schema


def test_atomic_folder_replacement(tmp_path):
    target = tmp_path / "events"
    for content in ("first", "second"):
        with runs.atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "part.txt").write_text(content)
    assert (target / "part.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events"]


def test_missing_input_names_stage_and_file(tmp_path):
    run = runs.open_stage(tmp_path / "run", "propensity")
    with pytest.raises(FileNotFoundError, match=r"stage 'propensity' needs tables/rfm\.parquet"):
        run.read_table("rfm")


def test_scratch_mode_reads_latest_and_writes_scratch(tmp_path):
    good = tmp_path / "runs" / "r1"
    runs.open_stage(good, "ingest").write_table(pl.DataFrame({"x": [1]}), "events")
    (tmp_path / "latest").symlink_to(good)
    scratch = runs.open_stage("", "segmentation", output_root=tmp_path)
    assert scratch.read_table("events")["x"].to_list() == [1]
    scratch.write_table(pl.DataFrame({"y": [2]}), "rfm")
    assert (tmp_path / "scratch" / "tables" / "rfm.parquet").exists()
    assert not (good / "tables" / "rfm.parquet").exists()


def test_peak_rss_is_the_process_own_not_its_parents():
    """A child exec'd by a big parent reports its own peak (ru_maxrss would report the parent's)."""

    child = "from customer_intel.runs import peak_rss_mb; print(peak_rss_mb())"
    parent = (
        "import os, subprocess, sys; big = bytearray(600 * 2**20); big[::4096] = b'x' * len(big[::4096]); "
        f"subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    )
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True)
    assert float(out.stdout.split()[-1]) < 300, out.stdout


def test_a_missing_browser_skips_the_static_image_instead_of_hanging(tmp_path):
    """kaleido's server thread dies without a browser and its callers then wait forever: the
    image is skipped with the reason, the JSON is written, and the call returns (a child process
    with a timeout, so a regression fails instead of hanging the suite)."""
    code = (
        "import plotly.graph_objects as go\n"
        "from customer_intel import runs\n"
        f"run = runs.StageRun({str(tmp_path)!r}, 'x')\n"
        "run.write_figure(go.Figure(go.Bar(x=[1], y=[2])), 'bars', static=True)\n"
    )
    env = {**os.environ, "BROWSER_PATH": str(tmp_path / "no-such-chromium")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "figures" / "bars.json").exists()
    assert not (tmp_path / "figures" / "bars.png").exists()
    assert "static image of bars skipped" in out.stdout
    assert "static_images: false" in out.stdout and "BROWSER_PATH" in out.stdout


def test_write_figure_saves_a_static_png_beside_the_json(tmp_path):
    """kaleido draws the PNG in Debian's chromium; without a browser the JSON is still written."""
    import shutil

    import plotly.graph_objects as go

    from customer_intel import runs, static_images

    run = runs.StageRun(tmp_path, "x")
    target = run.write_figure(go.Figure(go.Bar(x=[1, 2], y=[3, 4])), "bars", static=True)
    assert target.name == "bars.json" and target.exists()
    png = tmp_path / "figures" / "bars.png"
    if shutil.which("chromium") is None:
        pytest.skip("no chromium: the PNG is skipped by design")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "figures/bars.png" in run.finish()["outputs"]
    static_images.stop_browser()
