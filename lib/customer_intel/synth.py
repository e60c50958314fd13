"""Generate a realistic e-commerce event log with planted truth (the built-in sample).

``generate(out_dir, n_events, seed)`` writes, into ``out_dir`` (built in a temporary folder and
renamed into place, so a half-written sample never counts as there):

``events.csv`` (or ``events.parquet``)
    The REES46 schema and formats: ``event_time`` (``2019-10-01 00:00:00 UTC``), ``event_type``
    (view / cart / remove_from_cart / purchase), ``product_id``, ``category_id`` (19 digits),
    ``category_code`` (dotted, 35-42% empty), ``brand`` (lowercase, 35-42% empty), ``price``
    (2 decimals), ``user_id`` (9 digits), ``user_session`` (UUID text). Written in chunks of users,
    each chunk sorted by time; the file as a whole is *not* globally sorted (ingestion must not
    assume order). Total events are within one user's history of ``n_events``.
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
    experiment_group; ``bundles.parquet``: product_a, product_b, planted_lift, n_together;
    ``experiment.json``; ``README.md``.

Planted truth and what a stage should recover
---------------------------------------------
(a) Segments. Four behavioural types: ``champions`` (frequent, recent, high spend, ~8%),
    ``loyal`` (regular, mid spend, ~20%), ``bargain`` (many views, few cheap purchases, ~22%)
    and ``dormant`` (one or two visits early in the period, ~50%: the long tail of one-visit
    users). The customers table's numeric attributes separate them: KMeans on the standardised
    attributes finds k = 4 by the knee with an adjusted Rand index >= 0.9.
(b) Propensity. ``cutoff = period end - 30 days``. Behaviour before the cutoff is simulated
    first; then ``p = sigmoid(-1.8 - 0.07 * days_since_last_visit + 1.4 * [visited in the last
    7 days and bought before] + 0.5 * log1p(carts) + 1.0 * log1p(purchases) + line_effect
    + N(0, 0.3))`` where ``line_effect`` (-0.6..+0.6)
    depends on the user's preferred product line (half of a user's views are in it); users first
    seen after the cutoff get ``sigmoid(-1.6 + line_effect)``. The outcome is drawn from ``p``
    and the final 30 days are generated to match it (purchase sessions if 1, at most view/cart
    sessions if 0). Oracle AUC about 0.83; a model on observation-window features should reach
    >= 0.95 of it.
(c) Bundles. 20 pairs of popular products: whenever one is bought, the other is bought in the
    same session with probability 0.35 (planted lifts of roughly 15-200). ``planted_lift`` is
    measured on what was generated, at the level of purchase baskets (sessions with a
    purchase): ``P(a and b) / (P(a) P(b))``.
(d) Experiment ``checkout_redesign``: users active between day 14 and day 30 are assigned at
    their first visit in that window, 50/50. A user converts (buys between assignment and the
    window end) with probability ``q`` (by segment, proportional to activity), times 1.10 in
    treatment: the planted relative lift is +10%. Pre-period metrics (``pre_events``,
    ``pre_purchases``: the 14 days before the window) correlate with the outcome (about 0.15
    and 0.08); the correlations are in experiment.json.

Shape (measured at 200k events): views ~60% of events, ~15% of sessions add to cart and ~80%
of those buy (forced conversions of the experiment and the final window included), 36-43% of
category_code and brand empty, ~36% one-session users, sessions separated by > 2 h and events
inside a session by < 15 min. About 1M events generate in ~6 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

#: Bumped whenever the generated data changes, so cached samples are not reused across versions.
GENERATOR_VERSION = 2
SEGMENTS = ("champions", "loyal", "bargain", "dormant")
SEGMENT_SHARES = (0.08, 0.20, 0.22, 0.50)
LINES = ("electronics", "appliances", "computers", "furniture", "apparel", "other")
N_CATEGORIES = 800
N_BRANDS = 5000
N_BUNDLES = 20
EXPERIMENT = "checkout_redesign"
PLANTED_RELATIVE_LIFT = 0.10
BUNDLE_FOLLOW_PROB = 0.35
USER_ID_BASE = 512_000_000
DAY = 86_400

# Per-segment behaviour: observation sessions per 30 days (lognormal median), share of the
# period they stay active, cart and purchase probabilities, price preference, conversion
# probability in the experiment window.
_SESSIONS_PER_30D = np.array([9.0, 4.0, 5.0, 0.6])
_ACTIVE_SHARE = np.array([1.0, 0.9, 0.8, 0.15])
_P_CART = np.array([0.08, 0.04, 0.022, 0.018])  # per session
_P_BUY = np.array([0.62, 0.52, 0.38, 0.42])  # per carting session
_PRICE_PREF = np.array([1.6, 1.0, 0.45, 0.8])
_Q_CONVERT = np.array([0.50, 0.30, 0.12, 0.06])
_LINE_EFFECT = np.array([0.6, 0.15, 0.4, -0.4, -0.2, -0.6])

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


@dataclass(frozen=True)
class SampleInfo:
    """What ``generate`` wrote."""

    folder: Path
    events_path: Path
    customers_path: Path
    assignments_path: Path
    truth_dir: Path
    n_events: int
    n_users: int
    n_products: int
    seconds: float


# -- catalogue ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Catalog:
    product_id: np.ndarray
    category_idx: np.ndarray
    category_id: np.ndarray
    category_code: np.ndarray  # object array, "" for empty
    brand: np.ndarray
    line: np.ndarray
    base_price: np.ndarray
    drift: np.ndarray
    popularity: np.ndarray  # probabilities
    by_line: tuple[np.ndarray, ...]  # product indices per line
    by_line_p: tuple[np.ndarray, ...]
    bundles: np.ndarray  # (N_BUNDLES, 2) product indices
    partner: np.ndarray  # partner index or -1


def _catalog(n_products: int, rng: np.random.Generator) -> _Catalog:
    # Categories: 19-digit ids, a product line each, ~38% without a code.
    cat_ids = rng.integers(2_053_013_552_226_107_603, 2_232_732_116_498_514_828, N_CATEGORIES)
    cat_line = rng.integers(0, len(LINES), N_CATEGORIES)
    codes = np.array(
        [f"{_TOP[i % len(_TOP)]}.{_SUB[(i * 7) % len(_SUB)]}" for i in range(N_CATEGORIES)],
        dtype=object,
    )
    codes[rng.random(N_CATEGORIES) < 0.34] = ""
    cat_median = np.exp(rng.normal(4.0, 1.0, N_CATEGORIES))
    syll = np.array(["ka", "lo", "mi", "sa", "ton", "ve", "ri", "zu", "bel", "cor", "dex", "fy"])
    brands = np.array(
        ["".join(syll[rng.integers(0, len(syll), 3)]) + str(i) for i in range(N_BRANDS)],
        dtype=object,
    )
    ids = np.unique(rng.integers(1_000_000, 100_000_000, int(n_products * 1.1) + 10))
    ids = rng.permutation(ids)[:n_products]
    cat = rng.integers(0, N_CATEGORIES, n_products)
    brand = brands[rng.integers(0, N_BRANDS, n_products)]
    brand[rng.random(n_products) < 0.36] = ""
    base_price = np.round(cat_median[cat] * np.exp(rng.normal(0, 0.35, n_products)), 2) + 0.99
    # Heavy-tailed popularity (Zipf-like over a random order of products).
    ranks = rng.permutation(n_products) + 1
    pop = 1.0 / ranks**1.05
    pop /= pop.sum()
    line = cat_line[cat]
    by_line = tuple(np.flatnonzero(line == k) for k in range(len(LINES)))
    by_line_p = tuple(pop[ix] / pop[ix].sum() if len(ix) else ix.astype(float) for ix in by_line)
    # Bundles among moderately popular products (rank 20..400), disjoint pairs.
    order = np.argsort(ranks)
    pool = rng.permutation(order[2 : min(80, n_products)])[: 2 * N_BUNDLES]
    bundles = np.sort(pool.reshape(-1, 2), axis=1)
    partner = np.full(n_products, -1)
    partner[bundles[:, 0]] = bundles[:, 1]
    partner[bundles[:, 1]] = bundles[:, 0]
    return _Catalog(
        product_id=ids,
        category_idx=cat,
        category_id=cat_ids[cat],
        category_code=codes[cat],
        brand=brand,
        line=line,
        base_price=base_price,
        drift=rng.normal(0, 0.06, n_products),
        popularity=pop,
        by_line=by_line,
        by_line_p=by_line_p,
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


# -- events --------------------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _sessions(
    users: np.ndarray, lo: np.ndarray, hi: np.ndarray, counts: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Session (user index, start second) pairs: ``counts[u]`` sessions in ``[lo[u], hi[u])``.

    Starts are sorted per user and spaced at least 3 hours apart, so sessions never touch
    (the 30-minute inactivity rule then recovers them exactly).
    """
    su = np.repeat(users, counts)
    lo_r, hi_r = np.repeat(lo, counts), np.repeat(hi, counts)
    start = lo_r + rng.random(len(su)) * np.maximum(hi_r - lo_r, 1)
    order = np.lexsort((start, su))
    su, start = su[order], start[order]
    first = np.r_[True, su[1:] != su[:-1]]
    idx_in_user = np.arange(len(su)) - np.maximum.accumulate(np.where(first, np.arange(len(su)), 0))
    return su, np.floor(start + idx_in_user * 3 * 3600)


