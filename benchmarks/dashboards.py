"""Dashboard load times in a real headless Chromium, kernel count and server memory.

``python -m benchmarks.dashboards --output-root OUT`` serves OUT's last good run with Voila on
127.0.0.1 and, in Debian's Chromium (``/usr/bin/chromium``):

- ``cold``: the first visit of each page in a new browser profile (empty HTTP cache) once the
  server is up with its preheated kernels (one per page) waiting;
- ``warm``: a second visit of the page in the same profile (scripts cached), after the page's
  preheated kernel was replaced;
- ``visits``: ``--visits`` consecutive visits in one profile (pages in turn), each closed with
  ``page.close()`` (a tab closed without its unload handlers), with the kernel count and the
  server's RSS after each.

A load time runs from navigation to every chart drawn (each ``.ci-chart`` has its plotly SVG).
The machine's load average is recorded with the numbers (other work slows the pages). The
parent prints a summary and writes ``benchmarks/results/dashboards.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from customer_intel.dashboards import DASHBOARDS, serve
from customer_intel.paths import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
#: the page is shown (Voila reveals its cells when the last one has arrived) and every chart drawn
DRAWN = (
    "(() => { const r = document.getElementById('rendered_cells');"
    " return !!r && r.style.display !== 'none' && Array.from("
    "document.querySelectorAll('.ci-chart')).every(e => e.querySelector('.main-svg')); })()"
)
#: Voila's app has rendered every output it renders (widgets: the forms), removing their scripts
APP_RENDERED = f"document.querySelectorAll('script[type=\"{serve.APP_OUTPUT}\"]').length === 0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kernels(server: psutil.Process) -> int:
    """Live ipykernel processes under the server."""
    n = 0
    for p in server.children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(p.cmdline()):
                n += 1
        except psutil.Error:
            continue
    return n


def settle(server: psutil.Process, seconds: float = 120) -> bool:
    """Wait until the server's kernels are idle for 2 s (the pool's kernels have run their
    page's imports and warm-up and wait for a visit; "pool filled" is logged at their start)."""
    deadline = time.time() + seconds
    quiet_since = None
    known: dict[int, psutil.Process] = {}  # cpu_percent compares with the same object's last call
    while time.time() < deadline:
        cpu = 0.0
        for p in [server, *server.children(recursive=True)]:
            p = known.setdefault(p.pid, p)
            try:
                cpu += p.cpu_percent(interval=None)
            except psutil.Error:
                continue
        quiet_since = (quiet_since or time.time()) if cpu < 5 else None
        if quiet_since and time.time() - quiet_since >= 2:
            return True
        time.sleep(0.5)
    return False


def visit(context, base: str, name: str) -> tuple[float, float, list[str]]:
    """Open a page in a new tab of ``context`` (a browser profile: its HTTP cache) until every
    chart is drawn, then until Voila's app has rendered the forms; close the tab. Seconds to
    the charts, seconds to the forms, and the requests."""
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    t0 = time.perf_counter()
    # from the navigation to what the visitor sees, not to the window's load event (which
    # waits for Voila's app scripts, loaded after the charts are drawn)
    page.goto(f"{base}/voila/render/{name}.ipynb", timeout=300_000, wait_until="commit")
    page.wait_for_function(DRAWN, timeout=300_000, polling=20)
    seconds = time.perf_counter() - t0
    page.wait_for_function(APP_RENDERED, timeout=300_000, polling=20)
    forms = time.perf_counter() - t0
    page.close()
    return seconds, forms, urls


def main(argv: list[str] | None = None) -> int:
    """Serve, visit, print and write the numbers."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.dashboards")
    ap.add_argument("--output-root", type=Path, required=True)
    ap.add_argument("--visits", type=int, default=50)
    ap.add_argument("--label", default="", help="a name for this measurement in the JSON")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.mkstemp(prefix="dashboards_server_", suffix=".log")[1])
    log = log_path.open("w")  # noqa: SIM115 (closed with the server)
    proc = subprocess.Popen(
        [sys.executable, "-m", "customer_intel.dashboards", "--output-root", str(args.output_root)]
        + ["--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=PROJECT_ROOT,
    )
    out: dict = {"label": args.label, "load_average_start": os.getloadavg()}
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(base + "/voila/tree", timeout=2)  # noqa: S310 (loopback)
                break
            except OSError:
                time.sleep(0.5)
        # every page's preheated kernel started and waiting, as for a visitor who comes after
        # the server has been up a while
        deadline = time.time() + 240
        while not serve.pool_ready(log_path.read_text()) and time.time() < deadline:
            time.sleep(0.5)
        out["pool_ready"] = serve.pool_ready(log_path.read_text())
        server = psutil.Process(proc.pid)
        out["settled"] = settle(server)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            out["cold"], out["warm"] = {}, {}
            out["cold_forms"], out["warm_forms"] = {}, {}
            for n in DASHBOARDS:  # each page first in a new profile, then again in it
                context = browser.new_context(viewport={"width": 1440, "height": 900})
                charts, forms, _ = visit(context, base, n)
                out["cold"][n], out["cold_forms"][n] = round(charts, 2), round(forms, 2)
                time.sleep(serve.FILL_DELAY + 1)
                settle(server)  # the page's preheated kernel is back, warmed up
                charts, forms, _ = visit(context, base, n)
                out["warm"][n], out["warm_forms"][n] = round(charts, 2), round(forms, 2)
                context.close()
            rows = []
            pages = list(DASHBOARDS)
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            for i in range(args.visits):
                seconds, _, _ = visit(context, base, pages[i % len(pages)])
                time.sleep(0.3)
                rows.append(
                    {
                        "seconds": round(seconds, 2),
                        "kernels": kernels(server),
                        "rss_mb": round(server.memory_info().rss / 1e6, 1),
                    }
                )
            context.close()
            browser.close()
        time.sleep(5)
        out["visits"] = rows
        out["after_visits"] = {
            "kernels_5s_later": kernels(server),
            "server_rss_mb": round(server.memory_info().rss / 1e6, 1),
        }
        out["load_average_end"] = os.getloadavg()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
        log_path.unlink(missing_ok=True)
    secs = [r["seconds"] for r in out.get("visits", [])]
    if secs:
        tenth = max(1, len(secs) // 10)
        out["summary"] = {
            "cold_median": statistics.median(out["cold"].values()),
            "warm_median": statistics.median(out["warm"].values()),
            "warm_forms_median": statistics.median(out["warm_forms"].values()),
            "visits_first_tenth_median": statistics.median(secs[:tenth]),
            "visits_last_tenth_median": statistics.median(secs[-tenth:]),
            "max_kernels_during_visits": max(r["kernels"] for r in out["visits"]),
        }
    print(json.dumps({k: out[k] for k in out if k != "visits"}, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"dashboards{'_' + args.label if args.label else ''}.json"
    target.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
