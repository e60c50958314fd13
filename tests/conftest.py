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


@pytest.fixture
def rees46_head() -> Path:
    """The public REES46 extract in ../shared/data (skips when this clone has no shared/)."""
    path = SHARED_DATA / "rees46_head" / "2019-Oct-head.csv"
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (clone without ../shared)")
    return path
