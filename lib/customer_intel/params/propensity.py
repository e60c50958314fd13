"""The ``propensity`` section of a params profile (stage notebook parameters, one to one)."""

from typing import ClassVar

from customer_intel.params._base import Section


class PropensityParams(Section):
    """Parameters of the propensity stage."""

    COMMON_KEYS: ClassVar[tuple[str, ...]] = ("seed", "engine")
