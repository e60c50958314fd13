"""Content keys of stages, and finding an earlier run that already computed one.

A stage's key is a hash of everything its outputs depend on:

- the notebook's text;
- its resolved parameters (the stage's params section and common keys; not ``run_dir``);
- the library code it imports: every ``customer_intel`` module reachable from the notebook's
  imports, found by reading ``import`` statements (:func:`library_closure`), hashed by content;
- its inputs: for each run-folder item it reads, the key of the stage that made it (so a
  change upstream changes every key downstream), and the fingerprint of each file named in
  params (size, modification time and the SHA-256 of its first and last MiB);
- the versions of the packages that shape results.

A previous run holding a stage entry with the same key, whose outputs are still on disk, is
reused: the runner links those outputs instead of executing the notebook (kedro's "cache by
content hash", papermill #468).
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from customer_intel.contracts import StageEntry
from customer_intel.paths import PROJECT_ROOT

LIB = PROJECT_ROOT / "lib" / "customer_intel"


def _module_path(name: str) -> Path | None:
    rel = name.split(".")[1:]
    candidate = LIB.joinpath(*rel)
    if candidate.with_suffix(".py").exists():
        return candidate.with_suffix(".py")
    if (candidate / "__init__.py").exists():
        return candidate / "__init__.py"
    return None


def _statements(tree: ast.AST) -> Iterator[ast.stmt]:
    """Every statement of ``tree``, nested ones too (in functions, classes, branches, loops).

    An import is a statement, so only statement lists are followed, not expressions: the
    library's statements are 7% of the nodes :func:`ast.walk` visits (9,850 of 137,897), and
    that walk took half of the runner's planning (0.28 of 0.59 s).
    """
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            for child in getattr(node, name, None) or ():
                if isinstance(child, ast.stmt):
                    yield child
                if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
                    todo.append(child)


def _imported_modules(source: str, package: str | None = None) -> set[str]:
    """``customer_intel`` modules a piece of code imports, anywhere in it (lazy imports too)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    found: set[str] = set()
    for node in _statements(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("customer_intel")}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level and package:  # from . import x, from .x import y
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{module}" if module else base
            if module.startswith("customer_intel"):
                found.add(module)
                found |= {f"{module}.{a.name}" for a in node.names}  # may be submodules
    return {m for m in found if _module_path(m) is not None}


@cache
def _file_imports(path: Path, package: str, mtime_ns: int, size: int) -> frozenset[str]:
    """:func:`_imported_modules` of one library file, parsed once per version of the file.

    Every stage's closure walks mostly the same files: parsing each file once per closure took
    about 3 s of the runner's start (384 parses for eight stages); the file's modification
    time and size in the key make an edited file parsed again.
    """
    return frozenset(_imported_modules(path.read_text(), package))


@cache
def _closure_of(module: str) -> frozenset[str]:
    seen = {module}
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_path(name)
        if path is None:
            continue
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        stat = path.stat()
        for dep in _file_imports(path, package, stat.st_mtime_ns, stat.st_size):
            parents = [".".join(dep.split(".")[:i]) for i in range(2, dep.count(".") + 1)]
            for m in (dep, *parents):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
    return frozenset(seen | {"customer_intel"})


def library_closure(code: str) -> list[Path]:
    """Files of every ``customer_intel`` module reachable from the imports in ``code``."""
    modules: set[str] = set()
    for m in _imported_modules(code):
        modules |= _closure_of(m)
    return sorted({p for m in modules if (p := _module_path(m)) is not None})


def notebook_code(notebook: Path) -> str:
    """All code cells of a notebook, joined (for its imports)."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    return "\n".join(
        "".join(c["source"]) for c in cells if c.get("cell_type") == "code" and c["source"]
    ).replace("%", "#")  # magics are not Python


def code_hash(notebook: Path) -> str:
    """SHA-256 of the notebook and the library files it can reach."""
    h = hashlib.sha256(Path(notebook).read_bytes())
    for path in library_closure(notebook_code(notebook)):
        h.update(str(path.relative_to(LIB)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def stage_key(
    *,
    notebook: Path,
    parameters: dict[str, Any],
    inputs: Iterable[tuple[str, str | None]],
    versions: dict[str, str],
) -> str:
    """The content key of one stage execution (see the module docstring)."""
    blob = json.dumps(
        {
            "code": code_hash(notebook),
            "parameters": {k: v for k, v in parameters.items() if k != "run_dir"},
            "inputs": sorted((item, key or "") for item, key in inputs),
            "versions": versions,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def find_reusable(
    runs_dir: Path, stage: str, key: str, exclude: str | None = None
) -> tuple[Path, StageEntry] | None:
    """The newest run folder whose entry for ``stage`` has ``key`` and holds its outputs.

    Returns the folder (its outputs are there, executed or linked) and that entry (whose
    ``run`` names the run that executed the stage).
    """
    from customer_intel import runs

    if not runs_dir.exists():
        return None
    for folder in sorted(runs_dir.iterdir(), reverse=True):
        if folder.name == exclude or not (folder / "manifest.json").exists():
            continue
        try:
            manifest = runs.read_manifest(folder)
        except (OSError, ValueError):
            continue
        entry = manifest.stages.get(stage)
        if entry is None or entry.key != key or entry.status not in ("success", "reused"):
            continue
        if entry.outputs and all((folder / rel).exists() for rel in entry.outputs):
            return folder, entry
    return None


def file_fingerprint(path: Path, block: int = 1 << 20) -> dict[str, Any]:
    """Size, mtime and a SHA-256 of the first and last MiB (cheap even for a 15 GB file)."""
    import datetime as dt
    import os

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


def files_of(path_or_glob: str) -> list[Path]:
    """The files a path or glob from params names (relative to the project root)."""
    from customer_intel.paths import resolve
    from customer_intel.sources import matching_files

    return matching_files(resolve(path_or_glob))


def files_key(paths: Iterable[str]) -> str:
    """One key for the files named in params (their fingerprints, not their paths' spelling)."""
    prints = [
        {k: v for k, v in file_fingerprint(f).items() if k != "path"}
        for p in paths
        for f in files_of(p)
    ]
    return hashlib.sha256(json.dumps(prints, sort_keys=True).encode()).hexdigest()[:32]
