"""The ``common`` section: what every stage shares."""

from typing import Literal

from pydantic import Field, field_validator

from customer_intel.params._base import Section


class CommonParams(Section):
    """Seed, engine and the data and output locations (relative to the project root)."""

    seed: int = Field(42, ge=0, description="seed for every random step of the run")
    engine: Literal["duckdb", "spark"] = Field(
        "duckdb", description="engine that runs the heavy Ibis expressions"
    )
    data_dir: str = Field("data", description="raw inputs and the generated sample's cache")
    output_root: str = Field("outputs", description="where runs/<run_id>/ and latest live")

    @field_validator("engine")
    @classmethod
    def _engine_available(cls, value: str) -> str:
        if value == "spark":
            # The stage code is Ibis and engine-neutral, but the Spark session, the
            # Parquet-backed warehouse and a pyspark install step are not built yet: refuse
            # here, before anything runs, rather than fail in the middle of a run.
            raise ValueError(
                "engine 'spark' is not available in this version (the Ibis stages are "
                "engine-neutral, but the Spark connection and warehouse are not implemented); "
                "use 'duckdb'"
            )
        return value
