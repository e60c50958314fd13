"""Dashboards in a real headless Chromium, against a smoke run served by Voila on 127.0.0.1.

Every request a page makes is recorded and must go to the loopback address (or be a data:
URI); the console must stay free of errors. Screenshots (1440x900 and 390x844), load times,
kernel counts and the server's memory over 50 visits go to test-artifacts/dashboards/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import psutil
import pytest

from benchmarks.dashboards import APP_RENDERED
from customer_intel import experiments
from customer_intel.dashboards import DASHBOARDS, serve
from customer_intel.paths import DASHBOARDS_DIR, PROJECT_ROOT

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
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
VISITS = 50
RESULTS: dict[str, dict] = {"load_seconds": {}, "visits": []}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kernels(server: psutil.Process) -> list[psutil.Process]:
    out = []
    for p in server.children(recursive=True):
        try:  # a kernel shutting down may be gone (or a zombie) between listing and reading
            if p.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


def _kernel_ids(server: psutil.Process) -> set[str]:
    """The ids of the server's live kernels (from their connection files' names)."""
    ids = set()
    for p in _kernels(server):
        try:
            ids.update(re.findall(r"kernel-([0-9a-f-]{36})\.json", " ".join(p.cmdline())))
        except psutil.Error:
            continue
    return ids


def _gone(server: psutil.Process, kernel_id: str, seconds: float) -> bool:
    """Whether the kernel ``kernel_id`` stops within ``seconds``."""
    deadline = time.time() + seconds
    while kernel_id in _kernel_ids(server) and time.time() < deadline:
        time.sleep(0.25)
    return kernel_id not in _kernel_ids(server)


#: preheated kernels the server keeps (one per page, each waiting for a visit)
POOL = serve.POOL_SIZE * len(DASHBOARDS)


@pytest.fixture(scope="module")
def server(smoke_run, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
        )
    port = _free_port()
    log = tmp_path_factory.mktemp("voila") / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "customer_intel.dashboards",
                "--output-root",
                str(smoke_run["output_root"]),
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=PROJECT_ROOT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(base + "/voila/tree", timeout=2)  # noqa: S310 (loopback only)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the dashboard server did not start:\n" + log.read_text())
    while not serve.pool_ready(log.read_text()) and time.time() < deadline + 120:
        time.sleep(0.5)  # every page's preheated kernel started (the cold visit's measure)
    yield {
        "base": base,
        "run": smoke_run["run_dir"],
        "root": smoke_run["output_root"],
        "proc": psutil.Process(proc.pid),
        "log": log,
    }
    proc.terminate()  # the server itself (the command runs Voila in-process): stops its kernels
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "load_times.json").write_text(json.dumps(RESULTS, indent=2, default=str))


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


class Visit:
    """A page opened in its own tab, with every request and console error recorded."""

    def __init__(self, browser, server, name: str, query: str = "", viewport=DESKTOP):
        self.page = browser.new_page(viewport=viewport)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        t0 = time.perf_counter()
        self.page.goto(f"{server['base']}/voila/render/{name}.ipynb{query}", timeout=180_000)
        self.page.wait_for_selector("#page-header", timeout=180_000)
        self.page.wait_for_function(
            "Array.from(document.querySelectorAll('.ci-chart'))"
            ".every(e => e.querySelector('.main-svg'))",
            timeout=180_000,
        )
        self.seconds = round(time.perf_counter() - t0, 2)
        self.page.wait_for_function(APP_RENDERED, timeout=60_000)  # the forms, after the charts
        self.kernel_id = self.page.evaluate(
            "JSON.parse(document.getElementById('jupyter-config-data').textContent).kernelId"
        )

    def check(self) -> None:
        outside = [
            u for u in self.requests if not u.startswith(("http://127.0.0.1:", "data:", "blob:"))
        ]
        assert not outside, f"requests that leave the machine: {outside}"
        assert not self.errors, f"console errors: {self.errors}"
        text = self.page.inner_text("body")
        assert "Traceback" not in text and "Error" not in text, text[:2000]
        stderr = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        assert self.page.locator(stderr).count() == 0

    def value(self, selector: str, attr: str = "data-value") -> float:
        return float(self.page.locator(selector).first.get_attribute(attr))

    def close(self, *, run_before_unload: bool = False) -> None:
        """Close the tab. Plain ``page.close()`` runs no unload handler (no shutdown beacon,
        as a crashed tab): the server stops the kernel when the page's websocket closes."""
        self.page.close(run_before_unload=run_before_unload)


