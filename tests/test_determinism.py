"""Same parameters, same results: a second smoke run writes byte-identical tables.

The shared smoke run executes stages side by side (``--jobs`` by default is the cores); the
second one here runs them one at a time (``--jobs 1``): serial and parallel agree.
"""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

from customer_intel.paths import PROJECT_ROOT

#: Columns that hold measured seconds (and what depends on them), different on every run.
MEASURED = {"query_timings.parquet": ["seconds", "runs"]}


@pytest.mark.e2e
def test_a_second_run_with_the_same_params_writes_the_same_bytes(smoke_run, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "run_all.py"),
            "--params",
            str(PROJECT_ROOT / "params" / "smoke.yaml"),
            "-p",
            f"common.output_root={tmp_path}",
            "--quiet-cells",
            "--jobs",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first, second = smoke_run["run_dir"] / "tables", (tmp_path / "latest").resolve() / "tables"
    files = sorted(p.relative_to(first) for p in first.rglob("*.parquet") if p.is_file())
    assert len(files) > 25
    assert files == sorted(p.relative_to(second) for p in second.rglob("*.parquet") if p.is_file())
    differ = [
        str(f)
        for f in files
        if f.name not in MEASURED and (first / f).read_bytes() != (second / f).read_bytes()
    ]
    for name, measured in MEASURED.items():
        if (first / name).exists():
            a, b = (pl.read_parquet(d / name).drop(measured) for d in (first, second))
            if not a.equals(b):
                differ.append(name)
    assert not differ, f"tables that changed between two identical runs: {differ}"
