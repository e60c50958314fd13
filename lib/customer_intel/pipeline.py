"""Run the stage notebooks in order with papermill, each run in its own folder.

This is the only module that imports papermill. ``run_all.py`` is a thin command line over
:func:`main`. A run:

1. validates the params profile (exit code 2 on any problem, before any notebook starts);
2. creates ``<output_root>/runs/<UTC timestamp>_<params hash>/``; when only some stages run
   (``--only``/``--from``), the outputs of the others are hard-linked from ``latest`` so the new
   run folder is complete;
3. executes each stage notebook with its resolved parameters, showing progress per stage and per
   cell, and records status, wall time, peak memory, rows in/out and outputs in ``manifest.json``;
4. on success, and only then, switches ``<output_root>/latest`` to the new run atomically (a
   symlink replaced with ``os.replace``): a failed or killed run never moves it.

Exit codes: 0 success, 1 a stage failed (the message names the stage, the cell and the error;
the failed executed notebook stays in the run folder), 2 invalid params or usage, 130
interrupted (Ctrl-C, SIGINT), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import papermill
import psutil
import yaml
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError

from customer_intel import preflight, progress, runs
from customer_intel.kernels import StageKernel, death_reason, oom_kills, watch_peak
from customer_intel.params import (
    Params,
    ParamsError,
    load_params_with_origin,
    params_hash,
    stage_parameters,
)
from customer_intel.paths import NOTEBOOKS_DIR, PARAMS_DIR, PROJECT_ROOT, resolve

EXIT_OK, EXIT_STAGE_FAILED, EXIT_USAGE = 0, 1, 2
#: Seconds a cell runs before the runner says it is still running (and again after as long).
HEARTBEAT_SECONDS = 60.0


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: its name, notebook and params section."""

    name: str
    notebook: str
    section: str
    summary: str


#: The pipeline, in order. A stage is listed once its notebook exists.
STAGES: tuple[Stage, ...] = (
    Stage("ingest", "01_ingest.ipynb", "ingest", "raw events -> canonical events + rejects"),
    Stage("optimize", "02_optimize.ipynb", "optimize", "optimized Parquet + star-schema warehouse"),
    Stage("segmentation", "03_segmentation.ipynb", "segmentation", "RFM, CLV, KMeans++, cohorts"),
    Stage("propensity", "04_propensity.ipynb", "propensity", "purchase propensity (LightGBM)"),
    Stage(
        "recommendations", "05_recommendations.ipynb", "recommendations", "association rules, top-N"
    ),
    Stage("experiments", "06_experiments.ipynb", "experiments", "A/B test readout"),
)

#: Packages whose versions every manifest records.
VERSIONED_PACKAGES = (
    "customer_intel",
    "papermill",
    "polars",
    "duckdb",
    "ibis-framework",
    "sqlglot",
    "pyarrow",
    "pandas",
    "numpy",
    "scikit-learn",
    "lightgbm",
    "kneed",
    "scipy",
    "plotly",
    "pydantic",
)


class PlanError(ValueError):
    """The requested stages cannot run (unknown stage, nothing to reuse from ``latest``)."""


@dataclass
class RunResult:
    """What a run did."""

    run_id: str
    run_dir: Path
    status: str
    exit_code: int
    manifest: dict[str, Any]
    message: str = ""


# -- planning -------------------------------------------------------------------------------
def plan(
    stages: tuple[Stage, ...] = STAGES,
    *,
    only: list[str] | None = None,
    from_stage: str | None = None,
) -> list[Stage]:
    """The stages to execute, in pipeline order, for ``--only`` / ``--from`` (or all)."""
    names = [s.name for s in stages]
    for name in [*(only or []), *([from_stage] if from_stage else [])]:
        if name not in names:
            raise PlanError(f"unknown stage {name!r}; stages are {names}")
    if only and from_stage:
        raise PlanError("use either --only or --from, not both")
    if only:
        return [s for s in stages if s.name in only]
    if from_stage:
        return list(stages[names.index(from_stage) :])
    return list(stages)


