"""The ``dashboard_data`` section: the small tables the dashboards read."""

from typing import ClassVar

from pydantic import Field

from customer_intel.params._base import Section


class DashboardDataParams(Section):
    """Parameters of the dashboard-data stage (notebook ``08_dashboard_data``)."""

    COMMON_KEYS: ClassVar[tuple[str, ...]] = ("engine",)

    price_bins: int = Field(
        40, ge=5, le=500, description="bins of the price histogram on the data-quality page"
    )
