"""The stage graph: declarations match what the notebooks read, keys follow code and inputs."""

from __future__ import annotations

import ast
import json
import re
import shutil

import pytest

from customer_intel import reuse, runs, stages
from customer_intel.contracts import Manifest, StageEntry, StageInput
from customer_intel.params import load_params
from customer_intel.paths import NOTEBOOKS_DIR, PARAMS_DIR

PROFILES = ["default.yaml", "external_ab.yaml", "online_retail.yaml", "marketing_campaign.yaml"]


def _reads_of_notebook(stage: stages.Stage) -> set[str]:
    """Run-folder items a stage notebook reads (tables by name, the warehouse)."""
    code = reuse.notebook_code(NOTEBOOKS_DIR / stage.notebook)
    items = {
        stages.table(m)
        for m in re.findall(
            r"run\.(?:read_table|scan_table|has_table|table_path|await_table)\(\s*\"(\w+)\"", code
        )
    }
    if "warehouse.connect(" in code or "run.warehouse_dir" in code:
        items.add(stages.WAREHOUSE)
    return items


@pytest.mark.parametrize("stage", stages.STAGES, ids=lambda s: s.name)
def test_every_item_a_notebook_reads_is_declared(stage):
    declared: set[str] = set()
    variants = [(p, []) for p in PROFILES]
    variants.append(("default.yaml", ["segmentation.cluster_source=sample_customers"]))
    for profile, overrides in variants:
        io = stage.resolve(load_params(PARAMS_DIR / profile, overrides))
        declared |= {*io.reads, *io.optional, *io.late, *io.writes}
    undeclared = _reads_of_notebook(stage) - declared
    assert not undeclared, f"{stage.notebook} reads {undeclared} without declaring it"


@pytest.mark.parametrize("profile", PROFILES)
def test_no_stage_reads_what_no_upstream_stage_writes(profile):
    params = load_params(PARAMS_DIR / profile)
    ordered = stages.order(stages.STAGES, params)
    written: set[str] = set()
    for stage in ordered:
        io = stage.resolve(params)
        missing = set(io.reads) - written
        # only the sample's side tables may be missing, and only without the built-in sample
        assert missing <= {stages.table("sample_assignments"), stages.table("sample_customers")}
        if missing:
            assert params.ingest.input_path
        written |= set(io.writes)


def test_graph_edges_and_order():
    params = load_params(PARAMS_DIR / "default.yaml")
    deps = stages.dependencies(stages.STAGES, params)
    assert deps == {
        "ingest": set(),
        "optimize": {"ingest"},
        "segmentation": {"optimize"},
        "propensity": {"optimize", "segmentation"},
        "recommendations": {"optimize"},
        "experiments": {"optimize", "ingest"},
        # the default metrics read the warehouse, propensity's held-out scores and the units
        "metrics": {"optimize", "propensity", "experiments"},
        "dashboard_data": {"optimize", "ingest", "segmentation", "experiments"},
    }
    ab = stages.dependencies(stages.STAGES, load_params(PARAMS_DIR / "external_ab.yaml"))
    assert ab["experiments"] == set()  # an external unit table needs no other stage
    text = stages.mermaid(stages.STAGES, params)
    assert "optimize -->|warehouse| recommendations" in text
    assert "segmentation -.->|rfm| propensity" in text
    assert "propensity -.->|propensity_test_scores| metrics" in text
    assert "segmentation -.->|rfm| dashboard_data" in text


