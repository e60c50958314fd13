"""Jupyter kernels for the runner: started ahead, warmed with the notebook's imports, watched.

Every stage notebook runs in a fresh kernel (state never leaks between stages), but starting a
kernel and importing Polars, DuckDB, Ibis, scikit-learn and plotly costs seconds that the
stage's own work does not need to wait for. :class:`StageKernel` starts a kernel and, in the
background, runs exactly the ``import`` statements of the notebook it will execute (found with
:mod:`ast`; no other code), silently and without touching the execution count; the runner
starts the next stage's kernel while the current stage is still running and hands it to
papermill (``km=``) when its turn comes.

A kernel warming for a stage that has not started runs at a lower CPU priority
(:data:`BACKGROUND_NICE`) where its priority can be given back when the stage starts: on two
cores every stage is CPU-bound, and the imports of the next stage's kernel (seconds of CPU)
should take the cycles the running stages leave, not slow them down.

It also knows the kernel's process, so the runner measures that stage's own peak memory (a
warming kernel for the next stage is another process, not counted) and can say why a kernel
died: a kernel killed by SIGKILL while the machine's memory was short was, in practice,
killed by the out-of-memory killer.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import nbformat
import psutil
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync

from customer_intel.paths import claim_temp_dir

#: each stage kernel's folder (its sockets, connection file and, in ``tmp/``, its temporary
#: files) starts so, in the system's temporary folder
KERNEL_DIR_PREFIX = "customer_intel_kernel_"


def notebook_imports(notebook: Path) -> str:
    """The ``import`` / ``from ... import`` statements of a notebook's code cells, as code.

    Only top-level import statements are taken (nothing else runs in a warm-up); cells that
    are not valid Python (magics) are skipped.
    """
    nb = nbformat.read(notebook, as_version=4)
    lines: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom) and not (
                isinstance(node, ast.ImportFrom) and node.module == "__future__"
            ):
                statement = ast.unparse(node)
                if statement not in lines:
                    lines.append(statement)
    return "\n".join(lines)


#: a notebook that saves static figures (``show_figure`` saves one unless told not to)
_STATIC_FIGURES = re.compile(r"\.show_figure\(|static=True")

#: run when the stage starts, for a notebook that saves static figures: the figure browser
#: starts in the background unless the run's figure service draws (nothing is left in the
#: notebook's namespace)
_START_FIGURE_SERVER = """
try:
    __import__("customer_intel.static_images", fromlist=["_"]).prepare()
except Exception:
    pass  # no browser: the notebook's first static figure says so
