"""Filesystem locations, anchored on the package (never on the current directory).

Also the temporary folders of our processes: each names its owner, so that a later process
removes it when the owner was killed before it could.
"""

import shutil
import tempfile
from pathlib import Path

import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
DASHBOARDS_DIR = NOTEBOOKS_DIR / "dashboards"
PARAMS_DIR = PROJECT_ROOT / "params"
DATA_DIR = PROJECT_ROOT / "data"
OUTPUTS_DIR = PROJECT_ROOT / "outputs"


def resolve(path: str | Path, base: Path = PROJECT_ROOT) -> Path:
    """Resolve a path from a params file: absolute paths stay, relative ones hang off `base`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


#: the file in one of our temporary folders that holds the id of the process it belongs to
OWNER_FILE = "owner.pid"


def claim_temp_dir(folder: Path | str, pid: int) -> None:
    """Name process ``pid`` the owner of ``folder`` (see :func:`remove_abandoned_temp_dirs`)."""
    Path(folder, OWNER_FILE).write_text(str(pid))


def remove_abandoned_temp_dirs(prefix: str, root: Path | None = None) -> list[Path]:
    """Remove the temporary folders named ``prefix*`` whose owning process has ended.

    A process killed with SIGKILL (a stage kernel at shutdown, a runner, one the out-of-memory
    killer ended) runs no exit handler: its folders stay, with whatever DuckDB had spilled
    into them. The owner is the process id in the folder's :data:`OWNER_FILE`; a folder
    without one (being set up, or not ours) stays, as does one whose process still runs.
    """
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            pid = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not psutil.pid_exists(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
