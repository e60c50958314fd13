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


def test_the_median_run_is_a_whole_run_of_median_total_time():
    runs = [{"total_wall_s": t, "tag": t} for t in (99.0, 95.8, 106.5)]
    assert bench.median_run(runs)["tag"] == 99.0
    assert bench.median_run(runs[:2])["tag"] == 95.8  # even count: the lower middle
    died = {"total_wall_s": None, "tag": "oom"}
    assert bench.median_run([died, *runs[:1]])["tag"] == 99.0  # a run that died does not count
    assert bench.median_run([died])["tag"] == "oom"  # unless none finished


def test_repeat_takes_turns_and_compares_the_median_runs(tmp_path, monkeypatch):
    calls = []
    ours_s, bare_s = iter([100.0, 90.0, 95.0]), iter([60.0, 64.0, 62.0])

    def fake_ours(n, profile, out_root, **kw):
        calls.append(("ours", out_root.name))
        t = next(ours_s)
        return {"total_wall_s": t, "peak_rss_mb": 1.0, "stages": {}, "rows_out": {}}

    def fake_bare(csv, assignments, out_dir, script):
        calls.append(("bare", out_dir.name))
        return {"total_wall_s": next(bare_s), "peak_rss_mb": 1.0, "steps": {}}

    monkeypatch.setattr(bench, "run_ours", fake_ours)
    monkeypatch.setattr(bench, "run_bare", fake_bare)
    monkeypatch.setattr(bench, "read_through", lambda p: 0.1)
    from customer_intel import synth

    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "events.csv").write_text("x")
    monkeypatch.setattr(synth, "ensure_sample", lambda *a: folder)
    script = tmp_path / "bare.py"
    script.write_text("")
    res = bench.run(1000, bare_script=script, work_dir=tmp_path, repeat=3)
    assert calls == [
        ("ours", "ours"), ("bare", "bare_1"),
        ("ours", "ours"), ("bare", "bare_2"),
        ("ours", "ours"), ("bare", "bare_3"),
    ]  # fmt: skip
    assert [r["ratio"] for r in res["rounds"]] == [1.67, 1.41, 1.53]
    assert res["ours"]["total_wall_s"] == 95.0 and res["bare"]["total_wall_s"] == 62.0
    assert res["ratio_total"] == round(95.0 / 62.0, 2)
    assert "median of 3 rounds" in bench.format_table(res)
    with pytest.raises(ValueError, match="repeat"):
        bench.run(1000, bare_script=script, work_dir=tmp_path, repeat=0)
