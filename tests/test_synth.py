"""The sample generator: determinism, shape, bounded memory, planted truth consistent with events."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys

import polars as pl
import pytest
from kneed import KneeLocator
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from customer_intel import synth


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "s"
    info = synth.generate(out, 60_000, seed=3)
    events = pl.read_csv(info.events_path).with_columns(
        pl.col("event_time").str.to_datetime("%Y-%m-%d %H:%M:%S UTC", time_zone="UTC")
    )
    return info, events


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = synth.generate(tmp_path / "a", 20_000, seed=5)
    b = synth.generate(tmp_path / "b", 20_000, seed=5)
    c = synth.generate(tmp_path / "c", 20_000, seed=6)
    for name in ("events.csv", "customers.csv"):
        assert _sha(a.folder / name) == _sha(b.folder / name)
    assert _sha(a.events_path) != _sha(c.events_path)


def test_same_bytes_whatever_the_number_of_workers(tmp_path):
    """Chunks come from SeedSequence([seed, chunk]) and are written in chunk order, so worker
    processes (here 2, generating 4 chunks) change nothing in any file."""
    one = synth.generate(tmp_path / "one", 40_000, seed=5, chunk_users=600, workers=1)
    two = synth.generate(tmp_path / "two", 40_000, seed=5, chunk_users=600, workers=2)
    assert two.worker_peak_rss_mb > 0 and one.worker_peak_rss_mb == 0  # really two ways
    files = sorted(p.relative_to(one.folder) for p in one.folder.rglob("*") if p.is_file())
    assert len(files) == 7
    for name in files:
        assert _sha(one.folder / name) == _sha(two.folder / name), name
    assert (one.n_events, one.n_users) == (two.n_events, two.n_users)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    info = synth.generate(tmp_path_factory.mktemp("store") / "s", 300_000, seed=42)
    events = pl.read_csv(info.events_path).with_columns(
        pl.col("event_time").str.to_datetime("%Y-%m-%d %H:%M:%S UTC", time_zone="UTC")
    )
    return info, events


def test_traffic_is_steady_weekly_with_a_black_friday_peak(store):
    """No empty or near-empty day, no cliff at the start or end, no lull around the propensity
    cutoff (Nov 1) or the experiment window (Oct 15-31); weekends quieter than weekdays; the
    days around Black Friday (2019-11-29) well above an ordinary day."""
    _, ev = store
    day = (
        ev.group_by(pl.col("event_time").dt.date().alias("day"))
        .agg(pl.len().alias("events"), pl.col("user_id").n_unique().alias("users"))
        .sort("day")
    )
    assert day.height == 61 and day["day"][0] == dt.date(2019, 10, 1)
    median = day["events"].median()
    assert day["events"].min() > 0.5 * median
    first_week, last_ordinary_week = day["events"][:7].mean(), day["events"][49:56].mean()
    assert 0.8 < first_week / last_ordinary_week < 1.2  # no ramp (the store grows by 8%)
    around_cutoff = day.filter(
        pl.col("day").is_between(dt.date(2019, 10, 27), dt.date(2019, 11, 4))
    )
    assert (around_cutoff["events"] > 0.7 * median).all()  # weekends included
    ordinary = day.filter(pl.col("day") < dt.date(2019, 11, 22))
    weekday = ordinary.group_by(pl.col("day").dt.weekday().alias("wd")).agg(pl.col("events").mean())
    by_day = dict(weekday.iter_rows())
    profile = {wd: by_day[wd] / ordinary["events"].mean() for wd in by_day}
    assert max(profile.values()) - min(profile.values()) > 0.15  # not flat
    assert max(profile[6], profile[7]) < 0.95 < min(profile[d] for d in (1, 2, 3))
    peak = day.filter(pl.col("day").is_between(dt.date(2019, 11, 27), dt.date(2019, 11, 30)))
    assert peak["events"].mean() > 1.3 * median
    assert (
        day.filter(pl.col("day") == dt.date(2019, 11, 29))["events"].item() == day["events"].max()
    )
    # the last event is a minute before the period's end, so cutoff = last event - 30 days
    assert ev["event_time"].max() == dt.datetime(2019, 11, 30, 23, 59, tzinfo=dt.UTC)


def test_funnel_and_scale_of_a_real_store(store):
    """Of the users who viewed, ~10% (8-13%) add to cart and ~60% (50-70%) of those buy
    (distinct users, as fact_funnel counts them); purchases are 1.5-2% of events (at 300k
    events, 1.4-2.1%: a few heavy buyers move it by a tenth of a point); users, sessions and
    products per event such that 110M events give 4-6M users, 12-18M sessions, 200k products."""
    info, ev = store
    users = ev.group_by("event_type").agg(pl.col("user_id").n_unique())
    users = dict(users.iter_rows())
    assert 0.08 <= users["cart"] / users["view"] <= 0.13
    assert 0.50 <= users["purchase"] / users["cart"] <= 0.70
    share = dict(ev["event_type"].value_counts(normalize=True).iter_rows())
    assert 0.014 <= share["purchase"] <= 0.021
    assert share["view"] > 0.9
    scale = 110e6 / ev.height
    assert 4e6 <= ev["user_id"].n_unique() * scale <= 6e6
    assert 12e6 <= ev["user_session"].n_unique() * scale <= 18e6
    assert info.n_users == ev["user_id"].n_unique()
    assert synth.n_products_for(110_000_000) == 200_000
    assert info.n_products == synth.n_products_for(300_000) == 300_000 // 550


def test_size_schema_and_formats(sample):
    info, ev = sample
    assert abs(info.n_events - 60_000) / 60_000 < 0.02
    assert ev.height == info.n_events
    header = info.events_path.open().readline().strip()
    assert (
        header
        == "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
    )
    first = info.events_path.open().readlines()[1]
    assert first.split(",")[0].endswith(" UTC")
    assert set(ev["event_type"].unique()) == {"view", "cart", "remove_from_cart", "purchase"}
    assert ev["category_id"].min() > 10**18 and ev["user_id"].min() >= 10**8
    assert ev["user_session"].str.len_chars().min() == 36


def test_realistic_shape(sample):
    info, ev = sample
    share = dict(ev["event_type"].value_counts(normalize=True).iter_rows())
    assert 0.88 < share["view"] < 0.97  # REES46: ~94% views
    assert 0.35 <= ev["category_code"].is_null().mean() <= 0.42
    assert 0.35 <= ev["brand"].is_null().mean() <= 0.42
    # 500 products at this size, a category per ~5 products (800 categories at 200k products)
    assert info.n_products == synth.n_products_for(60_000) == 500
    assert ev["product_id"].n_unique() > 450 and ev["category_id"].n_unique() > 80
    pop = (
        ev.filter(pl.col("event_type") == "view")["product_id"]
        .value_counts()["count"]
        .sort(descending=True)
    )
    assert pop[:10].sum() > 0.05 * pop.sum()  # heavy head
    sessions = ev.group_by("user_session").agg(
        (pl.col("event_type") == "cart").any().alias("cart"),
        (pl.col("event_type") == "purchase").any().alias("buy"),
    )
    assert 0.03 < sessions["cart"].mean() < 0.15
    assert 0.4 < sessions.filter("cart")["buy"].mean() < 0.85
    per_user = ev.group_by("user_id").agg(pl.col("user_session").n_unique().alias("n"))
    assert (per_user["n"] == 1).mean() > 0.25  # long tail of one-visit users
    gaps = ev.sort("user_id", "event_time").with_columns(
        gap=pl.col("event_time").diff().over("user_id").dt.total_minutes(),
        same=pl.col("user_session") == pl.col("user_session").shift().over("user_id"),
    )
    assert gaps.filter("same")["gap"].max() < 30
    assert gaps.filter(~pl.col("same"))["gap"].min() > 30


def test_truth_is_consistent_with_events(sample):
    info, ev = sample
    truth = pl.read_parquet(info.truth_dir / "users.parquet")
    assert set(truth["user_id"]) == set(ev["user_id"])
    assert set(truth["segment"]) == set(synth.SEGMENTS)
    cutoff = ev["event_time"].max() - pl.duration(days=30)
    buyers = set(
        ev.filter((pl.col("event_type") == "purchase") & (pl.col("event_time") >= cutoff))[
            "user_id"
        ]
    )
    flagged = set(truth.filter("purchased_final30")["user_id"])
    assert len(buyers ^ flagged) <= 0.01 * len(flagged)  # boundary day within an hour of the cutoff
    obs = truth.filter("observed_before_cutoff")
    auc = roc_auc_score(obs["purchased_final30"], obs["p_purchase_final30"])
    assert 0.75 < auc < 0.95
    assign = pl.read_parquet(info.assignments_path)
    assert assign["user_id"].is_unique().all()
    assert abs((assign["experiment_group"] == "treatment").mean() - 0.5) < 0.03
    exp = json.loads((info.truth_dir / "experiment.json").read_text())
    assert exp["planted_relative_lift"] == pytest.approx(0.10)
    assert exp["pre_period_correlation"]["pre_events"] > 0.05


def test_experiment_truth_summed_over_chunks_matches_scipy_on_the_table(tmp_path):
    """experiment.json is summed chunk by chunk (no table is kept in memory); over many small
    chunks it equals the rates, counts and Pearson correlations computed on users.parquet."""
    from scipy.stats import pearsonr

    info = synth.generate(tmp_path / "s", 30_000, seed=4, chunk_users=300)
    truth = pl.read_parquet(info.truth_dir / "users.parquet")
    assert info.n_users == truth.height and truth["user_id"].is_unique().all()
    customers = pl.read_csv(info.customers_path)
    assert customers["user_id"].sort().equals(truth["user_id"].sort())
    exp = json.loads((info.truth_dir / "experiment.json").read_text())
    assigned = truth.filter(pl.col("experiment_group").is_not_null())
    for group in ("control", "treatment"):
        rows = assigned.filter(pl.col("experiment_group") == group)
        assert exp[f"n_{group}"] == rows.height > 100
        assert exp[f"{group}_rate"] == pytest.approx(rows["converted_in_experiment"].mean())
    outcome = assigned["converted_in_experiment"].cast(pl.Float64).to_numpy()
    for metric in ("pre_purchases", "pre_events"):
        r = pearsonr(assigned[metric].cast(pl.Float64).to_numpy(), outcome).statistic
        assert exp["pre_period_correlation"][metric] == pytest.approx(r, rel=1e-9)


def test_bundles_really_co_occur_in_purchase_baskets(sample):
    info, ev = sample
    bundles = pl.read_parquet(info.truth_dir / "bundles.parquet")
    baskets = (
        ev.filter(pl.col("event_type") == "purchase").select("user_session", "product_id").unique()
    )
    n = baskets["user_session"].n_unique()
    top = bundles.row(0, named=True)
    sa = set(baskets.filter(pl.col("product_id") == top["product_a"])["user_session"])
    sb = set(baskets.filter(pl.col("product_id") == top["product_b"])["user_session"])
    lift = len(sa & sb) * n / (len(sa) * len(sb))
    assert lift == pytest.approx(top["planted_lift"], rel=1e-9)
    assert top["planted_lift"] > 5


def test_customers_table_separates_the_four_types():
    attrs, truth = synth.generate_customers(3000, seed=11)
    kept = attrs.filter((2021 - pl.col("year_birth") < 90) & (pl.col("income") < 600_000))
    assert kept.height < attrs.height  # the planted outliers and missing incomes are there
    truth = truth.filter(pl.col("user_id").is_in(kept["user_id"].implode()))
    cols = [c for c in kept.columns if c.startswith("mnt_")] + [
        "year_birth",
        "income",
        "kidhome",
        "teenhome",
        "num_web_visits",
    ]
    x = StandardScaler().fit_transform(kept.select(cols).to_numpy())
    ks = list(range(2, 11))
    inertia = [KMeans(k, n_init=4, random_state=0).fit(x).inertia_ for k in ks]
    assert KneeLocator(ks, inertia, curve="convex", direction="decreasing").knee == 4
    labels = KMeans(4, n_init=4, random_state=0).fit_predict(x)
    assert adjusted_rand_score(truth["segment"], labels) >= 0.9


def test_ensure_sample_caches(tmp_path):
    first = synth.ensure_sample(tmp_path, 5_000, seed=1)
    mtime = (first / "events.csv").stat().st_mtime_ns
    again = synth.ensure_sample(tmp_path, 5_000, seed=1)
    assert again == first == synth.sample_dir(tmp_path, 5_000, 1)
    assert (again / "events.csv").stat().st_mtime_ns == mtime
    assert not [p for p in tmp_path.joinpath("raw").iterdir() if p.name.startswith(".")]


def test_parquet_output_and_cli(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "customer_intel.synth",
            "--events",
            "5000",
            "--out",
            str(tmp_path / "p"),
            "--format",
            "parquet",
            "--chunk-users",
            "100",
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "events/s" in proc.stdout
    df = pl.read_parquet(tmp_path / "p" / "events.parquet")
    assert df.schema["event_time"] == pl.Datetime("us", "UTC") and df.height > 4900


def test_rejects_too_small_requests(tmp_path):
    with pytest.raises(ValueError, match="n_events must be at least 1000"):
        synth.generate(tmp_path / "x", 10)


def test_peak_memory_does_not_grow_with_events(tmp_path):
    """2M events peak within 1.3x of 200k (both in full chunks of 10k users, so only what the
    generator keeps across chunks can differ). The chunks are generated by worker processes, so
    the peak is that of the largest process: the parent (which writes) or a worker."""
    code = (
        "import sys; from customer_intel import synth; from customer_intel.runs import peak_rss_mb; "
        "info = synth.generate(sys.argv[1], int(sys.argv[2]), seed=1, chunk_users=10_000, "
        "workers=2); print(peak_rss_mb(), info.worker_peak_rss_mb)"
    )
    rss = {}
    for n in (200_000, 2_000_000):
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / str(n)), str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        parent, worker = map(float, out.stdout.strip().splitlines()[-1].split())
        assert worker > 0  # the chunks were generated in worker processes
        rss[n] = max(parent, worker)
    assert rss[2_000_000] < 1.3 * rss[200_000], rss
