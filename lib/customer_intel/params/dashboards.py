"""The ``dashboards`` section of a params profile (stage notebook parameters, one to one)."""

from typing import ClassVar

from customer_intel.params._base import Section


class DashboardsParams(Section):
    """Parameters of the dashboards stage."""

    COMMON_KEYS: ClassVar[tuple[str, ...]] = ("seed", "engine")
