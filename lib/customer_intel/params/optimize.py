"""The ``optimize`` section: optimized Parquet and the warehouse."""

from typing import ClassVar

from pydantic import Field

from customer_intel.params._base import Section


class OptimizeParams(Section):
    """Parameters of the optimize stage (notebook ``02_optimize``)."""

    COMMON_KEYS: ClassVar[tuple[str, ...]] = ("engine", "spark")

    memory_limit: str = Field(
        "auto",
        pattern=r"^(auto|\d+(\.\d+)?\s*[KMGT]i?B)$",
        description="DuckDB memory cap while building the warehouse (auto: 15% of the "
        "available memory); it spills to disk beyond",
    )
    size_sample_rows: int = Field(
        2_000_000, ge=1_000, description="rows used to measure in-memory bytes before/after"
    )
    timing_repeats: int = Field(3, ge=1, le=20, description="runs per timed query (best kept)")
    timing_days: int = Field(
        7,
        ge=0,
        description="the timed questions read the last N days of events, so their cost does "
        "not grow with the history (0: all days)",
    )
