"""Customer clusters: features from params, a scikit-learn pipeline, k chosen by the knee.

1. :func:`prepare_features` turns a customer table into model input, as params describe:
   derived columns (SQL expressions such as ``"2021 - year_birth"``), value maps for
   categoricals (``marital_status: {Married: with partner, Single: alone}``), row filters (SQL
   conditions such as ``"age < 90 AND income < 600000"``) and missing values (``drop`` rows, or
   ``impute`` with the median). Expressions are checked by :mod:`customer_intel.sqlexpr`.
2. :func:`build_pipeline`: median imputation, one-hot encoding of categoricals, optional
   ``log1p`` of heavy-tailed numeric columns, standard scaling, optional PCA.
3. :func:`select_k`: the inertia curve of k-means++ over ``k_min..k_max`` on a sample,
   ``kneed.KneeLocator(curve="convex", direction="decreasing")`` for the knee, and the
   silhouette (on a sample) for comparison. When there is no knee, the best silhouette is used
   and the result says so.
4. :func:`fit` fits the final model on everyone (``MiniBatchKMeans`` above
   ``minibatch_threshold`` rows), :func:`profiles` describes clusters in the original units and
   names them by ranking a value column (Platinum, Gold, Silver, Bronze, ...).
5. :func:`predict_segment` maps new customers to a cluster id and name with the saved model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from kneed import KneeLocator
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.metrics import pairwise_distances, silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from customer_intel import columns as C
from customer_intel import progress, sqlexpr

#: the largest distance matrix :func:`select_k` keeps for the silhouettes of its sample
SILHOUETTE_MATRIX_BYTES = 256 * 2**20

NAMES = ("Platinum", "Gold", "Silver", "Bronze", "Copper", "Iron", "Stone", "Sand", "Dust", "Mist")


class FeatureError(ValueError):
    """A feature description in params does not fit the data; the message names the key."""


@dataclass(frozen=True)
class FeatureSpec:
    """What params say about the clustering features."""

    numeric: Sequence[str]
    categorical: Sequence[str] = ()
    derived: Mapping[str, str] = field(default_factory=dict)
    value_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    filters: Sequence[str] = ()
    missing: str = "impute"
    log_columns: Sequence[str] = ()
    id_column: str = C.USER_ID


def prepare_features(table: pl.DataFrame, spec: FeatureSpec) -> tuple[pl.DataFrame, dict[str, int]]:
    """Apply derived columns, value maps, filters and the missing-value rule.

    Returns the prepared table (id column + features) and the row counts removed by each step.
    """
    df = sqlexpr.polars_columns(table, spec.derived, where="segmentation.derived_columns")
    for col, mapping in spec.value_maps.items():
        if col not in df.columns:
            raise FeatureError(
                f"segmentation.value_maps.{col}: no such column; available: {sorted(df.columns)}"
            )
        df = df.with_columns(pl.col(col).cast(pl.String).replace(dict(mapping)).alias(col))
    counts = {"rows_in": df.height}
    before = df.height
    # a filter on a missing value ("income < 600000" with no income) does not remove the row:
    # the missing-value rule below decides, and counts it as missing
    df = sqlexpr.polars_filter(
        df, spec.filters, where="segmentation.row_filters", keep_unknown=True
    )
    counts["removed_by_filters"] = before - df.height
    for key, names in (
        ("segmentation.numeric_features", spec.numeric),
        ("segmentation.categorical_features", spec.categorical),
    ):
        missing_cols = [c for c in names if c not in df.columns]
        if missing_cols:
            raise FeatureError(
                f"{key}: column(s) {missing_cols} not found; available: {sorted(df.columns)}"
            )
    wanted = [spec.id_column, *spec.numeric, *spec.categorical]
    if spec.id_column not in df.columns:
        raise FeatureError(
            f"segmentation.id_column: {spec.id_column!r} not found; available: {sorted(df.columns)}"
        )
    df = df.select(wanted)
    if spec.missing == "drop":
        before = df.height
        df = df.drop_nulls()
        counts["removed_missing"] = before - df.height
    elif spec.missing != "impute":
        raise FeatureError(
            f"segmentation.missing: expected 'drop' or 'impute', got {spec.missing!r}"
        )
    else:
        counts["removed_missing"] = 0
    counts["rows_out"] = df.height
    return df, counts


def build_pipeline(spec: FeatureSpec, *, pca_components: int | None = None) -> Pipeline:
    """Impute (median), one-hot encode, optionally log1p, scale, optionally reduce with PCA."""
    logged = [c for c in spec.numeric if c in spec.log_columns]
    plain = [c for c in spec.numeric if c not in spec.log_columns]
    numeric_steps = [("impute", SimpleImputer(strategy="median"))]
    parts = []
    if plain:
        parts.append(("num", Pipeline([*numeric_steps, ("scale", StandardScaler())]), plain))
    if logged:
        parts.append(
            (
                "log",
                Pipeline(
                    [
                        *numeric_steps,
                        ("log1p", FunctionTransformer(np.log1p, feature_names_out="one-to-one")),
                        ("scale", StandardScaler()),
                    ]
                ),
                logged,
            )
        )
    if spec.categorical:
        parts.append(
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                list(spec.categorical),
            )
        )
    steps: list[tuple[str, Any]] = [("features", ColumnTransformer(parts))]
    if pca_components:
        steps.append(("pca", PCA(n_components=pca_components, random_state=0)))
    return Pipeline(steps)


@dataclass(frozen=True)
class KSelection:
    """The k-selection result: the curve, the knee (or None) and the k used, and why."""

    curve: pl.DataFrame  # k, inertia, silhouette
    knee: int | None
    k: int
    reason: str


def select_k(
    x: np.ndarray,
    *,
    k_min: int = 2,
    k_max: int = 10,
    n_init: int = 10,
    random_state: int = 42,
    silhouette_sample: int = 5000,
) -> KSelection:
    """Inertia and silhouette of k-means++ for k in ``k_min..k_max``; pick the knee.

    The knee is ``kneed.KneeLocator(curve="convex", direction="decreasing")`` on the inertia
    curve. Without a knee the k with the best silhouette is used, and ``reason`` says so.
    """
    if not 2 <= k_min < k_max:
        raise ValueError(f"segmentation.k_min/k_max: need 2 <= k_min < k_max, got {k_min}, {k_max}")
    if len(x) <= k_max:
        raise ValueError(f"only {len(x)} customers to cluster; need more than k_max={k_max}")
    rng = np.random.default_rng(random_state)
    sample = rng.choice(len(x), min(silhouette_sample, len(x)), replace=False)
    # The sample's distances are the same for every k: computed once where they fit in
    # SILHOUETTE_MATRIX_BYTES (5,000 customers: 200 MB), the nine silhouettes of the default
    # curve took 1.7 s instead of 3.5 s, equal to the last bit; a larger sample is scored
    # from the features, in scikit-learn's memory-bounded chunks
    points = x[sample]
    metric = "euclidean"
    if len(sample) ** 2 * 8 <= SILHOUETTE_MATRIX_BYTES:
        points, metric = pairwise_distances(points), "precomputed"
    rows = []
    for k in progress.track(range(k_min, k_max + 1), "segmentation: k curve", unit="k values"):
        km = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=random_state).fit(x)
        sil = (
            float(silhouette_score(points, km.labels_[sample], metric=metric))
            if len(set(km.labels_[sample])) > 1
            else float("nan")
        )
        rows.append({"k": k, "inertia": float(km.inertia_), "silhouette": sil})
    curve = pl.DataFrame(rows)
    knee = KneeLocator(
        curve["k"].to_list(), curve["inertia"].to_list(), curve="convex", direction="decreasing"
    ).knee
    best_sil = int(curve.sort("silhouette", descending=True, nulls_last=True)["k"][0])
    if knee is None:
        return KSelection(
            curve,
            None,
            best_sil,
            f"no knee in the inertia curve; using the best silhouette (k = {best_sil})",
        )
    return KSelection(
        curve,
        int(knee),
        int(knee),
        f"knee of the inertia curve at k = {int(knee)} (best silhouette at k = {best_sil})",
    )


@dataclass
class SegmentModel:
    """A fitted segmentation: the preprocessing pipeline, the clusterer and the cluster names."""

    spec: FeatureSpec
    pipeline: Pipeline
    model: KMeans | MiniBatchKMeans
    names: dict[int, str]
    value_column: str
    k: int

    def card(self) -> dict[str, Any]:
        """A JSON-able description (features, k, names) saved beside the model."""
        return {
            "numeric": list(self.spec.numeric),
            "categorical": list(self.spec.categorical),
            "derived": dict(self.spec.derived),
            "value_maps": {k: dict(v) for k, v in self.spec.value_maps.items()},
            "filters": list(self.spec.filters),
            "log_columns": list(self.spec.log_columns),
            "k": self.k,
            "names": {str(k): v for k, v in self.names.items()},
            "value_column": self.value_column,
            "algorithm": type(self.model).__name__,
        }


def fit(
    features: pl.DataFrame,
    spec: FeatureSpec,
    *,
    k: int,
    value_column: str,
    pca_components: int | None = None,
    n_init: int = 10,
    random_state: int = 42,
    minibatch_threshold: int = 200_000,
) -> tuple[SegmentModel, np.ndarray]:
    """Fit the final clustering on everyone; returns the model and each row's cluster id."""
    pipe = build_pipeline(spec, pca_components=pca_components)
    x = pipe.fit_transform(features.to_pandas())
    if len(x) > minibatch_threshold:
        km = MiniBatchKMeans(n_clusters=k, n_init=3, random_state=random_state, batch_size=4096)
    else:
        km = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=random_state)
    labels = km.fit_predict(x)
    if value_column not in features.columns:
        raise FeatureError(
            f"segmentation.value_column: {value_column!r} is not a feature column; "
            f"available: {sorted(features.columns)}"
        )
    means = (
        pl.DataFrame({"cluster": labels, "v": features[value_column].cast(pl.Float64)})
        .group_by("cluster")
        .agg(pl.col("v").mean())
        .sort("v", descending=True)
    )
    names = {
        int(c): (NAMES[i] if i < len(NAMES) else f"Tier {i + 1}")
        for i, c in enumerate(means["cluster"])
    }
    return SegmentModel(spec, pipe, km, names, value_column, k), labels


