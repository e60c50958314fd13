"""Static PNG copies of plotly figures, drawn by kaleido (>= 1) in a headless Chromium.

An executed notebook shows each figure's PNG after the interactive figure, so it reads in a
viewer that runs no JavaScript. A Chromium start costs seconds of CPU (4.4 s on an idle
2-core machine), each figure after it about half a second. A kernel on its own (a notebook in
JupyterLab) starts one browser on first use and keeps it. Under the runner, every stage kernel
started its own: eight browser starts in a run of the 1M sample, beside the stages' work on
two cores. So the runner draws for the whole run with one browser: :class:`Service` serves
PNGs on 127.0.0.1 and the stage kernels find it under :data:`SERVICE_ENV`. A kernel that
cannot reach the service (the runner is gone) draws with its own browser.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: the environment variable naming the runner's figure service (its URL) in a stage kernel
SERVICE_ENV = "CUSTOMER_INTEL_FIGURE_SERVICE"
#: the size of every static image, in CSS pixels
WIDTH, HEIGHT = 1000, 560
#: how long a kernel waits for the service to draw one figure (a queue of large ones included)
REQUEST_TIMEOUT_S = 600

_BROWSER: list[bool] = []  # [True] while this process's browser runs
_BROWSER_LOCK = threading.Lock()


class ServiceUnreachable(OSError):
    """The figure service named in the environment does not answer (the runner has gone)."""


def png(figure_json: str, *, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """A figure (``fig.to_json()``) as PNG bytes: by the run's service if any, else here."""
    url = os.environ.get(SERVICE_ENV)
    if url:
        with contextlib.suppress(ServiceUnreachable):
            return request(url, figure_json, width=width, height=height)
    return draw(figure_json, width=width, height=height)


