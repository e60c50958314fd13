"""Shared fixtures: project paths, tiny notebooks for runner tests, the shared REES46 data."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from customer_intel.paths import PROJECT_ROOT

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def make_notebook(path: Path, parameters: str, *cells: str) -> Path:
    """Write a notebook with a ``parameters``-tagged cell followed by code cells."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells.append(nbformat.v4.new_markdown_cell("# test notebook"))
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells.append(params)
    nb.cells.extend(nbformat.v4.new_code_cell(src) for src in cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_suite():
    """Fail the run if a test left a child process behind (a server, a kernel, a worker).

    Children are given a few seconds to exit (kernels notice their parent is gone); whatever is
    still there is listed, then killed so it cannot outlive the command either.
    """
    import time

    import psutil

    yield
    me = psutil.Process()
    deadline = time.time() + 10
    left = me.children(recursive=True)
    while left and time.time() < deadline:
        time.sleep(0.5)
        left = [p for p in me.children(recursive=True) if p.is_running()]
    described = []
    for p in left:
        try:
            described.append(f"{p.pid} {' '.join(p.cmdline())[:200]}")
            p.kill()
        except psutil.Error:
            continue
    assert not described, "processes left behind by the tests:\n" + "\n".join(described)


@pytest.fixture
def rees46_head() -> Path:
    """The public REES46 extract in ../shared/data (skips when this clone has no shared/)."""
    path = SHARED_DATA / "rees46_head" / "2019-Oct-head.csv"
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (clone without ../shared)")
    return path


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> dict:
    """One end-to-end ``run_all.py --params params/smoke.yaml`` into a temporary output root.

    Shared by the end-to-end, notebook and browser tests; returns the output root, the run
    folder, the manifest, and what the runner printed.
    """
    import json
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("smoke_outputs")
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "run_all.py"),
            "--params",
            str(PROJECT_ROOT / "params" / "smoke.yaml"),
            "-p",
            f"common.output_root={root}",
            "--quiet-cells",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=PROJECT_ROOT,
    )
    latest = root / "latest"
    assert proc.returncode == 0, (
        f"smoke run failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    run_dir = latest.resolve()
    return {
        "output_root": root,
        "run_dir": run_dir,
        "manifest": json.loads((run_dir / "manifest.json").read_text()),
        "stdout": proc.stdout,
    }


def ingested_sample(root: Path, n_events: int, seed: int):
    """Generate a sample, ingest it, and open its canonical events in DuckDB through Ibis.

    Returns ``(events, info)``: an Ibis table with integer ``user_id`` (as the warehouse stores
    it) and the generator's :class:`~customer_intel.synth.SampleInfo` (its ``truth_dir``).
    """
    import ibis

    from customer_intel import ingest, synth
    from customer_intel.params.ingest import IngestParams

    info = synth.generate(root / "sample", n_events, seed=seed)
    canonical = root / "events.parquet"
    ingest.ingest(
        str(info.events_path),
        IngestParams(),
        events_out=canonical,
        rejects_out=root / "rejects.parquet",
    )
    events = ibis.duckdb.connect().read_parquet(
        str(canonical / "**" / "*.parquet"), table_name="events", hive_partitioning=False
    )
    return events.mutate(user_id=events.user_id.cast("int64")), info
