"""Stage kernels: warm-up imports taken from the notebook, and why a kernel died."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from customer_intel import kernels, static_images, warehouse

from conftest import make_notebook


def test_warm_up_runs_only_the_notebooks_import_statements(tmp_path):
    nb = make_notebook(
        tmp_path / "n.ipynb",
        "seed: int = 0  # seed",
        "from __future__ import annotations\nimport polars as pl\nx = 1",
        "from customer_intel import runs, warehouse\nif x:\n    import json\nprint(x)",
        "%time import os",  # a magic: not Python, skipped
        "import polars as pl",  # repeated: once
    )
    assert kernels.notebook_imports(nb) == (
        "import polars as pl\nfrom customer_intel import runs, warehouse"
    )


def test_only_a_notebook_with_static_figures_starts_the_figure_browser(tmp_path):
    plain = make_notebook(tmp_path / "a.ipynb", "x: int = 0  # x", "import json")
    assert kernels.figure_start_code(plain) == ""
    figures = make_notebook(
        tmp_path / "b.ipynb", "x: int = 0  # x", "import json", "run.show_figure(fig, 'f')"
    )
    code = kernels.figure_start_code(figures)
    assert "prepare()" in code
    compile(code, "begin", "exec")  # valid Python as sent to the kernel


@pytest.mark.e2e
def test_a_begun_kernel_has_the_figure_browser_up_and_stops_it_with_itself(tmp_path):
    """The warm-up imports only; begin() starts kaleido's Chromium; shutdown ends it."""
    import psutil

    if static_images.browser() is None:
        pytest.skip("no chromium")

    def browsers():
        kids = psutil.Process(kernel.pid).children(recursive=True)
        return [p for p in kids if "chrom" in p.name().lower()]

    nb = make_notebook(tmp_path / "n.ipynb", "x: int = 0  # x", "run.show_figure(fig, 'f')")
    kernel = kernels.StageKernel(nb, cwd=tmp_path)
    try:
        assert kernel.ready(timeout=120) and kernel.warm_error is None
        assert not browsers()  # not while another stage may be running
        share = tmp_path / "threads"
        kernel.begin(threads_file=share)  # both in one round trip
        found, deadline = [], time.time() + 60
        while not found and time.time() < deadline:
            found = browsers()
            time.sleep(0.2)
        assert found, "begin() started no browser"
        env = psutil.Process(kernel.pid).environ()  # the kernel's own, at its start
        assert warehouse.THREADS_FILE_ENV not in env
        assert (
            kernel._run_silently(
                f"assert __import__('os').environ[{warehouse.THREADS_FILE_ENV!r}] == {str(share)!r}"
            )
            is None
        )
        assert (
            kernel._run_silently(
                f"assert __import__('os').environ[{warehouse.THREADS_FILE_ENV!r}] == 'no'"
            )
            is not None
        ), "a failed assertion in the kernel is reported"
        # a DuckDB connection's spill folder and the browser's profile are the kernel's
        # temporary files: SIGKILL at shutdown runs none of its exit handlers, yet they go
        assert (
            kernel._run_silently(
                "import ibis, tempfile\n"
                "from customer_intel import warehouse\n"
                "warehouse.configure_duckdb(ibis.duckdb.connect(), '1GB')\n"
                f"assert tempfile.gettempdir() == {kernel.tmp_dir!r}"
            )
            is None
        )
        left = sorted(p.name for p in Path(kernel.tmp_dir).iterdir())
        spill = [n for n in left if n.startswith(warehouse.SPILL_DIR_PREFIX)]
        assert spill and len(left) >= 2, left  # and the browser's profile
    finally:
        kernel.shutdown()
    gone, alive = psutil.wait_procs(found, timeout=30)
    assert not alive, f"browser processes outlived the kernel: {alive}"
    assert not Path(kernel.tmp_dir).exists(), "the kernel's temporary files outlived it"


class _Dead:
    def __init__(self, sig):
        self.sig = sig

    def exit_signal(self):
        return self.sig