"""


#: seconds between two listings of a kernel's child processes (:meth:`StageKernel.memory`)
CHILDREN_EVERY_S = 1.0

#: how much nicer than the runner a kernel warming for a later stage runs (:class:`StageKernel`)
BACKGROUND_NICE = 10


@functools.cache
def priority_can_return() -> bool:
    """Whether this process may make a thread nicer and then give it its priority back.

    Lowering a niceness needs CAP_SYS_NICE or a large enough RLIMIT_NICE; without either, a
    kernel made nicer for its warm-up would keep a low priority through its whole stage. Tried
    on a short-lived thread of its own, so nothing else changes.
    """
    result: list[bool] = []

    def attempt() -> None:
        tid = threading.get_native_id()
        normal = os.getpriority(os.PRIO_PROCESS, tid)
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, normal + 1))
            os.setpriority(os.PRIO_PROCESS, tid, normal)
            result.append(os.getpriority(os.PRIO_PROCESS, tid) == normal)
        except OSError:
            result.append(False)

    t = threading.Thread(target=attempt, name="nice-probe")
    t.start()
    t.join()
    return bool(result and result[0])


def set_niceness(pid: int, nice: int) -> None:
    """Set the niceness of every thread of process ``pid`` and of its child processes.

    Linux keeps a niceness per thread, and a new thread takes its creator's: a kernel's threads
    started during its warm-up (ZeroMQ, thread pools) are set one by one. Twice, for a thread
    started by one not yet set. Processes or threads that end meanwhile are skipped.
    """
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        return
    for _ in range(2):
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                for thread in proc.threads():
                    with contextlib.suppress(OSError):
                        os.setpriority(os.PRIO_PROCESS, thread.id, nice)


def figure_start_code(notebook: Path) -> str:
    """Code that starts the figure browser, for a notebook that saves static figures; else "".

    kaleido's Chromium takes seconds of CPU to start. Under the runner, the run's figure
    service draws (:class:`customer_intel.static_images.Service`) and this does nothing; a
    kernel on its own starts its browser in the background as the stage starts, so it is up by
    the first figure; started during the previous stage's warm-up, with
    that stage's kernel and the next one's imports, it slowed the stage running then (20M
    events: ingest 35 s alone, 50 s beside two starting browsers and the next imports).
    """
    return _START_FIGURE_SERVER if _STATIC_FIGURES.search(Path(notebook).read_text()) else ""


def engine_threads_code(threads_file: Path | None) -> str:
    """Code that makes a kernel's DuckDB connections follow ``threads_file``; "" for None.

    Run in the kernel, it sets :data:`customer_intel.warehouse.THREADS_FILE_ENV` there (named
    through the module, so the runner does not import the engine libraries). The runner
    writes the stage's share of the cores into the file as stages start and end.
    """
    if threads_file is None:
        return ""
    return (
        "__import__('os').environ[__import__('customer_intel.warehouse', fromlist=['_'])"
        f".THREADS_FILE_ENV] = {str(threads_file)!r}"
    )


class StageKernel:
    """A kernel started for one stage notebook, warmed with that notebook's imports.

    Parameters
    ----------
    notebook
        The notebook the kernel will execute (its imports are run ahead).
    cwd
        Working directory of the kernel.
    env
        Extra environment variables for the kernel process.
    kernel_name
        Jupyter kernel spec name.
    warm
        Run the notebook's imports ahead.
    background
        The stage starts later: the kernel starts and warms :data:`BACKGROUND_NICE` nicer than
        this process (where :func:`priority_can_return`) until :meth:`foreground`.
    temp_root
        Where the kernel's folder goes (default: the system's temporary folder).
    """

    def __init__(
        self,
        notebook: Path,
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
        kernel_name: str = "python3",
        warm: bool = True,
        background: bool = False,
        temp_root: str | None = None,
    ) -> None:
        self.notebook = Path(notebook)
        # IPC sockets (files beside the connection file), not TCP ports: no port can be taken
        # between choosing and binding it ("Address already in use"), and nothing listens on
        # the network
        self._ipc_dir = tempfile.mkdtemp(prefix=KERNEL_DIR_PREFIX, dir=temp_root)
        # the kernel's temporary files (DuckDB's spill folder, the figure browser's profile)
        # go in a folder of ours: shutdown kills the kernel, so its own exit handlers never
        # remove them (they piled up in /tmp, one DuckDB folder per stage run)
        self.tmp_dir = os.path.join(self._ipc_dir, "tmp")
        os.mkdir(self.tmp_dir)
        # the async manager, as nbclient (papermill) expects: with a blocking client its wait
        # for a reply blocks the event loop, and a dead kernel is never noticed
        # the connection file (it holds the kernel's key) beside the sockets, not in /tmp
        self.km = AsyncKernelManager(
            kernel_name=kernel_name,
            transport="ipc",
            ip=os.path.join(self._ipc_dir, "ipc"),
            connection_file=os.path.join(self._ipc_dir, "connection.json"),
        )
        run_sync(self.km.start_kernel)(
            cwd=str(cwd), env={**os.environ, **(env or {}), "TMPDIR": self.tmp_dir}
        )
        process = getattr(self.km.provisioner, "process", None)
        self.pid: int | None = getattr(process, "pid", None)
        if self.pid is not None:  # removed after a killed runner by its next run
            claim_temp_dir(self._ipc_dir, self.pid)
        self._popen = process
        self._proc: psutil.Process | None = None  # the kernel process, for memory()
        self._children: list[psutil.Process] = []  # its child processes when last listed
        self._children_at = -math.inf  # time.monotonic() of that listing
        self._normal_nice = os.getpriority(os.PRIO_PROCESS, 0)
        self._background = background and self.pid is not None and priority_can_return()
        if self._background:
            # just started: its main thread alone, whose niceness the threads it starts take
            set_niceness(self.pid, min(19, self._normal_nice + BACKGROUND_NICE))
        self.warm_error: str | None = None
        self._warm = threading.Thread(target=self._warm_up, args=(warm,), daemon=True)
        self._warm.start()

    def _warm_up(self, warm: bool) -> None:
        try:
            # the notebook will hit (and report) an import error itself
            self.warm_error = self._run_silently(notebook_imports(self.notebook) if warm else "")
        except Exception as e:  # a kernel that cannot start is reported when it is used
            self.warm_error = f"{type(e).__name__}: {e}"

    def _run_silently(self, code: str) -> str | None:
        """Run ``code`` in the kernel without output or history; its error, if any."""
        kc = self.km.blocking_client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=120)
            if not code:
                return None
            msg_id = kc.execute(code, silent=True, store_history=False)
            reply = kc.get_shell_msg(timeout=600)
            while reply["parent_header"].get("msg_id") != msg_id:
                reply = kc.get_shell_msg(timeout=600)
            if reply["content"].get("status") != "ok":
                return str(reply["content"].get("evalue", "failed"))
            return None
        finally:
            kc.stop_channels()

    def foreground(self) -> None:
        """The stage starts: the kernel gets this process's priority back (idempotent)."""
        if self._background and self.pid is not None:
            set_niceness(self.pid, self._normal_nice)
            self._background = False

    def begin(self, threads_file: Path | None = None) -> None:
        """The stage starts now: start the figure browser (in the background) if it saves any.

        ``threads_file`` holds the number of threads the stage's DuckDB connections use, now
        and as it changes (``warehouse.THREADS_FILE_ENV`` in the kernel's environment); None
        leaves them at one per core.
        """
        code = "\n".join([engine_threads_code(threads_file), figure_start_code(self.notebook)])
        with contextlib.suppress(Exception):  # a dead kernel is reported by the execution
            self._run_silently(code.strip())  # one round trip: each took 0.2 s

    def ready(self, timeout: float | None = None) -> bool:
        """Wait until the warm-up has finished (True) or ``timeout`` passed (False)."""
        self._warm.join(timeout)
        return not self._warm.is_alive()

    def interrupt(self) -> None:
        """Interrupt the running cell (SIGINT): the cell fails with KeyboardInterrupt."""
        run_sync(self.km.interrupt_kernel)()

    def alive(self) -> bool:
        """Whether the kernel process is still running."""
        return bool(run_sync(self.km.is_alive)())

    def rss(self) -> int:
        """Resident memory of the kernel process and its children, in bytes."""
        return self.memory()[0]

    def memory(self) -> tuple[int, int]:
        """Resident memory now of the kernel and its child processes, and of the children alone.

        In bytes. Children count: a local Spark JVM is the kernel's child, and its memory is
        the stage's. The children are listed again at most every :data:`CHILDREN_EVERY_S`:
        psutil finds them by reading every process of the machine, a third of the runner's
        CPU in a 20M run when done at each sample (five a second for each running stage).
        """
        if self.pid is None:
            return 0, 0
        total = children = 0
        try:
            if self._proc is None:
                self._proc = psutil.Process(self.pid)
            proc = self._proc
            now = time.monotonic()
            if now - self._children_at >= CHILDREN_EVERY_S:
                self._children = proc.children(recursive=True)
                self._children_at = now
            for p in (proc, *self._children):
                with contextlib.suppress(psutil.Error):
                    rss = p.memory_info().rss
                    total += rss
                    children += rss if p.pid != self.pid else 0
        except psutil.Error:
            return 0, 0
        return total, children

    def exit_signal(self) -> int | None:
        """The signal that ended the kernel process, if a signal did (e.g. 9 for SIGKILL)."""
        if self._popen is None:
            return None
        code = self._popen.poll()
        return -code if code is not None and code < 0 else None

    def shutdown(self) -> None:
        """Stop the kernel (now) and release its resources and temporary files; idempotent."""
        self._warm.join(timeout=5)
        with contextlib.suppress(Exception):
            if self.km.has_kernel:
                run_sync(self.km.shutdown_kernel)(now=True)
        with contextlib.suppress(Exception):
            run_sync(self.km.cleanup_resources)()
        shutil.rmtree(self._ipc_dir, ignore_errors=True)


