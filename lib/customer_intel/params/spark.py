"""The ``spark`` section: where and how the Spark engine runs (``common.engine: spark``).

Only this section changes to point a profile at a cluster: ``master`` (``local[*]``,
``spark://host:7077``, ``yarn``, ``k8s://...``) or ``remote`` (Spark Connect, ``sc://host:port``),
memory, and any ``spark.*`` setting under ``conf``. The stage notebooks receive it whole as
their ``spark`` parameter; :mod:`customer_intel.spark` builds the session from it.
"""

from customer_intel.spark import SparkParams

__all__ = ["SparkParams"]
