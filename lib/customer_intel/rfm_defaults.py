"""The default RFM segment rules and codes, apart from :mod:`customer_intel.rfm`.

Here so that the params (``segmentation.segment_rules`` defaults) load without the RFM engine
(Ibis, sqlglot): a dashboard page validating a params section then starts faster.
:mod:`customer_intel.rfm` re-exports these names.
"""

from __future__ import annotations

OTHER = "Other"

#: Rules in the style of the usual RFM segment charts (first match wins).
#: Written with ``>`` and ``<`` only: papermill cannot read a parameter line holding a second
#: ``=``, so ``>=`` in a notebook's parameters cell would hide the parameter from it.
DEFAULT_RULES: tuple[dict[str, str], ...] = (
    {"Champions": "r > 3 AND f > 3 AND m > 3"},
    {"Loyal": "f > 3"},
    {"Potential Loyalists": "r > 3 AND f > 1"},
    {"New Customers": "r > 3 AND f < 2"},
    {"Can't Lose Them": "r < 3 AND f > 3"},
    {"At Risk": "r < 3 AND f > 1"},
    {"Hibernating": "r < 3 AND f < 2 AND m > 2"},
    {"Lost": "r < 2"},
)

#: Code lists in the style of the common "RFM code -> segment" seed tables.
DEFAULT_CODES: dict[str, list[str]] = {
    "Premium Customer": ["555", "554", "545", "544", "455", "454", "445", "444", "334", "443"],
    "Promising": ["553", "552", "551", "543", "542", "541", "453", "452", "451"],
    "Need Attention": ["355", "354", "345", "344", "335", "343", "333"],
    "At Risk": ["255", "254", "245", "244", "155", "154", "145", "144"],
    "Lost": ["111", "112", "121", "211", "122", "212", "221", "222"],
}
