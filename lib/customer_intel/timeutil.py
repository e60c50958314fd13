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


#: strptime directives and the Java DateTimeFormatter pattern Spark parses the same text with.
#: ``%f`` (fraction of a second, no dot) accepts 1 to 9 digits on both sides.
_STRPTIME_TO_JAVA = {
    "%Y": "yyyy",
    "%m": "MM",
    "%d": "dd",
    "%e": "d",
    "%H": "HH",
    "%I": "hh",
    "%M": "mm",
    "%S": "ss",
    "%y": "yy",
    "%b": "MMM",
    "%h": "MMM",
    "%B": "MMMM",
    "%a": "EEE",
    "%A": "EEEE",
    "%p": "a",
    "%j": "DDD",
    "%z": "xx",
    "%:z": "xxx",
    "%f": "SSSSSSSSS",
    "%F": "yyyy-MM-dd",
    "%T": "HH:mm:ss",
}


def strptime_to_java(fmt: str) -> str:
    """A strptime format (Polars/chrono) as the Java pattern Spark's ``to_timestamp`` reads.

    Literal text is quoted (``' UTC'``). Hand-written: neither Spark nor sqlglot converts
    strptime formats, and the table is small.

    Raises
    ------
    ValueError
        A directive without a Java equivalent here (named, with the supported ones).
    """
    out: list[str] = []
    literal: list[str] = []

    def flush() -> None:
        if literal:
            text = "".join(literal).replace("'", "''")
            out.append(f"'{text}'")
            literal.clear()

    i = 0
    while i < len(fmt):
        if fmt[i] != "%":
            literal.append(fmt[i])
            i += 1
            continue
        directive = fmt[i : i + 3] if fmt[i : i + 2] == "%:" else fmt[i : i + 2]
        if directive == "%%":
            literal.append("%")
        elif directive in _STRPTIME_TO_JAVA:
            flush()
            out.append(_STRPTIME_TO_JAVA[directive])
        else:
            raise ValueError(
                f"the directive {directive!r} of {fmt!r} has no Spark equivalent here; "
                f"supported: {sorted(_STRPTIME_TO_JAVA)} and %%"
            )
        i += len(directive)
    flush()
    return "".join(out)
