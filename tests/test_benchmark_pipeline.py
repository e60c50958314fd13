"""The end-to-end benchmark runs ours and the bare reference on the same data and compares."""

from __future__ import annotations

import pytest

from benchmarks import pipeline as bench
from customer_intel.paths import PARAMS_DIR


@pytest.mark.e2e
def test_pipeline_benchmark_compares_every_stage_with_the_bare_script(tmp_path):
    if not bench.BARE_SCRIPT.exists():
        pytest.skip(f"bare reference not found at {bench.BARE_SCRIPT} (clone without ../shared)")
    res = bench.run(
        20_000,
        seed=3,
        data_dir=tmp_path / "data",
        profile=PARAMS_DIR / "smoke.yaml",
        work_dir=tmp_path,
    )
    rows = {r["stage"]: r for r in res["comparison"]}
    for stage in bench.STEP_OF:
        r = rows[stage]
        assert r["ours_wall_s"] > 0 and r["ours_peak_rss_mb"] > 0
        assert r["bare_wall_s"] > 0 and r["bare_peak_rss_mb"] > 0
        assert r["ratio"] == round(r["ours_wall_s"] / r["bare_wall_s"], 2)
    total = rows["total (process wall)"]
    # stages run side by side: the process takes at least its longest stage
    assert total["ours_wall_s"] >= max(r["ours_wall_s"] for r in res["comparison"][:6])
    assert res["ratio_total"] == round(total["ours_wall_s"] / total["bare_wall_s"], 2)
    # the same data went through both: the bare script's kept rows equal ours
    assert res["bare"]["checks"]["rows_after_dedup"] == res["ours"]["rows_out"]["ingest"]
    assert "total (process wall)" in bench.format_table(res)
    assert not list(tmp_path.glob("bench_e2e_*"))  # run folders removed
    assert res["csv_read_into_page_cache_s"] is not None  # both sides found it cached


def test_the_csv_is_read_into_the_page_cache_only_where_it_fits(tmp_path):
    csv = tmp_path / "events.csv"
    csv.write_bytes(b"x" * 1000)
    assert bench.read_through(csv, available=2000) is not None
    assert bench.read_through(csv, available=1999) is None  # more than half: not read


def test_a_bare_script_that_dies_is_recorded_with_the_steps_it_finished(tmp_path):
    """At 110M events the reference runs out of memory in its warehouse step: the benchmark
    keeps its finished steps and the error instead of losing our numbers."""
    script = tmp_path / "bare.py"
    script.write_text(
        "import sys\n"
        "print('[bare] imports: 1.50 s, peak 80 MB', file=sys.stderr)\n"
        "print('[bare] ingest: 292.60 s, peak 16704 MB', file=sys.stderr)\n"
        "print('duckdb.OutOfMemoryException: Out of Memory Error: could not allocate',"
        " file=sys.stderr)\n"
        "sys.exit(1)\n"
    )
    bare = bench.run_bare(tmp_path / "e.csv", tmp_path / "a.parquet", tmp_path / "out", script)
    assert bare["steps"] == {
        "imports": {"wall_s": 1.5, "peak_rss_mb": 80.0},
        "ingest": {"wall_s": 292.6, "peak_rss_mb": 16704.0},
    }
    assert bare["failed"]["after_steps"] == ["imports", "ingest"]
    assert "OutOfMemory" in bare["failed"]["error"] and bare["peak_rss_mb"] == 16704.0
    ours = {
        "stages": {"ingest": {"wall_s": 235.1, "peak_rss_mb": 1350.5}},
        "total_wall_s": 1084.3,
        "peak_rss_mb": 3668.8,
    }
    rows = {r["stage"]: r for r in bench.compare(ours, bare)}
    assert rows["ingest"]["ratio"] == round(235.1 / 292.6, 2)
    assert rows["total (process wall)"]["ratio"] is None  # no total for a run that died
