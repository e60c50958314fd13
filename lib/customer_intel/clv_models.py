"""Buy-till-you-die CLV models fitted by maximum likelihood: BG/NBD and Gamma-Gamma.

Takes the per-customer summary of :func:`customer_intel.clv.rfm_summary` (``repeat_periods`` ``x``,
recency ``t_x``, age ``T`` in periods; ``monetary_value`` = mean repeat-period value).

**BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while active a
customer buys as a Poisson process with rate λ ~ Gamma(r, α); after each purchase they drop out
with probability p ~ Beta(a, b). Parameters r, α, a, b.

**Pareto/NBD** (Schmittlein, Morrison & Colombo 1987; likelihood as in Fader & Hardie's 2005
note), optional: the same purchase process with an exponential lifetime, rate ~ Gamma(s, β).

**Gamma-Gamma** (Fader, Hardie & Lee 2005, "RFM and CLV"): each repeat transaction's value is
Gamma(p, ν) with ν ~ Gamma(q, v), independent of the purchase process. Parameters p, q, v.
The independence is an assumption: :func:`fit_gamma_gamma` reports the correlation of repeat periods
and monetary value among repeat customers so a reader can see when it does not hold.

The likelihoods and the formulas (P(alive), expected purchases, expected average value, CLV)
are the closed forms of those papers, written as ``lifetimes`` writes them; tests hold them equal
to ``lifetimes`` (archived, and pinned to old pandas, so only a test dependency) on CDNOW.
They are hand-written here, not imported, because ``lifetimes`` no longer installs with a
working ``datasets`` module and its fitters refuse pandas 3 Series, and pymc-marketing's fit is
MCMC/MAP over PyMC (a heavy dependency for four closed-form formulas).

Fitting: scipy.optimize.minimize (L-BFGS-B) on the log of each parameter, with bounds so a
parameter that runs to 0 or infinity is caught (status ``at_boundary``) instead of looping;
identical (x, t_x, T) rows are fitted once with a weight. Standard errors come from the inverse
Hessian of the negative log-likelihood in the natural parameters, by numdifftools (adaptive
steps with Richardson extrapolation) when it is installed, else by central finite differences
with a step relative to each parameter (good to a few digits, enough for standard errors).
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass, field

import ibis
import numpy as np
import polars as pl
from scipy import optimize, special

from customer_intel import clv
from customer_intel import columns as C
from customer_intel.timeutil import parse_utc

#: Bounds of the log-parameters (exp(-12) ~ 6e-6 to exp(12) ~ 1.6e5): a fit ending within
#: ``BOUNDARY_TOL`` of one is reported ``at_boundary``.
LOG_BOUNDS = (-12.0, 12.0)
BOUNDARY_TOL = 1e-3
#: Days per month in the CLV sum (lifetimes' convention: a month is 30 days, or 4.345 weeks).
PERIODS_PER_MONTH = {1: 30.0, 7: 4.345}


@dataclass
class Fit:
    """A fitted model: parameters, standard errors, status and a sentence about it."""

    model: str
    names: tuple[str, ...]
    params: dict[str, float]
    se: dict[str, float]
    status: str  # converged, at_boundary, no_standard_errors, failed
    message: str
    log_likelihood: float
    n: int
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the optimiser converged to an interior optimum with standard errors."""
        return self.status == "converged"

    def table(self) -> pl.DataFrame:
        """One row per parameter: model, parameter, estimate, se, status, message, n, log_lik."""
        return pl.DataFrame(
            {
                "model": [self.model] * len(self.names),
                "parameter": list(self.names),
                "estimate": [self.params[k] for k in self.names],
                "se": [self.se[k] for k in self.names],
                "status": [self.status] * len(self.names),
                "message": [self.message] * len(self.names),
                "n_customers": [self.n] * len(self.names),
                "log_likelihood": [self.log_likelihood] * len(self.names),
            }
        )


# ---------------------------------------------------------------- likelihoods


