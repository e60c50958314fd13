"""The papermill runner: run folders, manifest, latest, failures, --only/--from, exit codes."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from customer_intel import kernels, paths, pipeline
from customer_intel.params import load_params
from customer_intel.paths import PARAMS_DIR, PROJECT_ROOT
from customer_intel.stages import Stage, StageIO

from conftest import make_notebook

PARAMS_CELL = (
    'seed: int = 0  # seed\nengine: str = "duckdb"  # engine\nrun_dir: str = ""  # run folder'
)
RECORD = (
    "from customer_intel import runs\n"
    "run = runs.open_stage(run_dir, {stage!r})\n"
    "import polars as pl\n"
    "run.write_table(pl.DataFrame({{'x': [1, 2, 3]}}), {stage!r} + '_table')\n"
    "run.finish(rows_in=3, rows_out=3)"
)
DRAW = (
    "import plotly.graph_objects as go\n"
    "from customer_intel import runs\n"
    "runs.open_stage(run_dir, {stage!r}).show_figure(go.Figure(go.Bar(x=[1], y=[2])), 'bars')"
)


def _stages(
    tmp_path: Path,
    fail_in: str | None = None,
    sleep_in: str | None = None,
    draw_in: str | None = None,
):
    nbdir = tmp_path / "nbs"
    stages = []
    for i, name in enumerate(["ingest", "optimize", "segmentation"], 1):
        cells = [f"print('stage {name} says hello')"]
        if name == draw_in:
            cells.append(DRAW.format(stage=name))
        if name == fail_in:
            cells.append("raise ValueError('planted failure')")
        if name == sleep_in:
            cells.append("import time; time.sleep(60)")
        cells.append(RECORD.format(stage=name))
        make_notebook(nbdir / f"0{i}_{name}.ipynb", PARAMS_CELL, *cells)
        reads = (f"tables/{stages[-1].name}_table",) if stages else ()
        io = StageIO(reads=reads, writes=(f"tables/{name}_table",))
        stages.append(Stage(name, f"0{i}_{name}.ipynb", name, name, io))
    return nbdir, tuple(stages)


def _params_file(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"common": {"output_root": str(tmp_path / "out")}}))
    return path


def _run(tmp_path, stages, nbdir, only=None, from_stage=None, force=None, jobs=None):
    params = load_params(_params_file(tmp_path))
    runner = pipeline.Runner(
        params, _params_file(tmp_path), stages=stages, notebooks_dir=nbdir, force=force, jobs=jobs
    )
    return runner.run(only=only, from_stage=from_stage)


@pytest.mark.e2e
def test_successful_run_writes_folder_manifest_and_moves_latest(tmp_path, capsys):
    nbdir, stages = _stages(tmp_path)
    result = _run(tmp_path, stages, nbdir)
    assert result.exit_code == 0, result.message
    out = tmp_path / "out"
    assert (out / "latest").resolve() == result.run_dir
    m = json.loads((result.run_dir / "manifest.json").read_text())
    assert m["status"] == "success"
    assert list(m["stages"]) == ["ingest", "optimize", "segmentation"]
    for entry in m["stages"].values():
        assert entry["status"] == "success"
        assert entry["rows_in"] == 3 and entry["rows_out"] == 3
        assert entry["wall_seconds"] > 0 and entry["peak_rss_mb"] > 0
    assert m["stages"]["ingest"]["outputs"] == ["tables/ingest_table.parquet"]
    assert m["versions"]["polars"] and "commit" in m["git"]
    assert m["params"]["common"]["output_root"] == str(out)
    assert (result.run_dir / "notebooks" / "02_optimize.ipynb").exists()
    assert (result.run_dir / "params" / "segmentation.yaml").exists()
    log = (result.run_dir / "run.log").read_text()
    assert "stage optimize says hello" in log and "segmentation cell" in log
    assert "[3/3] segmentation: ok" in capsys.readouterr().out


@pytest.mark.e2e
def test_failed_stage_keeps_latest_and_names_stage_and_cell(tmp_path):
    nbdir, stages = _stages(tmp_path)
    good = _run(tmp_path, stages, nbdir)
    nbdir2, stages2 = _stages(tmp_path / "b", fail_in="optimize")
    bad = _run(tmp_path, stages2, nbdir2)
    assert bad.exit_code == 1
    assert "optimize" in bad.message and "ValueError: planted failure" in bad.message
    assert "cell" in bad.message
    assert (tmp_path / "out" / "latest").resolve() == good.run_dir
    m = json.loads((bad.run_dir / "manifest.json").read_text())
    assert m["status"] == "failed"
    assert m["stages"]["optimize"]["status"] == "failed"
    assert m["stages"]["segmentation"]["status"] == "cancelled"  # never started
    assert (bad.run_dir / "notebooks" / "02_optimize.ipynb").exists()


@pytest.mark.e2e
def test_only_and_from_take_the_other_stages_from_latest(tmp_path):
    nbdir, stages = _stages(tmp_path)
    first = _run(tmp_path, stages, nbdir)
    only = _run(tmp_path, stages, nbdir, ["segmentation"], force={"segmentation"})
    assert only.exit_code == 0
    m = only.manifest
    assert m["stages"]["ingest"]["status"] == "reused"
    assert m["stages"]["ingest"]["run"] == first.run_id
    assert m["stages"]["segmentation"]["status"] == "success"
    assert m["stages"]["segmentation"]["run"] == only.run_id
    # the new folder is complete: reused tables are there (hard links, same content)
    reused = only.run_dir / "tables" / "ingest_table.parquet"
    assert reused.exists()
    assert os.path.samefile(reused, first.run_dir / "tables" / "ingest_table.parquet")
    assert (tmp_path / "out" / "latest").resolve() == only.run_dir
    frm = _run(tmp_path, stages, nbdir, None, "optimize", force={"optimize", "segmentation"})
    assert [k for k, v in frm.manifest["stages"].items() if v["status"] == "success"] == [
        "optimize",
        "segmentation",
    ]


@pytest.mark.e2e
def test_a_second_run_with_nothing_changed_executes_nothing(tmp_path):
    nbdir, stages = _stages(tmp_path)
    first = _run(tmp_path, stages, nbdir)
    again = _run(tmp_path, stages, nbdir)
    assert again.exit_code == 0
    for name, entry in again.manifest["stages"].items():
        assert entry["status"] == "reused", name
        assert entry["run"] == first.run_id
        assert entry["key"] == first.manifest["stages"][name]["key"]
    # an edited notebook re-executes that stage and what reads its outputs, nothing else
    make_notebook(
        nbdir / "02_optimize.ipynb", PARAMS_CELL, "x = 2", RECORD.format(stage="optimize")
    )
    edited = _run(tmp_path, stages, nbdir)
    status = {k: v["status"] for k, v in edited.manifest["stages"].items()}
    assert status == {"ingest": "reused", "optimize": "success", "segmentation": "success"}
    # the manifest keeps the lineage: segmentation's input, the stage and key that made it
    seg = edited.manifest["stages"]["segmentation"]
    assert seg["inputs"] == [
        {
            "item": "tables/optimize_table",
            "made_by": "optimize",
            "key": edited.manifest["stages"]["optimize"]["key"],
        }
    ]


def test_only_without_its_inputs_names_the_missing_table_and_its_stage(tmp_path):
    nbdir, stages = _stages(tmp_path)
    with pytest.raises(pipeline.PlanError) as e:
        _run(tmp_path, stages, nbdir, ["segmentation"])
    msg = str(e.value)
    assert "needs tables/optimize_table from optimize" in msg
    assert "run --only optimize,segmentation" in msg


def test_select_rejects_unknown_stage_and_both_options():
    ordered = list(pipeline.STAGES)
    with pytest.raises(pipeline.PlanError, match="unknown stage 'nope'"):
        pipeline.select(ordered, only=["nope"])
    with pytest.raises(pipeline.PlanError, match="either --only or --from"):
        pipeline.select(ordered, only=["ingest"], from_stage="optimize")
    assert pipeline.select(ordered, from_stage="propensity") == [
        "propensity",
        "recommendations",
        "experiments",
        "metrics",
        "dashboard_data",
    ]


def test_cli_invalid_params_exit_2_before_any_notebook(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"common": {"seed": "many", "output_root": str(tmp_path)}}))
    code = pipeline.main(["--params", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad}: common.seed" in err
    assert not (tmp_path / "runs").exists()


def test_cli_list_and_dry_run(capsys):
    assert pipeline.main(["--list"]) == 0
    assert "01_ingest.ipynb" in capsys.readouterr().out
    assert pipeline.main(["--dry-run", "--params", "params/smoke.yaml"]) == 0
    assert "would run: ingest" in capsys.readouterr().out


@pytest.mark.e2e
def test_killed_run_leaves_latest_on_previous_good_run(tmp_path, monkeypatch):
    """SIGKILL midway through a run: latest keeps pointing at the previous good run; the next
    run marks the killed one abandoned and removes the temporary folders of the killed runner
    (with its figure browser's profile and page) and of its kernels."""
    from customer_intel import static_images

    nbdir, stages = _stages(tmp_path)
    good = _run(tmp_path, stages, nbdir)
    nbdir2, _ = _stages(tmp_path / "slow", sleep_in="optimize", draw_in="ingest")
    script = tmp_path / "go.py"
    script.write_text(
        "import sys\n"
        "from customer_intel import pipeline\n"
        "from customer_intel.stages import Stage\n"
        "stages = tuple(Stage(n, f'0{i}_{n}.ipynb', n, n) for i, n in "
        "enumerate(['ingest', 'optimize', 'segmentation'], 1))\n"
        f"pipeline.NOTEBOOKS_DIR = __import__('pathlib').Path({str(nbdir2)!r})\n"
        "from customer_intel.params import load_params\nparams = load_params(sys.argv[1])\n"
        "r = pipeline.Runner(params, sys.argv[1], stages=stages, "
        "notebooks_dir=pipeline.NOTEBOOKS_DIR)\n"
        "sys.exit(r.run().exit_code)\n"
    )
    # a killed runner removes none of its temporary files (kernel sockets, connection files):
    # they stay in this test's folder, not in the machine's /tmp
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(_params_file(tmp_path))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    deadline = time.time() + 60
    runs_dir = tmp_path / "out" / "runs"
    while time.time() < deadline:
        started = [
            d for d in runs_dir.iterdir() if d != good.run_dir and (d / "notebooks").exists()
        ]
        if started and (started[0] / "notebooks" / "02_optimize.ipynb").exists():
            break
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert (tmp_path / "out" / "latest").resolve() == good.run_dir
    killed = next(d for d in runs_dir.iterdir() if d != good.run_dir)
    assert json.loads((killed / "manifest.json").read_text())["status"] == "running"
    # its kernels exit once it is gone; their folders (sockets, spilled data) stay
    left = list(tmp.glob(f"{kernels.KERNEL_DIR_PREFIX}*"))
    assert left, "the killed runner's kernels left no folder (nothing to test)"
    pids = [int((d / paths.OWNER_FILE).read_text()) for d in left]
    psutil.wait_procs([p for p in map(_process, pids) if p], timeout=30)
    # the runner's own files (thread shares, the browser's profile and page) are in its folder
    own = (kernels.KERNEL_DIR_PREFIX, pipeline.RUNNER_DIR_PREFIX)
    assert [p.name for p in tmp.iterdir() if not p.name.startswith(own)] == []
    (runner_dir,) = tmp.glob(f"{pipeline.RUNNER_DIR_PREFIX}*")
    if static_images.browser() is not None:
        assert any((runner_dir / "tmp").iterdir()), "the runner's browser wrote nothing there"
    (tmp / f"{kernels.KERNEL_DIR_PREFIX}other").mkdir()  # names no kernel: not touched
    # the next run notices the runner is gone, marks that run abandoned, removes the folders
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    after = _run(tmp_path, stages, nbdir)
    assert after.exit_code == 0
    m = json.loads((killed / "manifest.json").read_text())
    assert m["status"] == "abandoned" and "SIGKILL" in m["error"]
    # nothing of the killed run is left: its kernels' folders (sockets, connection files,
    # temporary files) and the runner's folder (thread shares, the browser's files)
    assert sorted(p.name for p in tmp.iterdir()) == [f"{kernels.KERNEL_DIR_PREFIX}other"]


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


@pytest.mark.e2e
def test_sigterm_exits_143_and_records_the_run_as_interrupted(tmp_path):
    nbdir, _ = _stages(tmp_path, sleep_in="optimize")
    script = tmp_path / "go.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from customer_intel import pipeline\n"
        "from customer_intel.params import load_params\n"
        "from customer_intel.stages import Stage\n"
        "stages = tuple(Stage(n, f'0{i}_{n}.ipynb', n, n) for i, n in "
        "enumerate(['ingest', 'optimize', 'segmentation'], 1))\n"
        "r = pipeline.Runner(load_params(sys.argv[1]), sys.argv[1], stages=stages, "
        f"notebooks_dir=Path({str(nbdir)!r}))\n"
        "with pipeline._interrupt_on_sigterm():\n"
        "    sys.exit(r.run().exit_code)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script), str(_params_file(tmp_path))])
    runs_dir = tmp_path / "out" / "runs"
    deadline = time.time() + 60
    while time.time() < deadline:
        nbs = list(runs_dir.glob("*/notebooks/02_optimize.ipynb")) if runs_dir.exists() else []
        if nbs:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    (run,) = runs_dir.iterdir()
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "interrupted" and "SIGTERM" in m["error"]
    assert not (tmp_path / "out" / "latest").exists()


@pytest.mark.e2e
def test_a_kernel_killed_for_memory_is_named_with_stage_cell_and_peak(tmp_path):
    """SIGKILL is what the out-of-memory killer sends: the runner says so, with the cell."""
    nbdir = tmp_path / "nbs"
    make_notebook(
        nbdir / "01_ingest.ipynb",
        PARAMS_CELL,
        'import time\nbig = b"x" * (300 * 2**20)  # touched memory, so the peak is visible\ntime.sleep(0.6)',
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
    )
    stages = (Stage("ingest", "01_ingest.ipynb", "ingest", "ingest"),)
    result = _run(tmp_path, stages, nbdir)
    assert result.exit_code == 1
    msg = result.message
    assert "stage 'ingest' died at cell 5/5 (import os, signal" in msg, msg
    assert "SIGKILL" in msg and "not by the out-of-memory killer" in msg
    peak = result.manifest["stages"]["ingest"]["peak_rss_mb"]
    assert peak > 300, peak


@pytest.mark.e2e
def test_quiet_cells_reach_the_kernel_as_quiet_progress(tmp_path):
    nbdir = tmp_path / "nbs"
    make_notebook(
        nbdir / "01_ingest.ipynb",
        PARAMS_CELL,
        "from customer_intel import progress\n"
        "for _ in progress.track(range(3), 'demo step', unit='things'): pass",
        RECORD.format(stage="ingest"),
    )
    stages = (Stage("ingest", "01_ingest.ipynb", "ingest", "ingest"),)
    params = load_params(_params_file(tmp_path))
    runner = pipeline.Runner(
        params, _params_file(tmp_path), stages=stages, notebooks_dir=nbdir, cell_progress=False
    )
    result = runner.run()
    assert result.exit_code == 0, result.message
    log = (result.run_dir / "run.log").read_text()
    assert "demo step done: 3 things in" in log
    assert "cell 2/" not in log  # no per-cell lines when quiet


@pytest.mark.e2e
def test_external_ab_readout_runs_experiments_alone_on_a_fresh_output_root(tmp_path):
    """An A/B table of your own needs no event log: one stage runs, nothing else."""
    code = pipeline.main(
        [
            "--params",
            str(PROJECT_ROOT / "params" / "external_ab.yaml"),
            "--only",
            "experiments",
            "--quiet-cells",
            "-p",
            f"common.output_root={tmp_path}",
        ]
    )
    assert code == 0
    m = json.loads((tmp_path / "latest" / "manifest.json").read_text())
    status = {k: v["status"] for k, v in m["stages"].items()}
    assert status["experiments"] == "success"
    assert {k for k, v in status.items() if v != "skipped"} == {"experiments"}
    assert (tmp_path / "latest" / "tables" / "experiment_results.parquet").exists()


@pytest.mark.e2e
def test_a_failing_stage_side_by_side_stops_the_other_and_keeps_latest(tmp_path):
    """Two independent stages under --jobs 2: one fails, the other is stopped (cancelled)."""
    nbdir = tmp_path / "nbs"
    make_notebook(nbdir / "01_a.ipynb", PARAMS_CELL, RECORD.format(stage="a"))
    make_notebook(
        nbdir / "02_b.ipynb",
        PARAMS_CELL,
        "import time; time.sleep(3)",
        "raise ValueError('b broke')",
    )
    make_notebook(
        nbdir / "03_c.ipynb", PARAMS_CELL, "import time; time.sleep(120)", RECORD.format(stage="c")
    )
    ok = (Stage("a", "01_a.ipynb", "ingest", "a", StageIO(writes=("tables/a_table",))),)
    good = _run(tmp_path, ok, nbdir)
    assert good.exit_code == 0
    both = (
        *ok,
        Stage("b", "02_b.ipynb", "optimize", "b", StageIO(reads=("tables/a_table",))),
        Stage("c", "03_c.ipynb", "segmentation", "c", StageIO(reads=("tables/a_table",))),
    )
    t0 = time.time()
    bad = _run(tmp_path, both, nbdir, jobs=2)
    assert time.time() - t0 < 60  # c was stopped, not waited for
    assert bad.exit_code == 1 and "b broke" in bad.message
    status = {k: v["status"] for k, v in bad.manifest["stages"].items()}
    assert status == {"a": "reused", "b": "failed", "c": "cancelled"}
    assert (tmp_path / "out" / "latest").resolve() == good.run_dir


LATE_READER = (
    "import time, polars as pl\n"
    "from customer_intel import runs\n"
    "run = runs.open_stage(run_dir, 'p')\n"
    "started = time.time()\n"
    "got = run.await_table('s_table')\n"
    "rows = -1 if got is None else got.collect().height\n"
    "run.write_table(pl.DataFrame({'started': [started], 'rows': [rows]}), 'p_table')\n"
    "run.finish()"
)


def _late_stages(tmp_path: Path, *, maker_writes: bool = True):
    """a; s (slow, after a) makes s_table; p (after a) reads s_table as a late input."""
    nbdir = tmp_path / "nbs"
    make_notebook(nbdir / "01_a.ipynb", PARAMS_CELL, RECORD.format(stage="a"))
    slow = (
        "import time, polars as pl\nfrom customer_intel import runs\n"
        "run = runs.open_stage(run_dir, 's')\ntime.sleep(6)\n"
        + (
            "run.write_table(pl.DataFrame({'ended': [time.time()] * 3}), 's_table')\n"
            if maker_writes
            else ""
        )
        + "run.finish()"
    )
    make_notebook(nbdir / "02_s.ipynb", PARAMS_CELL, slow)
    make_notebook(nbdir / "03_p.ipynb", PARAMS_CELL, LATE_READER)
    a = ("tables/a_table",)
    return nbdir, (
        Stage("a", "01_a.ipynb", "ingest", "a", StageIO(writes=a)),
        Stage("s", "02_s.ipynb", "optimize", "s", StageIO(reads=a, writes=("tables/s_table",))),
        Stage(
            "p",
            "03_p.ipynb",
            "segmentation",
            "p",
            StageIO(reads=a, late=("tables/s_table",), writes=("tables/p_table",)),
        ),
    )


@pytest.mark.e2e
@pytest.mark.parametrize("jobs", [1, 2])
def test_a_stage_with_a_late_input_runs_beside_its_maker_and_reads_what_it_wrote(tmp_path, jobs):
    """Side by side (2 jobs) the reader starts before the maker ends and waits for its table;
    with one slot it starts after the maker (never waiting for a maker that has no slot)."""
    import polars as pl

    nbdir, stages = _late_stages(tmp_path)
    result = _run(tmp_path, stages, nbdir, jobs=jobs)
    assert result.exit_code == 0, result.message
    p = pl.read_parquet(result.run_dir / "tables" / "p_table.parquet").row(0, named=True)
    ended = pl.read_parquet(result.run_dir / "tables" / "s_table.parquet")["ended"][0]
    assert p["rows"] == 3  # it read the maker's table, not "absent"
    if jobs == 2:
        assert p["started"] < ended  # it ran beside the maker
        assert (
            "waiting for table 's_table' from stage 's'"
            in (result.run_dir / "notebooks" / "03_p.ipynb").read_text()
        )
    else:
        assert p["started"] > ended
    assert not (result.run_dir / "awaited.json").exists()  # the runner's file is gone after


@pytest.mark.e2e
def test_a_late_input_its_maker_did_not_write_reads_as_absent_once_the_maker_ends(tmp_path):
    import polars as pl

    nbdir, stages = _late_stages(tmp_path, maker_writes=False)
    result = _run(tmp_path, stages, nbdir, jobs=2)
    assert result.exit_code == 0, result.message
    p = pl.read_parquet(result.run_dir / "tables" / "p_table.parquet").row(0, named=True)
    assert p["rows"] == -1  # absent, read only after s ended (s sleeps before it ends)
    assert (
        "waiting for table 's_table'" in (result.run_dir / "notebooks" / "03_p.ipynb").read_text()
    )


def test_long_chains_start_first_and_a_late_reader_waits_for_its_maker_to_start():
    deps = {"opt": set(), "seg": {"opt"}, "prop": {"opt"}, "recs": {"opt"}, "met": {"prop"}}
    late = {"prop": {"tables/rfm": "seg"}}
    names = set(deps)
    weights = {"opt": 10, "seg": 150, "prop": 260, "recs": 80, "met": 70}
    paths = pipeline.critical_paths(deps, late, weights, names)
    assert paths == {"opt": 490, "seg": 480, "prop": 330, "recs": 80, "met": 70}
    # without weights every stage weighs 1: the chain's length in stages
    assert pipeline.critical_paths(deps, late, {}, names)["opt"] == 4
    # a stage the last run did not time weighs the median of those it did
    partial = {"opt": 10, "seg": 150, "prop": 260}
    assert pipeline.critical_paths(deps, late, partial, names)["met"] == 150

    def step(name):
        return pipeline.Step(Stage(name, f"{name}.ipynb", name, name), "execute")

    q = pipeline._Queue([step(n) for n in deps], deps, late=late, weights=weights)
    assert [s.stage.name for s in q.pending] == ["opt", "seg", "prop", "recs", "met"]
    q.done.add("opt")
    prop = next(s for s in q.pending if s.stage.name == "prop")
    assert not q.ready(prop)  # its late input's maker has not started
    assert q.ready(prop, also_done={"seg"})
    assert q.awaited() == {"tables/rfm": "seg"}
    q.ended.add("seg")
    assert q.awaited() == {}


def test_a_late_reader_that_no_stage_reads_gives_way_to_the_other_ready_stages():
    """Metrics reads propensity's test scores late: started before the stages that can run,
    it would hold a slot idle while they queue. Propensity, a late reader that metrics reads,
    keeps its place at the head of the queue."""
    deps = {
        "opt": set(),
        "seg": {"opt"},
        "prop": {"opt"},
        "exp": {"opt"},
        "recs": {"opt"},
        "met": {"opt"},
        "dash": {"opt", "seg", "exp"},
    }
    late = {"prop": {"tables/rfm": "seg"}, "met": {"tables/scores": "prop", "tables/units": "exp"}}

    def step(name):
        return pipeline.Step(Stage(name, f"{name}.ipynb", name, name), "execute")

    q = pipeline._Queue([step(n) for n in deps], deps, late=late)  # no last run: no weights
    # metrics ties with recs and dashboard data on the chain's length (one stage each)
    assert [s.stage.name for s in q.pending] == ["opt", "seg", "prop", "exp", "recs", "met", "dash"]
    by_name = {s.stage.name: s for s in q.pending}
    assert [n for n in by_name if q.defers(by_name[n])] == ["met"]
    order = [s.stage.name for s in q.start_order()]
    assert order == ["opt", "seg", "prop", "exp", "recs", "dash", "met"]
    q.ended |= {"opt", "seg", "prop"}
    assert q.defers(by_name["met"])  # experiments, another of its makers, still runs
    q.ended.add("exp")
    assert not q.defers(by_name["met"])  # nothing left to wait for


def test_the_running_stages_kernels_are_ready_before_the_next_ones_warm(monkeypatch):
    """The first stage's kernel started beside two warming kernels and the figure browser was
    ready after 3.1-3.4 s instead of 1.3 s: the run's browser starts (for a stage that draws)
    and the next kernels warm once it is ready."""
    import concurrent.futures as cf

    events = []

    class Kernel:
        def __init__(self, name, background=False):
            self.name = name
            events.append(("start", name, background))

        def ready(self, timeout=None):
            events.append(("ready", self.name, timeout))
            return True

    class Figures:
        def start_browser(self):
            events.append(("browser",))

    def step(name):
        return pipeline.Step(Stage(name, f"{name}.ipynb", name, name), "execute")

    deps = {"ing": set(), "opt": {"ing"}, "seg": {"opt"}, "prop": {"opt"}}
    q = pipeline._Queue([step(n) for n in deps], deps)
    first = q.pending.pop(0)
    q.futures[cf.Future()] = first
    q.launched["ing"] = Kernel("ing")
    runner = object.__new__(pipeline.Runner)
    runner._figures, runner._drawing = Figures(), {"ing"}  # ingest saves static figures
    monkeypatch.setattr(
        runner,
        "_start_kernel",
        lambda stage, background=False: Kernel(stage.name, background),
        raising=False,
    )
    runner._warm(q, 2)
    wait = pipeline.FIRST_READY_WAIT_SECONDS
    assert events == [  # kernels warmed ahead of their stage start in the background
        ("start", "ing", False),
        ("ready", "ing", wait),
        ("browser",),
        ("start", "opt", True),
        ("start", "seg", True),
    ]
    assert set(q.kernels) == {"opt", "seg"}
    # a running stage that draws nothing starts no browser
    events.clear()
    q.launched = {"opt": q.kernels.pop("opt")}
    runner._warm(q, 2)
    assert ("browser",) not in events


@pytest.mark.e2e
@pytest.mark.parametrize("fail", [False, True])
def test_the_executed_notebook_is_saved_now_and_then_and_always_at_its_end(
    tmp_path, monkeypatch, fail
):
    """Not at every cell's start and end (megabytes each time), but its final state always."""
    import papermill
    import papermill.engines

    writes = []
    write = papermill.engines.write_ipynb
    monkeypatch.setattr(
        papermill.engines, "write_ipynb", lambda nb, path: (writes.append(path), write(nb, path))
    )
    cells = [f"print('cell {i}')" for i in range(12)]
    if fail:
        cells.append("raise ValueError('planted')")
    nb = make_notebook(tmp_path / "n.ipynb", PARAMS_CELL, *cells)
    out = tmp_path / "out.ipynb"
    try:
        papermill.execute_notebook(
            str(nb),
            str(out),
            engine_name="customer_intel",
            progress_bar=False,
            kernel_name="python3",
        )
    except papermill.PapermillExecutionError:
        assert fail
    assert len(writes) <= 3  # the start, the end, and at most one in between (10 s apart)
    text = out.read_text()
    assert "cell 11" in text and ("planted" in text) == fail


@pytest.mark.e2e
def test_a_full_disk_fails_the_run_with_the_path_and_a_failed_manifest(tmp_path, monkeypatch):
    nbdir, stages = _stages(tmp_path)
    write_model = pipeline.runs.write_model
    calls = []

    def full_disk_after_the_first_write(model, path):
        calls.append(path)
        if len(calls) == 2:  # the first write after a stage finished
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write_model(model, path)

    monkeypatch.setattr(pipeline.runs, "write_model", full_disk_after_the_first_write)
    result = _run(tmp_path, stages, nbdir)
    assert result.exit_code == 1
    assert "No space left on device" in result.message and "manifest.json" in result.message
    m = json.loads((result.run_dir / "manifest.json").read_text())
    assert m["status"] == "failed" and "No space left" in m["error"]
    assert not (tmp_path / "out" / "latest").exists()


@pytest.mark.e2e
def test_one_runner_runs_twice(tmp_path):
    nbdir, stages = _stages(tmp_path)
    params = load_params(_params_file(tmp_path))
    runner = pipeline.Runner(params, _params_file(tmp_path), stages=stages, notebooks_dir=nbdir)
    first, second = runner.run(), runner.run()
    assert (first.exit_code, second.exit_code) == (0, 0)
    assert (tmp_path / "out" / "latest").resolve() == second.run_dir
    assert "reused" in (second.run_dir / "run.log").read_text()


@pytest.mark.e2e
def test_peak_memory_includes_the_kernels_child_processes(tmp_path):
    """A child of the kernel (as a local Spark JVM is) counts in the stage's peak RSS.

    The child holds 300 MiB while the notebook waits, then ends; the manifest's peak counts
    the kernel and the child together, and the child's is recorded on its own too.
    """
    nbdir = tmp_path / "nbs"
    make_notebook(
        nbdir / "01_ingest.ipynb",
        PARAMS_CELL,
        "import polars, customer_intel.runs  # the kernel's own peak before the child's",
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "\"b = b'x' * (300 * 2**20); import sys; sys.stdin.read()\"], stdin=subprocess.PIPE)\n"
        "time.sleep(3)\n"
        "child.stdin.close(); child.wait()",
        RECORD.format(stage="ingest"),
    )
    stages = (Stage("ingest", "01_ingest.ipynb", "ingest", "ingest"),)
    result = _run(tmp_path, stages, nbdir)
    assert result.exit_code == 0, result.message
    entry = result.manifest["stages"]["ingest"]
    assert entry["children_peak_rss_mb"] >= 300, entry
    # the peak is the kernel's and the child's RSS at the same instant: the kernel (Python
    # with Polars imported) holds well over 100 MB while the child runs. Not its own peak
    # plus the child's: the kernel's RSS can fall a few MB after its imports (measured 2 MB
    # short under load)
    assert entry["kernel_peak_rss_mb"] < entry["children_peak_rss_mb"], entry
    assert entry["peak_rss_mb"] >= entry["children_peak_rss_mb"] + 100, entry


def test_running_stages_share_the_cores_and_one_left_alone_gets_them_back(monkeypatch, tmp_path):
    runner = pipeline.Runner(load_params(PARAMS_DIR / "smoke.yaml"), PARAMS_DIR / "smoke.yaml")
    runner._threads_dir = tmp_path
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 2)

    def shares() -> dict[str, str]:
        runner._share_threads()
        return {name: (tmp_path / name).read_text() for name in runner._running}

    runner._running = {"propensity": None}
    assert shares() == {"propensity": "2"}  # alone: a thread per core
    runner._running["segmentation"] = None
    assert shares() == {"propensity": "1", "segmentation": "1"}
    del runner._running["segmentation"]
    assert shares() == {"propensity": "2"}  # its partner ended: every core again
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 8)
    runner._running = dict.fromkeys(["a", "b", "c"])
    assert shares() == {"a": "2", "b": "2", "c": "2"}
    assert not list(tmp_path.glob(".*"))  # each written whole (a temporary file, renamed)