def _session_events(
    sess_user: np.ndarray,
    sess_start: np.ndarray,
    user_line: np.ndarray,
    user_seg: np.ndarray,
    cat: _Catalog,
    rng: np.random.Generator,
    *,
    allow_purchase: np.ndarray,
    force_purchase: np.ndarray,
) -> dict[str, np.ndarray]:
    """Views, carts, removals and purchases for sessions, as event arrays.

    The funnel is decided per session (a "carting" session adds 1+ of its viewed products to
    the cart, often clicking "add" more than once, as in REES46; a carting session buys with a
    segment-dependent probability), so events are about two thirds views.
    """
    n_s = len(sess_user)
    seg = user_seg[sess_user]
    carting = rng.random(n_s) < _P_CART[seg]
    buying = carting & (rng.random(n_s) < _P_BUY[seg])
    buying = (buying | force_purchase) & allow_purchase
    carting |= buying
    n_cart_items = 1 + rng.poisson(1.3, n_s)
    n_views = np.minimum(rng.geometric(0.62, n_s), 25)
    n_views = np.where(carting, np.maximum(n_views, n_cart_items), n_views)
    ev_sess = np.repeat(np.arange(n_s), n_views)
    ev_user = sess_user[ev_sess]
    n_ev = len(ev_sess)
    # Products: half from the user's preferred line, half from overall popularity.
    prod = rng.choice(len(cat.popularity), n_ev, p=cat.popularity)
    pref = rng.random(n_ev) < 0.5
    lines = user_line[ev_user]
    for k in range(len(LINES)):
        m = pref & (lines == k)
        if m.any() and len(cat.by_line[k]):
            prod[m] = cat.by_line[k][rng.choice(len(cat.by_line[k]), m.sum(), p=cat.by_line_p[k])]
    # Bargain hunters drift to cheaper products: resample expensive views sometimes.
    cheap = (seg[ev_sess] == 2) & (cat.base_price[prod] > 60) & (rng.random(n_ev) < 0.6)
    prod[cheap] = rng.choice(len(cat.popularity), cheap.sum(), p=cat.popularity)
    gaps = np.minimum(rng.exponential(70.0, n_ev), 15 * 60)
    first = np.r_[True, ev_sess[1:] != ev_sess[:-1]]
    pos = np.arange(n_ev) - np.maximum.accumulate(np.where(first, np.arange(n_ev), 0))
    csum = np.cumsum(gaps)
    offs = csum - np.maximum.accumulate(np.where(first, csum, 0))
    t_view = sess_start[ev_sess] + offs
    carted = carting[ev_sess] & (pos < n_cart_items[ev_sess])
    bought = carted & buying[ev_sess] & ((pos == 0) | (rng.random(n_ev) < 0.6))
    removed = carted & ~bought & (rng.random(n_ev) < 0.3)
    clicks = np.where(carted, 1 + rng.poisson(1.4, n_ev), 0)
    c_idx = np.repeat(np.arange(n_ev), clicks)
    t_cart = t_view[c_idx] + 5 + rng.exponential(20.0, len(c_idx)) * (1 + np.arange(len(c_idx)) % 3)
    last_click = np.zeros(n_ev)
    np.maximum.at(last_click, c_idx, t_cart)
    t_buy = last_click + 5 + rng.exponential(40.0, n_ev)
    t_rm = last_click + 5 + rng.exponential(30.0, n_ev)
    # Bundle partners bought in the same session.
    partner = cat.partner[prod]
    follow = bought & (partner >= 0) & (rng.random(n_ev) < BUNDLE_FOLLOW_PROB)
    fb = np.flatnonzero(follow)
    parts = [
        (ev_sess, prod, t_view, 0),
        (ev_sess[c_idx], prod[c_idx], t_cart, 1),
        (ev_sess[removed], prod[removed], t_rm[removed], 2),
        (ev_sess[bought], prod[bought], t_buy[bought], 3),
        (ev_sess[fb], partner[fb], t_buy[fb] + 8, 0),
        (ev_sess[fb], partner[fb], t_buy[fb] + 20, 1),
        (ev_sess[fb], partner[fb], t_buy[fb] + 40, 3),
    ]
    return {
        "sess": np.concatenate([p[0] for p in parts]),
        "prod": np.concatenate([p[1] for p in parts]),
        "t": np.concatenate([p[2] for p in parts]),
        "type": np.concatenate([np.full(len(p[0]), p[3], np.int8) for p in parts]),
    }


