"""The ``recommendations`` section of a params profile (stage notebook parameters, one to one)."""

from typing import ClassVar

from customer_intel.params._base import Section


class RecommendationsParams(Section):
    """Parameters of the recommendations stage."""

    COMMON_KEYS: ClassVar[tuple[str, ...]] = ("seed", "engine")
