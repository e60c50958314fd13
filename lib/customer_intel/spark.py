"""The one place a SparkSession is made (``common.engine: spark``).

Where Spark runs is the ``spark:`` params section alone (:class:`SparkSettings`): local mode
(``local[*]``) by default; ``master`` points the same profile at a cluster (``spark://``,
``yarn``, ``k8s://``) and ``remote`` at a Spark Connect server (``sc://host:port``); ``conf``
passes any ``spark.*`` setting through. The session is started lazily (by the first
:func:`session` call of a stage, through :func:`customer_intel.warehouse.connect` or
:func:`customer_intel.warehouse.build`), with its UI off and its log at WARN so a notebook shows
no port and no JVM chatter, and with its scratch and SQL-warehouse folders inside the run folder.
:func:`stop` (called by the backend's ``disconnect`` at the end of every stage notebook) ends it
and removes the scratch folder.

:func:`requirements_problem` tells, before anything runs, what is missing for Spark (PySpark,
or Java 17+), so params validation can refuse ``engine: spark`` with the missing piece named.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from customer_intel.params.spark import SparkParams

#: Lowest Java major version PySpark 4.0 runs on.
JAVA_MIN = 17
#: log4j2 settings written into the scratch folder: the JVM's log level, on stderr.
LOG4J_FILE = "log4j2.properties"
LOG4J = """rootLogger.level = {level}
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{{HH:mm:ss}} %p %c{{1}}: %m%n
"""


#: The ``spark:`` params section (defined in :mod:`customer_intel.params.spark`).
SparkSettings = SparkParams


def java_version(java: str | None = None) -> int | None:
    """Major version of the Java that Spark would start (``JAVA_HOME`` first), or None."""
    if java is None:
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home) / "bin" / "java") if home else (shutil.which("java") or "java")
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if out.returncode != 0 or not m:
        return None
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major  # "1.8" is Java 8


def requirements_problem(settings: SparkSettings | None = None) -> str | None:
    """What is missing to run the Spark engine, in words; None when nothing is.

    PySpark must import; local and cluster modes also need Java 17+ here (the driver runs
    in a local JVM). With Spark Connect (``remote``) the JVM is the server's, so no local
    Java is needed.
    """
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return (
            "PySpark is not installed: install the spark extra "
            "(make setup-spark, or pip install -e '.[spark]')"
        )
    if settings is not None and settings.remote:
        return None
    major = java_version()
    if major is None:
        where = os.environ.get("JAVA_HOME") or "PATH"
        return (
            f"Java is not found ('java -version' failed; looked in {where}): Spark needs "
            f"Java {JAVA_MIN}+ (Debian: apt-get install -y openjdk-{JAVA_MIN}-jre-headless, "
            "or set JAVA_HOME)"
        )
    if major < JAVA_MIN:
        return f"Java {major} is too old: PySpark 4.0 needs Java {JAVA_MIN}+ (set JAVA_HOME)"
    return None


_active: dict[str, Any] = {}


def settings_from(spark: SparkSettings | Mapping[str, Any] | None) -> SparkSettings:
    """A :class:`SparkSettings` from the notebook's ``spark`` parameter (a dict) or None."""
    if isinstance(spark, SparkSettings):
        return spark
    return SparkSettings.model_validate(dict(spark or {}))


def spark_conf(settings: SparkSettings, work_dir: Path) -> dict[str, str]:
    """Every ``spark.*`` setting the session is built with (``conf`` last, so it wins)."""
    conf = {
        "spark.app.name": settings.app_name,
        "spark.ui.enabled": str(settings.ui).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.warehouse.dir": str(work_dir / "sql-warehouse"),
        # Spark's scratch space (its local dir defaults to java.io.tmpdir) and Derby's files
        # (Spark's default catalog writes derby.log and metastore_db into the current folder)
        # go to the run folder; the JVM logs through LOG4J_FILE at the chosen level from its
        # first line (setLogLevel alone comes after the start-up chatter)
        "spark.driver.extraJavaOptions": (
            f"-Dderby.system.home={work_dir / 'derby'} -Djava.io.tmpdir={work_dir / 'tmp'} "
            f"-Dlog4j.configurationFile={work_dir / LOG4J_FILE}"
        ),
        "spark.sql.parquet.compression.codec": "zstd",
        # Parquet timestamps as UTC microseconds (Spark writes legacy INT96 otherwise), so
        # Polars and DuckDB read the tables with the canonical Datetime(us, UTC)
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    }
    if not settings.remote:
        conf["spark.master"] = settings.master
        conf["spark.driver.memory"] = settings.driver_memory
    if settings.master.startswith("local") and not settings.remote:
        # local mode talks to itself only: bind the driver to loopback (no port on the network,
        # and no warning about the host name resolving to a loopback address)
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    if settings.executor_memory:
        conf["spark.executor.memory"] = settings.executor_memory
    conf.update(
        {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in settings.conf.items()}
    )
    return conf


