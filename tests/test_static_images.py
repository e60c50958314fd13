"""Static images: the run's one figure service draws what a kernel's own browser would."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time

import numpy as np
import plotly.graph_objects as go
import psutil
import pytest
from PIL import Image

from customer_intel import static_images

pytestmark = pytest.mark.skipif(
    static_images.browser() is None and not os.path.exists("/usr/bin/chromium"),
    reason="no chromium to draw with",
)


def _figure() -> str:
    rng = np.random.default_rng(0)
    fig = go.Figure(go.Scatter(x=rng.normal(size=200), y=rng.normal(size=200), mode="markers"))
    fig.update_layout(title="two hundred points")
    return fig.to_json()


def _pixels(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _browsers() -> list[psutil.Process]:
    kids = psutil.Process().children(recursive=True)
    return [p for p in kids if "chrom" in p.name().lower()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_child(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``code`` in a child process reading a figure's JSON on stdin (a timeout: no hang)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        input=_figure(),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_the_service_draws_the_same_image_as_the_kernels_own_browser():
    fig = _figure()
    here = static_images.draw(fig, width=640, height=400)
    static_images.stop_browser()
    with static_images.Service() as service:
        assert service.url.startswith("http://127.0.0.1:")
        served = static_images.request(service.url, fig, width=640, height=400)
        assert _browsers(), "the service draws in a browser of its own process"
    assert _pixels(served).shape == (400, 640, 3)
    assert np.array_equal(_pixels(served), _pixels(here))
    gone, alive = psutil.wait_procs(_browsers(), timeout=30)
    assert not alive, f"the browser outlived the service: {alive}"


def test_the_service_starts_its_browser_when_asked_once_or_at_the_first_figure():
    """The runner asks as the first stage that draws starts: a browser starting with the run
    slowed the first stage's kernel start."""
    static_images.stop_browser()
    with static_images.Service() as service:
        time.sleep(1.0)
        assert not _browsers(), "the browser started before anyone asked"
        service.start_browser()
        service.start_browser()  # a second call starts nothing more
        deadline = time.monotonic() + 60
        while not _browsers() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _browsers()
        png = static_images.request(service.url, _figure(), width=320, height=200)
    assert _pixels(png).shape == (200, 320, 3)
    gone, alive = psutil.wait_procs(_browsers(), timeout=30)
    assert not alive, f"the browser outlived the service: {alive}"
    with static_images.Service() as service:  # never asked: the first figure starts it
        assert _pixels(static_images.request(service.url, _figure())).shape == (560, 1000, 3)


def test_a_kernel_under_the_runner_draws_through_the_service_and_starts_no_browser(tmp_path):
    """The child has no browser of its own (BROWSER_PATH points nowhere): its PNG can only
    come from the service named in its environment, and it starts no Chromium."""
    code = (
        "import sys, psutil\n"
        "from customer_intel import static_images\n"
        "static_images.prepare()\n"
        "png = static_images.png(sys.stdin.read())\n"
        "kids = psutil.Process().children(recursive=True)\n"
        "print(len(png), sum('chrom' in p.name().lower() for p in kids))\n"
    )
    with static_images.Service() as service:
        env = {
            **os.environ,
            static_images.SERVICE_ENV: service.url,
            "BROWSER_PATH": str(tmp_path / "no-such-chromium"),
        }
        out = _run_child(code, env)
    assert out.returncode == 0, out.stderr
    size, browsers = map(int, out.stdout.split())
    assert size > 1000 and browsers == 0


def test_a_kernel_whose_service_is_gone_draws_with_its_own_browser(monkeypatch):
    monkeypatch.setenv(static_images.SERVICE_ENV, f"http://127.0.0.1:{_free_port()}/png")
    with pytest.raises(static_images.ServiceUnreachable):
        static_images.request(os.environ[static_images.SERVICE_ENV], _figure())
    try:
        png = static_images.png(_figure(), width=320, height=200)
        assert _pixels(png).shape == (200, 320, 3)
    finally:
        static_images.stop_browser()


def test_a_figure_the_service_cannot_draw_raises_with_its_reason():
    with static_images.Service() as service:
        with pytest.raises(RuntimeError, match="could not draw it: JSONDecodeError"):
            static_images.request(service.url, "{not json")
        # and it still draws the next one
        assert _pixels(static_images.request(service.url, _figure())).shape == (560, 1000, 3)


def test_long_category_labels_are_not_cut_at_the_images_edge():
    """The theme's axes widen the margin for their tick labels (segment names were cut)."""
    from customer_intel.plots import theme

    labels = ["Champions", "Hibernating customers", "Need attention", "Lost"]
    fig = theme.styled(go.Figure(go.Bar(x=[5, 3, 2, 1], y=labels, orientation="h")))
    try:
        px = _pixels(static_images.draw(fig.to_json(), width=600, height=400))
    finally:
        static_images.stop_browser()
    dark = px.min(axis=2) < 128  # text is drawn dark on white
    rows_with_text = np.flatnonzero(dark.any(axis=1))
    assert rows_with_text.size, "no labels drawn"
    assert not dark[:, :2].any(), "a label touches the left edge: it is cut"


def test_a_service_without_a_browser_answers_each_figure_with_the_reason(tmp_path):
    """The browser starts in the background: where there is none, a request neither hangs
    nor loses the reason (a child process with a timeout, so a hang fails the test)."""
    code = (
        "import sys\n"
        "from customer_intel import static_images\n"
        "with static_images.Service() as service:\n"
        "    try:\n"
        "        static_images.request(service.url, sys.stdin.read())\n"
        "    except RuntimeError as e:\n"
        "        print(e)\n"
    )
    env = {**os.environ, "BROWSER_PATH": str(tmp_path / "no-such-chromium")}
    out = _run_child(code, env)
    assert out.returncode == 0, out.stderr
    assert "could not draw it: RuntimeError: no Chromium to draw static images" in out.stdout


def test_figures_drawn_one_after_another_equal_those_of_a_fresh_page(monkeypatch):
    """The kept page (no reload between figures) draws what kaleido's fresh page draws."""
    import asyncio

    import kaleido
    from kaleido._kaleido_tab import _tab

    reloads = []
    stock_reload = _tab._KaleidoTab.reload

    async def counted(self):
        reloads.append(1)
        return await stock_reload(self)

    monkeypatch.setattr(_tab._KaleidoTab, "reload", counted)
    rng = np.random.default_rng(1)
    figures = [
        go.Figure(go.Bar(x=["a", "b", "c"], y=[3, 1, 2])).update_layout(title="bars"),
        go.Figure(go.Scattergl(x=rng.normal(size=500), y=rng.normal(size=500), mode="markers")),
        go.Figure(go.Heatmap(z=rng.normal(size=(8, 8)))).update_layout(title="heat"),
    ]
    try:
        kept = [static_images.draw(f.to_json()) for f in [*figures, figures[0]]]
        assert reloads == []  # one page for all of them
        opts = {"format": "png", "width": static_images.WIDTH, "height": static_images.HEIGHT}
        fresh = [asyncio.run(kaleido.calc_fig(f.to_dict(), opts=opts)) for f in figures]
        assert kept == [*fresh, fresh[0]]
        # a figure the page rejects reloads it, and the next one is drawn as before
        reloads.clear()  # kaleido's own fresh pages above reloaded theirs
        with pytest.raises(kaleido.errors.KaleidoError, match="non-array figure data"):
            static_images.draw('{"data": "x"}')
        assert len(reloads) == 1
        assert static_images.draw(figures[0].to_json()) == fresh[0]
    finally:
        static_images.stop_browser()
