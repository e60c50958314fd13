"""Params profiles: every error names the file, the key path and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from customer_intel.params import ParamsError, load_params, params_hash, stage_parameters
from customer_intel.paths import PARAMS_DIR

from conftest import SHARED_DATA


def _write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize("profile", sorted(PARAMS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_profile_is_valid(profile):
    if "../shared/" in profile.read_text() and not SHARED_DATA.exists():
        pytest.skip(f"{profile.name} reads ../shared/data, which this clone does not have")
    load_params(profile)


def test_unknown_key_names_file_key_and_allowed_keys(tmp_path):
    path = _write(tmp_path, "p.yaml", {"common": {"sed": 1}})
    with pytest.raises(ParamsError) as e:
        load_params(path)
    msg = str(e.value)
    assert f"{path.resolve()}: common.sed: unknown key" in msg
    assert "'seed'" in msg


def test_unknown_section(tmp_path):
    path = _write(tmp_path, "p.yaml", {"segmentaton": {}})
    with pytest.raises(
        ParamsError, match=r"segmentaton: unknown key; expected one of \[.*'segmentation'"
    ):
        load_params(path)


def test_wrong_type_names_key_and_value(tmp_path):
    path = _write(tmp_path, "p.yaml", {"common": {"seed": "forty-two"}})
    with pytest.raises(
        ParamsError, match=r"p\.yaml: common\.seed: Input should be a valid integer.*'forty-two'"
    ):
        load_params(path)


def test_out_of_range_value(tmp_path):
    path = _write(tmp_path, "p.yaml", {"common": {"seed": -1}})
    with pytest.raises(
        ParamsError, match=r"common\.seed: Input should be greater than or equal to 0"
    ):
        load_params(path)


def test_bad_literal_choice(tmp_path):
    path = _write(tmp_path, "p.yaml", {"common": {"engine": "oracle"}})
    with pytest.raises(ParamsError, match=r"common\.engine: Input should be 'duckdb' or 'spark'"):
        load_params(path)


def test_missing_input_file_names_key_and_path(tmp_path):
    path = _write(tmp_path, "p.yaml", {"ingest": {"input_path": "no/such/events.csv"}})
    with pytest.raises(
        ParamsError, match=r"ingest\.input_path: .*file not found.*no/such/events\.csv"
    ):
        load_params(path)


def test_glob_that_matches_nothing(tmp_path):
    path = _write(tmp_path, "p.yaml", {"ingest": {"input_path": str(tmp_path / "*.csv")}})
    with pytest.raises(ParamsError, match=r"ingest\.input_path: .*no file matches the pattern"):
        load_params(path)


def test_all_problems_reported_at_once(tmp_path):
    path = _write(tmp_path, "p.yaml", {"common": {"seed": "x", "engine": 3, "extra": 1}})
    msg = str(pytest.raises(ParamsError, load_params, path).value)
    assert msg.count(str(path.resolve())) == 3


def test_extends_overrides_only_some_keys_and_errors_name_the_file_that_set_them(tmp_path):
    base = _write(tmp_path, "base.yaml", {"common": {"seed": 1, "engine": "duckdb"}})
    child = _write(tmp_path, "child.yaml", "extends: base.yaml\ncommon:\n  seed: 7\n")
    p = load_params(child)
    assert p.common.seed == 7 and p.common.engine == "duckdb"
    _write(tmp_path, "base.yaml", {"common": {"engine": "nope"}})
    with pytest.raises(ParamsError, match=rf"{base.resolve()}: common\.engine"):
        load_params(child)


def test_extends_cycle_and_missing_parent(tmp_path):
    a = _write(tmp_path, "a.yaml", "extends: b.yaml\n")
    _write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ParamsError, match="cycle"):
        load_params(a)
    c = _write(tmp_path, "c.yaml", "extends: missing.yaml\n")
    with pytest.raises(
        ParamsError, match=r"extends: .*missing.yaml not found \(extends is resolved"
    ):
        load_params(c)
    mine = _write(tmp_path, "mine.yaml", "extends: default.yaml\n")
    with pytest.raises(ParamsError, match=r"did you mean .*params/default.yaml"):
        load_params(mine)


def test_invalid_yaml_and_non_mapping(tmp_path):
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(_write(tmp_path, "bad.yaml", "common: [unclosed\n"))
    with pytest.raises(ParamsError, match="expected a mapping of sections"):
        load_params(_write(tmp_path, "list.yaml", "- 1\n- 2\n"))


def test_command_line_overrides(tmp_path):
    p = load_params(PARAMS_DIR / "smoke.yaml", ["common.seed=7", "common.engine=duckdb"])
    assert p.common.seed == 7
    with pytest.raises(
        ParamsError, match=r"command line \(-p\): common\.seed: Input should be a valid integer"
    ):
        load_params(PARAMS_DIR / "smoke.yaml", ["common.seed=seven"])
    with pytest.raises(ParamsError, match="expected section.key=value"):
        load_params(PARAMS_DIR / "smoke.yaml", ["seed"])


def test_hash_is_stable_and_sensitive():
    a = load_params(PARAMS_DIR / "smoke.yaml")
    b = load_params(PARAMS_DIR / "smoke.yaml")
    c = load_params(PARAMS_DIR / "smoke.yaml", ["common.seed=1"])
    assert params_hash(a) == params_hash(b) != params_hash(c)


def test_stage_parameters_are_section_plus_common_keys_plus_run_dir():
    p = load_params(PARAMS_DIR / "smoke.yaml")
    flat = stage_parameters(p, "segmentation", run_dir="/tmp/r")
    assert flat["run_dir"] == "/tmp/r" and flat["seed"] == p.common.seed
    assert set(flat) == set(type(p.segmentation).model_fields) | {
        "seed",
        "engine",
        "run_dir",
    } | set(type(p.segmentation).COMMON_KEYS)


def test_extends_replaces_a_mapping_value_whole_and_overrides_reach_into_it(tmp_path):
    child = _write(
        tmp_path,
        "child.yaml",
        f"extends: {PARAMS_DIR / 'default.yaml'}\ningest:\n  column_map:\n"
        "    event_time: ts\n    user_id: uid\n    product_id: sku\n    price: amount\n"
        "  constant_event_type: purchase\n",
    )
    p = load_params(child)
    assert p.ingest.column_map == {
        "event_time": "ts",
        "user_id": "uid",
        "product_id": "sku",
        "price": "amount",
    }
    assert p.ingest.session_gap_minutes == 30  # other keys still come from default.yaml
    q = load_params(child, ["ingest.column_map.price=unit_price"])
    assert q.ingest.column_map["price"] == "unit_price" and q.ingest.column_map["user_id"] == "uid"


def test_spark_engine_without_java_is_refused_naming_the_file_and_key(tmp_path, monkeypatch):
    # tests/test_spark_setup.py covers the missing pieces one by one
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    path = _write(tmp_path, "p.yaml", {"common": {"engine": "spark"}})
    with pytest.raises(ParamsError, match=rf"{path}: common\.engine: 'spark' cannot run here"):
        load_params(path)


def test_dates_are_typed_iso_dates(tmp_path):
    p = load_params(PARAMS_DIR / "smoke.yaml", ["experiments.window_end=2019-11-01"])
    assert p.experiments.window_end == "2019-11-01"  # YAML read a date; kept as ISO text
    p = load_params(PARAMS_DIR / "smoke.yaml", ["segmentation.as_of=2019-11-01T12:30:00"])
    assert p.segmentation.as_of == "2019-11-01T12:30:00"
    for bad in ("not-a-date", "2019-13-45"):
        with pytest.raises(
            ParamsError, match=rf"segmentation.as_of: expected an ISO date.*'{bad}'"
        ):
            load_params(PARAMS_DIR / "smoke.yaml", [f"segmentation.as_of={bad}"])


def test_a_value_that_is_not_yaml_is_taken_as_text():
    p = load_params(PARAMS_DIR / "smoke.yaml", ["ingest.timestamp_format=%m/%d/%Y %H:%M"])
    assert p.ingest.timestamp_format == "%m/%d/%Y %H:%M"


def test_time_zone_and_loopback_host_are_checked():
    with pytest.raises(ParamsError, match=r"ingest.timezone: unknown time zone 'Mars/Base'"):
        load_params(PARAMS_DIR / "smoke.yaml", ["ingest.timezone=Mars/Base"])
    assert load_params(PARAMS_DIR / "smoke.yaml", ["ingest.timezone=Europe/Paris"])
    for host in ("127.0.0.1.evil.com", "0.0.0.0", "10.0.0.1", "localhost.example"):
        with pytest.raises(ParamsError, match=r"dashboards.host: .* is not a loopback address"):
            load_params(PARAMS_DIR / "smoke.yaml", [f"dashboards.host={host}"])
    for host in ("127.0.0.1", "127.1.2.3", "::1"):
        assert load_params(PARAMS_DIR / "smoke.yaml", [f"dashboards.host={host}"]).dashboards.host


def test_a_params_path_that_is_not_a_file_is_a_params_error(tmp_path):
    blocker = _write(tmp_path, "f", "x")
    with pytest.raises(ParamsError, match="cannot be read"):
        load_params(blocker / "p.yaml")


def test_a_renamed_feature_is_refused_naming_the_new_name(tmp_path):
    # propensity's recency_days (days since the last *event*) is now days_since_last_event, so
    # that recency_days has one meaning: rfm's whole days since the last *purchase*
    features = ["events", "recency_days"]
    path = _write(tmp_path, "p.yaml", {"propensity": {"features": features}})
    with pytest.raises(
        ParamsError,
        match=rf"{tmp_path.resolve() / 'p.yaml'}: propensity\.features: .*'recency_days' is "
        r"now called 'days_since_last_event'",
    ):
        load_params(path)
    path = _write(tmp_path, "q.yaml", {"propensity": {"features": ["days_since_last_event"]}})
    assert load_params(path).propensity.features == ["days_since_last_event"]


def test_loading_params_imports_no_engine_or_model_library():
    # params depend on nothing but pydantic (and yaml): validating a profile must not pull in
    # an engine (ibis, duckdb, polars) or a model library (lightgbm, scikit-learn)
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from customer_intel.params import load_params\n"
        "from customer_intel.paths import PARAMS_DIR\n"
        "load_params(PARAMS_DIR / 'default.yaml')\n"
        "heavy = ('ibis', 'polars', 'duckdb', 'lightgbm', 'sklearn', 'pyspark', 'pandas')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_ingest_engine_spark_refuses_zip_and_unknown_timestamp_directives(tmp_path):
    """ZIP archives and strptime directives without a Spark pattern are params errors."""
    from customer_intel.timeutil import strptime_to_java

    archive = tmp_path / "events.zip"
    archive.write_bytes(b"")
    profile = _write(tmp_path, "p.yaml", f"ingest:\n  engine: spark\n  input_path: {archive}\n")
    with pytest.raises(ParamsError, match=r"ingest: engine 'spark' reads .*not 'zip'.*extract"):
        load_params(profile)
    profile = _write(tmp_path, "q.yaml", "ingest:\n  engine: spark\n  format: zip\n")
    with pytest.raises(ParamsError, match=r"not 'zip'"):
        load_params(profile)
    bad = _write(tmp_path, "r.yaml", "ingest:\n  engine: spark\n  timestamp_format: '%s %U'\n")
    with pytest.raises(ParamsError, match=r"timestamp_format: the directive '%s'"):
        load_params(bad)
    assert load_params(_write(tmp_path, "s.yaml", "ingest:\n  engine: polars\n  format: zip\n"))
    assert strptime_to_java("%Y-%m-%d %H:%M:%S UTC") == "yyyy'-'MM'-'dd' 'HH':'mm':'ss' UTC'"
    assert strptime_to_java("%d/%m/%y %I:%M %p%%") == "dd'/'MM'/'yy' 'hh':'mm' 'a'%'"


def test_ingest_engine_spark_without_java_is_refused_naming_ingest_engine(tmp_path, monkeypatch):
    from customer_intel import spark

    monkeypatch.setattr(spark, "requirements_problem", lambda settings=None: "Java is not found")
    profile = _write(tmp_path, "p.yaml", "ingest:\n  engine: spark\n")
    with pytest.raises(ParamsError, match=r"ingest\.engine: 'spark' cannot run here: Java is"):
        load_params(profile)