def oom_kills() -> int | None:
    """How many processes the kernel's out-of-memory killer has killed since boot, if known."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def death_reason(kernel: StageKernel, peak_rss: int, oom_before: int | None = None) -> str:
    """Why a kernel died, in words: the signal, and whether the out-of-memory killer did it.

    ``oom_before`` is :func:`oom_kills` read when the stage started: if the count went up, the
    out-of-memory killer acted; without the count, SIGKILL is reported as its likely cause.
    """
    sig = kernel.exit_signal()
    total = psutil.virtual_memory().total
    peak = f"peak RSS {peak_rss / 2**30:.1f} GB of {total / 2**30:.0f} GB"
    if sig == signal.SIGKILL:
        after = oom_kills()
        if oom_before is not None and after is not None:
            if after > oom_before:
                return (
                    f"the system's out-of-memory killer ended the kernel (SIGKILL) at {peak}: "
                    "the stage needed more memory than the machine had"
                )
            return f"the kernel was killed by SIGKILL at {peak}, not by the out-of-memory killer"
        return (
            f"the kernel was killed by SIGKILL at {peak}: most likely the system's "
            "out-of-memory killer (the stage needed more memory than the machine had)"
        )
    if sig is not None:
        return f"the kernel was ended by signal {signal.Signals(sig).name} at {peak}"
    return f"the kernel died ({peak})"


def watch_peak(kernel: StageKernel, stop: threading.Event, out: dict[str, Any]) -> None:
    """Sample the memory of the kernel and its children every 0.2 s until ``stop`` is set.

    ``out['peak']``: the largest resident memory of the kernel and its children together (a
    local Spark JVM is one); ``out['children']``: the largest of the children alone.
    """
    while not stop.is_set():
        total, children = kernel.memory()
        out["peak"] = max(out.get("peak", 0), total)
        out["children"] = max(out.get("children", 0), children)
        stop.wait(0.2)