def test_death_reason_tells_the_out_of_memory_killer_from_other_kills(monkeypatch):
    monkeypatch.setattr(kernels, "oom_kills", lambda: 8)
    oom = kernels.death_reason(_Dead(signal.SIGKILL), 23 * 2**30, oom_before=7)
    assert oom.startswith("the system's out-of-memory killer ended the kernel (SIGKILL)")
    assert "peak RSS 23.0 GB" in oom
    other = kernels.death_reason(_Dead(signal.SIGKILL), 2**30, oom_before=8)
    assert "not by the out-of-memory killer" in other
    unknown = kernels.death_reason(_Dead(signal.SIGKILL), 2**30, oom_before=None)
    assert "most likely the system's out-of-memory killer" in unknown
    assert "SIGSEGV" in kernels.death_reason(_Dead(signal.SIGSEGV), 0, oom_before=8)
    assert kernels.death_reason(_Dead(None), 0).startswith("the kernel died")


def _nice_of_threads(pid):
    import os

    import psutil

    return {os.getpriority(os.PRIO_PROCESS, t.id) for t in psutil.Process(pid).threads()}


@pytest.mark.e2e
def test_a_kernel_warming_in_the_background_gets_its_priority_back_when_its_stage_starts(
    tmp_path,
):
    """Warm-up imports take the cycles the running stages leave; the stage runs at full priority,
    every thread of it (a niceness is per thread on Linux)."""
    import os

    if not kernels.priority_can_return():
        pytest.skip("this process may not lower a niceness (no CAP_SYS_NICE)")
    normal = os.getpriority(os.PRIO_PROCESS, 0)
    nb = make_notebook(tmp_path / "n.ipynb", "x: int = 0  # x", "import threading")
    kernel = kernels.StageKernel(nb, cwd=tmp_path, background=True)
    try:
        assert kernel.ready(timeout=120) and kernel.warm_error is None
        nicer = min(19, normal + kernels.BACKGROUND_NICE)
        assert _nice_of_threads(kernel.pid) == {nicer}  # every thread the kernel started
        kernel.foreground()
        assert _nice_of_threads(kernel.pid) == {normal}
        # a thread the stage starts now runs at the normal priority too
        code = (
            "import os, threading\n"
            "seen = []\n"
            "t = threading.Thread(target=lambda: seen.append("
            "os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))\n"
            f"t.start(); t.join(); assert seen == [{normal}], seen"
        )
        assert kernel._run_silently(code) is None
    finally:
        kernel.shutdown()
    plain = kernels.StageKernel(nb, cwd=tmp_path)  # a stage's own kernel: never made nicer
    try:
        assert plain.ready(timeout=120)
        assert _nice_of_threads(plain.pid) == {normal}
    finally:
        plain.shutdown()


def test_priority_can_return_leaves_this_process_as_it_was():
    import os

    before = os.getpriority(os.PRIO_PROCESS, 0)
    kernels.priority_can_return.cache_clear()
    assert isinstance(kernels.priority_can_return(), bool)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


def test_memory_lists_the_kernels_children_at_most_once_a_second(monkeypatch):
    """psutil lists children by reading every process of the machine: the watcher's five
    samples a second re-read only the known processes' memory between two listings."""
    import os
    import subprocess
    import sys

    import psutil

    kernel = object.__new__(kernels.StageKernel)  # this process stands in for a kernel
    kernel.pid, kernel._proc, kernel._children = os.getpid(), None, []
    kernel._children_at = float("-inf")
    listings = []
    real = psutil.Process.children
    monkeypatch.setattr(
        psutil.Process, "children", lambda self, **kw: listings.append(1) or real(self, **kw)
    )
    clock = [100.0]
    monkeypatch.setattr(kernels.time, "monotonic", lambda: clock[0])
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        total, children = kernel.memory()
        assert len(listings) == 1 and children > 0 and total > children  # the child counts
        for _ in range(4):
            clock[0] += kernels.CHILDREN_EVERY_S / 5
            assert kernel.memory()[1] > 0
        assert len(listings) == 1
        clock[0] += kernels.CHILDREN_EVERY_S / 5
        kernel.memory()
        assert len(listings) == 2  # a second later: listed again (a new child is found)
    finally:
        child.stdin.close()
        child.wait()
    clock[0] += kernels.CHILDREN_EVERY_S
    assert kernel.memory()[1] == 0  # the child ended: listed again, no longer counted
