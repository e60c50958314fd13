"""One module per dashboard; a notebook makes the page object and calls one method per cell."""

from customer_intel.dashboards.pages.customers import Customers
from customer_intel.dashboards.pages.executive import Executive
from customer_intel.dashboards.pages.experiments import Experiments
from customer_intel.dashboards.pages.growth import Growth
from customer_intel.dashboards.pages.quality import Quality
from customer_intel.dashboards.pages.reports import Reports

__all__ = ["Customers", "Executive", "Experiments", "Growth", "Quality", "Reports"]
