"""Progress lines of long library steps: throttled, with rate and ETA, one line when quiet."""

from __future__ import annotations

import pytest

from customer_intel import progress


def test_lines_are_throttled_and_the_closing_line_always_comes(monkeypatch, capsys):
    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    clock = iter([0.0, 0.5, 1.0, 11.0, 11.5, 12.0, 30.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    with progress.Progress("ingest: days", total=4, unit="days", interval=10) as bar:
        bar.update(1, rows=1_000)  # t=0.5: too soon
        bar.update(1, rows=1_000)  # t=1.0: too soon
        bar.update(1, rows=2_000)  # t=11: a line
        bar.update(1, rows=1_000)  # t=11.5: too soon again
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "ingest: days 3/4 days (75%), 4,000 rows, 11.0 s, 363.6 rows/s, ETA 3.7 s",
        "ingest: days done: 4 days, 5,000 rows in 12.0 s",
    ]


def test_quiet_mode_prints_only_the_closing_line(monkeypatch, capsys):
    monkeypatch.setenv(progress.MODE_ENV, "quiet")
    for _ in progress.track(range(3), "segmentation: k curve", unit="k values"):
        pass
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("segmentation: k curve done: 3 k values in ")


def test_line_without_total_or_rows_and_durations():
    bar = progress.Progress("warehouse: tables", unit="tables", interval=1e9)
    bar.done = 2
    assert bar.line(bar.started + 4) == "warehouse: tables 2 tables, 4.0 s, 2.0 s each"
    bar.done = 8
    assert bar.line(bar.started + 4) == "warehouse: tables 8 tables, 4.0 s, 2.0 tables/s"
    assert progress.duration(59.94) == "59.9 s"
    assert progress.duration(168) == "2m 48s"
    assert progress.duration(3720) == "1h 02m"


def test_an_error_inside_a_step_prints_no_closing_line(capsys):
    with pytest.raises(RuntimeError), progress.Progress("x", total=2, interval=1e9) as bar:
        bar.update(1)
        raise RuntimeError("boom")
    assert "done" not in capsys.readouterr().out