def transform(model: SegmentModel, features: pl.DataFrame) -> np.ndarray:
    """The preprocessed feature matrix of customers (for plots and diagnostics)."""
    return model.pipeline.transform(features.to_pandas())


def predict_segment(frame: pl.DataFrame, model: SegmentModel) -> pl.DataFrame:
    """Cluster id and name for new customers given their raw attributes.

    ``frame`` holds the same raw columns as the training table; derived columns and value maps
    are applied as in training (filters are not: every row gets a prediction).
    """
    spec = model.spec
    df = sqlexpr.polars_columns(frame, spec.derived, where="segmentation.derived_columns")
    for col, mapping in spec.value_maps.items():
        df = df.with_columns(pl.col(col).cast(pl.String).replace(dict(mapping)).alias(col))
    cols = [*spec.numeric, *spec.categorical]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise FeatureError(f"predict_segment: the frame lacks column(s) {missing}")
    labels = model.model.predict(model.pipeline.transform(df.select(cols).to_pandas()))
    out = pl.DataFrame({"cluster": labels.astype(np.int32)}).with_columns(
        cluster_name=pl.col("cluster").replace_strict(model.names, return_dtype=pl.String)
    )
    if spec.id_column in frame.columns:
        out = out.insert_column(0, frame[spec.id_column])
    return out


