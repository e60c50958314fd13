"""Generate a realistic e-commerce event log with planted truth (the built-in sample).

``generate(out_dir, n_events, seed)`` writes, into ``out_dir`` (built in a temporary folder and
renamed into place, so a half-written sample never counts as there):

``events.csv`` (or ``events.parquet``)
    The REES46 schema and formats: ``event_time`` (``2019-10-01 00:00:00 UTC``), ``event_type``
    (view / cart / remove_from_cart / purchase), ``product_id``, ``category_id`` (19 digits),
    ``category_code`` (dotted, 35-42% empty), ``brand`` (lowercase, 35-42% empty), ``price``
    (2 decimals), ``user_id`` (9 digits), ``user_session`` (version-4 UUID text). Written in
    chunks of users, each chunk sorted by time (then user): the file is sorted within a chunk,
    not across chunks (ingestion must not assume order). A user's events are all in one chunk.
    Total events are within one user's history of ``n_events``.
``customers.csv``
    One row per user: a marketing attributes table in the style of the "customer personality
    analysis" data (year_birth, income, kidhome, teenhome, dt_customer, education,
    marital_status, mnt_<line> spend per product line, num_web_visits, ...), whose distribution
    separates the four latent types; a few % missing income and a handful of absurd outliers
    (birth year 1893, income 666666) that a filter like ``age < 90 AND income < 600000`` removes.
``assignments.parquet``
    The A/B experiment: user_id, experiment_name, experiment_group (control/treatment),
    assigned_at (UTC) for every user active in the experiment window, 50/50 at random.
``truth/`` (never read by the pipeline; tests only)
    ``users.parquet``: user_id, segment, p_purchase_final30, purchased_final30,
    experiment_group, converted_in_experiment, pre_purchases, pre_events,
    observed_before_cutoff; ``bundles.parquet``: product_a, product_b, planted_lift,
    n_together, support; ``experiment.json``; ``README.md``.

How the store works
-------------------
Every user is active over a window (segment-dependent length, placed uniformly over every
position that overlaps the period) and visits as a Poisson process inside it, at times that
follow one traffic profile: busiest in the evening (UTC+3), Mondays about 25% above weekends,
a store growing by 8% over the period, and the days around Black Friday (the Friday after the
fourth Thursday of November: 2019-11-29, twice an ordinary day) higher. So the number of users
active on a day is the same from the first day to the last: no ramp, no cliff, no empty day.
A session views products (half from the user's preferred product line, half by popularity:
Zipf-like), may add some to the cart (the user's own probability) and buy (the segment's).
Sessions of one user start at least 90 minutes apart and last at most 55 minutes (events in
a session < 20 minutes apart), so a 30-minute inactivity rule recovers the sessions exactly.
Users, sessions and products scale with ``n_events``: about 22 events per user, 7 per session,
and ``n_events / 550`` products (500 to 200,000): 110M events give ~5.2M users, ~16M sessions
and 200k products. Chunks of users are generated in parallel worker processes, each
vectorised (NumPy, Polars); every chunk's randomness comes from ``SeedSequence([seed, 1000 +
chunk])`` and chunks are written in order, so the same arguments give the same bytes whatever
the number of workers.

Planted truth and what a stage should recover
---------------------------------------------
(a) Segments. Four behavioural types: ``champions`` (frequent visitors, most of the buying,
    ~8%), ``loyal`` (regular, ~20%), ``bargain`` (many views of cheap products, few purchases,
    ~22%) and ``dormant`` (one or two visits, ~50%: the long tail of one-visit users). The
    customers table's numeric attributes separate them: KMeans on the standardised attributes
    finds k = 4 by the knee with an adjusted Rand index >= 0.9.
(b) Propensity. ``cutoff = period end - 30 days``; the last event is a minute before the
    period's end at any size, so the pipeline's cutoff (last event - 30 days) is the same.
    Behaviour before the cutoff is simulated first; then ``p = sigmoid(-4.3 + 3.0 *
    exp(-recency_days / 2) + 1.4 * [recency < 7 days and bought before] + 2.0 * [carted,
    never bought] + 0.3 * log1p(carts) + 1.4 * log1p(purchases) + line_effect + N(0, 0.3))``
    where ``line_effect`` (-0.6..+0.6) depends on the user's preferred product line; users
    first seen after the cutoff get ``sigmoid(-4.0 + line_effect)``. The outcome is drawn from
    ``p`` and the final 30 days are generated to match it: a buyer buys in one of their
    sessions (one more visit, at any time in the 30 days, when they had none), a non-buyer in
    none; the buyers' sessions buy a little more or less often so that the final 30 days hold
    as many purchases as the store's habits would. No observation session starts in the hour
    before the cutoff (invisible at day level). About 7% of users seen before the cutoff buy
    in the final 30 days; oracle AUC about 0.9; a model on observation-window features reaches
    >= 0.95 of it and beats a logistic regression and the RFM rule (at 600k events and more).
(c) Bundles. 20 pairs of popular products: whenever one is bought, the other is bought in the
    same session with probability 0.35 (planted lifts of roughly 15-110 at 1M events).
    ``planted_lift`` is measured on what was generated, at the level of purchase baskets
    (sessions with a purchase): ``P(a and b) / (P(a) P(b))``.
(d) Experiment ``checkout_redesign``: users with a session starting between day 14 and day 30
    are assigned at their first one, 50/50. A control user converts (buys between assignment
    and day 30) as their own sessions would; a treatment user who would not have converted
    converts with probability ``0.1 q / (1 - q)``, where ``q`` is the user's chance of buying in
    their sessions after assignment: the planted relative lift is +10%. Pre-period metrics
    (``pre_events``, ``pre_purchases``: the 14 days before the window) correlate with the
    outcome (about 0.4); the correlations are in experiment.json. Conversion is about 7% in
    control: the store's own buying rate over 16 days.

Shape (measured at 1M events, seed 42): 46,900 users, 1,818 products, 143k sessions (21 events
per user, 7.0 per session, 3.1 sessions per user); views 93%, carts 4.8%, purchases 1.6% of
events; of the users who viewed, 11.7% added to cart, and 63% of those bought; 39% of
category_code and 38% of brand empty; 44% one-session users; the quietest day has 0.80 of the
median day's events, the busiest (Black Friday) 1.9; mean events by weekday (Mon..Sun) 1.09,
1.06, 1.05, 1.03, 1.04, 0.87, 0.87 of the average.

Speed (2 workers, on this project's 2-core machine, otherwise idle, 2026-11-29): 20M events
in 14.1 s (1.4M events/s, 25 CPU-seconds in all), 110M in 63.0 s (1.7M events/s, 115
CPU-seconds), each byte for byte the sample generated before with the same seed; with other
jobs keeping the load average at 5-6, 20M took 25-37 s. A chunk of 25,000 users (520k events)
costs ~0.6 CPU-seconds. Every process peaks at ~0.5 GB, whatever ``n_events``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import io
import itertools
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, NoReturn

import numpy as np
import polars as pl

#: Bumped whenever the generated data changes, so cached samples are not reused across versions.
GENERATOR_VERSION = 3
SEGMENTS = ("champions", "loyal", "bargain", "dormant")
SEGMENT_SHARES = (0.08, 0.20, 0.22, 0.50)
LINES = ("electronics", "appliances", "computers", "furniture", "apparel", "other")
N_BUNDLES = 20
EXPERIMENT = "checkout_redesign"
PLANTED_RELATIVE_LIFT = 0.10
BUNDLE_FOLLOW_PROB = 0.35
USER_ID_BASE = 512_000_000
DAY = 86_400
HOUR = 3_600
#: The A/B test's window: sessions starting from day 14 until day 30 of the period assign.
EXPERIMENT_DAYS = (14, 30)
#: Scale of the sample: users and sessions grow linearly with the events asked for, the
#: catalogue too up to a cap (110M events: 5M users, 15M sessions, 200k products).
EVENTS_PER_USER = 22.0
EVENTS_PER_PRODUCT = 550
MAX_PRODUCTS = 200_000
MIN_PRODUCTS = 500
#: Session timing: no session lasts longer than this (longer ones are compressed), and a user's
#: sessions start at least SESSION_SPACING apart, so two sessions of one user are always more
#: than 30 minutes apart and a 30-minute inactivity rule recovers them exactly.
MAX_SESSION = 55 * 60
SESSION_SPACING = 90 * 60
MAX_EVENT_GAP = 20 * 60
INACTIVITY = 31 * 60

# Per-segment behaviour (champions, loyal, bargain, dormant). A user is active over a window
# of _WINDOW_DAYS (lognormal median; placed uniformly so that it overlaps the period, which
# keeps the number of active users steady from the first day to the last) and visits at
# _RATE sessions per day of average traffic inside it. A session adds to cart with the user's
# own probability (segment median _CART, spread between users), a carting session buys with
# _BUY; sessions view _VIEWS products on average.
_WINDOW_DAYS = np.array([240.0, 150.0, 100.0, 2.0])
_RATE = np.array([0.22, 0.06, 0.05, 0.3])
_CART = np.array([0.22, 0.02, 0.018, 0.008])
_BUY = np.array([0.5, 0.32, 0.25, 0.25])
_VIEWS = np.array([7.0, 6.5, 8.0, 4.5])
_LINE_EFFECT = np.array([0.6, 0.15, 0.4, -0.4, -0.2, -0.6])
# Propensity: log-odds of buying in the final 30 days from pre-cutoff behaviour.
_P_INTERCEPT = -4.3
_P_LATE = -4.0

# Traffic by hour of day (UTC; the store's evening, 17-21h at UTC+3, is the busiest) and by
# day of week (Monday first): Mondays busiest, weekends quieter.
_HOUR_WEIGHT = np.array(
    [0.45, 0.35, 0.3, 0.3, 0.4, 0.6, 0.8, 0.95, 1.05, 1.1, 1.15, 1.15]
    + [1.15, 1.2, 1.3, 1.4, 1.5, 1.5, 1.45, 1.3, 1.1, 0.9, 0.7, 0.55]
)
_WEEKDAY_WEIGHT = np.array([1.10, 1.04, 1.02, 1.0, 0.96, 0.84, 0.88])
# Days around Black Friday (the day after the fourth Thursday of November): offset -> factor.
_BLACK_FRIDAY = {-4: 1.15, -3: 1.25, -2: 1.35, -1: 1.5, 0: 2.0, 1: 1.6, 2: 1.3, 3: 1.15}

_TOP = (
    "electronics",
    "appliances",
    "computers",
    "furniture",
    "apparel",
    "kids",
    "auto",
    "sport",
    "construction",
    "country_yard",
    "accessories",
    "medicine",
    "stationery",
)
_SUB = (
    "smartphone",
    "audio.headphone",
    "video.tv",
    "clocks",
    "kitchen.refrigerators",
    "kitchen.washer",
    "environment.vacuum",
    "notebook",
    "desktop",
    "peripherals.mouse",
    "living_room.sofa",
    "bedroom.bed",
    "shoes",
    "costume",
    "toys",
    "tools.drill",
    "bicycle",
    "tablet",
    "camera.photo",
    "components.videocards",
)
_GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class SampleInfo:
    """What ``generate`` wrote.

    ``worker_peak_rss_mb`` is the largest peak resident memory of the worker processes that
    generated the chunks (0 when every chunk was generated in this process).
    """

    folder: Path
    events_path: Path
    customers_path: Path
    assignments_path: Path
    truth_dir: Path
    n_events: int
    n_users: int
    n_products: int
    seconds: float
    workers: int = 1
    worker_peak_rss_mb: float = 0.0


# -- catalogue ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Catalog:
    products: pl.DataFrame  # product_id, category_id, category_code, brand (one row per product)
    product_csv: pl.Series  # the same four fields as one CSV text per product
    line: np.ndarray
    base_price: np.ndarray
    drift: np.ndarray
    popular: _Sampler  # products by popularity
    by_line: tuple[np.ndarray, ...]  # product indices per line
    by_line_popular: tuple[_Sampler | None, ...]  # within each line (None: no product)
    expensive: np.ndarray  # bool: price above 60 (bargain hunters look elsewhere)
    bundles: np.ndarray  # (N_BUNDLES, 2) product indices, ordered by product_id
    partner: np.ndarray  # partner index or -1


def n_products_for(n_events: int) -> int:
    """Catalogue size for a sample of ``n_events``: ``n_events / 550`` within 500..200,000."""
    return int(min(max(n_events // EVENTS_PER_PRODUCT, MIN_PRODUCTS), MAX_PRODUCTS))


def _spread(n: int, share: float, offset: float) -> np.ndarray:
    """``n`` flags, ``share`` of them set, evenly spread along the index (golden-ratio steps).

    Applied in order of popularity, it makes the share of *events* with the flag close to
    ``share`` even when a few products carry a large part of the traffic.
    """
    return ((np.arange(n) * _GOLDEN + offset) % 1.0) < share


def _catalog(n_products: int, rng: np.random.Generator) -> _Catalog:
    n_cat = int(np.clip(n_products // 5, 60, 800))
    # Categories: 19-digit ids, a product line each (the code's first word follows the line).
    cat_ids = rng.permutation(
        np.unique(rng.integers(2_053_013_552_226_107_603, 2_232_732_116_498_514_828, 2 * n_cat))
    )[:n_cat]
    cat_line = np.arange(n_cat) % len(LINES)
    top = np.where(cat_line < 5, cat_line, 5 + rng.integers(0, len(_TOP) - 5, n_cat))
    sub = rng.integers(0, len(_SUB), n_cat)
    codes = np.array([f"{_TOP[t]}.{_SUB[s]}" for t, s in zip(top, sub, strict=True)], dtype=object)
    cat_median = np.exp(rng.normal(4.0, 1.0, n_cat))
    syll = np.array(["ka", "lo", "mi", "sa", "ton", "ve", "ri", "zu", "bel", "cor", "dex", "fy"])
    n_brands = max(n_products // 40, 50)
    brands = np.array(
        ["".join(syll[rng.integers(0, len(syll), 3)]) + str(i) for i in range(n_brands)],
        dtype=object,
    )
    ids = np.unique(rng.integers(1_000_000, 100_000_000, int(n_products * 1.1) + 10))
    ids = rng.permutation(ids)[:n_products]
    # Heavy-tailed popularity (Zipf-Mandelbrot over a random order of products).
    ranks = rng.permutation(n_products)
    pop = 1.0 / (ranks + 8.0) ** 1.1
    pop /= pop.sum()
    by_pop = np.argsort(ranks)  # product indices, most popular first
    cat = rng.integers(0, n_cat, n_products)
    # the most popular products spread over many categories, as in a real store
    cat[by_pop[: min(n_cat, n_products)]] = rng.permutation(n_cat)[: min(n_cat, n_products)]
    cat_pop = np.bincount(cat, weights=pop, minlength=n_cat)
    no_code = np.zeros(n_cat, bool)
    no_code[np.argsort(-cat_pop)] = _spread(n_cat, 0.385, 0.2)
    codes[no_code] = None
    brand = brands[rng.integers(0, n_brands, n_products)]
    no_brand = np.zeros(n_products, bool)
    no_brand[by_pop] = _spread(n_products, 0.385, 0.6)
    brand[no_brand] = None
    base_price = np.round(cat_median[cat] * np.exp(rng.normal(0, 0.35, n_products)), 2) + 0.99
    line = cat_line[cat]
    by_line = tuple(np.flatnonzero(line == k) for k in range(len(LINES)))
    by_line_popular = tuple(
        _Sampler.build(pop[ix] / pop[ix].sum()) if len(ix) else None for ix in by_line
    )
    # Bundles among popular products (ranks 2..80), disjoint pairs.
    pool = rng.permutation(by_pop[2 : min(80, n_products)])[: 2 * N_BUNDLES]
    bundles = pool.reshape(-1, 2)
    bundles = np.where(
        (ids[bundles[:, 0]] < ids[bundles[:, 1]])[:, None], bundles, bundles[:, ::-1]
    )
    partner = np.full(n_products, -1)
    partner[bundles[:, 0]] = bundles[:, 1]
    partner[bundles[:, 1]] = bundles[:, 0]
    products = pl.DataFrame(
        {
            "product_id": ids.astype(np.int64),
            "category_id": cat_ids[cat].astype(np.int64),
            "category_code": pl.Series(codes[cat].tolist(), dtype=pl.String),
            "brand": pl.Series(brand.tolist(), dtype=pl.String),
        }
    )
    return _Catalog(
        products=products,
        product_csv=products.select(
            pl.concat_str(pl.all().cast(pl.String).fill_null(""), separator=",").alias(
                ",".join(products.columns)
            )
        ).to_series(),
        line=line,
        base_price=base_price,
        drift=rng.normal(0, 0.06, n_products),
        popular=_Sampler.build(pop),
        by_line=by_line,
        by_line_popular=by_line_popular,
        expensive=base_price > 60,
        bundles=bundles,
        partner=partner,
    )


# -- customers table ---------------------------------------------------------------------------
def _customers_for(
    segment: np.ndarray, user_id: np.ndarray, rng: np.random.Generator
) -> pl.DataFrame:
    n = len(segment)
    s = segment
    income_mu = np.array([88_000, 62_000, 38_000, 22_000])[s]
    birth_mu = np.array([1962, 1974, 1986, 1996])[s]
    kid_p = np.array([0.1, 0.6, 0.9, 0.2])[s]
    teen_p = np.array([0.7, 0.5, 0.2, 0.05])[s]
    spend_scale = np.array([1400.0, 600.0, 140.0, 40.0])[s]
    visits_mu = np.array([3.0, 5.0, 8.0, 2.0])[s]
    income = np.round(rng.normal(income_mu, income_mu * 0.12), 0)
    year_birth = np.round(rng.normal(birth_mu, 4.0)).astype(np.int64)
    shares = rng.dirichlet(np.ones(len(LINES)) * 4, n)
    spend = np.round(spend_scale[:, None] * np.exp(rng.normal(0, 0.2, (n, 1))) * shares * 6, 0)
    edu_levels = np.array(["Basic", "Graduation", "Master", "PhD", "2n Cycle"])
    edu_p = np.array(
        [
            [0.0, 0.4, 0.3, 0.25, 0.05],
            [0.05, 0.55, 0.2, 0.1, 0.1],
            [0.1, 0.55, 0.15, 0.05, 0.15],
            [0.2, 0.5, 0.1, 0.05, 0.15],
        ]
    )[s]
    edu = edu_levels[(edu_p.cumsum(1) > rng.random((n, 1))).argmax(1)]
    marital_levels = np.array(["Married", "Together", "Single", "Divorced", "Widow"])
    mar_p = np.array(
        [
            [0.5, 0.2, 0.1, 0.1, 0.1],
            [0.45, 0.3, 0.15, 0.08, 0.02],
            [0.3, 0.3, 0.3, 0.08, 0.02],
            [0.15, 0.2, 0.6, 0.05, 0.0],
        ]
    )[s]
    marital = marital_levels[(mar_p.cumsum(1) > rng.random((n, 1))).argmax(1)]
    income_missing = rng.random(n) < 0.02
    df = pl.DataFrame(
        {
            "user_id": user_id,
            "year_birth": year_birth,
            "education": edu,
            "marital_status": marital,
            "income": np.where(income_missing, np.nan, income),
            "kidhome": (rng.random(n) < kid_p).astype(np.int64) + (rng.random(n) < kid_p * 0.3),
            "teenhome": (rng.random(n) < teen_p).astype(np.int64),
            "recency": rng.integers(0, 100, n),
            **{f"mnt_{line}": spend[:, i] for i, line in enumerate(LINES)},
            "num_web_visits": rng.poisson(visits_mu),
        }
    ).with_columns(pl.col("income").fill_nan(None))
    df = df.insert_column(
        7,
        pl.Series(
            "dt_customer",
            np.datetime64("2012-07-30") + rng.integers(0, 700, n).astype("timedelta64[D]"),
        ),
    )
    # A handful of absurd rows, as real CRM exports have.
    bad = rng.random(n) < 0.0015
    df = df.with_columns(
        pl.when(pl.Series(bad) & (pl.int_range(pl.len()) % 2 == 0))
        .then(pl.lit(1893))
        .otherwise(pl.col("year_birth"))
        .alias("year_birth"),
        pl.when(pl.Series(bad) & (pl.int_range(pl.len()) % 2 == 1))
        .then(pl.lit(666_666.0))
        .otherwise(pl.col("income"))
        .alias("income"),
    )
    return df


def generate_customers(n_users: int, seed: int = 42) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A customers attributes table with four planted types, and its truth.

    Returns ``(attributes, truth)``: one row per user each; ``truth`` has user_id and segment.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    segment = rng.choice(len(SEGMENTS), n_users, p=SEGMENT_SHARES)
    user_id = USER_ID_BASE + np.arange(n_users, dtype=np.int64)
    truth = pl.DataFrame({"user_id": user_id, "segment": np.array(SEGMENTS)[segment]})
    return _customers_for(segment, user_id, rng), truth


# -- time ----------------------------------------------------------------------------------------
def _black_friday(year: int) -> dt.date:
    """The day after the fourth Thursday of November."""
    nov1 = dt.date(year, 11, 1)
    return nov1 + dt.timedelta(days=(3 - nov1.weekday()) % 7 + 22)


@dataclass(frozen=True)
class _Timeline:
    """The period, in seconds from its first midnight, and its traffic profile.

    ``cum`` is the cumulative traffic at each hour boundary ``grid``, scaled so that the whole
    period holds ``days`` average days: a user visiting at ``rate`` sessions per average day
    is expected to start ``rate * (cum(b) - cum(a))`` sessions in ``[a, b)``.
    """

    epoch: int
    days: int
    grid: np.ndarray
    cum: np.ndarray

    @classmethod
    def build(cls, start: dt.date, days: int) -> _Timeline:
        dates = [start + dt.timedelta(days=d) for d in range(days)]
        day_w = np.array([_WEEKDAY_WEIGHT[d.weekday()] for d in dates])
        day_w *= 1.0 + 0.08 * np.arange(days) / days  # a store that grows a little
        for year in {d.year for d in dates}:
            bf = _black_friday(year)
            for offset, factor in _BLACK_FRIDAY.items():
                d = (bf + dt.timedelta(days=offset) - start).days
                if 0 <= d < days:
                    day_w[d] *= factor
        w = (day_w[:, None] * _HOUR_WEIGHT[None, :]).ravel()
        cum = np.r_[0.0, np.cumsum(w)] * days / w.sum()
        epoch = int(dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC).timestamp())
        return cls(epoch, days, np.arange(days * 24 + 1, dtype=np.float64) * HOUR, cum)

    @property
    def end(self) -> int:
        return self.days * DAY

    @property
    def cutoff(self) -> int:
        """Start of the final 30 days (the propensity label window)."""
        return self.end - 30 * DAY

    def mass(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Traffic in ``[lo, hi)`` (average days; 0 where the interval is empty)."""
        hi = np.maximum(hi, lo)
        return np.interp(hi, self.grid, self.cum) - np.interp(lo, self.grid, self.cum)

    def draw(self, lo: np.ndarray, hi: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Times in ``[lo, hi)`` with density proportional to traffic (``u`` uniform in 0..1)."""
        a = np.interp(lo, self.grid, self.cum)
        b = np.interp(np.maximum(hi, lo), self.grid, self.cum)
        return np.interp(a + u * (b - a), self.cum, self.grid)


def _starts(
    su: np.ndarray, lo: np.ndarray, hi: np.ndarray, tl: _Timeline, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sessions of users ``su``, each starting in its own ``[lo, hi)``.

    Returns ``(user, start second, index into su)``, sorted by user and time. Start times
    follow the traffic profile; a session starting less than SESSION_SPACING after the user's
    previous one is dropped (the same visit), so a user with any session keeps at least one.
    """
    start = tl.draw(lo, hi, rng.random(len(su)))
    order = np.lexsort((start, su))
    su, start = su[order], np.floor(start[order])
    keep = np.r_[True, (su[1:] != su[:-1]) | (np.diff(start) >= SESSION_SPACING)]
    return su[keep], start[keep], order[keep]


def _pick_one(users: np.ndarray, candidate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bool mask choosing one random candidate row per user (rows of ``users``)."""
    rows = rng.permutation(np.flatnonzero(candidate))
    _, first = np.unique(users[rows], return_index=True)
    chosen = np.zeros(len(users), bool)
    chosen[rows[first]] = True
    return chosen


# -- events --------------------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class _Sampler:
    """Inverse-CDF draws over a cumulative weight array, sped up by a guide table.

    ``guide[k]`` is where ``k / K`` of the total falls, so a draw starts there and steps past
    the few entries of its bucket: the same indices as ``np.searchsorted(cdf, x, "right")``
    without a binary search over 200k products per draw.
    """

    cdf: np.ndarray
    guide: np.ndarray

    @classmethod
    def build(cls, weights: np.ndarray) -> _Sampler:
        cdf = np.cumsum(weights)
        k = 1 << max(int(np.ceil(np.log2(max(len(cdf), 1) * 4))), 4)
        guide = np.searchsorted(cdf, np.arange(k) / k * cdf[-1], side="right")
        return cls(cdf, guide.astype(np.int32))

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(n)
        x = u * self.cdf[-1]
        idx = self.guide[(u * len(self.guide)).astype(np.int64)].astype(np.int64)
        todo = np.flatnonzero(self.cdf[idx] <= x)
        while len(todo):
            idx[todo] += 1
            todo = todo[self.cdf[idx[todo]] <= x[todo]]
        return idx


@dataclass(frozen=True)
class _Users:
    seg: np.ndarray
    line: np.ndarray
    cart_p: np.ndarray  # probability that one of the user's sessions adds to cart
    rate: np.ndarray  # sessions per average day inside the active window
    lo: np.ndarray  # active window, clipped to the period (seconds)
    hi: np.ndarray
    n_obs: np.ndarray  # sessions before the cutoff
    n_fin: np.ndarray  # natural sessions in the final 30 days


def _draw_users(n: int, tl: _Timeline, rng: np.random.Generator) -> _Users:
    """``n`` users that each visit at least once in the period.

    Every user is active over a window of the segment's length placed uniformly over all
    positions that overlap the period, and visits as a Poisson process inside it; users who
    would not visit at all are drawn again (they would never appear in a log). So the number
    of users active on a day is the same for every day of the period, and the daily traffic
    follows the profile without a ramp at the start or a cliff at the end.
    """
    seg = rng.choice(len(SEGMENTS), n, p=SEGMENT_SHARES)
    line = rng.integers(0, len(LINES), n)
    cart_p = np.minimum(_CART[seg] * np.exp(rng.normal(0.0, 0.9, n)), 0.9)
    rate, lo, hi = np.zeros(n), np.zeros(n), np.zeros(n)
    n_obs, n_fin = np.zeros(n, np.int64), np.zeros(n, np.int64)
    pending = np.arange(n)
    obs_end, fin_end = tl.cutoff - HOUR, tl.end - HOUR
    while len(pending):
        s = seg[pending]
        length = _WINDOW_DAYS[s] * np.exp(rng.normal(0.0, 0.5, len(pending))) * DAY
        w0 = rng.uniform(-length, tl.end)
        w1 = w0 + length
        r = _RATE[s] * np.exp(rng.normal(0.0, 0.45, len(pending)))
        k_obs = rng.poisson(r * tl.mass(np.maximum(w0, 0), np.minimum(w1, obs_end)))
        k_fin = rng.poisson(r * tl.mass(np.maximum(w0, tl.cutoff), np.minimum(w1, fin_end)))
        ok = k_obs + k_fin > 0
        idx = pending[ok]
        rate[idx], lo[idx], hi[idx] = r[ok], np.maximum(w0[ok], 0), np.minimum(w1[ok], tl.end)
        n_obs[idx], n_fin[idx] = k_obs[ok], k_fin[ok]
        pending = pending[~ok]
    return _Users(seg, line, cart_p, rate, lo, hi, n_obs, n_fin)


def _funnel(
    s_user: np.ndarray, users: _Users, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Which sessions add to cart (the user's probability) and buy (the segment's, once carting)."""
    carting = rng.random(len(s_user)) < users.cart_p[s_user]
    return carting, carting & (rng.random(len(s_user)) < _BUY[users.seg[s_user]])


def _impose(
    s_user: np.ndarray,
    carting: np.ndarray,
    buying: np.ndarray,
    window: np.ndarray,
    outcome: np.ndarray,
    rng: np.random.Generator,
    *,
    forceable: np.ndarray | None = None,
    prefer: np.ndarray | None = None,
    keep_volume: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Carting and buying flags that make ``outcome`` (per user) true over ``window`` sessions.

    A user whose outcome is true keeps the sessions that bought anyway, and buys in one random
    ``forceable`` window session when none of those did (a ``prefer`` session if the user has
    one); a user whose outcome is false buys in no window session (nor adds to cart there, so
    carts stay as frequent as purchases). With ``keep_volume``, the buyers' sessions buy more
    or less often (at random) so that the window holds as many buying sessions as it would have
    had.
    """
    forceable = window if forceable is None else forceable
    want = window & outcome[s_user]
    suppressed = window & buying & ~want
    if keep_volume:
        kept = window & buying & want
        has_kept = np.zeros(len(outcome), bool)
        has_kept[s_user[kept]] = True
        n_forced = len(np.unique(s_user[want & ~has_kept[s_user]]))
        share = (np.sum(window & buying) - n_forced) / max(kept.sum(), 1)
        suppressed |= kept & (rng.random(len(s_user)) >= np.clip(share, 0.0, 1.0))
        idle = want & ~buying  # buyers' other sessions: some buy too when buyers are few
        gain = (share - 1.0) * kept.sum() / max(idle.sum(), 1)
        buying = buying | (idle & (rng.random(len(s_user)) < np.clip(gain, 0.0, 1.0)))
    buying, carting = buying & ~suppressed, carting & ~suppressed
    bought_anyway = np.zeros(len(outcome), bool)
    bought_anyway[s_user[forceable & buying]] = True
    need = forceable & want & ~bought_anyway[s_user]
    forced = np.zeros(len(s_user), bool)
    if prefer is not None:
        forced = _pick_one(s_user, need & prefer, rng)
        need &= ~np.isin(s_user, s_user[forced])
    forced |= _pick_one(s_user, need, rng)
    return carting, buying | forced


def _session_events(
    s_user: np.ndarray,
    carting: np.ndarray,
    buying: np.ndarray,
    users: _Users,
    cat: _Catalog,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Views, carts, removals and purchases of sessions, as event arrays.

    Returns ``sess`` (index into the sessions), ``prod`` (catalogue index), ``off`` (seconds
    after the session's start) and ``type`` (0 view, 1 cart, 2 remove_from_cart, 3 purchase).
    A carting session adds 1+ of its viewed products to the cart, often clicking "add" more
    than once, as in REES46; a buying session buys the first of them and most of the others.
    """
    n_s = len(s_user)
    seg = users.seg[s_user]
    carting = carting | buying
    n_items = 1 + rng.poisson(1.2, n_s)
    n_views = np.minimum(rng.geometric(1.0 / _VIEWS[seg]), 60)
    n_views = np.where(carting, np.maximum(n_views, n_items), n_views)
    first = np.cumsum(n_views) - n_views  # index of each session's first view
    ev_sess = np.repeat(np.arange(n_s), n_views)
    n_ev = len(ev_sess)
    pos = np.arange(n_ev) - first[ev_sess]
    # Products: half from the user's preferred line, half from overall popularity.
    prod = cat.popular.draw(n_ev, rng)
    pref = rng.random(n_ev) < 0.5
    ev_line = users.line[s_user][ev_sess]
    for k in range(len(LINES)):
        m = np.flatnonzero(pref & (ev_line == k))
        if len(m) and len(cat.by_line[k]):
            prod[m] = cat.by_line[k][cat.by_line_popular[k].draw(len(m), rng)]
    # Bargain hunters drift to cheaper products: expensive views are often drawn again.
    cheap = np.flatnonzero((seg[ev_sess] == 2) & cat.expensive[prod] & (rng.random(n_ev) < 0.6))
    prod[cheap] = cat.popular.draw(len(cheap), rng)
    gaps = np.minimum(rng.exponential(60.0, n_ev), MAX_EVENT_GAP)
    gaps[first] = 0.0
    csum = np.cumsum(gaps)
    off = csum - csum[first][ev_sess]
    # Carts: the first n_items viewed products, each clicked 1+ times.
    carted = np.flatnonzero(carting[ev_sess] & (pos < n_items[ev_sess]))
    clicks = 1 + rng.poisson(0.35, len(carted))
    c_idx = np.repeat(carted, clicks)
    click_first = np.cumsum(clicks) - clicks
    rank = np.arange(len(c_idx)) - np.repeat(click_first, clicks)
    t_cart = off[c_idx] + 5 + rng.exponential(25.0, len(c_idx)) * (1 + rank)
    last_click = np.maximum.reduceat(t_cart, click_first) if len(carted) else t_cart
    in_buying = buying[ev_sess[carted]]
    bought = in_buying & ((pos[carted] == 0) | (rng.random(len(carted)) < 0.85))
    removed = ~bought & (rng.random(len(carted)) < 0.3)
    t_buy = last_click + 5 + rng.exponential(40.0, len(carted))
    t_rm = last_click + 5 + rng.exponential(30.0, len(carted))
    # Bundle partners bought in the same session.
    b_idx = carted[bought]
    partner = cat.partner[prod[b_idx]]
    follow = (partner >= 0) & (rng.random(len(b_idx)) < BUNDLE_FOLLOW_PROB)
    f_sess, f_prod, f_t = ev_sess[b_idx][follow], partner[follow], t_buy[bought][follow]
    parts = [
        (ev_sess, prod, off, 0),
        (ev_sess[c_idx], prod[c_idx], t_cart, 1),
        (ev_sess[carted[removed]], prod[carted[removed]], t_rm[removed], 2),
        (ev_sess[b_idx], prod[b_idx], t_buy[bought], 3),
        (f_sess, f_prod, f_t + 8, 0),
        (f_sess, f_prod, f_t + 20, 1),
        (f_sess, f_prod, f_t + 40, 3),
    ]
    out = {
        "sess": np.concatenate([p[0] for p in parts]),
        "prod": np.concatenate([p[1] for p in parts]),
        "off": np.concatenate([p[2] for p in parts]),
        "type": np.concatenate([np.full(len(p[0]), p[3], np.int8) for p in parts]),
    }
    # Compress the rare session that would run longer than MAX_SESSION.
    dur = np.zeros(n_s)
    np.maximum.at(dur, out["sess"], out["off"])
    squeeze = np.where(dur > MAX_SESSION, MAX_SESSION / np.maximum(dur, 1.0), 1.0)
    out["off"] = out["off"] * squeeze[out["sess"]]
    return out


_HEX_PAIRS = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint16)


def _text(chars: np.ndarray, name: str) -> pl.Series:
    """A String series from fixed-width ASCII rows (an ``(n, width)`` uint8 array)."""
    import pyarrow as pa

    n, width = chars.shape
    offsets = np.arange(n + 1, dtype=np.int64) * width
    arr = pa.Array.from_buffers(
        pa.large_string(),
        n,
        [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars))],
    )
    return pl.Series(name, pl.from_arrow(arr), dtype=pl.String)


