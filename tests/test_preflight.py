"""Checks before anything runs: expressions, external tables, labels, the output root (exit 2)."""

from __future__ import annotations

import zipfile

import pytest

from customer_intel import pipeline, preflight
from customer_intel.params import ParamsError, load_params_with_origin
from customer_intel.paths import PARAMS_DIR

HOSTILE = [
    (
        "segmentation.derived_columns={leak: \"read_csv('/etc/passwd')\"}",
        "segmentation.derived_columns.leak",
    ),
    ("segmentation.row_filters=[\"getenv('HOME') = 'x'\"]", "segmentation.row_filters[0]"),
    ('ingest.filters=["price < (SELECT max(price) FROM events)"]', "ingest.filters[0]"),
    ("experiments.exclude=[\"1 = 1; COPY events TO '/tmp/x'\"]", "experiments.exclude[0]"),
    (
        "segmentation.segment_rules=[{A: \"r > 3 OR read_text('/etc/passwd') IS NULL\"}]",
        "segmentation.segment_rules[0].A",
    ),
    ("ingest.filters=[\"price IN (SELECT * FROM read_parquet('x'))\"]", "ingest.filters[0]"),
    (
        "segmentation.derived_columns={x: \"current_setting('home_directory')\"}",
        "segmentation.derived_columns.x",
    ),
    ("ingest.filters=[\"glob('/root/*') IS NOT NULL\"]", "ingest.filters[0]"),
    ('experiments.exclude=["EXISTS (SELECT 1)"]', "experiments.exclude[0]"),
]


@pytest.mark.parametrize(("override", "key"), HOSTILE, ids=[k for _, k in HOSTILE])
def test_dry_run_refuses_hostile_expressions_with_their_key(override, key, capsys):
    code = pipeline.main(["--dry-run", "--params", str(PARAMS_DIR / "smoke.yaml"), "-p", override])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"command line (-p): {key}: " in err
    assert "would run" not in err


def _check(profile, *overrides):
    params, origin = load_params_with_origin(profile, list(overrides))
    preflight.check(params, origin, source=str(profile))


def test_external_unit_table_labels_are_checked_against_the_data():
    ab = PARAMS_DIR / "external_ab.yaml"
    _check(ab)  # the shipped profile is consistent with its table
    with pytest.raises(ParamsError) as e:
        _check(ab, "experiments.control_label=control")
    assert "experiments.control_label: label 'control' not in the data" in str(e.value)
    assert "holds ['A', 'B']" in str(e.value)
    with pytest.raises(ParamsError, match=r"intended_split: label\(s\) \['C'\] not in the data"):
        _check(ab, "experiments.intended_split={A: 0.4, B: 0.4, C: 0.2}")
    with pytest.raises(ParamsError, match=r"experiments.metrics\[1\]: column\(s\) \['revenue'\]"):
        _check(
            ab,
            "experiments.metrics=[{name: c, column: converted, kind: binary}, "
            "{name: r, column: revenue, kind: continuous}]",
        )
    with pytest.raises(ParamsError, match=r"experiments.exclude\[0\]: .*unknown column"):
        _check(ab, 'experiments.exclude=["armm <> variant"]')


def test_attribute_table_columns_features_and_expressions_are_checked():
    mc = PARAMS_DIR / "marketing_campaign.yaml"
    _check(mc)
    with pytest.raises(ParamsError) as e:
        _check(mc, "segmentation.numeric_features=[age, income]")
    msg = str(e.value)
    assert "segmentation.numeric_features: column(s) ['income'] not in the clustered table" in msg
    with pytest.raises(ParamsError, match=r"segmentation.row_filters\[0\]: .*unknown column"):
        _check(mc, 'segmentation.row_filters=["agee < 90"]')


def test_input_headers_are_checked_inside_zip_archives(tmp_path):
    z = tmp_path / "in.zip"
    with zipfile.ZipFile(z, "w") as a:
        a.writestr("ok/events.csv", "event_time,event_type,user_id,product_id,price\n")
        a.writestr("bad/events.csv", "event_time,event_type,user_id,product_id,cost\n")
        a.writestr("__MACOSX/._x.csv", "junk")
    profile = tmp_path / "p.yaml"
    profile.write_text(
        f"extends: {PARAMS_DIR / 'default.yaml'}\n"
        f"ingest:\n  input_path: {z}\n"
        "  column_map: {event_time: event_time, event_type: event_type, user_id: user_id, "
        "product_id: product_id, price: price}\n"
    )
    with pytest.raises(ParamsError) as e:
        _check(profile)
    msg = str(e.value)
    assert f"{profile}: ingest.column_map: {z}!bad/events.csv lacks column(s) ['price']" in msg
    assert "ok/events.csv" not in msg


def test_output_root_that_cannot_be_written_is_refused(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ParamsError, match=r"common.output_root: .*is not a folder"):
        _check(PARAMS_DIR / "smoke.yaml", f"common.output_root={blocker}/runs")
