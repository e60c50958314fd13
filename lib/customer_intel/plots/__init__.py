"""Every figure is built here: pure functions, frames in, ``plotly.graph_objects.Figure`` out.

They never call ``.show()`` or write files; they share one template and colour map
(:mod:`customer_intel.plots.theme`). One sub-module per stage; all are re-exported here, so a
notebook writes ``plots.segment_sizes(summary)``.
"""

from customer_intel.plots.clv import *  # noqa: F403
from customer_intel.plots.dashboards import *  # noqa: F403
from customer_intel.plots.experiments import *  # noqa: F403
from customer_intel.plots.propensity import *  # noqa: F403
from customer_intel.plots.recommendations import *  # noqa: F403
from customer_intel.plots.reports import *  # noqa: F403
from customer_intel.plots.segmentation import *  # noqa: F403
from customer_intel.plots.theme import COLORS, color_map, styled  # noqa: F401
from customer_intel.plots.warehouse import *  # noqa: F403
