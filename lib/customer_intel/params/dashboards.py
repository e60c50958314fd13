"""The ``dashboards`` section: what stakeholders see and how the server runs."""

import ipaddress

from pydantic import Field, field_validator

from customer_intel.params._base import Section


class DashboardsParams(Section):
    """Parameters of the Voila dashboards (read from the last good run's resolved params)."""

    allow_raw_customer_ids: bool = Field(False, description="show raw ids instead of pseudonyms")
    pseudonym_salt: str | None = Field(
        None,
        min_length=16,
        description="salt of the pseudonyms; null: a secret one made on first use under "
        "<output root>/.secrets/ (outside git)",
    )
    currency: str = Field(
        "USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 currency of the prices"
    )
    top_n: int = Field(10, ge=1, le=100, description="rows in top-N tables")
    period_days: int = Field(
        30, ge=1, le=365, description="KPI period compared with the one before"
    )
    host: str = Field("127.0.0.1", description="loopback address to bind")
    port: int = Field(8866, ge=1024, le=65535, description="port of the dashboard server")

    @field_validator("host")
    @classmethod
    def _loopback(cls, value: str) -> str:
        try:
            loopback = ipaddress.ip_address(value).is_loopback
        except ValueError:
            loopback = False  # a name ("127.0.0.1.evil.com") is never taken as loopback
        if not loopback:
            raise ValueError(
                f"{value!r} is not a loopback address; the dashboards bind only to one such as "
                "127.0.0.1 or ::1 (put a reverse proxy in front to serve others)"
            )
        return value
