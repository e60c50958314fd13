"""The ``common`` section: what every stage shares."""

from typing import Literal

from pydantic import Field

from customer_intel.params._base import Section


class CommonParams(Section):
    """Seed, engine and the data and output locations (relative to the project root)."""

    seed: int = Field(42, ge=0, description="seed for every random step of the run")
    engine: Literal["duckdb", "spark"] = Field(
        "duckdb",
        description="engine that runs the heavy Ibis expressions; spark needs the spark extra "
        "and Java 17+ (checked when params are loaded) and reads the spark section",
    )
    data_dir: str = Field("data", description="raw inputs and the generated sample's cache")
    output_root: str = Field("outputs", description="where runs/<run_id>/ and latest live")
