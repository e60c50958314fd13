"""Load, merge and validate YAML params profiles before anything runs.

A profile is a YAML mapping with a ``common`` section and one section per stage. A profile may
start with ``extends: other.yaml`` (relative to its own folder) and then override only some keys;
``-p section.key=value`` overrides on the command line come last. The merged mapping is validated
by the pydantic models of the sections; any problem raises :class:`ParamsError`, whose message
names the file that set the key, the key path and what was expected.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from customer_intel.params.common import CommonParams
from customer_intel.params.dashboard_data import DashboardDataParams
from customer_intel.params.dashboards import DashboardsParams
from customer_intel.params.experiments import ExperimentsParams
from customer_intel.params.ingest import IngestParams
from customer_intel.params.metrics import EVENT_COLUMNS, MetricsParams
from customer_intel.params.optimize import OptimizeParams
from customer_intel.params.propensity import PropensityParams
from customer_intel.params.recommendations import RecommendationsParams
from customer_intel.params.segmentation import SegmentationParams
from customer_intel.params.spark import SparkParams
from customer_intel.paths import PARAMS_DIR, PROJECT_ROOT

__all__ = [
    "Params",
    "ParamsError",
    "RUNTIME_KEYS",
    "load_params",
    "load_params_with_origin",
    "params_hash",
    "section_from",
    "stage_parameters",
]

#: Keys the runner injects into every stage notebook besides the params file's keys.
RUNTIME_KEYS = ("run_dir",)


class ParamsError(ValueError):
    """A params profile is invalid; the message names the file, the key path and the problem."""


class Params(BaseModel):
    """A whole, validated params profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    common: CommonParams = Field(default_factory=CommonParams)
    ingest: IngestParams = Field(default_factory=IngestParams)
    optimize: OptimizeParams = Field(default_factory=OptimizeParams)
    segmentation: SegmentationParams = Field(default_factory=SegmentationParams)
    propensity: PropensityParams = Field(default_factory=PropensityParams)
    recommendations: RecommendationsParams = Field(default_factory=RecommendationsParams)
    experiments: ExperimentsParams = Field(default_factory=ExperimentsParams)
    metrics: MetricsParams = Field(default_factory=MetricsParams)
    dashboard_data: DashboardDataParams = Field(default_factory=DashboardDataParams)
    dashboards: DashboardsParams = Field(default_factory=DashboardsParams)
    spark: SparkParams = Field(default_factory=SparkParams)

    @model_validator(mode="after")
    def _metric_sources(self, info: ValidationInfo) -> Params:
        # the metrics section alone cannot know the event log's columns (ingest's
        # carry_columns add some) nor where relative file paths start
        base = Path((info.context or {}).get("base_dir", PROJECT_ROOT))
        events = [*EVENT_COLUMNS, *self.ingest.carry_columns]
        try:
            self.metrics.check_sources(events, base)
        except ValueError as e:
            raise ValueError(f"metrics.{e}") from None
        return self


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params file not found: {path}") from None
    except OSError as e:
        raise ParamsError(f"params file {path} cannot be read: {e.strerror}") from None
    except (yaml.YAMLError, ValueError) as e:  # ValueError: a date such as 2019-13-45
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def _merge(base: dict, over: dict, origin: dict, source: str, prefix: tuple = ()) -> dict:
    """Merge ``over`` into ``base`` section by section.

    A profile overrides single keys of a section; a key's value (even a mapping such as
    ``column_map``) is replaced whole.
    """
    out = copy.deepcopy(base)
    for key, value in over.items():
        path = (*prefix, key)
        if not prefix and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, origin, source, path)
        else:
            out[key] = copy.deepcopy(value)
            origin[path] = source
    return out


