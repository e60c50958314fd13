"""The ``spark`` section: where and how the Spark engine runs (``common.engine: spark``).

Only this section changes to point a profile at a cluster: ``master`` (``local[*]``,
``spark://host:7077``, ``yarn``, ``k8s://...``) or ``remote`` (Spark Connect, ``sc://host:port``),
memory, and any ``spark.*`` setting under ``conf``. The stage notebooks receive it whole as
their ``spark`` parameter; :mod:`customer_intel.spark` builds the session from it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SparkParams(BaseModel):
    """The ``spark:`` params section: where and how the Spark engine runs.

    Configured as every params section is (unknown keys are errors, values immutable).
    :mod:`customer_intel.spark` imports it from here: params depend on nothing but pydantic.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    master: str = Field(
        "local[*]", description="spark.master: local[*], spark://host:7077, yarn, k8s://..."
    )
    remote: str | None = Field(
        None,
        pattern=r"^sc://[^\s/]+(:\d+)?(/.*)?$",
        description="Spark Connect URL (sc://host:port); when set, master is not used",
    )
    app_name: str = Field("customer_intel", description="application name shown by the cluster")
    driver_memory: str = Field(
        "2g", pattern=r"^\d+[kmgt]?$", description="spark.driver.memory (e.g. 2g)"
    )
    executor_memory: str | None = Field(
        None, pattern=r"^\d+[kmgt]?$", description="spark.executor.memory; null: Spark's default"
    )
    shuffle_partitions: int = Field(
        8, ge=1, description="spark.sql.shuffle.partitions (Spark's 200 is for clusters)"
    )
    log_level: str = Field(
        "WARN",
        pattern=r"^(ALL|DEBUG|INFO|WARN|ERROR|FATAL|OFF)$",
        description="log level of the Spark JVM",
    )
    ui: bool = Field(False, description="start the Spark web UI (a port per stage)")
    conf: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="any other spark.* setting, passed as given"
    )

    @field_validator("conf")
    @classmethod
    def _spark_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in value if not k.startswith("spark.")]
        if bad:
            raise ValueError(f"keys must be Spark settings starting with 'spark.'; got {bad}")
        return value
