"""Building blocks shared by every params section model."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo

from customer_intel.paths import PROJECT_ROOT
from customer_intel.timeutil import parse_utc


class Section(BaseModel):
    """A params section: unknown keys are errors, values are immutable once validated.

    ``COMMON_KEYS`` names the keys of the ``common`` section (or whole sections, such as
    ``spark``, passed as one mapping) a stage notebook also receives as parameters (besides
    its own section's keys and the runtime key ``run_dir``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
    COMMON_KEYS: ClassVar[tuple[str, ...]] = ()


def _base_dir(info: ValidationInfo) -> Path:
    ctx = info.context or {}
    return Path(ctx.get("base_dir", PROJECT_ROOT))


def _existing_path(value: str | None, info: ValidationInfo) -> str | None:
    """Check that a path or glob from a params file names at least one existing file."""
    if value is None or value == "":
        return value
    p = Path(value).expanduser()
    p = p if p.is_absolute() else _base_dir(info) / p
    if any(ch in str(p) for ch in "*?["):
        if not glob.glob(str(p), recursive=True):
            raise ValueError(f"no file matches the pattern {str(p)!r}")
    elif not p.exists():
        raise ValueError(f"file not found: {str(p)!r}")
    return str(p.resolve()) if not any(ch in str(p) for ch in "*?[") else str(p)


#: A path or glob (relative to the project root) that must exist; ``None`` means "not given".
InputPath = Annotated[str | None, AfterValidator(_existing_path)]


def _date_text(value: object) -> object:
    """A YAML date (``-p x=2019-11-01`` is read as a date, not text) back to ISO text."""
    import datetime as dt

    return value.isoformat() if isinstance(value, dt.date) else value


def _iso_date(value: str | None) -> str | None:
    if value is not None:
        parse_utc(value)  # raises with the expected form
    return value


#: An ISO date or date-time given as text (UTC unless it says otherwise); ``None``: not given.
IsoDate = Annotated[str | None, BeforeValidator(_date_text), AfterValidator(_iso_date)]
