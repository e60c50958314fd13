"""pyproject.toml is the source of truth; environment.yml and requirements.lock must agree."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import yaml
from packaging.requirements import Requirement

from customer_intel.paths import PROJECT_ROOT

CONDA_NAMES = {"duckdb": "python-duckdb", "ibis-framework": "ibis-duckdb"}
#: conda installs what pip cannot: the Java runtime the spark extra needs
CONDA_ONLY = {"openjdk"}


def _pyproject_requirements() -> dict[str, str]:
    meta = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    reqs = [*meta["dependencies"], *extras["test"], *extras["spark"]]
    out = {}
    for text in reqs:
        r = Requirement(text)
        out[CONDA_NAMES.get(r.name, r.name)] = str(r.specifier)
    return out


def _conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for text in items:
            m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", text)
            name, spec = m.group(1), m.group(2).replace(" ", "")
            if name in {"python", "pip", *CONDA_ONLY}:
                continue
            out[name] = str(Requirement(f"x{spec}").specifier) if spec else ""
    return out


def test_environment_yml_lists_the_same_packages_and_bounds_as_pyproject():
    py, conda = _pyproject_requirements(), _conda_requirements()
    assert sorted(set(py) - set(conda)) == [], "in pyproject.toml but not in environment.yml"
    assert sorted(set(conda) - set(py)) == [], "in environment.yml but not in pyproject.toml"
    different = {k: (py[k], conda[k]) for k in py if py[k] != conda[k]}
    assert different == {}, "version bounds differ (pyproject, environment.yml)"


def test_lock_file_pins_every_direct_dependency():
    lock = (PROJECT_ROOT / "requirements.lock").read_text()
    pinned = {
        m.group(1).lower(): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+)", lock, re.M)
    }
    meta = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    for text in [*meta["dependencies"], *meta["optional-dependencies"]["test"]]:
        r = Requirement(text)
        name = r.name.lower().replace("_", "-")
        assert name in pinned, f"{r.name} is not pinned in requirements.lock (run `make lock`)"
        assert r.specifier.contains(pinned[name], prereleases=True), (
            f"requirements.lock pins {r.name}=={pinned[name]}, outside {r.specifier}"
        )


def test_a_stage_kernels_imports_build_no_iri_grammar():
    """The runner and every stage kernel import nbformat (papermill, plotly's renderers), which
    imports jsonschema's format checkers; rfc3987-syntax among them built 35 Earley parsers in
    2.9 s of CPU per process. requirements-exclude.txt keeps it out of the lock file."""
    code = (
        "import sys, papermill, plotly.io as pio\n"
        "from customer_intel import plots, runs\n"
        "pio.renderers.default\n"
        "print(sorted(m for m in ('rfc3987_syntax', 'lark', 'jsonschema') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['jsonschema']"], out.stdout  # jsonschema itself is imported
    lock = (PROJECT_ROOT / "requirements.lock").read_text()
    assert "\nrfc3987-syntax==" not in lock and "\nlark==" not in lock
