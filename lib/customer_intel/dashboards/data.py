"""What the dashboards read: the last good run, its small precomputed tables, the filters.

One reader per table (:meth:`RunData.table` and the named accessors below), one definition
per number (:func:`kpis`), computed from the tables the ``dashboard_data`` stage wrote
(:mod:`customer_intel.dashboards.build`). Nothing here queries the events.

Filters come from the page's URL query string (``?from=2019-11-01&to=2019-11-30&segment=
Champions&category=electronics&experiment=...``), so a filtered view can be shared; Voila
gives the kernel the query string in ``$QUERY_STRING``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import polars as pl

from customer_intel import runs
from customer_intel.contracts import Manifest, PropensityCard
from customer_intel.paths import OUTPUTS_DIR

ENV_OUTPUT_ROOT = "CUSTOMER_INTEL_OUTPUT_ROOT"
#: The dashboards, in the order of the navigation bar: notebook name -> title.
PAGES = {
    "executive": "Executive overview",
    "customers": "Customers",
    "growth": "Growth",
    "experiments": "Experiments",
    "quality": "Data quality",
    "reports": "Reports",
}
DASHBOARDS = tuple(PAGES)


ALL = "(all)"
SECRETS_DIR = ".secrets"


def output_root() -> Path:
    """The output root the dashboards read (``$CUSTOMER_INTEL_OUTPUT_ROOT`` or ``outputs/``)."""
    return Path(os.environ.get(ENV_OUTPUT_ROOT) or OUTPUTS_DIR)


def latest_run(root: Path | None = None) -> Path | None:
    """The last successful run folder, or None."""
    link = (root or output_root()) / "latest"
    if not link.exists():
        return None
    run = link.resolve()
    try:
        manifest = runs.read_manifest(run)
    except (OSError, ValueError):  # a manifest that does not validate is not shown
        return None
    return run if manifest.status == "success" else None


def pseudonymize(ids: pl.Series, salt: str) -> pl.Series:
    """Stable pseudonyms: ``C-`` + 10 hex digits of a salted BLAKE2b of the id."""
    return pl.Series(
        ids.name,
        [f"C-{hashlib.blake2b(f'{salt}:{v}'.encode(), digest_size=5).hexdigest()}" for v in ids],
    )


def secret_salt(root: Path, configured: str | None = None) -> str:
    """The pseudonym salt: ``configured`` (params) when set, else this deployment's own.

    The deployment's salt is 32 random bytes made on first use and kept in
    ``<root>/.secrets/pseudonym_salt`` (mode 0600, outside git: ``outputs/`` is ignored), so
    a pseudonym cannot be reversed by hashing candidate ids with a salt from the repository.
    """
    if configured:
        return configured
    path = root / SECRETS_DIR / "pseudonym_salt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # first writer wins; a concurrent page reads the same salt
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


# -- filters -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Filters:
    """The filters of a page (None = not set), and what the URL asked for that was invalid."""

    start: dt.date | None = None
    end: dt.date | None = None
    segment: str = ALL
    category: str = ALL
    experiment: str | None = None
    problems: tuple[str, ...] = ()

    @classmethod
    def from_query(cls, query: str) -> Filters:
        """Parse ``from``, ``to``, ``segment``, ``category``, ``experiment`` from a query string."""
        q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=False).items()}
        problems: list[str] = []

        def date(key: str, label: str) -> dt.date | None:
            if not q.get(key):
                return None
            try:
                return dt.date.fromisoformat(q[key])
            except ValueError:
                problems.append(f"The {label} date {q[key]!r} is not a date like 2019-11-30.")
                return None

        start, end = date("from", "start"), date("to", "end")
        if start and end and start > end:
            problems.append("The start date is after the end date; the two were swapped.")
            start, end = end, start
        return cls(
            start=start,
            end=end,
            segment=q.get("segment") or ALL,
            category=q.get("category") or ALL,
            experiment=q.get("experiment") or None,
            problems=tuple(problems),
        )

    def query(self, **changes: Any) -> str:
        """The query string of these filters (with ``changes``), for links and sharing."""
        f = replace(self, **changes) if changes else self
        q = {
            "from": f.start.isoformat() if f.start else None,
            "to": f.end.isoformat() if f.end else None,
            "segment": None if f.segment == ALL else f.segment,
            "category": None if f.category == ALL else f.category,
            "experiment": f.experiment,
        }
        return urlencode({k: v for k, v in q.items() if v})


@dataclass(frozen=True)
class Period:
    """A closed range of days."""

    start: dt.date
    end: dt.date

    @property
    def days(self) -> int:
        """Days."""
        return (self.end - self.start).days + 1

    def before(self) -> Period:
        """The period of the same length that ends the day before this one starts."""
        end = self.start - dt.timedelta(days=1)
        return Period(end - dt.timedelta(days=self.days - 1), end)


# -- numbers (one definition each) -------------------------------------------------------------
def kpis(daily: pl.DataFrame, buyers: pl.DataFrame, period: Period) -> dict[str, float]:
    """The headline numbers of one period.

    From ``dash_daily`` rows of one segment x category (already filtered) and the matching
    ``dash_buyer_days`` rows.

    revenue, orders (sessions with a purchase), sessions, conversion = orders / sessions,
    aov = revenue / orders, customers = distinct buyers (exact, from ``dash_buyer_days``).
    """
    in_p = (pl.col("event_date") >= period.start) & (pl.col("event_date") <= period.end)
    d = daily.filter(in_p)
    revenue = float(d["revenue"].sum())
    orders = int(d["orders"].sum())
    sessions = int(d["sessions"].sum())
    return {
        "revenue": revenue,
        "orders": float(orders),
        "sessions": float(sessions),
        "customers": float(buyers.filter(in_p)["user_id"].n_unique()),
        "conversion": orders / sessions if sessions else 0.0,
        "aov": revenue / orders if orders else 0.0,
    }


def change(current: float, previous: float) -> float | None:
    """Relative change, or None when there is nothing to compare with."""
    return current / previous - 1 if previous else None


# -- the run -----------------------------------------------------------------------------------
class RunData:
    """The last successful run under ``root`` and its tables (each read once, then cached)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or output_root()
        self.run = latest_run(self.root)
        self.manifest: Manifest | None = None
        if self.run is not None:
            self.manifest = runs.read_manifest(self.run)
        self._tables: dict[str, pl.DataFrame | None] = {}

    @property
    def params(self) -> dict[str, Any]:
        """The run's ``dashboards`` params section."""
        return self.section("dashboards")

    def section(self, name: str) -> dict[str, Any]:
        """Any params section the run ran with."""
        return self.manifest.params.get(name, {}) if self.manifest else {}

    @property
    def finished_at(self) -> str:
        """When the run finished (ISO, UTC), or ""."""
        return (self.manifest.finished_at or "") if self.manifest else ""

    def table(self, name: str) -> pl.DataFrame | None:
        """A table of the run, or None when the run lacks it (read once per page)."""
        if name not in self._tables:
            path = self.run / "tables" / f"{name}.parquet" if self.run else None
            self._tables[name] = pl.read_parquet(path) if path and path.exists() else None
        return self._tables[name]

    def propensity_card(self) -> PropensityCard | None:
        """The propensity model card of the run (``models/propensity_card.json``), or None."""
        path = self.run / "models" / "propensity_card.json" if self.run else None
        return runs.read_model(PropensityCard, path) if path and path.exists() else None

    @cached_property
    def salt(self) -> str:
        """Salt."""
        return secret_salt(self.root, self.params.get("pseudonym_salt"))

    # -- the filter grain ------------------------------------------------------------------
    @cached_property
    def days(self) -> Period | None:
        """First and last day with data (from ``dash_daily``)."""
        d = self.table("dash_daily")
        if d is None or d.is_empty():
            return None
        return Period(d["event_date"].min(), d["event_date"].max())

    def choices(self, column: str) -> list[str]:
        """The values a filter can take (segments or categories), biggest revenue first."""
        d = self.table("dash_daily")
        if d is None:
            return []
        other = "category" if column == "segment" else "segment"
        rows = d.filter((pl.col(other) == ALL) & (pl.col(column) != ALL))
        ranked = rows.group_by(column).agg(pl.col("revenue").sum()).sort(["revenue", column])
        return ranked[column].reverse().to_list()

    def clean(self, f: Filters) -> Filters:
        """Filters clipped to the data: unknown segment/category dropped with a message."""
        problems = list(f.problems)
        segment, category, experiment = f.segment, f.category, f.experiment
        if experiment is not None and experiment not in self.experiments():
            problems.append(f"There is no experiment {experiment!r}; showing all customers.")
            experiment = None
        if segment != ALL and segment not in self.choices("segment"):
            problems.append(f"There is no segment {segment!r}; showing all segments.")
            segment = ALL
        if category != ALL and category not in self.choices("category"):
            problems.append(f"There is no category {category!r}; showing all categories.")
            category = ALL
        start, end = f.start, f.end
        if self.days is not None:
            lo, hi = self.days.start, self.days.end
            start = min(max(start, lo), hi) if start else None
            end = min(max(end, lo), hi) if end else None
        return replace(
            f,
            start=start,
            end=end,
            segment=segment,
            category=category,
            experiment=experiment,
            problems=tuple(problems),
        )

    def period(self, f: Filters) -> Period | None:
        """The period the page shows: the filter's dates, else the last ``period_days``."""
        if self.days is None:
            return None
        if f.start or f.end:
            return Period(f.start or self.days.start, f.end or self.days.end)
        n = int(self.params.get("period_days", 30))
        return Period(max(self.days.end - dt.timedelta(days=n - 1), self.days.start), self.days.end)

    def experiments(self) -> list[str]:
        """The experiments the filter offers: those that enrolled customers, biggest first."""
        x = self.table("dash_experiment_units")
        if x is None or x.is_empty():
            return []
        return (
            x.group_by("experiment")
            .len()
            .sort(["len", "experiment"])["experiment"]
            .reverse()
            .to_list()
        )

    def enrolled(self, experiment: str) -> pl.DataFrame:
        """``user_id`` of the customers ``experiment`` enrolled."""
        x = self.table("dash_experiment_units")
        return x.filter(pl.col("experiment") == experiment).select("user_id")

    def daily_rows(self, f: Filters) -> pl.DataFrame | None:
        """``dash_daily`` rows (every segment and category) of the filter's experiment.

        The experiment's customers' rows (``dash_daily_experiments``) when one is chosen.
        """
        if f.experiment is None:
            return self.table("dash_daily")
        d = self.table("dash_daily_experiments")
        return None if d is None else d.filter(pl.col("experiment") == f.experiment)

    def daily(self, f: Filters) -> pl.DataFrame | None:
        """``dash_daily`` rows of the filter's experiment, segment x category (all days)."""
        d = self.daily_rows(f)
        if d is None:
            return None
        return d.filter((pl.col("segment") == f.segment) & (pl.col("category") == f.category))

    def buyer_days(self, f: Filters) -> pl.DataFrame | None:
        """``dash_buyer_days`` rows of the filter's experiment, segment and category."""
        b = self.table("dash_buyer_days")
        if b is None:
            return None
        if f.experiment is not None:
            b = b.join(self.enrolled(f.experiment), on="user_id", how="semi")
        if f.segment != ALL:
            b = b.filter(pl.col("segment") == f.segment)
        if f.category != ALL:
            b = b.filter(pl.col("category") == f.category)
        return b

    def product_labels(self) -> dict[str, str]:
        """Product id (as text) -> a label people can read (category, brand, price)."""
        p = self.table("dash_products")
        return {} if p is None else dict(zip(p["product_id"], p["label"], strict=True))
