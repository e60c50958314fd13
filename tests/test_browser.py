"""Dashboards in a real headless Chromium, against a smoke run served by Voila on 127.0.0.1.

Screenshots and load times go to test-artifacts/dashboards/.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from customer_intel import dashboards, experiments
from customer_intel.paths import PROJECT_ROOT

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "dashboards"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
EXPECTED_CHARTS = {"executive": 4, "customers": 3, "growth": 3, "experiments": 1, "reports": 8}
LOAD_TIMES: dict[str, dict[str, float]] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(smoke_run):
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
        )
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "customer_intel.dashboards",
            "--output-root",
            str(smoke_run["output_root"]),
            "--port",
            str(port),
            "--pool-size",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=PROJECT_ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(base + "/voila/tree", timeout=2)  # noqa: S310 (loopback only)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(
            "the dashboard server did not start:\n" + (proc.stdout.read() if proc.stdout else "")
        )
    yield {"base": base, "run": smoke_run["run_dir"]}
    proc.terminate()  # the server itself (the command execs Voila), which stops its kernels
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "load_times.json").write_text(json.dumps(LOAD_TIMES, indent=2))


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def _open(browser, server, name: str, label: str):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    t0 = time.perf_counter()
    page.goto(f"{server['base']}/voila/render/{name}.ipynb", timeout=180_000)
    page.wait_for_function(
        f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {EXPECTED_CHARTS[name]}",
        timeout=180_000,
    )
    LOAD_TIMES.setdefault(name, {})[label] = round(time.perf_counter() - t0, 2)
    return page


def _check_clean(page):
    text = page.inner_text("body")
    assert "Traceback" not in text and "Error" not in text, text[:2000]
    assert (
        page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        ).count()
        == 0
    )


def _shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _value(page, selector, attr="data-value") -> float:
    return float(page.locator(selector).first.get_attribute(attr))


def test_executive_numbers_equal_the_run(browser, server):
    page = _open(browser, server, "executive", "cold")
    _check_clean(page)
    ev = pl.scan_parquet(
        server["run"] / "warehouse" / "events" / "**" / "*.parquet", hive_partitioning=True
    ).collect()
    end = ev["event_time"].max()
    cur = ev.filter(pl.col("event_time") > end - dt.timedelta(days=30))
    buys = cur.filter(pl.col("event_type") == "purchase")
    assert _value(page, "#kpi-revenue") == pytest.approx(
        buys["price"].cast(pl.Float64).sum(), rel=1e-6
    )
    assert _value(page, "#kpi-orders") == buys["user_session"].n_unique()
    assert _value(page, "#kpi-customers") == buys["user_id"].n_unique()
    assert _value(page, "#kpi-conversion") == pytest.approx(
        buys["user_session"].n_unique() / cur["user_session"].n_unique(), rel=1e-9
    )
    top = page.locator("#top-customers tr").nth(1).inner_text()
    assert top.startswith("C-")  # pseudonymised by default
    assert server["run"].name in page.locator("#run-info").inner_text()
    _shot(page, "executive")


def test_customers_numbers_and_score_form(browser, server):
    page = _open(browser, server, "customers", "cold")
    _check_clean(page)
    summary = pl.read_parquet(server["run"] / "tables" / "rfm_segments_summary.parquet").sort(
        "revenue", descending=True
    )
    top = page.locator("#top-segment")
    assert top.get_attribute("data-segment") == summary["segment"][0]
    assert float(top.get_attribute("data-revenue-share")) == pytest.approx(
        summary["revenue_share"][0], rel=1e-12
    )
    names = set(pl.read_parquet(server["run"] / "tables" / "cluster_profiles.parquet")["segment"])
    first = page.locator("#score-result").get_attribute("data-segment")
    assert first in names
    field = page.locator(".widget-text input").first
    field.fill("100000")
    page.get_by_text("Score this customer").click()
    page.wait_for_timeout(1500)
    assert page.locator("#score-result").get_attribute("data-segment") in names
    _shot(page, "customers")


def test_growth_targeting_equals_the_profit_optimum(browser, server):
    page = _open(browser, server, "growth", "cold")
    _check_clean(page)
    profit = pl.read_parquet(server["run"] / "tables" / "propensity_profit.parquet")
    best = profit.row(int(profit["expected_profit"].arg_max()), named=True)
    assert int(page.locator("#targeting").get_attribute("data-depth")) == best["depth"]
    assert float(page.locator("#targeting").get_attribute("data-profit")) == pytest.approx(
        best["expected_profit"], rel=1e-9
    )
    item = page.locator("#product-recs").get_attribute("data-item")
    recs = pl.read_parquet(server["run"] / "tables" / "product_recommendations.parquet").filter(
        pl.col("item") == item
    )
    assert page.locator("#product-recs tr").count() == recs.height + 1
    _shot(page, "growth")


def test_experiments_readout_and_power_calculator(browser, server):
    page = _open(browser, server, "experiments", "cold")
    _check_clean(page)
    results = pl.read_parquet(server["run"] / "tables" / "experiment_results.parquet")
    rows = page.locator("tr.metric-row")
    assert rows.count() == results.height
    for r in results.iter_rows(named=True):
        row = page.locator(f"tr.metric-row[data-metric='{r['metric']}']")
        assert float(row.get_attribute("data-rel-lift")) == pytest.approx(r["rel_lift"], rel=1e-12)
    assert page.locator("#srm-warning, #srm-ok").count() == 1
    sizes = []
    for baseline in ("0.05", "0.2"):
        readout = page.locator(".widget-readout").first
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type(baseline)
        page.keyboard.press("Enter")
        page.wait_for_function(
            f"document.querySelector('#power-result') && Math.abs(Number(document.querySelector('#power-result').dataset.baseline) - {baseline}) < 1e-9",
            timeout=15_000,
        )
        result = page.locator("#power-result")
        settings = [
            float(result.get_attribute(f"data-{k}")) for k in ("baseline", "mde", "alpha", "power")
        ]
        assert settings[0] == pytest.approx(float(baseline), abs=1e-9)
        shown = float(result.get_attribute("data-n"))
        assert shown == pytest.approx(experiments.sample_size_per_group(*settings), rel=1e-12)
        sizes.append(shown)
    assert sizes[0] > sizes[1]  # a lower baseline needs more units
    _shot(page, "experiments")


def test_reports_page_draws_every_configured_report(browser, server):
    page = _open(browser, server, "reports", "cold")
    _check_clean(page)
    manifest = json.loads((server["run"] / "manifest.json").read_text())
    reports = manifest["params"]["metrics"]["reports"]
    titles = page.locator("h3.report").all_inner_texts()
    assert titles == [r["name"] for r in reports]
    assert page.locator(".js-plotly-plot").count() == len(reports)
    _shot(page, "reports")


def test_executive_lists_the_forecast_anomalies(browser, server):
    page = _open(browser, server, "executive", "anomalies")
    shown = int(page.locator("#forecast-anomalies").get_attribute("data-n"))
    table = pl.read_parquet(server["run"] / "tables" / "forecast_anomalies.parquet")
    assert shown == table.height
    assert page.locator("#forecast-anomalies td.actual").count() == table.height


def test_preheated_load_times(browser, server):
    time.sleep(5)  # let the pool refill after the first visits
    for name in dashboards.DASHBOARDS:
        page = _open(browser, server, name, "preheated")
        page.close()
    assert all("preheated" in v for v in LOAD_TIMES.values())


def test_artifacts_dir_is_ignored_by_git():
    assert "test-artifacts/" in (PROJECT_ROOT / ".gitignore").read_text()
    assert shutil.which("git")