def bgnbd_log_likelihood(
    params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood at (r, alpha, a, b) (FHL 2005, eq. 6)."""
    r, alpha, a, b = params
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = special.betaln(a, b + x) - special.betaln(a, b)
    a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(
            x > 0,
            np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return a1 + a2 + np.logaddexp(a3, a4)


def gamma_gamma_log_likelihood(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per-customer Gamma-Gamma log-likelihood of the mean value ``m`` of ``x`` repeat periods.

    As ``lifetimes`` writes it (the density of the mean, FHL 2005 "RFM and CLV", up to terms
    that do not depend on the parameters).
    """
    p, q, v = params
    px = p * x
    return (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(v)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(x * m + v)
    )


def _pareto_log_a0(params, x, t_x, T) -> np.ndarray:
    """Log A_0 of the Pareto/NBD (Fader & Hardie 2005 note, eqs. 19-20); -inf when t_x = T."""
    r, alpha, s, beta = params
    rsx = r + s + x
    if alpha >= beta:
        hi, second = alpha, s + 1
    else:
        hi, second = beta, r + x
    gap = abs(alpha - beta)
    l1 = np.log(special.hyp2f1(rsx, second, rsx + 1, gap / (hi + t_x))) - rsx * np.log(hi + t_x)
    l2 = np.log(special.hyp2f1(rsx, second, rsx + 1, gap / (hi + T))) - rsx * np.log(hi + T)
    with np.errstate(divide="ignore"):
        return l1 + np.log1p(-np.exp(np.minimum(l2 - l1, 0.0)))


def pareto_nbd_log_likelihood(
    params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Per-customer Pareto/NBD log-likelihood at (r, alpha, s, beta) (Fader & Hardie 2005)."""
    r, alpha, s, beta = params
    head = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    gone = np.log(s) - np.log(r + s + x) + _pareto_log_a0(params, x, t_x, T)
    return head + np.logaddexp(alive, gone)


# ---------------------------------------------------------------- formulas


def p_alive(params: dict[str, float], x, t_x, T) -> np.ndarray:
    """BG/NBD probability that a customer with (x, t_x, T) is still active (1 for x = 0)."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(
            x > 0,
            a / (b + x - 1) * np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + t_x))),
            0.0,
        )
    return 1.0 / (1.0 + ratio)


def expected_purchases(params: dict[str, float], t, x, t_x, T) -> np.ndarray:
    """BG/NBD expected number of purchase periods in the next ``t`` periods (FHL 2005, eq. 10)."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    t, x, t_x, T = (np.asarray(v, dtype=float) for v in (t, x, t_x, T))
    z = t / (alpha + T + t)
    hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
    first = (a + b + x - 1) / (a - 1)
    second = 1 - np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t))) * hyp
    return first * second * p_alive(params, x, t_x, T)


def pareto_p_alive(params: dict[str, float], x, t_x, T) -> np.ndarray:
    """Pareto/NBD probability alive: 1 / (1 + s/(r+s+x) (alpha+T)^(r+x) (beta+T)^s A_0)."""
    r, alpha, s, beta = (params[k] for k in ("r", "alpha", "s", "beta"))
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    log_ratio = (
        np.log(s)
        - np.log(r + s + x)
        + (r + x) * np.log(alpha + T)
        + s * np.log(beta + T)
        + _pareto_log_a0((r, alpha, s, beta), x, t_x, T)
    )
    return 1.0 / (1.0 + np.exp(log_ratio))


def pareto_expected_purchases(params: dict[str, float], t, x, t_x, T) -> np.ndarray:
    """Pareto/NBD expected purchases in the next ``t`` periods (Fader & Hardie note, eq. 41)."""
    r, alpha, s, beta = (params[k] for k in ("r", "alpha", "s", "beta"))
    t, x, t_x, T = (np.asarray(v, dtype=float) for v in (t, x, t_x, T))
    rate = (r + x) * (beta + T) / ((alpha + T) * (s - 1))
    return rate * (1 - ((beta + T) / (beta + T + t)) ** (s - 1)) * pareto_p_alive(params, x, t_x, T)


def expected_purchases_new(params: dict[str, float], t) -> np.ndarray:
    """BG/NBD expected repeat purchases by time ``t`` after a customer's first purchase (eq. 7)."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    t = np.asarray(t, dtype=float)
    hyp = special.hyp2f1(r, b, a + b - 1, t / (alpha + t))
    return (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t)) ** r * hyp)


def expected_average_value(params: dict[str, float], x, m) -> np.ndarray:
    """Gamma-Gamma conditional expected value per transaction given x repeat periods of mean m.

    ``p (v + x m) / (p x + q - 1)``: the population mean ``p v / (q - 1)`` for x = 0.
    """
    p, q, v = (params[k] for k in ("p", "q", "v"))
    x, m = (np.asarray(a, dtype=float) for a in (x, m))
    return p * (v + x * m) / (p * x + q - 1)


