"""Filesystem locations, anchored on the package (never on the current directory)."""

from pathlib import Path

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