def _wait_kernels(proc: psutil.Process, at_most: int, seconds: float) -> int:
    deadline = time.time() + seconds
    while (n := len(_kernels(proc))) > at_most and time.time() < deadline:
        time.sleep(0.25)
    return n


def _shot(visit: Visit, name: str) -> None:
    """A full-length screenshot (Voila scrolls inside the page, so grow the viewport)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = visit.page
    height = page.evaluate(
        "Math.max(...Array.from(document.querySelectorAll('#rendered_cells, #rendered_cells *'))"
        ".map(e => e.scrollHeight))"
    )
    width = page.viewport_size["width"]
    page.set_viewport_size({"width": width, "height": min(int(height) + 40, 10_000)})
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / f"{name}_{width}.png"))


CLIPPED = """() => {
  const bad = [];
  const inside = (r, box) => r.left >= box.left - 1 && r.right <= box.right + 1;
  for (const el of document.querySelectorAll(
      '.ci-title, .ci-nav a, .ci-chart-title, .ci-card-label, .ci-card-value, .ci-card-change,'
      + ' .ci-compare, .ci-span, .ci-filters label')) {
    if (el.scrollWidth > el.clientWidth + 1) bad.push('overflows: ' + el.textContent.trim());
    const page = el.closest('.ci-page, .ci-block') || document.body;
    if (!inside(el.getBoundingClientRect(), page.getBoundingClientRect()))
      bad.push('outside its block: ' + el.textContent.trim());
  }
  for (const chart of document.querySelectorAll('.ci-chart')) {
    const box = chart.getBoundingClientRect();
    const texts = chart.querySelectorAll(
        '.xtick text, .ytick text, .g-xtitle text, .g-ytitle text, .g-y2title text, .legendtext');
    for (const t of texts) {
      if (!t.textContent.trim()) continue;
      if (!inside(t.getBoundingClientRect(), box))
        bad.push(chart.id + ' label cut off: ' + t.textContent.trim());
    }
    for (const t of chart.querySelectorAll('.ytick text, .xtick text')) {
      const v = t.textContent.replace(/[\\u2212]/g, '-').trim();
      if (/^-\\d/.test(v) && !chart.id.includes('lift') && !chart.id.includes('clusters')
          && !chart.id.includes('profit') && !chart.id.startsWith('report-'))
        bad.push(chart.id + ' negative tick on a count axis: ' + v);
    }
  }
  return bad;
}"""


# -- reference numbers, computed here from the run's optimized events --------------------------
def _events(run: Path) -> pl.DataFrame:
    ev = pl.scan_parquet(
        run / "warehouse" / "events" / "**" / "*.parquet", hive_partitioning=True
    ).collect()
    seg = pl.read_parquet(run / "tables" / "rfm.parquet").select("user_id", "segment")
    return ev.join(seg, on="user_id", how="left").with_columns(
        category=pl.col("category_code").cast(pl.String).str.split(".").list.first()
    )


def _reference_kpis(ev: pl.DataFrame, start: dt.date, end: dt.date) -> dict[str, float]:
    starts = ev.group_by("user_session").agg(start=pl.col("event_time").min().dt.date())
    ev = ev.join(starts, on="user_session")
    in_days = ev.filter(pl.col("event_date").is_between(start, end))
    buys = in_days.filter(pl.col("event_type") == "purchase")
    by_start = ev.filter(pl.col("start").is_between(start, end))
    sessions = by_start["user_session"].n_unique()
    orders = by_start.filter(pl.col("event_type") == "purchase")["user_session"].n_unique()
    return {
        "revenue": buys["price"].cast(pl.Float64).sum(),
        "customers": buys["user_id"].n_unique(),
        "sessions": sessions,
        "orders": orders,
        "conversion": orders / sessions,
    }


def test_executive_numbers_equal_the_run(browser, server):
    v = Visit(browser, server, "executive")
    RESULTS["load_seconds"]["executive cold"] = v.seconds
    v.check()
    ev = _events(server["run"])
    end = ev["event_date"].max()
    ref = _reference_kpis(ev, end - dt.timedelta(days=29), end)
    for key in ("revenue", "orders", "customers", "sessions", "conversion"):
        assert v.value(f"#kpi-{key}") == pytest.approx(ref[key], rel=1e-9), key
    compare = v.page.locator(".ci-compare").inner_text()
    assert "compared with" in compare  # the cards say which dates they compare
    top = v.page.locator("#top-customers tbody tr").first.inner_text()
    assert top.startswith("C-")  # pseudonymised by default
    assert server["run"].name not in v.page.inner_text("body")  # no raw run id
    assert v.page.locator("h1").count() == 1
    salt = server["root"] / ".secrets" / "pseudonym_salt"
    assert salt.exists() and len(salt.read_text().strip()) == 64
    v.close()


def test_filters_come_from_the_url_and_change_the_numbers(browser, server):
    ev = _events(server["run"])
    end = ev["event_date"].max()
    start = end - dt.timedelta(days=20)
    buys = ev.filter(pl.col("event_type") == "purchase")
    segment = buys["segment"].drop_nulls().mode().sort()[0]
    category = buys.filter(pl.col("segment") == segment)["category"].drop_nulls().mode().sort()[0]
    query = f"?from={start}&to={end}&segment={segment}&category={category}"
    v = Visit(browser, server, "executive", query)
    v.check()
    sub = ev.filter((pl.col("segment") == segment) & (pl.col("category") == category))
    ref = _reference_kpis(sub, start, end)
    assert v.value("#kpi-revenue") == pytest.approx(ref["revenue"], rel=1e-9)
    assert v.value("#kpi-customers") == ref["customers"]
    assert v.page.locator("#filter-segment").input_value() == segment
    # navigation keeps the filters: the growth link carries the same query string
    href = v.page.locator("#nav a[href^='growth']").get_attribute("href")
    assert f"segment={segment}" in href and f"from={start}" in href
    # the form submits to the URL (a shareable view)
    v.page.select_option("#filter-segment", "")
    with v.page.expect_navigation(timeout=180_000):
        v.page.locator("#filters button").click()
    v.page.wait_for_selector("#kpi-revenue", timeout=180_000)
    assert f"category={category}" in v.page.url
    assert v.page.locator("#filter-segment").input_value() == ""
    ref = _reference_kpis(ev.filter(pl.col("category") == category), start, end)
    assert v.value("#kpi-revenue") == pytest.approx(ref["revenue"], rel=1e-9)
    v.close()


def test_experiment_filter_narrows_every_page_to_the_experiments_customers(browser, server):
    units = pl.read_parquet(server["run"] / "tables" / "experiment_units.parquet")
    name = units["experiment_name"].mode().sort()[0]
    enrolled = units.filter(pl.col("experiment_name") == name)["user_id"].unique()
    ev = _events(server["run"])
    end = ev["event_date"].max()
    start = end - dt.timedelta(days=29)
    v = Visit(browser, server, "executive", f"?experiment={name}")
    v.check()
    ref = _reference_kpis(ev.filter(pl.col("user_id").is_in(enrolled.implode())), start, end)
    for key in ("revenue", "orders", "customers", "sessions", "conversion"):
        assert v.value(f"#kpi-{key}") == pytest.approx(ref[key], rel=1e-9), key
    whole = _reference_kpis(ev, start, end)
    assert ref["sessions"] < whole["sessions"]  # the filter changed the numbers
    assert v.page.locator("#filter-experiment").input_value() == name
    assert f"customers in the experiment {name}" in v.page.locator(".ci-compare").inner_text()
    # kept in the URL across pages: every navigation link carries it
    for href in v.page.locator("#nav a").evaluate_all("els => els.map(a => a.href)"):
        assert f"experiment={name}" in href, href
    # a click on the navigation link opens the page (JupyterLab's renderer swallowed it)
    v.page.locator("#nav a[href^='experiments']").click()
    v.page.wait_for_selector("#experiment-shown", timeout=180_000)
    assert "/experiments.ipynb?" in v.page.url and f"experiment={name}" in v.page.url
    shown = v.page.locator("#experiment-shown")
    assert shown.get_attribute("data-experiment") == name
    assert int(shown.get_attribute("data-units")) == enrolled.len()
    assert v.page.locator("#filter-experiment").input_value() == name
    # choosing "all customers" in the bar drops it from the URL
    v.page.select_option("#filter-experiment", "")
    with v.page.expect_navigation(timeout=180_000):
        v.page.locator("#filters button").click()
    v.page.wait_for_selector("#page-header", timeout=180_000)
    assert "experiment=" not in v.page.url  # the bar leaves empty fields out of the URL
    v.close()


def test_customers_segments_and_score_form_refuses_bad_input(browser, server):
    v = Visit(browser, server, "customers")
    RESULTS["load_seconds"]["customers cold"] = v.seconds
    v.check()
    summary = pl.read_parquet(server["run"] / "tables" / "rfm_segments_summary.parquet").sort(
        "revenue", descending=True
    )
    top = v.page.locator("#top-segment")
    assert top.get_attribute("data-segment") == summary["segment"][0]
    assert v.page.locator("#customers-at-risk").count() == 1  # a table or why it is empty
    assert v.page.locator("#chart-clv.js-plotly-plot, #chart-p-alive.js-plotly-plot").count() == 2
    v.page.wait_for_selector(".widget-text label", timeout=60_000)  # the form renders last
    labels = v.page.locator(".widget-text label").all_inner_texts()
    assert labels and not any("_" in t for t in labels)  # words, not column names
    field = v.page.locator(".widget-text input").first
    button = v.page.get_by_role("button", name="Score this customer")
    for bad in ("-5000", "", "abc"):
        field.fill(bad)
        field.press("Tab")
        button.click()
        v.page.wait_for_selector("#score-result[data-error='1']", timeout=15_000)
        assert v.page.locator("#score-result .ci-error").count() >= 1
    field.fill("10")
    field.press("Tab")
    button.click()
    v.page.wait_for_selector("#score-result[data-segment]", timeout=60_000)
    names = set(
        pl.read_parquet(server["run"] / "tables" / "cluster_profiles.parquet")["cluster_name"]
    )
    assert v.page.locator("#score-result").get_attribute("data-segment") in names
    v.close()


def test_growth_targeting_campaign_editor_and_cross_sell_labels(browser, server):
    v = Visit(browser, server, "growth")
    RESULTS["load_seconds"]["growth cold"] = v.seconds
    v.check()
    profit = pl.read_parquet(server["run"] / "tables" / "propensity_profit.parquet")
    best = profit.row(int(profit["expected_profit"].arg_max()), named=True)
    assert int(v.page.locator("#targeting").get_attribute("data-depth")) == best["depth"]
    cost, margin = 5.0, 20.0
    curve = profit.with_columns(p=pl.col("expected_conversions") * margin - pl.col("depth") * cost)
    expect = int(curve["depth"][int(curve["p"].arg_max())])
    boxes = v.page.locator(".widget-text input")
    boxes.nth(0).fill(str(cost))
    boxes.nth(1).fill(str(margin))
    v.page.get_by_role("button", name="Recompute").click()
    v.page.wait_for_function(
        f"document.querySelector('#targeting-edit')?.dataset.depth == '{expect}'", timeout=30_000
    )
    recs = v.page.locator("#product-recs tbody tr")
    assert recs.count() >= 1
    first = recs.first.locator("td").nth(1).inner_text()
    assert not first.strip().isdigit()  # a label, not a bare id
    v.close()


def test_experiments_readout_and_power_calculator(browser, server):
    v = Visit(browser, server, "experiments")
    RESULTS["load_seconds"]["experiments cold"] = v.seconds
    v.check()
    results = pl.read_parquet(server["run"] / "tables" / "experiment_results.parquet")
    assert v.page.locator("tr.metric-row").count() == results.height
    for r in results.iter_rows(named=True):
        row = v.page.locator(f"tr.metric-row[data-metric='{r['metric']}'][data-arm='{r['arm']}']")
        assert float(row.get_attribute("data-rel-lift")) == pytest.approx(r["rel_lift"], rel=1e-12)
    decisions = pl.read_parquet(server["run"] / "tables" / "experiment_decision.parquet")
    for r in decisions.iter_rows(named=True):
        shown = v.page.locator(f".decision[data-arm='{r['arm']}']")
        assert shown.get_attribute("data-decision") == r["decision"]
        assert shown.inner_text().strip() == r["verdict"]
    daily = server["run"] / "tables" / "experiment_daily.parquet"
    if daily.exists() and pl.read_parquet(daily).height:
        assert v.page.locator("#chart-lift-over-time .main-svg").count() >= 1
    assert "e-" not in v.page.locator("#decision-table").inner_text()  # no 2.03e-11
    control = float(results.filter(pl.col("kind") == "binary")["control"][0])
    result = v.page.locator("#power-result")
    assert float(result.get_attribute("data-baseline")) == pytest.approx(control, abs=1e-4)
    baseline = v.page.locator(".widget-text input").first
    baseline.fill("20")
    baseline.press("Enter")
    v.page.wait_for_function(
        "Math.abs(Number(document.querySelector('#power-result').dataset.baseline) - 0.2) < 1e-9",
        timeout=15_000,
    )
    n = float(result.get_attribute("data-n"))
    assert n == pytest.approx(experiments.sample_size_per_group(0.2, 0.1, 0.05, 0.8), rel=1e-9)
    baseline.fill("150")
    baseline.press("Enter")
    v.page.wait_for_selector("#power-result .ci-error", timeout=15_000)
    assert "between 0% and 100%" in result.inner_text()
    v.close()


def test_quality_page(browser, server):
    v = Visit(browser, server, "quality")
    RESULTS["load_seconds"]["quality cold"] = v.seconds
    v.check()
    assert v.page.locator("#days-ok, #days-warning").count() == 1
    assert v.page.locator("#missing tbody tr").count() >= 8
    assert v.page.locator("#ingest-summary").count() == 1
    v.close()


def test_reports_page_draws_every_configured_report(browser, server):
    v = Visit(browser, server, "reports")
    RESULTS["load_seconds"]["reports cold"] = v.seconds
    v.check()
    manifest = json.loads((server["run"] / "manifest.json").read_text())
    reports = manifest["params"]["metrics"]["reports"]
    titles = v.page.locator("h3.report").all_inner_texts()
    assert titles == [r["name"] for r in reports]
    assert v.page.locator(".js-plotly-plot").count() == len(reports)
    v.close()


def test_executive_lists_the_forecast_anomalies(browser, server):
    v = Visit(browser, server, "executive")
    shown = int(v.page.locator("#forecast-anomalies").get_attribute("data-n"))
    table = pl.read_parquet(server["run"] / "tables" / "forecast_anomalies.parquet")
    assert shown == table.height
    assert v.page.locator("#forecast-anomalies td.actual").count() == table.height
    v.close()


FITS = """() => {
  const bad = [];
  const root = document.scrollingElement;
  if (root.scrollWidth > root.clientWidth + 1)
    bad.push('the page scrolls sideways: ' + root.scrollWidth + ' > ' + root.clientWidth);
  const sel = '#filters, #filters label, #filters input, #filters select, #filters button,'
    + ' .widget-text, .widget-text label, .widget-text input, .widget-button, .widget-vbox,'
    + ' .widget-dropdown, .widget-dropdown label, .widget-dropdown select, .ci-result';
  for (const el of document.querySelectorAll(sel)) {
    const what = (el.id ? '#' + el.id : el.className.toString().split(' ')[0]) + ' '
      + (el.textContent || el.value || '').trim().slice(0, 40);
    if (el.scrollWidth > el.clientWidth + 1)
      bad.push('clipped: ' + what + ' (' + el.scrollWidth + ' > ' + el.clientWidth + ')');
    const r = el.getBoundingClientRect();
    if (r.width && (r.left < -1 || r.right > window.innerWidth + 1))
      bad.push('outside the screen: ' + what);
  }
  return bad;
}"""


def test_the_filter_bar_and_the_forms_fit_a_phone(browser, server):
    for name in ("customers", "growth", "experiments", "executive"):
        v = Visit(browser, server, name, viewport=PHONE)
        v.page.wait_for_selector(".ci-filters", timeout=60_000)
        if name != "executive":
            v.page.wait_for_selector(".widget-vbox", timeout=60_000)  # the forms render last
            v.page.wait_for_timeout(300)
        bad = v.page.evaluate(FITS)
        assert not bad, f"{name} at 390x844: {bad}"
        v.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1440x900", "390x844"])
def test_no_clipped_labels_and_screenshots(browser, server, viewport):
    for name in DASHBOARDS:
        v = Visit(browser, server, name, viewport=viewport)
        RESULTS["load_seconds"][f"{name} warm {viewport['width']}"] = v.seconds
        v.check()
        bad = v.page.evaluate(CLIPPED)
        _shot(v, name)
        assert not bad, f"{name} at {viewport}: {bad}"
        v.close()


#: how soon a closed tab's kernel must be gone: well under the culling (a minute, checked
#: every CULL_INTERVAL), so what stops it is the close, not the culler
GONE_WITHIN = serve.CLOSE_GRACE + 8


def test_a_page_without_a_form_loads_no_app_and_keeps_no_kernel(browser, server):
    """The quality page's outputs are all HTML: no Voila app script is fetched, nothing ever
    connects to its kernel, and the server shuts that kernel down once the page is sent."""
    proc: psutil.Process = server["proc"]
    v = Visit(browser, server, "quality")
    v.check()
    assert not [u for u in v.requests if u.endswith("voila.js") or "/voila.js?" in u]
    assert _gone(proc, v.kernel_id, GONE_WITHIN), "a formless page's kernel was kept"
    assert f"Kernel {v.kernel_id}: its page has no form" in server["log"].read_text()
    v.close()
    v = Visit(browser, server, "customers")  # a page with a form keeps its kernel while open
    assert any("voila.js" in u for u in v.requests)
    time.sleep(GONE_WITHIN)
    assert v.kernel_id in _kernel_ids(proc)
    v.close()


def test_a_closed_tab_shuts_its_kernel_down_without_waiting_for_culling(browser, server):
    proc: psutil.Process = server["proc"]
    # a tab closed the way a person closes it: unload handlers run, Voila's beacon is sent
    v = Visit(browser, server, "customers")
    assert v.kernel_id in _kernel_ids(proc)
    t0 = time.perf_counter()
    v.close(run_before_unload=True)
    assert _gone(proc, v.kernel_id, GONE_WITHIN), "a kernel outlived its tab"
    RESULTS["close_seconds"] = {"with unload handlers": round(time.perf_counter() - t0, 2)}
    # a tab that dies without unload handlers (page.close(), a crash): no beacon at all
    v = Visit(browser, server, "customers")
    assert v.kernel_id in _kernel_ids(proc)
    t0 = time.perf_counter()
    v.close()
    assert _gone(proc, v.kernel_id, GONE_WITHIN), "a kernel outlived its tab"
    RESULTS["close_seconds"]["page.close()"] = round(time.perf_counter() - t0, 2)
    # the beacon itself, sent as Voila's page sends it, is accepted (204, not 403)
    v = Visit(browser, server, "customers")
    status = v.page.evaluate(
        r"""async () => {
          const kernel = JSON.parse(
              document.getElementById('jupyter-config-data').textContent).kernelId;
          const form = new FormData();
          const m = document.cookie.match('\\b_xsrf=([^;]*)\\b');
          form.append('_xsrf', (m && m[1]) || '');
          const r = await fetch(`/voila/api/shutdown/${kernel}`, {method: 'POST', body: form});
          return r.status;
        }"""
    )
    assert status == 204
    assert _gone(proc, v.kernel_id, GONE_WITHIN)
    v.close()
    assert "403 POST /voila/api/shutdown" not in server["log"].read_text()


def test_visits_use_the_preheated_kernels_and_see_their_own_filters(browser, server):
    """A visit takes the page's waiting kernel (its imports done), which then reads the
    visit's URL: a preheated page shows the numbers of the visit's own filters."""
    ev = _events(server["run"])
    end = ev["event_date"].max()
    for days in (6, 13):
        start = end - dt.timedelta(days=days)
        query, ref = f"?from={start}&to={end}", _reference_kpis(ev, start, end)
        time.sleep(serve.FILL_DELAY + 10)  # the pool refilled, its kernel waiting for a visit
        used = server["log"].read_text().count("Using pre-heated kernel")
        v = Visit(browser, server, "executive", query)
        v.check()
        assert server["log"].read_text().count("Using pre-heated kernel") == used + 1
        assert v.value("#kpi-revenue") == pytest.approx(ref["revenue"], rel=1e-9), query
        v.close()


def test_fifty_visits_leave_few_kernels_and_bounded_memory(browser, server):
    """Each closed tab shuts its kernel down: at most the pool + 2 kernels are left."""
    proc: psutil.Process = server["proc"]
    pages = list(DASHBOARDS)
    rss = []
    visited = []
    for i in range(VISITS):
        v = Visit(browser, server, pages[i % len(pages)])
        visited.append(v.kernel_id)
        v.close()
        time.sleep(0.3)
        rss.append(proc.memory_info().rss / 1e6)
        RESULTS["visits"].append(
            {
                "visit": i + 1,
                "seconds": v.seconds,
                "kernels": len(_kernels(proc)),
                "rss_mb": rss[-1],
            }
        )
    kernels = _wait_kernels(proc, POOL, GONE_WITHIN + serve.FILL_DELAY)  # the closes, not culling
    left = set(visited) & _kernel_ids(proc)
    RESULTS["after_visits"] = {
        "kernels": kernels,
        "pool": POOL,
        "visited_kernels_alive": len(left),
        "server_rss_mb": rss[-1],
        "rss_mb_visit_10": rss[9],
    }
    assert kernels <= POOL + 2, f"{kernels} kernels left after {VISITS} visits (pool {POOL})"
    assert len(left) <= 2, f"{len(left)} visited kernels outlived their tabs"
    assert rss[-1] < rss[9] + 150, f"server RSS grew from {rss[9]:.0f} MB to {rss[-1]:.0f} MB"
    log = server["log"].read_text()
    assert "403 POST /voila/api/shutdown" not in log


def test_page_kernels_import_no_engine_model_or_notebook_library(server):
    """Each page's cells, run as its kernel runs them, import none of the heavy libraries
    (every visit starts a kernel and pays its imports: no Ibis, DuckDB, LightGBM, scipy...)."""
    heavy = ["ibis", "duckdb", "sqlglot", "lightgbm", "sklearn", "scipy", "statsmodels"]
    heavy += ["pyarrow", "pandas", "nbformat", "jsonschema"]
    code = f"""