@dataclass
class _Chunk:
    events: pl.DataFrame
    customers: pl.DataFrame
    assignments: pl.DataFrame
    truth: pl.DataFrame
    basket_counts: dict


def _chunk(
    first_user: int, n_users: int, cat: _Catalog, start: dt.date, days: int, seed: int, index: int
) -> _Chunk:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1000 + index]))
    users = np.arange(n_users)
    seg = rng.choice(len(SEGMENTS), n_users, p=SEGMENT_SHARES)
    user_id = USER_ID_BASE + first_user + users
    line = rng.integers(0, len(LINES), n_users)
    t_end = days * DAY
    cutoff = t_end - 30 * DAY
    w_lo, w_hi = 14 * DAY, 30 * DAY
    # Observation period: first visit, active span, number of sessions.
    late = rng.random(n_users) < 0.08  # first seen only in the final window
    first_visit = rng.random(n_users) * (cutoff - 4 * DAY)
    active = _ACTIVE_SHARE[seg] * np.exp(rng.normal(0, 0.25, n_users))
    last_possible = np.minimum(first_visit + active * (cutoff - first_visit), cutoff - 3.5 * DAY)
    last_possible = np.maximum(last_possible, first_visit + 3600)
    span_days = (last_possible - first_visit) / DAY
    rate = _SESSIONS_PER_30D[seg] * np.exp(rng.normal(0, 0.4, n_users))
    n_obs = np.where(late, 0, 1 + rng.poisson(rate * span_days / 30.0))
    n_obs = np.minimum(n_obs, 18)
    s_user, s_start = _sessions(users, first_visit, last_possible, n_obs, rng)
    # Experiment: first session in [w_lo, w_hi) assigns; conversion planted at user level.
    in_w = (s_start >= w_lo) & (s_start < w_hi - 2 * 3600)
    first_in_w = np.full(n_users, np.inf)
    np.minimum.at(first_in_w, s_user[in_w], s_start[in_w])
    assigned = np.isfinite(first_in_w)
    treat = assigned & (rng.random(n_users) < 0.5)
    q = np.clip(_Q_CONVERT[seg] * rate / _SESSIONS_PER_30D[seg], 0, 0.9)
    converts = assigned & (
        rng.random(n_users) < np.minimum(q * np.where(treat, 1 + PLANTED_RELATIVE_LIFT, 1.0), 1)
    )
    in_exp = in_w & assigned[s_user] & (s_start >= first_in_w[s_user])
    first_exp_sess = in_exp & (s_start == first_in_w[s_user])
    obs = _session_events(
        s_user,
        s_start,
        line,
        seg,
        cat,
        rng,
        allow_purchase=~in_exp | converts[s_user],
        force_purchase=first_exp_sess & converts[s_user],
    )
    # Observable behaviour before the cutoff -> true propensity -> realised outcome.
    ev_user = s_user[obs["sess"]]
    last_seen = np.full(n_users, -np.inf)
    np.maximum.at(last_seen, ev_user, obs["t"])
    carts = np.bincount(ev_user[obs["type"] == 1], minlength=n_users)
    buys = np.bincount(ev_user[obs["type"] == 3], minlength=n_users)
    recency = np.where(np.isfinite(last_seen), (cutoff - last_seen) / DAY, 60.0)
    logit = (
        -1.8
        - 0.07 * recency
        + 1.4 * ((recency < 7) & (buys > 0))  # recent buyers: an interaction trees can find
        + 0.5 * np.log1p(carts)
        + 1.0 * np.log1p(buys)
        + _LINE_EFFECT[line]
        + rng.normal(0, 0.3, n_users)
    )
    p = np.where(late, _sigmoid(-1.6 + _LINE_EFFECT[line]), _sigmoid(logit))
    y = rng.random(n_users) < p
    # Final window: purchase sessions when y, view/cart-only visits (sometimes) when not.
    n_fin = np.where(
        y,
        1 + rng.poisson(0.5, n_users),
        (rng.random(n_users) < 0.35) * (1 + rng.poisson(0.3, n_users)),
    )
    f_user, f_start = _sessions(
        users, np.full(n_users, cutoff + 3600.0), np.full(n_users, t_end - 2 * DAY), n_fin, rng
    )
    first_fin = np.r_[True, f_user[1:] != f_user[:-1]] if len(f_user) else np.zeros(0, bool)
    fin = _session_events(
        f_user,
        f_start,
        line,
        seg,
        cat,
        rng,
        allow_purchase=y[f_user],
        force_purchase=first_fin & y[f_user],
    )
    # Assemble events.
    n_obs_s = len(s_user)
    sess_user = np.concatenate([s_user, f_user])
    sess_start_all = np.concatenate([s_start, f_start])
    ev_sess = np.concatenate([obs["sess"], fin["sess"] + n_obs_s])
    prod = np.concatenate([obs["prod"], fin["prod"]])
    t = np.floor(np.concatenate([obs["t"], fin["t"]])).astype(np.int64)
    etype = np.concatenate([obs["type"], fin["type"]])
    sess_ids = np.array(
        [
            str(uuid.UUID(int=int(a) << 64 | int(b), version=4))
            for a, b in rng.integers(0, 2**63, (len(sess_user), 2), dtype=np.int64)
        ],
        dtype=object,
    )
    del sess_start_all
    price = np.round(cat.base_price[prod] * (1 + cat.drift[prod] * t / (days * DAY)), 2)
    price = np.where(_PRICE_PREF[seg[sess_user[ev_sess]]] < 0.5, np.round(price * 0.9, 2), price)
    epoch = int(dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC).timestamp())
    events = pl.DataFrame(
        {
            "event_time": pl.Series((epoch + t) * 1_000_000, dtype=pl.Int64).cast(
                pl.Datetime("us", "UTC")
            ),
            "event_type": pl.Series(
                np.array(["view", "cart", "remove_from_cart", "purchase"])[etype]
            ),
            "product_id": cat.product_id[prod],
            "category_id": cat.category_id[prod],
            "category_code": pl.Series(cat.category_code[prod], dtype=pl.String).replace("", None),
            "brand": pl.Series(cat.brand[prod], dtype=pl.String).replace("", None),
            "price": price,
            "user_id": user_id[sess_user[ev_sess]],
            "user_session": pl.Series(sess_ids[ev_sess], dtype=pl.String),
        }
    ).sort(["event_time", "user_id", "event_type"], maintain_order=True)
    # Pre-period metric: purchases in the 14 days before the experiment window.
    pre = np.bincount(ev_user[(obs["type"] == 3) & (obs["t"] < w_lo)], minlength=n_users)
    pre_events = np.bincount(ev_user[obs["t"] < w_lo], minlength=n_users)
    assign_time = epoch + np.where(assigned, first_in_w, 0)
    exp_rows = np.flatnonzero(assigned)
    assignments = pl.DataFrame(
        {
            "user_id": user_id[exp_rows],
            "experiment_name": [EXPERIMENT] * len(exp_rows),
            "experiment_group": np.where(treat[exp_rows], "treatment", "control"),
            "assigned_at": pl.Series(
                assign_time[exp_rows].astype(np.int64) * 1_000_000, dtype=pl.Int64
            ).cast(pl.Datetime("us", "UTC")),
        }
    )
    truth = (
        pl.DataFrame(
            {
                "user_id": user_id,
                "segment": np.array(SEGMENTS)[seg],
                "p_purchase_final30": p,
                "purchased_final30": y,
                "experiment_group": pl.Series(
                    np.where(treat, "treatment", "control").tolist(), dtype=pl.String
                ),
                "converted_in_experiment": converts,
                "_assigned": assigned,
                "pre_purchases": pre,
                "pre_events": pre_events,
                "observed_before_cutoff": ~late,
            }
        )
        .with_columns(
            pl.when("_assigned").then(pl.col("experiment_group")).alias("experiment_group"),
            pl.when("_assigned")
            .then(pl.col("converted_in_experiment"))
            .alias("converted_in_experiment"),
        )
        .drop("_assigned")
    )
    customers = _customers_for(seg, user_id, rng)
    return _Chunk(
        events,
        customers,
        assignments,
        truth,
        {},
    )


