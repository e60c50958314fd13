"""One module per dashboard; a notebook makes the page object and calls one method per cell.

The page classes load on first use (PEP 562 ``__getattr__``): a page's kernel imports its own
module and what that needs, not the five other pages' (each page visit starts a new kernel, so
every import is paid on every visit).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from customer_intel.dashboards.pages.customers import Customers
    from customer_intel.dashboards.pages.executive import Executive
    from customer_intel.dashboards.pages.experiments import Experiments
    from customer_intel.dashboards.pages.growth import Growth
    from customer_intel.dashboards.pages.quality import Quality
    from customer_intel.dashboards.pages.reports import Reports

_MODULES = {
    "Customers": "customers",
    "Executive": "executive",
    "Experiments": "experiments",
    "Growth": "growth",
    "Quality": "quality",
    "Reports": "reports",
}
__all__ = ["Customers", "Executive", "Experiments", "Growth", "Quality", "Reports"]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    return getattr(module, name)
