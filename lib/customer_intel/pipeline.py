"""Run the stage notebooks with papermill as a graph: only what is needed, side by side.

This is the only module that imports papermill. ``run_all.py`` is a thin command line over
:func:`main`. A run:

1. validates the params profile and what it names (exit code 2 on any problem, before any
   notebook starts; :mod:`customer_intel.params`, :mod:`customer_intel.preflight`);
2. plans every stage from the declarations of :mod:`customer_intel.stages`: *execute*; *reuse*
   (a previous run computed it with the same content key: notebook, parameters, library code,
   inputs; :mod:`customer_intel.reuse`) by hard-linking its outputs; *skip* (no stage makes
   what it needs, e.g. experiments without assignments or a unit table), with the reason; or,
   with ``--only``/``--from``, *take from latest* the stages not selected (*stale* when their
   key differs from what this run's params would make: said loudly);
3. creates ``<output_root>/runs/<UTC timestamp>_<params hash>/`` and executes the planned
   stages, each in its own Jupyter kernel (warmed with its imports ahead of time), up to
   ``--jobs`` at once as their inputs become ready; a failed stage stops the others;
4. records for every stage its status, the run its outputs come from, its key, inputs (with
   the keys of the stages that made them) and outputs, time and peak memory in
   ``manifest.json`` (:class:`customer_intel.contracts.Manifest`), and the graph as Mermaid in
   ``graph.mmd``;
5. on success, and only then, switches ``<output_root>/latest`` to the new run atomically (a
   symlink replaced with ``os.replace``): a failed or killed run never moves it.

Exit codes: 0 success, 1 a stage failed (the message names the stage, the cell and the error;
the failed executed notebook stays in the run folder), 2 invalid params or usage, 130
interrupted (Ctrl-C, SIGINT), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
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

from customer_intel import preflight, progress, reuse, runs, static_images
from customer_intel import stages as stage_graph
from customer_intel.contracts import Manifest, StageEntry, StageInput
from customer_intel.kernels import (
    KERNEL_DIR_PREFIX,
    StageKernel,
    death_reason,
    figure_start_code,
    oom_kills,
    watch_peak,
)
from customer_intel.params import (
    Params,
    ParamsError,
    load_params_with_origin,
    params_hash,
    stage_parameters,
)
from customer_intel.paths import (
    NOTEBOOKS_DIR,
    PARAMS_DIR,
    PROJECT_ROOT,
    claim_temp_dir,
    remove_abandoned_temp_dirs,
)
from customer_intel.stages import STAGES, Stage

EXIT_OK, EXIT_STAGE_FAILED, EXIT_USAGE = 0, 1, 2
#: Seconds a cell runs before the runner says it is still running (and again after as long).
HEARTBEAT_SECONDS = 60.0
#: Seconds the runner waits for a started stage's kernel to be ready before it warms others
#: (a kernel is ready in 1-3 s; the runner reacts to ended stages only after the wait).
FIRST_READY_WAIT_SECONDS = 10.0
#: The runner's own temporary folder starts so, in the system's temporary folder: ``threads/``
#: holds the running stages' thread shares, ``tmp/`` whatever the runner process writes as
#: temporary files while it runs (the figure browser's profile and page). Removed at the run's
#: end; after a killed run, at the next run's start.
RUNNER_DIR_PREFIX = "customer_intel_runner_"
#: Memory one stage may need at most (the scale target); bounds the default ``--jobs``.
STAGE_MEMORY_BYTES = 6 * 2**30

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
    """The requested stages cannot run (unknown stage, inputs that no run has made)."""


@dataclass
class RunResult:
    """What a run did."""

    run_id: str
    run_dir: Path
    status: str
    exit_code: int
    manifest: dict[str, Any]
    message: str = ""


def default_jobs() -> int:
    """Stages side by side by default: the cores, bounded by memory (6 GB a stage)."""
    by_memory = psutil.virtual_memory().available // STAGE_MEMORY_BYTES
    return int(max(1, min(os.cpu_count() or 1, by_memory, 4)))


def select(
    ordered: list[Stage], *, only: list[str] | None = None, from_stage: str | None = None
) -> list[str]:
    """The stages asked for: ``--only`` these, ``--from`` this one and all after it, or all."""
    names = [s.name for s in ordered]
    for name in [*(only or []), *([from_stage] if from_stage else [])]:
        if name not in names:
            raise PlanError(f"unknown stage {name!r}; stages are {names}")
    if only and from_stage:
        raise PlanError("use either --only or --from, not both")
    if only:
        return [n for n in names if n in only]
    if from_stage:
        return names[names.index(from_stage) :]
    return names


@dataclass
class Step:
    """What the plan does with one stage."""

    stage: Stage
    action: str  # execute, reuse, latest, skip
    key: str | None = None
    inputs: list[StageInput] = field(default_factory=list)
    source: Path | None = None  # folder holding the outputs to link (reuse, latest)
    source_entry: StageEntry | None = None
    reason: str = ""

    def describe(self) -> str:
        """One line for --dry-run and the run's log."""
        if self.action == "execute":
            return f"{self.stage.name}: run" + (f" ({self.reason})" if self.reason else "")
        if self.action in ("reuse", "latest"):
            origin = self.source_entry.run if self.source_entry else None
            how = "reuse" if self.action == "reuse" else "take from latest"
            why = f": {self.reason}" if self.reason else ""
            return f"{self.stage.name}: {how} (run {origin}){why}"
        return f"{self.stage.name}: skip ({self.reason})"