def customer_lifetime_value(
    bg: dict[str, float],
    gg: dict[str, float],
    x,
    t_x,
    T,
    m,
    *,
    period_days: int = 1,
    months: int = 12,
    discount_rate_monthly: float = 0.01,
    margin: float = 1.0,
) -> np.ndarray:
    """Discounted CLV over ``months``: margin × Σ_i value × E[purchases in month i] / (1+d)^i.

    Months are 30 days (or 4.345 weeks), as ``lifetimes.GammaGammaFitter.customer_lifetime_value``
    counts them, so the two agree.
    """
    per_month = PERIODS_PER_MONTH[period_days]
    value = expected_average_value(gg, x, m)
    total = np.zeros(np.shape(np.asarray(x, dtype=float)))
    prev = np.zeros_like(total)
    for i in range(1, months + 1):
        cum = expected_purchases(bg, i * per_month, x, t_x, T)
        total = total + value * (cum - prev) / (1 + discount_rate_monthly) ** i
        prev = cum
    return margin * total


# ---------------------------------------------------------------- fitting


def hessian(fun, theta: np.ndarray, *, prefer_numdifftools: bool = True) -> tuple[np.ndarray, str]:
    """Hessian of ``fun`` at ``theta`` and how it was computed.

    numdifftools (adaptive steps, Richardson extrapolation) when installed and preferred; else
    central finite differences with a step of 1e-4 relative to each parameter, good to a few
    digits: enough for standard errors, and no dependency.
    """
    if prefer_numdifftools:
        try:
            import numdifftools as nd
        except ImportError:
            pass
        else:
            with warnings.catch_warnings():  # its step search warns on steps off the domain
                warnings.simplefilter("ignore")
                return nd.Hessian(fun)(theta), "numdifftools"
    k = len(theta)
    h = 1e-4 * np.maximum(np.abs(theta), 1e-3)
    hess = np.empty((k, k))
    for i in range(k):
        for j in range(i, k):
            ei, ej = np.eye(k)[i] * h[i], np.eye(k)[j] * h[j]
            val = (
                fun(theta + ei + ej)
                - fun(theta + ei - ej)
                - fun(theta - ei + ej)
                + fun(theta - ei - ej)
            ) / (4 * h[i] * h[j])
            hess[i, j] = hess[j, i] = val
    return hess, "finite differences"


def _mle(
    model: str,
    names: tuple[str, ...],
    total_nll,
    n_obs: int,
    start: np.ndarray,
    degenerate=None,
) -> Fit:
    """Minimise ``total_nll(natural params)`` over log-params; SEs from the Hessian.

    ``degenerate(params)`` may return a message saying the optimum is a known limit of the
    model (e.g. no dropout): the fit is then ``at_boundary`` with that message, without a
    Hessian (which there is singular, and slow to compute).
    """

    def obj(logp: np.ndarray) -> float:
        with np.errstate(all="ignore"):  # a step into overflow is refused below, not warned
            val = total_nll(np.exp(logp)) / n_obs
        return float(val) if np.isfinite(val) else 1e100

    res = optimize.minimize(
        obj,
        np.log(start),
        method="L-BFGS-B",
        bounds=[LOG_BOUNDS] * len(names),
        options={"maxiter": 5000, "ftol": 1e-13, "gtol": 1e-9},
    )
    theta = np.exp(res.x)
    params = dict(zip(names, theta.tolist(), strict=True))
    ll = -float(total_nll(theta))
    nan_se = dict.fromkeys(names, float("nan"))
    at_bound = [
        k
        for k, lp in zip(names, res.x, strict=True)
        if min(lp - LOG_BOUNDS[0], LOG_BOUNDS[1] - lp) < BOUNDARY_TOL
    ]
    if not np.isfinite(ll) or (not res.success and not at_bound):
        return Fit(
            model,
            names,
            params,
            nan_se,
            "failed",
            f"{model}: the optimiser did not converge ({res.message}); the parameters are "
            "the last ones tried, predictions from them are not reliable",
            ll,
            n_obs,
        )
    limit = degenerate(params) if degenerate is not None else None
    if limit:
        return Fit(model, names, params, nan_se, "at_boundary", limit, ll, n_obs)
    if at_bound:
        return Fit(
            model,
            names,
            params,
            nan_se,
            "at_boundary",
            f"{model}: {', '.join(at_bound)} ran to the edge of the search range "
            f"(exp{LOG_BOUNDS}); the data cannot pin it down (e.g. nobody seems to drop out), so "
            "it has no standard error and predictions lean on that limit",
            ll,
            n_obs,
        )
    hess, how = hessian(total_nll, theta)
    try:
        cov = np.linalg.inv(hess)
        diag = np.diag(cov)
        if not np.all(np.isfinite(diag)) or np.any(diag <= 0):
            raise np.linalg.LinAlgError("Hessian not positive definite")
    except np.linalg.LinAlgError as err:
        return Fit(
            model,
            names,
            params,
            nan_se,
            "no_standard_errors",
            f"{model}: converged, but the Hessian cannot be inverted ({err}): the "
            "parameters are poorly identified",
            ll,
            n_obs,
        )
    se = dict(zip(names, np.sqrt(diag).tolist(), strict=True))
    return Fit(
        model,
        names,
        params,
        se,
        "converged",
        f"{model}: converged in {res.nit} iterations; standard errors from the inverse Hessian "
        f"({how})",
        ll,
        n_obs,
    )


