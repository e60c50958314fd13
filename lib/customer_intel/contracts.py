"""The documents runs write and others read, as typed models: manifest, stage records, cards.

Every reader (the runner deciding what to reuse, the dashboards, tests, a scheduler's script)
reads these through the models, so a key has one spelling and one meaning. They are written
and read as JSON by :mod:`customer_intel.runs` (``write_model`` / ``read_model``).

``StageRecord``
    What a stage notebook records at its end (``stages/<stage>.json``, by
    :meth:`customer_intel.runs.StageRun.finish`): rows in and out, outputs, metrics, memory.
``StageEntry``
    What the runner records of a stage in the manifest: how it ended (``success``,
    ``reused``, ``skipped``, ``failed``, ``cancelled``, ``stale``), where its outputs come from
    (the run it executed in, or the run it was reused from), its content key, its inputs (with
    the keys of the stages that made them) and outputs, time and peak memory.
``Manifest``
    One run: status, timing, params, input files, versions, git facts, host, stages.
``PropensityCard``
    The propensity model's card (``models/propensity_card.json``), read by the dashboards.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StageStatus = Literal["running", "success", "reused", "skipped", "failed", "cancelled", "stale"]
RunStatus = Literal["running", "success", "failed", "interrupted", "abandoned"]
Rows = int | dict[str, int] | None


class _Doc(BaseModel):
    """A JSON document: extra keys of newer writers are kept, not refused."""

    model_config = ConfigDict(extra="allow")


class StageRecord(_Doc):
    """``stages/<stage>.json``: what a stage notebook did (written by ``run.finish``)."""

    stage: str
    rows_in: Rows = None
    rows_out: Rows = None
    outputs: list[str] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    kernel_peak_rss_mb: float | None = None
    kernel_seconds: float | None = None


class StageInput(_Doc):
    """One input of a stage: a run-folder item, or a file named in params."""

    item: str  # "warehouse", "tables/rfm", or "file:<path>"
    made_by: str | None = None  # the stage that writes it (None for an external file)
    key: str | None = None  # that stage's content key, or the file's fingerprint


class StageEntry(_Doc):
    """The manifest's account of one stage."""

    status: StageStatus
    notebook: str | None = None
    key: str | None = None
    run: str | None = None  # the run whose folder holds the outputs (this one or a source)
    reason: str | None = None  # why skipped, stale, cancelled
    error: str | None = None
    inputs: list[StageInput] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    rows_in: Rows = None
    rows_out: Rows = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    wall_seconds: float | None = None
    startup_seconds: float | None = None  # waiting for the kernel and its imports
    peak_rss_mb: float | None = None  # kernel + child processes (a local Spark JVM), sampled
    kernel_peak_rss_mb: float | None = None  # the kernel's Python process alone
    children_peak_rss_mb: float | None = None  # the kernel's children alone (sampled)


class Manifest(_Doc):
    """``manifest.json`` of a run."""

    run_id: str
    status: RunStatus
    started_at: str
    finished_at: str | None = None
    wall_seconds: float | None = None
    params_file: str
    overrides: list[str] = Field(default_factory=list)
    params_hash: str
    params: dict[str, Any]
    inputs: list[dict[str, Any]] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    git: dict[str, Any] = Field(default_factory=dict)
    host: dict[str, Any] = Field(default_factory=dict)
    runner_pid: int | None = None
    jobs: int | None = None
    error: str | None = None
    stages: dict[str, StageEntry] = Field(default_factory=dict)


class PropensityWindows(_Doc):
    """The propensity model's time windows (ISO dates; lengths in days)."""

    cutoff: str
    label_end: str
    label_days: int
    observation_days: int | None  # None: all history before the cutoff


class Targeting(_Doc):
    """The profit-optimal targeting depth and what it assumes."""

    depth: int
    share: float
    expected_conversions: float
    expected_profit: float
    contact_cost: float
    margin: float
    recommendation: str


class PropensityCard(_Doc):
    """``models/propensity_card.json``: what the propensity model is and how it did."""

    features: list[str]
    lightgbm_params: dict[str, Any]
    best_iteration: int
    calibration: str
    windows: PropensityWindows
    metrics: dict[str, Any]
    targeting: Targeting
    trained_at: str
