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
