"""Memory does not grow with the data: each stage's peak at 2M events against 200k."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from customer_intel.paths import PARAMS_DIR, PROJECT_ROOT

#: Each stage's kernel peak RSS at 2M events may be at most this many times its peak at 200k
#: (ten times the events). A kernel holds ~400 MB of libraries whatever the size, so a stage
#: whose memory followed the data (recommendations held every user's top-N: 11.7 GB at 20M)
#: goes far beyond; bounded stages stay well within.
MAX_GROWTH = 2.0


def _run(tmp_path, n_events: int) -> dict:
    root = tmp_path / f"out_{n_events}"
    profile = tmp_path / f"p_{n_events}.yaml"
    profile.write_text(
        yaml.safe_dump(
            {
                "extends": str(PARAMS_DIR / "default.yaml"),
                "common": {"output_root": str(root), "data_dir": str(tmp_path / "data")},
                "ingest": {"sample_events": n_events},
                "optimize": {"timing_repeats": 1},
                "segmentation": {"k_max": 6, "n_init": 2},
                "propensity": {"n_estimators": 300},
                "experiments": {"n_resamples": 300},
            }
        )
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "run_all.py"),
            "--params",
            str(profile),
            "--quiet-cells",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((root / "latest" / "manifest.json").read_text())["stages"]


@pytest.mark.slow
def test_peak_memory_of_every_stage_does_not_grow_with_the_events(tmp_path):
    small, large = _run(tmp_path, 200_000), _run(tmp_path, 2_000_000)
    growth = {s: large[s]["peak_rss_mb"] / small[s]["peak_rss_mb"] for s in small}
    print({s: (small[s]["peak_rss_mb"], large[s]["peak_rss_mb"]) for s in small})
    assert all(g <= MAX_GROWTH for g in growth.values()), growth
