"""engine 'spark': what is checked before anything runs, and how the session is configured.

No JVM starts here: Java and PySpark are taken away by monkeypatching (in process) or by the
environment (the runner as a subprocess), so these run everywhere, without the spark extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from customer_intel import pipeline, spark
from customer_intel.params import ParamsError, load_params, stage_parameters
from customer_intel.params.spark import SparkParams
from customer_intel.paths import PARAMS_DIR, PROJECT_ROOT

SMOKE = PARAMS_DIR / "smoke.yaml"


def _no_pyspark(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark -> ImportError


def test_missing_pyspark_is_a_params_error_naming_the_extra(monkeypatch):
    _no_pyspark(monkeypatch)
    with pytest.raises(
        ParamsError,
        match=r"common\.engine: 'spark'.*PySpark is not installed.*"
        r"make setup-spark",
    ):
        load_params(SMOKE, ["common.engine=spark"])


def test_missing_java_is_a_params_error_naming_java(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    if spark.requirements_problem() and "PySpark" in spark.requirements_problem():
        pytest.skip("PySpark not installed: the PySpark message comes first")
    with pytest.raises(ParamsError, match=r"common\.engine: 'spark'.*Java is not found.*no-jdk"):
        load_params(SMOKE, ["common.engine=spark"])


def test_old_java_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", sys.modules.get("pyspark") or object())
    monkeypatch.setattr(spark, "java_version", lambda java=None: 11)
    with pytest.raises(ParamsError, match=r"Java 11 is too old.*17\+"):
        load_params(SMOKE, ["common.engine=spark"])


def test_spark_connect_needs_no_local_java(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", sys.modules.get("pyspark") or object())
    monkeypatch.setattr(spark, "java_version", lambda java=None: None)
    p = load_params(SMOKE, ["common.engine=spark", "spark.remote=sc://spark.example:15002"])
    assert p.spark.remote == "sc://spark.example:15002"
    with pytest.raises(ParamsError, match=r"Java is not found"):
        load_params(SMOKE, ["common.engine=spark"])


def test_duckdb_profiles_do_not_check_spark(monkeypatch):
    _no_pyspark(monkeypatch)
    monkeypatch.setattr(spark, "java_version", lambda java=None: None)
    assert load_params(SMOKE).common.engine == "duckdb"


def test_runner_exits_2_with_the_missing_piece(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    monkeypatch.setattr(spark, "java_version", lambda java=None: None)
    code = pipeline.main(["--params", str(SMOKE), "-p", "common.engine=spark", "--dry-run"])
    assert code == 2
    assert "common.engine: 'spark' cannot run here" in capsys.readouterr().err


def test_run_all_without_pyspark_exits_2(tmp_path):
    # a package named pyspark that fails to import stands in for a missing install
    fake = tmp_path / "fake" / "pyspark"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no pyspark (test)')\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), str(PROJECT_ROOT / "lib")]),
    }
    out = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "run_all.py"),
            "--params",
            str(SMOKE),
            "-p",
            "common.engine=spark",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert "PySpark is not installed" in out.stderr and "common.engine" in out.stderr


def test_spark_section_is_validated_with_the_key_named():
    with pytest.raises(ParamsError, match=r"spark\.conf: .*'executor\.cores'"):
        load_params(SMOKE, ["spark.conf={executor.cores: 4}"])
    with pytest.raises(ParamsError, match=r"spark\.remote"):
        load_params(SMOKE, ["spark.remote=http://host:15002"])
    with pytest.raises(ParamsError, match=r"spark\.mastre: unknown key"):
        load_params(SMOKE, ["spark.mastre=yarn"])


def test_session_conf_quiet_local_and_inside_the_work_dir(tmp_path):
    s = SparkParams(conf={"spark.sql.shuffle.partitions": 64, "spark.eventLog.enabled": True})
    conf = spark.spark_conf(s, tmp_path / ".spark")
    assert conf["spark.master"] == "local[*]"
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert f"-Djava.io.tmpdir={tmp_path}" in conf["spark.driver.extraJavaOptions"]
    assert conf["spark.sql.warehouse.dir"].startswith(str(tmp_path))
    assert str(tmp_path) in conf["spark.driver.extraJavaOptions"]
    assert conf["spark.sql.shuffle.partitions"] == "64"  # conf wins over the named keys
    assert conf["spark.eventLog.enabled"] == "true"
    cluster = spark.spark_conf(SparkParams(master="yarn", executor_memory="8g"), tmp_path)
    assert cluster["spark.master"] == "yarn" and cluster["spark.executor.memory"] == "8g"
    connect = spark.spark_conf(SparkParams(remote="sc://h:15002"), tmp_path)
    assert "spark.master" not in connect  # Spark Connect: the server has its master


def test_stage_notebooks_receive_the_spark_section_whole():
    p = load_params(SMOKE, ["spark.master=spark://head:7077", "spark.driver_memory=4g"])
    flat = stage_parameters(p, "segmentation", run_dir=Path("x"))
    assert flat["spark"]["master"] == "spark://head:7077"
    assert flat["spark"]["driver_memory"] == "4g"
    # ingest too (ingest.engine: spark reads on it)
    assert stage_parameters(p, "ingest", run_dir=Path("x"))["spark"] == flat["spark"]