def draw(figure_json: str, *, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """Draw a figure in this process's browser (started on first use, kept until exit)."""
    import plotly.io as pio

    start_browser()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "kopts ignored when using a server"
        # the JSON comes from a figure plotly built and validated already
        return pio.to_image(
            json.loads(figure_json), format="png", width=width, height=height, validate=False
        )


def prepare() -> None:
    """Get ready to draw as a stage starts: start this process's browser unless a service draws.

    The browser starts in kaleido's server thread, so this returns before it is ready and its
    start-up overlaps the stage's first cells.
    """
    if not os.environ.get(SERVICE_ENV):
        start_browser()


def start_browser() -> None:
    """Start this process's browser if it is not running; returns before it is ready."""
    import kaleido

    if "BROWSER_PATH" not in os.environ and shutil.which("chromium"):
        os.environ["BROWSER_PATH"] = shutil.which("chromium") or ""
    with _BROWSER_LOCK:
        if _BROWSER:
            return
        if browser() is None:
            # kaleido's server thread dies on a missing browser and every later call then waits
            # for it forever: a run would hang instead of skipping the image
            raise RuntimeError(
                "no Chromium to draw static images: install it (Debian: apt-get install -y "
                "chromium), point BROWSER_PATH at one, or set static_images: false"
            )
        _keep_the_page_between_figures()
        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(stop_browser)
        _BROWSER.append(True)


def _keep_the_page_between_figures() -> None:
    """Make kaleido's server draw each figure in the page the last one left, without a reload.

    Kaleido reloads its page (plotly.js with it) after every figure: 0.25 of the 0.31 s a bar
    chart took, Chromium CPU beside the stages. The 38 figures of a 1M run drew in 8.3 s
    instead of 17.0 s without it, every PNG byte for byte the same (tested: figures drawn in a
    row equal those of a fresh page). Kaleido has no option for it, so its server's class is
    swapped for a subclass that puts a tab back without the reload, and reloads only after a
    figure that failed. With a kaleido that lacks these names its own behaviour stays.
    """
    import kaleido
    from kaleido import _sync_server

    stock = kaleido.Kaleido
    if getattr(_sync_server, "Kaleido", None) is not stock or not all(
        hasattr(stock, name) for name in ("_return_kaleido_tab", "_get_kaleido_tab", "_render_task")
    ):
        return

    class KeepPage(stock):  # type: ignore[misc, valid-type]
        async def _return_kaleido_tab(self, tab: Any) -> None:
            await self.tabs_ready.put(tab)

        async def _render_task(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super()._render_task(*args, **kwargs)
            except Exception:
                tab = await self._get_kaleido_tab()  # a failed figure may leave any state
                try:
                    await tab.reload()
                finally:
                    await self.tabs_ready.put(tab)
                raise

    _sync_server.Kaleido = KeepPage


def browser() -> str | None:
    """The browser kaleido would start, or None if there is none.

    ``BROWSER_PATH`` if it is an executable, else the Chromium-based browser choreographer
    finds (its own download, then the PATH).
    """
    from choreographer.browsers.chromium import Chromium

    if path := os.environ.get("BROWSER_PATH"):
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return Chromium.find_browser(skip_local=False)


def stop_browser() -> None:
    """Stop the browser :func:`start_browser` started (idempotent)."""
    with _BROWSER_LOCK:
        if _BROWSER:
            import kaleido

            kaleido.stop_sync_server(silence_warnings=True)
            _BROWSER.clear()


# -- the runner's service -------------------------------------------------------------------
def request(url: str, figure_json: str, *, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """Ask the service at ``url`` for a figure's PNG.

    Raises :class:`ServiceUnreachable` when nothing answers there, ``RuntimeError`` with the
    service's reason when it could not draw the figure.
    """
    query = urllib.parse.urlencode({"width": width, "height": height})
    req = urllib.request.Request(
        f"{url}?{query}",
        data=figure_json.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    # no proxy: the service is on loopback, whatever HTTP_PROXY says
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=REQUEST_TIMEOUT_S) as resp:
            return resp.read()
    except urllib.error.HTTPError as e:
        reason = e.read().decode(errors="replace")
        raise RuntimeError(f"the run's figure service could not draw it: {reason}") from e
    except (urllib.error.URLError, ConnectionError) as e:
        raise ServiceUnreachable(f"no figure service at {url}: {e}") from e


class Service:
    """One browser drawing the PNGs of a whole run, served on 127.0.0.1 (a context manager).

    ``url`` is where stage kernels post a figure's JSON (:func:`request`); figures are drawn
    one at a time in this process's browser, which starts in a background thread when
    :meth:`start_browser` is first called (importing kaleido and starting Chromium would
    otherwise hold up the caller), or with the first figure, and stops with the service, so
    no browser outlives the run.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # kaleido's sync server takes one caller at a time
        self._start_lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}/png"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="figure-service", daemon=True
        )
        self._starter = threading.Thread(
            target=self._start_browser, name="figure-browser", daemon=True
        )

    def __enter__(self) -> Service:
        self._thread.start()
        return self

    def start_browser(self) -> None:
        """Start the browser in the background, once; returns at once."""
        with self._start_lock:
            if self._starter.ident is None:
                self._starter.start()

    @staticmethod
    def _start_browser() -> None:
        # no browser: each figure's request then answers with the reason (draw raises it)
        with contextlib.suppress(Exception):
            start_browser()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and stop the browser (idempotent)."""
        if self._starter.is_alive():
            self._starter.join()  # a browser started after the stop below would outlive us
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        stop_browser()

    def _draw(self, figure_json: str, width: int, height: int) -> bytes:
        with self._lock:
            return draw(figure_json, width=width, height=height)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                try:
                    width = int(query.get("width", [WIDTH])[0])
                    height = int(query.get("height", [HEIGHT])[0])
                    body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                    data = service._draw(body.decode(), width, height)
                except Exception as e:  # noqa: BLE001 (the kernel reports it and goes on)
                    self._reply(500, "text/plain", f"{type(e).__name__}: {e}".encode())
                else:
                    self._reply(200, "image/png", data)

            def _reply(self, code: int, kind: str, data: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass  # one line per figure would flood the run's output

        return Handler
