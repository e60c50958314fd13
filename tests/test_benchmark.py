"""The ingest benchmark script runs end to end and reports comparable numbers."""

from __future__ import annotations

from benchmarks import ingest as bench


def test_benchmark_reports_every_engine_on_the_same_csv(tmp_path):
    res = bench.run(10_000, seed=3, data_dir=tmp_path)
    by = {r["mode"]: r for r in res["results"]}
    assert set(by) == {"ours", "polars", "duckdb", "layout"}
    assert by["layout"]["rows_out"] == by["polars"]["rows_out"]
    assert by["polars"]["rows_out"] == by["duckdb"]["rows_out"]  # every line, as is
    # ours drops exact duplicates (and would reject broken rows): never more rows
    assert 0.9 * by["polars"]["rows_out"] < by["ours"]["rows_out"] <= by["polars"]["rows_out"]
    # the phases are parts of the whole (to the float error of adding two rounded numbers)
    phases = by["ours"]["ingest_seconds"] + by["ours"]["optimize_seconds"]
    assert phases <= by["ours"]["seconds"] + 1e-9
    for r in res["results"]:
        assert r["seconds"] > 0 and r["peak_rss_mb"] > 0 and r["bytes_out"] > 0
        assert r["bytes_in"] == res["csv_bytes"]
    assert res["ratio_ours_vs_polars"] == round(by["ours"]["seconds"] / by["polars"]["seconds"], 2)
