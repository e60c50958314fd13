"""An order-lines table (the classic retail shape) through the whole pipeline by params alone.

The table is generated here with what real exports hold: cancelled invoices ("C" prefix,
negative quantities), invoices without a customer id, a POSTAGE line on many invoices (and
postage-only invoices), a 200-line invoice, two lines differing only in their description,
exact duplicate lines, no category or brand, and no experiment. A profile of fifteen lines
must run every stage that applies to success, skip the one that cannot apply (experiments),
and reach the textbook definitions: RFM frequency as lines, whole-day recency, and basket
supports over every invoice (customer-less and postage-only ones included) equal to mlxtend.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import polars as pl
import pytest
from mlxtend.frequent_patterns import apriori

from customer_intel.paths import PARAMS_DIR, PROJECT_ROOT

pytestmark = pytest.mark.e2e

COLUMNS = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]
START = dt.datetime(2010, 12, 1, 8, 0)


def order_lines(seed: int = 3) -> pl.DataFrame:
    """The generated table, one row per invoice line, in file order (all columns text)."""
    rng = np.random.default_rng(seed)
    products = [f"P{i:03d}" for i in range(1, 41)] + [f"B{i:03d}" for i in range(1, 261)]
    price = {p: round(float(rng.uniform(0.5, 15)), 2) for p in products}
    rows: list[list[object]] = []
    invoice = 536365

    def add(no: str, lines: list[str], when: dt.datetime, customer: str, country: str) -> None:
        for code in lines:
            desc = "POSTAGE" if code == "POST" else f"ITEM {code}"
            unit = 18.0 if code == "POST" else price[code]
            qty = 1 if code == "POST" else int(rng.integers(1, 13))
            rows.append([no, code, desc, qty, when, unit, customer, country])

    for c in range(300):
        customer = str(12346 + c)
        for _ in range(int(rng.geometric(0.3))):
            when = START + dt.timedelta(minutes=int(rng.integers(0, 180 * 24 * 60)))
            size = int(rng.integers(1, 7))
            lines = list(rng.choice(products[:40], size=size, replace=False))
            if rng.random() < 0.35:  # a planted pair
                lines = [x for x in lines if x not in ("P001", "P002")] + ["P001", "P002"]
            if rng.random() < 0.3:
                lines.append("POST")
            add(str(invoice), lines, when, customer, "United Kingdom")
            invoice += 1
    for _ in range(12):  # French invoices without a customer id
        when = START + dt.timedelta(minutes=int(rng.integers(0, 180 * 24 * 60)))
        add(str(invoice), ["P001", "P002", "POST"], when, "", "France")
        invoice += 1
    for c in range(5):  # postage-only invoices
        add(str(invoice), ["POST"], START + dt.timedelta(days=10 + c), str(12346 + c), "France")
        invoice += 1
    add(str(invoice), products[40:240], START + dt.timedelta(days=50), "12400", "EIRE")
    invoice += 1
    for c in range(20):  # cancellations of earlier lines
        code = products[int(rng.integers(0, 40))]
        rows.append(
            [f"C{invoice}", code, f"ITEM {code}", -2, START + dt.timedelta(days=60 + c),
             price[code], str(12346 + c), "United Kingdom"]
        )  # fmt: skip
        invoice += 1
    # two lines differing only in their description (a carried column): both are kept
    when = START + dt.timedelta(days=70)
    rows.append([str(invoice), "P010", "ITEM P010", 3, when, price["P010"], "12350", "France"])
    rows.append(
        [str(invoice), "P010", "ITEM P010 BOXED", 3, when, price["P010"], "12350", "France"]
    )
    invoice += 1
    rows += [list(r) for r in rows[100:105]]  # exact duplicate lines
    frame = pl.DataFrame(rows, schema=COLUMNS, orient="row")
    return frame.with_columns(
        pl.col("InvoiceDate").dt.strftime("%m/%d/%Y %H:%M"),
        pl.all().exclude("InvoiceDate").cast(pl.String),
    )


PROFILE = """\
extends: {default}
common: {{output_root: {out}}}
ingest:
  input_path: {csv}
  column_map: {{event_time: InvoiceDate, user_id: CustomerID, product_id: StockCode,
               price: UnitPrice, quantity: Quantity, order_id: InvoiceNo}}
  constant_event_type: purchase
  timestamp_format: "%m/%d/%Y %H:%M"
  session_from_order: true
  price_is_unit_price: true
  cancellation_column: InvoiceNo
  carry_columns: [Description, Country]
  require_user_id: false
