"""Done-when of issue 18: a metric and a report added in a profile reach the reports dashboard."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import duckdb
import nbformat
import polars as pl
import pytest
import yaml
from nbclient import NotebookClient

from customer_intel import dashboards
from customer_intel.paths import DASHBOARDS_DIR, PARAMS_DIR, PROJECT_ROOT


@pytest.mark.e2e
def test_a_metric_and_report_added_in_a_profile_show_on_the_reports_page(
    smoke_run, tmp_path, monkeypatch
):
    root = smoke_run["output_root"]
    assert (smoke_run["run_dir"] / "tables" / "metric_revenue_forecast.parquet").exists()
    default = yaml.safe_load((PARAMS_DIR / "default.yaml").read_text())["metrics"]
    profile = tmp_path / "mine.yaml"
    profile.write_text(
        yaml.safe_dump(
            {
                "extends": str(PARAMS_DIR / "smoke.yaml"),
                "common": {"output_root": str(root)},
                "metrics": {
                    "metrics": [
                        *default["metrics"],
                        {
                            "name": "brand_revenue",
                            "kind": "conversion",
                            "group_by": ["brand"],
                            "filter": "brand IS NOT NULL",
                            "scores": ["Positives", "Revenue"],
                        },
                    ],
                    "reports": [
                        *default["reports"],
                        {
                            "name": "Revenue by brand",
                            "metric": "brand_revenue",
                            "type": "bar",
                            "x": "brand",
                            "y": "Revenue",
                            "description": "added by editing a profile",
                        },
                    ],
                },
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "run_all.py", "--params", str(profile), "--only", "metrics"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = (root / "latest").resolve()
    assert run != smoke_run["run_dir"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["metrics"]["status"] == "success"
    table = pl.read_parquet(run / "tables" / "metric_brand_revenue.parquet")
    con = duckdb.connect()
    events = str(run / "warehouse" / "events" / "**" / "*.parquet")
    truth = con.execute(
        f"""SELECT brand, count(*) FILTER (event_type = 'purchase') AS n,
                   coalesce(sum(price) FILTER (event_type = 'purchase'), 0) AS revenue
            FROM read_parquet('{events}', hive_partitioning=true)
            WHERE user_id IS NOT NULL AND brand IS NOT NULL GROUP BY brand ORDER BY brand"""
    ).pl()
    con.close()
    assert table["brand"].to_list() == truth["brand"].to_list()
    assert table["Positives"].to_list() == truth["n"].to_list()
    assert table["Revenue"].to_list() == pytest.approx(truth["revenue"].to_list(), rel=1e-6)

    monkeypatch.setenv(dashboards.ENV_OUTPUT_ROOT, str(root))
    nb = nbformat.read(DASHBOARDS_DIR / "reports.ipynb", as_version=4)
    NotebookClient(
        nb, kernel_name="python3", resources={"metadata": {"path": str(DASHBOARDS_DIR)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    page = "".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
    reports = [r["name"] for r in default["reports"]] + ["Revenue by brand"]
    titles = re.findall(r'<h3 class="ci-chart-title report"[^>]*>([^<]*)</h3>', page)
    assert titles == reports  # every report, in the order of the profile, each drawn
    i = reports.index("Revenue by brand")
    spec = re.search(
        rf'<script type="application/json" id="report-{i}-spec">(.*?)</script>', page, re.S
    )
    bar = json.loads(spec.group(1).replace("<\\/", "</"))["data"][0]
    assert bar["type"] == "bar"
    assert sorted(bar["x"]) == sorted(truth["brand"].to_list())
    assert page.count('<script type="application/json" id="report-') == len(reports)
