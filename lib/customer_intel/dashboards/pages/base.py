"""What every dashboard page shares: the run, the filters from the URL, the header."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from customer_intel.dashboards import present
from customer_intel.dashboards.data import PAGES, Filters, RunData


def preheated() -> bool:
    """Whether this kernel is one Voila preheated for a page (it waits for its visit)."""
    return os.environ.get("VOILA_PREHEAT") == "True"  # voila.utils.ENV_VARIABLE.VOILA_PREHEAT


def wait_for_visit() -> None:
    """In a kernel Voila preheated for a page: wait here until a visitor asks for the page.

    The server keeps one kernel per page started with the page's imports done
    (:mod:`customer_intel.dashboards.serve`); this returns when a visit arrives, with the
    visit's URL (its filters, ``QUERY_STRING``) in the environment, so what follows reads the
    run and the filters of that visit. Anywhere else (a kernel started for the visit, the
    static report, a test) it returns at once, without importing Voila (2.5 s of imports).
    """
    if not preheated():
        return
    from voila.utils import wait_for_request

    wait_for_request()


class Page:
    """A dashboard page: the last good run's data and the filters of this visit.

    Every method returns something to display, a short message when the run lacks that
    output, or None when there is no run at all (the header then says how to make one).
    """

    name = ""
    #: what the filters change on this page (said under the filter bar)
    applies = ""
    #: whether the page has the filter bar
    filtered = True
    #: modules the page's methods import when first called (kept out of the dashboards' common
    #: imports), imported before a preheated kernel waits for its visit, not during the visit
    preload: tuple[str, ...] = ()

    def __init__(self, root: Path | None = None, query: str | None = None) -> None:
        if query is None and preheated():
            self._warm(root)
            wait_for_visit()
        self.data = RunData(root)
        raw = Filters.from_query(os.environ.get("QUERY_STRING", "") if query is None else query)
        self.filters = self.data.clean(raw) if self.ok else raw
        self.period = self.data.period(self.filters) if self.ok else None

    def _warm(self, root: Path | None) -> None:
        """What a preheated kernel does before it waits: import :attr:`preload`."""
        for module in self.preload:
            importlib.import_module(module)

    @property
    def ok(self) -> bool:
        """Ok."""
        return self.data.run is not None

    @property
    def currency(self) -> str:
        """Currency."""
        return str(self.data.params.get("currency") or "USD")

    def missing(self, what: str) -> present.Html:
        """Missing."""
        return present.message(f"{what} is not in this run.")

    def header(self) -> present.Html:
        """Title once, navigation, the filter bar and the data's dates (or how to make a run)."""
        context: dict[str, Any] = {
            "page": self.name,
            "title": PAGES[self.name],
            "pages": PAGES,
            "query": self.filters.query(),
            "no_run": not self.ok,
            "root": str(self.data.root),
        }
        if self.ok:
            finished = self.data.finished_at[:16].replace("T", " ")
            days = self.data.days
            context |= {
                "run": self.data.run.name,
                "filters": self.filters,
                "filters_shown": self.filtered and days is not None,
                "period": self.period,
                "days": days,
                "segments": self.data.choices("segment"),
                "categories": self.data.choices("category"),
                "experiments": self.data.experiments(),
                "finished": finished,
                "applies": self.applies,
            }
            if days is None:
                return present.Html(
                    present.render("header", **context).data
                    + str(self.missing("The dashboard data (stage dashboard_data)"))
                )
        return present.render("header", **context)