def assignments(ids: pl.Series, labels: np.ndarray, model: SegmentModel) -> pl.DataFrame:
    """The ``clusters`` table: each customer's id, cluster number and cluster name."""
    return ids.to_frame().with_columns(
        cluster=pl.Series(labels).cast(pl.Int32),
        cluster_name=pl.Series(labels).replace_strict(model.names, return_dtype=pl.String),
    )


def profiles(features: pl.DataFrame, labels: np.ndarray, model: SegmentModel) -> pl.DataFrame:
    """Per cluster: name, size, share, and the mean of each numeric feature in original units."""
    df = features.with_columns(cluster=pl.Series(labels.astype(np.int32)))
    n = df.height
    prof = df.group_by("cluster").agg(
        [
            pl.len().alias("customers"),
            *[pl.col(c).cast(pl.Float64).mean() for c in model.spec.numeric],
        ]
    )
    return (
        prof.with_columns(
            cluster_name=pl.col("cluster").replace_strict(model.names, return_dtype=pl.String),
            share=pl.col("customers") / n,
        )
        .sort(model.value_column, descending=True)
        .select("cluster", "cluster_name", "customers", "share", *model.spec.numeric)
    )


def standardized_profiles(prof: pl.DataFrame, numeric: Sequence[str]) -> pl.DataFrame:
    """Cluster means as z-scores across clusters (for a heatmap)."""
    return prof.select(
        "cluster_name",
        *[
            ((pl.col(c) - pl.col(c).mean()) / pl.col(c).std().fill_null(1.0).clip(1e-12)).alias(c)
            for c in numeric
        ],
    )