def _load_chain(path: Path, origin: dict, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ParamsError(f"{path}: extends: forms a cycle ({chain})")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    merged: dict = {}
    if parent is not None:
        if not isinstance(parent, str):
            raise ParamsError(f"{path}: extends: expected a file name, got {parent!r}")
        target = path.parent / Path(parent).expanduser()
        if not target.exists():
            hint = (
                f"; did you mean {PARAMS_DIR / parent} (use that full path)?"
                if (PARAMS_DIR / parent).exists()
                else ""
            )
            raise ParamsError(
                f"{path}: extends: {target} not found (extends is resolved relative to the "
                f"profile's own folder, {path.parent}){hint}"
            )
        merged = _load_chain(target, origin, (*seen, path))
    return _merge(merged, data, origin, str(path))


def _apply_override(data: dict, origin: dict, text: str) -> dict:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ParamsError(f"override {text!r}: expected section.key=value")
    parts = tuple(k for k in key.strip().split("."))
    if len(parts) < 2 or not all(parts):
        raise ParamsError(f"override {text!r}: expected section.key=value (e.g. common.seed=7)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except (yaml.YAMLError, ValueError):
        # not YAML ('%m/%d/%Y %H:%M' starts like a YAML directive; 2019-13-45 looks like a
        # date and is none): the text as it is, for the models to judge
        value = raw
    out = copy.deepcopy(data)
    node = out
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    origin[parts] = "command line (-p)"
    return out


def _format_errors(err: ValidationError, origin: dict, default_source: str) -> str:
    lines = []
    for e in err.errors(include_url=False):
        loc = tuple(str(x) for x in e["loc"])
        source = default_source
        for n in range(len(loc), 0, -1):
            if loc[:n] in origin:
                source = origin[loc[:n]]
                break
        key = ".".join(loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            allowed = sorted(parent.model_fields) if parent is not None else []
            what = f"unknown key; expected one of {allowed}"
        else:
            got = e.get("input")
            shown = repr(got) if not isinstance(got, dict) else "a mapping"
            msg = e["msg"].removeprefix("Value error, ")
            what = msg if "got " in msg else f"{msg} (got {shown})"
        lines.append(f"{source}: {key}: {what}")
    return "invalid params:\n  " + "\n  ".join(lines)


def _model_at(loc: tuple[str, ...]) -> type[BaseModel] | None:
    model: Any = Params
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def load_params(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, base_dir: Path | None = None
) -> Params:
    """Read a params profile, follow ``extends``, apply ``section.key=value`` overrides, validate.

    Parameters
    ----------
    path
        The YAML profile (e.g. ``params/smoke.yaml``).
    overrides
        ``section.key=value`` strings; values are parsed as YAML (``200``, ``true``, ``[1, 2]``).
    base_dir
        Folder that relative input paths are resolved against (default: the project root).

    Raises
    ------
    ParamsError
        One message listing every problem, each as ``file: key.path: what was expected``.
    """
    return load_params_with_origin(path, overrides, base_dir=base_dir)[0]


def load_params_with_origin(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, base_dir: Path | None = None
) -> tuple[Params, dict[tuple[str, ...], str]]:
    """:func:`load_params`, and which file (or ``-p``) set each key path."""
    path = Path(path)
    origin: dict[tuple, str] = {}
    data = _load_chain(path, origin)
    for text in overrides:
        data = _apply_override(data, origin, text)
    try:
        params = Params.model_validate(data, context={"base_dir": base_dir or PROJECT_ROOT})
    except ValidationError as err:
        raise ParamsError(_format_errors(err, origin, str(path.resolve()))) from None
    if "spark" in (params.common.engine, params.ingest.engine):
        _check_spark(params, origin, path)
    return params, origin


def _check_spark(params: Params, origin: dict, path: Path) -> None:
    """Refuse ``engine: spark`` before anything runs when PySpark or Java is missing."""
    from customer_intel import spark

    problem = spark.requirements_problem(params.spark)
    if problem:
        key = ("common", "engine") if params.common.engine == "spark" else ("ingest", "engine")
        other = "duckdb" if key[0] == "common" else "polars"
        source = origin.get(key, str(path.resolve()))
        raise ParamsError(
            f"invalid params:\n  {source}: {'.'.join(key)}: 'spark' cannot run here: {problem}; "
            f"or use engine '{other}'"
        )


def params_hash(params: Params, length: int = 8) -> str:
    """A short, stable hash of the resolved params (used in run folder names)."""
    blob = json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def stage_parameters(params: Params, section: str, *, run_dir: str | Path) -> dict[str, Any]:
    """The flat notebook parameters of one stage: its section, its common keys, ``run_dir``."""
    model = getattr(params, section)
    values = model.model_dump(mode="json")
    common = params.common.model_dump(mode="json")
    for key in type(model).COMMON_KEYS:
        # a key of ``common``, or a whole section passed as one mapping (``spark``)
        values[key] = common[key] if key in common else values_of(params, key)
    values["run_dir"] = str(run_dir)
    return values


def values_of(params: Params, section: str) -> dict[str, Any]:
    """A whole section as plain values (for a notebook parameter such as ``spark``)."""
    return getattr(params, section).model_dump(mode="json")


def section_from(name: str, namespace: dict[str, Any]) -> BaseModel:
    """Validate a stage's section from a notebook's parameter variables (e.g. ``globals()``).

    Picks exactly the section's keys out of ``namespace``; a missing or invalid one raises
    :class:`ParamsError` naming it.
    """
    model = Params.model_fields[name].annotation
    missing = [k for k in model.model_fields if k not in namespace]
    if missing:
        raise ParamsError(f"{name}: the notebook does not define {missing}")
    try:
        return model.model_validate({k: namespace[k] for k in model.model_fields})
    except ValidationError as err:
        raise ParamsError(_format_errors(err, {}, f"{name} (notebook parameters)")) from None