segmentation: {{rfm_frequency: lines}}
recommendations: {{basket: order, exclude_items: [POST], min_support: 0.02}}
"""


@pytest.fixture(scope="module")
def retail_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("retail")
    table = order_lines()
    csv = root / "online_retail.csv"
    table.write_csv(csv)
    profile = root / "retail.yaml"
    profile.write_text(
        PROFILE.format(default=PARAMS_DIR / "default.yaml", out=root / "out", csv=csv)
    )
    assert len(profile.read_text().splitlines()) <= 16  # "a profile of about fifteen lines"
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "run_all.py"), "--params", str(profile)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    run_dir = (root / "out" / "latest").resolve()
    return {"proc": proc, "table": table, "run_dir": run_dir, "root": root}


def _kept_lines(table: pl.DataFrame) -> pl.DataFrame:
    """The lines ingest must keep, computed without the project: no cancellations, exact
    duplicates (over every column) once."""
    return table.filter(~pl.col("InvoiceNo").str.starts_with("C")).unique(maintain_order=True)


def test_the_whole_pipeline_succeeds_and_skips_experiments_with_the_reason(retail_run):
    proc = retail_run["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = json.loads((retail_run["run_dir"] / "manifest.json").read_text())
    assert m["status"] == "success"
    status = {name: e["status"] for name, e in m["stages"].items()}
    assert status == {
        "ingest": "success",
        "optimize": "success",
        "segmentation": "success",
        "propensity": "success",
        "recommendations": "success",
        "experiments": "skipped",
        "metrics": "success",  # its experiment metric is skipped inside, the others run
        "dashboard_data": "success",
    }
    assert "assignments" in m["stages"]["experiments"]["reason"]
    assert "experiments" in proc.stdout and "skipped" in proc.stdout


def test_row_accounting_and_customer_less_rows(retail_run):
    table, run_dir = retail_run["table"], retail_run["run_dir"]
    summary = dict(pl.read_parquet(run_dir / "tables" / "ingest_summary.parquet").iter_rows())
    kept = _kept_lines(table)
    assert summary["rows_in"] == table.height
    assert summary["rejected:cancelled_order"] == 20
    assert summary["duplicates"] == 5  # the two description variants are not duplicates
    assert summary["rows_kept"] == kept.height
    assert summary["kept_without_user"] == kept.filter(pl.col("CustomerID") == "").height == 36
    # per-customer tables know nothing of customer-less rows
    rfm = pl.read_parquet(run_dir / "tables" / "rfm.parquet")
    assert rfm["user_id"].null_count() == 0
    assert rfm.height == kept.filter(pl.col("CustomerID") != "")["CustomerID"].n_unique()


def test_rfm_counts_lines_and_recency_in_whole_days(retail_run):
    table, run_dir = retail_run["table"], retail_run["run_dir"]
    kept = _kept_lines(table).filter(pl.col("CustomerID") != "")
    kept = kept.with_columns(pl.col("InvoiceDate").str.to_datetime("%m/%d/%Y %H:%M"))
    last = kept["InvoiceDate"].max()
    want = kept.group_by("CustomerID").agg(
        lines=pl.len(), recency=(last - pl.col("InvoiceDate").max()).dt.total_days()
    )
    rfm = pl.read_parquet(run_dir / "tables" / "rfm.parquet").select(
        pl.col("user_id").cast(pl.String).alias("CustomerID"), "frequency", "recency_days"
    )
    both = want.join(rfm, on="CustomerID", how="full", coalesce=True)
    assert both.height == want.height == rfm.height
    assert both["frequency"].to_list() == both["lines"].to_list()
    assert both["recency_days"].to_list() == both["recency"].to_list()  # floor, whole days


def test_basket_supports_count_every_invoice_and_equal_mlxtend(retail_run):
    table, run_dir = retail_run["table"], retail_run["run_dir"]
    kept = _kept_lines(table)
    invoices = kept["InvoiceNo"].unique().sort().to_list()  # postage-only and customer-less too
    items = kept.filter(pl.col("StockCode") != "POST")
    per_invoice = items.group_by("InvoiceNo").agg(pl.col("StockCode").unique())
    basket = {r["InvoiceNo"]: set(r["StockCode"]) for r in per_invoice.iter_rows(named=True)}
    codes = sorted(items["StockCode"].unique().to_list())
    onehot = pd.DataFrame(
        [[c in basket.get(i, ()) for c in codes] for i in invoices], columns=codes
    )
    ref = apriori(onehot, min_support=0.02 - 1e-12, use_colnames=True, max_len=3)
    want = {tuple(sorted(s)): v for s, v in zip(ref["itemsets"], ref["support"], strict=True)}
    sets = pl.read_parquet(run_dir / "tables" / "frequent_itemsets.parquet")
    got = {tuple(s): v for s, v in zip(sets["itemset"], sets["support"], strict=True)}
    assert got == pytest.approx(want, rel=1e-12)
    assert ("P001", "P002") in got and ("POST",) not in got
    nb = (run_dir / "notebooks" / "05_recommendations.ipynb").read_text()
    assert f"{len(invoices):,} baskets" in nb
    assert "0 baskets larger than 250 items" in nb  # the 200-line invoice is a basket
    assert "5 baskets held only excluded items" in nb


def test_every_sentence_reads_right_on_purchase_only_data(retail_run):
    """No impossible percentage and no funnel step the data does not have."""
    run_dir = retail_run["run_dir"]
    for path in sorted((run_dir / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        text = "\n".join(
            "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            for cell in nb["cells"]
            if cell["cell_type"] == "code"
            for out in cell.get("outputs", [])
        )
        # a forecast's MAPE can exceed 100% (a forecast twice the actual): not impossible
        shares = "\n".join(line for line in text.splitlines() if "MAPE" not in line)
        for pct in re.findall(r"(\d[\d,]*\.?\d*)%", shares):
            assert float(pct.replace(",", "")) <= 100, f"{path.name}: {pct}%"
        assert "0 users who viewed" not in text, path.name
        for ratio in re.findall(r"(\d+\.\d+)x smaller", text):
            assert float(ratio) >= 1, f"{path.name}: {ratio}x smaller"
    segmentation = (run_dir / "notebooks" / "03_segmentation.ipynb").read_text()
    assert "order lines, last purchase" in segmentation  # the unit of rfm_frequency: lines
    propensity = (run_dir / "notebooks" / "04_propensity.ipynb").read_text()
    assert "Left out: " in propensity and "category" in propensity  # no category in the data