def _compress(summary: pl.DataFrame, cols: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
    g = summary.group_by(cols).agg(w=pl.len()).sort(cols)  # sorted: the same sums every run
    return [g[c].to_numpy().astype(float) for c in cols], g["w"].to_numpy().astype(float)


def _require(summary: pl.DataFrame, cols: list[str], what: str) -> None:
    missing = set(cols) - set(summary.columns)
    if missing:
        raise ValueError(
            f"{what}: the summary lacks column(s) {sorted(missing)}; it has {summary.columns}"
        )


#: Below this a fit is "no dropout" (at_boundary): BG/NBD's mean dropout probability a/(a+b),
#: Pareto/NBD's mean dropout rate over the mean purchase rate (s/beta) / (r/alpha).
NO_DROPOUT = 1e-3

#: Fewest customers a fit is tried on (BG/NBD: all customers; Gamma-Gamma: repeat customers).
MIN_CUSTOMERS = 10


def _too_few(model: str, names: tuple[str, ...], n: int, who: str) -> Fit:
    nan = dict.fromkeys(names, float("nan"))
    return Fit(
        model,
        names,
        nan,
        dict(nan),
        "failed",
        f"{model}: not fitted, {n} {who} (at least {MIN_CUSTOMERS} are needed); its "
        "predictions are missing (null)",
        float("nan"),
        n,
    )


def fit_bgnbd(summary: pl.DataFrame) -> Fit:
    """Fit BG/NBD (r, alpha, a, b) to a summary with repeat_periods, recency, T."""
    cols = ["repeat_periods", "recency", "T"]
    _require(summary, cols, "BG/NBD")
    bad = summary.filter((pl.col("recency") > pl.col("T")) | (pl.col("repeat_periods") < 0))
    if bad.height:
        raise ValueError(f"BG/NBD: {bad.height} customers have recency > T or repeat_periods < 0")
    if summary.height < MIN_CUSTOMERS:
        return _too_few("BG/NBD", ("r", "alpha", "a", "b"), summary.height, "customers")
    (x, t_x, T), w = _compress(summary, cols)

    def nll(th: np.ndarray) -> float:
        return -float(np.sum(w * bgnbd_log_likelihood(th, x, t_x, T)))

    def degenerate(p: dict[str, float]) -> str | None:
        dropout = p["a"] / (p["a"] + p["b"])
        if dropout >= NO_DROPOUT:
            return None
        return (
            f"BG/NBD: no dropout in the data - the mean dropout probability a/(a+b) = "
            f"{dropout:.1e} sits at its lower limit 0, so a and b are not identified and have "
            "no standard errors; P(alive) is close to 1 for everyone and expected purchases "
            "follow the purchase rates alone (an NBD model)"
        )

    scale = max(float(np.mean(T)), 1.0)
    return _mle(
        "BG/NBD",
        ("r", "alpha", "a", "b"),
        nll,
        summary.height,
        np.array([1, scale, 1, 1]),
        degenerate,
    )


def fit_pareto_nbd(summary: pl.DataFrame) -> Fit:
    """Fit Pareto/NBD (r, alpha, s, beta) to a summary with repeat_periods, recency, T.

    Dropout here is a continuous-time exponential lifetime (rate ~ Gamma(s, beta)) instead of
    BG/NBD's coin flip after each purchase; an alternative when purchases are rare.
    """
    cols = ["repeat_periods", "recency", "T"]
    _require(summary, cols, "Pareto/NBD")
    if summary.height < MIN_CUSTOMERS:
        return _too_few("Pareto/NBD", ("r", "alpha", "s", "beta"), summary.height, "customers")
    (x, t_x, T), w = _compress(summary, cols)

    def nll(th: np.ndarray) -> float:
        return -float(np.sum(w * pareto_nbd_log_likelihood(th, x, t_x, T)))

    def degenerate(p: dict[str, float]) -> str | None:
        # mean dropout rate s/beta against the mean purchase rate r/alpha: below NO_DROPOUT
        # a customer makes on average over 1/NO_DROPOUT purchases before leaving
        ratio = (p["s"] / p["beta"]) / (p["r"] / p["alpha"])
        if ratio >= NO_DROPOUT:
            return None
        return (
            f"Pareto/NBD: no dropout in the data - the mean dropout rate s/beta is {ratio:.1e} "
            "of the mean purchase rate, at its lower limit 0, so s and beta are not identified "
            "and have no standard errors; predictions equal an NBD model's"
        )

    scale = max(float(np.mean(T)), 1.0)
    return _mle(
        "Pareto/NBD",
        ("r", "alpha", "s", "beta"),
        nll,
        summary.height,
        np.array([1, scale, 1, scale]),
        degenerate,
    )


def fit_gamma_gamma(summary: pl.DataFrame) -> Fit:
    """Fit Gamma-Gamma (p, q, v) to the repeat customers (repeat_periods > 0, monetary_value > 0).

    ``extra`` holds ``freq_monetary_corr``, the Pearson correlation of repeat_periods and
    monetary_value among them: the model assumes spend does not depend on how often one buys.
    """
    cols = ["repeat_periods", "monetary_value"]
    _require(summary, cols, "Gamma-Gamma")
    rep = summary.filter((pl.col("repeat_periods") > 0) & (pl.col("monetary_value") > 0))
    corr = (
        float(np.corrcoef(rep["repeat_periods"].to_numpy(), rep["monetary_value"].to_numpy())[0, 1])
        if rep["repeat_periods"].n_unique() > 1 and rep["monetary_value"].n_unique() > 1
        else float("nan")
    )
    if rep.height < MIN_CUSTOMERS:
        fit = _too_few(
            "Gamma-Gamma", ("p", "q", "v"), rep.height, "repeat customers with a positive value"
        )
        fit.extra["freq_monetary_corr"] = corr
        return fit
    (x, m), w = _compress(rep, cols)

    def nll(th: np.ndarray) -> float:
        return -float(np.sum(w * gamma_gamma_log_likelihood(th, x, m)))

    mean = float(rep["monetary_value"].mean())
    fit = _mle("Gamma-Gamma", ("p", "q", "v"), nll, rep.height, np.array([1.0, 2.0, mean]))
    fit.extra["freq_monetary_corr"] = corr
    return fit


def independence_note(gg: Fit, *, max_corr: float = 0.3) -> str:
    """A sentence on the Gamma-Gamma independence assumption (repeat_periods vs monetary value)."""
    corr = gg.extra.get("freq_monetary_corr", float("nan"))
    if not np.isfinite(corr):
        return (
            "Repeat periods-monetary correlation undefined (all repeat customers have as many "
            "repeat periods)."
        )
    if abs(corr) > max_corr:
        return (
            f"Warning: repeat purchase periods and monetary value correlate ({corr:+.2f}, "
            f"beyond ±{max_corr}); "
            "the Gamma-Gamma model assumes they are independent, so its value predictions are "
            "biased for frequent buyers."
        )
    return (
        f"Frequency and monetary value correlate {corr:+.2f} (within ±{max_corr}): the "
        "Gamma-Gamma independence assumption is plausible."
    )


def fit_table(*fits: Fit | None) -> pl.DataFrame:
    """The fits as one table (one row per parameter); None (a fit not made) is left out."""
    return pl.concat([f.table() for f in fits if f is not None])


# ---------------------------------------------------------------- per-customer outputs


def deciles(values: pl.Expr, n: pl.Expr | int) -> pl.Expr:
    """Deciles 1..10, high = high value; equal values share one (1 + floor(10 (rank - 1) / n))."""
    return (1 + (10 * (values.rank("min") - 1) / n).floor()).cast(pl.Int8)


def predictions(
    summary: pl.DataFrame,
    bg: Fit,
    gg: Fit,
    *,
    period_days: int = 1,
    predict_days: int = 30,
    months: int = 12,
    discount_rate_monthly: float = 0.01,
    margin: float = 1.0,
) -> pl.DataFrame:
    """The ``clv_predictions`` table: one row per customer of the summary.

    Returns user_id, repeat_periods, recency, T, monetary_value, total_value (when the summary has
    it), p_alive, expected_purchases (purchase periods in the next ``predict_days`` days),
    expected_avg_value (Gamma-Gamma), clv (discounted, ``months`` ahead, times ``margin``) and
    clv_decile (1..10, 10 = highest CLV).
    """
    x, t_x, T, m = (
        summary[c].to_numpy().astype(float)
        for c in ("repeat_periods", "recency", "T", "monetary_value")
    )
    keep = [
        c
        for c in (C.USER_ID, "repeat_periods", "recency", "T", "monetary_value", "total_value")
        if c in summary.columns
    ]
    out = summary.select(keep).with_columns(
        p_alive=pl.Series(p_alive(bg.params, x, t_x, T)),
        expected_purchases=pl.Series(
            expected_purchases(bg.params, predict_days / period_days, x, t_x, T)
        ),
        expected_avg_value=pl.Series(expected_average_value(gg.params, x, m)),
        clv=pl.Series(
            customer_lifetime_value(
                bg.params,
                gg.params,
                x,
                t_x,
                T,
                m,
                period_days=period_days,
                months=months,
                discount_rate_monthly=discount_rate_monthly,
                margin=margin,
            )
        ),
    )
    out = out.with_columns(
        pl.col(c).fill_nan(None)
        for c in ("p_alive", "expected_purchases", "expected_avg_value", "clv")
    )
    return out.with_columns(clv_decile=deciles(pl.col("clv"), out["clv"].count()))


def clv_by_segment(preds: pl.DataFrame, rfm_table: pl.DataFrame) -> pl.DataFrame:
    """CLV beside the RFM segments, one row per segment.

    Columns: segment, customers, mean_p_alive, mean_clv, total_clv, clv_share and the customers
    in each CLV decile (decile_1..decile_10).
    """
    j = preds.join(rfm_table.select(C.USER_ID, "segment"), on=C.USER_ID, how="left").with_columns(
        pl.col("segment").fill_null("Other")
    )
    total = max(float(j["clv"].sum()), 1e-12)
    base = (
        j.group_by("segment")
        .agg(
            customers=pl.len(),
            mean_p_alive=pl.col("p_alive").mean(),
            mean_clv=pl.col("clv").mean(),
            total_clv=pl.col("clv").sum(),
        )
        .with_columns(clv_share=pl.col("total_clv") / total)
    )
    wide = (
        j.group_by("segment", "clv_decile")
        .agg(n=pl.len())
        .with_columns(col=pl.format("decile_{}", pl.col("clv_decile")))
        .pivot(on="col", index="segment", values="n")
    )
    cols = [f"decile_{i}" for i in range(1, 11)]
    wide = wide.with_columns([pl.lit(0).alias(c) for c in cols if c not in wide.columns])
    return (
        base.join(wide.select("segment", *cols), on="segment", how="left")
        .with_columns([pl.col(c).fill_null(0).cast(pl.Int64) for c in cols])
        .sort("total_clv", descending=True)
    )


def at_risk(preds: pl.DataFrame, *, max_p_alive: float = 0.5, top: int = 20) -> pl.DataFrame:
    """High-value customers who may have left, the ``top`` N.

    Those with P(alive) below ``max_p_alive``, ranked by the value they brought so far
    (``total_value``, else monetary_value × (repeat_periods + 1)).
    """
    value = (
        pl.col("total_value")
        if "total_value" in preds.columns
        else pl.col("monetary_value") * (pl.col("repeat_periods") + 1)
    )
    return (
        preds.filter(pl.col("p_alive") < max_p_alive)
        .with_columns(value_so_far=value)
        .sort(["value_so_far", C.USER_ID], descending=[True, False])
        .head(top)
        .select(
            C.USER_ID,
            "value_so_far",
            "repeat_periods",
            "recency",
            "T",
            "p_alive",
            "expected_purchases",
            "clv",
        )
    )


# ---------------------------------------------------------------- validation


def holdout_validation(
    cal: pl.DataFrame, bg: Fit, *, pareto: Fit | None = None, max_repeat_periods: int = 7
) -> tuple[pl.DataFrame, dict[str, float]]:
    """Predicted vs actual holdout purchase periods of a calibration summary (with holdout_*).

    Returns a table by calibration repeat periods (``repeat_periods_group``
    0..max_repeat_periods-1 and "max_repeat_periods+"): customers, actual_mean, predicted_mean;
    and metrics: customers,
    holdout_periods, mae (mean |predicted - actual| per customer), naive_mae (predicting the
    calibration rate x / T for the holdout), total_predicted, total_actual, total_error_pct.
    With a fitted ``pareto`` (Pareto/NBD) the table gains predicted_pareto_mean and the metrics
    pareto_mae and pareto_total_predicted.
    """
    x, t_x, T, h = (
        cal[c].to_numpy().astype(float) for c in ("repeat_periods", "recency", "T", "holdout_T")
    )
    pred = expected_purchases(bg.params, h, x, t_x, T)
    actual = cal["holdout_purchase_periods"].to_numpy().astype(float)
    naive = np.where(T > 0, x / np.maximum(T, 1e-12), 0.0) * h
    with_pareto = pareto is not None and pareto.status != "failed"
    ppred = pareto_expected_purchases(pareto.params, h, x, t_x, T) if with_pareto else pred
    df = cal.select(C.USER_ID, "repeat_periods").with_columns(
        predicted=pl.Series(pred), actual=pl.Series(actual), predicted_pareto=pl.Series(ppred)
    )
    capped = pl.min_horizontal(pl.col("repeat_periods"), pl.lit(max_repeat_periods))
    table = (
        df.with_columns(g=capped)
        .group_by("g")
        .agg(
            customers=pl.len(),
            actual_mean=pl.col("actual").mean(),
            predicted_mean=pl.col("predicted").mean(),
            predicted_pareto_mean=pl.col("predicted_pareto").mean(),
        )
        .sort("g")
        .with_columns(
            repeat_periods_group=pl.when(pl.col("g") == max_repeat_periods)
            .then(pl.format("{}+", pl.col("g")))
            .otherwise(pl.col("g").cast(pl.String))
        )
        .select(
            "repeat_periods_group",
            "customers",
            "actual_mean",
            "predicted_mean",
            *(["predicted_pareto_mean"] if with_pareto else []),
        )
    )
    tp, ta = float(pred.sum()), float(actual.sum())
    metrics = {
        "customers": float(cal.height),
        "holdout_periods": float(h[0]) if len(h) else 0.0,
        "mae": float(np.mean(np.abs(pred - actual))) if len(h) else float("nan"),
        "naive_mae": float(np.mean(np.abs(naive - actual))) if len(h) else float("nan"),
        "total_predicted": tp,
        "total_actual": ta,
        "total_error_pct": 100 * (tp - ta) / ta if ta else float("nan"),
    }
    if with_pareto:
        metrics["pareto_mae"] = float(np.mean(np.abs(ppred - actual)))
        metrics["pareto_total_predicted"] = float(ppred.sum())
    return table, metrics


def describe_holdout(metrics: dict[str, float], period: str) -> str:
    """The holdout error in one sentence."""
    if not np.isfinite(metrics["mae"]):
        return "No holdout check: the calibration fit failed (see the fit table)."
    return (
        f"On a holdout of {metrics['holdout_periods']:.0f} {period}s the BG/NBD fitted on the "
        f"calibration period predicts {metrics['total_predicted']:,.0f} repeat purchase {period}s "
        f"for its {metrics['customers']:,.0f} customers against {metrics['total_actual']:,.0f} "
        f"observed ({metrics['total_error_pct']:+.1f}%); the mean absolute error per customer is "
        f"{metrics['mae']:.3f} (predicting each customer's calibration rate: "
        f"{metrics['naive_mae']:.3f})"
        + (
            f"; Pareto/NBD predicts {metrics['pareto_total_predicted']:,.0f} with a mean absolute "
            f"error of {metrics['pareto_mae']:.3f}."
            if "pareto_mae" in metrics
            else "."
        )
    )


def tracking(
    cal: pl.DataFrame,
    repeats: pl.DataFrame,
    bg: Fit,
    *,
    calibration_end_pidx: int,
    end_pidx: int,
) -> pl.DataFrame:
    """Expected vs actual cumulative repeat purchase periods of the calibration customers.

    The lifetimes "tracking" plot, one row per period.

    ``cal`` has first_pidx per customer; ``repeats`` has pidx and repeat_purchases (the
    customers' purchase periods after their first, per period). Returns pidx, actual, expected,
    actual_cum, expected_cum, holdout (True after calibration).
    """
    # sorted: the sums below then add in one order, and two runs write the same bytes
    cohorts = cal.group_by("first_pidx").agg(n=pl.len()).sort("first_pidx")
    c = cohorts["first_pidx"].to_numpy()
    n = cohorts["n"].to_numpy().astype(float)
    start = int(c.min()) if len(c) else end_pidx
    grid = np.arange(start, end_pidx + 1)
    age = grid[:, None] - c[None, :]
    cum = np.where(age > 0, expected_purchases_new(bg.params, np.maximum(age, 0)), 0.0) @ n
    act = (
        (
            pl.DataFrame({"pidx": grid})
            .join(repeats.select("pidx", "repeat_purchases"), on="pidx", how="left")
            .with_columns(pl.col("repeat_purchases").fill_null(0))
        )["repeat_purchases"]
        .to_numpy()
        .astype(float)
    )
    return pl.DataFrame(
        {
            "pidx": grid,
            "actual": act,
            "expected": np.diff(cum, prepend=0.0),
            "actual_cum": np.cumsum(act),
            "expected_cum": cum,
            "holdout": grid > calibration_end_pidx,
        }
    )


def fr_matrix(bg: Fit, summary: pl.DataFrame, *, t: float, max_points: int = 40) -> pl.DataFrame:
    """Expected purchases in the next ``t`` periods and P(alive) on a repeat periods × recency grid.

    T is the largest T of the summary (a customer who has been around the whole time, as the
    lifetimes plots draw it); repeat_periods runs 0..the 99th percentile (at least 1), recency 0..T,
    each with at most ``max_points`` values. Returns repeat_periods, recency, T, expected_purchases,
    p_alive.
    """
    T = float(summary["T"].max())
    fmax = max(1, int(np.ceil(summary["repeat_periods"].quantile(0.99) or 1)))
    f = np.unique(np.linspace(0, fmax, min(fmax + 1, max_points)).round())
    r = np.unique(np.linspace(0, T, min(int(T) + 1, max_points)).round())
    ff, rr = np.meshgrid(f, r, indexing="ij")
    ff, rr = ff.ravel(), rr.ravel()
    return pl.DataFrame(
        {
            "repeat_periods": ff,
            "recency": rr,
            "T": np.full(ff.shape, T),
            "expected_purchases": expected_purchases(bg.params, t, ff, rr, T),
            "p_alive": p_alive(bg.params, ff, rr, T),
        }
    )


@dataclass
class Holdout:
    """A calibration/holdout check: the calibration summary and fit, and how it predicted."""

    calibration: pl.DataFrame
    fit: Fit
    by_repeat_periods: pl.DataFrame
    metrics: dict[str, float]
    tracking: pl.DataFrame
    pareto: Fit | None = None


def holdout_check(
    purchases: ibis.Table,
    *,
    observation_end: dt.datetime,
    period: str = "day",
    holdout_days: int = 21,
    pareto_nbd: bool = False,
) -> Holdout:
    """Fit BG/NBD on all but the last ``holdout_days`` days and compare with what happened.

    Takes purchase rows as an Ibis table (the summary and the repeat counts run on the engine).
    The calibration fit is named "BG/NBD (calibration)"; with ``pareto_nbd`` a Pareto/NBD,
    "Pareto/NBD (calibration)", is compared beside it. The tracking table gains
    ``period_start`` (the first day of each period). With no customer in calibration the fit
    is ``failed`` with a message naming ``segmentation.clv_holdout_days`` and the tables are empty.
    """
    end = parse_utc(observation_end)
    cal_end = end - dt.timedelta(days=holdout_days)
    cal = clv.rfm_summary(purchases, observation_end=end, period=period, calibration_end=cal_end)
    fit = fit_bgnbd(cal)
    fit.model = "BG/NBD (calibration)"
    if cal.height == 0 or fit.status == "failed":
        fit.message += (
            f" (calibration: {cal.height} customers bought before {cal_end:%Y-%m-%d}; "
            "segmentation.clv_holdout_days may be too long for this data)"
        )
    if fit.status == "failed":
        empty_t = pl.DataFrame(
            schema={
                "repeat_periods_group": pl.String,
                "customers": pl.UInt32,
                "actual_mean": pl.Float64,
                "predicted_mean": pl.Float64,
            }
        )
        empty_tr = pl.DataFrame(
            schema={
                "pidx": pl.Int64,
                "actual": pl.Float64,
                "expected": pl.Float64,
                "actual_cum": pl.Float64,
                "expected_cum": pl.Float64,
                "holdout": pl.Boolean,
                "period_start": pl.Date,
            }
        )
        nan = float("nan")
        metrics = dict.fromkeys(
            ("mae", "naive_mae", "total_predicted", "total_actual", "total_error_pct"), nan
        )
        metrics |= {"customers": float(cal.height), "holdout_periods": nan}
        return Holdout(cal, fit, empty_t, metrics, empty_tr)
    pareto = fit_pareto_nbd(cal) if pareto_nbd else None
    if pareto is not None:
        pareto.model = "Pareto/NBD (calibration)"
    table, metrics = holdout_validation(cal, fit, pareto=pareto)
    repeats = clv.repeat_purchases_by_period(
        purchases, observation_end=end, period=period, first_by=cal_end
    )
    tr = tracking(
        cal,
        repeats,
        fit,
        calibration_end_pidx=clv.period_index(cal_end, period),
        end_pidx=clv.period_index(end, period),
    )
    tr = tr.with_columns(
        period_start=pl.Series(
            [clv.period_start(int(i), period) for i in tr["pidx"]], dtype=pl.Date
        )
    )
    return Holdout(cal, fit, table, metrics, tr, pareto)
