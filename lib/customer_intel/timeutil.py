"""Dates and times given as text in params: one parser, UTC when no offset is given."""

from __future__ import annotations

import datetime as dt


def parse_utc(text: str | dt.date, *, key: str | None = None) -> dt.datetime:
    """An ISO date (``2019-11-01``) or date-time (``2019-11-01T12:00``) as an aware UTC time.

    A value without an offset is taken as UTC; a date is its midnight. ``key``, when given,
    names the parameter at the start of the error message.

    Raises
    ------
    ValueError
        ``"[<key>: ]expected an ISO date such as 2019-11-01 (or 2019-11-01T12:00), got ..."``.
    """
    if isinstance(text, dt.datetime):
        t = text
    elif isinstance(text, dt.date):
        t = dt.datetime(text.year, text.month, text.day)
    else:
        try:
            t = dt.datetime.fromisoformat(str(text).strip())
        except ValueError:
            raise ValueError(
                f"{key + ': ' if key else ''}expected an ISO date such as 2019-11-01 (or "
                f"2019-11-01T12:00), got {text!r}"
            ) from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)
