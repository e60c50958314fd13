"""The ``experiments`` section of a params profile (stage notebook parameters, one to one)."""

from typing import ClassVar

from customer_intel.params._base import Section


class ExperimentsParams(Section):
    """Parameters of the experiments stage."""

    COMMON_KEYS: ClassVar[tuple[str, ...]] = ("seed", "engine")
