"""``python -m customer_intel.dashboards``: serve the dashboards (see :mod:`.serve`)."""

import sys

from customer_intel.dashboards.serve import main

sys.exit(main())