def test_library_closure_follows_imports_and_a_changed_file_changes_the_key(tmp_path, monkeypatch):
    code = "from customer_intel import warehouse"
    closure = {p.relative_to(reuse.LIB).as_posix() for p in reuse.library_closure(code)}
    assert {"warehouse.py", "layout.py", "runs.py", "progress.py", "contracts.py"} <= closure
    assert "propensity.py" not in closure  # the library module (params/propensity.py may be)
    lib = tmp_path / "customer_intel"
    shutil.copytree(reuse.LIB, lib, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(reuse, "LIB", lib)
    reuse._closure_of.cache_clear()
    nb = NOTEBOOKS_DIR / "02_optimize.ipynb"
    key = reuse.code_hash(nb)
    (lib / "propensity.py").write_text("# another version\n")  # not imported by 02
    assert reuse.code_hash(nb) == key
    (lib / "layout.py").write_text((lib / "layout.py").read_text() + "\n# changed\n")
    assert reuse.code_hash(nb) != key  # imported through warehouse
    # each file is parsed once per version: an import added to a file is followed
    (lib / "layout.py").write_text(
        (lib / "layout.py").read_text() + "\nfrom customer_intel import propensity\n"
    )
    reuse._closure_of.cache_clear()
    closure = {p.relative_to(lib).as_posix() for p in reuse.library_closure(code)}
    assert "propensity.py" in closure
    reuse._closure_of.cache_clear()


def test_imports_are_found_wherever_a_statement_can_be():
    """Only statement lists are followed (imports are statements): nested ones are found, and
    every library file and notebook gives what a walk over every node of its tree gives."""
    import ast

    def every_node(source, package=None):
        found = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("customer_intel")}
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level and package:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    module = f"{base}.{module}" if module else base
                if module.startswith("customer_intel"):
                    found |= {module, *(f"{module}.{a.name}" for a in node.names)}
        return {m for m in found if reuse._module_path(m) is not None}

    nested = """
class A:
    def f(self):
        try:
            pass
        except ImportError:
            import customer_intel.rfm
        else:
            from customer_intel import cohorts
        finally:
            with open(x):
                for i in y:
                    while z:
                        if q:
                            pass
                        else:
                            from customer_intel import clv
async def g():
    async with a:
        async for b in c:
            match d:
                case 1:
                    import customer_intel.rules
x = lambda: __import__("customer_intel.recommend")  # not an import statement
"""
    assert reuse._imported_modules(nested) == {
        "customer_intel",  # from customer_intel import ...
        "customer_intel.rfm",
        "customer_intel.cohorts",
        "customer_intel.clv",
        "customer_intel.rules",
    }
    files = sorted(reuse.LIB.rglob("*.py"))
    assert len(files) > 30
    for path in files:
        rel = path.relative_to(reuse.LIB.parent).with_suffix("")
        name = ".".join(rel.parts)
        package = (
            name.removesuffix(".__init__") if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        )
        source = path.read_text()
        assert reuse._imported_modules(source, package) == every_node(source, package), path
    for nb in sorted(NOTEBOOKS_DIR.rglob("*.ipynb")):
        code = reuse.notebook_code(nb)
        assert reuse._imported_modules(code) == every_node(code), nb


def test_manifest_round_trips_through_the_typed_model(tmp_path):
    m = Manifest(
        run_id="r1",
        status="success",
        started_at="2026-01-01T00:00:00+00:00",
        params_file="p.yaml",
        params_hash="abc",
        params={"common": {"seed": 1}},
        stages={
            "ingest": StageEntry(
                status="success",
                key="k1",
                run="r1",
                inputs=[StageInput(item="file:x.csv", key="f1")],
                outputs=["tables/a.parquet"],
                rows_in=3,
                rows_out={"a": 2},
            )
        },
    )
    runs.write_model(m, tmp_path / "manifest.json")
    back = runs.read_manifest(tmp_path)
    assert back == m
    assert json.loads((tmp_path / "manifest.json").read_text())["stages"]["ingest"]["key"] == "k1"
    with pytest.raises(ValueError):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "manifest.json").write_text('{"run_id": "x"}')
        runs.read_manifest(tmp_path / "bad")


def test_notebooks_import_customer_intel_only_through_names_the_closure_sees():
    for stage in stages.STAGES:
        tree = ast.parse(reuse.notebook_code(NOTEBOOKS_DIR / stage.notebook))
        names = [
            a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module == "customer_intel"
            for a in n.names
        ]
        files = {
            p.stem
            for p in reuse.library_closure(reuse.notebook_code(NOTEBOOKS_DIR / stage.notebook))
        }
        assert set(names) <= files | {"plots", "params"}, stage.name


def test_metrics_stage_reads_what_its_metrics_name(tmp_path):
    import yaml

    csv = tmp_path / "ih.csv"
    csv.write_text("Outcome,Channel\nClicked,Web\n")
    profile = tmp_path / "p.yaml"
    profile.write_text(
        yaml.safe_dump(
            {
                "extends": str(PARAMS_DIR / "default.yaml"),
                "metrics": {
                    "metrics": [
                        {
                            "name": "ctr",
                            "kind": "conversion",
                            "outcome": "Outcome",
                            "positive": ["Clicked"],
                            "negative": ["Impression"],
                            "scores": ["ConversionRate"],  # no value column for Revenue
                            "source": {"path": str(csv)},
                        }
                    ],
                    "reports": [],  # the default reports name the default metrics
                },
            }
        )
    )
    params = load_params(profile)
    io = stages.BY_NAME["metrics"].resolve(params)
    assert io.reads == () and io.optional == () and io.files == (str(csv),)
    assert stages.table("metric_ctr") in io.writes
    assert stages.dependencies(stages.STAGES, params)["metrics"] == set()  # a file alone