def plan(
    params: Params,
    *,
    stages: tuple[Stage, ...] = STAGES,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    output_root: Path,
    only: list[str] | None = None,
    from_stage: str | None = None,
    force: set[str] | None = None,
    versions: dict[str, str] | None = None,
) -> list[Step]:
    """What to do with every stage, in dependency order (see the module docstring)."""
    ordered = stage_graph.order(stages, params)
    chosen = set(select(ordered, only=only, from_stage=from_stage))
    partial = only is not None or from_stage is not None
    made_by = stage_graph.producers(ordered, params)
    versions = versions if versions is not None else package_versions()
    runs_dir = output_root / "runs"
    latest = output_root / "latest"
    previous = latest.resolve() if latest.exists() else None
    prev_manifest = _read_manifest(previous)
    force = force or set()
    steps: dict[str, Step] = {}
    for stage in ordered:
        missing, inputs = _stage_inputs(stage.resolve(params), made_by, steps)
        parameters = stage_parameters(params, stage.section, run_dir="")
        key = reuse.stage_key(
            notebook=notebooks_dir / stage.notebook,
            parameters=parameters,
            inputs=[(i.item, i.key) for i in inputs],
            versions=versions,
        )
        step = Step(stage, "execute", key=key, inputs=inputs)
        if missing:
            item, maker, up = missing[0]
            if maker is None:
                reason = f"needs {item}, which no stage makes with these params{_why_missing(item)}"
            else:
                reason = f"needs {item} from {maker}, which is skipped ({up.reason})"
            if stage.name in chosen and partial:
                hint = (
                    f"; run --only {maker},{stage.name}"
                    if maker and up.stage.name not in chosen
                    else ""
                )
                raise PlanError(f"stage {stage.name!r} cannot run: {reason}{hint}")
            step.action, step.reason, step.key = "skip", reason, None
        elif stage.name not in chosen:
            entry = prev_manifest.stages.get(stage.name) if prev_manifest else None
            _take_from_latest(step, entry, previous)
        elif stage.name not in force:
            found = reuse.find_reusable(runs_dir, stage.name, key)
            if found is not None:
                step.action, step.source, step.source_entry = "reuse", found[0], found[1]
                step.reason = "unchanged"
        steps[stage.name] = step
    return list(steps.values())


def _stage_inputs(
    io: stage_graph.StageIO, made_by: dict[str, str], steps: dict[str, Step]
) -> tuple[list[tuple[str, str | None, Step | None]], list[StageInput]]:
    """What a stage reads, given the steps planned before it.

    Returns the required items no planned stage makes, as ``(item, maker, maker's step)``,
    and the inputs it has (with their makers' content keys; input files by their own key).
    """
    missing, inputs = [], []
    for item in (*io.reads, *io.optional, *io.late):
        maker = made_by.get(item)
        up = steps.get(maker) if maker else None
        if up is None or up.action == "skip":
            if item in io.reads:
                missing.append((item, maker, up))
            continue
        inputs.append(StageInput(item=item, made_by=maker, key=up.key))
    if io.files:
        inputs.append(StageInput(item=f"file:{','.join(io.files)}", key=reuse.files_key(io.files)))
    return missing, inputs


def _take_from_latest(step: Step, entry: StageEntry | None, previous: Path | None) -> None:
    """A stage not selected: take its outputs from ``latest`` (``entry``), or skip it."""
    if entry is None or entry.status not in ("success", "reused", "stale"):
        step.action, step.key = "skip", None
        step.reason = "not selected, and no earlier successful run has its outputs"
        return
    step.action, step.source, step.source_entry = "latest", previous, entry
    if entry.key != step.key:
        step.reason = (
            "STALE: made with other params, code or inputs than this run's "
            "(its content key differs)"
        )


def _why_missing(item: str) -> str:
    if item == stage_graph.table("sample_assignments"):
        return (
            " (ingest writes it only for the built-in sample; an A/B readout of your own data "
            "needs experiments.units_path)"
        )
    if item == stage_graph.table("sample_customers"):
        return " (ingest writes it only for the built-in sample; use cluster_source: attributes)"
    return ""


def _read_manifest(run_dir: Path | None) -> Manifest | None:
    if run_dir is None:
        return None
    try:
        return runs.read_manifest(run_dir)
    except (OSError, ValueError):
        return None


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
def input_fingerprints(params: Params) -> list[dict[str, Any]]:
    """Fingerprints of every input file named by a ``*_path`` key of the params."""
    out = []
    for section, values in params.model_dump(mode="json").items():
        for key, value in values.items():
            if key.endswith("_path") and isinstance(value, str) and value:
                for f in reuse.files_of(value):
                    out.append({"key": f"{section}.{key}", **reuse.file_fingerprint(f)})
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


#: seconds between two saves of the executed notebook while it runs (papermill saves it at every
#: cell's start and end; the last save, at its end or failure, always happens)
SAVE_EVERY_SECONDS = 10.0


