"""Dashboard data access: the no-run message, numbers, pseudonyms; notebooks run without a run."""

from __future__ import annotations

import nbformat
import polars as pl
import pytest
from nbclient import NotebookClient

from customer_intel import dashboards, runs
from customer_intel.contracts import Manifest
from customer_intel.paths import DASHBOARDS_DIR, OUTPUTS_DIR


def _html(obj) -> str:
    return obj.data if hasattr(obj, "data") else str(obj)


def test_no_run_says_so_and_every_other_cell_is_silent(tmp_path):
    d = dashboards.Dashboard(root=tmp_path)
    assert d.run is None
    text = _html(d.header("Executive overview"))
    assert 'id="no-run"' in text and "make run" in text
    for method in (
        "kpi_cards",
        "daily_trend",
        "funnel",
        "top_categories",
        "top_customers",
        "cohorts",
        "segment_sizes",
        "clv_distribution",
        "p_alive_matrix",
        "customers_at_risk",
        "score_form",
        "targeting",
        "product_selector",
        "decision_table",
    ):
        assert getattr(d, method)() is None, method


@pytest.mark.notebooks
@pytest.mark.parametrize("name", dashboards.DASHBOARDS)
def test_dashboard_notebooks_run_cleanly_without_a_run(tmp_path, name, monkeypatch):
    monkeypatch.setenv(dashboards.ENV_OUTPUT_ROOT, str(tmp_path))
    nb = nbformat.read(DASHBOARDS_DIR / f"{name}.ipynb", as_version=4)
    NotebookClient(
        nb, kernel_name="python3", resources={"metadata": {"path": str(DASHBOARDS_DIR)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("no-run" in str(o.get("data", {})) for o in outputs)


def test_pseudonyms_are_stable_salted_and_not_the_id():
    ids = pl.Series("user_id", ["512000001", "512000002"])
    a = dashboards.pseudonymize(ids, "s1")
    assert a.to_list() == dashboards.pseudonymize(ids, "s1").to_list()
    assert a.to_list() != dashboards.pseudonymize(ids, "s2").to_list()
    assert all(x.startswith("C-") and "512000" not in x for x in a)


def test_a_failed_run_is_not_shown(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text('{"status": "failed"}')
    (tmp_path / "latest").symlink_to(run)
    assert dashboards.latest_run(tmp_path) is None


def test_urls_and_command_bind_loopback():
    urls = dashboards.urls("127.0.0.1", 8866)
    assert set(urls) == set(dashboards.DASHBOARDS)
    assert urls["growth"] == "http://127.0.0.1:8866/voila/render/growth.ipynb"
    cmd = dashboards.voila_command(host="127.0.0.1", port=8866, pool_size=1)
    assert (
        "--Voila.ip=127.0.0.1" in cmd
        and "--strip_sources=True" in cmd
        and "--preheat_kernel=True" in cmd
    )


def test_dashboards_read_the_latest_good_run_of_the_env_output_root(monkeypatch, tmp_path):
    """CUSTOMER_INTEL_OUTPUT_ROOT decides which runs the dashboards see, and only a run whose
    manifest says success counts."""
    good = tmp_path / "runs" / "good"
    good.mkdir(parents=True)
    manifest = Manifest(
        run_id="good",
        status="success",
        started_at="2026-11-27T00:00:00+00:00",
        params_file="params/default.yaml",
        params_hash="0",
        params={},
    )
    runs.write_model(manifest, good / "manifest.json")
    (tmp_path / "latest").symlink_to(good)
    monkeypatch.setenv(dashboards.ENV_OUTPUT_ROOT, str(tmp_path))
    assert dashboards.latest_run() == good.resolve()
    runs.write_model(manifest.model_copy(update={"status": "failed"}), good / "manifest.json")
    assert dashboards.latest_run() is None
    (good / "manifest.json").write_text('{"status": "success"}')  # not a manifest: not shown
    assert dashboards.latest_run() is None
    monkeypatch.delenv(dashboards.ENV_OUTPUT_ROOT)
    assert dashboards.output_root() == OUTPUTS_DIR


def test_clv_cards_read_the_run_and_pseudonymise_customers_at_risk(tmp_path):
    run = tmp_path / "runs" / "r1"
    (run / "tables").mkdir(parents=True)
    (run / "manifest.json").write_text(
        '{"status": "success", "params": {"dashboards": {"pseudonym_salt": "s1"}}}'
    )
    (tmp_path / "latest").symlink_to(run)
    d = dashboards.Dashboard(root=tmp_path)
    assert "not in this run" in _html(d.customers_at_risk())
    risk = pl.DataFrame(
        {
            "user_id": [512000001, 512000002],
            "value_so_far": [900.0, 500.0],
            "p_alive": [0.2, 0.4],
            "clv": [10.0, 30.0],
        }
    )
    risk.write_parquet(run / "tables" / "clv_at_risk.parquet")
    text = _html(d.customers_at_risk())
    pseudonyms = dashboards.pseudonymize(risk["user_id"].cast(pl.String), "s1").to_list()
    assert all(p in text for p in pseudonyms) and "512000001" not in text
    assert ">900.00<" in text and ">20.0%<" in text
    risk.head(0).write_parquet(run / "tables" / "clv_at_risk.parquet")
    assert "No customer is at risk" in _html(d.customers_at_risk())
    pl.DataFrame({"clv": [1.0, 2.0, None]}).write_parquet(
        run / "tables" / "clv_predictions.parquet"
    )
    assert list(d.clv_distribution().data[0].x) == [1.0, 2.0]
    fr = pl.DataFrame(
        {
            "frequency": [0.0, 0.0, 1.0, 1.0],
            "recency": [0.0, 5.0, 0.0, 5.0],
            "p_alive": [1.0, 1.0, 0.3, 0.9],
        }
    )
    fr.write_parquet(run / "tables" / "clv_fr_matrix.parquet")
    z = d.p_alive_matrix().data[0].z
    assert [list(r) for r in z] == [[1, 1], [0.3, 0.9]]
