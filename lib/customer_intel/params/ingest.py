"""The ``ingest`` section: where raw events come from and how they map to the canonical schema."""

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from customer_intel.columns import CANONICAL_COLUMNS, EVENT_TYPES, OPTIONAL_COLUMNS
from customer_intel.params._base import InputPath, Section

EventType = Literal["view", "cart", "remove_from_cart", "purchase"]
#: Input formats the Spark ingest reads natively (a ZIP is not one: see ``IngestParams.engine``).
SPARK_FORMATS = ("csv", "csv.gz", "parquet", "jsonl")

REES46_COLUMNS = {c: c for c in CANONICAL_COLUMNS}


class IngestParams(Section):
    """Parameters of the ingest stage (notebook ``01_ingest``)."""

    COMMON_KEYS: ClassVar[tuple[str, ...]] = ("seed", "data_dir", "spark")

    # Polars stays the default with common.engine: spark too: on one machine its streaming
    # reader ingests the same file several times faster than Spark in local mode, in bounded
    # memory. Spark ingest is for inputs on storage that a cluster reads (see the README).
    engine: Literal["polars", "spark"] = Field(
        "polars",
        description="polars (streaming, one machine) or spark (the spark section's session; "
        "CSV, CSV.gz, Parquet, JSON lines; no ZIP)",
    )

    input_path: InputPath = Field(
        None, description="file or glob of raw events; null = generate the built-in sample"
    )
    sample_events: int = Field(
        1_000_000, ge=10_000, le=200_000_000, description="size of the generated sample"
    )
    format: Literal["auto", "csv", "csv.gz", "parquet", "jsonl", "zip"] = Field(
        "auto", description="input format; auto = from the file extension"
    )
    csv_separator: str = Field(",", min_length=1, max_length=1, description="CSV delimiter")
    column_map: dict[str, str] = Field(
        default_factory=lambda: dict(REES46_COLUMNS),
        description="canonical column -> source column",
    )
    event_type_map: dict[str, EventType] = Field(
        default_factory=lambda: {t: t for t in EVENT_TYPES},
        description="source event label -> canonical event type",
    )
    constant_event_type: EventType | None = Field(
        None, description="every row is this event type (order-line tables: purchase)"
    )
    timestamp_format: str = Field(
        "%Y-%m-%d %H:%M:%S UTC", description="strptime format of the source timestamp"
    )
    timezone: str = Field("UTC", description="time zone of timestamps without an offset")
    session_gap_minutes: int = Field(
        30, ge=1, le=1440, description="inactivity gap that starts a new derived session"
    )
    session_from_order: bool = Field(
        False, description="use order_id as the session (order-line tables)"
    )
    price_is_unit_price: bool = Field(
        False, description="price = unit price x quantity (order-line tables)"
    )
    cancellation_column: str | None = Field(
        None, description="source column whose prefix marks cancelled orders (e.g. InvoiceNo)"
    )
    cancellation_prefix: str = Field("C", description="prefix that marks a cancelled order")
    cancellation_rule: Literal["reject", "keep"] = Field(
        "reject", description="cancelled or returned lines: counted as rejects, or kept"
    )
    drop_duplicates: bool = Field(True, description="drop (and count) exact duplicate events")
    require_user_id: bool = Field(
        True,
        description="reject rows without a user id; false keeps them (counted) for basket "
        "analysis and leaves them out of every per-customer table",
    )
    filters: list[str] = Field(
        default_factory=list, description="SQL conditions a kept row must meet (else rejected)"
    )
    carry_columns: list[str] = Field(
        default_factory=list, description="extra source columns kept beside the canonical ones"
    )
    row_group_size: int = Field(
        122_880, ge=1_024, le=10_000_000, description="rows per Parquet row group of the events"
    )

    @field_validator("column_map")
    @classmethod
    def _canonical_keys(cls, value: dict[str, str]) -> dict[str, str]:
        allowed = set(CANONICAL_COLUMNS) | set(OPTIONAL_COLUMNS)
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ValueError(
                f"unknown canonical column(s) {unknown}; expected some of {sorted(allowed)}"
            )
        for key in ("event_time", "user_id", "product_id", "price"):
            if key not in value:
                raise ValueError(f"the required canonical column {key!r} is not mapped")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; expected an IANA name such as 'UTC' or "
                "'Europe/London'"
            ) from None
        return value

    @model_validator(mode="after")
    def _event_type_source(self) -> "IngestParams":
        if self.constant_event_type is None and "event_type" not in self.column_map:
            raise ValueError("map event_type in column_map or set constant_event_type")
        if self.session_from_order and "order_id" not in self.column_map:
            raise ValueError("session_from_order needs order_id in column_map")
        if self.price_is_unit_price and "quantity" not in self.column_map:
            raise ValueError("price_is_unit_price needs quantity in column_map")
        if self.engine == "spark":
            self._spark_readable()
        return self

    def _spark_readable(self) -> None:
        """Refuse what the Spark ingest cannot read: ZIP archives, strptime directives."""
        from customer_intel.sources import FORMATS
        from customer_intel.timeutil import strptime_to_java

        kind = self.format
        if kind == "auto" and self.input_path:
            kind = FORMATS.get(Path(self.input_path).suffix.lower(), "auto")
        if kind not in (*SPARK_FORMATS, "auto"):
            raise ValueError(
                f"engine 'spark' reads {list(SPARK_FORMATS)}, not {kind!r} (Spark has no ZIP "
                "reader, and files extracted on the driver are not visible to a cluster): "
                "extract the archive first, or use engine 'polars'"
            )
        try:
            strptime_to_java(self.timestamp_format)
        except ValueError as e:
            raise ValueError(f"engine 'spark': timestamp_format: {e}") from None
