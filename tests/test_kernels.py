"""Stage kernels: warm-up imports taken from the notebook, and why a kernel died."""

from __future__ import annotations

import signal

from customer_intel import kernels

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
