"""Run folders: the one place where stages read and write tables, figures and models.

A run folder ``outputs/runs/<run_id>/`` holds::

    notebooks/   executed stage notebooks            (written by the pipeline)
    params/      each stage's resolved parameters    (written by the pipeline)
    tables/      <name>.parquet, one per named table (written by the stages)
    figures/     <name>.json, plotly figures (and <name>.png, a static copy, where asked)
    models/      fitted models and their JSON cards
    warehouse/   the DuckDB warehouse file and the optimized event Parquet
    stages/      <stage>.json: what each stage recorded (rows in/out, outputs, metrics)
    manifest.json, run.log

Every write goes to a temporary name in the same folder and is renamed into place, so a reader
never sees a half-written file. Inside a pipeline run a stage reads and writes its own run
folder. Run interactively (``run_dir = ""``), a notebook writes into ``outputs/scratch/`` and
reads what it has not written itself from ``outputs/latest``, so exploring never touches the
last good run.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
from pydantic import BaseModel

from customer_intel import static_images
from customer_intel.contracts import Manifest, StageRecord
from customer_intel.paths import OUTPUTS_DIR

TABLES = "tables"
FIGURES = "figures"
MODELS = "models"
WAREHOUSE = "warehouse"
STAGES = "stages"
#: {late input: the stage making it}: what stages running now will still write (the runner's)
AWAITED = "awaited.json"


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    Works for files and folders (a folder target replaces the old folder). On error the
    temporary is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp_target = tmp / target.name
    try:
        yield tmp_target
        if not tmp_target.exists():
            raise FileNotFoundError(f"nothing was written to {tmp_target} for {target}")
        if tmp_target.is_dir() and target.exists():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp_target, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_target, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link a file or a folder tree at ``dst`` (copying where a link is impossible).

    The one hard-link-or-copy helper: the runner links reused outputs with it, the warehouse
    the event files ingestion wrote. Outputs are never modified in place (every write replaces
    its file), so a run folder can share files with the run it reuses them from.
    """

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:  # another file system
            shutil.copy2(a, b)

    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=link_or_copy, dirs_exist_ok=True)
    else:
        link_or_copy(str(src), str(dst))


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Read from ``VmHWM`` in ``/proc/self/status`` where there is one: Linux carries
    ``ru_maxrss`` over ``exec``, so a child started by a big parent (pytest, a benchmark that
    has just generated its data) would report the parent's peak as its own.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class StageRun:
    """Where one stage reads its inputs and writes its outputs.

    Parameters
    ----------
    run_dir
        The run folder to write into.
    stage
        The stage's name (``ingest``, ``segmentation``, ...).
    read_fallbacks
        Folders searched, in order, for inputs not found in ``run_dir``.
    """

    def __init__(
        self, run_dir: str | Path, stage: str, read_fallbacks: tuple[Path, ...] = ()
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.stage = stage
        self.read_fallbacks = tuple(Path(p) for p in read_fallbacks)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        self._outputs: list[str] = []

    # -- locating -------------------------------------------------------------------------
    def find(self, relative: str | Path) -> Path:
        """Path of an input: in the run folder, else the first fallback that has it."""
        for base in (self.run_dir, *self.read_fallbacks):
            candidate = base / relative
            if candidate.exists():
                return candidate
        searched = ", ".join(str(b) for b in (self.run_dir, *self.read_fallbacks))
        raise FileNotFoundError(
            f"stage {self.stage!r} needs {relative}, which no earlier stage wrote "
            f"(looked in: {searched}); run the earlier stages first"
        )

    def path(self, *parts: str) -> Path:
        """A path inside the run folder to write to (its parent is created)."""
        p = self.run_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def warehouse_dir(self) -> Path:
        """Folder of the warehouse to read (this run's, or a fallback's)."""
        return self.find(WAREHOUSE)

    # -- tables ---------------------------------------------------------------------------
    def table_path(self, name: str) -> Path:
        """Path of a named input table."""
        return self.find(f"{TABLES}/{name}.parquet")

    def has_table(self, name: str) -> bool:
        """Whether this or an earlier stage wrote the named table."""
        return any(
            (base / TABLES / f"{name}.parquet").exists()
            for base in (self.run_dir, *self.read_fallbacks)
        )

    def await_table(self, name: str, *, poll_seconds: float = 0.5) -> pl.LazyFrame | None:
        """A table that a stage running beside this one may still write (a late input), lazily.

        Waits while the run's ``awaited.json`` (kept by the runner) names the table's maker as
        still running; then the table if it was written (here or in a fallback), else None.
        Without that file (interactive, or nothing left to wait for) it does not wait.
        """
        item, announced = f"{TABLES}/{name}", False
        while True:
            awaited = self.run_dir / AWAITED
            maker = json.loads(awaited.read_text()).get(item) if awaited.exists() else None
            if self.has_table(name):  # after reading the file: a maker ends after its writes
                return self.scan_table(name)
            if maker is None:
                return None
            if not announced:
                print(f"waiting for table {name!r} from stage {maker!r}, running beside this one")
                announced = True
            time.sleep(poll_seconds)

    def read_table(self, name: str) -> pl.DataFrame:
        """Read a named table that this or an earlier stage wrote."""
        return pl.read_parquet(self.table_path(name))

    def scan_table(self, name: str) -> pl.LazyFrame:
        """Lazily scan a named table that this or an earlier stage wrote."""
        return pl.scan_parquet(self.table_path(name))

    def write_table(self, df: pl.DataFrame | pl.LazyFrame, name: str) -> Path:
        """Write a named table as zstd Parquet, atomically; a LazyFrame is streamed."""
        target = self.path(TABLES, f"{name}.parquet")
        with atomic_path(target) as tmp:
            if isinstance(df, pl.LazyFrame):
                df.sink_parquet(tmp, compression="zstd")
            else:
                df.write_parquet(tmp, compression="zstd")
        self._record(target)
        return target

    def write_table_parts(
        self, parts: Iterable[pl.DataFrame], name: str, *, schema: pl.Schema | None = None
    ) -> int:
        """Write a named table from frames arriving one after another; returns its row count.

        Each part is appended to one zstd Parquet file (level 3, as Polars writes) as its own
        row group(s), so memory holds a single part, never the table; the file appears under
        its name only when every part is written (atomically, as :meth:`write_table`). Parts
        must have the same columns and types as the first; rows keep the order of the parts.
        With no part at all, an empty table of ``schema`` is written (a ValueError names the
        table when there is none).
        """
        import pyarrow.parquet as pq  # here: a dashboard kernel reads runs, never writes parts

        target = self.path(TABLES, f"{name}.parquet")
        rows = 0
        with atomic_path(target) as tmp:
            writer: pq.ParquetWriter | None = None
            try:
                for part in parts:
                    table = part.to_arrow()
                    if writer is None:
                        writer = pq.ParquetWriter(
                            tmp, table.schema, compression="zstd", compression_level=3
                        )
                        first = table.schema
                    elif not table.schema.equals(first):
                        raise ValueError(
                            f"table {name!r}: a part has columns {table.schema} but the first "
                            f"had {first}"
                        )
                    writer.write_table(table)
                    rows += table.num_rows
                if writer is None:
                    if schema is None:
                        raise ValueError(f"table {name!r}: no part to write and no schema given")
                    pl.DataFrame(schema=schema).write_parquet(tmp, compression="zstd")
            finally:
                if writer is not None:
                    writer.close()
        self._record(target)
        return rows

    # -- figures, models, documents ---------------------------------------------------------
    def write_figure(self, fig: Any, name: str, *, static: bool = False) -> Path:
        """Save a plotly figure as JSON (``plotly.io.read_json`` reads it back).

        With ``static`` also as ``<name>.png`` (:func:`customer_intel.static_images.png`), so
        the figure reads in a viewer that runs no JavaScript; where no browser can draw it the
        PNG is skipped with a printed reason, never failing the stage.
        """
        target = self.path(FIGURES, f"{name}.json")
        text = fig.to_json()
        with atomic_path(target) as tmp:
            tmp.write_text(text)
        self._record(target)
        if static:
            png = self.path(FIGURES, f"{name}.png")
            try:
                data = static_images.png(text)
            except Exception as e:  # noqa: BLE001 (any browser failure: keep the JSON, say why)
                print(f"static image of {name} skipped: {type(e).__name__}: {e}")
            else:
                with atomic_path(png) as tmp:
                    tmp.write_bytes(data)
                self._record(png)
        return target

    def show_figure(self, fig: Any, name: str, *, static: bool = True) -> None:
        """Save a figure (:meth:`write_figure`) and display it, then its PNG beside it.

        The interactive figure needs JavaScript; the PNG after it is the static fallback an
        executed notebook shows on any viewer (GitHub, nbviewer, a PDF export).
        """
        from IPython.display import Image, display

        self.write_figure(fig, name, static=static)
        png = self.path(FIGURES, f"{name}.png")
        display(fig)
        if static and png.exists():
            display(Image(data=png.read_bytes(), format="png"))

    def write_json(self, obj: Any, *parts: str) -> Path:
        """Write a JSON document at ``parts`` inside the run folder, atomically."""
        target = write_json(obj, self.path(*parts))
        self._record(target)
        return target

    def write_model(self, model: BaseModel, *parts: str) -> Path:
        """Write a typed document (:mod:`customer_intel.contracts`) inside the run folder."""
        target = write_model(model, self.path(*parts))
        self._record(target)
        return target

    @contextlib.contextmanager
    def output(self, *parts: str) -> Iterator[Path]:
        """Write any other output (a model file, a folder) atomically: yields a temp path."""
        target = self.path(*parts)
        with atomic_path(target) as tmp:
            yield tmp
        self._record(target)

    def _record(self, target: Path) -> None:
        rel = str(target.relative_to(self.run_dir))
        if rel not in self._outputs:
            self._outputs.append(rel)

    # -- the stage's own record -------------------------------------------------------------
    def finish(
        self,
        *,
        rows_in: int | dict[str, int] | None = None,
        rows_out: int | dict[str, int] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record what the stage did: rows in and out, its outputs, metrics and peak memory.

        The pipeline merges this record into the run's ``manifest.json``.
        """
        record = StageRecord(
            stage=self.stage,
            rows_in=rows_in,
            rows_out=rows_out,
            outputs=sorted(self._outputs),
            metrics=metrics or {},
            kernel_peak_rss_mb=round(peak_rss_mb(), 1),
            kernel_seconds=round(time.time() - self.started, 2),
        )
        write_model(record, self.path(STAGES, f"{self.stage}.json"))
        return record.model_dump(mode="json")


# -- typed documents ----------------------------------------------------------------------------
M = TypeVar("M", bound=BaseModel)


def write_model(model: BaseModel, path: str | Path) -> Path:
    """Write a typed document (:mod:`customer_intel.contracts`) as JSON, atomically."""
    return write_json(model.model_dump(mode="json"), path)


def read_model(kind: type[M], path: str | Path) -> M:
    """Read a typed document; a document that does not fit its model raises ``ValueError``."""
    return kind.model_validate_json(Path(path).read_text())


def read_manifest(run_dir: str | Path) -> Manifest:
    """The manifest of a run folder."""
    return read_model(Manifest, Path(run_dir) / "manifest.json")


def read_stage_record(run_dir: str | Path, stage: str) -> StageRecord:
    """What a stage recorded in a run folder (``stages/<stage>.json``)."""
    return read_model(StageRecord, Path(run_dir) / STAGES / f"{stage}.json")


def open_stage(run_dir: str | Path, stage: str, output_root: str | Path | None = None) -> StageRun:
    """Open a stage's run folder; ``run_dir=""`` means interactive scratch mode.

    In scratch mode outputs go to ``<output_root>/scratch`` and inputs not written there are
    read from ``<output_root>/latest`` (the last successful run).
    """
    root = Path(output_root) if output_root else OUTPUTS_DIR
    if str(run_dir):
        return StageRun(run_dir, stage)
    latest = root / "latest"
    fallbacks = (latest.resolve(),) if latest.exists() else ()
    return StageRun(root / "scratch", stage, read_fallbacks=fallbacks)