def _basket_counts(events: pl.DataFrame, pairs: list[tuple[int, int]]) -> dict:
    """Purchase baskets (sessions with a purchase), and basket counts of the bundle products."""
    buys = (
        events.filter(pl.col("event_type") == "purchase")
        .select("user_session", "product_id")
        .unique()
    )
    items = sorted({p for pair in pairs for p in pair})
    counts = buys.filter(pl.col("product_id").is_in(items)).group_by("product_id").len()
    together = {}
    for a, b in pairs:
        sa = buys.filter(pl.col("product_id") == a).select("user_session")
        sb = buys.filter(pl.col("product_id") == b).select("user_session")
        together[(a, b)] = sa.join(sb, on="user_session").height
    return {
        "n_baskets": buys["user_session"].n_unique(),
        "items": dict(counts.iter_rows()),
        "pairs": together,
    }


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


class _TableWriters:
    """customers.csv, assignments.parquet and truth/users.parquet, appended chunk by chunk."""

    def __init__(self, folder: Path) -> None:
        self.customers = open(folder / "customers.csv", "wb")  # noqa: SIM115 (closed in close)
        self.first = True
        self.parquet = {
            "assignments": _ParquetAppender(folder / "assignments.parquet"),
            "truth": _ParquetAppender(folder / "truth" / "users.parquet"),
        }

    def append(self, customers: pl.DataFrame, **tables: pl.DataFrame) -> None:
        customers.write_csv(self.customers, include_header=self.first)
        self.first = False
        for name, frame in tables.items():
            self.parquet[name].append(frame)

    def close(self) -> None:
        self.customers.close()
        for writer in self.parquet.values():
            writer.close()


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