def describe(selection: KSelection, prof: pl.DataFrame) -> str:
    """One sentence on the chosen k and the top cluster."""
    top = prof.row(0, named=True)
    return (
        f"{selection.reason.capitalize()}; the top cluster, {top['cluster_name']}, holds "
        f"{top['share']:.0%} of customers."
    )


def behavioural_features(rfm_table: pl.DataFrame, dim_users: pl.DataFrame) -> pl.DataFrame:
    """Per buyer: RFM values joined with warehouse behaviour (views, carts, sessions, events)."""
    return rfm_table.select(C.USER_ID, "recency_days", "frequency", "monetary").join(
        dim_users.select(C.USER_ID, "views", "carts", "sessions", "events"),
        on=C.USER_ID,
        how="left",
    )


def load_customers(
    source: str,
    *,
    rfm_table: pl.DataFrame,
    dim_users: Any,
    run: Any,
    attributes_path: str | None = None,
    attributes_separator: str = ",",
) -> pl.DataFrame:
    """The customer table to cluster, by ``segmentation.cluster_source``.

    ``warehouse``: :func:`behavioural_features` of ``rfm_table`` and ``dim_users`` (a Polars
    frame, or an Ibis table collected only here); ``sample_customers``: the run's table of that
    name; ``attributes``: the file ``attributes_path``.
    """
    if source == "warehouse":
        users = dim_users if isinstance(dim_users, pl.DataFrame) else dim_users.to_polars()
        return behavioural_features(rfm_table, users)
    if source == "sample_customers":
        return run.read_table("sample_customers")
    if source == "attributes":
        from customer_intel import sources

        return sources.read_table_file(attributes_path, separator=attributes_separator)
    raise ValueError(
        "segmentation.cluster_source: expected warehouse, sample_customers or attributes, "
        f"got {source!r}"
    )


def curve_matrix(
    features: pl.DataFrame,
    spec: FeatureSpec,
    *,
    sample: int,
    seed: int = 42,
    pca_components: int | None = None,
) -> np.ndarray:
    """The preprocessed matrix of (a sample of) customers, for :func:`select_k`."""
    d = features.sample(sample, seed=seed) if features.height > sample else features
    return build_pipeline(spec, pca_components=pca_components).fit_transform(d.to_pandas())


def pca_2d(model: SegmentModel, features: pl.DataFrame, *, seed: int = 42) -> np.ndarray:
    """Customers projected on the first two principal components of the model's input space."""
    x = transform(model, features)
    return (
        PCA(n_components=2, random_state=seed).fit_transform(x) if x.shape[1] >= 2 else np.c_[x, x]
    )
