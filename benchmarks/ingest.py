"""Ingest benchmark: our ingest + optimize against bare Polars and DuckDB on the same CSV.

``python -m benchmarks.ingest --events N`` generates N events once (cached by size and seed
under data/raw/), then runs four child processes, one after the other, on the same CSV:

- ``ours``: customer_intel ingest (validation, rejects, duplicates) + optimize (typed,
  sorted, partitioned Parquet) -- everything stage 01 and the events half of stage 02 do;
- ``polars``: a plain ``scan_csv(...).sink_parquet(...)`` with the same casts;
- ``duckdb``: a plain ``COPY (SELECT ... casts ...) TO ... (FORMAT parquet)``;
- ``layout``: the least work that gives the required layout and nothing else -- the Polars copy
  partitioned by date, then each day read back, sorted and rewritten (no checks, no dedup).
  It measures what partitioning and sorting cost on their own, apart from validation.

Each child reports its wall time and its own peak RSS; the parent prints a table and writes
``benchmarks/results/ingest_<N>.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from customer_intel.paths import DATA_DIR, PROJECT_ROOT
from customer_intel.runs import peak_rss_mb

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
MODES = ("ours", "polars", "duckdb", "layout")
CASTS_SQL = (
    "SELECT strptime(event_time, '%Y-%m-%d %H:%M:%S UTC')::TIMESTAMP AS event_time, "
    "event_type, product_id::BIGINT AS product_id, category_id::BIGINT AS category_id, "
    "category_code, brand, price::DOUBLE AS price, user_id::BIGINT AS user_id, user_session "
    "FROM read_csv({src}, header=true, all_varchar=true)"
)


def _polars_typed(csv: Path):
    """The bare Polars scan with the same casts as the DuckDB reference."""
    import polars as pl

    return pl.scan_csv(csv, infer_schema=False).with_columns(
        pl.col("event_time").str.to_datetime("%Y-%m-%d %H:%M:%S UTC", time_zone="UTC"),
        pl.col("product_id", "category_id", "user_id").cast(pl.Int64),
        pl.col("price").cast(pl.Float64),
    )


def _child(mode: str, csv: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    phases: dict[str, float] = {}
    if mode == "ours":
        from customer_intel import ingest, warehouse
        from customer_intel.params.ingest import IngestParams

        canonical = out / "events_canonical"
        report = ingest.ingest(
            str(csv),
            IngestParams(),
            events_out=canonical,
            rejects_out=out / "rejects.parquet",
            work_dir=out,
        )
        ingested = time.perf_counter() - t0
        warehouse.optimize_events(canonical, out / "events")
        optimized = time.perf_counter() - t0
        # Each phase is a difference of rounded cumulative marks, so the two add up to at most
        # the rounded total below (rounding each phase alone could add up to 0.01 s more).
        phases["ingest_seconds"] = round(ingested, 2)
        phases["optimize_seconds"] = round(round(optimized, 2) - round(ingested, 2), 2)
        rows = report.rows_kept
        written = sum(p.stat().st_size for p in (out / "events").rglob("*.parquet"))
    elif mode == "polars":
        import polars as pl

        _polars_typed(csv).sink_parquet(out / "events.parquet", compression="zstd")
        rows = pl.scan_parquet(out / "events.parquet").select(pl.len()).collect().item()
        written = (out / "events.parquet").stat().st_size
    elif mode == "layout":
        import polars as pl

        staged = out / "staged"
        _polars_typed(csv).with_columns(event_date=pl.col("event_time").dt.date()).sink_parquet(
            pl.PartitionBy(staged, key="event_date"), compression="lz4", mkdir=True
        )
        rows = written = 0
        for day in sorted(staged.glob("event_date=*")):
            df = pl.read_parquet(day, hive_partitioning=False).sort("user_id", "event_time")
            target = out / "events" / day.name
            target.mkdir(parents=True)
            df.write_parquet(target / "part-0.parquet", compression="zstd")
            rows += df.height
            written += (target / "part-0.parquet").stat().st_size
    elif mode == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.execute("SET memory_limit = '2GB'")
        src = "'" + str(csv) + "'"
        con.execute(
            f"COPY ({CASTS_SQL.format(src=src)}) TO '{out / 'events.parquet'}' "
            "(FORMAT parquet, COMPRESSION zstd)"
        )
        rows = con.execute(f"SELECT count(*) FROM '{out / 'events.parquet'}'").fetchone()[0]
        written = (out / "events.parquet").stat().st_size
    else:
        raise ValueError(mode)
    return {
        "mode": mode,
        "seconds": round(time.perf_counter() - t0, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rows_out": int(rows),
        "bytes_out": int(written),
        **phases,
    }


def run(n_events: int, seed: int = 42, data_dir: Path = DATA_DIR) -> dict:
    """Generate (or reuse) the sample and run the three children; returns the results."""
    from customer_intel import synth

    t0 = time.perf_counter()
    folder = synth.ensure_sample(data_dir, n_events, seed)
    gen_seconds = round(time.perf_counter() - t0, 1)
    csv = folder / "events.csv"
    size = csv.stat().st_size
    results = []
    for mode in MODES:
        out = Path(tempfile.mkdtemp(prefix=f"bench_{mode}_"))
        try:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.ingest",
                    "--child",
                    mode,
                    "--csv",
                    str(csv),
                    "--out",
                    str(out),
                ],
                capture_output=True,
                text=True,
                cwd=PROJECT_ROOT,
                check=True,
            )
            r = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            shutil.rmtree(out, ignore_errors=True)
        r["events_per_s"] = round(n_events / r["seconds"])
        r["bytes_in"] = size
        results.append(r)
    by = {r["mode"]: r for r in results}
    return {
        "events": n_events,
        "csv_bytes": size,
        "generate_seconds_or_cached": gen_seconds,
        "results": results,
        "ratio_ours_vs_polars": round(by["ours"]["seconds"] / by["polars"]["seconds"], 2),
        "ratio_ours_vs_duckdb": round(by["ours"]["seconds"] / by["duckdb"]["seconds"], 2),
        "ratio_layout_vs_polars": round(by["layout"]["seconds"] / by["polars"]["seconds"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ingest")
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.csv, args.out)))
        return 0
    res = run(args.events, args.seed)
    print(f"{res['events']:,} events, CSV {res['csv_bytes'] / 1e9:.2f} GB")
    print(f"{'':8} {'seconds':>9} {'events/s':>12} {'peak RSS MB':>12} {'MB out':>9}")
    for r in res["results"]:
        print(
            f"{r['mode']:8} {r['seconds']:>9.1f} {r['events_per_s']:>12,} "
            f"{r['peak_rss_mb']:>12,.0f} {r['bytes_out'] / 1e6:>9.1f}"
        )
    print(
        f"ours / polars = {res['ratio_ours_vs_polars']}x, ours / duckdb = "
        f"{res['ratio_ours_vs_duckdb']}x, layout alone / polars = "
        f"{res['ratio_layout_vs_polars']}x"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"ingest_{args.events}.json"
    path.write_text(json.dumps(res, indent=2))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