def new_run_id(params: Params, now: dt.datetime | None = None) -> str:
    """``<UTC timestamp>_<params hash>``, e.g. ``20261124T031500Z_1a2b3c4d``."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}_{params_hash(params)}"


def _make_run_dir(runs_dir: Path, run_id: str) -> tuple[str, Path]:
    runs_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        rid = run_id if n == 1 else f"{run_id}-{n}"
        try:
            (runs_dir / rid).mkdir()
            return rid, runs_dir / rid
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run folder for {run_id} in {runs_dir}")


# -- facts for the manifest -----------------------------------------------------------------
def fingerprint(path: Path, block: int = 1 << 20) -> dict[str, Any]:
    """Size, mtime and a SHA-256 of the first and last MiB (cheap even for a 15 GB file)."""
    st = path.stat()
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read(block))
        if st.st_size > 2 * block:
            f.seek(-block, os.SEEK_END)
            h.update(f.read(block))
        elif st.st_size > block:
            h.update(f.read())
    return {
        "path": str(path),
        "bytes": st.st_size,
        "modified": dt.datetime.fromtimestamp(st.st_mtime, dt.UTC).isoformat(),
        "sha256_head_tail": h.hexdigest(),
    }


def input_fingerprints(params: Params) -> list[dict[str, Any]]:
    """Fingerprints of every input file named by a ``*_path`` key of the params."""
    out = []
    for section, values in params.model_dump(mode="json").items():
        for key, value in values.items():
            if not (key.endswith("_path") and isinstance(value, str) and value):
                continue
            p = resolve(value)
            files = sorted(p.parent.glob(p.name)) if any(c in value for c in "*?[") else [p]
            for f in files:
                if f.is_file():
                    out.append({"key": f"{section}.{key}", **fingerprint(f)})
    return out


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that shape results."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The checked-out commit and whether the work tree had uncommitted changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return {"commit": sha, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


# -- output: console and run.log --------------------------------------------------------------
class Tee:
    """A text stream writing to several streams (console and ``run.log``)."""

    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        """Write to every stream."""
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)

    def flush(self) -> None:
        """Flush every stream."""
        for s in self.streams:
            s.flush()


class ProgressEngine(NBClientEngine):
    """papermill's nbclient engine, reporting each cell's start and end to a callback."""

    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
        """Execute as nbclient does, wrapping the cell callbacks with ``on_cell``."""
        on_cell: Callable[[str, int, int, Any], None] | None = kwargs.pop("on_cell", None)
        if on_cell is not None:
            n_cells = len(nb_man.nb.cells)
            start, complete = nb_man.cell_start, nb_man.cell_complete

            def cell_start(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                on_cell("start", cell_index or 0, n_cells, cell)
                return start(cell, cell_index, **kw)

            def cell_complete(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                result = complete(cell, cell_index, **kw)
                on_cell("end", cell_index or 0, n_cells, cell)
                return result

            nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)


papermill_engines.register("customer_intel", ProgressEngine)


# -- reuse of earlier outputs -----------------------------------------------------------------
def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link a file or folder tree (copy where links are impossible)."""
    if src.is_dir():
        for item in src.rglob("*"):
            target = dst / item.relative_to(src)
            if item.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                _link_tree(item, target)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def reuse_stage_outputs(stage: Stage, latest: Path, run_dir: Path) -> dict[str, Any]:
    """Bring a stage's outputs from the last good run into this run folder (hard links).

    Files are never modified in place (every write replaces), so linking is safe.
    """
    record_path = latest / runs.STAGES / f"{stage.name}.json"
    if not record_path.exists():
        raise PlanError(
            f"stage {stage.name!r} is not run this time and {latest} has no outputs of it; "
            "run the whole pipeline first (python run_all.py)"
        )
    record = json.loads(record_path.read_text())
    for rel in [*record.get("outputs", []), f"{runs.STAGES}/{stage.name}.json"]:
        if (latest / rel).exists():
            _link_tree(latest / rel, run_dir / rel)
    nb = latest / "notebooks" / stage.notebook
    if nb.exists():
        _link_tree(nb, run_dir / "notebooks" / stage.notebook)
    return record