FIGURE_STAGE = (
    "import os, psutil\n"
    "import plotly.graph_objects as go\n"
    "from customer_intel import runs, static_images\n"
    "run = runs.open_stage(run_dir, {stage!r})\n"
    "run.show_figure(go.Figure(go.Bar(x=[1, 2], y=[3, 4])), {stage!r} + '_bars')\n"
    "kids = psutil.Process().children(recursive=True)\n"
    "assert not [p for p in kids if 'chrom' in p.name().lower()], 'the kernel started a browser'\n"
    "assert os.environ[static_images.SERVICE_ENV].startswith('http://127.0.0.1:')\n"
    "run.finish()"
)


@pytest.mark.e2e
def test_the_stages_of_a_run_draw_their_static_figures_in_the_runners_one_browser(tmp_path):
    """Two stages side by side save PNGs; neither kernel starts a browser of its own (one
    Chromium start per stage cost seconds each), and the runner's browser ends with the run."""
    import psutil

    from customer_intel import static_images

    if static_images.browser() is None:
        pytest.skip("no chromium")
    nbdir = tmp_path / "nbs"
    stages = []
    for i, name in enumerate(["a", "b"], 1):
        make_notebook(nbdir / f"0{i}_{name}.ipynb", PARAMS_CELL, FIGURE_STAGE.format(stage=name))
        stages.append(Stage(name, f"0{i}_{name}.ipynb", "ingest", name))
    result = _run(tmp_path, tuple(stages), nbdir, jobs=2)
    assert result.exit_code == 0, result.message
    for name in ["a", "b"]:
        png = result.run_dir / "figures" / f"{name}_bars.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kids = psutil.Process().children(recursive=True)
    assert not [p for p in kids if "chrom" in p.name().lower()], "a browser outlived the run"