def _events_per_user_estimate() -> float:
    return 14.0


def generate(
    out_dir: Path,
    n_events: int,
    seed: int = 42,
    fmt: Literal["csv", "parquet"] = "csv",
    start: dt.date = dt.date(2019, 10, 1),
    days: int = 61,
    chunk_users: int = 40_000,
) -> SampleInfo:
    """Write a sample of about ``n_events`` events with planted truth into ``out_dir``.

    Memory is bounded by one chunk of ``chunk_users`` users, whatever ``n_events`` is. The same
    arguments give the same bytes.
    """
    if n_events < 1000:
        raise ValueError(f"n_events must be at least 1000, got {n_events}")
    if days < 45:
        raise ValueError(f"days must be at least 45 (experiment + final 30 days), got {days}")
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "truth").mkdir()
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        n_products = int(min(max(n_events // 20, 500), 200_000))
        cat = _catalog(n_products, rng)
        bundle_pairs = [
            (
                int(min(cat.product_id[a], cat.product_id[b])),
                int(max(cat.product_id[a], cat.product_id[b])),
            )
            for a, b in cat.bundles
        ]
        ev_path = tmp / f"events.{fmt}"
        written = users_done = 0
        basket_total, item_tot, pair_tot = 0, {}, {}
        events_parquet = _ParquetAppender(ev_path)
        # the per-user tables are streamed like the events: one row per user still grows
        # with the sample (8M users at 110M events), so nothing is kept across chunks
        tables = _TableWriters(tmp)
        exp_stats = _ExperimentStats()
        n_users = 0
        with open(ev_path, "wb") if fmt == "csv" else open(os.devnull, "wb") as fh:
            index = 0
            while written < n_events:
                remaining_users = int((n_events - written) / _events_per_user_estimate()) + 50
                size = max(min(chunk_users, remaining_users), 50)
                ch = _chunk(users_done, size, cat, start, days, seed, index)
                # Keep whole users until the target is reached.
                per_user = ch.events.group_by("user_id").len().sort("user_id")
                cum = per_user["len"].cum_sum()
                if written + cum[-1] > n_events:
                    keep_n = int((cum + written < n_events).sum()) + 1
                    keep = per_user["user_id"][:keep_n]
                    ch = _Chunk(
                        ch.events.filter(pl.col("user_id").is_in(keep.implode())),
                        ch.customers.filter(pl.col("user_id") <= keep.max()),
                        ch.assignments.filter(pl.col("user_id") <= keep.max()),
                        ch.truth.filter(pl.col("user_id") <= keep.max()),
                        ch.basket_counts,
                    )
                    size = int(keep.max() - USER_ID_BASE - users_done + 1)
                ev = ch.events.with_columns(
                    pl.col("event_time").dt.strftime("%Y-%m-%d %H:%M:%S UTC")
                    if fmt == "csv"
                    else pl.col("event_time")
                )
                if fmt == "csv":
                    ev.write_csv(fh, include_header=index == 0, float_precision=2)
                else:
                    events_parquet.append(ev)
                written += ch.events.height
                users_done += size
                counts = _basket_counts(ch.events, bundle_pairs)
                basket_total += counts["n_baskets"]
                for k, v in counts["items"].items():
                    item_tot[k] = item_tot.get(k, 0) + v
                for k, v in counts["pairs"].items():
                    pair_tot[k] = pair_tot.get(k, 0) + v
                # users whose every event fell outside the period are left out of every table
                seen = ch.events["user_id"].unique().implode()
                truth_c = ch.truth.filter(pl.col("user_id").is_in(seen))
                tables.append(
                    customers=ch.customers.filter(pl.col("user_id").is_in(seen)),
                    assignments=ch.assignments.filter(pl.col("user_id").is_in(seen)),
                    truth=truth_c,
                )
                exp_stats.add(truth_c)
                n_users += truth_c.height
                index += 1
        events_parquet.close()
        tables.close()
        rows = []
        for (a, b), n_ab in pair_tot.items():
            na, nb = item_tot.get(a, 0), item_tot.get(b, 0)
            lift = (n_ab * basket_total / (na * nb)) if na and nb else float("nan")
            rows.append(
                {
                    "product_a": a,
                    "product_b": b,
                    "planted_lift": lift,
                    "n_together": n_ab,
                    "support": n_ab / basket_total if basket_total else 0.0,
                }
            )
        pl.DataFrame(rows).sort("n_together", descending=True).write_parquet(
            tmp / "truth" / "bundles.parquet"
        )
        start_dt = dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC)
        (tmp / "truth" / "experiment.json").write_text(
            json.dumps(
                {
                    "experiment_name": EXPERIMENT,
                    "window_start": (start_dt + dt.timedelta(days=14)).isoformat(),
                    "window_end": (start_dt + dt.timedelta(days=30)).isoformat(),
                    "planted_relative_lift": PLANTED_RELATIVE_LIFT,
                    "outcome": "a purchase between assigned_at and window_end",
                    "control_rate": exp_stats.rate("control"),
                    "treatment_rate": exp_stats.rate("treatment"),
                    "n_control": exp_stats.n["control"],
                    "n_treatment": exp_stats.n["treatment"],
                    "pre_period_metrics": {
                        "pre_events": "events in the 14 days before the window (days 0-14)",
                        "pre_purchases": "purchases in the 14 days before the window (days 0-14)",
                    },
                    "pre_period_correlation": {
                        m: exp_stats.correlation(m) for m in _ExperimentStats.METRICS
                    },
                },
                indent=2,
            )
        )
        (tmp / "truth" / "README.md").write_text(
            "Planted truth of this generated sample (see customer_intel.synth's docstring). "
            "users.parquet: each user's latent segment, true probability of purchasing in the "
            "final 30 days and the realised outcome, experiment group; bundles.parquet: planted "
            "product pairs with their measured lift over purchase baskets; experiment.json: the "
            "A/B test's planted relative lift and realised rates. The pipeline never reads this "
            "folder.\n"
        )
        final = tmp / f"events.{fmt}"
        assert final.exists()
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
        n_events=written,
        n_users=n_users,
        n_products=n_products,
        seconds=round(time.time() - t0, 2),
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
    args = ap.parse_args(argv)
    info = generate(args.out, args.events, args.seed, args.format)
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
    sys.exit(main())
