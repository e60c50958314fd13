"""A generator with a planted buy-till-you-die truth: BG/NBD purchases and Gamma-Gamma spend.

Each customer is acquired (first purchase) at a uniform time in the first ``acquisition_days``
of a ``days``-long window. While active they buy as a Poisson process with rate
λ ~ Gamma(shape r, rate α) per day; after each *repeat* purchase they drop out with
probability p ~ Beta(a, b) (the BG/NBD story of Fader, Hardie & Lee 2005). Every purchase's value
is Gamma(shape p_spend, rate ν) with ν ~ Gamma(shape q, rate v) per customer (Gamma-Gamma).

:func:`btyd_sample` returns the purchases as rows (user_id, event_time, price, event_type) for
the engine, and the exact continuous-time summary (repeat_periods, recency, T in days,
monetary_value) the fitters should recover the parameters from.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from customer_intel import columns as C


@dataclass(frozen=True)
class BTYDTruth:
    """Planted parameters: BG/NBD (r, alpha per day, a, b) and Gamma-Gamma (p, q, v)."""

    r: float = 0.5
    alpha: float = 10.0
    a: float = 0.8
    b: float = 2.5
    p: float = 6.0
    q: float = 4.0
    v: float = 15.0


def btyd_sample(
    n_customers: int,
    truth: BTYDTruth = BTYDTruth(),
    *,
    days: int = 365,
    acquisition_days: int = 120,
    start: dt.datetime = dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    seed: int = 0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Purchases and their exact summary for ``n_customers`` drawn from ``truth``.

    Returns (purchases: user_id, event_time, price, event_type = "purchase";
    summary: user_id, repeat_periods, recency, T, monetary_value, alive, lam, dropout) with times
    in days; ``alive`` says whether the customer was still active at the end.
    """
    if n_customers < 1 or acquisition_days > days:
        raise ValueError("btyd_sample: need n_customers >= 1 and acquisition_days <= days")
    rng = np.random.default_rng(seed)
    lam = rng.gamma(truth.r, 1 / truth.alpha, n_customers)
    drop = rng.beta(truth.a, truth.b, n_customers)
    nu = rng.gamma(truth.q, 1 / truth.v, n_customers)
    first = rng.uniform(0, acquisition_days, n_customers)
    T = days - first
    uid, when = [np.arange(n_customers)], [first]
    last = first.copy()
    freq = np.zeros(n_customers, dtype=np.int64)
    alive = np.ones(n_customers, dtype=bool)
    active = np.arange(n_customers)
    t = first.copy()
    while active.size:
        t[active] += rng.exponential(1 / lam[active])
        active = active[t[active] <= days]  # the next purchase falls after the end
        if not active.size:
            break
        uid.append(active)
        when.append(t[active].copy())
        freq[active] += 1
        last[active] = t[active]
        dies = rng.uniform(size=active.size) < drop[active]
        alive[active[dies]] = False
        active = active[~dies]
    ids = np.concatenate(uid)
    times = np.concatenate(when)
    values = rng.gamma(truth.p, 1 / nu[ids])
    purchases = (
        pl.DataFrame(
            {
                C.USER_ID: ids.astype(np.int64),
                C.EVENT_TIME: [start + dt.timedelta(days=float(x)) for x in times],
                C.PRICE: values,
            }
        )
        .with_columns(pl.col(C.EVENT_TIME).dt.cast_time_unit("us"), event_type=pl.lit("purchase"))
        .sort(C.USER_ID, C.EVENT_TIME)
    )
    repeat_value = (
        purchases.with_columns(k=pl.int_range(pl.len()).over(C.USER_ID))
        .filter(pl.col("k") > 0)
        .group_by(C.USER_ID)
        .agg(monetary_value=pl.col(C.PRICE).mean())
    )
    summary = (
        pl.DataFrame(
            {
                C.USER_ID: np.arange(n_customers, dtype=np.int64),
                "repeat_periods": freq,
                "recency": last - first,
                "T": T,
                "alive": alive,
                "lam": lam,
                "dropout": drop,
            }
        )
        .join(repeat_value, on=C.USER_ID, how="left")
        .with_columns(pl.col("monetary_value").fill_null(0.0))
    )
    return purchases, summary
