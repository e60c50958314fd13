"""End-to-end benchmark: the whole pipeline against the bare reference script, on the same data.

``python -m benchmarks.pipeline --events N`` (``make bench-e2e EVENTS=N``):

1. generates N events once (cached under ``data/raw/`` by size and seed; the generation time is
   reported, not counted);
2. reads the CSV through once when it fits in half the available memory, so that both sides
   find it in the page cache (otherwise the side run first pays the disk: 118 s instead of
   28 s for the line scan of the 14.6 GB of the 110M sample);
3. runs our pipeline, ``run_all.py`` on a profile that extends ``--profile`` (default
   ``params/default.yaml``) with ``ingest.sample_events: N`` and a temporary output root, from
   the CSV to the last table, in its own process; per stage it reads wall seconds and the
   stage kernel's peak RSS from the run's manifest;
4. then, one after the other on the same CSV and assignments, the bare reference
   ``../shared/bench/bare_pipeline.py`` (the leanest hand-written Polars/DuckDB/scikit-learn/
   LightGBM code for the same main steps; it prints JSON timings per step);
5. prints a table per stage (wall seconds and peak RSS of both, the ratio ours/bare) and writes
   ``benchmarks/results/pipeline_<N>[_<engine>].json``.

``--repeat K`` runs both sides K times, taking turns (ours, bare, ours, bare, ...), and
compares the median runs: on this 2-core machine the same code took 95.8-106.5 s at 20M events
within an hour, a spread wider than the differences worth measuring. Every round's totals are
kept (``rounds``). From the second round on, our runner finds the previous round in the
output root and starts the stages it expects to take longest first, as a nightly run does.

Our stages map to the bare steps as ingest -> ingest, optimize -> warehouse, and the four
analysis stages to the steps of the same name. The bare script imports its libraries once
(its ``imports`` row); each of our stages runs in its own kernel, whose start and imports count
in the stage's time. Totals are wall times of the two processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from customer_intel.paths import DATA_DIR, PARAMS_DIR, PROJECT_ROOT

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
BARE_SCRIPT = PROJECT_ROOT.parent / "shared" / "bench" / "bare_pipeline.py"
#: the line the bare script prints to stderr after each step
BARE_STEP_LINE = re.compile(r"\[bare\] (?P<step>\w+): (?P<wall>[\d.]+) s, peak (?P<peak>[\d.]+) MB")
#: our stage -> the bare script's step
STEP_OF = {
    "ingest": "ingest",
    "optimize": "warehouse",
    "segmentation": "segmentation",
    "propensity": "propensity",
    "recommendations": "recommendations",
    "experiments": "experiments",
}


def read_through(
    path: Path, *, available: int | None = None, chunk: int = 16 << 20
) -> float | None:
    """Read ``path`` once into the page cache when it fits in half the available memory.

    ``available`` bytes default to the kernel's MemAvailable. Returns the seconds the read
    took, or None when the file is too large to stay cached (it is not read then).
    """
    if available is None:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        available = int(info["MemAvailable"].split()[0]) * 1024
    if path.stat().st_size > available // 2:
        return None
    t0 = time.perf_counter()
    with path.open("rb", buffering=0) as f:
        while f.read(chunk):
            pass
    return round(time.perf_counter() - t0, 1)


def run_ours(
    n_events: int,
    profile: Path,
    out_root: Path,
    *,
    seed: int,
    engine: str,
    data_dir: Path,
    extra: list[str],
) -> dict[str, Any]:
    """Run the pipeline in a child process; wall time, and per stage wall/peak from the manifest."""
    out_root.mkdir(parents=True, exist_ok=True)
    params = out_root / "bench_profile.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "extends": str(profile.resolve()),
                "common": {
                    "output_root": str(out_root),
                    "data_dir": str(Path(data_dir).resolve()),
                    "seed": seed,
                    "engine": engine,
                },
                "ingest": {"sample_events": n_events},
            }
        )
    )
    cmd = [sys.executable, str(PROJECT_ROOT / "run_all.py"), "--params", str(params)]
    cmd += ["--quiet-cells", "--force", *extra]  # a fresh output root: --force only says so
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"pipeline failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    manifest = json.loads((out_root / "latest" / "manifest.json").read_text())
    stages = {
        name: {
            "wall_s": entry.get("wall_seconds"),
            "peak_rss_mb": entry.get("peak_rss_mb"),
            "status": entry.get("status"),
        }
        for name, entry in manifest["stages"].items()
    }
    return {
        "total_wall_s": round(wall, 2),
        "stages_wall_s": round(sum(s["wall_s"] or 0 for s in stages.values()), 2),
        "jobs": manifest.get("jobs"),
        "peak_rss_mb": max((s["peak_rss_mb"] or 0) for s in stages.values()),
        "stages": stages,
        "run_id": manifest["run_id"],
        "rows_out": {k: v.get("rows_out") for k, v in manifest["stages"].items()},
    }


def run_bare(csv: Path, assignments: Path, out_dir: Path, script: Path) -> dict[str, Any]:
    """Run the bare reference script in a child process; its own JSON timings."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script), str(csv), str(assignments), str(out_dir)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        # The reference may not survive the size (at 110M events its DuckDB warehouse runs out
        # of its 2 GB cap): keep the steps it finished and say where and why it stopped.
        steps = {
            m["step"]: {"wall_s": float(m["wall"]), "peak_rss_mb": float(m["peak"])}
            for m in BARE_STEP_LINE.finditer(proc.stderr)
        }
        lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
        error = next((x for x in reversed(lines) if "Error" in x or "Exception" in x), "")
        return {
            "total_wall_s": None,
            "script_total_wall_s": None,
            "peak_rss_mb": max((v["peak_rss_mb"] for v in steps.values()), default=None),
            "steps": steps,
            "checks": {},
            "failed": {
                "returncode": proc.returncode,
                "after_steps": list(steps),
                "error": error[:500],
            },
        }
    timings = json.loads((out_dir / "timings.json").read_text())
    steps = timings["steps"]
    return {
        "total_wall_s": round(wall, 2),
        "script_total_wall_s": timings.get("total_wall_s"),
        "peak_rss_mb": timings.get("peak_rss_mb"),
        "steps": steps,
        "checks": timings.get("checks", {}),
    }


