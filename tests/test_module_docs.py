"""Every library module says what it is for, and docs/ARCHITECTURE.md names every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from customer_intel.paths import PROJECT_ROOT

LIB = PROJECT_ROOT / "lib" / "customer_intel"
MODULES = sorted(LIB.rglob("*.py"))
ARCHITECTURE = PROJECT_ROOT / "docs" / "ARCHITECTURE.md"


def first_docstring_line(path: Path) -> str:
    """The first line of a module's docstring ("" when it has none)."""
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
    return doc.split("\n", 1)[0].strip()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(LIB)))
def test_module_docstring_first_line_says_what_it_is_for(path):
    line = first_docstring_line(path)
    assert line, f"{path.relative_to(PROJECT_ROOT)} has no docstring, or its first line is empty"
    assert len(line.split()) >= 3, f"{path.relative_to(PROJECT_ROOT)}: first line {line!r}"


def test_first_docstring_line_check_can_fail(tmp_path):
    (tmp_path / "none.py").write_text("x = 1\n")
    (tmp_path / "blank.py").write_text('"""\n\nSecond line."""\n')
    assert first_docstring_line(tmp_path / "none.py") == ""
    assert first_docstring_line(tmp_path / "blank.py") == ""


def test_architecture_names_every_module():
    text = ARCHITECTURE.read_text()
    missing = []
    for path in MODULES:
        rel = path.relative_to(LIB)
        if rel.parts[0] == "__init__.py":
            continue
        if len(rel.parts) > 1:  # a package: named as `pkg/`
            name = f"`{rel.parts[0]}/"
        else:
            name = f"`{path.stem}`"
        if name not in text:
            missing.append(str(rel))
    assert not missing, f"docs/ARCHITECTURE.md does not name {missing}"
