"""``python -m customer_intel.dashboards``: serve the dashboards with Voila on 127.0.0.1.

What makes the server safe to leave running for a day of visits:

- **One preheated kernel per page, waiting for its visitor.** A kernel start and the page's
  imports took 1.5 s of every visit; Voila keeps :data:`POOL_SIZE` kernel per page started
  (refilled :data:`FILL_DELAY` s after a visit took one), and each runs its page's notebook up
  to :func:`customer_intel.dashboards.pages.base.wait_for_visit`, the imports done. There it
  waits until a visit arrives and then reads the run and the visit's filters (the URL), so a
  preheated page is never rendered for filters nobody asked for. A visit that finds the pool
  empty gets a kernel of its own, as before. Kernels talk to the server over Unix sockets
  (``transport=ipc``): a kernel that died at start on a TCP port another process had taken
  meanwhile (``ZMQError: Address already in use``) was handed to a visitor, who waited
  forever.
- **A closed tab shuts its kernel down.** Voila's page sends ``POST /voila/api/shutdown/<id>``
  on ``beforeunload`` with the ``_xsrf`` cookie as the form's token; Voila never set that
  cookie, so every shutdown was refused (403). :class:`XsrfCookieVoila`'s page handler sets
  it on every page response; XSRF checks stay on.
- **A closed tab's kernel stops when its connection closes**, beacon or not: a tab that
  closes (or a browser that crashes) closes the page's websocket to its kernel, and
  :class:`ClosingKernelManager` shuts a kernel down :data:`CLOSE_GRACE` seconds after its last
  connection closed (Chromium drops the shutdown beacon of a tab closed without its unload
  handlers, e.g. Playwright's ``page.close()``; the kernel then waited for culling).
- **A page without a form keeps no kernel.** Its outputs are all HTML, written into the page
  (the template), so it loads no Voila app and nothing ever connects to its kernel:
  :class:`XsrfCookieVoila`'s page handler shuts that kernel down :data:`CLOSE_GRACE`
  seconds after the page is sent, once the browser has drawn it (before, it lived until its
  tab closed, or a minute when the tab closed before the app had connected).
- **Kernels nobody is connected to are culled** after a minute (a page whose browser never
  connected to its kernel): ``cull_idle_timeout`` / ``cull_interval`` below. A kernel with an
  open tab (connected) or a page still executing (busy) is kept.
- **Offline**: a local template (:file:`voila/index.html.j2`) without Font Awesome from a CDN,
  plotly.js served by this server (:data:`customer_intel.dashboards.present.PLOTLY_JS`), charts
  without the
  "send to cloud" button (:data:`customer_intel.dashboards.present.PLOTLY_CONFIG`).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from customer_intel.dashboards.data import DASHBOARDS, ENV_OUTPUT_ROOT, latest_run
from customer_intel.paths import DASHBOARDS_DIR, OUTPUTS_DIR

TEMPLATE = "customer_intel"
TEMPLATE_SOURCE = Path(__file__).with_name("voila")
#: a kernel with no connection and no activity for this long is shut down (seconds), checked
#: every CULL_INTERVAL
CULL_IDLE_TIMEOUT = 60
CULL_INTERVAL = 15
#: JupyterLab extensions the pages do not load (see :func:`voila_command`)
EXTENSIONS_NOT_LOADED = ("jupyterlab-plotly", "jupyterlab_pygments")
#: preheated kernels per page, and the seconds after a visit took one before another starts
#: (not at once: its start would take the CPU the visit's page is being drawn with)
POOL_SIZE = 1
FILL_DELAY = 3.0
#: a kernel whose last connection closed is shut down this many seconds later unless a
#: connection came back (a websocket that reconnects after a network blip)
CLOSE_GRACE = 2.0
#: what the template writes for an output only Voila's app renders (a widget: a form)
APP_OUTPUT = "application/vnd.voila.cell-output+json"
_KERNEL_ID = re.compile(r'"kernelId": "([0-9a-f-]{36})"')


def _closing_kernel_manager() -> type:
    """:class:`ClosingKernelManager`, made on first use (jupyter_server loads with Voila)."""
    import asyncio

    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

    class ClosingKernelManager(AsyncMappingKernelManager):
        """Shut a kernel down :data:`CLOSE_GRACE` s after its last connection closed.

        Voila starts one kernel per visit, and a page's only connection to it is its
        websocket: when that closes for good the visit is over. A kernel that never had a
        connection is left to culling (its page may still be connecting).
        """

        def notify_disconnect(self, kernel_id: str) -> None:
            super().notify_disconnect(kernel_id)
            if self._kernel_connections.get(kernel_id, 1) <= 0:
                asyncio.get_running_loop().call_later(
                    CLOSE_GRACE, lambda: asyncio.ensure_future(self._close_if_unused(kernel_id))
                )

        async def _close_if_unused(self, kernel_id: str) -> None:
            if kernel_id in self and self._kernel_connections.get(kernel_id, 1) <= 0:
                self.log.info("Kernel %s: its page closed; shutting it down", kernel_id)
                try:
                    await self.shutdown_kernel(kernel_id)
                except KeyError:  # shut down meanwhile (the page's beacon arrived)
                    pass

    return ClosingKernelManager


def _xsrf_cookie_voila() -> type:
    """:class:`XsrfCookieVoila`, made on first use (Voila imports the Jupyter server stack)."""
    import tornado.web
    from voila.app import Voila
    from voila.tornado.handler import TornadoVoilaHandler

    class XsrfCookieVoilaHandler(TornadoVoilaHandler):
        """Voila's page handler: sets the ``_xsrf`` cookie; stops the kernel of a formless page.

        Reading ``xsrf_token`` makes tornado set the cookie when the request has none; the
        page's shutdown beacon then carries the token and is accepted. (Voila's
        ``prelaunch_hook`` could do it per visit, but Voila refuses it with preheated kernels.)
        A page none of whose outputs needs Voila's app (:data:`APP_OUTPUT`) loads no app and
        nothing will connect to its kernel: it is shut down :data:`CLOSE_GRACE` s after the page
        is sent.
        """

        @tornado.web.authenticated
        async def get(self, path: str | None = None) -> None:
            _ = self.xsrf_token
            kernel_id, needs_app = None, False
            async for html in self.get_generator(path=path):
                if kernel_id is None and (m := _KERNEL_ID.search(html)):
                    kernel_id = m.group(1)
                needs_app = needs_app or APP_OUTPUT in html
                self.write(html)
                self.flush()
            if kernel_id is not None and not needs_app:
                # the visitor has the page; the kernel goes once the browser has drawn it (its
                # shutdown would take CPU from the drawing on a small machine)
                await self.finish()
                await asyncio.sleep(CLOSE_GRACE)
                self.log.info("Kernel %s: its page has no form; shutting it down", kernel_id)
                await self.kernel_manager.shutdown_kernel(kernel_id)

    class XsrfCookieVoila(Voila):
        """Voila serving its pages with :class:`XsrfCookieVoilaHandler`."""

        def init_handlers(self) -> list:
            return [
                (h[0], XsrfCookieVoilaHandler, *h[2:])
                if len(h) > 1 and h[1] is TornadoVoilaHandler
                else h
                for h in super().init_handlers()
            ]

    return XsrfCookieVoila


def template_root(into: Path) -> Path:
    """A Jupyter data dir holding the ``customer_intel`` Voila template (returns ``into``).

    The template files and ``static/`` (with the pages' plotly.js) are the package's, copied, not
    linked: tornado refuses a static file whose real path is outside the root.
    """
    target = into / "voila" / "templates" / TEMPLATE
    shutil.copytree(TEMPLATE_SOURCE, target, dirs_exist_ok=True)
    return into


def voila_command(*, host: str, port: int) -> list[str]:
    """The Voila arguments: the dashboards folder, sources stripped, our template, culling."""
    return [
        str(DASHBOARDS_DIR),
        "--no-browser",
        f"--Voila.ip={host}",
        f"--port={port}",
        "--strip_sources=True",
        f"--template={TEMPLATE}",
        "--preheat_kernel=True",
        f"--pool_size={POOL_SIZE}",
        f"--VoilaKernelManager.fill_delay={FILL_DELAY}",
        "--KernelManager.transport=ipc",
        "--VoilaConfiguration.file_allowlist=['.*\\.(png|jpg|gif|svg)']",
        "--VoilaConfiguration.show_tracebacks=False",
        # not loaded by the pages: jupyterlab-plotly's extension is a second plotly.js (4.8 MB
        # of script per visit; the charts draw with the server's own copy), pygments
        # highlights code, and no code is shown
        f"--VoilaConfiguration.extension_denylist={list(EXTENSIONS_NOT_LOADED)!r}",
        "--ServerApp.disable_check_xsrf=False",
        f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_TIMEOUT}",
        f"--MappingKernelManager.cull_interval={CULL_INTERVAL}",
        "--MappingKernelManager.cull_connected=False",
        "--MappingKernelManager.cull_busy=False",
    ]


def pool_ready(log: str) -> bool:
    """Whether the server's log says every page's preheated kernel has started.

    (Voila logs "Kernel pool of <page> is filled" once a page's pool is full; its kernel then
    needs a moment more to reach :func:`~customer_intel.dashboards.pages.base.wait_for_visit`.)
    """
    return all(f"Kernel pool of {page}.ipynb is filled" in log for page in DASHBOARDS)


def urls(host: str, port: int) -> dict[str, str]:
    """One URL per dashboard."""
    return {name: f"http://{host}:{port}/voila/render/{name}.ipynb" for name in DASHBOARDS}


def main(argv: list[str] | None = None) -> int:
    """Serve the dashboards of the last good run (this process becomes the Voila server)."""
    ap = argparse.ArgumentParser(prog="python -m customer_intel.dashboards")
    ap.add_argument("--output-root", type=Path, default=OUTPUTS_DIR)
    ap.add_argument("--port", type=int)
    args = ap.parse_args(argv)
    run = latest_run(args.output_root)
    params: dict[str, Any] = {}
    if run is not None:
        resolved = run / "params" / "resolved.yaml"
        if resolved.exists():
            params = yaml.safe_load(resolved.read_text()).get("dashboards", {}) or {}
    host = params.get("host", "127.0.0.1")
    port = args.port or int(params.get("port", 8866))
    print(
        "No successful run yet: the dashboards will say so (make one with `make run`)."
        if run is None
        else f"Serving the run finished {run.name[:8]}"
    )
    for name, url in urls(host, port).items():
        print(f"  {name:<12} {url}")
    sys.stdout.flush()

    data_dir = Path(tempfile.mkdtemp(prefix="customer_intel_voila_"))
    atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    template_root(data_dir)
    os.environ[ENV_OUTPUT_ROOT] = str(args.output_root.resolve())  # the kernels inherit it
    os.environ["CUSTOMER_INTEL_PLOTLY_RENDERER"] = "none"  # see customer_intel.plots.theme
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        p for p in (str(data_dir), os.environ.get("JUPYTER_PATH", "")) if p
    )
    from traitlets.config import Config

    config = Config()
    config.VoilaConfiguration.multi_kernel_manager_class = _closing_kernel_manager()
    # in this process (not a child): a signal to it reaches the server, which stops its kernels
    _xsrf_cookie_voila().launch_instance(argv=voila_command(host=host, port=port), config=config)
    return 0
