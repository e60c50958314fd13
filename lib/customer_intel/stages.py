"""The pipeline's stages and what each reads and writes: the one place the graph comes from.

A stage declares the run-folder items it reads and writes (``warehouse``, ``tables/<name>``),
some depending on params: experiments on an external unit table (``experiments.units_path``)
reads nothing the pipeline makes; segmentation on the sample's customers table reads it. The
runner derives the order from these declarations (:func:`dependencies`), runs independent
stages side by side, skips a stage whose inputs nobody makes, and refuses ``--only X`` when X's
inputs are neither made in the run nor in the last good run. A stage notebook that reads an
item it does not declare fails (:meth:`customer_intel.runs.StageRun.find` checks), so the
declarations stay true.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from customer_intel.params import Params

WAREHOUSE = "warehouse"


def table(name: str) -> str:
    """The run-folder item of a named table."""
    return f"tables/{name}"


@dataclass(frozen=True)
class StageIO:
    """What a stage reads (required, and optional: read when present) and writes."""

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    #: optional inputs read only near the stage's end (``StageRun.await_table``): the stage may
    #: start while their makers run beside it, and waits for them where it reads them
    late: tuple[str, ...] = ()
    #: files named in params that the stage reads (their fingerprints enter its content key)
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: its name, notebook, params section, and what it reads and writes."""

    name: str
    notebook: str
    section: str
    summary: str
    io: StageIO | Callable[[Params], StageIO] = field(default_factory=StageIO)

    def resolve(self, params: Params) -> StageIO:
        """The stage's reads and writes under these params."""
        return self.io(params) if callable(self.io) else self.io


def _ingest(p: Params) -> StageIO:
    sample = () if p.ingest.input_path else (table("sample_assignments"), table("sample_customers"))
    return StageIO(
        writes=(
            table("events_canonical"),
            table("ingest_rejects"),
            table("ingest_summary"),
            table("ingest_sources"),
            *sample,
        ),
        files=(p.ingest.input_path,) if p.ingest.input_path else (),
    )


def _segmentation(p: Params) -> StageIO:
    s = p.segmentation
    customers = (table("sample_customers"),) if s.cluster_source == "sample_customers" else ()
    return StageIO(
        reads=(WAREHOUSE, *customers),
        writes=tuple(
            table(t)
            for t in (
                "rfm",
                "rfm_segments_summary",
                "clv",
                "clv_holdout",
                "clv_tracking",
                "clv_fit",
                "clv_predictions",
                "clv_segments",
                "clv_fr_matrix",
                "clv_at_risk",
                "k_selection",
                "clusters",
                "cluster_profiles",
                "cohort_retention",
            )
        ),
        files=(s.attributes_path,)
        if s.cluster_source == "attributes" and s.attributes_path
        else (),
    )


def _experiments(p: Params) -> StageIO:
    e = p.experiments
    outputs = tuple(
        table(t)
        for t in (
            "experiment_units",
            "experiment_results",
            "experiment_decision",
            "experiment_bootstrap",
            "experiment_segments",
            "experiment_segment_srm",
            "experiment_daily",
            "experiment_power",
            "experiment_diagnostics",
        )
    )
    if e.units_path:  # an external unit table: nothing from the event log
        return StageIO(writes=outputs, files=(e.units_path,))
    return StageIO(reads=(WAREHOUSE, table("sample_assignments")), writes=outputs)


def _metrics(p: Params) -> StageIO:
    """Each metric's table, reading what the metrics' sources name.

    The warehouse, another stage's table or a file. Other stages' tables are late inputs: the
    stage computes its other metrics first and waits for a table only where it reads it
    (``propensity_test_scores`` is written well before propensity ends, while it scores every
    user), so it can run beside propensity instead of after it. A metric whose table no stage
    made in this run (e.g. experiment units without the sample's assignments) is recorded as
    skipped and the others run; one over a file alone needs no other stage.
    """
    specs = p.metrics.metric_specs()
    reads = (WAREHOUSE,) if any(m.source_kind() == "events" for m in specs) else ()
    late = tuple(sorted({table(m.source.table) for m in specs if m.source_kind() == "table"}))
    files = tuple(m.source.path for m in specs if m.source_kind() == "file")
    writes = [table(f"metric_{m.name}") for m in specs]
    return StageIO(
        reads=reads,
        late=late,
        writes=(*writes, table("metrics_summary"), table("forecast_anomalies")),
        files=files,
    )


