"""Dashboards for stakeholders (Voila): read the last good run's small tables, never write.

- :mod:`.data`: where the run is and the one reader of each precomputed table, the filters
  (from the page's URL) and the numbers the pages show (one definition each);
- :mod:`.build`: the pipeline stage ``dashboard_data`` that precomputes those tables;
- :mod:`.present`: number formats and the jinja2 templates of the HTML blocks;
- :mod:`.widgets`: the interactive forms (scoring, cross-sell, power, campaign);
- :mod:`.pages`: one module per dashboard, one function per notebook cell;
- :mod:`.serve`: ``python -m customer_intel.dashboards`` serves them with Voila on 127.0.0.1.
"""

from customer_intel.dashboards.data import (
    DASHBOARDS,
    ENV_OUTPUT_ROOT,
    latest_run,
    output_root,
    pseudonymize,
)
from customer_intel.dashboards.serve import main, urls, voila_command

__all__ = [
    "DASHBOARDS",
    "ENV_OUTPUT_ROOT",
    "latest_run",
    "main",
    "output_root",
    "pseudonymize",
    "urls",
    "voila_command",
]