# -- the run ----------------------------------------------------------------------------------
@dataclass
class Runner:
    """Executes stages into a run folder and keeps the manifest."""

    params: Params
    params_file: Path
    overrides: tuple[str, ...] = ()
    stages: tuple[Stage, ...] = STAGES
    notebooks_dir: Path = NOTEBOOKS_DIR
    out: TextIO = field(default_factory=lambda: sys.stdout)
    cell_progress: bool = True

    @property
    def output_root(self) -> Path:
        """Folder holding ``runs/`` and ``latest``."""
        return resolve(self.params.common.output_root)

    def say(self, text: str) -> None:
        """Print a progress line (it also goes to run.log)."""
        self.out.write(text + "\n")

    def run(self, *, only: list[str] | None = None, from_stage: str | None = None) -> RunResult:
        """Execute the planned stages; switch ``latest`` only if all succeed."""
        todo = plan(self.stages, only=only, from_stage=from_stage)
        latest_link = self.output_root / "latest"
        reused = [s for s in self.stages if s not in todo]
        if reused and not latest_link.exists():
            names = ", ".join(s.name for s in reused)
            raise PlanError(
                f"stages {names} are not run this time, and there is no previous successful run "
                f"({latest_link} does not exist) to take their outputs from; "
                "run the whole pipeline first (python run_all.py)"
            )
        for abandoned in mark_abandoned_runs(self.output_root / "runs"):
            self.out.write(
                f"note: run {abandoned} was left 'running' by a killed runner; marked abandoned\n"
            )
        run_id, run_dir = _make_run_dir(self.output_root / "runs", new_run_id(self.params))
        console = self.out
        with (run_dir / "run.log").open("w") as log:
            self.out = Tee(console, log)
            try:
                return self._run(run_id, run_dir, todo, reused, latest_link)
            finally:
                self.out = console

    def _run(
        self,
        run_id: str,
        run_dir: Path,
        todo: list[Stage],
        reused: list[Stage],
        latest_link: Path,
    ) -> RunResult:
        started = time.time()
        manifest: dict[str, Any] = {
            "run_id": run_id,
            "status": "running",
            "started_at": dt.datetime.now(dt.UTC).isoformat(),
            "finished_at": None,
            "wall_seconds": None,
            "params_file": str(self.params_file),
            "overrides": list(self.overrides),
            "params_hash": params_hash(self.params),
            "params": self.params.model_dump(mode="json"),
            "inputs": input_fingerprints(self.params),
            "versions": package_versions(),
            "git": git_commit(),
            "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "runner_pid": os.getpid(),
            "stages": {},
        }
        manifest_path = run_dir / "manifest.json"
        self.say(f"run {run_id} -> {run_dir}")
        self._write_params(run_dir)

        previous = latest_link.resolve() if latest_link.exists() else None
        for stage in reused:
            assert previous is not None
            record = reuse_stage_outputs(stage, previous, run_dir)
            manifest["stages"][stage.name] = {
                "status": "reused",
                "from_run": previous.name,
                "rows_in": record.get("rows_in"),
                "rows_out": record.get("rows_out"),
                "outputs": record.get("outputs", []),
            }
            self.say(f"[{stage.name}] reused from {previous.name}")
        runs.write_json(manifest, manifest_path)

        result_code, message = EXIT_OK, ""
        kernels: list[StageKernel | None] = [None] * len(todo)
        try:
            for i, stage in enumerate(todo):
                kernels[i] = kernels[i] or self._start_kernel(stage)
                if i + 1 < len(todo):  # the next stage's kernel warms up while this one runs
                    kernels[i + 1] = self._start_kernel(todo[i + 1])
                entry = self._run_stage(stage, run_dir, i + 1, len(todo), kernels[i])
                kernels[i].shutdown()
                manifest["stages"][stage.name] = entry
                runs.write_json(manifest, manifest_path)
                if entry["status"] != "success":
                    result_code, message = EXIT_STAGE_FAILED, entry["error"]
                    break
        except KeyboardInterrupt as e:
            sig = e.signum if isinstance(e, Interrupted) else signal.SIGINT
            result_code = 128 + sig
            message = f"interrupted by {signal.Signals(sig).name}; outputs/latest was not moved"
            manifest["status"] = "interrupted"
        except OSError as e:  # the run folder itself cannot be written (disk full, read-only)
            result_code = EXIT_STAGE_FAILED
            where = f" ({stage.name} stage)" if "stage" in locals() else ""
            message = f"cannot write {e.filename or run_dir}{where}: {e.strerror or e}"
            manifest["status"] = "failed"
        finally:
            for kernel in kernels:
                if kernel is not None:
                    kernel.shutdown()

        manifest["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
        manifest["wall_seconds"] = round(time.time() - started, 2)
        if result_code == EXIT_OK:
            manifest["status"] = "success"
            runs.write_json(manifest, manifest_path)
            switch_latest(latest_link, run_dir)
            self.say(f"run {run_id} succeeded in {manifest['wall_seconds']:.1f}s")
        else:
            if manifest["status"] != "interrupted":
                manifest["status"] = "failed"
            manifest["error"] = message
            with contextlib.suppress(OSError):  # a full disk may refuse even this
                runs.write_json(manifest, manifest_path)
            self.say(f"run {run_id} FAILED: {message}")
            self.say(f"latest still points to {previous.name if previous else 'nothing'}")
        return RunResult(run_id, run_dir, manifest["status"], result_code, manifest, message)

    def _kernel_env(self) -> dict[str, str]:
        env = {progress.MODE_ENV: "quiet" if not self.cell_progress else "lines"}
        # OpenMP threads spin while they wait; with a warming kernel beside a running stage
        # (and stages side by side) spinning threads slow LightGBM and scikit-learn many times
        env.setdefault("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
        return env

    def _start_kernel(self, stage: Stage) -> StageKernel:
        return StageKernel(
            self.notebooks_dir / stage.notebook, cwd=self.notebooks_dir, env=self._kernel_env()
        )

    def _write_params(self, run_dir: Path) -> None:
        folder = run_dir / "params"
        folder.mkdir(exist_ok=True)
        resolved = self.params.model_dump(mode="json")
        (folder / "resolved.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        for stage in self.stages:
            flat = stage_parameters(self.params, stage.section, run_dir=run_dir)
            (folder / f"{stage.name}.yaml").write_text(yaml.safe_dump(flat, sort_keys=False))

    def _run_stage(
        self, stage: Stage, run_dir: Path, i: int, n: int, kernel: StageKernel
    ) -> dict[str, Any]:
        source = self.notebooks_dir / stage.notebook
        target = run_dir / "notebooks" / stage.notebook
        target.parent.mkdir(exist_ok=True)
        parameters = stage_parameters(self.params, stage.section, run_dir=run_dir)
        t0 = time.time()
        self.say(f"[{i}/{n}] {stage.name}: {stage.notebook} ...")
        current: dict[str, Any] = {"index": None, "source": "", "started": t0}

        def on_cell(event: str, index: int, total: int, cell: Any) -> None:
            if cell.get("cell_type") != "code":
                return
            if event == "start":
                current.update(index=index, total=total, source=cell.source, started=time.time())
            elif self.cell_progress:
                took = cell.metadata.get("papermill", {}).get("duration") or 0.0
                self.say(
                    f"    {stage.name} cell {index + 1}/{total} done in {took:.1f}s "
                    f"(stage {time.time() - t0:.1f}s)"
                )

        def cell_text() -> str:
            first = (current["source"] or "").strip().splitlines()
            return (
                f"cell {current['index'] + 1}/{current['total']} "
                f"({_clip(first[0]) if first else ''})"
                if current["index"] is not None
                else "kernel start"
            )

        entry: dict[str, Any] = {"status": "running", "notebook": f"notebooks/{stage.notebook}"}
        stop, peak, oom_before = threading.Event(), {"peak": 0}, oom_kills()
        watcher = threading.Thread(target=watch_peak, args=(kernel, stop, peak), daemon=True)
        heartbeat = threading.Thread(
            target=self._heartbeat, args=(stage, current, stop, t0), daemon=True
        )
        watcher.start()
        heartbeat.start()
        try:
            kernel.ready()
            papermill.execute_notebook(
                str(source),
                str(target),
                parameters=parameters,
                engine_name="customer_intel",
                kernel_name="python3",
                km=kernel.km,
                cwd=str(self.notebooks_dir),
                progress_bar=False,
                stdout_file=self.out,
                stderr_file=self.out,
                on_cell=on_cell,
            )
            entry["status"] = "success"
        except PapermillExecutionError as e:
            first = (e.source or "").strip().splitlines()
            entry["status"] = "failed"
            entry["error"] = (
                f"stage {stage.name!r} failed in {target} at cell {e.cell_index + 1} "
                f"(In [{e.exec_count}]: {_clip(first[0]) if first else ''}): {e.ename}: "
                f"{_clip(str(e.evalue), 2000)}"
            )
        except Exception as e:  # kernel died, notebook missing, ...
            entry["status"] = "failed"
            if not kernel.alive():
                time.sleep(0.3)  # let the process be reaped so its exit signal is known
                entry["error"] = (
                    f"stage {stage.name!r} died at {cell_text()} after "
                    f"{time.time() - t0:.0f}s: {death_reason(kernel, peak['peak'], oom_before)}; "
                    f"see {target}"
                )
            else:
                entry["error"] = (
                    f"stage {stage.name!r} failed ({target}): {type(e).__name__}: "
                    f"{_clip(str(e), 2000)}"
                )
        finally:
            stop.set()
            watcher.join()
            heartbeat.join()
        entry["wall_seconds"] = round(time.time() - t0, 2)
        entry["peak_rss_mb"] = round(peak["peak"] / 2**20, 1)
        record_path = run_dir / runs.STAGES / f"{stage.name}.json"
        if entry["status"] == "success" and record_path.exists():
            record = json.loads(record_path.read_text())
            for key in ("rows_in", "rows_out", "outputs", "metrics", "kernel_peak_rss_mb"):
                entry[key] = record.get(key)
        elif entry["status"] == "success":
            entry["status"] = "failed"
            entry["error"] = (
                f"stage {stage.name!r} finished without recording its outputs "
                f"(its last cell must call run.finish(...)); see {target}"
            )
        if entry["status"] == "success":
            self.say(
                f"[{i}/{n}] {stage.name}: ok in {entry['wall_seconds']:.1f}s, "
                f"peak {entry['peak_rss_mb']:.0f} MiB, rows in {entry.get('rows_in')}, "
                f"rows out {entry.get('rows_out')}"
            )
        else:
            self.say(f"[{i}/{n}] {stage.name}: FAILED after {entry['wall_seconds']:.1f}s")
            self.say("    " + entry["error"])
        return entry

    def _heartbeat(
        self, stage: Stage, current: dict[str, Any], stop: threading.Event, t0: float
    ) -> None:
        """Every ``HEARTBEAT_SECONDS`` a cell runs, one line: which cell, for how long."""
        while not stop.wait(HEARTBEAT_SECONDS):
            if current["index"] is None or not self.cell_progress:
                continue
            running = time.time() - current["started"]
            if running >= HEARTBEAT_SECONDS:
                stage_time = progress.duration(time.time() - t0)
                self.say(
                    f"    {stage.name} cell {current['index'] + 1}/{current['total']} running "
                    f"for {progress.duration(running)} (stage {stage_time})"
                )


def _clip(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters (messages quote values; a value can be huge)."""
    return text if len(text) <= limit else text[: limit - 1] + f"… [{len(text):,} chars]"


def prepare_notebooks(
    params: Params, stages: list[Stage], dest: Path, notebooks_dir: Path = NOTEBOOKS_DIR
) -> list[Path]:
    """Write each stage notebook with its parameters injected (not executed) into ``dest``.

    They share ``run_dir = dest/run``, so executing them in order (nbval, JupyterLab) chains the
    stages exactly as a pipeline run does.
    """
    dest = Path(dest).resolve()
    run_dir = dest / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stage in stages:
        target = dest / stage.notebook
        papermill.execute_notebook(
            str(notebooks_dir / stage.notebook),
            str(target),
            parameters=stage_parameters(params, stage.section, run_dir=run_dir),
            prepare_only=True,
            kernel_name="python3",
            progress_bar=False,
        )
        written.append(target)
    return written


def switch_latest(link: Path, run_dir: Path) -> None:
    """Point ``link`` at ``run_dir`` atomically (new symlink, then ``os.replace``)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(run_dir, link.parent), target_is_directory=True)
    os.replace(tmp, link)


class Interrupted(KeyboardInterrupt):
    """The runner received a termination signal (``signum``); the exit code is 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def mark_abandoned_runs(runs_dir: Path) -> list[str]:
    """Mark runs whose manifest still says ``running`` but whose runner is gone as abandoned.

    A runner killed with SIGKILL (or a machine that went down) cannot record its end; the next
    run does it for it, so a manifest never says ``running`` forever. Returns their ids.
    """
    marked = []
    for path in sorted(runs_dir.glob("*/manifest.json")) if runs_dir.exists() else []:
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if manifest.get("status") != "running":
            continue
        pid = manifest.get("runner_pid")
        if pid is not None and psutil.pid_exists(pid) and pid != os.getpid():
            continue  # still running (a concurrent run)
        manifest["status"] = "abandoned"
        manifest["error"] = (
            "the runner stopped without recording an end (killed with SIGKILL, or the machine "
            f"went down); marked by a later run at {dt.datetime.now(dt.UTC).isoformat()}"
        )
        with contextlib.suppress(OSError):
            runs.write_json(manifest, path)
            marked.append(path.parent.name)
    return marked


@contextlib.contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into :class:`Interrupted` so a killed run records itself as interrupted."""

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# -- command line -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``run_all.py`` argument parser."""
    p = argparse.ArgumentParser(
        prog="run_all.py",
        description="Run the customer_intel stage notebooks in order, each run in its own folder.",
        epilog="Exit codes: 0 success, 1 a stage failed, 2 invalid params or usage, "
        "130 interrupted (SIGINT), 143 terminated (SIGTERM).",
    )
    p.add_argument(
        "--params",
        type=Path,
        default=PARAMS_DIR / "default.yaml",
        help="params profile (default: params/default.yaml)",
    )
    p.add_argument(
        "-p",
        "--param",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one key, e.g. -p propensity.n_estimators=200 (repeatable)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--only", help="run only these stages (comma-separated); others from latest")
    g.add_argument("--from", dest="from_stage", help="run this stage and the ones after it")
    p.add_argument("--list", action="store_true", help="list the stages and exit")
    p.add_argument("--dry-run", action="store_true", help="validate params and inputs; run nothing")
    p.add_argument("--quiet-cells", action="store_true", help="no per-cell progress lines")
    p.add_argument(
        "--prepare-only",
        type=Path,
        metavar="DIR",
        help="write the parameterized stage notebooks into DIR (run_dir = DIR/run) without "
        "executing them, e.g. for pytest --nbval-lax DIR",
    )
    return p


def main(argv: list[str] | None = None, *, stages: tuple[Stage, ...] = STAGES) -> int:
    """Command-line entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.list:
        for i, s in enumerate(stages, 1):
            print(f"{i}. {s.name:<16} notebooks/{s.notebook:<26} {s.summary}")
        return EXIT_OK
    only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    try:
        params, origin = load_params_with_origin(args.params, args.overrides)
        preflight.check(params, origin, source=str(Path(args.params).resolve()))
        todo = plan(stages, only=only, from_stage=args.from_stage)
    except (ParamsError, PlanError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.prepare_only:
        for path in prepare_notebooks(params, todo, args.prepare_only):
            print(path)
        return EXIT_OK
    if args.dry_run:
        print(f"params {args.params}: valid (hash {params_hash(params)})")
        for f in input_fingerprints(params):
            print(f"input {f['key']}: {f['path']} ({f['bytes']:,} bytes)")
        print("would run: " + ", ".join(s.name for s in todo))
        return EXIT_OK
    runner = Runner(
        params,
        Path(args.params),
        tuple(args.overrides),
        stages=stages,
        cell_progress=not args.quiet_cells,
    )
    try:
        with _interrupt_on_sigterm():
            result = runner.run(only=only, from_stage=args.from_stage)
    except PlanError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if result.exit_code == EXIT_OK:
        rel = os.path.relpath(result.run_dir, Path.cwd())
        rel = str(result.run_dir) if rel.startswith("..") else rel
        print(f"\nRun folder: {rel}")
        print(f"Open its notebooks: .venv/bin/jupyter lab {rel}/notebooks")
        print(f"Manifest: {rel}/manifest.json   (outputs/latest now points here)")
    else:
        print(f"error: {result.message}", file=sys.stderr)
    return result.exit_code