#: The pipeline, in the order a reader meets it (the runner orders by the declarations).
STAGES: tuple[Stage, ...] = (
    Stage(
        "ingest", "01_ingest.ipynb", "ingest", "raw events -> canonical events + rejects", _ingest
    ),
    Stage(
        "optimize",
        "02_optimize.ipynb",
        "optimize",
        "optimized Parquet + star-schema warehouse",
        StageIO(
            reads=(table("events_canonical"), table("ingest_sources")),
            writes=(WAREHOUSE, table("optimize_sizes"), table("query_timings")),
        ),
    ),
    Stage(
        "segmentation",
        "03_segmentation.ipynb",
        "segmentation",
        "RFM, CLV (BG/NBD, Gamma-Gamma), KMeans++, cohorts",
        _segmentation,
    ),
    Stage(
        "propensity",
        "04_propensity.ipynb",
        "propensity",
        "purchase propensity (LightGBM)",
        StageIO(
            reads=(WAREHOUSE,),
            # each score's RFM segment, when segmentation runs: joined in the last cells, so
            # propensity's features and model run beside segmentation instead of after it
            late=(table("rfm"),),
            writes=tuple(
                table(t)
                for t in (
                    "propensity_scores",
                    "propensity_test_scores",
                    "propensity_metrics",
                    "propensity_deciles",
                    "propensity_profit",
                )
            ),
        ),
    ),
    Stage(
        "recommendations",
        "05_recommendations.ipynb",
        "recommendations",
        "association rules, top-N",
        StageIO(
            reads=(WAREHOUSE,),
            writes=tuple(
                table(t)
                for t in (
                    "frequent_itemsets",
                    "association_rules",
                    "product_recommendations",
                    "user_recommendations",
                    "recommendation_metrics",
                )
            ),
        ),
    ),
    Stage("experiments", "06_experiments.ipynb", "experiments", "A/B test readout", _experiments),
    Stage(
        "metrics",
        "07_metrics.ipynb",
        "metrics",
        "metrics and reports declared in params, forecasts",
        _metrics,
    ),
    Stage(
        "dashboard_data",
        "08_dashboard_data.ipynb",
        "dashboard_data",
        "the small tables the dashboards read",
        StageIO(
            reads=(WAREHOUSE, table("ingest_rejects")),
            # each customer's segment, when segmentation ran; who each experiment enrolled
            optional=(table("rfm"), table("experiment_units")),
            writes=tuple(
                table(t)
                for t in (
                    "dash_daily",
                    "dash_daily_experiments",
                    "dash_experiment_units",
                    "dash_buyer_days",
                    "dash_products",
                    "dash_quality_events",
                    "dash_quality_missing",
                    "dash_quality_prices",
                    "dash_quality_rejects",
                )
            ),
        ),
    ),
)

BY_NAME = {s.name: s for s in STAGES}


def producers(stages: Iterable[Stage], params: Params) -> dict[str, str]:
    """Run-folder item -> the stage that writes it."""
    out: dict[str, str] = {}
    for s in stages:
        for item in s.resolve(params).writes:
            out[item] = s.name
    return out


def dependencies(
    stages: Iterable[Stage], params: Params, *, late: bool = True
) -> dict[str, set[str]]:
    """Stage -> the stages whose outputs it reads (required, optional and, with ``late``, late).

    Without ``late``: the stages it must wait for before it starts.
    """
    stages = list(stages)
    made_by = producers(stages, params)
    deps: dict[str, set[str]] = {}
    for s in stages:
        io = s.resolve(params)
        items = (*io.reads, *io.optional, *(io.late if late else ()))
        deps[s.name] = {made_by[i] for i in items if i in made_by} - {s.name}
    return deps


def late_makers(stages: Iterable[Stage], params: Params) -> dict[str, dict[str, str]]:
    """Stage -> {late input: the stage that makes it} (only inputs some stage makes)."""
    stages = list(stages)
    made_by = producers(stages, params)
    return {s.name: {i: made_by[i] for i in s.resolve(params).late if i in made_by} for s in stages}


def order(stages: Iterable[Stage], params: Params) -> list[Stage]:
    """The stages in an order where each comes after what it reads (stable otherwise)."""
    stages = list(stages)
    deps = dependencies(stages, params)
    done: list[Stage] = []
    pending = list(stages)
    while pending:
        ready = [s for s in pending if deps[s.name] <= {d.name for d in done}]
        if not ready:
            raise ValueError(
                f"the stage declarations form a cycle among {[s.name for s in pending]}"
            )
        done.append(ready[0])
        pending.remove(ready[0])
    return done


def mermaid(stages: Iterable[Stage], params: Params) -> str:
    """The graph as Mermaid text: stages as boxes, an arrow per item one reads of another."""
    stages = list(stages)
    made_by = producers(stages, params)
    lines = ["flowchart LR"]
    for s in stages:
        lines.append(f'    {s.name}["{s.name}<br/><small>{s.notebook}</small>"]')
    for s in stages:
        io = s.resolve(params)
        for item in io.reads:
            if item in made_by and made_by[item] != s.name:
                lines.append(f"    {made_by[item]} -->|{item.removeprefix('tables/')}| {s.name}")
        for item in (*io.optional, *io.late):
            if item in made_by:
                lines.append(f"    {made_by[item]} -.->|{item.removeprefix('tables/')}| {s.name}")
        for f in io.files:
            lines.append(f'    file_{s.name}[("{f}")] --> {s.name}')
    return "\n".join(lines) + "\n"