def _uuid4_text(n: int, rng: np.random.Generator) -> pl.Series:
    """``n`` random version-4 UUIDs as 36-character text, without a Python loop."""
    raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hexed = _HEX_PAIRS[raw].view(np.uint8)  # (n, 32) ASCII hex digits
    text = np.empty((n, 36), np.uint8)
    text[:, [8, 13, 18, 23]] = ord("-")
    for a, b, c in ((0, 0, 8), (9, 8, 4), (14, 12, 4), (19, 16, 4), (24, 20, 12)):
        text[:, a : a + c] = hexed[:, b : b + c]
    return _text(text, "user_session")


def _clock_table() -> np.ndarray:
    """``(86400, 8)`` ASCII ``HH:MM:SS`` for every second of a day."""
    sec = np.arange(DAY)
    digits = np.stack(
        [sec // 36000, sec // 3600 % 10, sec // 600 % 6, sec // 60 % 10, sec // 10 % 6, sec % 10]
    ).T
    out = np.full((DAY, 8), ord(":"), np.uint8)
    out[:, [0, 1, 3, 4, 6, 7]] = ord("0") + digits
    return out


def _time_text(t: np.ndarray, tl: _Timeline, name: str = "event_time") -> pl.Series:
    """REES46 timestamps (``2019-10-01 00:00:00 UTC``) of seconds ``t`` into the period."""
    dates = np.frombuffer(
        "".join(
            (dt.datetime.fromtimestamp(tl.epoch, dt.UTC) + dt.timedelta(days=d)).strftime(
                "%Y-%m-%d "
            )
            for d in range(tl.days + 1)
        ).encode(),
        np.uint8,
    ).reshape(-1, 11)
    text = np.empty((len(t), 23), np.uint8)
    text[:, :11] = dates[t // DAY]
    text[:, 11:19] = _CLOCK[t % DAY]
    text[:, 19:] = np.frombuffer(b" UTC", np.uint8)
    return _text(text, name)


_CLOCK = _clock_table()


# -- one chunk of users --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    """Everything a chunk needs; sent once to each worker process."""

    catalog: _Catalog
    timeline: _Timeline
    seed: int
    fmt: str


@dataclass
class _Chunk:
    """One chunk's output, ready to append."""

    first_user: int
    header: bool  # the files' header lines are in this chunk (the first one)
    n_events: int
    user_events: np.ndarray  # events per user, in user order (to cut the last chunk)
    row_user: np.ndarray  # the user (index in the chunk) of each event row, as written
    purchases: np.ndarray  # (n, 3): session, product, user of every purchase event
    events_csv: bytes | None
    events: pl.DataFrame | None  # when writing Parquet
    customers_csv: bytes
    assignments: pl.DataFrame
    truth: pl.DataFrame
    n_baskets: int
    bundle_items: np.ndarray  # (N_BUNDLES, 2): baskets with each bundle product
    bundle_pairs: np.ndarray  # (N_BUNDLES,): baskets with both
    peak_rss_mb: float


@dataclass(frozen=True)
class _Experiment:
    """Each user's place in the A/B test (arrays over the chunk's users)."""

    first_in_w: np.ndarray  # start (second) of the session that assigned the user; inf: none
    assigned: np.ndarray
    treat: np.ndarray
    converts: np.ndarray  # bought between assignment and the window's end


@dataclass(frozen=True)
class _Sessions:
    """Sessions (their user and start second) and their events, as ``_session_events`` gives."""

    user: np.ndarray
    start: np.ndarray
    events: dict[str, np.ndarray]
    t: np.ndarray  # each event's second in the period, floored

    def event_user(self) -> np.ndarray:
        return self.user[self.events["sess"]]


@dataclass(frozen=True)
class _Rows:
    """The chunk's event rows in the order they are written (time, user, event type)."""

    sess: np.ndarray  # index into the chunk's sessions (observation ones first)
    user: np.ndarray  # index into the chunk's users
    prod: np.ndarray
    t: np.ndarray
    type: np.ndarray
    n_sessions: int


def _observation_sessions(
    users: _Users, plan: _Plan, rng: np.random.Generator
) -> tuple[_Sessions, _Experiment]:
    """Sessions before the cutoff (none starts in its last hour), with the A/B test planted.

    The first session starting in the experiment window assigns, 50/50. A control user
    converts (buys between assignment and the window's end) as the user's own sessions would;
    in treatment, a user who would not have bought converts with the probability that lifts
    the user's conversion probability q by 10% (0.1 q / (1 - q)): the planted effect.
    """
    tl = plan.timeline
    w_lo, w_hi = (d * DAY for d in EXPERIMENT_DAYS)
    n_users = len(users.seg)
    su = np.repeat(np.arange(n_users), users.n_obs)
    hi = np.minimum(users.hi, tl.cutoff - HOUR)
    s_user, s_start, _ = _starts(su, users.lo[su], hi[su], tl, rng)
    in_w = (s_start >= w_lo) & (s_start < w_hi - HOUR)
    first_in_w = np.full(n_users, np.inf)
    np.minimum.at(first_in_w, s_user[in_w], s_start[in_w])
    assigned = np.isfinite(first_in_w)
    treat = assigned & (rng.random(n_users) < 0.5)
    after = assigned[s_user] & (s_start >= first_in_w[s_user]) & (s_start < w_hi)
    counted = after & (s_start < w_hi - HOUR)  # ends before w_hi: a purchase in it counts
    carting, buying = _funnel(s_user, users, rng)
    natural = np.zeros(n_users, bool)
    natural[s_user[counted & buying]] = True
    k = np.bincount(s_user[counted], minlength=n_users)
    q = 1.0 - (1.0 - users.cart_p * _BUY[users.seg]) ** k
    extra = PLANTED_RELATIVE_LIFT * q / np.maximum(1.0 - q, 1e-9)
    converts = assigned & (natural | (treat & (rng.random(n_users) < extra)))
    carting, buying = _impose(s_user, carting, buying, after, converts, rng, forceable=counted)
    obs = _session_events(s_user, carting, buying, users, plan.catalog, rng)
    obs_t = np.floor(s_start[obs["sess"]] + obs["off"])
    experiment = _Experiment(first_in_w, assigned, treat, converts)
    return _Sessions(s_user, s_start, obs, obs_t), experiment


def _propensity(
    users: _Users, obs: _Sessions, cutoff: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observable behaviour before the cutoff -> true propensity ``p`` -> realised outcome ``y``.

    Returns ``(p, y, last_seen)``; ``last_seen`` is each user's last event second before the
    cutoff (-inf for a user first seen after it).
    """
    n_users = len(users.seg)
    obs_user = obs.event_user()
    last_seen = np.full(n_users, -np.inf)
    np.maximum.at(last_seen, obs_user, obs.t)
    carts = np.bincount(obs_user[obs.events["type"] == 1], minlength=n_users)
    buys = np.bincount(obs_user[obs.events["type"] == 3], minlength=n_users)
    observed = np.isfinite(last_seen)
    recency = np.where(observed, (cutoff - last_seen) / DAY, 60.0)
    logit = (
        _P_INTERCEPT
        + 3.0 * np.exp(-recency / 2.0)  # seen in the last days before the cutoff
        + 1.4 * ((recency < 7) & (buys > 0))  # recent buyers: an interaction trees can find
        + 2.0 * ((carts > 0) & (buys == 0))  # carts left behind: another one
        + 0.3 * np.log1p(carts)
        + 1.4 * np.log1p(buys)
        + _LINE_EFFECT[users.line]
        + rng.normal(0, 0.3, n_users)
    )
    p = np.where(observed, _sigmoid(logit), _sigmoid(_P_LATE + _LINE_EFFECT[users.line]))
    y = rng.random(n_users) < p
    return p, y, last_seen


def _final_sessions(
    users: _Users,
    p: np.ndarray,
    y: np.ndarray,
    last_seen: np.ndarray,
    plan: _Plan,
    rng: np.random.Generator,
    *,
    anchor_end: bool,
) -> _Sessions:
    """Sessions of the final 30 days, matching the realised outcome ``y``.

    As many sessions as the user would have had, counting one at a time drawn over the whole
    30 days for each buyer (the visit to buy, for a user whose own sessions hold no purchase).
    Users first seen after the cutoff keep their natural sessions. With ``anchor_end`` the
    first user's last session ends a minute before the period's end, so the pipeline's cutoff
    (last event - 30 days) falls at the cutoff here at any size.
    """
    tl = plan.timeline
    cutoff, end = tl.cutoff, tl.end
    observed = np.isfinite(last_seen)
    fin_lo = np.maximum(np.maximum(users.lo, cutoff), last_seen + INACTIVITY)
    fin_hi = np.maximum(np.minimum(users.hi, end - HOUR), fin_lo)
    mu_fin = users.rate * tl.mass(fin_lo, fin_hi)
    n_nat = np.where(observed, rng.poisson(np.maximum(mu_fin - p, 0.0)), users.n_fin)
    buyer = observed & y
    su = np.r_[np.repeat(np.arange(len(users.seg)), n_nat), np.flatnonzero(buyer)]
    lo = np.r_[fin_lo[su[: len(su) - buyer.sum()]], np.maximum(cutoff, fin_lo[buyer])]
    hi = np.r_[fin_hi[su[: len(su) - buyer.sum()]], np.full(buyer.sum(), end - HOUR)]
    f_user, f_start, f_idx = _starts(su, lo, np.maximum(hi, lo + 60.0), tl, rng)
    carting, buying = _funnel(f_user, users, rng)
    carting, buying = _impose(
        f_user,
        carting,
        buying,
        np.ones(len(f_user), bool),
        y,
        rng,
        prefer=f_idx >= n_nat.sum(),
        keep_volume=True,
    )
    fin = _session_events(f_user, carting, buying, users, plan.catalog, rng)
    fin_t = f_start[fin["sess"]] + fin["off"]
    if anchor_end and len(f_user):
        anchor = np.flatnonzero(f_user == f_user[0])[-1]
        rows = fin["sess"] == anchor
        fin_t[rows] += end - 60 - fin_t[rows].max()
    return _Sessions(f_user, f_start, fin, np.floor(fin_t))


def _rows(obs: _Sessions, fin: _Sessions) -> _Rows:
    """Both periods' events as one table, ordered by time, then user, then event type."""
    sess_user = np.concatenate([obs.user, fin.user])
    ev_sess = np.concatenate([obs.events["sess"], fin.events["sess"] + len(obs.user)])
    ev_user = sess_user[ev_sess]
    prod = np.concatenate([obs.events["prod"], fin.events["prod"]])
    t = np.concatenate([obs.t, fin.t]).astype(np.int64)
    etype = np.concatenate([obs.events["type"], fin.events["type"]])
    order = np.lexsort((etype, ev_user, t))
    return _Rows(
        ev_sess[order], ev_user[order], prod[order], t[order], etype[order], len(sess_user)
    )


def _events_frame(
    rows: _Rows, user_id: np.ndarray, sess_ids: pl.Series, plan: _Plan
) -> pl.DataFrame:
    """The event rows in the REES46 columns (CSV: event time as text, product as one field)."""
    tl, cat = plan.timeline, plan.catalog
    price = np.round(cat.base_price[rows.prod] * (1 + cat.drift[rows.prod] * rows.t / tl.end), 2)
    events = pl.DataFrame(
        {
            "event_time": _time_text(rows.t, tl)
            if plan.fmt == "csv"
            else pl.Series((tl.epoch + rows.t) * 1_000_000, dtype=pl.Int64).cast(
                pl.Datetime("us", "UTC")
            ),
            "event_type": pl.Series(["view", "cart", "remove_from_cart", "purchase"]).gather(
                rows.type
            ),
        }
    )
    if plan.fmt == "csv":  # the product's four fields as one text, as the CSV writes them
        events = events.with_columns(cat.product_csv.gather(rows.prod))
    else:
        events = events.hstack(cat.products[rows.prod])
    return events.with_columns(
        pl.Series("price", price),
        pl.Series("user_id", user_id[rows.user]),
        sess_ids.gather(rows.sess),
    )


def _assignments_frame(user_id: np.ndarray, exp: _Experiment, tl: _Timeline) -> pl.DataFrame:
    """One row per assigned user: user_id, experiment_name, experiment_group, assigned_at."""
    a_rows = np.flatnonzero(exp.assigned)
    return pl.DataFrame(
        {
            "user_id": user_id[a_rows],
            "experiment_group": np.where(exp.treat[a_rows], "treatment", "control"),
            "assigned_at": pl.Series(
                (tl.epoch + exp.first_in_w[a_rows].astype(np.int64)) * 1_000_000, dtype=pl.Int64
            ).cast(pl.Datetime("us", "UTC")),
        }
    ).select("user_id", pl.lit(EXPERIMENT).alias("experiment_name"), pl.all().exclude("user_id"))


def _truth_frame(
    user_id: np.ndarray,
    users: _Users,
    obs: _Sessions,
    p: np.ndarray,
    y: np.ndarray,
    last_seen: np.ndarray,
    exp: _Experiment,
) -> pl.DataFrame:
    """One row per user: the planted segment, propensity, outcome and experiment truth."""
    n_users = len(user_id)
    w_lo = EXPERIMENT_DAYS[0] * DAY
    obs_user = obs.event_user()
    before = obs.t < w_lo
    pre = np.bincount(obs_user[(obs.events["type"] == 3) & before], minlength=n_users)
    pre_events = np.bincount(obs_user[before], minlength=n_users)
    return pl.DataFrame(
        {
            "user_id": user_id,
            "segment": pl.Series(list(SEGMENTS)).gather(users.seg),
            "p_purchase_final30": p,
            "purchased_final30": y,
            "experiment_group": np.where(exp.treat, "treatment", "control"),
            "converted_in_experiment": exp.converts,
            "pre_purchases": pre,
            "pre_events": pre_events,
            "observed_before_cutoff": np.isfinite(last_seen),
        }
    ).with_columns(
        pl.when(pl.Series(exp.assigned)).then(pl.col(c)).alias(c)
        for c in ("experiment_group", "converted_in_experiment")
    )


def _chunk(plan: _Plan, index: int, first_user: int, n_users: int) -> _Chunk:
    """Simulate ``n_users`` users over the period, with every planted truth.

    Depends only on ``(seed, index, first_user, n_users)``: the same chunk comes out in any
    process. The steps draw from one random stream in a fixed order (their order here).
    """
    rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 1000 + index]))
    users = _draw_users(n_users, plan.timeline, rng)
    obs, exp = _observation_sessions(users, plan, rng)
    p, y, last_seen = _propensity(users, obs, plan.timeline.cutoff, rng)
    fin = _final_sessions(users, p, y, last_seen, plan, rng, anchor_end=index == 0)
    rows = _rows(obs, fin)
    sess_ids = _uuid4_text(rows.n_sessions, rng)
    user_id = USER_ID_BASE + first_user + np.arange(n_users, dtype=np.int64)
    customers = _customers_for(users.seg, user_id, rng)
    events = _events_frame(rows, user_id, sess_ids, plan)
    bought = rows.type == 3
    purchases = np.stack([rows.sess[bought], rows.prod[bought], rows.user[bought]], axis=1)
    baskets = _basket_counts(purchases[:, 0], purchases[:, 1], plan.catalog)
    header = index == 0
    events_csv = None
    if plan.fmt == "csv":
        buf = io.BytesIO()
        # no field holds a comma or a quote (the product text's commas are its separators)
        events.write_csv(buf, include_header=header, float_precision=2, quote_style="never")
        events_csv, events = buf.getvalue(), None
    buf = io.BytesIO()
    customers.write_csv(buf, include_header=header)
    return _Chunk(
        first_user=first_user,
        header=header,
        n_events=len(rows.t),
        user_events=np.bincount(rows.user, minlength=n_users),
        row_user=rows.user.astype(np.int32),
        purchases=purchases,
        events_csv=events_csv,
        events=events,
        customers_csv=buf.getvalue(),
        assignments=_assignments_frame(user_id, exp, plan.timeline),
        truth=_truth_frame(user_id, users, obs, p, y, last_seen, exp),
        n_baskets=baskets[0],
        bundle_items=baskets[1],
        bundle_pairs=baskets[2],
        peak_rss_mb=0.0,
    )