def session(spark: SparkSettings | Mapping[str, Any] | None, work_dir: Path) -> Any:
    """The stage's SparkSession, started on first use with ``spark`` settings.

    ``work_dir`` (a folder in the run folder) holds Spark's scratch space; it is removed by
    :func:`stop`. A second call in the same process returns the running session.
    """
    if "session" in _active:
        return _active["session"]
    settings = settings_from(spark)
    problem = requirements_problem(settings)
    if problem:
        raise RuntimeError(f"engine 'spark': {problem}")
    from pyspark.sql import SparkSession

    # one folder per process: stages running side by side share the run folder, and each
    # removes its own scratch space when it stops
    work_dir = Path(work_dir) / f"pid{os.getpid()}"
    for sub in ("tmp", "derby"):
        (work_dir / sub).mkdir(parents=True, exist_ok=True)
    (work_dir / LOG4J_FILE).write_text(LOG4J.format(level=settings.log_level))
    if settings.master.startswith("local") and not settings.remote:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # see spark_conf: loopback only
    builder = SparkSession.builder
    if settings.remote:
        builder = builder.remote(settings.remote)
    for key, value in spark_conf(settings, work_dir).items():
        if settings.remote and key == "spark.driver.extraJavaOptions":
            continue  # the server's JVM, started by whoever runs it
        builder = builder.config(key, value)
    s = builder.getOrCreate()
    if not settings.remote:
        s.sparkContext.setLogLevel(settings.log_level)
    _active.update(session=s, work_dir=work_dir)
    atexit.register(stop)
    return s


def stop() -> None:
    """Stop the stage's SparkSession (if one runs) and remove its scratch folder."""
    s = _active.pop("session", None)
    work_dir = _active.pop("work_dir", None)
    if s is not None:
        jvm = jvm_peak_rss_mb()
        if jvm:  # the stage's peak memory is its Python process's; the local JVM is apart
            print(f"spark: local JVM peak RSS {jvm:,.0f} MiB")
        s.stop()
    if work_dir is not None:
        shutil.rmtree(work_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            work_dir.parent.rmdir()  # the run's .spark folder, once no stage uses it


def shutdown_jvm(timeout: float = 60) -> None:
    """End the local JVM that PySpark started (after :func:`stop`), and wait for it.

    A stopped session leaves its JVM running until the Python process exits (the JVM ends
    when its stdin closes); a process that goes on (a test session) ends it here.
    """
    stop()
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    with contextlib.suppress(Exception):
        gateway.shutdown()
    if proc is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the JVM ends when its stdin closes
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    SparkContext._gateway = None
    SparkContext._jvm = None


def jvm_peak_rss_mb() -> float:
    """Peak resident memory (``VmHWM``) of the local JVMs this process started, in MiB."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            if "java" not in child.name():
                continue
            status = Path(f"/proc/{child.pid}/status").read_text()
        except (psutil.Error, OSError):
            continue
        m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        total += int(m.group(1)) / 1024 if m else 0.0
    return total


def _utc_timestamps() -> None:
    """Read Spark's TIMESTAMP as Ibis ``timestamp('UTC')``, as DuckDB's TIMESTAMPTZ is read.

    Spark's TIMESTAMP is an instant shown in the session's time zone (UTC here, always), yet
    Ibis 12 maps it to a naive timestamp: results then came back without a zone, and Polars
    refuses to compare them with the UTC times the rest of the library uses (the canonical
    schema is Datetime(us, UTC)). TIMESTAMP_NTZ stays naive.
    """
    import functools

    import ibis.expr.datatypes as dt
    import pyspark.sql.types as pt
    from ibis.backends.pyspark import datatypes

    datatypes._from_pyspark_dtypes[pt.TimestampType] = functools.partial(
        dt.Timestamp, timezone="UTC"
    )


def _microseconds(result: Any) -> Any:
    """Arrow results with ``timestamp[ns]`` as ``timestamp[us]`` (DuckDB's and the schema's).

    Ibis' PySpark backend goes through pandas, whose timestamps are nanoseconds.
    """
    import pyarrow as pa

    def unit(t: pa.DataType) -> pa.DataType:
        return pa.timestamp("us", t.tz) if pa.types.is_timestamp(t) and t.unit == "ns" else t

    if isinstance(result, pa.Table):
        target = pa.schema([f.with_type(unit(f.type)) for f in result.schema])
        return result if target == result.schema else result.cast(target)
    if isinstance(result, pa.Scalar | pa.Array | pa.ChunkedArray):
        return result if unit(result.type) == result.type else result.cast(unit(result.type))
    return result


def backend(spark: SparkSettings | Mapping[str, Any] | None, work_dir: Path) -> Any:
    """An Ibis PySpark backend on the stage's session; its ``disconnect`` calls :func:`stop`.

    Results arrive as DuckDB's do: UTC timestamps (:func:`_utc_timestamps`) in microseconds.
    """
    import ibis

    s = session(spark, work_dir)  # first: says what is missing before anything imports it
    _utc_timestamps()
    con = ibis.pyspark.connect(s)
    to_pyarrow = con.to_pyarrow
    # to_polars and to_pyarrow_batches go through to_pyarrow too
    con.to_pyarrow = lambda expr, **kw: _microseconds(to_pyarrow(expr, **kw))
    con.disconnect = stop  # the session ends with the stage, scratch folder included
    return con