import json, sys
from pathlib import Path
for path in sys.argv[1:]:
    ns = {{}}
    for cell in json.loads(Path(path).read_text())["cells"]:
        if cell["cell_type"] == "code":
            exec("".join(cell["source"]), ns)
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""
    env = dict(
        os.environ,
        CUSTOMER_INTEL_PLOTLY_RENDERER="none",
        CUSTOMER_INTEL_OUTPUT_ROOT=str(server["root"]),
    )
    for name in DASHBOARDS:
        out = subprocess.run(
            [sys.executable, "-c", code, str(DASHBOARDS_DIR / f"{name}.ipynb")],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=300,
        )
        assert json.loads(out.stdout) == [], f"{name}: {out.stdout}{out.stderr[-2000:]}"


def test_static_reports_draw_every_chart_offline(browser, server, tmp_path):
    """``make report``: each dashboard as one HTML file for email, drawn with nothing fetched
    (only the file itself and inline data), every chart drawn, no console error."""
    from customer_intel.dashboards import report

    run = tmp_path / "runs" / server["run"].name
    shutil.copytree(server["run"], run, symlinks=True)
    (tmp_path / "latest").symlink_to(run)
    assert report.main(["--output-root", str(tmp_path)]) == 0
    for name in DASHBOARDS:
        path = run / "reports" / f"{name}.html"
        page = browser.new_page(viewport=DESKTOP)
        requests: list[str] = []
        errors: list[str] = []
        page.on("request", lambda r, seen=requests: seen.append(r.url))
        page.on("console", lambda m, e=errors: e.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e, seen=errors: seen.append(str(e)))
        page.goto(path.as_uri())
        page.wait_for_function(
            "Array.from(document.querySelectorAll('.ci-chart'))"
            ".every(e => e.querySelector('.main-svg'))",
            timeout=60_000,
        )
        charts = page.locator(".ci-chart").count()
        page.close()
        outside = [u for u in requests if not u.startswith(("file://", "data:", "blob:"))]
        assert not outside, f"{name}: requests that leave the file: {outside}"
        assert not errors, f"{name}: console errors: {errors}"
        assert charts >= (0 if name == "quality" else 1), f"{name}: no chart"