class ProgressEngine(NBClientEngine):
    """papermill's nbclient engine, reporting each cell's start and end to a callback.

    It also saves the executed notebook at most every :data:`SAVE_EVERY_SECONDS` while it runs:
    papermill writes (and validates) the whole notebook at every cell's start and end, and a
    notebook holding its figures is megabytes, so a stage spent seconds of the runner's one
    Python thread on rewriting it (0.24 s per save of the 3.4 MB propensity notebook).
    """

    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
        """Execute as nbclient does, wrapping the cell callbacks with ``on_cell``."""
        save = nb_man.save

        def save_now_and_then(**kw: Any) -> None:
            if time.monotonic() - last[0] >= SAVE_EVERY_SECONDS:
                save(**kw)
                last[0] = time.monotonic()

        last = [time.monotonic()]
        nb_man.save = save_now_and_then
        try:
            return cls._execute_with_callbacks(nb_man, kernel_name, **kwargs)
        finally:
            del nb_man.save  # papermill's own again: its closing save writes the final state

    @classmethod
    def _execute_with_callbacks(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
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


class _Prefixed:
    """A text stream that prefixes every line (kernel output of stages running side by side)."""

    def __init__(self, out: Callable[[str], None], prefix: str) -> None:
        self.out, self.prefix, self.buffer = out, prefix, ""

    def write(self, text: str) -> int:
        """Buffer, and pass on whole lines with the prefix."""
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            self.out(f"{self.prefix}{line}")
        return len(text)

    def flush(self) -> None:
        """Pass on what is left of a line."""
        if self.buffer:
            self.out(f"{self.prefix}{self.buffer}")
            self.buffer = ""


# -- the run ----------------------------------------------------------------------------------
@dataclass
class _Queue:
    """The stages of one run still to execute, running (futures) and done; warm kernels."""

    pending: list[Step]
    deps: dict[str, set[str]]  # stage -> stages it must wait for before it starts
    late: dict[str, dict[str, str]] = field(default_factory=dict)  # stage -> {late input: maker}
    weights: dict[str, float] = field(default_factory=dict)  # stage -> expected seconds
    done: set[str] = field(default_factory=set)  # ended successfully
    ended: set[str] = field(default_factory=set)  # ended, whatever their status
    futures: dict[cf.Future, Step] = field(default_factory=dict)
    kernels: dict[str, StageKernel] = field(default_factory=dict)  # warm, not started yet
    launched: dict[str, StageKernel] = field(default_factory=dict)  # the running stages' kernels
    started: int = 0

    def __post_init__(self) -> None:
        self.names = {s.stage.name for s in self.pending}  # the stages this run executes
        self.n = len(self.pending)
        # the longest chain of work each stage starts first (ties keep the pipeline's order):
        # on few cores, a long chain started late is what makes a run long
        paths = critical_paths(self.deps, self.late, self.weights, self.names)
        self.pending = sorted(self.pending, key=lambda s: -paths[s.stage.name])
        self.read_by = {n for name in self.names for n in self.deps[name] & self.names} | {
            maker for name in self.names for maker in self.late.get(name, {}).values()
        }

    def running(self) -> set[str]:
        """The stages running now."""
        return {s.stage.name for s in self.futures.values()}

    def ready(
        self, step: Step, also_done: frozenset[str] | set[str] = frozenset(), *, late: bool = True
    ) -> bool:
        """Whether ``step`` can start.

        The stages of this run it reads are done (or in ``also_done``), and the makers of its
        late inputs have started (so one slot never holds a stage that waits for a maker with
        no slot to run in); without ``late`` only the former.
        """
        name = step.stage.name
        makers = set(self.late.get(name, {}).values()) & self.names if late else set()
        return (self.deps[name] & self.names) <= self.done | also_done and makers <= (
            self.done | self.running() | also_done
        )

    def defers(self, step: Step) -> bool:
        """Whether ``step`` gives way to the other ready stages.

        It reads a late input whose maker has not ended, so it may wait for it, and no stage of
        this run reads its outputs, so starting it later holds up no one. Started first, it
        could hold a slot idle while the others queue (metrics, which reads propensity's test
        scores); a late reader that others wait for (propensity, reading segmentation's RFM
        segments) keeps its place.
        """
        name = step.stage.name
        makers = set(self.late.get(name, {}).values()) & self.names
        return bool(makers - self.ended) and name not in self.read_by

    def start_order(self) -> list[Step]:
        """The pending stages in the order to try starting them.

        The queue's (longest chain first), except that those that defer (:meth:`defers`) come
        after every other.
        """
        return sorted(self.pending, key=self.defers)  # stable: the queue's order otherwise

    def awaited(self) -> dict[str, str]:
        """Late input -> its maker, for the makers of this run that have not ended."""
        return {
            item: maker
            for name in self.names
            for item, maker in self.late.get(name, {}).items()
            if maker in self.names and maker not in self.ended
        }


def critical_paths(
    deps: dict[str, set[str]],
    late: dict[str, dict[str, str]],
    weights: dict[str, float],
    names: set[str],
) -> dict[str, float]:
    """Stage -> the expected seconds of the longest chain from its start to the end of the run.

    A chain follows what reads a stage's outputs (late inputs too) among ``names``; a stage
    weighs its ``weights`` entry, or the median of the known ones where unknown (a stage new
    since the last run is not taken for a one-second stage), or 1 when none is known.
    """
    unknown = statistics.median(weights.values()) if weights else 1.0
    readers: dict[str, set[str]] = {n: set() for n in names}
    for name in names:
        for up in (deps.get(name, set()) | set(late.get(name, {}).values())) & names:
            readers[up].add(name)
    memo: dict[str, float] = {}

    def longest(name: str) -> float:
        if name not in memo:
            after = max((longest(r) for r in readers[name]), default=0.0)
            memo[name] = weights.get(name, unknown) + after
        return memo[name]

    return {name: longest(name) for name in names}


@dataclass
class Runner:
    """Plans and executes the stages of one run into its own folder; keeps the manifest."""

    params: Params
    params_file: Path
    overrides: tuple[str, ...] = ()
    stages: tuple[Stage, ...] = STAGES
    notebooks_dir: Path = NOTEBOOKS_DIR
    out: TextIO = field(default_factory=lambda: sys.stdout)
    cell_progress: bool = True
    jobs: int | None = None
    force: set[str] | None = None

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._running: dict[str, StageKernel] = {}
        self._log: TextIO | None = None  # the run's run.log while it runs
        self._threads_dir: Path | None = None  # the running stages' threads files
        self._temp_root: str | None = None  # the system's temporary folder, while a run runs
        self._figure_url: str | None = None  # the run's figure service, while it runs
        self._figures: static_images.Service | None = None
        self._drawing: set[str] = set()  # the stages of the run that save static figures

    @property
    def output_root(self) -> Path:
        """Folder holding ``runs/`` and ``latest``."""
        from customer_intel.paths import resolve

        return resolve(self.params.common.output_root)

    def say(self, text: str) -> None:
        """Print a progress line (during a run also to run.log); safe from several threads."""
        with self._lock:
            self.out.write(text + "\n")
            if self._log is not None:
                self.out.flush()
                self._log.write(text + "\n")
                self._log.flush()

    def plan(self, *, only: list[str] | None = None, from_stage: str | None = None) -> list[Step]:
        """The plan of this run (nothing is executed)."""
        return plan(
            self.params,
            stages=self.stages,
            notebooks_dir=self.notebooks_dir,
            output_root=self.output_root,
            only=only,
            from_stage=from_stage,
            force=self.force,
        )

    def run(self, *, only: list[str] | None = None, from_stage: str | None = None) -> RunResult:
        """Plan, then execute; switch ``latest`` only if every planned stage succeeds."""
        steps = self.plan(only=only, from_stage=from_stage)
        self._stop.clear()
        self._running.clear()
        for abandoned in mark_abandoned_runs(self.output_root / "runs"):
            self.say(
                f"note: run {abandoned} was left 'running' by a killed runner; marked abandoned"
            )
        left = [
            *remove_abandoned_temp_dirs(KERNEL_DIR_PREFIX),
            *remove_abandoned_temp_dirs(RUNNER_DIR_PREFIX),
        ]
        if left:
            self.say(f"note: removed {len(left)} temporary folder(s) a killed run left")
        run_id, run_dir = _make_run_dir(self.output_root / "runs", new_run_id(self.params))
        with (run_dir / "run.log").open("w") as log, self._runner_temp_dir():
            self._log = log
            try:
                return self._run(run_id, run_dir, steps)
            finally:
                self._log = None

    @contextlib.contextmanager
    def _runner_temp_dir(self) -> Iterator[None]:
        """The run's own temporary folder (:data:`RUNNER_DIR_PREFIX`), named after this process.

        While the run runs, this process's temporary files go into its ``tmp/`` (Python's
        ``tempfile`` and ``TMPDIR`` for what it starts: the figure browser wrote its profile
        and kaleido its page into /tmp, and a runner killed with SIGKILL left both there). The
        stage kernels' folders stay in the system's temporary folder, each named after its
        kernel (:class:`StageKernel`). Both settings are put back and the folder removed when
        the run ends; after a SIGKILL, the next run removes it.
        """
        self._temp_root = tempfile.gettempdir()
        folder = Path(tempfile.mkdtemp(prefix=RUNNER_DIR_PREFIX, dir=self._temp_root))
        claim_temp_dir(folder, os.getpid())
        self._threads_dir = folder / "threads"
        self._threads_dir.mkdir()
        (folder / "tmp").mkdir()
        saved_tempdir, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
        tempfile.tempdir = os.environ["TMPDIR"] = str(folder / "tmp")
        try:
            yield
        finally:
            tempfile.tempdir = saved_tempdir
            if saved_env is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved_env
            shutil.rmtree(folder, ignore_errors=True)
            self._threads_dir = self._temp_root = None

    def _run(self, run_id: str, run_dir: Path, steps: list[Step]) -> RunResult:
        """Execute the plan into ``run_dir``: the manifest is written as stages end."""
        started = time.time()
        jobs = self.jobs or default_jobs()
        manifest = self._new_manifest(run_id, jobs)
        path = run_dir / "manifest.json"
        previous = self.output_root / "latest"
        previous_name = previous.resolve().name if previous.exists() else None
        self.say(f"run {run_id} -> {run_dir}")
        result_code, message = EXIT_OK, ""
        try:
            todo = self._prepare(run_dir, steps, manifest, path, jobs)
            with self._figure_service(todo):
                result_code, message = self._execute(todo, steps, run_dir, manifest, path, jobs)
        except KeyboardInterrupt as e:
            sig = e.signum if isinstance(e, Interrupted) else signal.SIGINT
            result_code = 128 + sig
            message = f"interrupted by {signal.Signals(sig).name}; outputs/latest was not moved"
            manifest.status = "interrupted"
        except OSError as e:  # the run folder itself cannot be written (disk full, read-only)
            result_code = EXIT_STAGE_FAILED
            message = f"cannot write {e.filename or run_dir}: {e.strerror or e}"
            manifest.status = "failed"
        order = [s.stage.name for s in steps]  # pipeline order, whatever finished first
        manifest.stages = dict(sorted(manifest.stages.items(), key=lambda kv: order.index(kv[0])))
        manifest.finished_at = dt.datetime.now(dt.UTC).isoformat()
        manifest.wall_seconds = round(time.time() - started, 2)
        self._conclude(manifest, path, run_dir, result_code, message, previous_name)
        return RunResult(
            run_id, run_dir, manifest.status, result_code, manifest.model_dump(mode="json"), message
        )

    def _new_manifest(self, run_id: str, jobs: int) -> Manifest:
        """The manifest of a run that starts now: params, inputs, versions, host."""
        return Manifest(
            run_id=run_id,
            status="running",
            started_at=dt.datetime.now(dt.UTC).isoformat(),
            params_file=str(self.params_file),
            overrides=list(self.overrides),
            params_hash=params_hash(self.params),
            params=self.params.model_dump(mode="json"),
            inputs=input_fingerprints(self.params),
            versions=package_versions(),
            git=git_commit(),
            host={"platform": platform.platform(), "cpus": os.cpu_count()},
            runner_pid=os.getpid(),
            jobs=jobs,
        )

    def _prepare(
        self, run_dir: Path, steps: list[Step], manifest: Manifest, path: Path, jobs: int
    ) -> list[Step]:
        """Write the params and the stage graph; link reused stages; return the steps to execute."""
        self._write_params(run_dir)
        (run_dir / "graph.mmd").write_text(stage_graph.mermaid(self.stages, self.params))
        for step in steps:
            if step.action != "execute":
                manifest.stages[step.stage.name] = self._not_executed(step, run_dir)
        runs.write_model(manifest, path)
        todo = [s for s in steps if s.action == "execute"]
        if todo:
            self.say(
                f"{len(todo)} stage(s) to execute, up to {jobs} at once: "
                + ", ".join(s.stage.name for s in todo)
            )
        return todo

    def _conclude(
        self,
        manifest: Manifest,
        path: Path,
        run_dir: Path,
        result_code: int,
        message: str,
        previous_name: str | None,
    ) -> None:
        """Record the run's status; move ``latest`` to it only when it succeeded."""
        if result_code == EXIT_OK:
            manifest.status = "success"
            runs.write_model(manifest, path)
            switch_latest(self.output_root / "latest", run_dir)
            self.say(f"run {manifest.run_id} succeeded in {manifest.wall_seconds:.1f}s")
            return
        if manifest.status != "interrupted":
            manifest.status = "failed"
        manifest.error = message
        with contextlib.suppress(OSError):  # a full disk may refuse even this
            runs.write_model(manifest, path)
        self.say(f"run {manifest.run_id} FAILED: {message}")
        self.say(f"latest still points to {previous_name or 'nothing'}")

    def _not_executed(self, step: Step, run_dir: Path) -> StageEntry:
        """Link a reused (or latest's) stage's outputs into this run; record a skipped one."""
        name = step.stage.name
        if step.action == "skip":
            self.say(f"[{name}] skipped: {step.reason}")
            return StageEntry(status="skipped", reason=step.reason, inputs=step.inputs)
        src, entry = step.source, step.source_entry
        assert src is not None and entry is not None
        for rel in [
            *entry.outputs,
            f"{runs.STAGES}/{name}.json",
            f"notebooks/{step.stage.notebook}",
        ]:
            if (src / rel).exists():
                runs.link_tree(src / rel, run_dir / rel)
        stale = step.reason.startswith("STALE")
        if stale:
            self.say(
                f"WARNING [{name}] its outputs, taken from run {entry.run}, were made with other "
                "params, code or inputs than this run's: this run mixes results of different "
                f"data or settings. Run it again (--only {name},...) to bring it up to date."
            )
        else:
            origin = "unchanged since" if step.action == "reuse" else "taken from"
            self.say(f"[{name}] reused: {origin} run {entry.run}")
        return entry.model_copy(
            update={
                "status": "stale" if stale else "reused",
                "reason": step.reason or None,
                "wall_seconds": 0.0,
                "peak_rss_mb": None,
                "key": entry.key,
            }
        )

    @contextlib.contextmanager
    def _figure_service(self, todo: list[Step]) -> Iterator[None]:
        """One figure browser for the whole run, if a stage to execute saves static figures.

        Its URL goes into the stage kernels' environment (``static_images.SERVICE_ENV``): a
        browser start per stage cost seconds of CPU each beside the running stages (on the 1M
        sample, eight starts). Without a browser the kernels say so at their first figure.
        The browser starts once a stage that draws runs and its kernel is ready (:meth:`_warm`),
        not with the run: its start beside the first stage's kernel delayed that stage.
        """
        draws = {
            s.stage.name for s in todo if figure_start_code(self.notebooks_dir / s.stage.notebook)
        }
        if not draws or static_images.browser() is None:
            yield
            return
        with static_images.Service() as service:
            self._figure_url, self._figures, self._drawing = service.url, service, draws
            try:
                yield
            finally:
                self._figure_url, self._figures, self._drawing = None, None, set()

    def _execute(
        self,
        todo: list[Step],
        steps: list[Step],
        run_dir: Path,
        manifest: Manifest,
        path: Path,
        jobs: int,
    ) -> tuple[int, str]:
        """Run the stages to execute, ``jobs`` at once, each when what it reads is ready."""
        planned = [s.stage for s in steps]
        q = _Queue(
            todo,
            stage_graph.dependencies(planned, self.params, late=False),
            late=stage_graph.late_makers(planned, self.params),
            weights=self._expected_seconds(),
        )
        failure: tuple[int, str] = (EXIT_OK, "")
        pool = cf.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="stage")
        awaited = run_dir / runs.AWAITED
        try:
            runs.write_json(q.awaited(), awaited)
            while q.pending or q.futures:
                self._start_ready(q, pool, run_dir, jobs)
                if not self._stop.is_set():
                    self._warm(q, jobs)
                finished, _ = cf.wait(q.futures, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    step = q.futures.pop(fut)
                    q.launched.pop(step.stage.name, None)
                    entry = fut.result()
                    q.ended.add(step.stage.name)
                    with self._lock:
                        manifest.stages[step.stage.name] = entry
                        runs.write_model(manifest, path)
                        # after the maker's end: a stage waiting for a late input that did not
                        # come reads "not made" only once the maker can no longer make it
                        runs.write_json(q.awaited(), awaited)
                    if entry.status == "success":
                        q.done.add(step.stage.name)
                    elif failure[0] == EXIT_OK and entry.status == "failed":
                        failure = (EXIT_STAGE_FAILED, entry.error or "failed")
                        self._stop_all()
                if self._stop.is_set():
                    for step in q.pending:
                        manifest.stages[step.stage.name] = StageEntry(
                            status="cancelled",
                            reason="not started: another stage failed",
                            key=step.key,
                            inputs=step.inputs,
                        )
                    q.pending = []
        except BaseException:
            self._stop_all()
            raise
        finally:
            pool.shutdown(wait=True)
            for kernel in q.kernels.values():
                kernel.shutdown()
            awaited.unlink(missing_ok=True)
        with self._lock:
            runs.write_model(manifest, path)
        return failure

    def _expected_seconds(self) -> dict[str, float]:
        """Each stage's wall seconds in ``latest``, the last successful run, where it ran.

        The runner starts long chains of stages first; without a last run every stage weighs 1.
        """
        latest = self.output_root / "latest"
        manifest = _read_manifest(latest.resolve() if latest.exists() else None)
        if manifest is None:
            return {}
        return {
            name: entry.wall_seconds
            for name, entry in manifest.stages.items()
            if entry.status == "success" and entry.wall_seconds
        }

    def _start_ready(
        self, q: _Queue, pool: cf.ThreadPoolExecutor, run_dir: Path, jobs: int
    ) -> None:
        """Submit the pending stages whose inputs are ready, up to ``jobs`` running.

        In :meth:`_Queue.start_order`: a stage that defers starts only when no other is ready.
        """
        for step in q.start_order():
            if self._stop.is_set() or len(q.futures) >= jobs:
                break
            if q.ready(step):
                q.pending.remove(step)
                kernel = q.kernels.pop(step.stage.name, None) or self._start_kernel(step.stage)
                q.launched[step.stage.name] = kernel
                q.started += 1
                fut = pool.submit(self._run_stage, step, run_dir, q.started, q.n, kernel)
                q.futures[fut] = step

    def _warm(self, q: _Queue, jobs: int) -> None:
        """Start kernels for the stages that will start next (ready ones first) while others run.

        Starting a kernel and importing its libraries takes seconds. The running stages'
        kernels get ready first: a kernel warming beside a stage's starting one slows both (the
        first stage's kernel was ready 3.1-3.4 s after its start beside two warming kernels
        and the figure browser, 1.3 s alone), and the starting stage is the one the run waits for.
        """
        for kernel in q.launched.values():
            kernel.ready(timeout=FIRST_READY_WAIT_SECONDS)
        if self._figures is not None and self._drawing & q.launched.keys():
            self._figures.start_browser()  # once, in the background (see _figure_service)
        running = q.running()
        soon = sorted(
            q.pending, key=lambda s: (not q.ready(s, also_done=running, late=False), q.defers(s))
        )
        for s in soon[: max(1, jobs)]:
            if s.stage.name not in q.kernels:
                q.kernels[s.stage.name] = self._start_kernel(s.stage, background=True)

    def _stop_all(self) -> None:
        """Stop every stage still running (their cells are interrupted; they end cancelled)."""
        self._stop.set()
        with self._lock:
            running = list(self._running.values())
        for kernel in running:
            with contextlib.suppress(Exception):
                kernel.interrupt()

    def _threads_file(self, stage: str) -> Path | None:
        """The file a stage's DuckDB connections read their thread count from (None: no run)."""
        return None if self._threads_dir is None else self._threads_dir / stage

    def _share_threads(self) -> None:
        """Write each running stage's share of the cores into its threads file.

        Called as a stage starts and as one ends: two stages on two cores get one engine
        thread each, a stage left alone gets every core back (its connections follow the
        file: ``warehouse.THREADS_FILE_ENV``). Two DuckDB stages with a thread per core each
        on two cores ran no faster than one after the other.
        """
        with self._lock:
            names = list(self._running)
            share = max(1, (os.cpu_count() or 1) // max(1, len(names)))
            for name in names:
                path = self._threads_file(name)
                if path is not None:
                    with runs.atomic_path(path) as tmp:  # a reader never sees half a number
                        tmp.write_text(str(share))

    def _kernel_env(self) -> dict[str, str]:
        env = {progress.MODE_ENV: "quiet" if not self.cell_progress else "lines"}
        # OpenMP threads spin while they wait: beside a warming kernel or another stage,
        # spinning made LightGBM and scikit-learn steps up to 10x slower
        env["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
        if self._figure_url is not None:
            env[static_images.SERVICE_ENV] = self._figure_url
        return env

    def _start_kernel(self, stage: Stage, *, background: bool = False) -> StageKernel:
        """A kernel for ``stage``; ``background``: its stage starts later (a lower priority)."""
        return StageKernel(
            self.notebooks_dir / stage.notebook,
            cwd=self.notebooks_dir,
            env=self._kernel_env(),
            background=background,
            temp_root=self._temp_root,
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
        self, step: Step, run_dir: Path, i: int, n: int, kernel: StageKernel
    ) -> StageEntry:
        """Execute one stage's notebook in ``kernel``; its manifest entry, whatever happens."""
        stage = step.stage
        target = run_dir / "notebooks" / stage.notebook
        target.parent.mkdir(exist_ok=True)
        cells = _Cells(stage.name, self.say, self.cell_progress)
        self.say(f"[{i}/{n}] {stage.name}: {stage.notebook} ...")
        entry = StageEntry(
            status="running",
            notebook=f"notebooks/{stage.notebook}",
            key=step.key,
            run=run_dir.name,
            inputs=step.inputs,
        )
        peak = self._watched_execution(step, run_dir, target, kernel, entry, cells)
        entry.wall_seconds = round(time.time() - cells.t0, 2)
        entry.peak_rss_mb = round(peak["peak"] / 2**20, 1)  # the kernel and its children
        entry.children_peak_rss_mb = round(peak.get("children", 0) / 2**20, 1)
        if entry.status == "success":
            _record_outputs(entry, run_dir, stage.name, target)
        self._say_outcome(entry, stage.name, i, n)
        return entry

    def _watched_execution(
        self,
        step: Step,
        run_dir: Path,
        target: Path,
        kernel: StageKernel,
        entry: StageEntry,
        cells: _Cells,
    ) -> dict[str, int]:
        """Execute the notebook while threads watch the kernel's memory and print heartbeats.

        Sets the entry's status (success, cancelled, failed with the error) and startup time;
        returns the peak resident memory (bytes) of the kernel with its children (``peak``)
        and of its children alone (``children``: a local Spark JVM; the run's figure browser is
        the runner's child, not a stage's).
        """
        stage = step.stage
        parameters = stage_parameters(self.params, stage.section, run_dir=run_dir)
        stop, peak, oom_before = threading.Event(), {"peak": 0, "children": 0}, oom_kills()
        watcher = threading.Thread(target=watch_peak, args=(kernel, stop, peak), daemon=True)
        heartbeat = threading.Thread(target=self._heartbeat, args=(cells, stop), daemon=True)
        watcher.start()
        heartbeat.start()
        stream = _Prefixed(self.say, f"  [{stage.name}] ")
        with self._lock:
            self._running[stage.name] = kernel
            self._share_threads()
        try:
            kernel.foreground()  # before the wait: what is left of its warm-up is the stage's
            kernel.ready()
            if self._stop.is_set():
                raise _Cancelled
            kernel.begin(threads_file=self._threads_file(stage.name))
            entry.startup_seconds = round(time.time() - cells.t0, 2)
            papermill.execute_notebook(
                str(self.notebooks_dir / stage.notebook),
                str(target),
                parameters=parameters,
                engine_name="customer_intel",
                kernel_name="python3",
                km=kernel.km,
                progress_bar=False,
                stdout_file=stream,
                stderr_file=stream,
                on_cell=cells.on_cell,
            )
            entry.status = "success"
        except _Cancelled:
            entry.status, entry.reason = "cancelled", "not started: another stage failed"
        except PapermillExecutionError as e:
            if self._stop.is_set() and e.ename == "KeyboardInterrupt":
                entry.status, entry.reason = "cancelled", "stopped: another stage failed"
            else:
                entry.status, entry.error = "failed", _cell_error(stage.name, target, e)
        except Exception as e:  # kernel died, notebook missing, ...
            entry.status = "failed"
            if not kernel.alive():
                time.sleep(0.3)  # let the process be reaped so its exit signal is known
                reason = death_reason(kernel, peak["peak"], oom_before)
                entry.error = (
                    f"stage {stage.name!r} died at {cells.describe()} after "
                    f"{time.time() - cells.t0:.0f}s: {reason}; see {target}"
                )
            else:
                entry.error = (
                    f"stage {stage.name!r} failed ({target}): {type(e).__name__}: "
                    f"{_clip(str(e), 2000)}"
                )
        finally:
            stream.flush()
            with self._lock:
                self._running.pop(stage.name, None)
                self._share_threads()
            stop.set()
            watcher.join()
            heartbeat.join()
            kernel.shutdown()
        return peak

    def _say_outcome(self, entry: StageEntry, name: str, i: int, n: int) -> None:
        """The stage's closing line (and its error)."""
        if entry.status == "success":
            self.say(
                f"[{i}/{n}] {name}: ok in {entry.wall_seconds:.1f}s, "
                f"peak {entry.peak_rss_mb:.0f} MiB, rows in {entry.rows_in}, "
                f"rows out {entry.rows_out}"
            )
        elif entry.status == "cancelled":
            self.say(f"[{i}/{n}] {name}: cancelled ({entry.reason})")
        else:
            self.say(f"[{i}/{n}] {name}: FAILED after {entry.wall_seconds:.1f}s")
            self.say("    " + (entry.error or ""))

    def _heartbeat(self, cells: _Cells, stop: threading.Event) -> None:
        """Every ``HEARTBEAT_SECONDS`` a cell runs, one line: which cell, for how long."""
        while not stop.wait(HEARTBEAT_SECONDS):
            if cells.index is None or not self.cell_progress:
                continue
            running = time.time() - cells.started
            if running >= HEARTBEAT_SECONDS:
                stage_time = progress.duration(time.time() - cells.t0)
                self.say(
                    f"    {cells.stage} cell {cells.index + 1}/{cells.total} running "
                    f"for {progress.duration(running)} (stage {stage_time})"
                )


class _Cells:
    """Which code cell of a stage runs: for progress lines, heartbeats and a death message."""

    def __init__(self, stage: str, say: Callable[[str], None], cell_progress: bool) -> None:
        self.stage, self.say, self.cell_progress = stage, say, cell_progress
        self.t0 = time.time()  # the stage's start
        self.index: int | None = None
        self.source = ""
        self.started = self.t0  # the running cell's start
        self.total = 0

    def on_cell(self, event: str, index: int, total: int, cell: Any) -> None:
        """The papermill engine's callback: a cell starts or ends."""
        if cell.get("cell_type") != "code":
            return
        if event == "start":
            self.index, self.total, self.source = index, total, cell.source
            self.started = time.time()
        elif self.cell_progress:
            took = cell.metadata.get("papermill", {}).get("duration") or 0.0
            self.say(
                f"    {self.stage} cell {index + 1}/{total} done in {took:.1f}s "
                f"(stage {time.time() - self.t0:.1f}s)"
            )

    def describe(self) -> str:
        """``cell i/N (its first line)``, or ``kernel start`` before the first cell."""
        if self.index is None:
            return "kernel start"
        first = (self.source or "").strip().splitlines()
        return f"cell {self.index + 1}/{self.total} ({_clip(first[0]) if first else ''})"


def _cell_error(stage: str, target: Path, e: PapermillExecutionError) -> str:
    """A failed cell's error: stage, notebook, cell, its first line, the exception."""
    first = (e.source or "").strip().splitlines()
    return (
        f"stage {stage!r} failed in {target} at cell {e.cell_index + 1} "
        f"(In [{e.exec_count}]: {_clip(first[0]) if first else ''}): {e.ename}: "
        f"{_clip(str(e.evalue), 2000)}"
    )


def _record_outputs(entry: StageEntry, run_dir: Path, stage: str, target: Path) -> None:
    """Copy what the stage recorded (rows, outputs, metrics) into its entry; fail it if none."""
    try:
        record = runs.read_stage_record(run_dir, stage)
    except (OSError, ValueError):
        entry.status = "failed"
        entry.error = (
            f"stage {stage!r} finished without recording its outputs "
            f"(its last cell must call run.finish(...)); see {target}"
        )
    else:
        entry.rows_in, entry.rows_out = record.rows_in, record.rows_out
        entry.outputs, entry.metrics = record.outputs, record.metrics
        entry.kernel_peak_rss_mb = record.kernel_peak_rss_mb


class _Cancelled(Exception):
    """A stage was stopped before it started (another stage failed)."""


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
        description="Run the customer_intel stage notebooks as a graph, each run in its own "
        "folder: stages whose inputs, params and code are unchanged are reused, independent "
        "stages run side by side.",
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
    g.add_argument(
        "--only", help="run only these stages (comma-separated); the others come from latest"
    )
    g.add_argument("--from", dest="from_stage", help="run this stage and the ones after it")
    p.add_argument(
        "--force",
        nargs="*",
        metavar="STAGE",
        help="execute these stages (all, without a name) even when an earlier run has them",
    )
    p.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="stages side by side (default: the cores, bounded by memory at 6 GB a stage)",
    )
    p.add_argument("--list", action="store_true", help="list the stages and exit")
    p.add_argument("--graph", action="store_true", help="print the stage graph (Mermaid) and exit")
    p.add_argument(
        "--dry-run", action="store_true", help="validate params and inputs, print the plan"
    )
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
    if args.jobs is not None and args.jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        params, origin = load_params_with_origin(args.params, args.overrides)
        preflight.check(params, origin, source=str(Path(args.params).resolve()))
        names = {s.name for s in stages}
        force = None if args.force is None else set(args.force or names)
        unknown = sorted((force or set()) - names)
        if unknown:
            raise PlanError(f"--force: unknown stage(s) {unknown}; stages are {sorted(names)}")
        runner = Runner(
            params,
            Path(args.params),
            tuple(args.overrides),
            stages=stages,
            cell_progress=not args.quiet_cells,
            jobs=args.jobs,
            force=force,
        )
        if args.graph:
            print(stage_graph.mermaid(stages, params), end="")
            return EXIT_OK
        if args.prepare_only:
            chosen = select(
                stage_graph.order(stages, params), only=only, from_stage=args.from_stage
            )
            todo = [s for s in stage_graph.order(stages, params) if s.name in chosen]
            for path in prepare_notebooks(params, todo, args.prepare_only):
                print(path)
            return EXIT_OK
        steps = runner.plan(only=only, from_stage=args.from_stage)
    except (ParamsError, PlanError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        _print_plan(args.params, params, steps)
        return EXIT_OK
    try:
        with _interrupt_on_sigterm():
            result = runner.run(only=only, from_stage=args.from_stage)
    except PlanError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if result.exit_code == EXIT_OK:
        _print_run_folder(result.run_dir)
    else:
        print(f"error: {result.message}", file=sys.stderr)
    return result.exit_code


def _print_plan(params_file: str, params: Params, steps: list[Step]) -> None:
    """``--dry-run``: the params are valid, the inputs, and what each stage would do."""
    print(f"params {params_file}: valid (hash {params_hash(params)})")
    for f in input_fingerprints(params):
        print(f"input {f['key']}: {f['path']} ({f['bytes']:,} bytes)")
    for step in steps:
        print("  " + step.describe())
    print(
        "would run: "
        + (", ".join(s.stage.name for s in steps if s.action == "execute") or "nothing")
    )


def _print_run_folder(run_dir: Path) -> None:
    """Where a successful run's folder, notebooks and manifest are."""
    rel = os.path.relpath(run_dir, Path.cwd())
    rel = str(run_dir) if rel.startswith("..") else rel
    print(f"\nRun folder: {rel}")
    print(f"Open its notebooks: .venv/bin/jupyter lab {rel}/notebooks")
    print(f"Manifest: {rel}/manifest.json   (outputs/latest now points here)")
