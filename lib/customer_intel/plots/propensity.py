"""Figures of the propensity stage (built with :mod:`customer_intel.plots.theme`)."""

from __future__ import annotations

__all__: list[str] = []