def _ratio(ours_s: float, bare: dict[str, Any] | None) -> float | None:
    """ours / bare total wall time; None without a (finished) bare run."""
    if not bare or not bare.get("total_wall_s"):
        return None
    return round(ours_s / bare["total_wall_s"], 2)


def compare(ours: dict[str, Any], bare: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per stage (and a total): wall and peak RSS of both, ratio ours/bare."""
    rows = []
    for stage, entry in ours["stages"].items():
        step = (bare or {}).get("steps", {}).get(STEP_OF.get(stage, stage), {})
        b_wall = step.get("wall_s")
        rows.append(
            {
                "stage": stage,
                "ours_wall_s": entry["wall_s"],
                "ours_peak_rss_mb": entry["peak_rss_mb"],
                "bare_wall_s": b_wall,
                "bare_peak_rss_mb": step.get("peak_rss_mb"),
                "ratio": round(entry["wall_s"] / b_wall, 2) if b_wall else None,
            }
        )
    if bare and "imports" in bare["steps"]:
        rows.append(
            {
                "stage": "(bare: imports, once)",
                "ours_wall_s": None,
                "ours_peak_rss_mb": None,
                "bare_wall_s": bare["steps"]["imports"]["wall_s"],
                "bare_peak_rss_mb": bare["steps"]["imports"]["peak_rss_mb"],
                "ratio": None,
            }
        )
    rows.append(
        {
            "stage": "total (process wall)",
            "ours_wall_s": ours["total_wall_s"],
            "ours_peak_rss_mb": ours["peak_rss_mb"],
            "bare_wall_s": bare["total_wall_s"] if bare else None,
            "bare_peak_rss_mb": bare["peak_rss_mb"] if bare else None,
            "ratio": _ratio(ours["total_wall_s"], bare),
        }
    )
    return rows


def run(
    n_events: int,
    *,
    seed: int = 42,
    data_dir: Path = DATA_DIR,
    profile: Path = PARAMS_DIR / "default.yaml",
    engine: str = "duckdb",
    bare_script: Path | None = BARE_SCRIPT,
    work_dir: Path | None = None,
    keep: bool = False,
    extra: list[str] | None = None,
    repeat: int = 1,
) -> dict[str, Any]:
    """Generate (or reuse) the sample, run ours then the bare script; returns the results.

    With ``repeat`` > 1 both run that many times, taking turns; ``ours`` and ``bare`` are then
    the runs of median total time (:func:`median_run`) and ``rounds`` lists every round.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, not {repeat}")
    from customer_intel import synth

    t0 = time.perf_counter()
    folder = synth.ensure_sample(data_dir, n_events, seed)
    gen_seconds = round(time.perf_counter() - t0, 1)
    csv, assignments = folder / "events.csv", folder / "assignments.parquet"
    cached = read_through(csv)
    work = Path(tempfile.mkdtemp(prefix="bench_e2e_", dir=work_dir))
    with_bare = bare_script is not None and Path(bare_script).exists()
    ours_runs: list[dict[str, Any]] = []
    bare_runs: list[dict[str, Any]] = []
    try:
        for i in range(repeat):
            ours_runs.append(
                run_ours(
                    n_events,
                    profile,
                    work / "ours",
                    seed=seed,
                    engine=engine,
                    data_dir=data_dir,
                    extra=extra or [],
                )
            )
            if with_bare:
                out = work / ("bare" if repeat == 1 else f"bare_{i + 1}")
                bare_runs.append(run_bare(csv, assignments, out, Path(bare_script)))
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    ours = median_run(ours_runs)
    bare = median_run(bare_runs) if bare_runs else None
    load = os.getloadavg()
    return {
        "events": n_events,
        "seed": seed,
        "engine": engine,
        "profile": str(profile),
        "csv_bytes": csv.stat().st_size,
        "generate_seconds_or_cached": gen_seconds,
        "csv_read_into_page_cache_s": cached,
        "cpus": os.cpu_count(),
        "loadavg_end": [round(x, 2) for x in load],
        "ours": ours,
        "bare": bare,
        "bare_script": str(bare_script) if bare else None,
        "comparison": compare(ours, bare),
        "ratio_total": _ratio(ours["total_wall_s"], bare),
        "repeat": repeat,
        "rounds": [
            {
                "ours_wall_s": o["total_wall_s"],
                "bare_wall_s": b["total_wall_s"] if b else None,
                "ratio": _ratio(o["total_wall_s"], b),
            }
            for o, b in zip(ours_runs, bare_runs or [None] * repeat, strict=True)
        ],
        "work_dir": str(work) if keep else None,
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median total wall time (the lower of the middle two for an even count).

    A whole run, not per-stage medians, so its stages add up to its total. Runs that did not
    finish (the bare script out of memory) count only when no run finished.
    """
    finished = [r for r in runs if r.get("total_wall_s") is not None]
    if not finished:
        return runs[0]
    middle = statistics.median_low(r["total_wall_s"] for r in finished)
    return next(r for r in finished if r["total_wall_s"] == middle)


def format_table(res: dict[str, Any]) -> str:
    """The comparison as a text table."""

    def f(v: Any, spec: str) -> str:
        return format(v, spec) if isinstance(v, int | float) else "-"

    lines = [
        f"{res['events']:,} events ({res['csv_bytes'] / 1e9:.2f} GB of CSV), engine "
        f"{res['engine']}, {res['cpus']} cores",
        f"{'stage':<24} {'ours s':>9} {'ours MiB':>9} {'bare s':>9} {'bare MiB':>9} {'ratio':>7}",
    ]
    for r in res["comparison"]:
        lines.append(
            f"{r['stage']:<24} {f(r['ours_wall_s'], '9.1f')} {f(r['ours_peak_rss_mb'], '9,.0f')} "
            f"{f(r['bare_wall_s'], '9.1f')} {f(r['bare_peak_rss_mb'], '9,.0f')} "
            f"{f(r['ratio'], '7.2f')}"
        )
    rounds = res.get("rounds") or []
    if len(rounds) > 1:
        lines.append(f"median of {len(rounds)} rounds; every round (ours s, bare s, ratio):")
        lines += [
            f"  {i}: {f(r['ours_wall_s'], '.1f')}, {f(r['bare_wall_s'], '.1f')}, "
            f"{f(r['ratio'], '.2f')}"
            for i, r in enumerate(rounds, 1)
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--engine", default="duckdb")
    ap.add_argument("--profile", type=Path, default=PARAMS_DIR / "default.yaml")
    ap.add_argument("--no-bare", action="store_true", help="run only our pipeline")
    ap.add_argument("--keep", action="store_true", help="keep the run folders (printed)")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run both sides this many times, taking turns, and compare the median runs",
    )
    ap.add_argument(
        "--work-dir", type=Path, help="where the temporary run folders go (default: TMPDIR)"
    )
    args, extra = ap.parse_known_args(argv)
    res = run(
        args.events,
        seed=args.seed,
        profile=args.profile,
        engine=args.engine,
        bare_script=None if args.no_bare else BARE_SCRIPT,
        work_dir=args.work_dir,
        keep=args.keep,
        extra=extra,
        repeat=args.repeat,
    )
    print(format_table(res))
    if res["bare"] is None and not args.no_bare:
        print(f"(bare reference not found at {BARE_SCRIPT}: only ours was run)")
    elif res["bare"] and res["bare"].get("failed"):
        f = res["bare"]["failed"]
        done = ", ".join(f["after_steps"]) or "no step"
        print(f"(bare reference failed after {done}: {f['error']})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.engine == "duckdb" else f"_{args.engine}"
    path = RESULTS / f"pipeline_{args.events}{suffix}.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