def _basket_counts(
    sess: np.ndarray, prod: np.ndarray, cat: _Catalog
) -> tuple[int, np.ndarray, np.ndarray]:
    """Purchase baskets (sessions with a purchase) and basket counts of the bundle products.

    Takes the session and product of every purchase event; returns the number of baskets, the
    baskets holding each bundle product (N_BUNDLES, 2) and those holding both (N_BUNDLES,).
    """
    n_prod = len(cat.partner)
    keys = np.unique(sess.astype(np.int64) * n_prod + prod)
    b_sess, b_prod = keys // n_prod, keys % n_prod
    n_baskets = len(np.unique(b_sess))
    per_product = np.bincount(b_prod, minlength=n_prod)
    items = per_product[cat.bundles]
    a_side = np.zeros(n_prod, np.int64) - 1
    a_side[cat.bundles[:, 0]] = np.arange(N_BUNDLES)
    rows = np.flatnonzero(a_side[b_prod] >= 0)
    wanted = b_sess[rows] * n_prod + cat.partner[b_prod[rows]]
    pos = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
    both = rows[keys[pos] == wanted] if len(keys) else rows[:0]
    pairs = np.bincount(a_side[b_prod[both]], minlength=N_BUNDLES)
    return n_baskets, items, pairs


def _cut(chunk: _Chunk, keep: int, cat: _Catalog) -> _Chunk:
    """The chunk's first ``keep`` users only (the sample's last chunk, cut at its target).

    Rows are filtered out of what the worker wrote (CSV lines, frames), in the same order, so
    nothing is generated twice.
    """
    rows = chunk.row_user < keep
    h = int(chunk.header)
    events_csv, events = chunk.events_csv, chunk.events
    if events_csv is not None:
        lines = events_csv.split(b"\n")[:-1]  # the text ends with a newline
        kept = list(itertools.compress(lines[h:], rows))
        events_csv = b"\n".join(lines[:h] + kept) + b"\n"
    else:
        events = events.filter(pl.Series(rows))
    customers = b"".join(chunk.customers_csv.splitlines(keepends=True)[: h + keep])
    last_id = USER_ID_BASE + chunk.first_user + keep
    buys = chunk.purchases[chunk.purchases[:, 2] < keep]
    n_baskets, items, pairs = _basket_counts(buys[:, 0], buys[:, 1], cat)
    return _Chunk(
        first_user=chunk.first_user,
        header=chunk.header,
        n_events=int(rows.sum()),
        user_events=chunk.user_events[:keep],
        row_user=chunk.row_user[rows],
        purchases=buys,
        events_csv=events_csv,
        events=events,
        customers_csv=customers,
        assignments=chunk.assignments.filter(pl.col("user_id") < last_id),
        truth=chunk.truth.filter(pl.col("user_id") < last_id),
        n_baskets=n_baskets,
        bundle_items=items,
        bundle_pairs=pairs,
        peak_rss_mb=chunk.peak_rss_mb,
    )


