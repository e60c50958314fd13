#!/usr/bin/env python
"""Run the customer_intel pipeline: ``python run_all.py --params params/prod.yaml``.

A thin wrapper over :mod:`customer_intel.pipeline`; ``python run_all.py --help`` lists the options.
Exit codes: 0 success, 1 a stage failed, 2 invalid params or usage, 130 interrupted (SIGINT),
143 terminated (SIGTERM).
"""

import sys

from customer_intel.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
