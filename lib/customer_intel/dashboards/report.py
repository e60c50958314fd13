"""``python -m customer_intel.dashboards.report``: a static HTML copy of each dashboard.

Each dashboard notebook is executed on the last good run (no filters: the default view) and
exported with nbconvert, code hidden, into ``<run>/reports/<dashboard>.html``: one file per
page to attach to an email. The charts are drawn by plotly.js embedded in the file, and
nothing is loaded from the internet (nbconvert's CDN scripts are removed); the filter bar and
the forms are dropped, since they need the server.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from customer_intel.dashboards import present
from customer_intel.dashboards.data import DASHBOARDS, ENV_OUTPUT_ROOT, latest_run
from customer_intel.paths import DASHBOARDS_DIR, OUTPUTS_DIR

_REMOTE = re.compile(
    r"<script[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>"
    r"|<link[^>]*\bhref=\"https?://[^\"]*\"[^>]*>",
    re.I,
)
_FORM = re.compile(r"<form class=\"ci-filters\".*?</form>", re.S)


def offline(page: str, plotly_js: str) -> str:
    """An exported page made self-contained.

    Remote scripts/styles removed, plotly.js inlined, links between dashboards pointing at the
    sibling .html files, the filter form dropped.
    """
    page = _REMOTE.sub("", page)
    page = _FORM.sub("", page)
    page = re.sub(r'href="(\w+)\.ipynb(\?[^"]*)?"', r'href="\1.html"', page)
    return page.replace("</head>", f"<script>{plotly_js}</script>\n</head>", 1)


def export(name: str, run: Path, root: Path) -> Path:
    """Execute one dashboard on the run under ``root`` and write its offline HTML."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    os.environ[ENV_OUTPUT_ROOT] = str(root)
    os.environ["QUERY_STRING"] = ""
    os.environ["CUSTOMER_INTEL_PLOTLY_RENDERER"] = "none"
    nb = nbformat.read(DASHBOARDS_DIR / f"{name}.ipynb", as_version=4)
    NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(DASHBOARDS_DIR)}},
    ).execute()
    for cell in nb.cells:  # forms need a live kernel: drop their (widget) outputs
        if cell.cell_type == "code":
            cell.outputs = [
                o
                for o in cell.get("outputs", [])
                if "application/vnd.jupyter.widget-view+json" not in o.get("data", {})
            ]
    nb.metadata.pop("widgets", None)
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True)
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb)
    js = present.PLOTLY_JS.read_text()
    out = run / "reports" / f"{name}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(offline(body, js))
    return out


def main(argv: list[str] | None = None) -> int:
    """Write ``reports/<dashboard>.html`` into the last good run; print where."""
    ap = argparse.ArgumentParser(prog="python -m customer_intel.dashboards.report")
    ap.add_argument("--output-root", type=Path, default=OUTPUTS_DIR)
    args = ap.parse_args(argv)
    root = args.output_root.resolve()
    run = latest_run(root)
    if run is None:
        print(f"No successful run in {root}: make one with `make run` first.", file=sys.stderr)
        return 1
    for name in DASHBOARDS:
        print(export(name, run, root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