class _ParquetAppender:
    """One Parquet file (zstd) written a chunk at a time: a row group per chunk.

    pyarrow's writer, because Polars writes a Parquet file from one frame only.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer = None

    def append(self, frame: pl.DataFrame) -> None:
        import pyarrow.parquet as pq

        table = frame.to_arrow()
        if self.writer is None:
            self.writer = pq.ParquetWriter(str(self.path), table.schema, compression="zstd")
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _ExperimentStats:
    """Conversion by group and the pre-period correlations, summed chunk by chunk.

    Every input is an integer (counts, 0/1 outcomes), so the sums are exact and the Pearson
    correlation from them is as exact as numpy's over the whole table.
    """

    METRICS = ("pre_purchases", "pre_events")

    def __init__(self) -> None:
        self.n = {"control": 0, "treatment": 0}
        self.conversions = {"control": 0, "treatment": 0}
        self.sums = {m: [0, 0, 0, 0, 0, 0] for m in self.METRICS}  # n, x, y, xy, xx, yy

    def add(self, truth: pl.DataFrame) -> None:
        exp = truth.filter(pl.col("experiment_group").is_not_null())
        for group in self.n:
            in_group = exp.filter(pl.col("experiment_group") == group)
            self.n[group] += in_group.height
            self.conversions[group] += int(in_group["converted_in_experiment"].sum())
        y = exp["converted_in_experiment"].cast(pl.Int64).to_numpy()
        for m in self.METRICS:
            x = exp[m].cast(pl.Int64).to_numpy()
            for i, v in enumerate((len(x), x.sum(), y.sum(), x @ y, x @ x, y @ y)):
                self.sums[m][i] += int(v)

    def rate(self, group: str) -> float | None:
        return self.conversions[group] / self.n[group] if self.n[group] else None

    def correlation(self, metric: str) -> float:
        n, sx, sy, sxy, sxx, syy = self.sums[metric]
        cov, vx, vy = n * sxy - sx * sy, n * sxx - sx * sx, n * syy - sy * sy
        return cov / float(np.sqrt(float(vx) * float(vy))) if vx and vy else float("nan")


class _Writers:
    """The sample's files, appended chunk by chunk in chunk order.

    events.csv (or events.parquet), customers.csv, assignments.parquet, truth/users.parquet;
    plus the running sums behind truth/bundles.parquet and truth/experiment.json.
    """

    def __init__(self, folder: Path, fmt: str) -> None:
        self.events = open(folder / "events.csv", "wb") if fmt == "csv" else None  # noqa: SIM115
        self.events_parquet = _ParquetAppender(folder / "events.parquet")
        self.customers = open(folder / "customers.csv", "wb")  # noqa: SIM115 (closed in close)
        self.assignments = _ParquetAppender(folder / "assignments.parquet")
        self.truth = _ParquetAppender(folder / "truth" / "users.parquet")
        self.experiment = _ExperimentStats()
        self.n_events = self.n_users = self.n_baskets = 0
        self.bundle_items = np.zeros((N_BUNDLES, 2), np.int64)
        self.bundle_pairs = np.zeros(N_BUNDLES, np.int64)
        self.worker_peak = 0.0

    def append(self, chunk: _Chunk) -> None:
        if self.events is not None:
            self.events.write(chunk.events_csv)
        else:
            self.events_parquet.append(chunk.events)
        self.customers.write(chunk.customers_csv)
        self.assignments.append(chunk.assignments)
        self.truth.append(chunk.truth)
        self.experiment.add(chunk.truth)
        self.n_events += chunk.n_events
        self.n_users += chunk.truth.height
        self.n_baskets += chunk.n_baskets
        self.bundle_items += chunk.bundle_items
        self.bundle_pairs += chunk.bundle_pairs

    def close(self) -> None:
        for f in (self.events, self.customers):
            if f is not None:
                f.close()
        for w in (self.events_parquet, self.assignments, self.truth):
            w.close()


class _Workers:
    """Worker processes that generate chunks, fed over pipes (pickled tasks and results).

    Plain ``python -c`` children rather than multiprocessing: nothing of the caller's
    ``__main__`` is imported again (a script without a ``__main__`` guard works, as do pytest
    and notebooks), and a worker that dies is an error here, not a hang. Each worker is given
    the catalogue once, then one chunk at a time.
    """

    def __init__(self, plan: _Plan, n: int) -> None:
        env = dict(os.environ)
        lib = str(Path(__file__).resolve().parents[1])  # this very library, in every worker
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [lib, env.get("PYTHONPATH")]))
        env.setdefault("POLARS_MAX_THREADS", str(max(1, default_workers() // n)))
        code = "from customer_intel.synth import _worker_main; _worker_main()"
        self.procs: list[subprocess.Popen] = []
        try:
            for _ in range(n):
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", code],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        env=env,
                    )
                )
            for w in range(n):
                self.send(w, plan)
        except BaseException:
            self.close(kill=True)
            raise

    def send(self, w: int, message: object) -> None:
        try:
            pickle.dump(message, self.procs[w].stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.procs[w].stdin.flush()
        except BrokenPipeError:
            self._died(w)

    def receive(self, w: int) -> _Chunk:
        try:
            return pickle.load(self.procs[w].stdout)
        except EOFError:
            self._died(w)

    def _died(self, w: int) -> NoReturn:
        code = self.procs[w].wait()
        raise RuntimeError(f"synth worker {w} exited with code {code} (its stderr is above)")

    def close(self, kill: bool = False) -> None:
        for proc in self.procs:
            if kill:
                proc.kill()
            else:
                proc.stdin.close()
        for proc in self.procs:
            proc.wait()
            proc.stdout.close()
            if kill and not proc.stdin.closed:
                proc.stdin.close()


def _worker_main() -> None:
    """A worker's loop: read the plan, then generate each chunk asked for until stdin closes."""
    from customer_intel.runs import peak_rss_mb

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the results
    plan = pickle.load(stdin)
    while True:
        try:
            task = pickle.load(stdin)
        except EOFError:
            return
        chunk = _chunk(plan, *task)
        chunk.peak_rss_mb = peak_rss_mb()
        pickle.dump(chunk, stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()
        del chunk  # not alive while the next one is generated


def default_workers() -> int:
    """Worker processes used by default: the CPUs this process may use, at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


def _planned_chunks(n_events: int, chunk_users: int) -> list[tuple[int, int, int]]:
    """``(index, first_user, n_users)`` of the chunks expected to hold ``n_events``.

    10% more users than the average needs: the last chunk is cut at the target. Decided by the
    arguments alone, so the chunks (and the bytes) do not depend on the number of workers.
    """
    total = int(math.ceil(n_events / EVENTS_PER_USER * 1.1)) + 20
    sizes = [chunk_users] * (total // chunk_users)
    if total % chunk_users:
        sizes.append(total % chunk_users)
    firsts = np.cumsum([0, *sizes[:-1]])
    return [(i, int(f), s) for i, (f, s) in enumerate(zip(firsts, sizes, strict=True))]


def _write_chunks(
    out: _Writers, n_events: int, plan: _Plan, chunk_users: int, workers: int
) -> None:
    """Generate chunks (``workers`` at a time) and append them in order until ``n_events``.

    Whole users are kept until the target is reached: the chunk that crosses it is cut after
    the user who reaches it. At most ``workers`` chunks are in flight, so memory is
    bounded by a few chunks whatever ``n_events`` is.
    """
    planned = collections.deque(_planned_chunks(n_events, chunk_users))
    next_index, next_user = len(planned), planned[-1][1] + planned[-1][2]
    pool = _Workers(plan, workers) if workers > 1 and len(planned) > 1 else None
    free = list(range(workers if pool else 1))
    inflight: collections.deque = collections.deque()

    def run(spec: tuple[int, int, int], w: int) -> None:
        if pool is None:
            inflight.append((spec, _chunk(plan, *spec)))
        else:
            pool.send(w, spec)
            inflight.append((spec, w))

    def result(handle: _Chunk | int) -> _Chunk:
        if pool is None:
            free.append(0)
            return handle
        free.append(handle)
        return pool.receive(handle)

    ok = False
    try:
        while out.n_events < n_events:
            while planned and free:
                run(planned.popleft(), free.pop(0))
            if not inflight:  # fewer events per user than planned: more users, sized by need
                need = int(math.ceil((n_events - out.n_events) / EVENTS_PER_USER * 1.2)) + 20
                planned.append((next_index, next_user, min(chunk_users, need)))
                next_index, next_user = next_index + 1, next_user + min(chunk_users, need)
                continue
            spec, handle = inflight.popleft()
            chunk = result(handle)
            out.worker_peak = max(out.worker_peak, chunk.peak_rss_mb)
            if out.n_events + chunk.n_events >= n_events:
                cum = np.cumsum(chunk.user_events) + out.n_events
                keep = int(np.searchsorted(cum, n_events, side="left")) + 1
                if keep < spec[2]:
                    chunk = _cut(chunk, keep, plan.catalog)
            out.append(chunk)
            del chunk  # not alive while the next one is received
        ok = True
    finally:
        if pool is not None:
            pool.close(kill=not ok or bool(inflight))  # chunks past the target are not needed


def generate(
    out_dir: Path,
    n_events: int,
    seed: int = 42,
    fmt: Literal["csv", "parquet"] = "csv",
    start: dt.date = dt.date(2019, 10, 1),
    days: int = 61,
    chunk_users: int = 25_000,
    workers: int | None = None,
) -> SampleInfo:
    """Write a sample of about ``n_events`` events with planted truth into ``out_dir``.

    Users are generated in chunks of ``chunk_users``, ``workers`` chunks at a time in worker
    processes (default :func:`default_workers`; 1 generates in this process; a sample of one
    chunk always does). Memory is bounded by a few chunks whatever ``n_events`` is. The same
    arguments give the same bytes, whatever the number of workers.
    """
    if n_events < 1000:
        raise ValueError(f"n_events must be at least 1000, got {n_events}")
    if days < 45:
        raise ValueError(f"days must be at least 45 (experiment + final 30 days), got {days}")
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "truth").mkdir()
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        n_products = n_products_for(n_events)
        cat = _catalog(n_products, rng)
        plan = _Plan(cat, _Timeline.build(start, days), seed, fmt)
        out = _Writers(tmp, fmt)
        try:
            _write_chunks(out, n_events, plan, chunk_users, workers)
        finally:
            out.close()
        _write_bundles(tmp / "truth" / "bundles.parquet", out, cat)
        _write_experiment(tmp / "truth" / "experiment.json", out.experiment, start)
        (tmp / "truth" / "README.md").write_text(
            "Planted truth of this generated sample (see customer_intel.synth's docstring). "
            "users.parquet: each user's latent segment, true probability of purchasing in the "
            "final 30 days and the realised outcome, experiment group; bundles.parquet: planted "
            "product pairs with their measured lift over purchase baskets; experiment.json: the "
            "A/B test's planted relative lift and realised rates. The pipeline never reads this "
            "folder.\n"
        )
        assert (tmp / f"events.{fmt}").exists()
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the sample is ordinary data
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SampleInfo(
        folder=out_dir,
        events_path=out_dir / f"events.{fmt}",
        customers_path=out_dir / "customers.csv",
        assignments_path=out_dir / "assignments.parquet",
        truth_dir=out_dir / "truth",
        n_events=out.n_events,
        n_users=out.n_users,
        n_products=n_products,
        seconds=round(time.time() - t0, 2),
        workers=workers,
        worker_peak_rss_mb=round(out.worker_peak, 1),
    )


def _write_bundles(path: Path, out: _Writers, cat: _Catalog) -> None:
    ids = cat.products["product_id"].to_numpy()
    rows = []
    for (a, b), (na, nb), n_ab in zip(cat.bundles, out.bundle_items, out.bundle_pairs, strict=True):
        lift = n_ab * out.n_baskets / (na * nb) if na and nb else float("nan")
        rows.append(
            {
                "product_a": int(ids[a]),
                "product_b": int(ids[b]),
                "planted_lift": float(lift),
                "n_together": int(n_ab),
                "support": int(n_ab) / out.n_baskets if out.n_baskets else 0.0,
            }
        )
    pl.DataFrame(rows).sort("n_together", descending=True, maintain_order=True).write_parquet(path)


def _write_experiment(path: Path, stats: _ExperimentStats, start: dt.date) -> None:
    start_dt = dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC)
    path.write_text(
        json.dumps(
            {
                "experiment_name": EXPERIMENT,
                "window_start": (start_dt + dt.timedelta(days=EXPERIMENT_DAYS[0])).isoformat(),
                "window_end": (start_dt + dt.timedelta(days=EXPERIMENT_DAYS[1])).isoformat(),
                "planted_relative_lift": PLANTED_RELATIVE_LIFT,
                "outcome": "a purchase between assigned_at and window_end",
                "control_rate": stats.rate("control"),
                "treatment_rate": stats.rate("treatment"),
                "n_control": stats.n["control"],
                "n_treatment": stats.n["treatment"],
                "pre_period_metrics": {
                    "pre_events": "events in the 14 days before the window (days 0-14)",
                    "pre_purchases": "purchases in the 14 days before the window (days 0-14)",
                },
                "pre_period_correlation": {
                    m: stats.correlation(m) for m in _ExperimentStats.METRICS
                },
            },
            indent=2,
        )
    )


def sample_dir(data_dir: Path, n_events: int, seed: int, fmt: str = "csv") -> Path:
    """Where the cached sample of this size and seed lives."""
    suffix = "" if fmt == "csv" else f"_{fmt}"
    return Path(data_dir) / "raw" / f"sample_{n_events}_{seed}_v{GENERATOR_VERSION}{suffix}"


def ensure_sample(
    data_dir: Path, n_events: int, seed: int = 42, fmt: Literal["csv", "parquet"] = "csv"
) -> Path:
    """Return the cached sample folder, generating it first if it is not there."""
    folder = sample_dir(data_dir, n_events, seed, fmt)
    if (
        not (folder / f"events.{fmt}").exists()
        or not (folder / "truth" / "experiment.json").exists()
    ):
        generate(folder, n_events, seed, fmt)
    return folder


def main(argv: list[str] | None = None) -> int:
    """``python -m customer_intel.synth --events N --out DIR``."""
    ap = argparse.ArgumentParser(
        prog="python -m customer_intel.synth", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--events", type=int, required=True, help="number of events (about)")
    ap.add_argument("--out", type=Path, required=True, help="output folder (replaced)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--format", choices=["csv", "parquet"], default="csv")
    ap.add_argument(
        "--chunk-users", type=int, default=25_000, help="users generated together (memory)"
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"worker processes (default {default_workers()}: the CPUs, at most 4)",
    )
    args = ap.parse_args(argv)
    info = generate(
        args.out,
        args.events,
        args.seed,
        args.format,
        chunk_users=args.chunk_users,
        workers=args.workers,
    )
    size = info.events_path.stat().st_size
    print(
        json.dumps(
            {k: str(v) if isinstance(v, Path) else v for k, v in asdict(info).items()}, indent=2
        )
    )
    print(
        f"{info.n_events:,} events, {info.n_users:,} users, {size / 1e6:.1f} MB "
        f"in {info.seconds:.1f}s "
        f"({info.n_events / max(info.seconds, 1e-9):,.0f} events/s)"
    )
    return 0


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: the workers unpickle the chunk
    # plan as customer_intel.synth classes.
    from customer_intel.synth import main as _main

    sys.exit(_main())
