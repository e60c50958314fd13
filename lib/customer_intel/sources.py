"""Where input rows come from: files and globs, ZIP archives, external tables, the sample.

- :func:`expand_inputs` turns ``ingest.input_path`` (a path or a glob) into the files to read
  and their format, extracting ZIP archives: every member keeps its path inside its archive
  (two members named ``events.csv`` in different folders, or two archives with the same name,
  never overwrite each other), each file has a name a user recognises
  (``exports/2019.zip!oct/events.csv``), and only real metadata entries (``__MACOSX/``,
  ``.DS_Store``, ``._*`` resource forks, ``Thumbs.db``, ``desktop.ini``) are skipped -- each
  listed with its reason. Unsafe member paths (absolute, or leaving the archive with ``..``)
  are refused.
- :func:`read_table_file` reads an external table named in params (customer attributes, an
  A/B unit table).
- :func:`resolve_source` and :func:`sample_side_tables`: the built-in generated sample when no
  input path is given.
"""

from __future__ import annotations

import glob
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from customer_intel.params.ingest import IngestParams

FORMATS = {
    ".csv": "csv",
    ".gz": "csv.gz",
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".zip": "zip",
}
#: ZIP entries that are metadata written by an operating system, never data.
_METADATA_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


class InputError(ValueError):
    """An input cannot be read as configured (missing file or column, bad format or archive)."""


@dataclass
class Inputs:
    """The files to read, their format, how to name them, and what was skipped and why."""

    files: list[Path]
    kind: str
    names: dict[Path, str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)

    def name(self, path: Path) -> str:
        """How a user knows this file: its path, or ``archive!member`` for an extracted one."""
        return self.names.get(path, str(path))


def detect_format(path: str | Path, fmt: str = "auto") -> str:
    """The input format from params, or from the file extension when ``auto``."""
    if fmt != "auto":
        return fmt
    suffix = Path(str(path)).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"cannot tell the format of {path} from its extension; set ingest.format "
            f"(one of {sorted(set(FORMATS.values()))})"
        )
    return FORMATS[suffix]


def metadata_reason(member: str) -> str | None:
    """Why a ZIP entry is operating-system metadata rather than data (None: it is data)."""
    parts = PurePosixPath(member).parts
    if parts and parts[0] == "__MACOSX":
        return "macOS resource folder (__MACOSX)"
    base = parts[-1] if parts else member
    if base in _METADATA_NAMES:
        return f"operating-system metadata file ({base})"
    if base.startswith("._"):
        return "macOS resource fork (._ file)"
    return None


def _safe_member_path(archive: Path, member: str) -> PurePosixPath:
    """The member's path inside the archive, normalised (``./a.csv`` -> ``a.csv``).

    Absolute paths and paths that climb out with ``..`` (zip slip) are refused.
    """
    path = PurePosixPath(member.replace("\\", "/"))
    parts = [p for p in path.parts if p not in (".", "")]
    if path.is_absolute() or ".." in parts or not parts:
        raise InputError(
            f"{archive}: member {member!r} has an unsafe path (absolute or with '..'); "
            "refusing to extract it"
        )
    return PurePosixPath(*parts)


def matching_files(path_or_glob: str | Path) -> list[Path]:
    """The files (not folders) a path or a glob names, sorted; ``**`` matches any depth.

    The one place a path or glob from params is expanded: ingestion, preflight checks and the
    inputs' fingerprints (:mod:`customer_intel.reuse`) all list files with it.
    """
    text = str(path_or_glob)
    if glob.has_magic(text):
        return sorted(Path(f) for f in glob.glob(text, recursive=True) if Path(f).is_file())
    return [Path(text)] if Path(text).is_file() else []


@contextmanager
def expand_inputs(path_or_glob: str, fmt: str = "auto") -> Iterator[Inputs]:
    """Yield the input files of a path or glob; ZIP archives are extracted to a temp folder.

    Raises
    ------
    InputError
        No file matches; the files have several formats; an archive is not a ZIP, holds
        files of several formats, nested archives or unsafe member paths.
    """
    files = matching_files(path_or_glob)
    if not files:
        raise InputError(f"ingest.input_path: no file matches {path_or_glob!r}")
    formats = {detect_format(f, fmt) for f in files}
    if len(formats) > 1:
        raise InputError(f"ingest.input_path matches files of several formats {sorted(formats)}")
    (kind,) = formats
    if kind != "zip":
        yield Inputs(files, kind)
        return
    tmp = Path(tempfile.mkdtemp(prefix="ingest_zip_"))
    try:
        inputs = Inputs([], "")
        for i, z in enumerate(files):
            try:
                archive = zipfile.ZipFile(z)
            except zipfile.BadZipFile as e:
                raise InputError(f"{z}: not a readable ZIP archive ({e})") from None
            with archive:
                for member in archive.infolist():
                    if member.is_dir():
                        continue
                    reason = metadata_reason(member.filename)
                    if reason:
                        inputs.skipped.append((f"{z}!{member.filename}", reason))
                        continue
                    rel = _safe_member_path(z, member.filename)
                    # one folder per archive: two archives, or two members, never collide
                    target = tmp / str(i) / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as src, target.open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    inputs.files.append(target)
                    inputs.names[target] = f"{z}!{rel}"
        if not inputs.files:
            raise InputError(f"the ZIP archive(s) {[str(f) for f in files]} hold no data files")
        kinds = {detect_format(p) for p in inputs.files}
        if len(kinds) != 1 or "zip" in kinds:
            raise InputError(
                f"the ZIP archive(s) {[str(f) for f in files]} hold files of formats "
                f"{sorted(kinds)}; expected one format (and no nested archives)"
            )
        inputs.kind = kinds.pop()
        inputs.files.sort(key=inputs.name)
        yield inputs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_table_file(path: str | Path, *, separator: str = ",") -> pl.DataFrame:
    """Read an external table (CSV, TSV, Parquet) named in params, e.g. customer attributes."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.suffix.lower() == ".parquet":
        return pl.read_parquet(path)
    sep = "\t" if path.suffix.lower() == ".tsv" and separator == "," else separator
    try:
        return pl.read_csv(path, separator=sep, try_parse_dates=True, infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise InputError(f"cannot read {path} as a table (separator {sep!r}): {e}") from None


def resolve_source(p: IngestParams, *, data_dir: str, seed: int) -> tuple[str, Path | None]:
    """The input path or glob to ingest, and the generated sample's folder when there is one.

    With no ``input_path`` the built-in sample (``sample_events`` events, ``seed``) is generated
    once and cached under ``<data_dir>/raw/``.
    """
    from customer_intel import synth  # the generator is only needed without an input path
    from customer_intel.paths import resolve

    if p.input_path:
        return p.input_path, None
    folder = synth.ensure_sample(resolve(data_dir), p.sample_events, seed)
    return str(folder / "events.csv"), folder


def sample_side_tables(sample_folder: Path | None) -> dict[str, pl.DataFrame]:
    """The generated sample's assignments and customers tables (copied into the run).

    Later stages read them from the run folder, never from ``data/`` (and never ``truth/``).
    """
    if sample_folder is None:
        return {}
    return {
        "sample_assignments": pl.read_parquet(sample_folder / "assignments.parquet"),
        "sample_customers": pl.read_csv(sample_folder / "customers.csv", try_parse_dates=True),
    }
