"""Progress lines for long library steps: done/total, rate and ETA, throttled.

A step that takes long (ingesting days, building warehouse tables, the k curve, boosting
rounds, bootstrap batches) reports what it has done so far, in the notebook's output and, when
the pipeline runs the notebook, in the runner's console and ``run.log``::

    with progress.Progress("ingest: days", total=61, unit="days") as bar:
        for day in days:
            ...
            bar.update(1, rows=len(df))

prints at most one line every ``CUSTOMER_INTEL_PROGRESS_SECONDS`` (default 10) seconds::

    ingest: days 12/61 (20%), 18.1M rows, 41.3 s, 0.44M rows/s, ETA 2m 48s

and always a closing line (``... done: 61 days, 110.0M rows in 3m 2s``). With
``CUSTOMER_INTEL_PROGRESS=quiet`` (the runner's ``--quiet-cells``) only the closing line is
printed, so a scheduler's log keeps one line per step. Plain ``print`` to stdout, not a
terminal bar: papermill forwards stdout line by line, and carriage-return bars flood logs.
(tqdm would draw a widget in JupyterLab but a stream of carriage-return updates in the
runner's log.)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

#: Environment variable: ``quiet`` prints only each step's closing line.
MODE_ENV = "CUSTOMER_INTEL_PROGRESS"
#: Environment variable: seconds between two progress lines of one step.
INTERVAL_ENV = "CUSTOMER_INTEL_PROGRESS_SECONDS"


def _count(n: float) -> str:
    """1234 -> '1,234'; 12_345_678 -> '12.3M'."""
    if abs(n) >= 10_000_000:
        return f"{n / 1e6:,.1f}M"
    return f"{n:,.0f}"


def duration(seconds: float) -> str:
    """Seconds as '41.3 s', '2m 48s' or '1h 02m'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


class Progress:
    """Throttled progress of one step; use as a context manager.

    Parameters
    ----------
    step
        What is being done, e.g. ``"warehouse: tables"``.
    total
        How many units there are, when known (gives the percentage and the ETA).
    unit
        Name of the unit counted by :meth:`update` (days, tables, k values, rounds, ...).
    interval
        Seconds between lines; default from ``CUSTOMER_INTEL_PROGRESS_SECONDS`` (10).
    """

    def __init__(
        self,
        step: str,
        total: int | None = None,
        unit: str = "steps",
        interval: float | None = None,
    ) -> None:
        self.step = step
        self.total = total
        self.unit = unit
        self.quiet = os.environ.get(MODE_ENV, "").lower() == "quiet"
        env_interval = os.environ.get(INTERVAL_ENV)
        self.interval = (
            interval if interval is not None else float(env_interval) if env_interval else 10.0
        )
        self.done = 0
        self.rows = 0
        self.note = ""
        self.started = time.perf_counter()
        self._last_line = self.started

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()

    def update(self, n: int = 1, *, rows: int = 0, note: str = "") -> None:
        """Count ``n`` more units done (and ``rows`` rows processed); print if it is time."""
        self.done += n
        self.rows += rows
        self.note = note
        now = time.perf_counter()
        if not self.quiet and now - self._last_line >= self.interval:
            self._last_line = now
            self._print(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The current progress line."""
        elapsed = (now or time.perf_counter()) - self.started
        parts = [f"{self.step} {self.done:,}" + (f"/{self.total:,}" if self.total else "")]
        if self.total:
            parts[0] += f" {self.unit} ({self.done / self.total:.0%})"
        else:
            parts[0] += f" {self.unit}"
        if self.rows:
            parts.append(f"{_count(self.rows)} rows")
        parts.append(duration(elapsed))
        rate_n, rate_unit = (self.rows, "rows") if self.rows else (self.done, self.unit)
        if elapsed > 0 and (self.rows or self.done >= 2):
            rate = rate_n / elapsed
            if rate >= 1e6:
                parts.append(f"{rate / 1e6:.2f}M {rate_unit}/s")
            elif rate >= 1 or self.rows:
                parts.append(f"{rate:,.1f} {rate_unit}/s")
            else:  # slow units: the time each takes reads better than 0.0 per second
                parts.append(f"{elapsed / self.done:.1f} s each")
        if self.total and 0 < self.done < self.total:
            parts.append(f"ETA {duration(elapsed / self.done * (self.total - self.done))}")
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)

    def close(self) -> None:
        """Print the closing line: what was done and how long it took."""
        elapsed = time.perf_counter() - self.started
        rows = f", {_count(self.rows)} rows" if self.rows else ""
        self._print(f"{self.step} done: {self.done:,} {self.unit}{rows} in {duration(elapsed)}")

    @staticmethod
    def _print(text: str) -> None:
        print(text, file=sys.stdout, flush=True)


def track(
    items: Iterable[T], step: str, *, total: int | None = None, unit: str = "steps"
) -> Iterator[T]:
    """Iterate over ``items``, reporting one unit of progress per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(step, total=total, unit=unit) as bar:
        for item in items:
            yield item
            bar.update(1)
