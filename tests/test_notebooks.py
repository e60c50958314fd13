"""Notebook conventions: parameters cell == params section, no def/class, no committed outputs."""

from __future__ import annotations

import ast
import json

import papermill
import pytest

from customer_intel import pipeline
from customer_intel.params import RUNTIME_KEYS, load_params
from customer_intel.paths import NOTEBOOKS_DIR, PARAMS_DIR, PROJECT_ROOT

STAGES = [pytest.param(s, id=s.name) for s in pipeline.STAGES]
ALL_NOTEBOOKS = sorted(
    p for p in NOTEBOOKS_DIR.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
)


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _source(cell) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


@pytest.mark.parametrize("stage", STAGES)
def test_parameters_cell_declares_exactly_the_stage_section_and_its_common_keys(stage):
    path = NOTEBOOKS_DIR / stage.notebook
    assert path.exists(), f"stage {stage.name} has no notebook {path}"
    declared = papermill.inspect_notebook(str(path))
    params = load_params(PARAMS_DIR / "default.yaml")
    section = getattr(params, stage.section)
    expected = set(type(section).model_fields) | set(type(section).COMMON_KEYS) | set(RUNTIME_KEYS)
    assert sorted(set(declared) - expected) == [], "declared in the notebook but not in params"
    assert sorted(expected - set(declared)) == [], "in params but not declared in the notebook"


@pytest.mark.parametrize("stage", STAGES)
def test_parameters_are_typed_commented_literals_equal_to_default_yaml(stage):
    path = NOTEBOOKS_DIR / stage.notebook
    declared = papermill.inspect_notebook(str(path))
    params = load_params(PARAMS_DIR / "default.yaml")
    flat = pipeline.stage_parameters(params, stage.section, run_dir="")
    for name, info in declared.items():
        assert info["inferred_type_name"] != "None", f"{stage.notebook}: {name} has no type"
        assert info["help"], f"{stage.notebook}: {name} has no comment"
        value = ast.literal_eval(info["default"])  # literals only
        assert value == flat[name], (
            f"{stage.notebook}: {name} = {value!r}, default.yaml says {flat[name]!r}"
        )


@pytest.mark.parametrize("stage", STAGES)
def test_stage_notebook_structure(stage):
    cells = _cells(NOTEBOOKS_DIR / stage.notebook)
    assert cells[0]["cell_type"] == "markdown", "the first cell states purpose, inputs, outputs"
    intro = _source(cells[0]).lower()
    assert "input" in intro and "output" in intro, "the first cell names the inputs and outputs"
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell is tagged 'parameters'"
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse(_source(cell))
        defs = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef | ast.Lambda)
        ]
        assert not defs, f"{stage.notebook} defines {type(defs[0]).__name__}: logic belongs in lib/"
        calls = {
            n.func.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        assert not calls & {"eval", "exec"}, f"{stage.notebook} calls eval/exec"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_have_no_outputs_and_a_python3_kernel(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} has committed outputs"
            assert cell.get("execution_count") is None, f"{path.name} has execution counts"


def test_committed_notebooks_are_already_in_nbstripouts_normal_form(tmp_path):
    """`make setup` installs nbstripout as git's clean filter: a notebook not in its normal form
    shows as modified on a fresh clone, and git status runs the filter on it every time (56-83 s
    before each run's first stage, and every manifest said dirty)."""
    import subprocess
    import sys

    committed = {}
    for i, path in enumerate(ALL_NOTEBOOKS):
        shown = subprocess.run(
            ["git", "show", f"HEAD:{path.relative_to(PROJECT_ROOT)}"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
        )
        if shown.returncode == 0:
            copy = tmp_path / f"{i}_{path.name}"
            copy.write_text(shown.stdout)
            committed[copy] = shown.stdout
    if not committed:
        pytest.skip("no committed notebooks (not a git checkout)")
    subprocess.run([sys.executable, "-m", "nbstripout", *map(str, committed)], check=True)
    changed = [p.name for p, text in committed.items() if p.read_text() != text]
    assert not changed, f"not in normal form (git add --renormalize notebooks): {changed}"


#: Most lines a stage notebook's code cell may have (the parameters cell aside): a cell is a
#: library call, a table or a figure; a longer one is a computation that belongs in lib/.
MAX_CELL_LINES = 20


@pytest.mark.parametrize("stage", STAGES)
def test_stage_code_cells_are_short(stage):
    long = [
        (i, len(_source(c).splitlines()))
        for i, c in enumerate(_cells(NOTEBOOKS_DIR / stage.notebook))
        if c["cell_type"] == "code"
        and "parameters" not in c.get("metadata", {}).get("tags", [])
        and len(_source(c).splitlines()) > MAX_CELL_LINES
    ]
    assert not long, f"{stage.notebook}: (cell, lines) over {MAX_CELL_LINES} lines: {long}"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_markdown_has_no_literal_backslash_n(path):
    bad = [
        i
        for i, c in enumerate(_cells(path))
        if c["cell_type"] == "markdown" and "\\n" in _source(c)
    ]
    assert not bad, f"{path.name}: markdown cells {bad} show a literal \\n (a real line break?)"
